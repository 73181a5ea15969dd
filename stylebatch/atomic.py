"""Atomic file writes and the fault points the crash tests use.

Every file stylebatch writes (outputs, checkpoints, state records) goes through `atomic_write`:
a temp file in the *same directory*, flush + fsync, then `os.replace`. A reader sees the old file
or the new one, never half of one, and a failed write leaves the old file intact.
(Lightning's default checkpoint save writes its temp file in $TMPDIR; across filesystems its final
move truncates the good checkpoint first: see shared/reference/distributed.md §3.3.)
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import BinaryIO, Callable

TMP_MARK = ".tmp."


def temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None] | bytes) -> None:
    """Write `path` atomically; `write` is bytes or a function that writes to a binary file."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as fh:
            if isinstance(write, (bytes, bytearray)):
                fh.write(write)
            else:
                write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        fault_point(f"tmp:{path.suffix.lstrip('.')}")
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno is not None and e.filename in (None, str(tmp)):
            e.filename = str(path)  # the message names the file being written, not its temp
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temps(directory: Path) -> int:
    """Delete temp files left by killed writers (any pid) below `directory`; returns the count."""
    count = 0
    for tmp in directory.rglob(f".*{TMP_MARK}*"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            count += 1
    return count


_fault_hits: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Crash-test hook. With STYLEBATCH_FAULT=<name>[@<n>] the n-th (default first) time the process
    reaches the point it writes STYLEBATCH_FAULT_MARKER (so a test can tell the fault really fired)
    and SIGKILLs itself: no cleanup, no finally blocks, as a power cut or OOM kill would.
    With a trailing `!raise` it raises OSError there instead (a failure the run must isolate)."""
    spec = os.environ.get("STYLEBATCH_FAULT")
    if not spec:
        return
    spec, raise_instead = spec.removesuffix("!raise"), spec.endswith("!raise")
    want, _, nth = spec.partition("@")
    if want != name:
        return
    _fault_hits[name] = _fault_hits.get(name, 0) + 1
    if _fault_hits[name] < int(nth or 1):
        return
    marker = os.environ.get("STYLEBATCH_FAULT_MARKER")
    if marker:
        Path(marker).write_text(name)
    if raise_instead:
        raise OSError(f"injected fault at {name}")
    os.kill(os.getpid(), signal.SIGKILL)
