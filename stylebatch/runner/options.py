"""What a run is given and decides first: its options, the reporter and the stop flag it talks
through, and which pairs need work (a record whose id changed is reset, a done output checked)."""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from stylebatch.errors import StopNow, StylebatchError
from stylebatch.job.pairs import Job, Pair
from stylebatch.jobdir.state import REDO_UNASKED, JobState, output_intact, output_stamp, record_count, sha256_file
from stylebatch.runner.redo_notes import redo_note, stale_output_note
from stylebatch.runner.reencode import describe, format_changed, format_rerun, recorded_encoding

log = logging.getLogger("stylebatch")


@dataclass
class RunOptions:
    fresh: bool = False
    retry_failed: bool = False
    skip_invalid: bool = False
    break_lock: bool = False
    device: str = "cpu"
    sync_timeout: float = 600.0  # seconds a rank waits for rank 0's plan (or for a worker to start)
    verify: bool = False  # re-hash every done output (sha256) instead of trusting size+mtime+inode
    redo: bool = False  # go ahead although more than REDO_UNASKED finished pairs would be made again


class Reporter:
    """What the runner tells the user; the CLI draws it with rich. This one stays silent."""

    def start(
        self,
        total: int,
        done: int,
        pending: list[Pair],
        before: dict[str, int] | None = None,  # evaluations each pending pair had done before this run
        settled: list[Pair] | None = None,  # the valid pairs with nothing left to do (done, failed for good)
    ) -> None: ...
    def pair_start(self, pair: Pair, steps_done: int, batch: list[str] | None) -> None: ...
    def pair_progress(self, pair: Pair, evaluations: int, losses: dict[str, float]) -> None: ...
    def pair_end(self, pair: Pair, status: str, detail: str = "") -> None: ...
    def waiting(self, ranks: list[int], counts: dict[str, int]) -> None: ...
    def note(self, message: str) -> None: ...  # one line for the user (a pair redone, and why)


class StopFlag:
    """Set by SIGINT/SIGTERM/SIGUSR1; the pair in progress checkpoints and the job exits 3.
    A second Ctrl-C stops at once (the pair then resumes from its last periodic checkpoint)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)

    def __init__(self, on_signal: Any = None) -> None:
        self.signum: int | None = None
        self.on_signal = on_signal
        self._previous: dict[int, Any] = {}

    def __bool__(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise StopNow  # not KeyboardInterrupt, which Lightning turns into exit 1
        first = self.signum is None
        self.signum = signum
        log.warning("received %s: checkpointing the current pair and stopping", signal.Signals(signum).name)
        if first and self.on_signal is not None:
            self.on_signal(signum)

    def install(self) -> None:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def plainly_done(job: Job, pair: Pair, record: dict[str, Any] | None, opts: RunOptions) -> bool:
    """Read-only: the pair's record says done for this id and encoding, and its output has the size,
    mtime and inode recorded when it was written. Such a pair needs no claim to be planned (nothing
    is written for it); anything else goes through `needs_work` under the pair's claim."""
    if getattr(opts, "verify", False) or record is None or not done_as_now(record, pair):
        return False
    stamp = record.get("output_stat")
    return stamp is not None and output_stamp(job.output_path(pair)) == stamp


def done_as_now(record: dict[str, Any], pair: Pair) -> bool:
    """The record says done for the pair's id and its output's encoding as they are now."""
    return (
        record.get("status") == "done"
        and record.get("id") == pair.id
        and recorded_encoding(record) == pair.config.encoding()
    )


def needs_work(job: Job, state: JobState, pair: Pair, opts: RunOptions, reporter: Reporter | None = None) -> bool:
    """Whether a pair is to run now; resets a record whose id no longer matches."""
    record = state.read(pair.name)
    if record is None:
        return True
    if record.get("id") != pair.id:
        # Inputs, weights or pixel-changing settings changed: the old checkpoint means nothing.
        out = job.output_path(pair)
        kept = None
        if record.get("status") == "done" and os.path.lexists(out):
            kept = state.replaced_dir / f"{pair.name}.{record.get('id') or 'unknown'}{out.suffix}"
        where = f"the previous output is kept as {kept.relative_to(job.output_dir)}" if kept else None
        note = redo_note(pair, record, out, job.weights, *([where] if where else []))  # say what changed
        if kept:
            state.keep_replaced(pair.name, str(record.get("id") or "unknown"), out)
        if note:
            log.info("%s", note)
            (reporter or Reporter()).note(note)
        state.checkpoint_path(pair.name).unlink(missing_ok=True)
        # What was written at the output path stays known: that file is still the job's own to replace.
        written = {k: record[k] for k in ("output_sha256", "output_stat") if k in record}
        state.write(pair.name, {"id": pair.id, "status": "pending", "attempts": 0, "steps_done": 0, **written})
        return True
    status = record.get("status")
    if status == "done":
        out = job.output_path(pair)
        same_encoding = recorded_encoding(record) == pair.config.encoding()
        if not same_encoding and (handled := format_changed(job, state, pair, record, opts.verify)) is not None:
            must_run, note = handled
            log.info("%s", note)
            (reporter or Reporter()).note(note)
            return must_run
        # size + mtime + inode recorded at write time; the full sha256 on --verify or a changed stamp
        if same_encoding and output_intact(state, pair.name, record, out, getattr(opts, "verify", False)):
            return False
        log.info("%s: output missing or changed since it was written; redoing the pair", pair.name)
        (reporter or Reporter()).note(stale_output_note(pair.name, record, pair.config.encoding(), out))
        state.update(pair.name, status="pending", steps_done=0, attempts=0, attempt_open=False)
        return True
    if (
        status == "failed"
        and record_count(record.get("attempts")) >= pair.config.max_attempts
        and not opts.retry_failed
    ):
        return False
    if status in ("running", "interrupted") and (note := adopt_finished(job, state, pair, record)):
        log.info("%s", note)
        return False
    return True


def _finished_output(job: Job, pair: Pair, record: dict[str, Any]) -> dict[str, Any] | None:
    """The settings embedded in `pair`'s output when that file is the finished result of the run
    its record describes: written since that run began on the pair (ctime: a rename sets it, and no
    one can set it back), carrying the pair's id, its encoding and the full budget; else None."""
    from stylebatch.errors import StylebatchError
    from stylebatch.fit.provenance import read_metadata

    out = job.output_path(pair)
    begun = record.get("begun")
    try:
        if not isinstance(begun, (int, float)) or os.lstat(out).st_ctime < begun:
            return None
        meta = read_metadata(out)
    except (OSError, StylebatchError):
        return None
    evaluations = meta.get("evaluations")
    if (
        meta.get("id") != pair.id
        or meta.get("encoding") != pair.config.encoding()
        or not isinstance(evaluations, int)
        or evaluations < pair.config.steps
    ):
        return None
    return meta


def adopt_finished(job: Job, state: JobState, pair: Pair, record: dict[str, Any]) -> str | None:
    """A pair whose run wrote its output and was killed before recording it done: recorded done now,
    if every member of its batch has its output written too (the batch's fit finished: outputs are
    written only then, all of them before any record). Made again instead, an unfinished member of
    a batch whose first member is done would run alone, or with other companions, and give other
    pixels than the batch did; a batch killed while writing its outputs resumes whole, as before.
    Returns the note, or None when the pair is to run."""
    meta = _finished_output(job, pair, record)
    if meta is None:
        return None
    by_name = {p.name: p for p in job.valid_pairs}
    for name in record.get("batch") or []:
        other = by_name.get(name)
        if other is None:
            return None
        if name == pair.name:
            continue
        theirs = state.read(name) or {}
        if theirs.get("id") != other.id:
            return None
        if theirs.get("status") != "done" and _finished_output(job, other, theirs) is None:
            return None
    out = job.output_path(pair)
    state.update(
        pair.name,
        status="done",
        attempt_open=False,
        steps_done=meta["evaluations"],
        output=out.name,
        output_sha256=sha256_file(out),
        encoding=pair.config.encoding(),
        output_stat=output_stamp(out),
        losses=meta.get("losses") if isinstance(meta.get("losses"), dict) else record.get("losses"),
        finished=time.time(),
    )
    if not pair.config.keep_checkpoints:
        state.checkpoint_path(pair.name).unlink(missing_ok=True)
    return f"{pair.name}: its output was written before the run stopped; recorded as done, not made again"


@dataclass
class Survey:
    """What the records say of the valid pairs before a run touches anything, from one read each."""

    redo: list[Pair] = field(default_factory=list)  # finished, but inputs, weights or settings changed
    reformat: list[Pair] = field(default_factory=list)  # finished, but the new format means optimising again
    plainly_done: set[str] = field(default_factory=set)  # names needing nothing: see `plainly_done`


def survey(job: Job, state: JobState, opts: RunOptions) -> Survey:
    """One pass over the records (a start-up at 100,000 pairs pays a record read per pair per pass)."""
    found = Survey()
    verify = getattr(opts, "verify", False)
    for pair in job.valid_pairs:
        if pair.settled is not None and not verify:
            # Seen done by the user-files check: unchanged since (a stat of each) means still done.
            record_stamp, stamp = pair.settled
            if state.record_stamp(pair.name) == record_stamp and output_stamp(job.output_path(pair)) == stamp:
                found.plainly_done.add(pair.name)
                continue
        record = state.read(pair.name)
        if record is None or record.get("status") != "done":
            continue
        if record.get("id") != pair.id:
            found.redo.append(pair)
        elif plainly_done(job, pair, record, opts):
            found.plainly_done.add(pair.name)
        elif format_rerun(state, pair, record):
            found.reformat.append(pair)
    return found


def check_redo(job: Job, state: JobState, opts: RunOptions, reporter: Reporter) -> set[str]:
    """Say how many finished pairs this run makes again before it starts; refuse (one line, nothing
    run) when that is more than REDO_UNASKED and `--redo` was not given. Returns the names of the
    pairs that are plainly done (none with --fresh, which makes everything again)."""
    if opts.fresh:
        return set()
    # A changed format whose pixels cannot be had from the previous file or a kept checkpoint is a
    # full optimisation again too: counted alike (their ids match: none is in `redo`).
    found = survey(job, state, opts)
    redo, reformat = found.redo, found.reformat
    if not redo and not reformat:
        return found.plainly_done
    if redo:
        first = redo[0]
        why = redo_note(first, state.read(first.name) or {}, job.output_path(first), job.weights, "")
        example = f" (e.g. {why.removeprefix('redoing ').removesuffix(' ()')})" if why else ""
    else:
        first = reformat[0]
        old = recorded_encoding(state.read(first.name) or {})
        example = f" (e.g. {first.name}: format {describe(old)} → {describe(first.config.encoding())})"
    redo = redo + reformat
    where = state.replaced_dir
    if len(redo) > REDO_UNASKED and not opts.redo:
        raise StylebatchError(
            f"{job.output_dir}: this run would make {len(redo)} finished pairs again, their inputs, weights or "
            f"settings changed{example}; add --redo to go ahead (each previous output is kept in {where}), "
            "or undo the change; nothing was run"
        )
    reporter.note(
        f"{len(redo)} finished pair(s) will be made again (inputs, weights or settings changed); "
        f"each previous output is kept in {where}"
    )
    return found.plainly_done
