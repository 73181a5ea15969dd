"""Starting the worker processes, and making sure none outlives the job.

Lightning Fabric runs the workers (ranks, the process group, barriers, broadcasts). On a
workstation it would also start them, but its launcher (`_SubprocessScriptLauncher`) adds a
watchdog thread that SIGKILLs every process, rank 0 included, as soon as one worker exits non-zero
(lightning/fabric/strategies/launchers/subprocess_script.py, `_ChildProcessObserver`; it has no
setting). A worker killed alone (out of memory, kill -9) would then take rank 0 down mid-write
with exit 137 and no message. Lightning's supported way around its launcher is the one its
`LightningEnvironment` documents for torchrun and schedulers: set LOCAL_RANK (with MASTER_ADDR,
MASTER_PORT, WORLD_SIZE, NODE_RANK) in every process and start them yourself; Fabric then
launches nothing (`creates_processes_externally`). So rank 0 starts the other local ranks here,
as Lightning would (the same command line, the same variables), and watches them itself: a worker
that dies stops the job cleanly (every other rank checkpoints; exit 3, one line saying which).

The other way round, a worker whose parent dies stops too, at its next step boundary after a
checkpoint: it asks the kernel for SIGTERM when its parent dies (Linux PR_SET_PDEATHSIG, through
ctypes), and a thread compares its parent pid with the launcher's as a fallback (other systems,
or a parent that died before the request was made).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from stylebatch.atomic import fault_point
from stylebatch.errors import StylebatchError, WorkerLostError

log = logging.getLogger("stylebatch")

LAUNCHER_ENV = "STYLEBATCH_LAUNCHER_PID"
PR_SET_PDEATHSIG = 1  # linux/prctl.h
WATCH_S = 0.5
_children: list[subprocess.Popen] = []


def no_launcher_message(num_nodes: int, devices: int | None, manifest: str = "MANIFEST") -> str:
    """What to do when several nodes are asked for and nothing started their processes: the exact
    commands, with this run's manifest and device count."""
    d = devices if devices is not None else "N"
    return (
        f"--num-nodes {num_nodes}: stylebatch starts the workers of this machine only; the other nodes' "
        f"processes must be started by a launcher, one per device on every node: under SLURM "
        f"`srun --nodes {num_nodes} --ntasks-per-node {d} stylebatch run {manifest} --devices {d} --num-nodes "
        f"{num_nodes}` (or `sbatch scripts/slurm/stylebatch.sbatch {manifest}`), or with torchrun, on each of "
        f"the {num_nodes} nodes, `python -m torch.distributed.run --nnodes {num_nodes} --nproc-per-node {d} "
        f"--rdzv-backend c10d --rdzv-endpoint HOST:29500 -m stylebatch run {manifest}`; nothing was run"
    )


def launcher_missing(num_nodes: int) -> bool:
    """Several nodes asked for, but no launcher (torchrun's WORLD_SIZE, srun's SLURM_NTASKS) started
    this process: nothing would start the other nodes' processes."""
    return num_nodes > 1 and int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", "1")) or 1) == 1


def launch(accelerator: str, devices: int | None, num_nodes: int, sync_timeout: float) -> Any:
    """Start the workers and return the Fabric object, or None for a single process.
    `devices` None means auto (Lightning's: every GPU, or one process on the CPU).

    On a workstation rank 0 starts the other local ranks (see the module docstring); under
    torchrun or srun every process is already running and the layout comes from them. No DDP:
    pairs are independent, so the process group is used only for the plan's broadcast and barriers.
    """
    from datetime import timedelta

    from lightning.fabric import Fabric
    from lightning.fabric.plugins.environments import LightningEnvironment
    from lightning.fabric.strategies import DDPStrategy

    external_world = int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", "1")) or 1)
    if devices == 1 and num_nodes == 1 and external_world == 1:
        return None
    if launcher_missing(num_nodes):
        # Nothing would start the other nodes' processes: rank 0 would wait for them until the timeout.
        # A usage mistake (exit 2), not an interrupted job (3): the same command again fails alike.
        raise StylebatchError(no_launcher_message(num_nodes, devices))
    if external_world > 1 and devices in (1, None):
        # torchrun / srun: one process per task is already running; take the layout from them.
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("SLURM_NTASKS_PER_NODE") or external_world)
        devices, num_nodes = per_node, max(1, external_world // per_node)
    strategy = DDPStrategy(start_method="popen", timeout=timedelta(seconds=sync_timeout))
    fabric = Fabric(
        accelerator=accelerator,
        devices=devices if devices is not None else "auto",
        num_nodes=num_nodes,
        strategy=strategy,
    )
    env = fabric.strategy.cluster_environment
    if os.environ.get(LAUNCHER_ENV, str(os.getpid())) != str(os.getpid()) and "LOCAL_RANK" in os.environ:
        stop_with_parent(int(os.environ[LAUNCHER_ENV]))  # a worker that rank 0 started
        fault_point("worker_start")
    elif isinstance(env, LightningEnvironment) and not env.creates_processes_externally:
        _start_local_ranks(fabric.strategy.num_processes, fabric.strategy.num_nodes)  # instead of Fabric's launcher
    watch = _StartWatch(min(sync_timeout, STARTUP_S)) if _children else None
    try:
        fabric.launch()
    except Exception as e:  # noqa: BLE001 (the process group's errors: DistStoreError, RuntimeError...)
        raise WorkerLostError(startup_failure(e, wait_s=3.0)) from None
    finally:
        if watch is not None:
            watch.done.set()
    return fabric


STARTUP_S = 120.0  # the longest rank 0 waits for the workers it started to join (or --sync-timeout, if shorter)
EXIT_STARTUP = 3  # interrupted before any work: the same command, run again, starts the job


def startup_failure(e: BaseException | None = None, wait_s: float = 0.0) -> str:
    """One line for a worker that failed to start or to take the job: the worker that died if one
    did (waiting up to `wait_s` for it: the connection drops a moment before the process is gone),
    else the process group's own first sentence."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and all(proc.poll() in (None, 0) for proc in _children):
        time.sleep(0.05)
    for rank, proc in enumerate(_children, start=1):
        code = proc.poll()
        if code not in (None, 0):
            how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
            return (
                f"rank {rank} (pid {proc.pid}) {how} while the workers were starting; nothing was run: "
                "run the same command again"
            )
    first = str(e).splitlines()[0].split(". ")[0] if e is not None and str(e) else ""
    why = f" ({type(e).__name__}: {first})" if e is not None else ""
    return f"the workers could not start or reach each other{why}; nothing was run: run the same command again"


def broadcast(fabric: Any, obj: Any) -> Any:
    """fabric.broadcast from rank 0, with a lost worker as one line (exit 3), never a traceback."""
    try:
        return fabric.broadcast(obj, src=0)
    except Exception as e:  # noqa: BLE001 (gloo/NCCL: "Connection closed by peer", timeouts)
        raise WorkerLostError(startup_failure(e, wait_s=3.0)) from None


class _StartWatch:
    """While rank 0 waits in the process group's start-up (a C++ wait that no signal interrupts),
    watch the workers it started: one that dies, or none joining within `limit` seconds (a stopped
    or stuck worker), ends the command with one line and exit 3 instead of a traceback after the
    full --sync-timeout. Nothing is written before the process group is up, so ending is safe."""

    def __init__(self, limit: float):
        self.limit, self.done = limit, threading.Event()
        threading.Thread(target=self._run, name="stylebatch-start-watch", daemon=True).start()

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        while not self.done.wait(WATCH_S):
            died = any(proc.poll() not in (None, 0) for proc in _children)
            if died or time.monotonic() > deadline:
                message = (
                    startup_failure()
                    if died
                    else f"a worker did not join within {self.limit:.0f} s (stopped, stuck or unreachable); "
                    "nothing was run: run the same command again"
                )
                self._end(message)

    def _end(self, message: str) -> None:
        if self.done.is_set():
            return
        log.error("%s", message)
        for proc in _children:
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    proc.send_signal(signal.SIGCONT)  # a stopped worker cannot act on SIGTERM otherwise
                    proc.kill()  # nothing of the job is running yet: nothing to checkpoint
        sys.stderr.write(f"error: {message}\n")
        sys.stderr.flush()
        os._exit(EXIT_STARTUP)


def _start_local_ranks(devices: int, num_nodes: int) -> None:
    """What Lightning's launcher does (subprocess_script.py `_call_children_scripts`): the same
    command, once per extra local rank, with the rank's variables; rank 0 is this process."""
    from lightning.fabric.plugins.environments.lightning import find_free_network_port

    env = os.environ
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    env.setdefault("MASTER_PORT", str(find_free_network_port()))
    env["NODE_RANK"] = env.get("NODE_RANK", env.get("GROUP_RANK", "0"))
    env["WORLD_SIZE"] = str(devices * num_nodes)
    env["LOCAL_RANK"] = "0"
    env[LAUNCHER_ENV] = str(os.getpid())
    for local_rank in range(1, devices):
        _children.append(subprocess.Popen(_command(), env={**env, "LOCAL_RANK": str(local_rank)}))


def _command() -> list[str]:
    import __main__

    if getattr(__main__, "__spec__", None) is None:  # the `stylebatch` console script
        return [sys.executable, os.path.abspath(sys.argv[0]), *sys.argv[1:]]
    return [sys.executable, "-m", __main__.__spec__.name.removesuffix(".__main__"), *sys.argv[1:]]


def children() -> list[subprocess.Popen]:
    """The workers this process started (none under torchrun or srun)."""
    return list(_children)


# --- a worker: stop when the parent dies ----------------------------------------------------------


def stop_with_parent(parent: int) -> None:
    """SIGTERM this process (the usual stop: checkpoint at the next step boundary, exit) once
    `parent` is no longer its parent."""
    _request_parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent:  # died before the request took effect
        log.warning("the launching process %d is gone; stopping", parent)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    threading.Thread(target=_watch_parent, args=(parent,), name="stylebatch-parent-watch", daemon=True).start()


def _request_parent_death_signal(signum: int) -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError) as e:
        log.warning("no parent-death signal (%s); watching the parent pid instead", e)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        threading.Event().wait(WATCH_S)
    log.warning("the launching process %d is gone; checkpointing and stopping", parent)
    os.kill(os.getpid(), signal.SIGTERM)


# --- rank 0: notice a worker that dies -------------------------------------------------------------


class ChildWatch:
    """Polls the workers this process started (which also reaps them). The first to exit non-zero
    while the job is not already stopping is reported once through `on_lost`; `lost` keeps the
    one-line descriptions for the exit message."""

    def __init__(self, on_lost: Callable[[str], None], stopping: Callable[[], bool]) -> None:
        self.on_lost, self.stopping = on_lost, stopping
        self.lost: list[str] = []
        self._seen: set[int] = set()
        self._closing = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stylebatch-child-watch", daemon=True)
        if _children:
            self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(WATCH_S):
            self.poll()

    def poll(self) -> None:
        for rank, proc in enumerate(_children, start=1):
            code = proc.poll()
            if code in (None, 0) or rank in self._seen:
                continue
            self._seen.add(rank)
            how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
            message = f"rank {rank} (pid {proc.pid}) {how}"
            if self._closing or self.stopping():
                log.info("%s", message)  # stopped on purpose (or after the job was told to stop)
                continue
            log.error("%s", message)
            self.lost.append(message)
            self.on_lost(message)

    def close(self, grace: float = 5.0, timeout: float = 60.0) -> None:
        """Stop watching. Workers still running after `grace` seconds (the job is ending early)
        are asked to stop, which checkpoints their pair, and waited for; killed after `timeout`."""
        self._done.set()
        self.poll()  # a death just before the end still counts
        self._closing = True
        for signum, wait in ((None, grace), (signal.SIGTERM, timeout), (signal.SIGKILL, timeout)):
            running = [proc for proc in _children if proc.poll() is None]
            if not running:
                return
            for proc in running if signum is not None else []:
                log.warning("worker pid %d still running: sending %s", proc.pid, signal.Signals(signum).name)
                proc.send_signal(signum)
            deadline = time.monotonic() + wait
            for proc in running:
                try:
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass

    def message(self) -> str | None:
        if not self.lost:
            return None
        return (
            f"{self.lost[0]}; the other ranks checkpointed their pairs and stopped: run the same command "
            "again to resume (its log is in .stylebatch/logs/)"
        )
