"""Which pairs share a batch, and which worker runs which batch: one pure function of (pairs,
world size, recorded batches), computed once on rank 0 and broadcast; workers never regroup.

Batching: B pairs optimised as one module, one VGG pass per step, their per-pair losses summed, so
each image gets exactly its own gradient. Members must agree on everything that shapes that pass:
the image size of every coarse-to-fine pass, the layers, pooling, optimizer and learning rate, the
evaluation budget and its passes, precision, the iterate averaging and the checkpoint/log schedule.
They may differ in what the loss carries per image as a (B,) tensor (content, style and TV weights,
per-layer weights, the normalisation) and in their inputs (content, styles and their sizes, colour
control, init, seed). Only Adam batches: its update is elementwise, so a member follows its separate
run up to float rounding; L-BFGS's line search and curvature pairs are global over the parameter,
which would couple the members' step sizes.
"""

from __future__ import annotations

import json
from typing import Any

from stylebatch.geometry import needs_tiling
from stylebatch.images import fit_size
from stylebatch.job.pairs import Pair


def pass_sizes(pair: Pair) -> list[tuple[int, int]]:
    """(w, h) of each coarse-to-fine pass of a pair, the last at `size`."""
    w, h = pair.content_size
    return [fit_size(w, h, side) for side in pair.config.scale_sizes]


def batch_limit(pair: Pair) -> int:
    """How many pairs like this one may share a batch: `batch_size`, fewer where the batch's pixels
    would pass `batch_pixels` (memory grows with the pixels of the whole batch), at least 1."""
    cfg = pair.config
    if not pair.out_size or not isinstance(cfg.batch_size, int):
        return 1  # `auto` is resolved when the job is loaded (autosize.largest_batch); unresolved: alone
    w, h = pair.out_size
    return min(cfg.batch_size, max(1, cfg.batch_pixels // (w * h)))


def batch_key(pair: Pair) -> str | None:
    """Pairs with equal keys may share a batch (see the module doc); None: never batched."""
    cfg = pair.config
    limit = batch_limit(pair)
    if cfg.optimizer != "adam" or limit <= 1 or not getattr(pair, "content_size", None):
        return None
    if isinstance(cfg.tile, int) and needs_tiling(*pair.out_size[::-1], cfg.tile):
        return None  # a tiled pair is already as large as memory allows: it runs alone
    shape = {
        "passes": pass_sizes(pair),
        "ends": cfg.scale_ends,
        "limit": limit,
        "layers": [cfg.content_layer, sorted(cfg.style_layers)],
        "pooling": cfg.pooling,
        "optimizer": [cfg.optimizer, cfg.learning_rate],
        "precision": cfg.precision,
        "ema": cfg.ema_decay,
        "schedule": [cfg.checkpoint_every, cfg.log_every],
    }
    return json.dumps(shape, sort_keys=True)


def group(pairs: list[Pair], recorded: dict[str, list[str]]) -> list[list[Pair]]:
    """Split `pairs` (in plan order) into batches. A recorded batch whose members are all here and
    still batchable together is kept as it was (a resumed pair keeps its companions, so it goes on
    exactly as it started); the rest are chunked by `batch_key`."""
    by_name = {p.name: p for p in pairs}
    batches: list[list[Any]] = []
    taken: set[str] = set()
    for pair in pairs:
        members = recorded.get(pair.name)
        if pair.name in taken or not members or len(members) < 2:
            continue
        keys = {batch_key(by_name[m]) for m in members if m in by_name}
        # Kept only while batching still applies (`batch_size: 1` on a resume turns it off).
        if all(m in by_name and m not in taken for m in members) and len(keys) == 1 and None not in keys:
            batches.append([by_name[m] for m in members])
            taken.update(members)
    # A batch takes the place of its first member, so the plan's order (costliest first) holds and a
    # lone batchable pair runs where it would have unbatched.
    open_batches: dict[str, list[Any]] = {}
    for pair in pairs:
        if pair.name in taken:
            continue
        key = batch_key(pair)
        if key is None:
            batches.append([pair])
            continue
        current = open_batches.get(key)
        if current is None:
            current = open_batches[key] = []
            batches.append(current)
        current.append(pair)
        if len(current) == batch_limit(pair):
            del open_batches[key]
    return batches


def plan(pairs: list[Pair], world: int, recorded: dict[str, list[str]] | None = None) -> list[list[list[str]]]:
    """Batches of pair names for each of `world` workers: batches (see `group`) stay whole and are
    balanced by estimated cost (pixels x evaluations), the costliest first, each to the least-loaded
    worker (ties by name and rank, so the plan is deterministic). In each worker's list the batches
    keep that order."""
    shares: list[list[list[str]]] = [[] for _ in range(world)]
    load = [0] * world
    for batch in sorted(group(pairs, recorded or {}), key=lambda b: (-sum(p.cost for p in b), b[0].name)):
        rank = min(range(world), key=lambda r: (load[r], r))
        shares[rank].append([p.name for p in batch])
        load[rank] += max(sum(p.cost for p in batch), 1)
    return shares
