"""`stylebatch status`: every pair of the job, pending ones included (from job.json), a summary by
default (counts, then the failed and running pairs), every row with --all, and --json written pair
by pair as the records are read."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from stylebatch.cli.main import main
from stylebatch.job.jobfile import read_job_file
from stylebatch.jobdir.state import JobState
from stylebatch.report import rows as pair_rows_mod
from tests.jobkit import records, run_with_sigterm_at, tiny_job

FAST = {"steps": 12, "checkpoint_every": 4, "log_every": 2, "optimizer": "adam", "lr": 0.05, "batch_size": 1}
PAIRS = [
    {"content": c, "style": s} for c in ("images/a.png", "images/b.png") for s in ("images/s1.png", "images/s2.png")
]


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-pair job stopped by SIGTERM in its first pair: one interrupted, three never started."""
    root = tmp_path_factory.mktemp("status")
    manifest = tiny_job(root, pairs=PAIRS, defaults=FAST)
    code, fired = run_with_sigterm_at(manifest, 4, "--weights", "random")
    assert fired and code == 3
    return root / "out"


def _json(out: Path, capsys: pytest.CaptureFixture) -> dict:
    capsys.readouterr()
    assert main(["status", str(out), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_status_lists_the_pairs_that_have_not_started(interrupted: Path, capsys: pytest.CaptureFixture) -> None:
    assert len(records(interrupted)) == 1  # only the first pair has a record
    status = _json(interrupted, capsys)
    assert [p["name"] for p in status["pairs"]] == ["a__s1", "a__s2", "b__s1", "b__s2"]  # manifest order
    assert [p["status"] for p in status["pairs"]] == ["interrupted", "pending", "pending", "pending"]
    assert status["pairs"][1]["steps"] == 12 and status["pairs"][1]["steps_done"] == 0
    assert status["counts"]["pending"] == 3 and status["counts"]["interrupted"] == 1

    capsys.readouterr()
    assert main(["status", str(interrupted)]) == 0
    text = capsys.readouterr().out
    assert "4 pairs: 3 pending, 1 interrupted" in text
    assert "a__s1" in text and "b__s2" not in text  # the summary lists what needs a look, not pending pairs
    assert main(["status", str(interrupted), "--all"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines[1:5]] == [
        ["a__s1", "interrupted"],
        ["a__s2", "pending"],
        ["b__s1", "pending"],
        ["b__s2", "pending"],
    ]


def test_json_is_one_document_written_pair_by_pair(interrupted: Path, monkeypatch) -> None:
    """Each pair's line is out before the next record is read: nothing of the size of the job is
    built in memory."""
    sink = io.StringIO()
    monkeypatch.setattr("sys.stdout", sink)
    original = pair_rows_mod.pair_rows
    written_before: list[int] = []

    def watched(output_dir):
        for row in original(output_dir):
            written_before.append(len(sink.getvalue()))
            yield row

    monkeypatch.setattr(pair_rows_mod, "pair_rows", watched)
    assert main(["status", str(interrupted), "--json"]) == 0
    # Each row is read only after the one before it was written: the output grew between reads.
    assert len(written_before) == 4 and all(b > a for a, b in zip(written_before, written_before[1:]))
    lines = sink.getvalue().splitlines()
    assert lines[0] == '{"pairs": [' and len(lines) == 1 + 4 + 3  # pairs, "],", counts, replaced
    assert json.loads(lines[1].rstrip(","))["name"] == "a__s1"
    assert json.loads(sink.getvalue())["counts"]["pending"] == 3


def test_the_summary_caps_long_lists(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    out = tmp_path / "out"
    state = JobState(out)
    names = [f"p{i:03d}" for i in range(120)]
    for name in names:
        state.write(name, {"status": "failed", "error": f"boom {name}", "attempts": 2})
    monkeypatch.setattr("stylebatch.cli.status.SHOWN", 10)
    assert main(["status", str(out)]) == 0  # no job.json (a run stopped before writing it): the records
    text = capsys.readouterr().out
    assert "p009" in text and "p010" not in text and "110 more failed" in text and "120 failed" in text


def test_job_file_holds_the_job_once_and_each_pair_compactly(interrupted: Path) -> None:
    raw = (interrupted / ".stylebatch" / "job.json").read_text()
    lines = raw.splitlines()
    pair_lines = [line for line in lines if line.startswith('{"name"')]
    assert len(pair_lines) == 4  # one line per pair
    assert all(len(line) < 400 for line in pair_lines)  # no full config per pair
    job = read_job_file(interrupted / ".stylebatch" / "job.json")
    assert job.defaults["steps"] == 12 and job.defaults["optimizer"] == "adam" and "save_every" in job.bookkeeping
    assert [e.name for e in job.entries] == ["a__s1", "a__s2", "b__s1", "b__s2"]
    assert all(e.overrides == {} for e in job.entries) and job.config(job.entries[3])["lr"] == 0.05


def test_status_of_a_directory_that_is_not_a_job(tmp_path: Path) -> None:
    assert main(["status", str(tmp_path)]) == 2
