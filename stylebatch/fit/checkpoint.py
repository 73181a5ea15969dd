"""A pair's checkpoint on disk: reading it, and one file per batch member.

A batch of B pairs is one Lightning module, so Lightning hands us one checkpoint dict. It is split
into one file per member (its slice of every per-pair tensor: the image, Adam's moments, the
iterate average, the last losses; counters such as Adam's step are shared and copied) and joined
again on resume. A batch of one is simply an atomic, weights_only checkpoint. Each file is written
atomically in its own directory (Lightning's own save stages the file in $TMPDIR, and across file
systems its final move truncated a good checkpoint: shared/reference/distributed.md §3.3).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from stylebatch.atomic import atomic_write

log = logging.getLogger(__name__)


def read_checkpoint(path: Path) -> dict[str, Any] | None:
    """The pair's checkpoint if it loads; an unreadable one is removed (the pair then starts over)."""
    if not path.exists():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        int(ckpt["stylebatch"]["evaluations"])
        return ckpt
    except Exception as e:  # noqa: BLE001 (corrupt file: any unpickling error)
        log.warning("%s: unreadable checkpoint (%s); starting the pair over", path, e)
        path.unlink(missing_ok=True)
        return None


def position(ckpt: dict[str, Any] | None) -> tuple[int, int] | None:
    """(pass index, evaluations) a checkpoint stands at, or None."""
    if ckpt is None:
        return None
    info = ckpt["stylebatch"]
    return int(info.get("scale", 0)), int(info["evaluations"])


def _per_pair(t: Any, batch: int) -> bool:
    return isinstance(t, torch.Tensor) and t.dim() > 0 and t.shape[0] == batch


def _slice(mapping: dict[str, Any], i: int, batch: int) -> dict[str, Any]:
    return {k: v[i : i + 1].clone() if _per_pair(v, batch) else v for k, v in mapping.items()}


def _cat(mappings: list[dict[str, Any]]) -> dict[str, Any]:
    first = mappings[0]
    return {k: torch.cat([m[k] for m in mappings]) if _per_pair(v, 1) else v for k, v in first.items()}


def split_checkpoint(ckpt: dict[str, Any], batch: int) -> list[dict[str, Any]]:
    """Member i's checkpoint: slice i of every per-pair tensor (image, Adam moments, averages, losses)."""
    if batch == 1:
        return [ckpt]
    out = []
    for i in range(batch):
        part = dict(ckpt)
        part["state_dict"] = _slice(ckpt["state_dict"], i, batch)
        part["optimizer_states"] = [
            {**opt, "state": {p: _slice(st, i, batch) for p, st in opt["state"].items()}}
            for opt in ckpt["optimizer_states"]
        ]
        info = ckpt["stylebatch"]
        part["stylebatch"] = {**info, "losses": _slice(info.get("losses", {}), i, batch)}
        out.append(part)
    return out


def join_checkpoints(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The inverse of split_checkpoint: members at the same pass and evaluation count, concatenated."""
    if len(parts) == 1:
        return parts[0]
    positions = {position(p) for p in parts}
    if len(positions) != 1:
        raise ValueError(f"batch members stand at different (pass, evaluations) {sorted(positions)}")
    first = parts[0]
    joined = dict(first)
    joined["state_dict"] = _cat([p["state_dict"] for p in parts])
    joined["optimizer_states"] = []
    for j, opt in enumerate(first["optimizer_states"]):
        state = {pid: _cat([p["optimizer_states"][j]["state"][pid] for p in parts]) for pid in opt["state"]}
        joined["optimizer_states"].append({**opt, "state": state})
    joined["stylebatch"] = {**first["stylebatch"], "losses": _cat([p["stylebatch"].get("losses", {}) for p in parts])}
    return joined


class MemberCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO for a batch: saving writes each member's slice to its own file,
    atomically (temp file in the same directory, fsync, os.replace); loading joins them again.
    The path Lightning passes is ignored: the members' paths are the checkpoint."""

    def __init__(self, paths: list[Path], resumed: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.paths = [Path(p) for p in paths]
        self.resumed = resumed  # the joined checkpoint the engine read to choose its resume point

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        for member_path, part in zip(self.paths, split_checkpoint(checkpoint, len(self.paths))):
            member_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(member_path, lambda fh, part=part: torch.save(part, fh))

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        if self.resumed is not None:  # read once: the files were read to find the resume point
            resumed, self.resumed = self.resumed, None
            return resumed
        parts = [torch.load(p, map_location=map_location or "cpu", weights_only=True) for p in self.paths]
        return join_checkpoints(parts)
