"""The rows of `stylebatch status` (status_view.py): one per pair of the job, in manifest order,
pending and invalid ones included, read from the job's on-disk state (state.py) one record at a time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stylebatch.errors import StylebatchError
from stylebatch.job.jobfile import read_job_file
from stylebatch.jobdir.state import INVALID_PREFIX, STATE_DIR, JobState, effective_status


def _row(name: str, entry: str, record: dict[str, Any] | None, steps: Any) -> dict[str, Any]:
    r = record or {}
    return {
        "name": name,
        "entry": entry,
        "status": effective_status(r) if record else "pending",
        "steps_done": r.get("steps_done", 0),
        "steps": r.get("steps", steps),
        "attempts": r.get("attempts", 0),
        "rank": r.get("rank"),
        "host": r.get("host"),
        "error": r.get("error"),
        "seconds": r.get("seconds"),
        "output": r.get("output"),
        "losses": r.get("losses"),
    }


def pair_rows(output_dir: Path) -> Iterator[dict[str, Any]]:
    """One status row per pair of the job, in manifest order, pending ones included (from job.json),
    reading one record at a time; a directory without job.json (a run stopped before writing it)
    lists its records. Invalid entries (run --skip-invalid) show as `invalid` with their reasons."""
    state = JobState(output_dir)
    if not state.root.is_dir():
        raise StylebatchError(f"{output_dir}: not a stylebatch output directory (no {STATE_DIR}/)")
    job = read_job_file(state.root)
    if job is None:
        for name in state.names():
            record = state.read(name)
            if record:
                yield _row(name, str(record.get("entry") or ""), record, None)
        return
    invalid = {}
    for name in state.names():
        if name.startswith(INVALID_PREFIX):
            record = state.read(name) or {}
            invalid[record.get("entry")] = record
    for e in job.entries:
        if not e.has_config or e.entry in invalid:
            bad = invalid.get(e.entry, {})
            yield {**_row(e.name, e.entry, bad, None), "status": "invalid", "steps_done": 0, "steps": None}
            continue
        yield _row(e.name, e.entry, state.read(e.name), job.value(e, "steps"))
