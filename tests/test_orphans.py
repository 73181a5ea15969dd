"""Workers never outlive the job, and no pair is worked on by two processes at once.

- each pair is claimed (a flock) by the one process working on it; another process leaves it alone;
- a worker whose parent dies checkpoints and stops (PR_SET_PDEATHSIG, and a parent-pid watch);
- a worker killed alone stops the job with one line and exit 3, the other ranks checkpointed;
- `--break-lock` refuses while the lock's holder is alive on this host;
- the orphan case for real: two CPU workers, SIGKILL of rank 0 alone, a second run at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from stylebatch.cli.main import main
from stylebatch.jobdir.state import JobState
from tests.jobkit import REPO, cli_env, records, tiny_job
from tests.test_distributed import GRAM, SIX, _cmd, _free_port, _logs, _rank_pids

ARGS = ["--weights", "random"]
PAIRS = [
    {"content": "images/a.png", "style": "images/s1.png", "optimizer": "adam", "lr": 0.05},
    {"content": "images/b.png", "style": "images/s2.png", "optimizer": "lbfgs", "lbfgs_history": 5},
]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (dead, not yet reaped by its parent) is not a live process.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]


# --- claims, in process ---------------------------------------------------------------------------


def test_a_pair_claimed_by_a_live_process_is_neither_read_for_planning_nor_written(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    from stylebatch.jobdir import claims

    monkeypatch.setattr(claims, "WAIT_S", 0.5)
    manifest = tiny_job(tmp_path, pairs=[dict(p) for p in PAIRS], defaults={"steps": 3, "checkpoint_every": 2})
    out = tmp_path / "out"
    state = JobState(out)
    fd = claims.try_claim(state, "a__s1", rank=5, purpose="work")  # another worker is on a__s1
    state.write("a__s1", {"id": "from-an-older-run", "status": "running", "attempts": 1, "pid": 1})
    record_file = state.pair_dir("a__s1") / "state.json"
    before = record_file.read_bytes()
    try:
        code = main(["run", str(manifest), *ARGS])
        captured = capsys.readouterr()
        assert code == 3, captured.out + captured.err  # a__s1 is not done: left to its holder
        assert record_file.read_bytes() == before  # not reset for the id change, not marked running
        assert not (out / "a__s1.png").exists()
        assert records(out)["b__s2"]["status"] == "done"
        assert "a__s1: still worked on by pid" in _logs(out)
    finally:
        claims.release(state, "a__s1", fd)
    assert main(["run", str(manifest), *ARGS]) == 0  # released: the next run does it
    hist = claims.history(state, "a__s1")
    assert [e.get("rank") for e in hist if "claimed" in e][:1] == [5]
    assert all(e["pid"] == os.getpid() for e in hist)  # everything in process here: one pid, in turn
    assert sum("claimed" in e for e in hist) == sum("released" in e for e in hist)


def test_claimed_waits_for_a_busy_batch_and_skips_one_finished_meanwhile(tmp_path: Path) -> None:
    from stylebatch.jobdir import claims

    state = JobState(tmp_path)

    class P:
        def __init__(self, name: str):
            self.name, self.id = name, "id-" + name

    a, b, c = P("a"), P("b"), P("c")
    fd_b = claims.try_claim(state, "b", rank=9, purpose="work")
    fd_c = claims.try_claim(state, "c", rank=9, purpose="work")
    got = []
    gen = claims.claimed(state, [[a], [b], [c]], rank=0, should_stop=lambda: False, wait_s=5)
    got.append(next(gen))  # a: free
    state.write("c", {"id": "id-c", "status": "done"})  # c's holder finishes it...
    claims.release(state, "c", fd_c)
    claims.release(state, "b", fd_b)  # ...and b's lets go
    got += list(gen)
    assert [[p.name for p in batch] for batch in got] == [["a"], ["b"]]  # c done meanwhile: skipped


# --- parent death, real processes -----------------------------------------------------------------

_GRANDCHILD = textwrap.dedent("""
    import os, signal, sys, time
    from stylebatch.runner import workers
    marker = sys.argv[1]
    if sys.argv[2] == "watch-only":
        workers._request_parent_death_signal = lambda signum: None  # only the parent-pid watch is left
    signal.signal(signal.SIGTERM, lambda *a: (open(marker, "w").write("stopped"), sys.exit(0)))
    workers.stop_with_parent(os.getppid())
    print(os.getpid(), flush=True)
    time.sleep(60)
""")
_PARENT = textwrap.dedent("""
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2], sys.argv[3]], stdout=subprocess.PIPE, text=True)
    print(child.stdout.readline().strip(), flush=True)
    time.sleep(60)
""")


@pytest.mark.parametrize("mode", ["pdeathsig", "watch-only"])
def test_a_process_whose_parent_dies_is_stopped(mode: str, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, _GRANDCHILD, str(marker), mode],
        cwd=REPO,
        env=cli_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        child = int(parent.stdout.readline())
        assert _alive(child) and not marker.exists()
        parent.send_signal(signal.SIGKILL)  # no cleanup: the child can only learn it from the kernel
        parent.wait(timeout=10)
        _wait(lambda: marker.exists(), 10, "the orphan to be stopped")
        _wait(lambda: not _alive(child), 10, "the orphan to exit")
    finally:
        parent.kill()
        parent.wait()


# --- the lock ---------------------------------------------------------------------------------------


def test_break_lock_refuses_while_the_holder_is_alive_on_this_host(tmp_path: Path, capsys) -> None:
    manifest = tiny_job(tmp_path, pairs=[dict(PAIRS[0])], defaults={"steps": 2})
    code = (
        "import sys, time; from pathlib import Path; from stylebatch.jobdir.state import JobState\n"
        "with JobState(Path(sys.argv[1])).lock():\n    print('locked', flush=True); time.sleep(120)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "out")], cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["run", str(manifest), *ARGS, "--break-lock"]) == 4
        err = capsys.readouterr().err
        assert "Traceback" not in err
        (line,) = _error_lines(err)
        assert "--break-lock refused" in line and f"pid {holder.pid} on this host" in line
        assert sorted(p.name for p in (tmp_path / "out" / ".stylebatch").iterdir()) == ["lock"]
        assert holder.poll() is None  # the holder was not disturbed
    finally:
        holder.kill()
        holder.wait()


# --- real workers ---------------------------------------------------------------------------------


def _job(root: Path, steps: int) -> Path:
    return tiny_job(root, pairs=SIX, defaults={"steps": steps, "checkpoint_every": 5, **GRAM})


def _popen(manifest: Path, cwd: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        _cmd(manifest, "--devices", "2", *extra),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(OMP_NUM_THREADS="1", MASTER_PORT=str(_free_port())),
    )


def _checkpointed_on_both_ranks(out: Path) -> bool:
    recs = records(out).values()
    ranks = {r.get("rank") for r in recs if r.get("status") == "running" and r.get("steps_done", 0) >= 5}
    return ranks == {0, 1} and 1 in _rank_pids(out)


def _all_pids(out: Path) -> set[int]:
    """Every process that worked in this job directory (one log file each)."""
    return {int(p.name.split("-")[-2]) for p in (out / ".stylebatch" / "logs").glob("*-rank*.log")}  # not report.log


@pytest.mark.slow
def test_a_worker_killed_alone_stops_the_job_with_one_line_and_exit_3(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _popen(_job(tmp_path, steps=400), tmp_path)
    try:
        _wait(lambda: _checkpointed_on_both_ranks(out) or proc.poll() is not None, 180, "both ranks to checkpoint")
        assert proc.poll() is None
        worker = _rank_pids(out)[1]
        os.kill(worker, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 3, stdout + stderr  # not 137: rank 0 was not taken down with it
    assert "Traceback" not in stdout + stderr
    (line,) = _error_lines(stderr)
    assert f"rank 1 (pid {worker}) was killed by SIGKILL" in line and "run the same command again" in line
    recs = records(out)
    mine = [r for r in recs.values() if r.get("rank") == 0]
    assert mine and all(r["status"] in ("interrupted", "done") for r in mine)
    for r in mine:
        if r["status"] == "interrupted":
            assert (out / ".stylebatch" / "pairs" / r["name"] / "last.ckpt").is_file()
    assert not any(_alive(pid) for pid in _all_pids(out))


@pytest.mark.slow
def test_orphaned_worker_stops_and_no_pair_is_worked_on_by_two_processes(tmp_path: Path) -> None:
    """--devices 2, SIGKILL of rank 0 alone, then a second run at once. Once, rank 1 kept
    running without the lock and the second run planned the same pairs: pairs finished twice by two
    processes at once, the output depending on which finished last."""
    steps = 120
    manifest = _job(tmp_path, steps=steps)
    clean = subprocess.run(
        _cmd(manifest, "--devices", "2", "--out", str(tmp_path / "clean")),
        cwd=tmp_path,
        env=cli_env(OMP_NUM_THREADS="1", MASTER_PORT=str(_free_port())),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert clean.returncode == 0, clean.stdout + clean.stderr

    out = tmp_path / "out"
    first = _popen(manifest, tmp_path)
    try:
        _wait(lambda: _checkpointed_on_both_ranks(out) or first.poll() is not None, 180, "both ranks to checkpoint")
        assert first.poll() is None
        orphan = _rank_pids(out)[1]
        first.send_signal(signal.SIGKILL)  # rank 0 alone: its worker is not signalled by anyone
        killed_at = time.time()
        first.wait(timeout=30)
        second = _popen(manifest, tmp_path)  # at once
        stdout, stderr = second.communicate(timeout=600)
    finally:
        first.kill()
    assert second.returncode == 0, stdout + stderr
    assert not _alive(orphan)

    # The orphan stopped on its own, after a checkpoint: it did not finish its pairs.
    orphan_log = next(p for p in (out / ".stylebatch" / "logs").glob(f"*-{orphan}-rank1.log")).read_text()
    assert "SIGTERM: checkpointing the current pair and stopping" in orphan_log  # the parent-death signal
    assert ": done," not in orphan_log

    # Claims: for every pair, one holder at a time; the killed rank 0 held its claims until it died.
    from stylebatch.jobdir import claims

    state = JobState(out)
    orphan_held = set()
    for i in range(6):
        name = f"p{i}"
        intervals, open_claims = [], {}
        for entry in claims.history(state, name):
            if "claimed" in entry:
                open_claims[entry["pid"]] = entry["claimed"]
            else:
                intervals.append((open_claims.pop(entry["pid"]), entry["released"], entry["pid"]))
        assert set(open_claims) <= {first.pid}, (name, open_claims)  # only the SIGKILLed one never let go
        intervals += [(start, killed_at, pid) for pid, start in open_claims.items()]
        intervals.sort()
        for (_, end, pid), (start, _, next_pid) in zip(intervals, intervals[1:]):
            assert end <= start, f"{name}: pid {pid} and pid {next_pid} held it at once"
        orphan_held |= {name for _, _, pid in intervals if pid == orphan}
    assert orphan_held  # the orphan's claims are in the record too: it was working when rank 0 died

    # Each pair finished exactly once, by one process, and is the clean run's output byte for byte.
    logs = _logs(out)
    for i in range(6):
        assert logs.count(f"p{i}: done,") == 1, f"p{i}"
        assert (out / f"p{i}.png").read_bytes() == (tmp_path / "clean" / f"p{i}.png").read_bytes(), f"p{i}"
    assert all(r["status"] == "done" for r in records(out).values())
    _wait(lambda: not any(_alive(pid) for pid in _all_pids(out)), 30, "every process to be gone")


# --- --fresh never deletes what a live process holds; a worker of the earlier run writes nothing ---


def test_fresh_waits_for_a_live_claim_then_refuses_naming_its_holder(tmp_path: Path, capsys, monkeypatch) -> None:
    from stylebatch.jobdir import claims

    monkeypatch.setattr(claims, "WAIT_S", 0.5)
    manifest = tiny_job(tmp_path, pairs=[dict(p) for p in PAIRS], defaults={"steps": 2})
    out = tmp_path / "out"
    assert main(["run", str(manifest), *ARGS]) == 0
    state = JobState(out)
    fd = claims.try_claim(state, "a__s1", rank=1, purpose="work")  # a live worker of an earlier run
    try:
        capsys.readouterr()
        assert main(["run", str(manifest), *ARGS, "--fresh"]) == 4
        err = capsys.readouterr().err
        (line,) = _error_lines(err)
        assert "--fresh refused" in line and "a__s1" in line and f"pid {os.getpid()}" in line, line
        assert "Traceback" not in err
        assert records(out)["a__s1"]["status"] == "done"  # nothing was deleted
    finally:
        claims.release(state, "a__s1", fd)
    assert main(["run", str(manifest), *ARGS, "--fresh"]) == 0  # let go: --fresh goes ahead


def test_a_worker_of_a_run_started_afresh_writes_nothing(tmp_path: Path) -> None:
    from stylebatch.errors import JobGoneError
    from stylebatch.jobdir import claims

    out = tmp_path / "out"
    planner, worker = JobState(out), JobState(out)
    planner.write("a__s1", {"status": "running"})
    worker.expected_generation = planner.generation()  # as the plan gave it
    worker.update("a__s1", steps_done=5)  # the same generation: writes
    planner.new_generation()  # `run --fresh` by another process
    before = (out / ".stylebatch" / "pairs" / "a__s1" / "state.json").read_bytes()
    with pytest.raises(JobGoneError, match="started afresh"):
        worker.update("a__s1", steps_done=10)
    with pytest.raises(JobGoneError):
        claims.try_claim(worker, "b__s2", rank=1, purpose="work")
    assert (out / ".stylebatch" / "pairs" / "a__s1" / "state.json").read_bytes() == before
    assert not (out / ".stylebatch" / "pairs" / "b__s2").exists()


@pytest.mark.slow
def test_fresh_at_once_after_rank0_is_killed_never_shares_a_pair_with_the_orphan(tmp_path: Path) -> None:
    """--devices 2, SIGKILL of rank 0 alone, then `run --fresh` at once: it waits for the orphan's
    claims (the orphan checkpoints and stops), and the two never work on one pair at once."""
    manifest = _job(tmp_path, steps=120)
    out = tmp_path / "out"
    first = _popen(manifest, tmp_path)
    try:
        _wait(lambda: _checkpointed_on_both_ranks(out) or first.poll() is not None, 180, "both ranks to checkpoint")
        assert first.poll() is None
        orphan = _rank_pids(out)[1]
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        second = _popen(manifest, tmp_path, "--fresh")
        stdout, stderr = second.communicate(timeout=600)
    finally:
        first.kill()
    assert second.returncode == 0, stdout + stderr
    assert not _alive(orphan)
    from stylebatch.jobdir import claims

    state = JobState(out)
    for i in range(6):  # the fresh directory's claims: only the second run's processes, one at a time
        entries = claims.history(state, f"p{i}")
        assert orphan not in {e["pid"] for e in entries}, (f"p{i}", entries)
        assert all(r["status"] == "done" for r in records(out).values())
