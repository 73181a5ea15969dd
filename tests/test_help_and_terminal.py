"""What a newcomer reads first: bare `stylebatch` lists the commands, `run --help` shows its defaults
and presets and where every key is explained, report intervals are in minutes; a running job tells
each finished pair on a terminal too, warns about CPU workers that cannot help, and `status` during a
run shows the evaluation count of the moment."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from stylebatch.cli import flags, progress
from stylebatch.cli.main import main
from stylebatch.job.config import Config
from tests.jobkit import cli_env, tiny_job


def test_bare_stylebatch_lists_the_commands() -> None:
    done = subprocess.run([sys.executable, "-m", "stylebatch"], capture_output=True, text=True, env=cli_env())
    assert done.returncode == 0 and done.stderr == ""
    for command in ("run", "validate", "status", "report", "inspect"):
        assert f"\n    {command} " in done.stdout


def test_run_help_shows_defaults_presets_and_the_reference(capsys) -> None:
    assert main(["run", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps at the terminal's width
    assert "or gpu (default: auto)" in text
    assert "one worker on the CPU (default: 1)" in text
    assert "(default: 600)" in text
    assert "presets (--config, or defaults.preset in a manifest): fast, fast-preview, gatys2016" in text
    assert "'Configuration reference'" in text


def test_report_intervals_are_minutes_everywhere(capsys) -> None:
    from stylebatch.report import live

    assert main(["report", "--help"]) == 0
    assert "--live-every MINUTES" in capsys.readouterr().out
    command = live._report_command(Path("out"), 90.0)  # report_every_s: seconds inside the job
    assert command[-2:] == ["--live-every", "1.5"]


def test_a_terminal_shows_a_done_line_for_every_pair() -> None:
    buf = io.StringIO()
    rep = progress.RichReporter(Console(file=buf, force_terminal=True, width=120, color_system=None))

    class P:
        def __init__(self, name: str) -> None:
            self.name, self.config = name, Config(steps=10, size=64, scales=None)

    pairs = [P("first"), P("second")]
    rep.start(2, 0, pairs)
    for p in pairs:
        rep.pair_start(p, 0, None)
        rep.pair_progress(p, 10, {"total": 1.0})
        rep.pair_end(p, "done", "1.5 s")
    rep.stop()
    text = buf.getvalue()
    assert "done first (1.5 s)" in text and "done second (1.5 s)" in text


def test_more_cpu_workers_than_cores_can_feed_get_a_note(monkeypatch) -> None:
    monkeypatch.setattr(flags.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    note = flags.cpu_workers_note("cpu", 2)
    assert note and note.startswith("--devices 2 on 2 CPU core(s) gives each worker 1 core(s)")
    assert flags.cpu_workers_note("cpu", 1) is None and flags.cpu_workers_note("cpu", None) is None
    monkeypatch.setattr(flags.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert flags.cpu_workers_note("cpu", 4) is None  # 4 cores each


@pytest.mark.slow
def test_status_during_a_run_shows_the_evaluations_of_the_moment(tmp_path: Path, monkeypatch) -> None:
    """Between checkpoints (none here before the end) the record follows the fit within
    PROGRESS_EVERY_S; made 0 here so every evaluation is written."""
    from stylebatch.memory.autosize import load_job
    from stylebatch.report.rows import pair_rows
    from stylebatch.runner import lifecycle
    from stylebatch.runner.loop import run_job
    from stylebatch.runner.options import Reporter, RunOptions

    monkeypatch.setattr(lifecycle, "PROGRESS_EVERY_S", 0.0)
    pairs = [{"content": "images/a.png", "style": "images/s1.png", "optimizer": "adam"}]
    manifest = tiny_job(tmp_path, pairs=pairs, defaults={"steps": 12, "checkpoint_every": 1000, "log_every": 1})
    seen: list[tuple[int, int]] = []

    class Watching(Reporter):
        def pair_progress(self, pair, evaluations, losses) -> None:
            (row,) = list(pair_rows(tmp_path / "out"))
            seen.append((evaluations, row["steps_done"]))

    assert run_job(load_job(manifest, weights="random"), RunOptions(), Watching()) == 0
    assert seen and seen[-1][0] == 12
    # What status read at evaluation n is the count written at the evaluation before it.
    assert all(shown >= n - 1 for n, shown in seen[1:]), seen
    assert max(shown for _, shown in seen) >= 10
