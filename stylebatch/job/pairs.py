"""A job and its pairs as the loader makes them (`Pair`, `Job`), a pair's id, and where its output goes.

May import: job.config (the types only; nothing that reads files).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from stylebatch.job.config import Config


def output_name(name: str, fmt: str) -> str:
    """The output file's name for a pair called `name` in format `fmt`."""
    return f"{name}.{fmt}"


@dataclass
class Pair:
    name: str
    content: Path
    styles: list[Path]  # every style file: one, or a blend's several (empty when none was given)
    config: Config | None
    entry: str  # where it came from, for messages: "pairs[2]" or "grid[5]"
    problems: list[str] = field(default_factory=list)
    out_size: tuple[int, int] | None = None  # (w, h)
    content_size: tuple[int, int] | None = None  # (w, h) of the content file: fixes every pass's size
    id: str = ""

    @property
    def label(self) -> str:
        return f"{self.entry} '{self.name}'"

    @property
    def cost(self) -> int:
        """Estimated work: output pixels × evaluation budget."""
        if not self.out_size or not self.config:
            return 0
        return self.out_size[0] * self.out_size[1] * self.config.steps


@dataclass
class Job:
    manifest: Path
    output_dir: Path
    weights: str
    pairs: list[Pair]
    problems: list[str]  # job-level problems (structure, output_dir, weights)

    @property
    def valid_pairs(self) -> list[Pair]:
        return [p for p in self.pairs if not p.problems]

    @property
    def all_problems(self) -> list[str]:
        return self.problems + [prob for p in self.pairs for prob in p.problems]

    def output_path(self, pair: Pair) -> Path:
        """Where `pair`'s picture goes: the one place an output's path is made."""
        return self.output_dir / output_name(pair.name, pair.config.format)

    @property
    def layers_used(self) -> list[str]:
        return sorted({name for p in self.valid_pairs for name in p.config.layers_used})


def pair_id(
    content_sha: str, style_sha: str | list[str], weights_id: str, cfg: Config, init_sha: str | None = None
) -> str:
    """Covers the inputs' bytes (every style of a blend, an init image), the network and the
    pixel-changing config keys (blend weights included); not bookkeeping, not the init file's path."""
    identity = cfg.identity()
    if init_sha is not None:
        identity["init"] = f"sha256:{init_sha}"
    payload = {"content": content_sha, "style": style_sha, "weights": weights_id, "config": identity}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
