"""A run's records of its pairs: a pair begun (its record and hooks), concluded, failed; the
invalid entries; the counts and the exit code read back from the records."""

from __future__ import annotations

import logging
import shutil
import time
import traceback

from stylebatch.errors import EXIT_FAILED_PAIRS, EXIT_INTERRUPTED, EXIT_OK, StylebatchError
from stylebatch.fit.engine import NonFiniteLossError, PairHooks, PairResult
from stylebatch.job.pairs import Job, Pair
from stylebatch.jobdir.state import INVALID_PREFIX, JobState, begin_attempt, effective_status, output_stamp
from stylebatch.runner.options import Reporter, StopFlag

log = logging.getLogger("stylebatch")
# How stale a running pair's evaluation count in its record (what `status` shows) may get between
# checkpoints; also its heartbeat. One small atomic write every few seconds costs nothing beside a fit.
PROGRESS_EVERY_S = 5.0


def summarize_job(job: Job, state: JobState) -> dict[str, int]:
    counts: dict[str, int] = {}
    for pair in job.valid_pairs:
        record = state.read(pair.name)
        status = effective_status(record) if record else "pending"
        counts[status] = counts.get(status, 0) + 1
    return counts


def recorded_batches(state: JobState, pairs: list[Pair]) -> dict[str, list[str]]:
    """The batch each pair was last run in (its record's `batch`), for pairs that have one."""
    recorded = {p.name: (state.read(p.name) or {}).get("batch") for p in pairs}
    return {name: members for name, members in recorded.items() if members}


def begin_pair(
    job: Job,
    pair: Pair,
    state: JobState,
    stop: StopFlag,
    reporter: Reporter,
    rank: int,
    batch: list[str] | None,
    resume_at: int = 0,
) -> tuple[PairHooks, float]:
    """Mark a pair running (owner, attempt, batch membership) and make the hooks that watch it;
    returns them and the time the pair would have started had it run in one go (now, less the
    seconds it spent in earlier runs), so its recorded `seconds` is its total. `resume_at`: the
    evaluations of the checkpoint it resumes from (not the record's count, which heartbeats move
    past the checkpoint), the only resume point ever shown."""
    record = state.read(pair.name) or {}
    # `seconds` is the pair's time over all its runs: a resumed pair carries what it had spent so far.
    spent = float(record.get("seconds") or 0) if resume_at > 0 else 0.0  # from the checkpoint it resumes
    started = time.time() - spent
    state.write(
        pair.name,
        {
            **record,
            "id": pair.id,
            "status": "running",
            "attempts": begin_attempt(record),  # an earlier run's attempt left open (killed) does not count
            "attempt_open": True,
            "steps": pair.config.steps,
            "started": started,
            "begun": time.time(),  # this run's start on the pair: an output written since is this run's
            "error": None,
            "output": job.output_path(pair).name,
            "batch": batch,
            "steps_done": resume_at,
            **state.owner(rank),
        },
    )
    # Where each run took the pair up, and with whom: what a resume mismatch is traced back to.
    log.info("%s: starts at %d evaluations%s", pair.name, resume_at, f", batch {batch}" if batch else ", alone")
    reporter.pair_start(pair, resume_at, batch)
    last_beat = [time.monotonic()]

    def on_progress(n: int, losses: dict[str, float]) -> None:
        reporter.pair_progress(pair, n, losses)
        if time.monotonic() - last_beat[0] >= PROGRESS_EVERY_S:
            state.update(pair.name, steps_done=n, heartbeat=time.time(), seconds=round(time.time() - started, 3))
            last_beat[0] = time.monotonic()

    def on_checkpoint(n: int) -> None:
        state.update(pair.name, steps_done=n, heartbeat=time.time(), seconds=round(time.time() - started, 3))

    stop_file = state.stop_file
    hooks = PairHooks(
        should_stop=lambda: bool(stop) or stop_file.exists(),
        on_progress=on_progress,
        on_checkpoint=on_checkpoint,
        check_job=state.check_generation,
    )
    return hooks, started


def conclude_pair(
    job: Job, pair: Pair, state: JobState, reporter: Reporter, result: PairResult, started: float
) -> None:
    if result.interrupted:  # a signal or a pre-emption: not an attempt of the pair's
        state.undo_attempt(
            pair.name,
            status="interrupted",
            steps_done=result.evaluations,
            heartbeat=time.time(),
            seconds=round(time.time() - started, 3),
        )
        reporter.pair_end(pair, "interrupted")
        return
    if not pair.config.keep_checkpoints:
        state.checkpoint_path(pair.name).unlink(missing_ok=True)
    seconds = round(time.time() - started, 3)
    state.update(
        pair.name,
        status="done",
        attempt_open=False,
        steps_done=result.evaluations,
        output_sha256=result.output_sha256,
        encoding=pair.config.encoding(),
        output_stat=output_stamp(job.output_path(pair)),
        losses=result.losses,
        seconds=seconds,
        finished=time.time(),
    )
    shared = f"batch of {result.batch_size}, " if result.batch_size > 1 else ""
    log.info(
        "%s: done, %d evaluations, %s%.1fs, losses %s", pair.name, result.evaluations, shared, seconds, result.losses
    )
    reporter.pair_end(pair, "done", f"{shared}{seconds:.1f} s")


def failure_reason(pair: Pair, e: Exception) -> str:
    """One line for a pair's record: the user's error as it is, anything else as an internal error
    (with the traceback in the log)."""
    if isinstance(e, StylebatchError):
        return str(e).splitlines()[0]
    if isinstance(e, (NonFiniteLossError, OSError)):
        return str(e)
    log.error("%s: internal error\n%s", pair.name, traceback.format_exc())
    return f"internal error: {type(e).__name__}: {e}"


def fail_pair(state: JobState, pair: Pair, reporter: Reporter, message: str) -> None:
    log.error("%s: failed: %s", pair.name, message)
    state.update(pair.name, status="failed", attempt_open=False, error=message, finished=time.time())
    reporter.pair_end(pair, "failed", message)


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


def record_invalid(job: Job, state: JobState) -> None:
    """With --skip-invalid, each invalid entry is recorded as failed with its reasons, under a name
    of its own (its output name may be the problem, or a duplicate of a valid pair's)."""
    pairs_dir = state.pairs_dir
    if pairs_dir.is_dir():
        for old in pairs_dir.glob(f"{INVALID_PREFIX}*"):
            shutil.rmtree(old, ignore_errors=True)
    for pair in job.pairs:
        if pair.problems:
            key = INVALID_PREFIX + "".join(ch if ch.isalnum() else "-" for ch in pair.entry).strip("-")
            state.write(
                key,
                {"id": "", "status": "failed", "error": "; ".join(pair.problems), "attempts": 1, "entry": pair.entry},
            )
