"""Only a failure of the pair itself uses up one of its `max_attempts`: an interrupt (Ctrl-C,
SIGTERM, a scheduler's pre-emption), a second Ctrl-C that stops at once, or a process killed
outright (a lost worker) never counts. Real processes, real signals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.jobkit import cli_env, records, tiny_job

LONG = {"steps": 100_000, "checkpoint_every": 5, "log_every": 5, "keep_checkpoints": False, "max_attempts": 2}
PAIRS = [{"content": "images/a.png", "style": "images/s1.png", "optimizer": "adam", "lr": 0.05}]


def start(manifest: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "stylebatch", "run", str(manifest), "--weights", "random"],
        cwd=manifest.parent,
        env=cli_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_until_checkpointed(proc: subprocess.Popen, out: Path, deadline_s: float = 120) -> None:
    """Until the pair is running under `proc` and has a checkpoint on disk."""
    state = out / ".stylebatch" / "pairs" / "a__s1" / "state.json"
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()[0]
        try:
            record = json.loads(state.read_text())
        except (OSError, ValueError):
            record = {}
        if record.get("pid") == proc.pid and record.get("status") == "running" and record.get("steps_done", 0) > 0:
            return
        time.sleep(0.1)
    proc.kill()
    pytest.fail("the pair never checkpointed")


def interrupt(manifest: Path, how: str) -> int:
    proc = start(manifest)
    wait_until_checkpointed(proc, manifest.parent / "out")
    if how == "kill":
        proc.kill()
    elif how == "two ctrl-c":
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
    else:
        proc.send_signal({"ctrl-c": signal.SIGINT, "sigterm": signal.SIGTERM}[how])
    output = proc.communicate(timeout=120)[0]
    assert "Traceback" not in output, output
    return proc.returncode


@pytest.mark.slow
def test_interrupts_and_a_lost_process_never_use_up_an_attempt(tmp_path: Path) -> None:
    manifest = tiny_job(tmp_path, pairs=[dict(p) for p in PAIRS], defaults=LONG)
    out = tmp_path / "out"
    for how in ("ctrl-c", "sigterm", "two ctrl-c", "kill"):
        code = interrupt(manifest, how)
        assert code == (-signal.SIGKILL if how == "kill" else 3), how
        assert records(out)["a__s1"]["attempts"] <= 1, (how, records(out)["a__s1"])  # at most the open one
    # One real failure of the pair: its first attempt.
    failed = subprocess.run(
        [sys.executable, "-m", "stylebatch", "run", str(manifest), "--weights", "random"],
        cwd=tmp_path,
        env=cli_env(STYLEBATCH_FAULT="pair:a__s1!raise"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failed.returncode == 1, failed.stdout + failed.stderr
    record = records(out)["a__s1"]
    assert record["status"] == "failed" and record["attempts"] == 1, record
    # max_attempts 2: the pair is tried again (and interrupted again, which still does not count).
    assert interrupt(manifest, "sigterm") == 3
    record = records(out)["a__s1"]
    assert record["status"] == "interrupted" and record["attempts"] == 1, record
