"""Atomic file writes, the temp files they leave when killed, links refused, and the fault points
the crash tests use.

Every file stylebatch writes (outputs, checkpoints, state records) goes through `atomic_write`:
a temp file in the *same directory*, flush + fsync, then `os.replace`. A reader sees the old file
or the new one, never half of one, and a failed write leaves the old file intact.
(Lightning's default checkpoint save writes its temp file in $TMPDIR; across filesystems its final
move truncates the good checkpoint first: see shared/reference/distributed.md §3.3.)

Temp files have one name, `.<name>.stylebatch-tmp.<pid>`, that no other program uses, so cleaning
them up can never take a user's file: `remove_stale_temps` deletes only that pattern, only in the
directory it is given, and only regular files (see state.py and claims.py for where it runs).
A temp file is created with O_EXCL | O_NOFOLLOW: a link planted under its name is never written
through.
"""

from __future__ import annotations

import errno
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from stylebatch.errors import DISK_FULL, UnsafePathError

TMP_MARK = ".stylebatch-tmp."
_TEMP_NAME = re.compile(r"\.(?P<name>.+)" + re.escape(TMP_MARK) + r"(?P<pid>[0-9]+)")
_LOW_SPACE = 1 << 20  # bytes: below this after a failed write, the file system counts as full


def temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def open_nofollow(path: str | os.PathLike, flags: int, mode: int = 0o644) -> int:
    """os.open that refuses a symbolic link as the last component (one UnsafePathError line)."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafePathError(link_message(Path(path))) from None
        raise


def read_nofollow(path: str | os.PathLike) -> bytes:
    fd = open_nofollow(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def link_message(path: Path) -> str:
    try:
        target = f" (to {os.readlink(path)})"
    except OSError:
        target = ""
    return (
        f"{path}: is a symbolic link{target}; stylebatch never follows links inside its own files, "
        "so nothing outside the output directory can be written through one: remove it and run again"
    )


class _ErrorRecorder:
    """Passes writes through to the file and keeps the OSError of a failed one: torch.save reports
    a full disk only as "RuntimeError: [enforce fail at inline_container.cc] unexpected pos", so
    the real errno is taken from here."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.fh.write(data)
        except OSError as e:
            self.error = e
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fh, name)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None] | bytes) -> None:
    """Write `path` atomically; `write` is bytes or a function that writes to a binary file.
    A full disk (or quota) is raised as OSError(ENOSPC/EDQUOT) naming `path`, whatever the writer
    raised for it."""
    path = Path(path)
    tmp = temp_path(path)
    recorder = None
    try:
        with _open_temp(tmp) as fh:
            if isinstance(write, (bytes, bytearray)):
                fh.write(write)
            else:
                recorder = _ErrorRecorder(fh)
                write(recorder)  # type: ignore[arg-type]
            fh.flush()
            os.fsync(fh.fileno())
        fault_point(f"tmp:{path.suffix.lstrip('.')}")
        os.replace(tmp, path)
    except BaseException as e:
        full = _disk_full_errno(e, recorder, path.parent)  # before the unlink frees the temp's space
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if full is not None:
            raise OSError(full, os.strerror(full), str(path)) from e
        if isinstance(e, OSError) and e.errno is not None and e.filename in (None, str(tmp)):
            e.filename = str(path)  # the message names the file being written, not its temp
        raise
    _fsync_dir(path.parent)


def _open_temp(tmp: Path) -> BinaryIO:
    return os.fdopen(_create(tmp), "wb")


def _create(tmp: Path) -> int:
    """A new temp file, never through a link: O_EXCL fails on anything already there, which is
    only ever a stale temp of an earlier process with our pid (or something planted): removed."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        return open_nofollow(tmp, flags)
    except FileExistsError:
        tmp.unlink()  # unlinking a link removes the link, never its target
        return open_nofollow(tmp, flags)


def _disk_full_errno(e: BaseException, recorder: _ErrorRecorder | None, directory: Path) -> int | None:
    if isinstance(e, OSError):
        return e.errno if e.errno in DISK_FULL else None
    if recorder is not None and recorder.error is not None and recorder.error.errno in DISK_FULL:
        return recorder.error.errno
    if isinstance(e, RuntimeError):  # a writer that swallowed the OSError: ask the file system
        try:
            st = os.statvfs(directory)
        except OSError:
            return None
        free = st.f_bfree if os.geteuid() == 0 else st.f_bavail  # root may use the reserved blocks
        return errno.ENOSPC if free * st.f_frsize < _LOW_SPACE else None
    return None


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


def remove_stale_temps(directory: Path, names: set[str] | None = None) -> int:
    """Delete temp files left by killed writers in `directory` (not below it): only our pattern,
    only regular files, only for the target `names` when given, and never one whose writer is
    still alive on this host. Returns the count."""
    count = 0
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for entry in entries:
        found = _TEMP_NAME.fullmatch(entry.name)
        if not found or (names is not None and found["name"] not in names):
            continue
        pid = int(found["pid"])
        if not entry.is_file(follow_symlinks=False) or (pid != os.getpid() and pid_alive(pid)):
            continue
        try:
            os.unlink(entry.path)
            count += 1
        except FileNotFoundError:
            pass
    return count


def temp_targets(directory: Path) -> set[str]:
    """Names of the files in `directory` that have temps of our pattern beside them (any writer)."""
    try:
        with os.scandir(directory) as it:
            return {found["name"] for e in it if (found := _TEMP_NAME.fullmatch(e.name))}
    except (FileNotFoundError, NotADirectoryError):
        return set()


_fault_hits: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Crash-test hook. With STYLEBATCH_FAULT=<name>[@<n>] the n-th (default first) time the process
    reaches the point it writes STYLEBATCH_FAULT_MARKER (so a test can tell the fault really fired)
    and SIGKILLs itself: no cleanup, no finally blocks, as a power cut or OOM kill would.
    With a trailing `!raise` it raises OSError there instead (a failure the run must isolate);
    with `!enospc`, OSError(ENOSPC): the disk is full; with `!stop`, SIGSTOP (a process that hangs)."""
    spec = os.environ.get("STYLEBATCH_FAULT")
    if not spec:
        return
    spec, _, action = spec.partition("!")
    want, _, nth = spec.partition("@")
    if want != name:
        return
    _fault_hits[name] = _fault_hits.get(name, 0) + 1
    if _fault_hits[name] < int(nth or 1):
        return
    marker = os.environ.get("STYLEBATCH_FAULT_MARKER")
    if marker:
        Path(marker).write_text(name)
    if action == "raise":
        raise OSError(f"injected fault at {name}")
    if action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    os.kill(os.getpid(), signal.SIGSTOP if action == "stop" else signal.SIGKILL)
