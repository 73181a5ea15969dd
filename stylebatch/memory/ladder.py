"""The out-of-memory ladder: a batch or pair that runs out of memory is retried, one rung at a
time, before it fails; a failure never touches another pair or rank (no collectives here).

    as planned  →  unbatched (a batch's members one by one)
                →  smaller L-BFGS history (LBFGS_SMALL_HISTORY; Adam has no history to shrink)
                →  tiled (exact tiling, tiling.py, the largest tile the estimate fits)
                →  failed, alone, with its size and the estimate in the message

Before each retry everything the failed fit held is freed: the runner leaves the `except` block
first (its traceback's frames hold the module, the trainer, the optimizer's state and the
gradients), then `free` collects and empties CUDA's cache and checks that memory is back where it
was: every module and optimizer of the failed fit gone (weak references, on any device) and, on a
GPU, `memory_allocated` back to its level before the fit. Each rung is recorded in the pair's
state record (`memory_fallback`), and its settings are applied again on a resume, so a resumed
pair goes on as it was running rather than running out of memory again first.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import weakref
from typing import Any

import torch

from stylebatch import geometry
from stylebatch.job.pairs import Pair
from stylebatch.memory import autosize, estimate
from stylebatch.memory.calibration import Device

log = logging.getLogger(__name__)
LBFGS_SMALL_HISTORY = 5  # jcjohnson/neural-style's advice at 3620 px: -lbfgs_num_correction 5
# Modules and optimizers of fits (module.py registers them), by serial number, held weakly.
_LIVE: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
_serial = [0]


def track(obj: Any) -> Any:
    """Register a fit's module or optimizer, so `free` can tell that it is gone."""
    _serial[0] += 1
    _LIVE[_serial[0]] = obj
    return obj


def mark() -> int:
    """The serial of the newest tracked object: objects tracked after it belong to later fits."""
    return _serial[0]


def live_objects(since: int = 0) -> int:
    """How many tracked modules and optimizers registered after `since` are still alive."""
    return sum(1 for serial in list(_LIVE.keys()) if serial > since)


def is_oom(e: BaseException) -> bool:
    """CUDA's out-of-memory error, or the CPU allocator's (a RuntimeError: can't allocate memory)."""
    if isinstance(e, torch.OutOfMemoryError):
        return True
    return isinstance(e, RuntimeError) and "can't allocate memory" in str(e)


def free(device: torch.device, baseline: int | None = None, since: int = 0) -> dict[str, Any]:
    """Collect what a failed fit left (call it outside the `except` block) and check it is gone:
    no module or optimizer tracked after `since` alive, and (GPU) allocated memory at `baseline`."""
    gc.collect()
    out: dict[str, Any] = {"live_objects": live_objects(since)}
    if device.type == "cuda":
        torch.cuda.empty_cache()
        out["allocated"] = torch.cuda.memory_allocated(device)
        if baseline is not None:
            out["baseline"] = baseline
    out["freed"] = out["live_objects"] == 0 and (baseline is None or out.get("allocated", 0) <= baseline)
    if not out["freed"]:
        log.warning("memory not back to its level before the fit after an out-of-memory error: %s", out)
    return out


def _tiled(pair: Pair) -> bool:
    cfg = pair.config
    return isinstance(cfg.tile, int) and max(pair.out_size) > cfg.tile


def next_rung(pair: Pair, batch: int, device: torch.device) -> tuple[str, dict[str, Any]] | None:
    """The next rung for a pair (or its batch, `batch` > 1) that ran out of memory: its name and
    the settings it changes, or None when none is left."""
    cfg = pair.config
    if batch > 1:
        return "unbatched", {"batch_size": 1}
    if cfg.optimizer == "lbfgs" and cfg.lbfgs_history > LBFGS_SMALL_HISTORY:
        return "smaller lbfgs_history", {"lbfgs_history": LBFGS_SMALL_HISTORY}
    if not _tiled(pair):
        wh = pair.content_size or pair.out_size  # (only the aspect matters)
        tile = autosize.auto_tile(dataclasses.replace(cfg, tile=None), wh, Device.current(device))
        unit, side = geometry.grid_unit(cfg.layers_used), max(pair.out_size)
        if tile is None:  # the estimate thought it fitted untiled: at least four tiles
            tile = max(unit, side // 2 // unit * unit)
        if tile < side:  # an image of one tile cannot be tiled
            return "tiled", {"tile": tile}
    return None


def with_fallback(pair: Pair, record: dict[str, Any] | None) -> Pair:
    """The pair with the settings its earlier rungs recorded (a resume goes on where it was)."""
    changes = ((record or {}).get("memory_fallback") or {}).get("config") or {}
    if not changes or pair.config is None:
        return pair
    return dataclasses.replace(pair, config=dataclasses.replace(pair.config, **changes))


def failure(pair: Pair, device: torch.device, tried: list[str]) -> str:
    """The message of a pair that ran out of memory on the last rung: size, estimate, what was tried."""
    w, h = pair.out_size or (0, 0)
    memory = Device.current(device)
    tile = pair.config.tile if isinstance(pair.config.tile, int) else None
    est = estimate.estimate(pair.config, pair.content_size or pair.out_size, memory, tile=tile)
    tried_text = f"; tried {', '.join(tried)}" if tried else ""
    return (
        f"out of memory at {w}x{h} (estimated peak {est.peak / 2**30:.1f} GiB, {est.free / 2**30:.1f} GiB "
        f"free on {device.type}){tried_text}; lower 'size'"
    )


def climb(
    pairs: list[Pair],
    device: torch.device,
    state: Any,
    error: str,
    before: dict[str, Any],
) -> tuple[list[list[Any]], list[tuple[Any, str]]]:
    """After an out-of-memory error of `pairs` (a batch, or one pair): free, take the next rung and
    record it. Returns (the batches to run next: each pair alone, the runner reading the recorded
    settings back with `with_fallback`; the pairs that failed, with their message, when no rung is
    left). `before`: measure.observe's figures from before the failed fit."""
    freed = free(device, before.get("start") if device.type == "cuda" else None, before.get("mark", 0))
    rung = next_rung(pairs[0], len(pairs), device)
    failed: list[tuple[Any, str]] = []
    for pair in pairs:
        record = state.read(pair.name) or {}
        fallback = dict(record.get("memory_fallback") or {"rungs": [], "config": {}})
        tried = [r["rung"] for r in fallback["rungs"]]
        if rung is None:
            message = failure(pair, device, tried)
            fallback["rungs"] = [*fallback["rungs"], {"rung": "failed", "error": error, **freed}]
            state.update(pair.name, memory_fallback=fallback)
            failed.append((pair, message))
            continue
        name, changes = rung
        fallback["config"] = {**fallback["config"], **changes}
        fallback["rungs"] = [*fallback["rungs"], {"rung": name, **changes, "error": error, **freed}]
        # The failed attempt does not count: the retry below is the pair's attempt.
        state.undo_attempt(pair.name, memory_fallback=fallback, batch=None)
        log.warning("%s: out of memory (%s); retrying %s %s", pair.name, error, name, changes or "")
    return ([[pair] for pair in pairs] if rung is not None else []), failed
