"""How much memory and time a pair will take, from the layer shapes: the model behind `validate`'s
estimates, `size: auto`, `batch_size: auto`, `tile: auto` and the out-of-memory messages.

Memory of one loss evaluation, per image of H x W (fp32), counted from the VGG layers used:

    saved      what autograd keeps for the backward (`saved_bytes`, exact: tests count it with
               torch.autograd.graph.saved_tensors_hooks): the normalised input, each ReLU's output
               (the next convolution's input), max pooling's int64 indices, each style layer's map
               (its Gram's input) unless something else keeps it already, the content error, the
               C x C Gram errors, the total-variation differences
    extra      the backward's own maps on top (`backward_extra`): each Gram's gradient, a full map,
               while the map it belongs to is still kept, and the content gradient's chain
    vectors    image-sized fp32 vectors beside it: the image, its gradient, the optimizer's state
               (Adam 2; L-BFGS 2m + 2, plus the line search's copies while it runs), the inputs

A pass larger than its tile holds one tile's crop (tile + 2 halo) of activations at a time, plus
the whole image's vectors and content target. On CPU the process's resident set adds a baseline
(Python, torch, the network) and the heap's slack; both, and the FLOP rate, are calibrated per
machine from what each run records (calibration.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stylebatch import geometry
from stylebatch.geometry import LAYER_INDEX, LAYER_NAMES, VGG19_CFG
from stylebatch.images import fit_size
from stylebatch.job.pairs import Pair

if TYPE_CHECKING:  # the machine's figures are passed in: the model itself reads no machine
    from stylebatch.memory.calibration import Device

FP32, INT64 = 4, 8
LINE_SEARCH_VECTORS = {"strong_wolfe": 5, None: 2}  # flat gradient and the line search's copies, while it runs


def _channels() -> dict[str, int]:
    out, convs = {}, iter(c for c in VGG19_CFG if c != "M")
    c = 3
    for name in LAYER_NAMES:
        if name.startswith("conv"):
            c = next(convs)
        out[name] = c
    return out


CHANNELS = _channels()


def layer_maps(h: int, w: int, deepest: str) -> list[tuple[str, int, int, int]]:
    """(name, channels, h, w) of every VGG module up to `deepest`, pools flooring odd sides."""
    out = []
    for name in LAYER_NAMES[: LAYER_INDEX[deepest] + 1]:
        lv = geometry.level(name)
        out.append((name, CHANNELS[name], h // 2**lv, w // 2**lv))
    return out


def _deepest(layers: list[str]) -> str:
    return max(layers, key=LAYER_INDEX.__getitem__)


def _map_bytes(maps: dict[str, tuple[int, int, int]], name: str, batch: int, itemsize: int = FP32) -> int:
    c, h, w = maps[name]
    return batch * c * h * w * itemsize


def _kept(names: list[str], i: int) -> bool:
    """Whether autograd keeps module i's output whatever the losses: a ReLU keeps its own output
    for its backward, and a convolution or pool keeps its input."""
    later = names[i + 1] if i + 1 < len(names) else ""
    return names[i].startswith("relu") or later.startswith(("conv", "pool"))


def saved_bytes(
    h: int, w: int, content_layer: str, style_layers: list[str], pooling: str = "max", batch: int = 1, tv: bool = False
) -> int:
    """Bytes of the new tensors autograd saves during one evaluation of module.losses (fp32, not
    counting the network's weights or the module's buffers). Exact: see tests/test_estimate.py."""
    layers = [content_layer, *style_layers]
    deepest = _deepest(layers)
    maps = {name: (c, hh, ww) for name, c, hh, ww in layer_maps(h, w, deepest)}
    total = batch * 3 * h * w * FP32  # the normalised input, conv1_1's input
    kept: set[str] = set()
    names = LAYER_NAMES[: LAYER_INDEX[deepest] + 1]
    for i, name in enumerate(names):
        if _kept(names, i):
            kept.add(name)
        if name.startswith("pool") and pooling == "max":
            total += _map_bytes(maps, name, batch, INT64)  # max pooling's argmax indices
    kept.update(style_layers)  # each Gram keeps its input
    total += sum(_map_bytes(maps, name, batch) for name in kept)
    total += _map_bytes(maps, content_layer, batch)  # the content error (F - T), kept by pow
    total += sum(batch * maps[name][0] ** 2 * FP32 for name in style_layers)  # the Gram errors
    if tv:
        total += batch * 3 * (h * (w - 1) + (h - 1) * w) * FP32  # the neighbour differences
    return total


def backward_extra(
    h: int, w: int, content_layer: str, style_layers: list[str], batch: int = 1, pooling: str = "max"
) -> int:
    """Bytes the backward adds on top of the saved tensors at its peak, its start: the loss nodes
    run first, and each Gram's gradient (a full map) waits for the network's backward to reach its
    layer; where the Gram's input was kept only for the Gram it is freed (a net zero, but the
    largest such map is briefly there twice); the content gradient's chain holds ~4 content maps."""
    deepest = _deepest([content_layer, *style_layers])
    maps = {name: (c, hh, ww) for name, c, hh, ww in layer_maps(h, w, deepest)}
    names = LAYER_NAMES[: LAYER_INDEX[deepest] + 1]

    kept = sum(_map_bytes(maps, n, batch) for n in style_layers if _kept(names, names.index(n)))
    alone = max((_map_bytes(maps, n, batch) for n in style_layers if not _kept(names, names.index(n))), default=0)
    return kept + max(alone, 4 * _map_bytes(maps, content_layer, batch))


def nograd_peak(h: int, w: int, layers: list[str], batch: int = 1) -> int:
    """Bytes of a forward without grad (targets, tiled pass 1): the maps asked for, kept, plus
    the largest module's input and output at once."""
    maps = layer_maps(h, w, _deepest(layers))
    sizes = [batch * c * hh * ww * FP32 for _, c, hh, ww in maps]
    pairs = max(a + b for a, b in zip([batch * 3 * h * w * FP32, *sizes], sizes))
    return pairs + sum(batch * c * hh * ww * FP32 for name, c, hh, ww in maps if name in layers)


def flops(h: int, w: int, layers: list[str], batch: int = 1, backward: bool = True) -> float:
    """Multiply-adds x 2 of one evaluation: every 3x3 convolution (forward, and backward to its
    input: the weights are frozen, so no weight gradient) and each Gram matrix."""
    total = 0.0
    cin = 3
    for name, c, hh, ww in layer_maps(h, w, _deepest(layers)):
        if name.startswith("conv"):
            total += 2 * 9 * cin * c * hh * ww
            cin = c
        if name in layers[1:]:
            total += 2 * c * c * hh * ww
    return total * batch * (2 if backward else 1)


@dataclass(frozen=True)
class PassPlan:
    wh: tuple[int, int]
    evaluations: int
    tile: int | None  # None: untiled


@dataclass
class Estimate:
    peak: int  # bytes: the process's peak (CPU: resident set; GPU: allocated)
    seconds: float
    budget: int  # bytes: memory_fraction x free memory
    free: int
    passes: list[PassPlan]

    @property
    def fits(self) -> bool:
        return self.peak <= self.budget


def vectors(cfg: Any, tiled: bool = False) -> float:
    """Image-sized fp32 vectors alive during an evaluation besides the activations: the image, its
    gradient, the optimizer's state, the starting and content images of the pass (and, tiled,
    the gradient being accumulated)."""
    n = 2 + 3  # image, gradient; content, start image, the joined start
    if cfg.optimizer == "adam":
        n += 2
    else:
        line = None if cfg.lbfgs_line_search == "none" else cfg.lbfgs_line_search
        # A history entry per iteration, at most one per evaluation: a short budget never fills it.
        n += 2 * min(cfg.lbfgs_history, cfg.steps) + 2 + LINE_SEARCH_VECTORS[line]
    n += 1 if cfg.ema_decay > 0 else 0
    n += 1 if tiled else 0
    return n


def pass_peak(cfg: Any, wh: tuple[int, int], tile: int | None, batch: int = 1) -> int:
    """Bytes (allocator level) at the peak of one pass at (w, h)."""
    w, h = wh
    layers, style = cfg.layers_used, list(cfg.style_layers)
    s_side = cfg.style_side(max(w, h))
    style_px = s_side * s_side  # upper bound: the style file's aspect is not known here
    tv = cfg.tv_weight > 0
    image = batch * 3 * h * w * FP32
    content_target = _map_bytes(
        {n: (c, hh, ww) for n, c, hh, ww in layer_maps(h, w, cfg.content_layer)}, cfg.content_layer, batch
    )
    fixed = image * vectors(cfg, geometry.needs_tiling(h, w, tile)) + content_target + batch * 3 * style_px * FP32
    if geometry.needs_tiling(h, w, tile):
        crop = min(h, tile + 2 * geometry.halo(layers)), min(w, tile + 2 * geometry.halo(layers))
        cw, ch = crop[1], crop[0]
        step = saved_bytes(ch, cw, cfg.content_layer, style, cfg.pooling, batch) + backward_extra(
            ch, cw, cfg.content_layer, style, batch, cfg.pooling
        )
        tv_bytes = 4 * image if tv else 0
        evaluation = max(step, nograd_peak(ch, cw, layers, batch)) + tv_bytes
    else:
        evaluation = saved_bytes(h, w, cfg.content_layer, style, cfg.pooling, batch, tv) + backward_extra(
            h, w, cfg.content_layer, style, batch, cfg.pooling
        )
    s_tile = (
        s_side if not geometry.needs_tiling(s_side, s_side, tile) else min(s_side, tile + 2 * geometry.halo(layers))
    )
    targets = nograd_peak(s_tile, s_tile, style, batch) + content_target
    return fixed + max(evaluation, targets)


def pass_plans(cfg: Any, content_wh: tuple[int, int], tile: int | None = None) -> list[PassPlan]:
    ends = cfg.scale_ends
    return [
        PassPlan(fit_size(*content_wh, side), end - start, tile if tile else None)
        for side, start, end in zip(cfg.scale_sizes, [0, *ends], ends)
    ]


def _mean_crops(length: int, tile: int, margin: int, unit: int) -> float:
    """The summed length of the crops along one side, averaged over the grid's offsets."""
    offsets = range(0, tile, unit)
    total = 0
    for o in offsets:
        cuts = geometry.edges(length, tile, o)
        total += sum(min(length, b + margin) - max(0, a - margin) for a, b in zip(cuts, cuts[1:]))
    return total / len(offsets)


def pass_flops(cfg: Any, wh: tuple[int, int], tile: int | None, batch: int = 1) -> float:
    """FLOPs of one evaluation of a pass; tiled: pass 1 (forward) and pass 2 (forward and backward)
    over every crop, averaged over the grid offsets (crops cover ~ the product of the summed crop
    lengths along each side; FLOPs are proportional to pixels up to the pools' floors)."""
    w, h = wh
    if not geometry.needs_tiling(h, w, tile):
        return flops(h, w, cfg.layers_used, batch)
    margin, unit = geometry.halo(cfg.layers_used), geometry.grid_unit(cfg.layers_used)
    area = _mean_crops(h, tile, margin, unit) * _mean_crops(w, tile, margin, unit)
    return 3 * flops(h, w, cfg.layers_used, batch, backward=False) * area / (h * w)


def own_bytes(cfg: Any, content_wh: tuple[int, int], batch: int = 1, tile: int | None = None) -> int:
    """The model's bytes for a pair or batch at its largest pass, before baseline and scale."""
    return max(pass_peak(cfg, p.wh, p.tile, batch) for p in pass_plans(cfg, content_wh, tile))


def work(cfg: Any, content_wh: tuple[int, int], start: int, end: int, batch: int = 1, tile: int | None = None) -> float:
    """FLOPs of evaluations start..end of a pair (or batch), pass by pass."""
    total, first = 0.0, 0
    for p in pass_plans(cfg, content_wh, tile):
        last = first + p.evaluations
        n = max(0, min(end, last) - max(start, first))
        total += n * pass_flops(cfg, p.wh, p.tile, batch)
        first = last
    return total


def batch_seconds(memory: Any, flops: float, member_evaluations: int) -> float:
    """A batch's time under the device's time model (calibration.TimeFit)."""
    return memory.pair_overhead + member_evaluations * memory.step_overhead + flops / memory.flop_rate


def estimate(cfg: Any, content_wh: tuple[int, int], memory: Any, batch: int = 1, tile: int | None = None) -> Estimate:
    """A pair's (or a batch's) peak and time on the device `memory` describes (calibration.Device).
    `tile`: the resolved tile size, None for untiled."""
    plans = pass_plans(cfg, content_wh, tile)
    peak = max(memory.floor, memory.baseline + int(own_bytes(cfg, content_wh, batch, tile) * memory.memory_scale))
    seconds = batch_seconds(memory, work(cfg, content_wh, 0, cfg.steps, batch, tile), cfg.steps * batch)
    return Estimate(peak, seconds, int(memory.free * cfg.memory_fraction), memory.free, plans)


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def _span(seconds: float, spread: float) -> str:
    """'~4.0 min (3.0-5.0 min)': the estimate and its range, the range in the estimate's unit."""
    # The spread is the fit's relative scatter: never below nothing, however noisy the runs were.
    low, high = seconds * max(0.0, 1 - spread), seconds * (1 + spread)
    unit, scale = ("s", 1) if seconds < 90 else ("min", 60) if seconds < 5400 else ("h", 3600)
    digits = 0 if unit == "s" else 1
    return f"~{_duration(seconds)} ({low / scale:.{digits}f}-{high / scale:.{digits}f} {unit})"


def job_seconds(batches: list[list[Any]], memory: Any) -> float:
    """A job's time on one device: its fixed overhead, then batch after batch (each its overhead and
    its members' FLOPs at the calibrated rate)."""
    total = memory.job_overhead
    flops: dict[tuple[int, Any, Any], float] = {}  # once per distinct (config, content size, tile)
    for batch in batches:
        cfg = batch[0].config
        tile = cfg.tile if isinstance(cfg.tile, int) else None
        flop = 0.0
        for p in batch:
            key = (id(p.config), p.content_size, tile)
            if key not in flops:
                flops[key] = work(p.config, p.content_size, 0, p.config.steps, 1, tile)
            flop += flops[key]
        total += batch_seconds(memory, flop, cfg.steps * len(batch))
    return total


def describe_job(pairs: list[Pair], memory: Device, batches: list[list[Pair]] | None = None) -> tuple[list[str], int]:
    """`validate`'s lines: per pair its size, budget, predicted peak and time on this device and
    whether it fits; then the total with its range (pairs run batch after batch on one device;
    `batches`: the plan's grouping, default each pair alone); and how many pairs do not fit."""
    lines, worst, misfits = [], 0, 0
    # A grid has few distinct (config, content size) couples: estimate each once. Pairs share their
    # Config object when their settings are the same (load_job), and hold it alive, so its id is a key.
    estimates: dict[tuple[int, tuple[int, int]], Estimate] = {}
    for pair in pairs:
        cfg, (w, h) = pair.config, pair.out_size
        tile = cfg.tile if isinstance(cfg.tile, int) else None
        key = (id(cfg), pair.content_size)
        est = estimates.get(key)
        if est is None:
            est = estimates[key] = estimate(cfg, pair.content_size, memory, tile=tile)
        worst, misfits = max(worst, est.peak), misfits + (not est.fits)
        tiled = f", tiles of {tile} px" if tile and geometry.needs_tiling(h, w, tile) else ""
        verdict = "fits" if est.fits else f"does NOT fit {_gib(est.budget)} (try tile: auto or a lower size)"
        lines.append(
            f"  {pair.name}: {w}x{h}, {cfg.steps} evaluations, {cfg.optimizer}{tiled}; "
            f"peak ~{_gib(est.peak)}, ~{_duration(est.seconds)} alone: {verdict}"
        )
    total = job_seconds(batches if batches is not None else [[p] for p in pairs], memory)
    if memory.observations:
        calibrated = (
            f"calibrated from {memory.observations} run(s): {memory.flop_rate / 1e9:.0f} GFLOP/s, "
            f"{memory.pair_overhead:.1f} s a pair"
            + (f", {memory.step_overhead * 1e3:.0f} ms an evaluation" if memory.step_overhead > 0 else "")
        )
    elif getattr(memory, "probed", False):
        calibrated = f"not yet calibrated here: {memory.flop_rate / 1e9:.0f} GFLOP/s from a probe of its speed now"
    else:
        calibrated = "not yet calibrated here"
    lines.append(
        f"estimate on {memory.key} ({_gib(memory.free)} free now; {calibrated}): largest peak ~{_gib(worst)}, "
        f"{_span(total, memory.spread)} in all on one device" + (f"; {misfits} pair(s) do not fit" if misfits else "")
    )
    return lines, misfits
