"""A job and its pairs as the loader makes them (`Pair`, `Job`), a pair's id, and where its output goes.

May import: job.config (the types only; nothing that reads files), images.output_extension.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from stylebatch.images import output_extension
from stylebatch.job.config import Config


def output_name(name: str, fmt: str) -> str:
    """The output file's name for a pair called `name` in format `fmt` (png16 → `.png`, tiff16 → `.tif`)."""
    return f"{name}.{output_extension(fmt)}"


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
    # What the check for the user's files saw when the record said done for this id and encoding and
    # the output had its recorded stamp: (the record file's stamp, the output's stamp). The run's
    # start takes the pair as done when both stamps are unchanged, without reading the record again.
    settled: tuple | None = None

    @property
    def label(self) -> str:
        return f"{self.entry} '{self.name}'" if self.name else self.entry  # no name: its content is missing

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
    notes: list[str] = field(default_factory=list)  # what `auto` settings chose, for validate and run

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


def config_identity_json(cfg: Config) -> str:
    """The config's part of a pair id: its pixel-changing keys as sorted JSON."""
    return json.dumps(cfg.identity(), sort_keys=True, default=str)


def pair_id(
    content_sha: str,
    style_sha: str | list[str],
    weights_id: str,
    cfg: Config,
    init_sha: str | None = None,
    config_json: str | None = None,
) -> str:
    """Covers the inputs' bytes (every style of a blend, an init image), the network and the
    pixel-changing config keys (blend weights included); not bookkeeping, not the init file's path.

    The hash is of json.dumps({"config", "content", "style", "weights"}, sort_keys=True), built here
    from the config's own JSON (`config_json`, `config_identity_json(cfg)` when not given, computed
    once per distinct config by FileChecker): the same bytes, so the same ids as ever."""
    if init_sha is not None:
        identity = cfg.identity()
        identity["init"] = f"sha256:{init_sha}"
        config_json = json.dumps(identity, sort_keys=True, default=str)
    elif config_json is None:
        config_json = config_identity_json(cfg)
    dumps = json.dumps
    text = (
        f'{{"config": {config_json}, "content": {dumps(content_sha)}, '
        f'"style": {dumps(style_sha, default=str)}, "weights": {dumps(weights_id)}}}'
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]
