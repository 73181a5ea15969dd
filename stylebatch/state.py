"""The job's on-disk state, the single source of truth for what is done.

Layout under the output directory:

    <output_dir>/<name>.png                    outputs, named for people (.jpg/.webp with `format`)
    <output_dir>/.stylebatch/job.json          the resolved job, for reproduction
    <output_dir>/.stylebatch/lock              flock held by the running job (rank 0)
    <output_dir>/.stylebatch/logs/*.log        one log per process
    <output_dir>/.stylebatch/pairs/<name>/state.json   status, steps, attempts, owner, error, sha256
    <output_dir>/.stylebatch/pairs/<name>/last.ckpt    Lightning checkpoint (target + optimizer)
    <output_dir>/.stylebatch/pairs/<name>/losses.csv   loss curve, kept in step with last.ckpt (curves.py)
    <output_dir>/.stylebatch/report/                   `stylebatch report`: report.html, contact_sheet.png

Only the worker that owns a pair writes its record, always atomically.

Nothing here is reached through a symbolic link: every directory below the output directory is
created or checked component by component, files are opened with O_NOFOLLOW, and the lock holder
scans the whole tree once; a planted link is refused with one line naming it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import socket
import stat
import time
from pathlib import Path
from typing import Any, Iterator

from stylebatch.atomic import atomic_write, link_message, open_nofollow, pid_alive, read_nofollow, remove_stale_temps
from stylebatch.errors import LockedError, UnsafePathError

STATE_DIR = ".stylebatch"
INVALID_PREFIX = "_invalid_"  # records of invalid manifest entries; a pair name may not start with it
STATUSES = ("pending", "running", "done", "failed", "interrupted")
HOST = socket.gethostname()
STALE_HEARTBEAT_S = 15 * 60  # a 'running' pair on another host with no heartbeat for this long is shown interrupted


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class JobState:
    def __init__(self, output_dir: Path):
        self.output_dir = Path(output_dir)
        self.root = self.output_dir / STATE_DIR

    def pair_dir(self, name: str) -> Path:
        return self.root / "pairs" / name

    def checkpoint_path(self, name: str) -> Path:
        return self.pair_dir(name) / "last.ckpt"

    def ensure_dir(self, path: Path) -> Path:
        """Create `path` (inside the output directory) component by component, refusing any
        component below the output directory that is a link or not a directory."""
        self.output_dir.mkdir(parents=True, exist_ok=True)  # the user's directory: a link to it is fine
        current = self.output_dir
        for part in Path(path).relative_to(self.output_dir).parts:
            current = current / part
            try:
                os.mkdir(current)
            except FileExistsError:
                pass
            _check_dir(current)
        return Path(path)

    def read(self, name: str) -> dict[str, Any] | None:
        directory = self.pair_dir(name)
        try:
            _check_dir(directory)
            return json.loads(read_nofollow(directory / "state.json").decode("utf-8"))
        except FileNotFoundError:
            return None
        except UnsafePathError:
            raise
        except (OSError, ValueError):
            return None  # an unreadable record is treated as absent: the pair is redone, never trusted

    def write(self, name: str, record: dict[str, Any]) -> None:
        directory = self.ensure_dir(self.pair_dir(name))
        record = {**record, "name": name, "updated": time.time()}
        atomic_write(directory / "state.json", json.dumps(record, indent=1, sort_keys=True).encode())

    def undo_attempt(self, name: str) -> None:
        """A pair stopped by something that is not its fault (a full disk): its attempt does not count."""
        record = self.read(name) or {}
        self.update(name, status="interrupted", attempts=max(0, int(record.get("attempts", 1)) - 1),
                    heartbeat=time.time())

    def check_links(self) -> None:
        """Refuse the job directory if a link was planted anywhere in it (one line naming it)."""
        _check_dir(self.root)
        for directory, dirs, files in os.walk(self.root):
            for name in dirs + files:
                if os.path.islink(os.path.join(directory, name)):
                    raise UnsafePathError(link_message(Path(directory) / name))

    def remove_stale_temps(self) -> int:
        """Temps left in the job directory by killed writers; those in a pair's own directory are
        removed by whoever claims the pair (claims.py), the only process that may write there."""
        count = 0
        for directory in (self.root, self.root / "ranks", self.root / "report"):
            count += remove_stale_temps(directory)
        return count

    def update(self, name: str, **changes: Any) -> dict[str, Any]:
        record = {**(self.read(name) or {}), **changes}
        self.write(name, record)
        return record

    def records(self) -> list[dict[str, Any]]:
        pairs = self.root / "pairs"
        _check_dir(self.root)
        _check_dir(pairs)
        if not pairs.is_dir():
            return []
        found = (self.read(d.name) for d in sorted(pairs.iterdir()) if d.is_symlink() or d.is_dir())
        return [r for r in found if r]

    def owner(self, rank: int = 0) -> dict[str, Any]:
        return {"rank": rank, "host": HOST, "pid": os.getpid(), "heartbeat": time.time()}

    @contextlib.contextmanager
    def lock(self, break_lock: bool = False) -> Iterator[None]:
        """Hold the job's flock. The kernel releases it when the holder dies, so a lock left by a
        killed process is recovered automatically; `break_lock` takes over a lock that a file
        system without working flock (some NFS setups) keeps held after its holder is gone, and
        refuses while the recorded holder is alive on this host (that would run two jobs at once)."""
        path = self.ensure_dir(self.root) / "lock"
        fd = open_nofollow(path, os.O_RDWR | os.O_CREAT)
        try:
            if not _try_flock(fd):
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                if not break_lock:
                    raise LockedError(
                        f"{self.output_dir}: another stylebatch job is running here ({holder}); "
                        "wait for it, or use another --out (--break-lock if you are sure it is gone)"
                    )
                _refuse_live_holder(self.output_dir, holder)
                os.close(fd)
                path.unlink(missing_ok=True)  # a new lock file: the stale lock stays on the old one
                fd = open_nofollow(path, os.O_RDWR | os.O_CREAT | os.O_EXCL)
                if not _try_flock(fd):
                    raise LockedError(f"{self.output_dir}: another job took the lock while it was broken")
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {HOST}".encode(), 0)
            self.check_links()
            yield
        finally:
            os.close(fd)


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        return False
    return True


def _refuse_live_holder(output_dir: Path, holder: str) -> None:
    found = re.fullmatch(r"pid (\d+) on (\S+)", holder)
    if found and found[2] == HOST and int(found[1]) != os.getpid() and pid_alive(int(found[1])):
        raise LockedError(
            f"{output_dir}: --break-lock refused: the job holding the lock is alive (pid {found[1]} on this "
            "host); breaking it would run two jobs on one directory. Stop that job, or wait for it"
        )


def _check_dir(path: Path) -> None:
    """`path` must be a real directory (or not exist yet), never a link."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePathError(link_message(path))
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePathError(f"{path}: expected a directory of stylebatch's state, found a file; remove it")


def effective_status(record: dict[str, Any], now: float | None = None) -> str:
    """A 'running' record whose owner is gone is shown as interrupted, not running."""
    status = record.get("status", "pending")
    if status != "running":
        return status
    if record.get("host") == HOST:
        return status if pid_alive(int(record.get("pid", -1))) else "interrupted"
    heartbeat = float(record.get("heartbeat", 0))
    return status if (now or time.time()) - heartbeat < STALE_HEARTBEAT_S else "interrupted"


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    pairs = []
    for r in records:
        pairs.append(
            {
                "name": r["name"],
                "status": effective_status(r),
                "steps_done": r.get("steps_done", 0),
                "steps": r.get("steps"),
                "attempts": r.get("attempts", 0),
                "rank": r.get("rank"),
                "host": r.get("host"),
                "error": r.get("error"),
                "seconds": r.get("seconds"),
                "output": r.get("output"),
                "losses": r.get("losses"),
            }
        )
    counts = {s: sum(1 for p in pairs if p["status"] == s) for s in STATUSES}
    return {"pairs": pairs, "counts": counts}
