"""Measuring a finished run: where memory stood before a batch, its peak and seconds after, added
to the machine's calibration file (calibration.py) that the estimates read.

May import: memory.calibration, memory.estimate, memory.ladder (the runner's side of the model), atomic.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import torch

from stylebatch.atomic import atomic_write
from stylebatch.job.pairs import Pair
from stylebatch.memory import estimate
from stylebatch.memory.calibration import KEEP, cache_file, device_key, read_file
from stylebatch.memory.ladder import mark

log = logging.getLogger("stylebatch")


def _rss() -> tuple[int, int]:
    """(current, peak) resident set of this process, bytes."""
    text = Path("/proc/self/status").read_text()
    get = lambda k: int(re.search(rf"{k}:\s+(\d+) kB", text).group(1)) * 1024  # noqa: E731
    return get("VmRSS"), get("VmHWM")


_observed: list[bool] = []  # whether a pair has run in this process yet
_batch_seconds: list[float] = []  # the seconds of each batch this process ran (the rest is the job's overhead)


def process_age() -> float | None:
    """Seconds since this process started (Linux), None where it cannot be told."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return float(Path("/proc/uptime").read_text().split()[0]) - started
    except (OSError, ValueError, IndexError):
        return None


def record_job(device: torch.device, path: Path | None = None) -> float | None:
    """At the end of a run that ran batches: its seconds besides them (start-up, planning, the
    report), into the machine's calibration file as the job's overhead. Never raises."""
    age = process_age()
    if age is None or not _batch_seconds:
        return None
    overhead = max(0.0, age - sum(_batch_seconds))
    _batch_seconds.clear()
    path = path or cache_file()
    try:
        data = read_file(path)
        seen = data["devices"].setdefault(device_key(device), {})
        seen["job"] = (seen.get("job", []) + [round(overhead, 3)])[-KEEP:]
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(data, indent=1).encode())
    except OSError as e:
        log.warning("could not update %s: %s", path, e)
    return overhead


def observe(device: torch.device, done: list[int] | None = None) -> dict[str, Any]:
    """Where memory stands before a batch (the runner calls this, then `record_batch` after it);
    `done`: the evaluations its members' checkpoints already stand at."""
    out: dict[str, Any] = {"time": time.perf_counter(), "done": done or [], "mark": mark(), "first": not _observed}
    _observed.append(True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return {**out, "start": torch.cuda.memory_allocated(device)}
    try:
        rss, hwm = _rss()
    except (OSError, AttributeError):
        return out
    return {**out, "start": rss, "hwm": hwm}


def measured_peak(device: torch.device, before: dict[str, Any]) -> int | None:
    """The pair's peak (bytes, same sense as estimate's `peak`), or None where it cannot be told:
    on CPU the kernel keeps one high-water mark per process, so only a pair that raised it shows."""
    if "start" not in before:
        return None
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    _, hwm = _rss()
    return hwm if hwm > before["hwm"] else None


def record(
    device: torch.device,
    before: dict[str, Any],
    predicted_own: int,
    work_flops: float,
    path: Path | None = None,
    steps: int = 0,
) -> dict[str, Any]:
    """Add one run's figures to the machine's calibration file; returns them for the pair's state
    record. `predicted_own`: the model's bytes for the pair without baseline or scale;
    `work_flops`: the FLOPs of the evaluations this run did; `steps`: how many evaluations those
    were, summed over the batch's members (the time model's per-step cost; 0 where unknown)."""
    seconds = time.perf_counter() - before["time"]
    _batch_seconds.append(seconds)
    peak = measured_peak(device, before)
    entry = {
        "device": device_key(device),
        "predicted_bytes": predicted_own,
        "peak_bytes": peak,
        "start_bytes": before.get("start"),
        "start_peak_bytes": before.get("hwm"),
        "seconds": round(seconds, 3),
        "flops": work_flops,
    }
    path = path or cache_file()
    try:
        data = read_file(path)
        seen = data["devices"].setdefault(entry["device"], {})
        if peak is not None and before.get("start") is not None:
            own = peak - before["start"]
            seen["memory"] = (seen.get("memory", []) + [[predicted_own, own]])[-KEEP:]
            seen["baseline"] = (seen.get("baseline", []) + [before["start"]])[-KEEP:]
        if before.get("first") and before.get("hwm") is not None:  # the process's first pair: its floor
            seen["floor"] = (seen.get("floor", []) + [before["hwm"]])[-KEEP:]
        if work_flops > 0 and seconds > 0:
            seen["rate"] = (
                seen.get("rate", []) + [[work_flops, seconds, steps] if steps > 0 else [work_flops, seconds]]
            )[-KEEP:]
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(data, indent=1).encode())
    except OSError as e:  # a read-only home must not fail the pair
        log.warning("could not update %s: %s", path, e)
    return entry


def record_batch(device: torch.device, before: dict[str, Any], pairs: list[Pair], results: list[Any]) -> dict[str, Any]:
    """`record` for a batch the runner ran: the model's bytes for it and the FLOPs of the
    evaluations it did (from where its checkpoints stood to where it stopped). Never raises: a
    failed measurement must not fail a finished pair."""
    try:
        cfg, wh = pairs[0].config, pairs[0].content_size or pairs[0].out_size
        tile = cfg.tile if isinstance(cfg.tile, int) else None
        own = estimate.own_bytes(cfg, wh, len(pairs), tile)
        start = min(before.get("done") or [0])
        work = estimate.work(cfg, wh, start, results[0].evaluations, len(pairs), tile)
        # Steps as member-evaluations: the per-step cost that does not grow with the image (the
        # Wasserstein loss's eigendecompositions) is paid once per member.
        return record(device, before, own, work, steps=max(0, results[0].evaluations - start) * len(pairs))
    except Exception as e:  # noqa: BLE001
        log.warning("could not record this run's memory and rate: %s", e)
        return {}
