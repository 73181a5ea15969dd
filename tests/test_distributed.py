"""Several workers on this CPU: Fabric's own launcher, torchrun, and a simulated SLURM job.
Every pair is done exactly once, failures and signals are isolated, and reruns finish the rest."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from stylebatch.cli.main import main
from stylebatch.job.manifest import load_job
from stylebatch.runner.plan import plan
from tests.jobkit import cli_env, final_target, records, temp_files, tiny_job

pytestmark = pytest.mark.slow  # real processes: launchers, torchrun, simulated SLURM, kills

SIX = [
    {
        "content": "images/a.png" if i % 2 else "images/b.png",
        "style": "images/s1.png" if i < 3 else "images/s2.png",
        "name": f"p{i}",
        "seed": i,
        "init": "noise",
        "optimizer": "adam",
        "lr": 0.05,
    }
    for i in range(6)
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _job(root: Path, steps: int = 6, **defaults: object) -> Path:
    return tiny_job(root, pairs=SIX, defaults={"steps": steps, "checkpoint_every": 5, **defaults})


# For the long runs that are there to be stopped part-way: the processes and signals are under test,
# not the loss, and at 32 px the default's eigendecompositions make a step ~5x dearer than a Gram
# step. The short runs keep the default (test_two_cpu_workers_match_single_process: bit-identical).
GRAM = {"style_loss": "gram"}


def _cmd(manifest: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "stylebatch",
        "run",
        str(manifest),
        "--weights",
        "random",
        "--accelerator",
        "cpu",
        "--sync-timeout",
        "60",
        *extra,
    ]


def _run(args: list[str], cwd: Path, timeout: float = 240, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        args,
        cwd=cwd,
        env=cli_env(OMP_NUM_THREADS="1", MASTER_PORT=str(_free_port()), **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _logs(out: Path) -> str:
    return "\n".join(p.read_text() for p in sorted((out / ".stylebatch" / "logs").glob("*.log")))


def _assert_each_once(out: Path, ranks: frozenset[int] = frozenset({0, 1})) -> None:
    recs = records(out)
    assert sorted(recs) == [f"p{i}" for i in range(6)]
    assert all(r["status"] == "done" and r["attempts"] == 1 for r in recs.values()), recs
    assert {r["rank"] for r in recs.values()} == ranks
    assert sorted(p.name for p in out.glob("*.png")) == [f"p{i}.png" for i in range(6)]
    assert not temp_files(out)


def test_two_cpu_workers_match_single_process(tmp_path: Path) -> None:
    manifest = _job(tmp_path)
    proc = _run(_cmd(manifest, "--devices", "2"), tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = tmp_path / "out"
    _assert_each_once(out)
    log_text = _logs(out)
    assert "rank0" in log_text and "rank1" in log_text and "cluster environment LightningEnvironment" in log_text

    # The same job in one process with the thread count pinned equal (the launcher gives each of 2
    # CPU workers 1 thread, and CPU kernels are not bit-identical across thread counts).
    single = tmp_path / "single"
    single.mkdir()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["run", str(manifest), "--weights", "random", "--out", str(single)]) == 0
    finally:
        torch.set_num_threads(threads)
    for i in range(6):
        assert torch.equal(final_target(out, f"p{i}"), final_target(single, f"p{i}")), f"p{i}"


def test_torchrun_covers_every_pair_once(tmp_path: Path) -> None:
    manifest = _job(tmp_path)
    args = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "stylebatch",
        "run",
        str(manifest),
        "--weights",
        "random",
        "--accelerator",
        "cpu",
        "--sync-timeout",
        "60",
    ]
    proc = _run(args, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_each_once(tmp_path / "out")
    assert "cluster environment TorchElasticEnvironment" in _logs(tmp_path / "out")


def test_simulated_slurm_covers_every_pair_once(tmp_path: Path) -> None:
    manifest = _job(tmp_path)
    job_id = str(40000 + os.getpid() % 10000)
    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = cli_env(
            OMP_NUM_THREADS="1",
            SLURM_NTASKS="2",
            SLURM_NTASKS_PER_NODE="2",
            SLURM_PROCID=str(rank),
            SLURM_LOCALID=str(rank),
            SLURM_NODEID="0",
            SLURM_NNODES="1",
            SLURM_JOB_ID=job_id,
            SLURM_JOB_NAME="stylebatch",
            SLURM_NODELIST="localhost",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
        )
        procs.append(
            subprocess.Popen(
                _cmd(manifest), cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    _assert_each_once(tmp_path / "out")
    assert "cluster environment SLURMEnvironment" in _logs(tmp_path / "out")


def test_failure_in_rank1_first_pair_isolated(tmp_path: Path) -> None:
    manifest = _job(tmp_path)
    job = load_job(manifest, weights="random")
    shares = [[name for batch in share for name in batch] for share in plan(job.valid_pairs, 2)]
    victim = shares[1][0]
    proc = _run(_cmd(manifest, "--devices", "2"), tmp_path, STYLEBATCH_FAULT=f"pair:{victim}!raise")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    recs = records(tmp_path / "out")
    assert recs[victim]["status"] == "failed" and "injected fault" in recs[victim]["error"]
    assert all(recs[name]["status"] == "done" for name in shares[0] + shares[1][1:])


def _wait_for(cond, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if proc.poll() is not None:
            pytest.fail(f"run ended early with {proc.returncode}")
        time.sleep(0.05)
    pytest.fail("condition not reached in time")


def _rank_pids(out: Path) -> dict[int, int]:
    found = {}
    for f in (out / ".stylebatch" / "ranks").glob("rank*.json"):
        info = json.loads(f.read_text())
        found[info["rank"]] = info["pid"]
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_to_parent_stops_both_ranks_then_rerun_completes(tmp_path: Path) -> None:
    manifest = _job(tmp_path, steps=150, **GRAM)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        _cmd(manifest, "--devices", "2"),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=cli_env(OMP_NUM_THREADS="1", MASTER_PORT=str(_free_port())),
    )
    running_ranks = lambda: {r.get("rank") for r in records(out).values() if r.get("status") == "running"}  # noqa: E731
    _wait_for(lambda: running_ranks() == {0, 1} and 1 in _rank_pids(out), 120, proc)
    worker_pid = _rank_pids(out)[1]
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 3
    assert time.monotonic() - t0 < 60
    deadline = time.monotonic() + 10
    while _alive(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(worker_pid), "worker left behind"
    recs = records(out)
    interrupted = [r for r in recs.values() if r["status"] == "interrupted"]
    assert {r["rank"] for r in interrupted} == {0, 1}
    assert all((out / ".stylebatch" / "pairs" / r["name"] / "last.ckpt").is_file() for r in interrupted)

    proc = _run(_cmd(manifest, "--devices", "2"), tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(r["status"] == "done" for r in records(out).values())


def test_killed_worker_then_rerun_with_one_device(tmp_path: Path) -> None:
    manifest = _job(tmp_path, steps=80, **GRAM)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        _cmd(manifest, "--devices", "2"),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=cli_env(OMP_NUM_THREADS="1", MASTER_PORT=str(_free_port())),
    )
    done = lambda: [n for n, r in records(out).items() if r.get("status") == "done"]  # noqa: E731
    _wait_for(lambda: len(done()) >= 1 and 1 in _rank_pids(out), 180, proc)
    os.kill(_rank_pids(out)[1], signal.SIGKILL)
    proc.wait(timeout=60)  # Lightning's launcher takes the whole job down when a worker dies
    finished = {n: records(out)[n]["started"] for n in done()}
    assert finished

    proc = _run(_cmd(manifest, "--devices", "1"), tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recs = records(out)
    assert all(r["status"] == "done" for r in recs.values())
    assert {n: recs[n]["started"] for n in finished} == finished  # nothing already done was redone
