"""`size: auto`, `tile: auto` and `batch_size: auto` → numbers for this device, from the estimates
(estimate.py) and `memory_fraction` of its free memory. Resolved once, where the job is loaded
(rank 0: the other ranks receive the loaded job), and sticky: a pair that a previous run of the
same job resolved (its `job.json`) keeps that size, so a resume continues at the size it started
even if free memory has changed since. Deleting the job's `.stylebatch/` resolves afresh.

Order: the size first (untiled, or with the fixed `tile` N), then the tile (None where the pair
fits untiled), then the batch (tiled pairs run alone).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from stylebatch import geometry
from stylebatch.images import fit_size
from stylebatch.job import manifest as manifest_loader
from stylebatch.job.config import AUTO_KEYS, Config
from stylebatch.job.pairs import Job
from stylebatch.jobdir.state import JobState
from stylebatch.memory import estimate
from stylebatch.memory.calibration import Device

AUTO_BATCH_MAX = 32  # `batch_size: auto` stops here: past a few pairs a batch gains little (README)
SIZE_STEP = 64  # auto sizes are multiples of this: free memory that varies a little changes nothing


def largest_size(cfg: Config, content_wh: tuple[int, int], memory: Device, limit: int = 16384) -> int:
    """The largest longer side (a multiple of SIZE_STEP, within max_pixels) whose estimate fits
    the budget; SIZE_STEP when none does (validate then says it does not fit)."""
    tile = cfg.tile if isinstance(cfg.tile, int) else None

    def fits(side: int) -> bool:
        c = dataclasses.replace(cfg, size=side)
        w, h = fit_size(*content_wh, side)
        return w * h <= cfg.max_pixels and estimate.estimate(c, content_wh, memory, tile=tile).fits

    lo, hi = 1, limit // SIZE_STEP
    if not fits(SIZE_STEP):
        return SIZE_STEP
    while lo < hi:  # the estimate grows with the size: bisect
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid * SIZE_STEP) else (lo, mid - 1)
    return lo * SIZE_STEP


def auto_tile(cfg: Config, content_wh: tuple[int, int], memory: Device) -> int | None:
    """None where the untiled pair fits; else the largest tile (a multiple of the grid unit) that
    does, or the smallest when none does."""
    if estimate.estimate(cfg, content_wh, memory).fits:
        return None
    unit = geometry.grid_unit(cfg.layers_used)
    side = max(fit_size(*content_wh, cfg.size))
    best = 2 * unit
    for tile in range(2 * unit, side + unit, unit):
        if not estimate.estimate(cfg, content_wh, memory, tile=tile).fits:
            break
        best = tile
    return best


def largest_batch(cfg: Config, content_wh: tuple[int, int], memory: Device) -> int:
    """The largest batch (up to AUTO_BATCH_MAX) whose estimate fits the budget, at least 1."""
    batch = 1
    while batch < AUTO_BATCH_MAX and estimate.estimate(cfg, content_wh, memory, batch=batch + 1).fits:
        batch += 1
    return batch


def auto_size(cfg: Config, content_wh: tuple[int, int], memory: Device) -> tuple[int, str]:
    """`size: auto` (or `auto-up`) for this content on this device, and why: the largest size that
    fits, never past the content's own longer side unless `auto-up` (upscaling invents no detail
    and costs time with the square of the size)."""
    fits_at = largest_size(dataclasses.replace(cfg, size=SIZE_STEP), content_wh, memory)
    own = max(content_wh)
    budget = f"the largest that fits {memory.free * cfg.memory_fraction / 2**30:.1f} GiB"
    if cfg.size == "auto-up" or fits_at < own:
        return fits_at, budget
    return own, "the content's own size (size: auto-up to upscale it)"


def resolve(
    cfg: Config,
    content_wh: tuple[int, int],
    memory: Device,
    previous: dict[str, Any] | None = None,
    why: list[str] | None = None,
) -> Config:
    """`cfg` with its `auto` keys replaced by numbers. `previous`: the pair's config as a previous
    run resolved it, reused where everything else is unchanged; `why` gets a line on the size chosen."""
    if cfg.size in ("auto", "auto-up"):
        same = previous is not None and all(
            json.dumps(previous.get(k), sort_keys=True, default=str) == json.dumps(v, sort_keys=True, default=str)
            for k, v in cfg.identity().items()
            if k not in AUTO_KEYS
        )
        size = previous["size"] if same and isinstance(previous.get("size"), int) else None
        reason = "as the job's earlier run chose it"
        if size is None:
            size, reason = auto_size(cfg, content_wh, memory)
        if why is not None:
            why.append(f"size {cfg.size} → {size} px: {reason}")
        cfg = dataclasses.replace(cfg, size=size)
    if cfg.tile == "auto":
        cfg = dataclasses.replace(cfg, tile=auto_tile(dataclasses.replace(cfg, tile=None), content_wh, memory))
    if cfg.batch_size == "auto":
        tiled = isinstance(cfg.tile, int) and geometry.needs_tiling(*fit_size(*content_wh, cfg.size)[::-1], cfg.tile)
        n = 1 if tiled or cfg.optimizer != "adam" else largest_batch(cfg, content_wh, memory)
        w, h = fit_size(*content_wh, cfg.size)
        # The estimate replaces batch_pixels' rough bound: raise it to let the batch through.
        cfg = dataclasses.replace(cfg, batch_size=n, batch_pixels=max(cfg.batch_pixels, n * w * h))
    return cfg


def resolver(
    output_dir: Path, device: str | torch.device | None = None
) -> Callable[[str, Config, tuple[int, int]], Config]:
    """resolve(name, cfg, content_wh) for one job: this device's memory, queried once and only if a
    pair asks for `auto`; the previous resolution from the job's job.json."""
    cache: dict[str, Any] = {}
    notes: dict[str, str] = {}  # pair name -> what its `size: auto` chose

    def memory() -> Device:
        if "memory" not in cache:
            cache["memory"] = Device.current(device or ("cuda:0" if torch.cuda.is_available() else "cpu"))
        return cache["memory"]

    def previous(name: str) -> dict[str, Any] | None:
        if "job" not in cache:
            try:
                data = json.loads(JobState(output_dir).job_file.read_text())
                cache["job"] = {p["name"]: p.get("config") or {} for p in data.get("pairs", [])}
            except (OSError, ValueError, KeyError, TypeError):
                cache["job"] = {}
        return cache["job"].get(name)

    def resolve_pair(name: str, cfg: Config, content_wh: tuple[int, int]) -> Config:
        if not any(getattr(cfg, k) in ("auto", "auto-up") for k in AUTO_KEYS):
            return cfg
        why: list[str] = []
        resolved = resolve(cfg, content_wh, memory(), previous(name), why)
        if why:
            notes[name] = why[0]
        return resolved

    resolve_pair.notes = notes  # type: ignore[attr-defined]
    return resolve_pair


def load_job(manifest: str | Path, *, device: str | torch.device | None = None, **kwargs: Any) -> Job:
    """`job.manifest.load_job` with `auto` settings resolved for `device`'s memory (default: the
    first GPU, else the CPU): what `validate` and `run` load."""
    return manifest_loader.load_job(manifest, resolve_auto=lambda out: resolver(out, device), **kwargs)
