"""The job's on-disk state, the single source of truth for what is done.

Layout under the output directory:

    <output_dir>/<name>.png                    outputs, named for people (.jpg/.webp with `format`)
    <output_dir>/.stylebatch/job.json          the resolved job, one compact line per pair (jobfile.py)
    <output_dir>/.stylebatch/lock              flock held by the running job (rank 0)
    <output_dir>/.stylebatch/logs/*.log        one log per process
    <output_dir>/.stylebatch/pairs/<name>/state.json   status, steps, attempts, owner, error, sha256
    <output_dir>/.stylebatch/pairs/<name>/last.ckpt    Lightning checkpoint (target + optimizer)
    <output_dir>/.stylebatch/pairs/<name>/losses.csv   loss curve, kept in step with last.ckpt (curves.py)
    <output_dir>/.stylebatch/report/                   `stylebatch report`: pages, contact sheets, thumbnails
    <output_dir>/.stylebatch/replaced/<name>.<old id>.png   a finished output a changed setting made stale, kept

Only the worker that owns a pair writes its record, always atomically. The rows `status` shows are
made from these records in pair_rows.py, the notes on a pair made again in redo_notes.py.

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
import secrets
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stylebatch.atomic import atomic_write, link_message, open_nofollow, pid_alive, read_nofollow, remove_stale_temps
from stylebatch.errors import JobGoneError, LockedError, UnsafePathError
from stylebatch.jobdir.curves import CURVE_FILE

STATE_DIR = ".stylebatch"
JOB_FILE = "job.json"
STATUSES = ("pending", "running", "done", "failed", "interrupted", "invalid")
INVALID_PREFIX = (
    "_invalid_"  # records of invalid manifest entries (run --skip-invalid); a pair name may not start with it
)
HOST = socket.gethostname()
# A stray --set on a job of hundreds of finished pairs must not quietly make them all again: up to
# this many finished pairs are made again unasked (their outputs kept in replaced/), more need `run --redo`.
REDO_UNASKED = 3
STALE_HEARTBEAT_S = 15 * 60  # a 'running' pair on another host with no heartbeat for this long is shown interrupted


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class JobState:
    """The job directory's state, and the one place its paths are made: every file under
    `.stylebatch/` is named here, so a layout change touches this class alone."""

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = Path(output_dir)
        self.root = self.output_dir / STATE_DIR
        self.expected_generation: str | None = None  # set in a worker: every record write checks it

    def generation(self) -> str:
        """The job's current generation token ('' before any `--fresh`)."""
        try:
            return read_nofollow(self.generation_file).decode("ascii", "replace").strip()
        except (OSError, ValueError):
            return ""

    def new_generation(self) -> str:
        token = secrets.token_hex(8)
        self.ensure_dir(self.root)
        atomic_write(self.generation_file, token.encode())
        return token

    def check_generation(self) -> None:
        """Raise JobGoneError when the job was started afresh since this worker's plan."""
        if self.expected_generation is not None and self.generation() != self.expected_generation:
            raise JobGoneError(
                f"{self.output_dir}: the job was started afresh (--fresh) by another run; "
                "this worker of the earlier run stops without writing"
            )

    @property
    def generation_file(self) -> Path:
        """A token `run --fresh` renews: a worker of an earlier run then writes nothing more."""
        return self.root / "generation"

    @property
    def job_file(self) -> Path:
        """The resolved job (job/jobfile.py), written by rank 0 before any pair runs."""
        return self.root / JOB_FILE

    @property
    def pairs_dir(self) -> Path:
        return self.root / "pairs"

    def pair_dir(self, name: str) -> Path:
        return self.pairs_dir / name

    def checkpoint_path(self, name: str) -> Path:
        return self.pair_dir(name) / "last.ckpt"

    @property
    def replaced_dir(self) -> Path:
        return self.root / "replaced"

    def keep_replaced(self, name: str, old_id: str, output: Path) -> Path | None:
        """Move a finished output that is about to be made again out of the way, into
        replaced/<name>.<old id><suffix>; returns where it went (None: there was no file)."""
        if not os.path.lexists(output):
            return None
        stem = f"{name}.{old_id or 'unknown'}"
        target = self.ensure_dir(self.replaced_dir) / f"{stem}{output.suffix}"
        n = 1
        # The same id kept twice with other bytes (jpg quality 95, then 80, then 60): each copy stays.
        while os.path.lexists(target) and not _same_bytes(target, output):
            n += 1
            target = self.replaced_dir / f"{stem}-{n}{output.suffix}"
        os.replace(output, target)  # same file system: the bytes are never copied, never half there
        return target

    def kept_copy(self, name: str, pair_id: str, suffix: str, sha256: Any) -> Path | None:
        """A kept copy of `name`'s output with these bytes (moved by a run that stopped before it
        had written the output again), or None."""
        if not isinstance(sha256, str):
            return None
        own = re.compile(re.escape(f"{name}.{pair_id}") + r"(?:-\d+)?" + re.escape(suffix))
        for path in self.replaced():
            if own.fullmatch(path.name) and sha256_file(path) == sha256:
                return path
        return None

    def replaced(self) -> list[Path]:
        """The kept copies of replaced outputs, sorted by name."""
        try:
            with os.scandir(self.replaced_dir) as it:
                return sorted(Path(e.path) for e in it if e.is_file(follow_symlinks=False))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def curve_path(self, name: str) -> Path:
        return self.pair_dir(name) / CURVE_FILE

    @property
    def stop_file(self) -> Path:
        """Written by rank 0 when it is signalled: reaches the workers on every node."""
        return self.root / "stop"

    @property
    def ranks_dir(self) -> Path:
        return self.root / "ranks"

    def rank_file(self, rank: int) -> Path:
        """A worker's heartbeat and counts, read by rank 0 while it waits."""
        return self.ranks_dir / f"rank{rank}.json"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

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
        return self.read_stamped(name)[0]

    def record_stamp(self, name: str) -> tuple[int, int, int, int] | None:
        """(inode, size, mtime, ctime in ns) of the pair's record file, None when there is none (or
        a link): records are replaced whole (atomic_write), so an unchanged stamp is an unchanged
        record, and a stat tells a start-up that what it read before is still what is there."""
        try:
            st = os.lstat(f"{self.root}/pairs/{name}/state.json")
        except (OSError, ValueError):
            return None
        return None if stat.S_ISLNK(st.st_mode) else _record_stamp_of(st)

    def read_stamped(self, name: str) -> tuple[dict[str, Any] | None, tuple[int, int, int, int] | None]:
        """The record (as `read`) and the stamp (as `record_stamp`) of the very file it was read from."""
        # os-level, not pathlib: start-up and `status` read one record per pair, 100,000 at scale,
        # and this is about twice as fast (measured: 1.2 s against 2.7 s for 100k records). Never
        # through a link: a planted one is refused (writes refuse linked directories: ensure_dir).
        path = f"{self.root}/pairs/{name}/state.json"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise UnsafePathError(link_message(Path(path))) from None
            return None, None
        except ValueError:
            return None, None
        try:
            st = os.fstat(fd)  # before reading: a change while it is read shows as another stamp later
            chunks = []
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
            record = json.loads(b"".join(chunks))
        except (OSError, ValueError, RecursionError):
            return None, None  # an unreadable record is treated as absent: the pair is redone, never trusted
        finally:
            os.close(fd)
        if not isinstance(record, dict) or record_problem(record) is not None:
            return None, None
        return record, _record_stamp_of(st)

    def write(self, name: str, record: dict[str, Any]) -> None:
        self.check_generation()
        directory = self.ensure_dir(self.pair_dir(name))
        record = {**record, "name": name, "updated": time.time()}
        atomic_write(directory / "state.json", json.dumps(record, indent=1, sort_keys=True).encode())

    def undo_attempt(self, name: str, **changes: Any) -> dict[str, Any]:
        """A pair stopped by something that is not its own failure (a signal, a full disk, out of
        memory before a retry, a failed batch before its pairs run alone): the attempt its run
        began (`attempt_open`) does not count. Once only: a closed attempt is not taken back twice."""
        record = self.read(name) or {}
        attempts = record_count(record.get("attempts"))
        if record.get("attempt_open"):
            attempts = max(0, attempts - 1)
        return self.update(name, attempts=attempts, attempt_open=False, **changes)

    def stop_attempt(self, name: str) -> None:
        """A full disk stopped the pair: not its failure, and it resumes on the next run."""
        self.undo_attempt(name, status="interrupted", heartbeat=time.time())

    def check_links(self, under: Path | None = None, into_pairs: bool = True) -> None:
        """Refuse the job directory if a link was planted anywhere in it, or in its subdirectory
        `under` and on the way there (one line naming it).

        `into_pairs=False` checks the pairs' directories themselves but not what is inside them:
        the start of a run, which would otherwise list 100,000 directories, leaves each pair's
        inside to the process that claims the pair for work (claims.try_claim checks it before
        writing anything there), and reads records without following links."""
        _check_dir(self.root)
        # scandir, not os.walk + islink: the entry's type comes with the listing (no lstat per file).
        top = Path(under) if under is not None else self.root
        current = self.root
        for part in top.relative_to(self.root).parts:
            current = current / part
            _check_dir(current)
        pairs = str(self.pairs_dir)
        stack = [str(top)] if os.path.isdir(top) else []
        while stack:
            directory = stack.pop()
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.is_symlink():
                        raise UnsafePathError(link_message(Path(entry.path)))
                    if entry.is_dir(follow_symlinks=False) and (into_pairs or directory != pairs):
                        stack.append(entry.path)

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

    def names(self) -> list[str]:
        """Names of the pairs that have a state directory, sorted; a planted link is refused."""
        _check_dir(self.root)
        _check_dir(self.root / "pairs")
        names = []
        try:
            with os.scandir(self.root / "pairs") as it:
                for e in it:  # d_type from the directory listing: no stat per pair
                    if e.is_symlink():
                        raise UnsafePathError(link_message(Path(e.path)))
                    if e.is_dir(follow_symlinks=False):
                        names.append(e.name)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(names)

    def records(self) -> list[dict[str, Any]]:
        found = (self.read(name) for name in self.names())
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
            self.check_links(into_pairs=False)
            yield
        finally:
            os.close(fd)


def output_stamp(path: str | os.PathLike) -> dict[str, int] | None:
    """Size, mtime, ctime (ns) and inode of a regular file, or None: recorded when an output is
    written, so a resume can tell an untouched output without reading it. The ctime catches a file
    edited in place whose mtime was set back (no program can set the ctime)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return stamp_of(st) if stat.S_ISREG(st.st_mode) else None


def _record_stamp_of(st: os.stat_result) -> tuple[int, int, int, int]:
    """`JobState.record_stamp` of a record file already stat'ed."""
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def stamp_of(st: os.stat_result) -> dict[str, int]:
    """`output_stamp` of a file already stat'ed."""
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "inode": st.st_ino}


def _same_bytes(a: Path, b: Path) -> bool:
    try:
        return a.stat().st_size == b.stat().st_size and sha256_file(a) == sha256_file(b)
    except OSError:
        return False


def output_intact(state: JobState, name: str, record: dict[str, Any], path: Path, verify: bool = False) -> bool:
    """Whether a done pair's output is still the file its record describes.

    The full sha256 is read only with `verify` or when the file's size, mtime or inode differ from
    those recorded at write time (touched, replaced, copied elsewhere, or a record from before
    stamps): re-hashing every output at every start is ~0.5 MB read per 512 px pair. A file that
    hashes right is stamped again, so the next start is cheap again."""
    stamp = output_stamp(path)
    if stamp is None:
        return False
    if not verify and record.get("output_stat") == stamp:
        return True
    if sha256_file(path) != record.get("output_sha256"):
        return False
    if record.get("output_stat") != stamp:
        state.update(name, output_stat=stamp)
    return True


_TEXT = (str, type(None))
_NUMBER = (int, float)
RECORD_TYPES: dict[str, tuple[type, ...]] = {  # what the code reads of a record, and its type
    "status": (str,),
    "id": _TEXT,
    "host": _TEXT,
    "output": _TEXT,
    "output_sha256": _TEXT,
    "error": _TEXT,
    "entry": _TEXT,
    "name": _TEXT,
    "attempts": (int,),
    "steps_done": (int,),
    "steps": (int,),
    "pid": (int,),
    "rank": (int, type(None)),
    "heartbeat": _NUMBER,
    "seconds": _NUMBER,
    "started": _NUMBER,
    "begun": _NUMBER,
    "finished": _NUMBER,
    "updated": _NUMBER,
    "attempt_open": (bool,),
    "output_stat": (dict, type(None)),
    "encoding": (dict,),
    "losses": (dict,),
    "memory_fallback": (dict, type(None)),
    "measured": (dict, type(None)),
    "batch": (list, type(None)),
}


_RECORD_TYPE_SETS = {key: frozenset(types) for key, types in RECORD_TYPES.items()}
_NUMBER_TYPES = frozenset(_NUMBER)


def record_problem(record: dict[str, Any]) -> str | None:
    """What makes a record unusable (a field of the wrong type, a status that is none of ours),
    or None. Such a record counts as absent: the pair is redone, never trusted, never a crash.

    Exact types, not isinstance: a record is parsed JSON, whose values are exactly dict, list,
    str, int, float, bool or None (so a bool is never taken for an int), and start-up checks
    100,000 records this way, where a set lookup per field costs a third of isinstance chains."""
    for key, value in record.items():
        allowed = _RECORD_TYPE_SETS.get(key)
        if allowed is not None and type(value) not in allowed:
            return f"'{key}' is {type(value).__name__}"
    if record.get("status", "pending") not in STATUSES:
        return "unknown status"
    heartbeat = record.get("heartbeat")
    if type(heartbeat) is float and heartbeat != heartbeat:
        return "'heartbeat' is NaN"
    losses = record.get("losses") or {}
    if not all(type(v) in _NUMBER_TYPES for v in losses.values()):
        return "'losses' holds a non-number"
    if not all(type(n) is str for n in record.get("batch") or []):
        return "'batch' holds a non-name"
    fallback = record.get("memory_fallback")
    if fallback is not None and not (
        isinstance(fallback.get("rungs", []), list)
        and isinstance(fallback.get("config", {}), dict)
        and all(isinstance(r, dict) for r in fallback.get("rungs", []))
    ):
        return "'memory_fallback' is malformed"
    return None


def record_count(value: Any) -> int:
    """A record's count as a non-negative int (a record edited by hand may hold anything)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def begin_attempt(record: dict[str, Any]) -> int:
    """The attempts a pair has used once its run now begins: its earlier count, less an attempt
    left open by a run that never ended it (killed, its worker lost), plus this one."""
    attempts = record_count(record.get("attempts"))
    if record.get("attempt_open"):
        attempts = max(0, attempts - 1)
    return attempts + 1


def own_output(state: JobState, path: Path) -> bool:
    """Whether `path`, a file directly in the output directory, is an output this job wrote: its
    pair's record names it and holds its sha256 (checked by the recorded stamp first, unread)."""
    path = Path(path)
    record = state.read(path.stem) if path.stem and not path.stem.startswith(".") else None
    if not record or record.get("output") != path.name or not isinstance(record.get("output_sha256"), str):
        return False
    if record.get("output_stat") == output_stamp(path):
        return True
    try:
        return sha256_file(path) == record["output_sha256"]
    except OSError:
        return False


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
