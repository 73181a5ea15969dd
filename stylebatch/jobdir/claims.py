"""Per-pair claims: at most one live process works on a pair, whatever else was killed.

The job lock (state.py) keeps two *jobs* apart, but it is held by rank 0 alone: when rank 0 is
killed, a worker it launched may still be finishing a pair while the next run plans that pair
again. So every pair also has a claim, a flock on `.stylebatch/pairs/<name>/claim`, taken before
anything of the pair is read for planning or written, and held until the pair's work ends. The
kernel drops it when its holder dies, so a crash never leaves a pair claimed. A process that finds
a pair claimed leaves it alone: it plans the pair without touching its record, and runs it only
once the claim is free (waiting a little at the end of its share, as a stopped worker needs a
moment to checkpoint), or leaves it to the next run.

Each claim and release is appended to `.stylebatch/pairs/<name>/claims.log` (one JSON object a
line), a record of which process worked on the pair when. Temp files in the pair's directory and
of its outputs are removed only by the claim's holder: no live writer can own them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from stylebatch.atomic import open_nofollow, read_nofollow, remove_stale_temps, temp_targets
from stylebatch.errors import LockedError
from stylebatch.images import OUTPUT_FORMATS, output_extension  # an output's temps may be in any of them
from stylebatch.jobdir.state import HOST, JobState

log = logging.getLogger("stylebatch")

CLAIM_FILE, CLAIM_LOG = "claim", "claims.log"
WAIT_S = 20.0  # at the end of a share, how long a busy pair is waited for
POLL_S = 0.2


def try_claim(state: JobState, name: str, rank: int, purpose: str) -> int | None:
    """Claim `name` for this process (returns the held descriptor), or None if a live process holds it.

    A "plan" claim is only the flock (planning touches records, never files, and runs once per pair
    at every start: 100,000 at scale); a "work" claim is logged and clears the temps a killed holder
    left in the pair's directory and of its outputs."""
    if purpose != "plan":
        state.check_generation()  # a worker of a run since started afresh claims nothing more
    directory = state.ensure_dir(state.pair_dir(name))
    fd = open_nofollow(directory / CLAIM_FILE, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    if purpose == "plan":
        return fd
    try:
        state.check_links(directory)  # before anything is written there (the run's start did not look inside)
        entry = {"pid": os.getpid(), "host": HOST, "rank": rank, "claimed": time.time(), "for": purpose}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(entry).encode(), 0)
        _append(state, name, entry)
        # Nobody else can be writing these now: the temps of a killed holder can go.
        remove_stale_temps(directory)
        _remove_output_temps(state, name)
    except BaseException:
        os.close(fd)
        raise
    return fd


def release(state: JobState, name: str, fd: int, purpose: str = "work") -> None:
    try:
        if purpose != "plan":
            _append(state, name, {"pid": os.getpid(), "host": HOST, "released": time.time()})
    except OSError:
        pass  # a full disk: the claim still ends when the descriptor closes
    finally:
        os.close(fd)


_OUTPUT_TEMPS: dict[str, set[str]] = {}  # output_dir -> target names with temps there, scanned once per job


def new_job() -> None:
    """Forget the output directories' scans: a new job (in this process) looks again."""
    _OUTPUT_TEMPS.clear()


def _remove_output_temps(state: JobState, name: str) -> None:
    """The temps of `name`'s outputs. The output directory is scanned once per job (a scan per
    claim would cost O(pairs) each: O(pairs^2) for a job), and only a name found there then is
    looked at again: a temp made since belongs to a live writer, which is never removed anyway."""
    key = str(state.output_dir)
    if key not in _OUTPUT_TEMPS:
        _OUTPUT_TEMPS[key] = temp_targets(state.output_dir)
    targets = {f"{name}.{output_extension(fmt)}" for fmt in OUTPUT_FORMATS} & _OUTPUT_TEMPS[key]
    if targets:
        remove_stale_temps(state.output_dir, targets)


def holder(state: JobState, name: str) -> str:
    """Who holds the claim, for messages."""
    try:
        info = json.loads(read_nofollow(state.pair_dir(name) / CLAIM_FILE))
        return f"pid {info['pid']} on {info['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def hold_all(state: JobState, names: list[str], wait_s: float) -> list[tuple[str, int]]:
    """Take every pair's claim (waiting up to `wait_s` for live holders to let go: a worker whose
    parent died checkpoints and stops in a moment); LockedError naming the holders if some still
    hold theirs. The caller releases the returned claims (`release(..., purpose="plan")`)."""
    held: list[tuple[str, int]] = []
    busy = list(names)
    deadline = time.monotonic() + wait_s
    try:
        while True:
            for name in list(busy):
                fd = try_claim(state, name, 0, "plan")
                if fd is not None:
                    held.append((name, fd))
                    busy.remove(name)
            if not busy:
                return held
            if time.monotonic() > deadline:
                who = sorted({holder(state, name) for name in busy})
                raise LockedError(
                    f"{state.output_dir}: --fresh refused: {len(busy)} pair(s) ({', '.join(busy[:3])}"
                    f"{', ...' if len(busy) > 3 else ''}) are still being worked on by {', '.join(who)} "
                    f"after {wait_s:.0f} s; stop that process, or wait for it, then run again"
                )
            time.sleep(POLL_S)
    except BaseException:
        for name, fd in held:
            release(state, name, fd, "plan")
        raise


def history(state: JobState, name: str) -> list[dict[str, Any]]:
    """The pair's claims.log, oldest first."""
    try:
        text = read_nofollow(state.pair_dir(name) / CLAIM_LOG).decode("utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _append(state: JobState, name: str, entry: dict[str, Any]) -> None:
    fd = open_nofollow(state.pair_dir(name) / CLAIM_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(fd, (json.dumps(entry) + "\n").encode())
    finally:
        os.close(fd)


@contextlib.contextmanager
def _claim_all(state: JobState, names: list[str], rank: int, purpose: str) -> Iterator[bool]:
    """Claim every name or none (a batch is worked on whole); yields whether it got them."""
    held: list[tuple[str, int]] = []
    try:
        for name in names:
            fd = try_claim(state, name, rank, purpose)
            if fd is None:
                break
            held.append((name, fd))
        got = len(held) == len(names)
        if not got:
            for name, fd in reversed(held):
                release(state, name, fd, purpose)
            held = []
        yield got
    finally:
        for name, fd in reversed(held):
            release(state, name, fd, purpose)


def one_by_one(state: JobState, pairs: list[Any], rank: int = 0) -> Iterator[tuple[Any, bool]]:
    """Each pair (anything with a `name`) with whether this process holds its claim, held while the
    caller looks at it: deciding whether a pair needs work may reset its record, so it happens under
    the claim. A pair claimed by a live process comes with False: plan it as it is, its record
    untouched (whoever gets to it runs it only once the claim is free, and only if still unfinished)."""
    for pair in pairs:
        with _claim_all(state, [pair.name], rank, "plan") as got:
            if not got:
                log.info(
                    "%s: being worked on by %s; planned, left to it until it lets go",
                    pair.name,
                    holder(state, pair.name),
                )
            yield pair, got


def claimed(
    state: JobState, batches: list[list[Any]], rank: int, should_stop: Callable[[], bool], wait_s: float | None = None
) -> Iterator[list[Any]]:
    """Yield each batch of this worker's share while holding its claims (released when the loop
    moves on or stops). A batch claimed by another live process is put off to the end, waited
    for up to `wait_s`, then left to the next run; one another process finished meanwhile is skipped."""
    deferred = []
    for batch in batches:
        with _claim_all(state, [p.name for p in batch], rank, "work") as got:
            if not got:
                deferred.append(batch)
                continue
            todo = [p for p in batch if not _finished_meanwhile(state, p)]
            if todo:
                yield todo
    deadline = time.monotonic() + (WAIT_S if wait_s is None else wait_s)
    while deferred and not should_stop():
        for batch in list(deferred):
            with _claim_all(state, [p.name for p in batch], rank, "work") as got:
                if got:
                    deferred.remove(batch)
                    todo = [p for p in batch if not _finished_meanwhile(state, p)]
                    if todo:
                        yield todo
        if time.monotonic() > deadline:
            break
        if deferred:
            time.sleep(POLL_S)
    for batch in deferred:
        log.warning(
            "%s: still worked on by %s; left for the next run",
            ", ".join(p.name for p in batch),
            holder(state, batch[0].name),
        )


def _finished_meanwhile(state: JobState, pair: Any) -> bool:
    """A planned pair is unfinished at planning; finished now means another process did it since."""
    record = state.read(pair.name) or {}
    if record.get("status") == "done" and record.get("id") == pair.id:
        log.info("%s: finished by %s meanwhile; skipped", pair.name, f"pid {record.get('pid')}")
        return True
    return False
