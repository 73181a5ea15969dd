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
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from stylebatch.atomic import atomic_write

log = logging.getLogger(__name__)


def tensor_checksum(ckpt: dict[str, Any]) -> str:
    """CRC-32 of every tensor a checkpoint holds (shape, dtype and bytes, in key order): torch.load
    checks no CRC of the zip, so bytes overwritten inside tensor data would load as another image."""
    crc = 0

    def walk(item: Any, where: str) -> None:
        nonlocal crc
        if isinstance(item, torch.Tensor):
            t = item.detach().cpu().contiguous()
            crc = zlib.crc32(f"{where}|{t.dtype}|{tuple(t.shape)}".encode(), crc)
            crc = zlib.crc32(t.reshape(-1).view(torch.uint8).numpy().data, crc)
        elif isinstance(item, dict):
            for key in sorted(item, key=str):
                if key != "checksum":
                    walk(item[key], f"{where}/{key}")
        elif isinstance(item, (list, tuple)):
            for i, value in enumerate(item):
                walk(value, f"{where}/{i}")

    walk({k: ckpt.get(k) for k in ("state_dict", "optimizer_states", "stylebatch")}, "")
    return f"crc32:{crc:08x}"


def stamp_checkpoint(part: dict[str, Any], pair_id: str) -> dict[str, Any]:
    """A member's checkpoint, marked with its pair's id, its image's shape and its tensors' checksum."""
    target = part.get("state_dict", {}).get("target")
    info = {**part["stylebatch"], "pair": pair_id, "shape": list(target.shape) if target is not None else None}
    part = {**part, "stylebatch": info}
    info["checksum"] = tensor_checksum(part)
    return part


def checkpoint_problem(ckpt: Any, pair_id: str, shape_at: Callable[[int], tuple[int, int] | None]) -> str | None:
    """Why a loaded checkpoint is not this pair's, as saved; None when it is. `shape_at(pass)`: the
    (height, width) of the pair's image in that pass, or None when it cannot be told."""
    info = ckpt.get("stylebatch") if isinstance(ckpt, dict) else None
    if not isinstance(info, dict) or not isinstance(ckpt.get("state_dict"), dict):
        return "is not a stylebatch checkpoint"
    try:
        scale, evaluations = int(info.get("scale", 0)), int(info["evaluations"])
    except (KeyError, TypeError, ValueError):
        return "has no evaluation count"
    if "pair" not in info or "checksum" not in info:
        return "carries no pair id or checksum (an older version's)"
    if info["pair"] != pair_id:
        return f"belongs to another pair (id {str(info['pair'])[:16]})"
    if info["checksum"] != tensor_checksum(ckpt):
        return "is corrupt (its tensors do not match their checksum)"
    target = ckpt["state_dict"].get("target")
    expected = shape_at(scale) if scale >= 0 else None
    if not isinstance(target, torch.Tensor) or target.dim() != 4 or evaluations < 0:
        return "holds no image"
    if list(target.shape) != info.get("shape") or (expected is not None and tuple(target.shape[-2:]) != expected):
        return f"is of another size ({'x'.join(map(str, target.shape[-2:]))})"
    return None


def vet_checkpoint(
    path: Path, pair_id: str, shape_at: Callable[[int], tuple[int, int] | None]
) -> tuple[dict[str, Any] | None, str | None]:
    """(the pair's checkpoint, None) when it loads and is the pair's own, as saved; otherwise
    (None, why) with the file removed, so the pair starts over; (None, None) when there is none."""
    if not path.exists():
        return None, None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        why = checkpoint_problem(ckpt, pair_id, shape_at)
    except Exception as e:  # noqa: BLE001 (a truncated or corrupt file: any unpickling error)
        why = f"is unreadable ({type(e).__name__})"
    if why is None:
        return ckpt, None
    path.unlink(missing_ok=True)
    return None, f"checkpoint {path.name} {why}"


def read_checkpoint(
    path: Path, pair_id: str = "", shape_at: Callable[[int], tuple[int, int] | None] | None = None
) -> dict[str, Any] | None:
    """The pair's checkpoint if it is its own, as saved; a bad one is removed (the pair then starts over)."""
    ckpt, why = vet_checkpoint(path, pair_id, shape_at or (lambda k: None))
    if why:
        log.warning("%s: %s; the pair restarts from 0", path.parent.name, why)
    return ckpt


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

    def __init__(
        self, paths: list[Path], pair_ids: list[str] | None = None, resumed: dict[str, Any] | None = None
    ) -> None:
        super().__init__()
        self.paths = [Path(p) for p in paths]
        self.pair_ids = pair_ids or [""] * len(self.paths)
        self.resumed = resumed  # the joined checkpoint the engine read (and checked) to choose its resume point

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        parts = split_checkpoint(checkpoint, len(self.paths))
        for member_path, part, pair_id in zip(self.paths, parts, self.pair_ids):
            member_path.parent.mkdir(parents=True, exist_ok=True)
            part = stamp_checkpoint(part, pair_id)
            atomic_write(member_path, lambda fh, part=part: torch.save(part, fh))

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        if self.resumed is not None:  # read once: the files were read to find the resume point
            resumed, self.resumed = self.resumed, None
            return resumed
        parts = [torch.load(p, map_location=map_location or "cpu", weights_only=True) for p in self.paths]
        return join_checkpoints(parts)
