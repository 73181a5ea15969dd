"""Read-only commands (status, report, inspect, validate) never talk about a job they did not run: a
closed pipe ends them quietly (exit 0 or 141), a file-system error is one `error:` line, and `status`
into a pipe or a file is one line per pair with names in full (no boxed table cut to 80 columns)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stylebatch.cli.main import main
from tests.jobkit import cli_env

LONG = "a_rather_long_content_photo_name_{:04d}__and_an_equally_long_painting_name_beside_it"


@pytest.fixture
def many(tmp_path: Path) -> Path:
    """A job directory of 2,000 records (no job.json: status lists them), half failed."""
    out = tmp_path / "out"
    for i in range(2000):
        d = out / ".stylebatch" / "pairs" / LONG.format(i)
        d.mkdir(parents=True)
        record = {"status": "failed" if i % 2 else "done", "steps_done": 5, "steps": 10, "attempts": 1, "error": "x"}
        (d / "state.json").write_text(json.dumps(record))
    return out


@pytest.mark.parametrize("args", [["--all"], ["--json"], []])
def test_a_closed_pipe_ends_status_quietly(many: Path, args: list[str]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "stylebatch", "status", str(many), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
    )
    first = [proc.stdout.readline() for _ in range(2)]  # `| head -2`
    proc.stdout.close()
    code = proc.wait(timeout=120)
    err = proc.stderr.read().decode()
    assert all(first)
    assert code in (0, 141), (code, err)
    assert err == "", err  # no "Broken pipe; the job stopped ...", no traceback


def test_status_into_a_file_is_one_line_per_pair_with_full_names(many: Path, tmp_path: Path) -> None:
    with open(tmp_path / "status.txt", "w") as fh:
        done = subprocess.run(
            [sys.executable, "-m", "stylebatch", "status", str(many)], stdout=fh, env=cli_env(), timeout=120
        )
    assert done.returncode == 0
    lines = (tmp_path / "status.txt").read_text().splitlines()
    assert not any(ch in "".join(lines) for ch in "│┃━─")  # no box drawing
    listed = [line for line in lines if line.startswith("a_rather_long")]
    assert len(listed) == 50  # the failed pairs the summary lists (SHOWN), each whole on its line
    assert {line.split()[0] for line in listed} == {LONG.format(i) for i in range(1, 100, 2)}
    assert all(line.split()[1] == "failed" for line in listed)
    assert lines[-1].endswith("2000 pairs: 1000 done, 1000 failed")


def test_a_file_system_error_in_a_read_only_command_is_one_line(
    many: Path, monkeypatch, capsys: pytest.CaptureFixture
) -> None:
    from stylebatch.report import rows

    def unreadable(output_dir: Path):
        raise PermissionError(13, "Permission denied", str(output_dir))

    monkeypatch.setattr(rows, "pair_rows", unreadable)
    assert main(["status", str(many)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Permission denied" in err
    assert "stopped" not in err and "resume" not in err


def test_a_closed_pipe_ends_inspect_and_validate_quietly(tmp_path: Path) -> None:
    from tests.jobkit import tiny_job

    manifest = tiny_job(tmp_path)
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the first line
    for args in (["validate", str(manifest), "--weights", "random"], ["inspect", str(manifest.parent / "none.png")]):
        done = subprocess.run(
            [sys.executable, "-m", "stylebatch", *args], stdout=w, stderr=subprocess.PIPE, env=cli_env(), timeout=180
        )
        if args[0] == "validate":
            assert done.returncode == 141, done.stderr
        assert b"stopped" not in done.stderr and b"Traceback" not in done.stderr, done.stderr
    os.close(w)
