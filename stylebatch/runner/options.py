"""What a run is given and decides first: its options, the reporter and the stop flag it talks
through, and which pairs need work (a record whose id changed is reset, a done output checked)."""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass
from typing import Any

from stylebatch.errors import StopNow
from stylebatch.job.pairs import Job, Pair
from stylebatch.jobdir.state import JobState, output_intact, record_count
from stylebatch.runner.redo_notes import redo_note, stale_output_note

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


class Reporter:
    """What the runner tells the user; the CLI draws it with rich. This one stays silent."""

    def start(self, total: int, done: int, pending: list[Pair]) -> None: ...
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


def needs_work(job: Job, state: JobState, pair: Pair, opts: RunOptions, reporter: Reporter | None = None) -> bool:
    """Whether a pair is to run now; resets a record whose id no longer matches."""
    record = state.read(pair.name)
    if record is None:
        return True
    if record.get("id") != pair.id:
        # Inputs, weights or pixel-changing settings changed: the old checkpoint means nothing.
        note = redo_note(pair, record, job.output_path(pair), job.weights)  # say what changed
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
        same_encoding = record.get("encoding", {"format": "png"}) == pair.config.encoding()
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
    return True
