"""`<out>/.stylebatch/job.json`: the resolved job, written by rank 0 at every start, read by
`status` and `report` (which never load torch or the manifest).

The job is written once and each pair compactly: the config of the first pair with one is the
job's `defaults`, and each pair carries only the keys where it differs (`set`). A 100,000-pair
grid that varies `style_weight` holds that one key per pair, not the ~40 keys of its config.
One pair per line, so the file also reads line by line.

    {"format": 2, "manifest": ..., "cwd": ..., "weights": ...,
     "keys": [config keys in Config order], "bookkeeping": [keys that never change pixels],
     "defaults": {key: value, ...},
     "pairs": [
    {"name": "chelsea__wave", "id": "...", "entry": "grid[0]", "content": ..., "style": ..., "set": {"style_weight": 10}},
    ...]}

A pair without a config (its entry is invalid) has `"set": null`. Files of the first format (a full
`config` per pair) are read too.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from stylebatch.atomic import atomic_write
from stylebatch.errors import StylebatchError
from stylebatch.job.pairs import Job

FORMAT = 2
STREAM_CHARS = 1 << 20  # written to the file in pieces of about this many characters


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)  # ASCII: \u escapes carry any name, even a lone surrogate


def job_file_chunks(job: Job) -> Iterator[str]:
    """The job.json of a loaded Job, in pieces: the head, then a line per pair. Written as they are
    made (`write_job_file`), a 100,000-pair job never holds its whole text in memory."""
    configs = [p.config for p in job.pairs if p.config is not None]
    fields = dataclasses.fields(configs[0]) if configs else ()
    defaults = configs[0].to_dict() if configs else {}
    names = [f.name for f in fields]
    head = {
        "format": FORMAT,
        "manifest": str(job.manifest),
        "cwd": os.getcwd(),  # what relative paths are relative to
        "weights": job.weights,
        "keys": [f.name for f in fields],
        "bookkeeping": [f.name for f in fields if not f.metadata.get("identity", True)],
        "defaults": defaults,
    }
    yield _dumps(head)[:-1] + ',\n "pairs": [\n'
    overrides: dict[int, tuple[Any, str]] = {}  # per Config object (pairs of the same settings share one)
    for i, p in enumerate(job.pairs):
        entry: dict[str, Any] = {
            "name": p.name,
            "id": p.id,
            "entry": p.entry,
            "content": str(p.content),
            "style": str(p.styles[0] if p.styles else None),
        }
        if len(p.styles) > 1:
            entry["styles"] = [str(s) for s in p.styles]
        sep = ",\n" if i else ""
        if p.config is None:
            entry["set"] = None
            yield sep + _dumps(entry)
            continue
        if id(p.config) not in overrides:  # getattr, not to_dict(): a deep copy of every config is slow
            diff = {k: v for k in names if (v := getattr(p.config, k)) != defaults.get(k)}
            overrides[id(p.config)] = (p.config, _dumps(diff))  # the config kept: its id stays its own
        # The same text as _dumps(entry) with "set" last, its JSON made once per config.
        yield f'{sep}{_dumps(entry)[:-1]}, "set": {overrides[id(p.config)][1]}}}'
    yield "\n]}\n"


def job_file_bytes(job: Job) -> bytes:
    """The job.json of a loaded Job, whole."""
    return "".join(job_file_chunks(job)).encode("ascii")


def write_job_file(job: Job, path: Path) -> None:
    """Write `<root>/job.json` atomically, streamed: pieces of about 1 MB as they are made."""

    def write(fh: BinaryIO) -> None:
        buffer, size = [], 0
        for chunk in job_file_chunks(job):
            buffer.append(chunk)
            size += len(chunk)
            if size >= STREAM_CHARS:
                fh.write("".join(buffer).encode("ascii"))
                buffer, size = [], 0
        fh.write("".join(buffer).encode("ascii"))

    atomic_write(Path(path), write)


@dataclass
class JobEntry:
    """One pair of job.json: its config is the job's defaults updated with `overrides`."""

    name: str
    id: str
    entry: str
    content: str | None
    style: str | None
    styles: list[str] | None
    overrides: dict[str, Any] | None  # None: the entry had no valid config

    @property
    def has_config(self) -> bool:
        return self.overrides is not None


@dataclass
class JobFile:
    manifest: str
    cwd: Path
    weights: str
    keys: list[str]
    bookkeeping: set[str]
    defaults: dict[str, Any]
    entries: list[JobEntry] = field(default_factory=list)

    def value(self, entry: JobEntry, key: str) -> Any:
        if entry.overrides and key in entry.overrides:
            return entry.overrides[key]
        return self.defaults.get(key)

    def config(self, entry: JobEntry) -> dict[str, Any] | None:
        return None if entry.overrides is None else {**self.defaults, **entry.overrides}

    def resolve(self, path: str | None) -> Path | None:
        if not path or path == "None":
            return None
        p = Path(path)
        return p if p.is_absolute() else self.cwd / p


def read_job_file(path: Path) -> JobFile | None:
    """The job file under `root` (the `.stylebatch` directory), None when there is none; a file
    that cannot be read is a StylebatchError naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise StylebatchError(f"{path}: unreadable ({e})") from None
    except RecursionError:
        raise StylebatchError(f"{path}: unreadable (nested too deeply)") from None
    if not isinstance(data, dict) or not isinstance(data.get("pairs"), list):
        raise StylebatchError(f"{path}: not a stylebatch job file")
    job = JobFile(
        str(data.get("manifest", "")),
        Path(data.get("cwd") or os.getcwd()),
        str(data.get("weights", "")),
        list(data.get("keys") or []),
        set(data.get("bookkeeping") or []),
        dict(data.get("defaults") or {}),
    )
    legacy = "defaults" not in data  # format 1: a full config per pair
    for p in data["pairs"]:
        if legacy:
            cfg = p.get("config")
            if cfg and not job.defaults:
                job.defaults, job.keys = dict(cfg), list(cfg)
            overrides = None if not cfg else {k: v for k, v in cfg.items() if job.defaults.get(k) != v}
        else:
            overrides = p.get("set")
        job.entries.append(
            JobEntry(
                str(p.get("name")),
                str(p.get("id") or ""),
                str(p.get("entry") or ""),
                p.get("content"),
                p.get("style"),
                p.get("styles"),
                overrides,
            )
        )
    return job
