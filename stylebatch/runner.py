"""The job runner: lock, plan, run each pending pair with failure isolation, handle signals, and
compute the exit code from the on-disk state.

Top to bottom: `run_job` (rank 0's stateful work, then the worker loop) → `run_pairs` (one
worker's share) → `_run_one` (one pair, its records, its failure isolation).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import signal
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stylebatch.atomic import atomic_write, fault_point, remove_stale_temps
from stylebatch.errors import EXIT_FAILED_PAIRS, EXIT_INTERRUPTED, EXIT_OK, StylebatchError
from stylebatch.engine import NonFiniteLossError, PairHooks, stylize_pair, versions
from stylebatch.manifest import Job, Pair
from stylebatch.state import HOST, JobState, effective_status, sha256_file
from stylebatch.vgg import VGGFeatures, load_vgg, weights_identity

log = logging.getLogger("stylebatch")


@dataclass
class RunOptions:
    fresh: bool = False
    retry_failed: bool = False
    skip_invalid: bool = False
    break_lock: bool = False
    device: str = "cpu"


class Reporter:
    """What the runner tells the user; the CLI draws it with rich. This one stays silent."""

    def start(self, total: int, done: int, pending: int) -> None: ...
    def pair_start(self, pair: Pair, steps_done: int) -> None: ...
    def pair_progress(self, pair: Pair, evaluations: int, losses: dict[str, float]) -> None: ...
    def pair_end(self, pair: Pair, status: str, detail: str = "") -> None: ...


class StopFlag:
    """Set by SIGINT/SIGTERM/SIGUSR1; the pair in progress checkpoints and the job exits 3.
    A second Ctrl-C stops at once (the pair then resumes from its last periodic checkpoint)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __bool__(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("received %s: checkpointing the current pair and stopping", signal.Signals(signum).name)

    def install(self) -> None:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def pair_metadata(job: Job, pair: Pair, weights_id: str) -> dict[str, Any]:
    """What an output carries in its PNG text chunk: enough to reproduce it."""
    return {
        "name": pair.name,
        "id": pair.id,
        "content": str(pair.content),
        "style": str(pair.style),
        "content_sha256": sha256_file(pair.content),
        "style_sha256": sha256_file(pair.style),
        "weights": weights_id,
        "config": pair.config.to_dict(),
        "versions": versions(),
    }


def _output_path(job: Job, pair: Pair) -> Path:
    return job.output_dir / f"{pair.name}.png"


def needs_work(job: Job, state: JobState, pair: Pair, opts: RunOptions) -> bool:
    """Whether a pair is to run now; resets a record whose id no longer matches."""
    record = state.read(pair.name)
    if record is None:
        return True
    if record.get("id") != pair.id:
        # Inputs, weights or pixel-changing settings changed: the old checkpoint means nothing.
        state.checkpoint_path(pair.name).unlink(missing_ok=True)
        state.write(pair.name, {"id": pair.id, "status": "pending", "attempts": 0, "steps_done": 0})
        return True
    status = record.get("status")
    if status == "done":
        out = _output_path(job, pair)
        if out.is_file() and sha256_file(out) == record.get("output_sha256"):
            return False
        log.info("%s: output missing or changed since it was written; redoing the pair", pair.name)
        state.update(pair.name, status="pending", steps_done=0, attempts=0)
        return True
    if status == "failed" and record.get("attempts", 0) >= pair.config.max_attempts and not opts.retry_failed:
        return False
    return True


def run_job(job: Job, opts: RunOptions, reporter: Reporter | None = None) -> int:
    """Run every valid pair of `job` (invalid ones are recorded as failed) and return the exit code."""
    reporter = reporter or Reporter()
    state = JobState(job.output_dir)
    job.output_dir.mkdir(parents=True, exist_ok=True)
    stop = StopFlag()
    with state.lock(opts.break_lock):
        _open_log(state, rank=0)
        if opts.fresh and (state.root / "pairs").exists():
            shutil.rmtree(state.root / "pairs")
        removed = remove_stale_temps(job.output_dir)
        if removed:
            log.info("removed %d temp file(s) left by an interrupted run", removed)
        _write_job_file(job, state)
        _record_invalid(job, state)
        vgg = load_vgg(job.weights, job.layers_used)  # WeightsError here stops before any pair runs
        plan = [p for p in job.valid_pairs if needs_work(job, state, p, opts)]
        reporter.start(len(job.pairs), len(job.valid_pairs) - len(plan), len(plan))
        stop.install()
        try:
            run_pairs(job, plan, vgg, torch.device(opts.device), state, stop, reporter, rank=0)
        finally:
            stop.restore()
    return exit_code(job, state, interrupted=bool(stop))


def run_pairs(
    job: Job, plan: list[Pair], vgg: VGGFeatures, device: torch.device, state: JobState, stop: StopFlag,
    reporter: Reporter, rank: int,
) -> None:
    """One worker's loop over its pairs; a pair's failure never stops the others."""
    vgg.to(device)
    weights_id = weights_identity(job.weights)
    for i, pair in enumerate(plan):
        if stop:
            break
        if i:
            fault_point("between_pairs")
        _run_one(job, pair, vgg, device, state, stop, reporter, rank, weights_id)


def _run_one(
    job: Job, pair: Pair, vgg: VGGFeatures, device: torch.device, state: JobState, stop: StopFlag,
    reporter: Reporter, rank: int, weights_id: str,
) -> None:
    record = state.read(pair.name) or {}
    attempts = int(record.get("attempts", 0)) + 1
    started = time.time()
    state.write(pair.name, {
        **record, "id": pair.id, "status": "running", "attempts": attempts, "steps": pair.config.steps,
        "started": started, "error": None, "output": _output_path(job, pair).name, **state.owner(rank),
    })
    reporter.pair_start(pair, int(record.get("steps_done", 0)))
    last_beat = [time.monotonic()]

    def on_progress(n: int, losses: dict[str, float]) -> None:
        reporter.pair_progress(pair, n, losses)
        if time.monotonic() - last_beat[0] > 30:
            state.update(pair.name, steps_done=n, heartbeat=time.time())
            last_beat[0] = time.monotonic()

    def on_checkpoint(n: int) -> None:
        state.update(pair.name, steps_done=n, heartbeat=time.time())

    hooks = PairHooks(should_stop=lambda: bool(stop), on_progress=on_progress, on_checkpoint=on_checkpoint)
    try:
        result = stylize_pair(
            content=pair.content, style=pair.style, cfg=pair.config, vgg=vgg, device=device,
            ckpt_path=state.checkpoint_path(pair.name), output=_output_path(job, pair),
            metadata=pair_metadata(job, pair, weights_id), hooks=hooks,
        )
    except (StylebatchError, NonFiniteLossError, OSError) as e:
        _fail(state, pair, reporter, str(e).splitlines()[0] if isinstance(e, StylebatchError) else f"{e}")
        return
    except torch.cuda.OutOfMemoryError:
        w, h = pair.out_size or (0, 0)
        _fail(state, pair, reporter, f"out of memory at {w}x{h}; lower 'size' or use optimizer: adam")
        _free_memory(device)
        return
    except Exception as e:  # noqa: BLE001 (isolate the pair; the traceback goes to the log)
        log.error("%s: internal error\n%s", pair.name, traceback.format_exc())
        _fail(state, pair, reporter, f"internal error: {type(e).__name__}: {e}")
        return
    if result.interrupted:
        state.update(pair.name, status="interrupted", steps_done=result.evaluations, heartbeat=time.time())
        reporter.pair_end(pair, "interrupted")
        return
    if not pair.config.keep_checkpoints:
        state.checkpoint_path(pair.name).unlink(missing_ok=True)
    state.update(
        pair.name, status="done", steps_done=result.evaluations, output_sha256=result.output_sha256,
        losses=result.losses, seconds=round(time.time() - started, 3), finished=time.time(),
    )
    log.info("%s: done, %d evaluations, %.1fs, losses %s", pair.name, result.evaluations, result.seconds, result.losses)
    reporter.pair_end(pair, "done")


def _fail(state: JobState, pair: Pair, reporter: Reporter, message: str) -> None:
    log.error("%s: failed: %s", pair.name, message)
    state.update(pair.name, status="failed", error=message, finished=time.time())
    reporter.pair_end(pair, "failed", message)


def _free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def exit_code(job: Job, state: JobState, interrupted: bool) -> int:
    """0 all done, 1 some failed, 3 interrupted (resumable), from the records of this job's pairs."""
    statuses = ["failed"] * (len(job.pairs) - len(job.valid_pairs))
    for pair in job.valid_pairs:
        record = state.read(pair.name)
        statuses.append(effective_status(record) if record else "pending")
    if interrupted or any(s in ("interrupted", "running", "pending") for s in statuses):
        return EXIT_INTERRUPTED
    if any(s == "failed" for s in statuses):
        return EXIT_FAILED_PAIRS
    return EXIT_OK


INVALID_PREFIX = "_invalid_"


def _record_invalid(job: Job, state: JobState) -> None:
    """With --skip-invalid, each invalid entry is recorded as failed with its reasons, under a name
    of its own (its output name may be the problem, or a duplicate of a valid pair's)."""
    pairs_dir = state.root / "pairs"
    if pairs_dir.is_dir():
        for old in pairs_dir.glob(f"{INVALID_PREFIX}*"):
            shutil.rmtree(old, ignore_errors=True)
    for pair in job.pairs:
        if pair.problems:
            key = INVALID_PREFIX + "".join(ch if ch.isalnum() else "-" for ch in pair.entry).strip("-")
            state.write(key, {"id": "", "status": "failed", "error": "; ".join(pair.problems), "attempts": 1,
                              "entry": pair.entry})


def _write_job_file(job: Job, state: JobState) -> None:
    data = {
        "manifest": str(job.manifest),
        "weights": job.weights,
        "pairs": [
            {"name": p.name, "id": p.id, "content": str(p.content), "style": str(p.style),
             "config": p.config.to_dict() if p.config else None}
            for p in job.pairs
        ],
    }
    atomic_write(state.root / "job.json", json.dumps(data, indent=1, default=str).encode())


def _open_log(state: JobState, rank: int) -> Path:
    """One log file per process in the job directory, each line with its rank."""
    logs = state.root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / f"{HOST}-{os.getpid()}-rank{rank}.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(f"%(asctime)s rank{rank} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("stylebatch")
    for old in [h for h in root.handlers if getattr(h, "_stylebatch_job", False)]:
        root.removeHandler(old)
        old.close()
    handler._stylebatch_job = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return path
