"""A worker that fails to start (killed, stopped, lost before it takes the job) or a multi-node run
with nothing to start the other nodes ends within a bounded time with one line, never a
traceback or a wait of the full --sync-timeout. Real processes."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.jobkit import cli_env, tiny_job
from tests.test_distributed import _cmd, _free_port

PAIRS = [{"content": "images/a.png", "style": "images/s1.png", "optimizer": "adam", "lr": 0.05}]


def _run(manifest: Path, *extra: str, timeout: float = 300, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    proc = subprocess.run(
        _cmd(manifest, *extra),
        cwd=manifest.parent,
        env=cli_env(OMP_NUM_THREADS="1", MASTER_PORT=str(_free_port()), **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc, time.monotonic() - start


def _one_line(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text and "internal error" not in text, text
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    assert all(f in errors[0] for f in fragments), errors[0]
    return errors[0]


def test_num_nodes_without_a_launcher_is_refused_at_once(tmp_path: Path) -> None:
    manifest = tiny_job(tmp_path, pairs=[dict(p) for p in PAIRS], defaults={"steps": 2})
    proc, took = _run(manifest, "--num-nodes", "2")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    # A usage mistake, not an interruption: the line says exactly what to run instead.
    _one_line(
        proc,
        "--num-nodes 2",
        f"srun --nodes 2 --ntasks-per-node 1 stylebatch run {manifest} --devices 1 --num-nodes 2",
        f"python -m torch.distributed.run --nnodes 2 --nproc-per-node 1 --rdzv-backend c10d "
        f"--rdzv-endpoint HOST:29500 -m stylebatch run {manifest}",
        "nothing was run",
    )
    assert took < 60
    assert not (tmp_path / "out" / ".stylebatch" / "pairs").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "fault, limit, fragment",
    [
        ("worker_start", 90, "rank 1 (pid"),  # killed before the process group is up
        ("worker_joined", 90, "rank 1 (pid"),  # killed after it, before the job is handed over
        ("worker_start!stop", 8, "did not join within 8 s"),  # stopped: never joins; the limit is waited out
    ],
)
def test_a_worker_that_fails_to_start_ends_the_run_with_one_line_and_exit_3(
    fault: str, limit: int, fragment: str, tmp_path: Path
) -> None:
    manifest = tiny_job(tmp_path, pairs=[dict(p) for p in PAIRS], defaults={"steps": 2})
    proc, took = _run(manifest, "--devices", "2", "--sync-timeout", str(limit), STYLEBATCH_FAULT=fault)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    _one_line(proc, fragment, "run the same command again")
    assert took < limit + 30, took  # bounded: the start-up limit (and start-up itself), not 600 s
    assert not (tmp_path / "out" / "a__s1.png").exists()
    ok, _ = _run(manifest, "--devices", "2", "--sync-timeout", "60")  # the same command, run again
    assert ok.returncode == 0, ok.stdout + ok.stderr
