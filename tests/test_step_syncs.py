"""An optimisation step does no host synchronisation of its own: `.item()`, `float()`, `bool()` of
a tensor happen at the log points (every `log_every` evaluations) and at the end, not per step.
Counted on CPU by wrapping the Tensor methods that synchronise on a GPU."""

from __future__ import annotations

import collections
from pathlib import Path

import lightning as L
import pytest
import torch

from stylebatch.fit import engine
from stylebatch.fit.vgg import load_vgg
from stylebatch.job.config import Config
from tests.jobkit import make_image

SYNCING = ("item", "__bool__", "__float__", "__int__", "__index__", "tolist")


def _syncs(tmp_path: Path, monkeypatch, steps: int, members: int, **settings) -> collections.Counter:
    """Syncing calls from stylebatch and Lightning code during the fit's steps, by caller file."""
    counts: collections.Counter = collections.Counter()
    active = [False]
    for name in SYNCING:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            if active[0]:
                import traceback

                caller = traceback.extract_stack(limit=2)[0].filename
                if "/stylebatch/" in caller or "/lightning/" in caller:
                    counts[caller.rsplit("/", 2)[-2] + "/" + caller.rsplit("/", 1)[-1]] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)

    class Start(L.Callback):
        def on_train_batch_start(self, *args) -> None:
            active[0] = True

    make = engine._trainer
    monkeypatch.setattr(
        engine, "_trainer", lambda d, c, callbacks, *rest, **kw: make(d, c, [*callbacks, Start()], *rest, **kw)
    )
    cfg = Config(size=32, steps=steps, scales=None, checkpoint_every=10**6, optimizer="adam", **settings)
    make_image(tmp_path / "c.png", 1)
    make_image(tmp_path / "s.png", 2)
    batch = [
        engine.Member(
            tmp_path / "c.png",
            [tmp_path / "s.png"],
            cfg,
            tmp_path / f"ck{i}" / "x.ckpt",
            tmp_path / f"o{i}.png",
            {},
            engine.PairHooks(),
        )
        for i in range(members)
    ]
    engine.stylize(batch, load_vgg("random", cfg.layers_used), torch.device("cpu"))
    active[0] = False
    return counts


@pytest.mark.slow
@pytest.mark.parametrize("settings", [{"log_every": 1000}, {"log_every": 1000, "ema_decay": 0.9, "tv_weight": 1.0}])
def test_steps_add_no_host_syncs(tmp_path: Path, monkeypatch, settings) -> None:
    short = _syncs(tmp_path / "a", monkeypatch, 4, 2, **settings)
    long = _syncs(tmp_path / "b", monkeypatch, 12, 2, **settings)
    assert short == long, (short, long)  # the end's log and checks only: the same for 4 and 12 steps


@pytest.mark.slow
def test_log_points_sync_once_per_member_loss_each(tmp_path: Path, monkeypatch) -> None:
    every_4 = _syncs(tmp_path / "a", monkeypatch, 12, 2, log_every=4)
    never = _syncs(tmp_path / "b", monkeypatch, 12, 2, log_every=1000)
    assert sum(every_4.values()) > sum(never.values())  # logging is where the losses come to the host
