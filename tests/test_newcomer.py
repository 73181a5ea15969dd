"""A newcomer's first hour, replayed in fresh directories through the real CLI: validate, run, a real
Ctrl-C (SIGINT to the process), status, resume, then a stray `--set` on the finished job. The resume
starts where the interrupt left the job (pairs and work), the interrupted pair's record totals both
runs, and the changed setting redoes nothing unasked and, confirmed, keeps every previous output."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stylebatch.cli.progress import pair_work
from tests.jobkit import cli_env, make_image, records, run_subprocess, write_manifest

STEPS = 120


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return run_subprocess(args, cwd=cwd, timeout=300)


@pytest.mark.slow
def test_validate_run_interrupt_resume_and_a_stray_set(tmp_path: Path) -> None:
    photos, project = tmp_path / "photos", tmp_path / "project"
    for i, name in enumerate(["cat.png", "dog.png"]):
        make_image(photos / name, seed=i)
    for i, name in enumerate(["wave.png", "night.png"]):
        make_image(photos / name, seed=10 + i, size=(30, 40))
    project.mkdir()
    pairs = [
        {"content": f"../photos/{c}", "style": f"../photos/{s}"}
        for c in ("cat.png", "dog.png")
        for s in ("wave.png", "night.png")
    ]
    defaults = {
        "size": 32,
        "steps": STEPS,
        "optimizer": "adam",
        "lr": 0.05,
        "batch_size": 1,
        "checkpoint_every": 10,
        "log_every": 5,
        # The Gram loss: the flow is under test here, not the loss, and at 32 px the default's
        # eigendecompositions make a step ~5x dearer (the default's own resume: test_resume.py).
        "style_loss": "gram",
    }
    manifest = write_manifest(
        project / "job.yaml", {"output_dir": "out", "weights": "random", "defaults": defaults, "pairs": pairs}
    )
    out = project / "out"

    checked = _cli(["validate", "job.yaml"], project)
    assert checked.returncode == 0, checked.stderr
    assert re.search(r"~[\d.]+ (?:s|min) \([\d.]+-[\d.]+ (?:s|min)\) in all", checked.stdout), checked.stdout
    assert not out.exists()  # validate writes nothing

    # Run, and press Ctrl-C once a pair is done and the next one has a checkpoint.
    proc = subprocess.Popen(
        [sys.executable, "-m", "stylebatch", "run", "job.yaml"],
        cwd=project,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        recs = records(out)
        statuses = [r.get("status") for r in recs.values()]
        if "done" in statuses and any(
            r.get("status") == "running" and r.get("steps_done", 0) >= 10 for r in recs.values()
        ):
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 3, stderr
    first = records(out)
    done_before = sorted(n for n, r in first.items() if r["status"] == "done")
    (stopped,) = [n for n, r in first.items() if r["status"] == "interrupted"]
    stopped_at, stopped_seconds = first[stopped]["steps_done"], first[stopped]["seconds"]
    assert 10 <= stopped_at < STEPS and stopped_seconds > 0
    assert f"done {done_before[0]} " in stdout  # a done line per pair

    status = _cli(["status", "out"], project)
    assert status.returncode == 0 and "interrupted" in status.stdout and "stopped" not in status.stderr

    # Resume: it starts where the interrupt left the job.
    resumed = _cli(["run", "job.yaml"], project)
    assert resumed.returncode == 0, resumed.stderr
    text = resumed.stdout
    left = 4 - len(done_before)
    assert f"4 pairs: {len(done_before)} already done, {left} to run" in text
    assert f"start {stopped} (resuming at " in text
    # The share of the work done before, by the same FLOP count the bar uses.
    from stylebatch.memory.autosize import load_job

    job = {p.name: p for p in load_job(manifest).valid_pairs}
    whole = sum(pair_work(p, 0, STEPS) for p in job.values())
    before = sum(pair_work(job[n], 0, STEPS) for n in done_before) + pair_work(job[stopped], 0, stopped_at)
    assert f"{100 * before / whole:.0f}% of the job's work was done before this run" in text
    first_done = re.search(r"^done \S+ \(.*\) \[(\d+)/4 pairs, eta ", text, re.M)
    assert first_done and int(first_done[1]) == len(done_before) + 1  # counts the pairs done before
    assert "eta 0:00:00" not in text
    final = records(out)
    assert all(r["status"] == "done" and r["steps_done"] == STEPS for r in final.values())
    assert final[stopped]["seconds"] > stopped_seconds  # its time over both runs

    # A stray --set on the finished job: four finished pairs would be redone; refused unasked.
    before_bytes = {p.name: p.read_bytes() for p in out.glob("*.png")}
    refused = _cli(["run", "job.yaml", "--set", "style_weight=0.5"], project)
    assert refused.returncode == 2 and "add --redo" in refused.stderr
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == before_bytes
    redone = _cli(["run", "job.yaml", "--set", "style_weight=0.5", "--redo"], project)
    assert redone.returncode == 0, redone.stderr
    kept = sorted((out / ".stylebatch" / "replaced").glob("*.png"))
    assert sorted(p.name for p in kept) == sorted(f"{n}.{final[n]['id']}.png" for n in final)
    assert all(p.read_bytes() == before_bytes[p.name.split(".")[0] + ".png"] for p in kept)
    listed = _cli(["status", "out", "--json"], project)
    assert sorted(Path(p).name for p in json.loads(listed.stdout)["replaced"]) == [p.name for p in kept]
