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
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterator

from stylebatch.atomic import atomic_write
from stylebatch.errors import LockedError

STATE_DIR = ".stylebatch"
STATUSES = ("pending", "running", "done", "failed", "interrupted")
HOST = socket.gethostname()
STALE_HEARTBEAT_S = 15 * 60  # a 'running' pair on another host with no heartbeat for this long is shown interrupted


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class JobState:
    def __init__(self, output_dir: Path):
        self.output_dir = Path(output_dir)
        self.root = self.output_dir / STATE_DIR

    def pair_dir(self, name: str) -> Path:
        return self.root / "pairs" / name

    def checkpoint_path(self, name: str) -> Path:
        return self.pair_dir(name) / "last.ckpt"

    def read(self, name: str) -> dict[str, Any] | None:
        path = self.pair_dir(name) / "state.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None  # an unreadable record is treated as absent: the pair is redone, never trusted

    def write(self, name: str, record: dict[str, Any]) -> None:
        directory = self.pair_dir(name)
        directory.mkdir(parents=True, exist_ok=True)
        record = {**record, "name": name, "updated": time.time()}
        atomic_write(directory / "state.json", json.dumps(record, indent=1, sort_keys=True).encode())

    def update(self, name: str, **changes: Any) -> dict[str, Any]:
        record = {**(self.read(name) or {}), **changes}
        self.write(name, record)
        return record

    def records(self) -> list[dict[str, Any]]:
        pairs = self.root / "pairs"
        if not pairs.is_dir():
            return []
        found = (self.read(d.name) for d in sorted(pairs.iterdir()) if d.is_dir())
        return [r for r in found if r]

    def owner(self, rank: int = 0) -> dict[str, Any]:
        return {"rank": rank, "host": HOST, "pid": os.getpid(), "heartbeat": time.time()}

    @contextlib.contextmanager
    def lock(self, break_lock: bool = False) -> Iterator[None]:
        """Hold the job's flock. The kernel releases it when the holder dies, so a lock left by a
        killed process is recovered automatically; `break_lock` removes a lock file that a
        filesystem without working flock (some NFS setups) keeps stale."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / "lock"
        if break_lock:
            path.unlink(missing_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                raise LockedError(
                    f"{self.output_dir}: another stylebatch job is running here ({holder}); "
                    "wait for it, or use another --out (--break-lock if you are sure it is gone)"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {HOST}".encode(), 0)
            yield
        finally:
            os.close(fd)


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
