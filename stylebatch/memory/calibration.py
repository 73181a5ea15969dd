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
    flop_rate      FLOP per second of whole runs (FLOPs from the layer shapes, estimate.flops)

Without observations the defaults below are used (measured on the project's 2-core CPU; a GPU's
rate is a guess until its first run).

May import: atomic (never the model or the runner's measuring: they read this).
"""

from __future__ import annotations

import json
import logging
import os
import re
import statistics
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
    "cpu": {"baseline": 750 * 2**20, "memory_scale": 1.25, "flop_rate": 200e9, "pair_overhead": 1.0},
    "cuda": {"baseline": 100 * 2**20, "memory_scale": 1.05, "flop_rate": 20e12, "pair_overhead": 0.5},
}


def cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "stylebatch" / "calibration.json"


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

    @staticmethod
    def current(device: torch.device | str, path: Path | None = None) -> Device:
        device = torch.device(device)
        key = device_key(device)
        seen = read_file(path or cache_file())["devices"].get(key, {})
        d = DEFAULTS["cuda" if device.type == "cuda" else "cpu"]
        ratios = [m / p for p, m in seen.get("memory", []) if p >= MIN_OBSERVED]
        # A run's seconds include its fixed cost (targets, Trainer, saving), which the estimate adds apart.
        rates = [f / max(s - d["pair_overhead"], s / 2) for f, s in seen.get("rate", []) if s > 0]
        return Device(
            device.type,
            key,
            free_memory(device),
            int(statistics.median(seen["baseline"])) if seen.get("baseline") else d["baseline"],
            int(statistics.median(seen["floor"])) if seen.get("floor") else d["baseline"],
            statistics.median(ratios) if ratios else d["memory_scale"],
            statistics.median(rates) if rates else d["flop_rate"],
            d["pair_overhead"],
            len(ratios) + len(rates),
        )
