"""The job runner: lock, plan, run each pending pair with failure isolation, handle signals, and
compute the exit code from the on-disk state.

Top to bottom: `run_job` (rank 0's stateful work and the plan, then its own share) →
`run_batches` (one worker's share, batch by batch) → `_run_batch` (one batch through
`engine.stylize`, its records, its failure isolation). Which pairs need work, the options and the
stop flag: run_setup.py; the pairs' records and the exit code: pair_records.py.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import json
import logging
import os
import shutil
import signal
import subprocess
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from stylebatch.atomic import atomic_write, fault_point
from stylebatch.errors import JobGoneError, StylebatchError, WeightsError, WorkerLostError, is_disk_full
from stylebatch.fit.checkpoint import position, vet_checkpoint
from stylebatch.fit.engine import Member, shape_at, stylize
from stylebatch.fit.provenance import pair_metadata
from stylebatch.fit.vgg import VGGFeatures, load_vgg
from stylebatch.job.jobfile import write_job_file
from stylebatch.job.pairs import Job, Pair
from stylebatch.job.weights import weights_identity
from stylebatch.jobdir import claims
from stylebatch.jobdir.state import HOST, JobState, effective_status
from stylebatch.memory import ladder as oom
from stylebatch.memory import measure
from stylebatch.report.live import LiveReport, report_every_s
from stylebatch.runner import workers
from stylebatch.runner.lifecycle import (
    begin_pair,
    conclude_pair,
    exit_code,
    fail_pair,
    failure_reason,
    record_invalid,
    recorded_batches,
    summarize_job,
)
from stylebatch.runner.options import Reporter, RunOptions, StopFlag, check_redo, needs_work
from stylebatch.runner.plan import plan as make_plan

log = logging.getLogger("stylebatch")


def _log_rank(fabric: Any) -> None:
    if fabric is not None:
        log.info(
            "rank %d of %d on %s, cluster environment %s",
            fabric.global_rank,
            fabric.world_size,
            HOST,
            type(fabric.strategy.cluster_environment).__name__,
        )


def run_job(job: Job, opts: RunOptions, reporter: Reporter | None = None, fabric: Any = None) -> int:
    """Run every valid pair of `job` (invalid ones are recorded as failed) and return the exit code.

    With `fabric` (several workers), rank 0 alone does everything stateful (lock, --fresh, weights
    download, planning), broadcasts the plan, works its own share, waits for the others through the
    shared state, and computes the exit code; other ranks run their share and return 0.
    """
    if fabric is not None and fabric.global_rank != 0:
        return _worker(fabric, job, opts)
    reporter = reporter or Reporter()
    claims.new_job()
    state = JobState(job.output_dir)
    try:
        # Before anything is written: weights that cannot be had (offline ImageNet) leave no job
        # directory behind for `status` to find.
        vgg = load_vgg(job.weights, job.layers_used)
    except BaseException as e:
        if fabric is not None:
            with contextlib.suppress(WorkerLostError):  # the problem itself is what to report
                workers.broadcast(fabric, {"abort": str(e)})  # let the workers exit 0 instead of hanging
        raise
    job.output_dir.mkdir(parents=True, exist_ok=True)
    world = fabric.world_size if fabric is not None else 1
    stop = StopFlag(on_signal=lambda signum: _forward_stop(fabric, state, signum))
    # a worker that dies stops the job (checkpoints, exit 3, one line), instead of Lightning's SIGKILL
    watch = workers.ChildWatch(on_lost=lambda why: stop._handle(signal.SIGTERM, None), stopping=lambda: bool(stop))
    with state.lock(opts.break_lock):
        try:
            _open_log(state, rank=0)
            _log_rank(fabric)
            plain = check_redo(job, state, opts, reporter)  # before anything in the directory changes
            if opts.fresh and state.pairs_dir.exists():
                # Never under a live process's claim: the claims are taken (waited for) first, and
                # a new generation tells any worker of an earlier run to stop without writing.
                held = claims.hold_all(state, state.names(), claims.WAIT_S)
                try:
                    shutil.rmtree(state.pairs_dir)
                    state.new_generation()
                finally:
                    for name, fd in held:
                        claims.release(state, name, fd, "plan")
            generation = state.generation()
            removed = state.remove_stale_temps()  # only .stylebatch/; pair temps under their claim
            if removed:
                log.info("removed %d temp file(s) left by an interrupted run", removed)
            for leftover in (state.ranks_dir, state.stop_file):
                shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)
            write_job_file(job, state.job_file)  # compact: the config once, a line per pair
            record_invalid(job, state)
            # Under each pair's claim: a pair a live process works on is planned, its record untouched.
            # A pair whose record and output stamp say done is passed over without a claim (read-only:
            # a restart of a large finished job is one record read and one stat per pair, the read
            # check_redo made under this lock: nothing since has written a valid pair's record).
            unsettled = [p for p in job.valid_pairs if p.name not in plain]
            pending = [
                p
                for p, held in claims.one_by_one(state, unsettled)
                if not held or needs_work(job, state, p, opts, reporter)
            ]
            pending = [oom.with_fallback(p, state.read(p.name)) for p in pending]  # earlier rungs
            shares = make_plan(pending, world, recorded_batches(state, pending))  # batches of names, per rank
        except BaseException as e:
            if fabric is not None:
                with contextlib.suppress(WorkerLostError):  # the problem itself is what to report
                    workers.broadcast(fabric, {"abort": str(e)})  # let the workers exit 0 instead of hanging
            raise
        if fabric is not None:
            workers.broadcast(fabric, {"shares": shares, "generation": generation})
        planned = {p.name for p in pending}
        before = {p.name: int((state.read(p.name) or {}).get("steps_done") or 0) for p in pending}
        settled = [p for p in job.valid_pairs if p.name not in planned]  # done, or failed for good
        reporter.start(len(job.pairs), len(job.valid_pairs) - len(pending), pending, before, settled)
        log.info("plan: %s", dict(enumerate(shares)))
        stop.install()
        live = LiveReport(job.output_dir, report_every_s(job)).start()  # rank 0's live report
        try:
            run_batches(job, shares[0], vgg, _rank_device(fabric, opts), state, stop, reporter, rank=0)
            if world > 1:
                _wait_for_workers(state, world, opts.sync_timeout, reporter, job)
            live.stop(final=True)  # the report once more at the end
            measure.record_job(_rank_device(fabric, opts))  # the run's time besides its batches
        finally:
            live.stop(final=False)  # no-op after the final one
            stop.restore()
            watch.close()
    if watch.message():
        raise WorkerLostError(watch.message())
    if stop.signum == signal.SIGUSR1 and os.environ.get("SLURM_JOB_ID"):
        _requeue(os.environ["SLURM_JOB_ID"])
    return exit_code(job, state, interrupted=bool(stop))


def _rank_device(fabric: Any, opts: RunOptions) -> torch.device:
    return fabric.device if fabric is not None else torch.device(opts.device)


def _worker(fabric: Any, job: Job, opts: RunOptions) -> int:
    """A rank other than 0: take its share of the broadcast plan, run it, report through the state."""
    rank = fabric.global_rank
    claims.new_job()
    state = JobState(job.output_dir)
    msg = fabric.broadcast(None, src=0)
    if "abort" in msg:
        return 0  # rank 0 reports the problem and sets the exit code
    _open_log(state, rank=rank)
    _log_rank(fabric)
    mine = msg["shares"][rank]
    state.expected_generation = msg.get("generation", "")  # a later --fresh: stop without writing
    stop = StopFlag()
    rank_file = state.rank_file(rank)
    rank_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(rank_file, json.dumps({**state.owner(rank), "status": "running"}).encode())
    stop.install()
    gone = False
    try:
        vgg = load_vgg(job.weights, job.layers_used)  # rank 0 already downloaded it: from the cache
        run_batches(job, mine, vgg, fabric.device, state, stop, Reporter(), rank=rank)
    except JobGoneError as e:
        gone = True
        log.warning("rank %d: %s", rank, e)
    except StylebatchError as e:
        log.error("rank %d: %s", rank, e)
    finally:
        stop.restore()
        if not gone:
            atomic_write(rank_file, json.dumps({**state.owner(rank), "status": "finished"}).encode())
    return 0  # always 0: Lightning's launcher kills every process when one exits non-zero


def _forward_stop(fabric: Any, state: JobState, signum: int) -> None:
    """Rank 0 passes a stop on: to the workers it launched, and through a stop file to any others."""
    try:
        atomic_write(state.stop_file, str(signum).encode())
    except OSError:
        pass
    for proc in workers.children():  # the workers rank 0 started (workers.launch)
        if proc.poll() is None:
            proc.send_signal(signum)


def _wait_for_workers(state: JobState, world: int, timeout: float, reporter: Reporter, job: Job) -> None:
    """Rank 0 waits (by polling the shared state, not a collective that would time out on a long
    job) until every worker has finished, died, or never started within `timeout`."""
    start = time.monotonic()
    while True:
        waiting = []
        for rank in range(1, world):
            path = state.rank_file(rank)
            try:
                info = json.loads(path.read_text())
            except (OSError, ValueError):
                info = None
            if info is None:
                if time.monotonic() - start < timeout:
                    waiting.append(rank)
                else:
                    log.error("rank %d never started; its pairs stay pending for the next run", rank)
            elif info["status"] == "running" and effective_status(info) == "running":
                waiting.append(rank)
            elif info["status"] == "running":
                log.error(
                    "rank %d (pid %s on %s) is gone; its unfinished pairs resume on the next run",
                    rank,
                    info.get("pid"),
                    info.get("host"),
                )
        if not waiting:
            return
        reporter.waiting(waiting, summarize_job(job, state))
        time.sleep(0.5)


def _requeue(job_id: str) -> None:
    """Under SLURM, rank 0 alone asks for the requeue once every worker has checkpointed."""
    try:
        result = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
        log.info("scontrol requeue %s: exit %d %s", job_id, result.returncode, result.stderr.strip())
    except (OSError, subprocess.SubprocessError) as e:
        log.error("could not requeue SLURM job %s: %s", job_id, e)


def run_batches(
    job: Job,
    batches: list[list[str]],
    vgg: VGGFeatures,
    device: torch.device,
    state: JobState,
    stop: StopFlag,
    reporter: Reporter,
    rank: int,
) -> None:
    """One worker's loop over its share of the plan (batches of pair names, in plan order); a failure
    never stops the others."""
    vgg.to(device)
    weights_id = weights_identity(job.weights)
    by_name = {p.name: p for p in job.valid_pairs}
    stopping = lambda: bool(stop) or state.stop_file.exists()  # noqa: E731
    # One process per pair: each batch is worked on only while this process holds its claims.
    mine = [[by_name[n] for n in names] for names in batches]
    for i, batch in enumerate(claims.claimed(state, mine, rank, stopping)):
        if stopping():
            break
        if i:
            fault_point("between_pairs")
        # A failed batch comes back as follow-up batches (its pairs one by one, or the memory
        # ladder's next rung), run here while this process still holds the batch's claims.
        queue = collections.deque([batch])
        while queue:
            follow_up = _run_batch(job, queue.popleft(), vgg, device, state, stop, reporter, rank, weights_id)
            queue.extendleft(reversed(follow_up))


def _run_batch(
    job: Job,
    batch: list[Pair],
    vgg: VGGFeatures,
    device: torch.device,
    state: JobState,
    stop: StopFlag,
    reporter: Reporter,
    rank: int,
    weights_id: str,
) -> list[list[Pair]]:
    """A batch (often of one pair) through `engine.stylize`; returns the batches to run next. If a
    batch of several fails (out of memory, or any error of one member: an image changed since
    validation, an unwritable output), its pairs come back one by one, each to resume from its own
    checkpoint: the faulty pair fails with its own reason and the others finish, as they would have
    unbatched. Out of memory, the ladder (memory/ladder.py) decides what comes back."""
    batch = [oom.with_fallback(p, state.read(p.name)) for p in batch]  # settings of earlier rungs
    names = [p.name for p in batch] if len(batch) > 1 else None
    loaded = [_own_checkpoint(state, p, reporter) for p in batch]
    # Where the batch resumes, as the engine will decide it: every member's checkpoint at one place.
    positions = {position(c) for c in loaded}
    resume_at = positions.pop()[1] if len(positions) == 1 and None not in positions else 0
    begun = [begin_pair(job, p, state, stop, reporter, rank, names, resume_at) for p in batch]
    members = [
        Member(
            p.content,
            list(p.styles),
            p.config,
            state.checkpoint_path(p.name),
            job.output_path(p),
            pair_metadata(job, p, weights_id),
            hooks,
            checkpoint,
        )
        for p, (hooks, _), checkpoint in zip(batch, begun, loaded)
    ]
    # The measured peak and rate, for the estimates (from where the checkpoints stand).
    before = measure.observe(device, [int((state.read(p.name) or {}).get("steps_done", 0)) for p in batch])
    try:
        for p in batch:
            fault_point(f"pair:{p.name}")
        results = stylize(members, vgg, device)
    except Exception as e:  # noqa: BLE001 (isolate the pair, or the faulty member from the rest of the batch)
        if isinstance(e, JobGoneError):
            raise  # started afresh by another run: nothing more is written, nobody is blamed
        if is_disk_full(e) or isinstance(e, WeightsError):
            # The whole job stops (a full disk; weights whose features overflow fail every pair alike,
            # the one line names them); no member is blamed or charged an attempt.
            for p in batch:
                state.stop_attempt(p.name)
            if isinstance(e, WeightsError):
                raise WeightsError(f"{', '.join(p.name for p in batch)}: {e}") from None
            raise
        out_of_memory = oom.is_oom(e)
        why = (
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            if out_of_memory or len(batch) > 1
            else failure_reason(batch[0], e)
        )
        if len(batch) > 1 and not out_of_memory:
            log.warning("batch %s failed:\n%s", names, traceback.format_exc())
        e.__traceback__ = None  # its frames hold the batch's tensors: drop them so _free_memory frees them
        results = None
    if results is not None:
        figures = measure.record_batch(device, before, batch, results)
        for p, result, (_, started) in zip(batch, results, begun):
            conclude_pair(job, p, state, reporter, result, started)
            state.update(p.name, measured=figures)
            fault_point(f"concluded:{p.name}")  # a batch's members are recorded one by one
        return []
    if out_of_memory:  # the ladder: unbatched, smaller history, tiled, then failed
        del members
        retry, failed = oom.climb(batch, device, state, why, before)
        for pair, message in failed:
            fail_pair(state, pair, reporter, message)
        return retry
    _free_memory(device)
    if len(batch) == 1:
        fail_pair(state, batch[0], reporter, why)
        return []
    log.warning("batch %s: %s; running its pairs one by one", names, why)
    for p in batch:
        # The batch's attempt does not count: each pair's own run is its attempt.
        state.undo_attempt(p.name, batch=None)
    return [[p] for p in batch]


def _own_checkpoint(state: JobState, pair: Pair, reporter: Reporter) -> dict[str, Any] | None:
    """The pair's checkpoint when it is its own as saved (its id, its image's shape, its checksum);
    any other is removed with one line, and the pair restarts from 0."""
    size = pair.content_size
    ckpt, why = vet_checkpoint(
        state.checkpoint_path(pair.name), pair.id, shape_at(size, pair.config) if size else lambda k: None
    )
    if why:
        note = f"{pair.name}: {why}; the pair restarts from 0"
        log.warning("%s", note)
        reporter.note(note)
    return ckpt


def _free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _open_log(state: JobState, rank: int) -> Path:
    """One log file per process in the job directory, each line with its rank."""
    logs = state.logs_dir
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
