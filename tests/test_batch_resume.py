"""A kill while a finished batch's members are being recorded, one after the other, must not change
the result of the members not yet recorded: their outputs are already written, by the batch's fit,
and a rerun that made them again alone (the batch is split: its first member is done) would give
other pixels (batched convolutions round differently). Real processes, SIGKILLed at a fault point."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.jobkit import records, run_subprocess, tiny_job

PAIRS = [
    {"content": "images/a.png", "style": "images/s1.png", "optimizer": "adam", "lr": 0.05},
    {"content": "images/a.png", "style": "images/s2.png", "optimizer": "adam", "lr": 0.05},
]


@pytest.mark.slow  # three real runs
def test_a_kill_between_a_batchs_records_leaves_every_output_as_the_uninterrupted_run_made_it(tmp_path):
    manifest = tiny_job(tmp_path, pairs=PAIRS, defaults={"keep_checkpoints": False})
    args = ["run", str(manifest), "--weights", "random"]
    assert run_subprocess([*args, "--out", str(tmp_path / "clean")], cwd=tmp_path).returncode == 0
    assert records(tmp_path / "clean")["a__s1"]["batch"] == ["a__s1", "a__s2"]  # they ran as one batch
    clean = {n: (tmp_path / "clean" / f"{n}.png").read_bytes() for n in ("a__s1", "a__s2")}

    marker = tmp_path / "fired"
    killed = run_subprocess(args, cwd=tmp_path, STYLEBATCH_FAULT="concluded:a__s1", STYLEBATCH_FAULT_MARKER=str(marker))
    assert marker.exists() and killed.returncode != 0
    out = tmp_path / "out"
    assert records(out)["a__s1"]["status"] == "done" and records(out)["a__s2"]["status"] == "running"

    again = run_subprocess(args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    for name, data in clean.items():
        assert (out / f"{name}.png").read_bytes() == data, name
    assert records(out)["a__s2"]["status"] == "done"


def _set_record(out: Path, name: str, **changes) -> None:
    path = out / ".stylebatch" / "pairs" / name / "state.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_only_an_output_written_by_the_stopped_run_is_taken_as_its_result(tmp_path, capsys):
    """The guard: a pair whose record says a run began on it after its output was last written
    (an output of an earlier run, or one a user put back) is made again, as is a batch member whose
    companion has no finished output; a finished batch, all of whose outputs were written by the
    stopped run, is recorded done without a fit."""
    from stylebatch.cli.main import main

    manifest = tiny_job(tmp_path, pairs=PAIRS, defaults={"keep_checkpoints": False, "steps": 4})
    out = tmp_path / "out"
    args = ["run", str(manifest), "--weights", "random"]
    assert main(args) == 0
    begun = records(out)["a__s1"]["begun"]

    # Both outputs written by the run that began at `begun`, neither recorded: both taken as done.
    for name in ("a__s1", "a__s2"):
        _set_record(out, name, status="running", attempt_open=True)
    capsys.readouterr()
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "0 to run" in text and all(r["status"] == "done" for r in records(out).values())

    # A run that began after the outputs were written did not write them: made again.
    _set_record(out, "a__s1", status="running", begun=time.time() + 5)
    _set_record(out, "a__s2", status="running", begun=begun)
    assert main(args) == 0
    assert "2 to run" in capsys.readouterr().out  # a__s2 too: its companion's output is not finished
    assert records(out)["a__s1"]["begun"] > begun
