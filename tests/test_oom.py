"""The out-of-memory ladder (oom.py) through the real runner: simulated out-of-memory errors (raised
from a patched training_step, also from inside an L-BFGS step) climb the rungs in order
(unbatched → smaller L-BFGS history → tiled → failed alone), each rung recorded in the pair's state,
with everything of the failed fit freed first (weak references; the GPU allocator check is in
scripts/gpu_check.sh). A control keeps the module alive and shows the check then fails."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stylebatch.cli.main import main
from stylebatch.fit.module import StyleTransferModule
from stylebatch.memory import ladder as oom
from tests.jobkit import records, tiny_job

ORIGINAL = StyleTransferModule.training_step
# Shallow layers and a short budget: every rung is a whole fit, some of them tiled.
QUICK = {
    "steps": 10,
    "checkpoint_every": 5,
    "content_layer": "conv2_1",
    "style_layers": {"conv1_1": 1.0, "conv2_1": 1.0},
}


def _patch(monkeypatch, fails, kept: list | None = None, seen: list | None = None) -> None:
    """training_step raises CUDA's out-of-memory error whenever fails(module) says so."""

    def step(self, batch, batch_idx):
        if fails(self):
            if seen is not None:
                seen.append((self.evaluations + 1, self.trainer.global_step))
            if kept is not None:
                kept.append(self)  # the control: something still holds the failed fit's module
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return ORIGINAL(self, batch, batch_idx)

    monkeypatch.setattr(StyleTransferModule, "training_step", step)


def _rungs(record: dict) -> list[str]:
    return [r["rung"] for r in record["memory_fallback"]["rungs"]]


ADAM_PAIRS = [
    {"content": "images/a.png", "style": "images/s1.png", "optimizer": "adam"},
    {"content": "images/a.png", "style": "images/s2.png", "optimizer": "adam"},
]


@pytest.mark.slow
def test_a_batch_climbs_unbatched_then_tiled_and_finishes(tmp_path: Path, monkeypatch) -> None:
    """Adam has no history to shrink: a batch that fails batched and untiled goes alone, then tiled."""
    _patch(monkeypatch, lambda m: m.target.shape[0] > 1 or m.tile is None)
    manifest = tiny_job(tmp_path, pairs=ADAM_PAIRS, defaults={"batch_size": 2, **QUICK})
    assert main(["run", str(manifest), "--weights", "random"]) == 0
    recs = records(tmp_path / "out")
    assert len(recs) == 2
    for record in recs.values():
        assert record["status"] == "done" and record["attempts"] == 1
        assert _rungs(record) == ["unbatched", "tiled"]
        assert all(r["freed"] and r["live_objects"] == 0 for r in record["memory_fallback"]["rungs"])
        assert record["memory_fallback"]["config"]["tile"] < 32
    assert len(list((tmp_path / "out").glob("*.png"))) == 2


def test_an_oom_inside_an_lbfgs_step_shrinks_the_history(tmp_path: Path, monkeypatch) -> None:
    seen: list = []
    _patch(
        monkeypatch,
        lambda m: m.evaluations == 2 and m.optimizer_spec.lbfgs_history > oom.LBFGS_SMALL_HISTORY,
        seen=seen,
    )
    pairs = [{"content": "images/b.png", "style": "images/s2.png", "optimizer": "lbfgs", "lbfgs_history": 50}]
    assert main(["run", str(tiny_job(tmp_path, pairs=pairs, defaults=QUICK)), "--weights", "random"]) == 0
    assert seen == [(3, 0)]  # the third evaluation, before the first optimizer step ended: inside it
    record = next(iter(records(tmp_path / "out").values()))
    assert record["status"] == "done" and _rungs(record) == ["smaller lbfgs_history"]
    assert record["memory_fallback"]["config"] == {"lbfgs_history": oom.LBFGS_SMALL_HISTORY}
    assert record["memory_fallback"]["rungs"][0]["freed"]


@pytest.mark.slow
def test_the_last_rung_fails_the_pair_alone_with_its_size_and_estimate(tmp_path: Path, monkeypatch) -> None:
    _patch(monkeypatch, lambda m: m.optimizer_spec.name == "lbfgs")
    pairs = [
        {"content": "images/b.png", "style": "images/s2.png", "optimizer": "lbfgs", "lbfgs_history": 20},
        {"content": "images/a.png", "style": "images/s1.png", "optimizer": "adam"},
    ]
    assert main(["run", str(tiny_job(tmp_path, pairs=pairs, defaults=QUICK)), "--weights", "random"]) == 1
    recs = records(tmp_path / "out")
    failed = recs["b__s2"]
    assert failed["status"] == "failed" and _rungs(failed) == ["smaller lbfgs_history", "tiled", "failed"]
    assert "out of memory at 24x32" in failed["error"] and "estimated peak" in failed["error"]
    assert "tried smaller lbfgs_history, tiled" in failed["error"]
    assert recs["a__s1"]["status"] == "done" and "memory_fallback" not in recs["a__s1"]


def test_control_a_module_kept_alive_is_reported_not_freed(tmp_path: Path, monkeypatch) -> None:
    kept: list = []
    _patch(monkeypatch, lambda m: m.tile is None, kept=kept)
    pairs = [{"content": "images/a.png", "style": "images/s1.png", "optimizer": "adam"}]
    assert main(["run", str(tiny_job(tmp_path, pairs=pairs, defaults=QUICK)), "--weights", "random"]) == 0
    rung = next(iter(records(tmp_path / "out").values()))["memory_fallback"]["rungs"][0]
    assert rung["rung"] == "tiled" and not rung["freed"] and rung["live_objects"] >= 1


def test_recorded_rungs_apply_again_on_a_resume(tmp_path: Path) -> None:
    from stylebatch.memory.autosize import load_job
    from stylebatch.runner.plan import batch_key

    manifest = tiny_job(tmp_path, pairs=ADAM_PAIRS, defaults={"batch_size": 2})
    pair = load_job(manifest, check_files=True).valid_pairs[0]
    assert batch_key(pair) is not None
    record = {
        "memory_fallback": {
            "rungs": [{"rung": "unbatched"}, {"rung": "tiled"}],
            "config": {"batch_size": 1, "tile": 16},
        }
    }
    resumed = oom.with_fallback(pair, record)
    assert resumed.config.tile == 16 and batch_key(resumed) is None and resumed.id == pair.id
    assert oom.with_fallback(pair, {}) is pair


def test_next_rung_order() -> None:
    from stylebatch.job.config import Config
    from stylebatch.job.pairs import Pair

    def pair(**kw) -> Pair:
        return Pair(
            "p",
            Path("c.png"),
            [Path("s.png")],
            Config(size=256, **kw),
            "pairs[0]",
            out_size=(256, 192),
            content_size=(256, 192),
        )

    cpu = torch.device("cpu")
    assert oom.next_rung(pair(optimizer="adam"), 3, cpu)[0] == "unbatched"
    assert oom.next_rung(pair(optimizer="lbfgs", lbfgs_history=20), 1, cpu) == (
        "smaller lbfgs_history",
        {"lbfgs_history": 5},
    )
    name, changes = oom.next_rung(pair(optimizer="lbfgs", lbfgs_history=5), 1, cpu)
    assert name == "tiled" and 16 <= changes["tile"] < 256 and changes["tile"] % 16 == 0
    assert oom.next_rung(pair(optimizer="adam", tile=128), 1, cpu) is None


@pytest.mark.parametrize(
    "error, expected",
    [
        (torch.cuda.OutOfMemoryError("CUDA out of memory"), True),
        (
            RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried"),
            True,
        ),
        (RuntimeError("shapes do not match"), False),
        (ValueError("can't allocate memory"), False),
    ],
)
def test_what_counts_as_out_of_memory(error: BaseException, expected: bool) -> None:
    assert oom.is_oom(error) is expected
