"""Batched optimisation: several same-size Adam pairs share one module and one VGG pass.

Why only Adam: Adam's update is elementwise, so with per-pair losses *summed* each image gets
exactly its own gradient and its own moments: a batch of B pairs follows B separate runs (up to
float rounding of batched convolutions). L-BFGS is not batched: its line search and curvature
pairs are global over the parameter, so batching would couple the pairs' step sizes.

Checkpoints stay per pair: a batch's Lightning checkpoint is split into one file per member
(its slice of the image and of Adam's moments; the step counters are shared), and a batch is
re-assembled from its members' files on resume. Each member's record keeps the batch membership,
so a resumed pair is regrouped with the same companions and reproduces the same numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from torch import nn

from stylebatch.atomic import atomic_write


def batch_limit(pair: Any) -> int:
    """How many pairs like this one may share a batch: `batch_size`, fewer where the batch's pixels
    would pass `batch_pixels` (memory grows with the pixels of the whole batch), at least 1."""
    cfg = pair.config
    if not pair.out_size:
        return 1
    w, h = pair.out_size
    return min(cfg.batch_size, max(1, cfg.batch_pixels // (w * h)))


def batch_key(pair: Any) -> str | None:
    """Pairs with equal keys may share a module: Adam, same output size, same evaluation budget and
    pixel-changing settings except the seed (each image has its own noise). None: never batched."""
    cfg = pair.config
    limit = batch_limit(pair)
    if cfg.optimizer != "adam" or limit <= 1 or getattr(cfg, "scales", None):
        return None
    ident = {k: v for k, v in cfg.identity().items() if k != "seed"}
    return json.dumps([pair.out_size, limit, ident], sort_keys=True, default=str)


def group(pairs: list[Any], recorded: dict[str, list[str]]) -> list[list[Any]]:
    """Split `pairs` (in plan order) into batches. A recorded batch whose members are all here is
    kept as it was (a resumed pair keeps its companions); the rest are chunked by `batch_key`."""
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


def stack(members: list[Any]) -> Any:
    """One module for a batch, from member modules built the usual way (each computed its own
    targets): concatenate their images, targets, normalisations and averages along the batch."""
    first = members[0]
    if len(members) == 1:
        return first
    cat = lambda name: torch.cat([getattr(m, name) for m in members])  # noqa: E731
    for name, _ in list(first.named_buffers(recurse=False)):
        if getattr(first, name).dim() > 0:
            setattr(first, name, cat(name))
    first.layer_weights = {k: torch.cat([m.layer_weights[k] for m in members]) for k in first.layer_weights}
    first.target = nn.Parameter(torch.cat([m.target.detach() for m in members]))
    return first


def _per_pair(t: Any, batch: int) -> bool:
    return isinstance(t, torch.Tensor) and t.dim() > 0 and t.shape[0] == batch


def split_checkpoint(ckpt: dict[str, Any], batch: int) -> list[dict[str, Any]]:
    """Member i's checkpoint: slice i of every per-pair tensor (image, Adam moments, averages)."""
    if batch == 1:
        return [ckpt]
    out = []
    for i in range(batch):
        part = dict(ckpt)
        part["state_dict"] = {k: v[i : i + 1].clone() if _per_pair(v, batch) else v for k, v in ckpt["state_dict"].items()}
        part["optimizer_states"] = [
            {**opt, "state": {p: {k: v[i : i + 1].clone() if _per_pair(v, batch) else v for k, v in st.items()}
                              for p, st in opt["state"].items()}}
            for opt in ckpt["optimizer_states"]
        ]
        out.append(part)
    return out


def join_checkpoints(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The inverse of split_checkpoint: members at the same evaluation count, concatenated."""
    if len(parts) == 1:
        return parts[0]
    counts = {p["stylebatch"]["evaluations"] for p in parts}
    if len(counts) != 1:
        raise ValueError(f"batch members are at different evaluation counts {sorted(counts)}")
    first = parts[0]
    joined = dict(first)
    joined["state_dict"] = {
        k: torch.cat([p["state_dict"][k] for p in parts]) if _per_pair(v, 1) else v
        for k, v in first["state_dict"].items()
    }
    joined["optimizer_states"] = []
    for j, opt in enumerate(first["optimizer_states"]):
        state = {}
        for pid, st in opt["state"].items():
            state[pid] = {k: torch.cat([p["optimizer_states"][j]["state"][pid][k] for p in parts])
                          if _per_pair(v, 1) else v for k, v in st.items()}
        joined["optimizer_states"].append({**opt, "state": state})
    return joined


class MemberCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO for a batch: saving writes each member's slice to its own file,
    atomically (temp file in the same directory, fsync, os.replace); loading joins them again.
    With one member it is simply an atomic, weights_only checkpoint IO."""

    def __init__(self, paths: list[Path]):
        super().__init__()
        self.paths = [Path(p) for p in paths]

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        for member_path, part in zip(self.paths, split_checkpoint(checkpoint, len(self.paths))):
            member_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(member_path, lambda fh, part=part: torch.save(part, fh))

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        parts = [torch.load(p, map_location=map_location or "cpu", weights_only=True) for p in self.paths]
        return join_checkpoints(parts)
