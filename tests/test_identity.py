"""A pair's id: inputs' bytes, weights and pixel-changing keys rerun a pair; bookkeeping does not.
And done pairs are checked against their output's hash."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from stylebatch.cli.main import main
from stylebatch.job.weights import RANDOM_WEIGHTS_SEED
from tests.jobkit import edit_manifest, records, tiny_job


def _started(out: Path) -> dict[str, float]:
    return {name: r["started"] for name, r in records(out).items()}


def _run(manifest: Path, *extra: str) -> int:
    return main(["run", str(manifest), *extra])


@pytest.mark.slow
def test_reruns_follow_identity(tmp_path: Path) -> None:
    manifest = tiny_job(tmp_path, defaults={"steps": 4, "keep_checkpoints": False})
    out = tmp_path / "out"
    assert _run(manifest, "--weights", "random") == 0
    first = _started(out)

    # Same command again: nothing reruns.
    assert _run(manifest, "--weights", "random") == 0
    assert _started(out) == first

    # A bookkeeping key (checkpoint_every) changes no pixels: nothing reruns.
    edit_manifest(manifest, lambda d: d["defaults"].update(checkpoint_every=2))
    assert _run(manifest, "--weights", "random") == 0
    assert _started(out) == first

    # One pair's style_weight: only that pair reruns.
    edit_manifest(manifest, lambda d: d["pairs"][1].update(style_weight=5.0))
    assert _run(manifest, "--weights", "random") == 0
    now = _started(out)
    assert now["a__s1"] == first["a__s1"] and now["b__s2"] != first["b__s2"]

    # A deleted output is redone; a truncated one (other bytes than the job wrote) is left as it
    # is until --overwrite says the job may replace it.
    before = _started(out)
    (out / "a__s1.png").unlink()
    data = (out / "b__s2.png").read_bytes()
    (out / "b__s2.png").write_bytes(data[: len(data) // 2])
    assert _run(manifest, "--weights", "random") == 2
    assert (out / "b__s2.png").read_bytes() == data[: len(data) // 2] and not (out / "a__s1.png").exists()
    assert _run(manifest, "--weights", "random", "--overwrite") == 0
    now = _started(out)
    assert now["a__s1"] != before["a__s1"] and now["b__s2"] != before["b__s2"]
    assert (out / "a__s1.png").is_file() and len((out / "b__s2.png").read_bytes()) > len(data) // 2

    # Other weights (the same random network, saved to a file: a different identity) rerun all.
    before = _started(out)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        torch.save(torchvision.models.vgg19().features.state_dict(), tmp_path / "w.pth")
    assert _run(manifest, "--weights", str(tmp_path / "w.pth")) == 0
    now = _started(out)
    assert all(now[n] != before[n] for n in before)
    assert all(r["status"] == "done" and r["attempts"] >= 1 for r in records(out).values())


@pytest.mark.slow
def test_failed_pair_retried_until_max_attempts_then_left(tmp_path: Path, monkeypatch) -> None:
    manifest = tiny_job(tmp_path, defaults={"steps": 3, "max_attempts": 2})
    from stylebatch.runner import loop as runner

    def explode(members, *args):
        if any("b__s2" in str(m.output) for m in members):
            raise OSError("disk on fire")
        return original(members, *args)

    original = runner.stylize
    monkeypatch.setattr(runner, "stylize", explode)
    out = tmp_path / "out"
    assert _run(manifest, "--weights", "random") == 1
    assert records(out)["b__s2"]["attempts"] == 1
    assert _run(manifest, "--weights", "random") == 1
    assert records(out)["b__s2"]["attempts"] == 2
    assert _run(manifest, "--weights", "random") == 1  # max_attempts reached: left failed
    assert records(out)["b__s2"]["attempts"] == 2 and "disk on fire" in records(out)["b__s2"]["error"]
    monkeypatch.setattr(runner, "stylize", original)
    assert _run(manifest, "--weights", "random", "--retry-failed") == 0
    assert records(out)["b__s2"]["status"] == "done"
    # --fresh starts over: every pair runs again.
    before = _started(out)
    assert _run(manifest, "--weights", "random", "--fresh") == 0
    assert all(_started(out)[n] != before[n] for n in before)
