"""Kill a job at each fault point (and once from outside), rerun the same command, and check the
result is bit-identical to an uninterrupted run, with no temp files and every pair done."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from stylebatch.cli.main import main
from tests.jobkit import (
    DEFAULT_LOSS,
    cli_env,
    final_target,
    records,
    run_subprocess,
    run_with_sigterm_at,
    temp_files,
    tiny_job,
)

NAMES = ("a__s1", "b__s2")


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """One uninterrupted run, shared by every kill test."""
    root = tmp_path_factory.mktemp("baseline")
    manifest = tiny_job(root, defaults=DEFAULT_LOSS)
    assert main(["run", str(manifest), "--weights", "random"]) == 0
    return {name: final_target(root / "out", name) for name in NAMES}


def _assert_complete(out: Path, baseline: dict[str, torch.Tensor]) -> None:
    recs = records(out)
    assert {n: recs[n]["status"] for n in NAMES} == {n: "done" for n in NAMES}
    assert not temp_files(out), temp_files(out)
    for name in NAMES:
        assert (out / f"{name}.png").is_file()
        assert torch.equal(final_target(out, name), baseline[name]), f"{name} differs from the uninterrupted run"


@pytest.mark.slow
@pytest.mark.parametrize(
    "point",
    [
        "tmp:ckpt",  # a checkpoint's temp file written and fsynced, before its rename
        "after_checkpoint@2",  # right after the second checkpoint is safely on disk
        "tmp:png",  # during an output write, before its rename
        "tmp:json@4",  # during a state record write
        "between_pairs",  # after the first pair is done, before the second starts
    ],
)
def test_kill_at_fault_point_then_resume(point: str, tmp_path: Path, baseline: dict[str, torch.Tensor]) -> None:
    manifest = tiny_job(tmp_path, defaults=DEFAULT_LOSS)
    marker = tmp_path / "fault-fired"
    proc = run_subprocess(
        ["run", str(manifest), "--weights", "random"],
        cwd=tmp_path,
        STYLEBATCH_FAULT=point,
        STYLEBATCH_FAULT_MARKER=str(marker),
    )
    assert marker.exists(), f"fault point {point} never fired:\n{proc.stdout}\n{proc.stderr}"
    assert proc.returncode == -signal.SIGKILL
    # The same command again finishes the rest.
    assert main(["run", str(manifest), "--weights", "random"]) == 0
    _assert_complete(tmp_path / "out", baseline)


@pytest.mark.slow
def test_external_sigkill_then_status_then_resume(tmp_path: Path, baseline: dict[str, torch.Tensor], capsys) -> None:
    # The baseline's job: there is time to kill it once a pair shows progress (the second pair, or
    # the rest of the first, is still to come), and the resumed result is compared with the baseline.
    manifest = tiny_job(tmp_path, defaults=DEFAULT_LOSS)
    proc = subprocess.Popen(
        [sys.executable, "-m", "stylebatch", "run", str(manifest), "--weights", "random"],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    out = tmp_path / "out"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            recs = records(out)
            if any(r.get("steps_done", 0) > 0 and r.get("status") == "running" for r in recs.values()):
                break
            if proc.poll() is not None:
                pytest.fail("the run finished before it could be killed")
            time.sleep(0.05)
        else:
            pytest.fail("no progress recorded in time")
        proc.kill()
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    capsys.readouterr()
    assert main(["status", str(out), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    by_name = {p["name"]: p for p in status["pairs"]}
    assert "interrupted" in {p["status"] for p in by_name.values()}
    assert "running" not in {p["status"] for p in by_name.values()}
    assert status["counts"]["interrupted"] >= 1

    assert main(["run", str(manifest), "--weights", "random"]) == 0
    _assert_complete(out, baseline)


@pytest.mark.slow
@pytest.mark.parametrize("late", ["poll_not_due", "after_the_stop_check"])
def test_sigterm_checkpoints_at_its_own_step_whatever_the_stop_poll(
    tmp_path: Path, monkeypatch, late: str, baseline: dict[str, torch.Tensor]
) -> None:
    """Lightning raises SIGTERMException right after the step a SIGTERM lands in, so neither the
    stop poll's interval (here: the first poll is the only one) nor a signal landing just after the
    step's stop check may cost the evaluations since the last periodic checkpoint: the pair stops
    at 13 evaluations, with its checkpoint at 13, not 10."""
    from stylebatch.fit import engine

    if late == "poll_not_due":
        monkeypatch.setattr(engine, "STOP_POLL_S", 1e9)
    else:
        monkeypatch.setattr(engine._BudgetCallback, "_stop_requested", lambda self, trainer: False)
    manifest = tiny_job(tmp_path, defaults=DEFAULT_LOSS)
    code, fired = run_with_sigterm_at(manifest, 13, "--weights", "random")
    assert code == 3 and fired
    record = records(tmp_path / "out")["a__s1"]
    assert record["status"] == "interrupted" and record["steps_done"] == 13, record
    ckpt = torch.load(tmp_path / "out" / ".stylebatch" / "pairs" / "a__s1" / "last.ckpt", weights_only=True)
    assert ckpt["stylebatch"]["evaluations"] == 13
    monkeypatch.undo()
    assert main(["run", str(manifest), "--weights", "random"]) == 0
    _assert_complete(tmp_path / "out", baseline)


@pytest.mark.slow
def test_sigterm_in_process_checkpoints_and_exits_3(tmp_path: Path, baseline: dict[str, torch.Tensor]) -> None:
    """SIGTERM: the current pair checkpoints, is marked interrupted, the job exits 3, and the
    rerun ends bit-identical to the uninterrupted run."""
    manifest = tiny_job(tmp_path, defaults=DEFAULT_LOSS)
    code, fired = run_with_sigterm_at(manifest, 13, "--weights", "random")
    assert code == 3
    assert fired
    recs = records(tmp_path / "out")
    assert recs["a__s1"]["status"] == "interrupted" and recs["a__s1"]["steps_done"] == 13
    assert "b__s2" not in recs or recs["b__s2"]["status"] != "done"
    assert main(["run", str(manifest), "--weights", "random"]) == 0
    _assert_complete(tmp_path / "out", baseline)
