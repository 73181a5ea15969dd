"""The rows of `stylebatch status` (status_view.py): one per pair of the job, in manifest order,
pending and invalid ones included, read from the job's on-disk state (state.py) one record at a time."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stylebatch.errors import StylebatchError
from stylebatch.job.jobfile import JobEntry, JobFile, read_job_file
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
    job = read_job_file(state.job_file)
    if job is None:
        for name in state.names():
            record = state.read(name)
            if record:
                yield _row(name, str(record.get("entry") or ""), record, None)
        return
    for e, record, status in job_records(state, job):
        if status == "invalid":
            yield {**_row(e.name, e.entry, record, None), "status": "invalid", "steps_done": 0, "steps": None}
        else:
            yield {**_row(e.name, e.entry, record or None, job.value(e, "steps")), "status": status}


def job_records(state: JobState, job: JobFile) -> Iterator[tuple[JobEntry, dict[str, Any], str]]:
    """(entry, record, status) for each pair of the job file, in manifest order, one record read at
    a time: `invalid` for an entry the run recorded as invalid (its record says why) or one without
    a config, `pending` for one without a record (an empty record) or a done one whose output is
    gone (one stat per done pair), else the record's own status."""
    invalid = {}
    for name in state.names():
        if name.startswith(INVALID_PREFIX):
            record = state.read(name) or {}
            invalid[record.get("entry")] = record
    now = time.time()
    for e in job.entries:
        bad = invalid.get(e.entry) if e.entry else None
        if bad is not None or not e.has_config:
            yield e, bad or {}, "invalid"
            continue
        record = state.read(e.name)
        status = effective_status(record, now) if record else "pending"
        output = record.get("output") if record else None
        if status == "done" and isinstance(output, str) and not os.path.isfile(state.output_dir / output):
            # Done once, but its picture is gone: the next run makes it again, so it is not done.
            record = {**record, "error": f"output {output} is missing: the next run makes it again"}
            status = "pending"
        yield e, record or {}, status
