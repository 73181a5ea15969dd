"""This machine's side of the estimates: free memory, and what past runs measured here.

Each pair's run records its measured peak and evaluation rate (measure.py: `observe` before, `record` after:
into the pair's state record and a per-machine calibration file,
`$XDG_CACHE_HOME/stylebatch/calibration.json`, default `~/.cache/...`), so the estimates of the
next `validate`, `size: auto` or out-of-memory message on this machine use its own figures:

    baseline       bytes in use before a pair starts (CPU: the process's resident set with Python,
                   torch and the network loaded; GPU: allocated, i.e. the network's weights)
    floor          the process's peak before its first pair (CPU: loading `--weights random`
                   builds a whole VGG19, classifier included, for a moment)
    memory_scale   measured / predicted for the pair's own memory (CPU: heap slack; ~1 on GPU)
    flop_rate      FLOP per second of the optimisation (FLOPs from the layer shapes, estimate.flops)
    pair_overhead  seconds a pair (or batch) takes besides its FLOPs: inputs, targets, the Trainer,
                   checkpoints, saving
    job_overhead   seconds a `run` takes besides its batches: start-up (Python, torch, the network),
                   planning, the final report

Time is modelled as job_overhead + per batch (pair_overhead + steps x step_overhead + FLOPs /
flop_rate), fitted to the runs recorded here (`fit_time`): the overheads from how a run's seconds
grow with its steps and FLOPs (small runs say most about them), the rate from how they grow with
FLOPs alone, so a tiny run, all overhead, never sets the rate, and the per-step cost that makes a
small image slower per FLOP is not charged to a large one's FLOPs. Without observations the
defaults below are used (measured on the project's 2-core CPU; a GPU's rate is a guess until its
first run).

May import: atomic (never the model or the runner's measuring: they read this).
"""

from __future__ import annotations

import json
import logging
import os
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)
KEEP = 32  # observations kept per device and kind (the newest)
MIN_OBSERVED = 64 * 2**20  # a pair whose own memory is below this says little about the scale
DEFAULTS = {
    # Resident set of `stylebatch run` before its first pair (Python, torch, Lightning, the network),
    # and the heap's slack over the allocator-level model, both measured here (scripts/memory_model.py).
    "cpu": {
        "baseline": 750 * 2**20,
        "memory_scale": 1.25,
        "flop_rate": 200e9,
        "pair_overhead": 1.0,
        # Seconds per member-evaluation besides the FLOPs, used until the runs here can tell it
        # (TimeFit): fitted on this project's 2-core CPU, 1 thread, default loss: 0.14-0.21 s.
        "step_overhead": 0.1,
        "job_overhead": 15.0,  # Python, torch and Lightning imported, the network built
    },
    "cuda": {
        "baseline": 100 * 2**20,
        "memory_scale": 1.05,
        "flop_rate": 20e12,
        "pair_overhead": 0.5,
        "job_overhead": 15.0,
    },
}
UNCALIBRATED_SPREAD = 0.5  # the range shown around an estimate from the defaults alone
PROBED_SPREAD = 0.3  # ... and around one from a probe of this machine's speed
# Whole runs' FLOP rate over the probe's (a VGG-sized 3x3 convolution, forward and backward to its
# input), measured on the project's CPU under the same load: 19 GFLOP/s in a 3-pair 192 px job,
# 20 GFLOP/s in the probe at that moment.
PROBE_EFFICIENCY = 0.9


def probe_rate(device: torch.device, seconds: float = 0.3) -> float:
    """FLOP/s this device gives now (its load included) on a convolution like VGG's middle layers,
    forward and backward to the input, best of a few; about `seconds` on a CPU."""
    device = torch.device(device)
    side = 64 if device.type == "cpu" else 256
    conv = torch.nn.Conv2d(128, 128, 3, padding=1, bias=False).to(device).requires_grad_(False)
    x = torch.randn(1, 128, side, side, device=device, requires_grad=True)
    flop = 2 * 2 * 9 * 128 * 128 * side * side

    def once() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        conv(x).sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    once()  # warm-up: allocations, kernel choice
    best, spent = float("inf"), 0.0
    while spent < seconds or best == float("inf"):
        took = once()
        best, spent = min(best, took), spent + took
    return flop / best


MIN_SPREAD = 0.15  # the least range shown: runs on a shared machine vary by this much


@dataclass(frozen=True)
class TimeFit:
    """Seconds of a batch = pair_overhead + steps x step_overhead + FLOPs / flop_rate, where steps
    counts each member's evaluations (a batch of 3 for 30 evaluations: 90): the Wasserstein loss's
    eigendecompositions and the step's Python cost do not grow with the image, so a 96 px image
    runs at half the FLOP rate of a 256 px one (measured on the project's CPU: 46 and 83 GFLOP/s)."""

    flop_rate: float
    pair_overhead: float
    step_overhead: float
    spread: float  # relative range of an estimate from this fit


def fit_time(runs: list[list[float]], default_overhead: float, default_step: float = 0.0) -> TimeFit | None:
    """The time model fitted to runs' [FLOPs, seconds] or [FLOPs, seconds, steps], or None without
    usable runs.

    With steps recorded and enough variety (`_fit_steps`), seconds are fitted as a fixed cost per
    batch, a cost per member's evaluation (what makes a small image slower per FLOP than a large
    one) and FLOPs at the rate, each run weighted by its relative
    error, so that many small runs cannot set the rate: only runs whose FLOPs differ tell it.
    Otherwise the overhead is the intercept of seconds against FLOPs by least squares where the
    runs' FLOPs differ enough to tell it (at least 4x), else the default, never more than the
    shortest run; the per-evaluation cost is `default_step` for runs that recorded their
    evaluations (one large run and some tiny ones cannot tell it, and without it the next job of
    other proportions was 35 % short), 0 for others; the rate is total FLOPs over total seconds
    less the overheads (work-weighted).
    `spread` is the work-weighted RMS of the runs' relative errors under the fit, at least MIN_SPREAD."""
    pts = [(float(r[0]), float(r[1]), float(r[2]) if len(r) > 2 else 0.0) for r in runs if r[0] > 0 and r[1] > 0]
    if not pts:
        return None
    fitted = _fit_steps(pts)
    if fitted is None:
        fs, ss = [f for f, _, _ in pts], [s for _, s, _ in pts]
        overhead = default_overhead
        if len(pts) >= 3 and max(fs) >= 4 * min(fs):
            mf, ms = statistics.fmean(fs), statistics.fmean(ss)
            sxx = sum((f - mf) ** 2 for f in fs)
            slope = sum((f - mf) * (s - ms) for f, s, _ in pts) / sxx
            if slope > 0:
                overhead = ms - slope * mf
        overhead = min(max(overhead, 0.0), min(ss))
        per_step = default_step if any(n > 0 for _, _, n in pts) else 0.0
        busy = sum(max(s - overhead - n * per_step, s / 10) for _, s, n in pts)
        fitted = (overhead, per_step, sum(fs) / busy)
    overhead, per_step, rate = fitted
    errors = [(overhead + n * per_step + f / rate) / s - 1 for f, s, n in pts]
    spread = (sum(f * e * e for (f, _, _), e in zip(pts, errors)) / sum(f for f, _, _ in pts)) ** 0.5
    return TimeFit(rate, overhead, per_step, max(spread, MIN_SPREAD))


def _fit_steps(pts: list[tuple[float, float, float]]) -> tuple[float, float, float] | None:
    """(pair_overhead, step_overhead, flop_rate) by least squares on relative error, or None when
    fewer than 4 runs recorded their steps, fewer than 3 of them differ, their FLOPs differ by less
    than 4x, or the rate comes out negative. A negative overhead term is dropped (0) and the rest fitted again."""
    with_steps = [(f, s, n) for f, s, n in pts if n > 0]
    if len(with_steps) < 4 or max(f for f, _, _ in with_steps) < 4 * min(f for f, _, _ in with_steps):
        return None
    if len({(f, n) for f, _, n in with_steps}) < 3:
        return None  # repeats of two jobs cannot tell three costs apart
    scale = max(f for f, _, _ in with_steps)  # FLOPs in units of the largest run: a well-scaled system
    terms = [0, 1, 2]  # constant, steps, FLOPs
    while True:
        rows = torch.tensor(
            [[(1.0, n, f / scale)[t] / s for t in terms] for f, s, n in with_steps], dtype=torch.float64
        )
        target = torch.ones(len(with_steps), 1, dtype=torch.float64)  # seconds / seconds: relative error
        coef = torch.linalg.lstsq(rows, target).solution.flatten().tolist()
        found = dict(zip(terms, coef))
        if found.get(2, 0.0) <= 0:
            return None
        negative = [t for t in terms if t != 2 and found[t] < 0]
        if not negative:
            return found.get(0, 0.0), found.get(1, 0.0), scale / found[2]
        terms.remove(negative[0])


def cache_dir() -> Path:
    """stylebatch's per-user cache: `$XDG_CACHE_HOME/stylebatch`, default `~/.cache/stylebatch`."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "stylebatch"


def cache_file() -> Path:
    return cache_dir() / "calibration.json"


def device_key(device: torch.device) -> str:
    """What calibration is kept per: the GPU's name, or the CPU's model and thread count."""
    if device.type == "cuda":
        return "cuda:" + torch.cuda.get_device_name(device)
    model = "cpu"
    try:
        model = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text()).group(1).strip()
    except (OSError, AttributeError):
        pass
    return f"cpu:{model} x{torch.get_num_threads()}"


def free_memory(device: torch.device) -> int:
    """Bytes the device has free now: CUDA's own count, or the CPU's available RAM."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        found = re.search(r"MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        return int(found.group(1)) * 1024
    except (OSError, AttributeError):
        return 8 * 2**30  # not Linux: assume a modest machine


def read_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) and isinstance(data.get("devices"), dict) else {"devices": {}}
    except (OSError, ValueError):
        return {"devices": {}}


@dataclass
class Device:
    """Free memory and this machine's calibration, as estimate.estimate takes them."""

    kind: str
    key: str
    free: int
    baseline: int
    floor: int
    memory_scale: float
    flop_rate: float
    pair_overhead: float
    observations: int = 0
    job_overhead: float = 10.0
    spread: float = UNCALIBRATED_SPREAD  # relative range of a time estimate (+/-)
    probed: bool = False  # the rate is a probe's of this device now, not its recorded runs
    step_overhead: float = 0.0  # seconds each member's evaluation takes besides its FLOPs (see TimeFit)

    @staticmethod
    def current(device: torch.device | str, path: Path | None = None, probe: bool = False) -> Device:
        """`probe`: without recorded runs, measure the device's speed now (probe_rate) instead of
        taking the default rate (for time estimates; memory needs no probe)."""
        device = torch.device(device)
        key = device_key(device)
        seen = read_file(path or cache_file())["devices"].get(key, {})
        d = DEFAULTS["cuda" if device.type == "cuda" else "cpu"]
        ratios = [m / p for p, m in seen.get("memory", []) if p >= MIN_OBSERVED]
        runs = seen.get("rate", [])
        timed = fit_time(runs, d["pair_overhead"], d.get("step_overhead", 0.0))
        if timed is not None:
            rate, overhead, per_step, spread = timed.flop_rate, timed.pair_overhead, timed.step_overhead, timed.spread
        else:
            rate, overhead, per_step, spread = d["flop_rate"], d["pair_overhead"], 0.0, UNCALIBRATED_SPREAD
        if timed is None and probe:
            rate, spread = probe_rate(device) * PROBE_EFFICIENCY, PROBED_SPREAD
        jobs = [float(x) for x in seen.get("job", []) if x >= 0]
        return Device(
            device.type,
            key,
            free_memory(device),
            int(statistics.median(seen["baseline"])) if seen.get("baseline") else d["baseline"],
            int(statistics.median(seen["floor"])) if seen.get("floor") else d["baseline"],
            statistics.median(ratios) if ratios else d["memory_scale"],
            rate,
            overhead,
            len(ratios) + len(runs),
            statistics.median(jobs) if jobs else d["job_overhead"],
            spread,
            timed is None and probe,
            per_step,
        )
