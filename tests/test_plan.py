"""plan.py: which pairs share a batch and which worker runs which batch, as one pure function."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stylebatch.cli.main import main
from stylebatch.job.config import Config
from stylebatch.runner import plan as plan_module
from stylebatch.runner.plan import batch_key, batch_limit, group, plan
from tests.jobkit import records, tiny_job

CFG = Config(optimizer="adam", lr=0.05, size=32, steps=8, batch_size=3)


@dataclass
class _P:
    name: str
    config: Config
    out_size: tuple[int, int] = (32, 24)
    content_size: tuple[int, int] = (40, 30)

    @property
    def cost(self) -> int:
        return self.out_size[0] * self.out_size[1] * self.config.steps


def _with(cfg: Config, **changes) -> Config:
    return Config(**{**cfg.to_dict(), **changes})


def test_grouping_rules() -> None:
    pairs = [_P(f"a{i}", _with(CFG, seed=i)) for i in range(5)]
    pairs.append(_P("lbfgs", _with(CFG, optimizer="lbfgs")))
    pairs.append(_P("big", _with(CFG, size=64), out_size=(64, 48)))
    pairs.append(_P("other_lr", _with(CFG, lr=0.01)))
    pairs.append(_P("other_steps", _with(CFG, steps=9)))
    batches = [[p.name for p in b] for b in group(pairs, recorded={})]
    assert ["a0", "a1", "a2"] in batches and ["a3", "a4"] in batches  # chunks of batch_size, seeds may differ
    assert ["lbfgs"] in batches and ["big"] in batches and ["other_lr"] in batches and ["other_steps"] in batches
    # Each batch takes its first member's place: the plan's order (costliest first) is kept.
    assert batches == [["a0", "a1", "a2"], ["a3", "a4"], ["lbfgs"], ["big"], ["other_lr"], ["other_steps"]]
    assert batch_key(pairs[5]) is None
    # A recorded batch (from an interrupted run) keeps its members together.
    batches = [[p.name for p in b] for b in group(pairs, recorded={"a1": ["a1", "a3", "a4"]})]
    assert ["a1", "a3", "a4"] in batches and ["a0", "a2"] in batches
    # ...unless batching was turned off since: then every pair resumes alone.
    off = [_P(p.name, _with(p.config, batch_size=1)) for p in pairs[:5]]
    assert group(off, recorded={"a1": ["a1", "a3", "a4"]}) == [[p] for p in off]
    assert sorted(n for b in batches for n in b) == sorted(p.name for p in pairs)


def test_loss_weights_may_differ_in_a_batch_but_the_network_pass_may_not() -> None:
    """A style_weight sweep (and other per-image weights, inputs and colour controls) is one batch;
    anything that shapes the network pass splits it."""
    sweep = [_P(f"w{i}", _with(CFG, style_weight=w, batch_size=4)) for i, w in enumerate([0.1, 1.0, 10.0, 100.0])]
    assert [[p.name for p in b] for b in group(sweep, {})] == [["w0", "w1", "w2", "w3"]]
    same = {
        "content_weight": 3.0,
        "tv_weight": 2.0,
        "style_layers": {**CFG.style_layers, next(iter(CFG.style_layers)): 5.0},
        "normalize_losses": False,
        "init": "noise",
        "seed": 9,
        "preserve_color": "luminance",
        "style_scale": 0.5,
        "save_every": 2,
        "keep_checkpoints": True,
        "format": "jpg",
    }
    for key, value in same.items():
        assert batch_key(_P("x", _with(CFG, **{key: value}))) == batch_key(_P("y", CFG)), key
    differs = {
        "lr": 0.3,
        "steps": 9,
        "pooling": "avg",
        "precision": "bf16",
        "ema_decay": 0.5,
        "content_layer": "conv3_1",
        "style_layers": {"conv1_1": 1.0},
        "scales": [16],
        "checkpoint_every": 7,
        "log_every": 3,
        "optimizer": "lbfgs",
    }
    for key, value in differs.items():
        assert batch_key(_P("x", _with(CFG, **{key: value}))) != batch_key(_P("y", CFG)), key
    # Coarse-to-fine batches when every pass has the same size; contents whose aspect gives the same
    # final size but other coarse sizes do not share a batch.
    c2f = _with(CFG, scales={"factor": 2, "min": 8})
    assert batch_key(_P("a", c2f)) is not None and batch_key(_P("a", c2f)) == batch_key(_P("b", c2f))
    c2f = _with(CFG, scales=[23])  # 1000x740 and 1000x762 both give 32x24, but 23x17 and 23x18 at 23 px
    assert batch_key(_P("a", c2f, content_size=(1000, 740))) != batch_key(_P("b", c2f, content_size=(1000, 762)))


def test_batch_pixels_caps_a_batch_by_its_total_pixels() -> None:
    """`batch_pixels` bounds a batch's memory: 5 same-size pairs of 32x24 (768 px each) with room
    for two per batch come in batches of 2, 2, 1; with room for less than two, none is batched."""
    two = _with(CFG, batch_size=4, batch_pixels=2 * 768 + 767)
    pairs = [_P(f"a{i}", _with(two, seed=i)) for i in range(5)]
    assert [batch_limit(p) for p in pairs] == [2] * 5
    assert [[p.name for p in b] for b in group(pairs, recorded={})] == [["a0", "a1"], ["a2", "a3"], ["a4"]]
    one = _with(two, batch_pixels=2 * 768 - 1)
    alone = [_P(f"b{i}", _with(one, seed=i)) for i in range(3)]
    assert batch_key(alone[0]) is None
    assert [[p.name for p in b] for b in group(alone, recorded={})] == [["b0"], ["b1"], ["b2"]]
    # The defaults: 4 pairs at 512 px (4:3 or square), 2 at 768, 1 at 1024.
    default = Config(optimizer="adam")
    assert [batch_limit(_P("x", default, out_size=s)) for s in [(512, 384), (512, 512), (768, 576), (1024, 768)]] == [
        4,
        4,
        2,
        1,
    ]


def test_plan_balances_whole_batches_over_workers_deterministically() -> None:
    pairs = [_P(f"a{i}", _with(CFG, seed=i)) for i in range(6)]
    pairs += [_P(f"big{i}", _with(CFG, optimizer="lbfgs", size=64), out_size=(64, 48)) for i in range(2)]
    shares = plan(pairs, 2, {})
    assert shares == plan(list(pairs), 2, {})  # a pure function of its inputs
    assert sorted(n for share in shares for b in share for n in b) == sorted(p.name for p in pairs)
    assert shares[0][0] == ["big0"] and shares[1][0] == ["big1"]  # the costliest first, one to each worker
    assert ["a0", "a1", "a2"] in shares[0] + shares[1] and ["a3", "a4", "a5"] in shares[0] + shares[1]
    assert plan(pairs, 1, {}) == [[["big0"], ["big1"], ["a0", "a1", "a2"], ["a3", "a4", "a5"]]]


def test_the_plan_is_made_once_and_the_worker_loop_never_regroups(tmp_path: Path, monkeypatch) -> None:
    calls: list[int] = []
    original = plan_module.group

    def counted(pairs, recorded):
        calls.append(len(pairs))
        return original(pairs, recorded)

    monkeypatch.setattr(plan_module, "group", counted)
    pairs = [
        {"content": "images/a.png", "style": "images/s1.png", "name": f"p{i}", "seed": i, "optimizer": "adam"}
        for i in range(3)
    ]
    manifest = tiny_job(tmp_path, pairs=pairs, defaults={"steps": 4, "batch_size": 2})
    assert main(["run", str(manifest), "--weights", "random"]) == 0
    assert calls == [3]
    assert [records(tmp_path / "out")[f"p{i}"]["batch"] for i in range(3)] == [["p0", "p1"], ["p0", "p1"], None]
