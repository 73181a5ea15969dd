"""Outputs are written only where this job wrote before: a file at a pair's output path that the
job's records do not account for is the user's, and `validate` and `run` refuse the pair with one
line naming it (`--overwrite` lets the job replace it).

A file is the job's own when its pair's record holds its sha256 (checked by the recorded size,
mtime, ctime and inode first, so an untouched output is not read); when a run was stopped between
writing the output and recording it (the record is not done yet, and the file carries that pair's
id in its embedded settings, or the record is of the pair's output in another format: a change of
`format` stopped between writing the new file and recording it); or when it carries the very id of
the pair that would replace it."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from stylebatch.errors import StylebatchError
from stylebatch.fit.provenance import read_metadata
from stylebatch.job.pairs import Job, Pair
from stylebatch.jobdir.state import JobState, sha256_file, stamp_of
from stylebatch.runner.options import done_as_now

OVERWRITE_HINT = "move it away, or use --overwrite to let the job replace it"


def foreign_output(state: JobState, pair: Pair, path: Path) -> str | None:
    """Why the file at `path` is not this job's own output of `pair`, or None (nothing there, or ours)."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        return f"cannot be checked ({e.strerror})"
    except ValueError:  # a name no file can have (the name's own problem is reported)
        return None
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link this job did not make"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    record, record_stamp = state.read_stamped(pair.name)
    if record is None:
        # No record (or an unreadable one, which counts as absent): only a file that carries this
        # very pair's id (same inputs, weights and settings) is the job's; made again, it is the same.
        return None if _carries_id(path, pair.id) else "exists, and this job has no record of writing it"
    recorded = record.get("output_sha256")
    if isinstance(recorded, str):
        stamp = stamp_of(st)  # a regular file, not a link: lstat's figures are stat's
        if record.get("output_stat") == stamp:
            if done_as_now(record, pair):
                pair.settled = (record_stamp, stamp)  # the run's start re-stats both instead of reading
            return None
        if _sha256(path) == recorded:
            return None
    if record.get("status") != "done" and (_carries_id(path, record.get("id")) or _carries_id(path, pair.id)):
        return None  # written, then stopped before its record said so
    if record.get("status") == "done" and record.get("output") != path.name and _carries_id(path, pair.id):
        return None  # re-encoded into a new format (runner/reencode.py), then stopped before the record said so
    return "exists and differs from what this job wrote there"


def check_user_files(job: Job, overwrite: bool) -> None:
    """Add a problem to every valid pair whose output path holds a file the job did not write."""
    if overwrite or job.problems:  # a job-level problem (output_dir, --set) is refused already
        return
    state = JobState(job.output_dir)
    for pair in job.valid_pairs:
        if pair.config is None:
            continue
        path = job.output_path(pair)
        if why := foreign_output(state, pair, path):
            pair.problems.append(f"{job.manifest}: {pair.label}: output {path} {why}; {OVERWRITE_HINT}")


def _sha256(path: Path) -> str | None:
    try:
        return sha256_file(path)
    except OSError:
        return None


def _carries_id(path: Path, pair_id: Any) -> bool:
    if not isinstance(pair_id, str) or not pair_id:
        return False
    try:
        return read_metadata(path).get("id") == pair_id
    except (StylebatchError, OSError, ValueError, RecursionError):
        return False
