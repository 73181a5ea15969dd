"""A YAML manifest → the job's list of pairs, each with its effective config and stable id.

    output_dir: ../runs/example        # relative to the manifest (--out overrides, relative to cwd)
    weights: imagenet                  # optional job-level default for --weights
    defaults: {preset: fast, size: 256}
    pairs:
      - {content: images/chelsea.jpg, style: images/great_wave.jpg}
      - {content: images/coffee.jpg, style: images/starry_night.jpg, name: coffee_night, style_weight: 1e4}
    grid:                              # cartesian product; outputs named <content>__<style>__<key>-<value>
      content: [images/chelsea.jpg]
      style: ["images/*.jpg"]
      style_weight: [10, 100, 1000]

Every problem is collected (never the first only), each naming the manifest, the entry and the file.
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stylebatch import config as cfgmod
from stylebatch.config import Config
from stylebatch.errors import ConfigError, ImageError
from stylebatch.images import check_image, fit_size
from stylebatch.state import STATE_DIR, sha256_file
from stylebatch.vgg import LAYER_INDEX, check_weights_path, min_input_size, weights_identity

TOP_KEYS = ("output_dir", "weights", "defaults", "pairs", "grid")
PAIR_KEYS = ("content", "style", "name")


@dataclass
class Pair:
    name: str
    content: Path
    style: Path
    config: Config | None
    entry: str  # where it came from, for messages: "pairs[2]" or "grid[5]"
    problems: list[str] = field(default_factory=list)
    out_size: tuple[int, int] | None = None  # (w, h)
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

    @property
    def layers_used(self) -> list[str]:
        return sorted({name for p in self.valid_pairs for name in p.config.layers_used})


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _expand_paths(base: Path, values: list[Any], where: str, problems: list[str]) -> list[Path]:
    out = []
    for v in values:
        if not isinstance(v, str) or not v:
            problems.append(f"{where}: expected a file path, got {v!r}")
        elif _is_glob(v):
            matches = sorted(Path(m) for m in glob.glob(str(base / v)))
            if not matches:
                problems.append(f"{where}: pattern '{v}' matches no file")
            out += matches
        else:
            out.append(base / v)
    return out


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return "-".join(f"{k}{_format_value(v)}" for k, v in value.items())
    return str(value)


def _check_name(name: Any) -> str | None:
    if not isinstance(name, str) or not name.strip():
        return f"'name' must be non-empty text, got {name!r}"
    if "/" in name or "\\" in name or "\0" in name or name in (".", "..") or ".." in name.split(os.sep):
        return f"'name' {name!r} must not contain '/', '\\' or '..' (outputs stay inside output_dir)"
    if name.startswith("."):
        return f"'name' {name!r} must not start with '.' (reserved for {STATE_DIR})"
    return None


def _raw_entries(data: dict[str, Any], base: Path, src: str, problems: list[str]) -> list[tuple[str, dict[str, Any], list[str]]]:
    """(entry label, raw mapping with content/style paths resolved, varied keys) for pairs and grid."""
    entries = []
    pairs = data.get("pairs") or []
    if not isinstance(pairs, list):
        problems.append(f"{src}: 'pairs' must be a list of {{content, style}} entries")
        pairs = []
    for i, item in enumerate(pairs):
        where = f"{src}: pairs[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: expected a mapping with content and style, got {item!r}")
            continue
        raw = dict(item)
        for key in ("content", "style"):
            value = raw.get(key)
            if value is None:
                problems.append(f"{where}: missing '{key}'")
            elif isinstance(value, list):
                problems.append(f"{where}: '{key}' must be one file path (style blends are not supported yet)")
                raw[key] = None
            elif not isinstance(value, str) or not value:
                problems.append(f"{where}: '{key}' must be a file path, got {value!r}")
                raw[key] = None
            else:
                raw[key] = base / value
        entries.append((f"pairs[{i}]", raw, []))

    grid = data.get("grid")
    if grid is None:
        return entries
    if not isinstance(grid, dict):
        problems.append(f"{src}: 'grid' must be a mapping of content, style and config keys to lists")
        return entries
    axes: dict[str, list[Any]] = {}
    for key, values in grid.items():
        where = f"{src}: grid.{key}"
        if not isinstance(values, list) or not values:
            problems.append(f"{where}: must be a non-empty list of values")
            continue
        if key in ("content", "style"):
            axes[key] = _expand_paths(base, values, where, problems)
        elif key == "name":
            problems.append(f"{where}: grid outputs are named automatically; 'name' is not allowed here")
        else:
            axes[key] = values
    for key in ("content", "style"):
        if key not in grid:
            problems.append(f"{src}: grid: missing '{key}'")
    if "content" not in axes or "style" not in axes:
        return entries
    varied = [k for k, v in axes.items() if k not in ("content", "style") and len(v) > 1]
    keys = list(axes)
    for n, combo in enumerate(itertools.product(*(axes[k] for k in keys))):
        entries.append((f"grid[{n}]", dict(zip(keys, combo)), varied))
    return entries


class _FileChecker:
    """Checks (decode, size) and hashes each distinct file once, however many pairs use it."""

    def __init__(self):
        self._checked: dict[tuple[Path, int], tuple[tuple[int, int] | None, str | None]] = {}
        self._hashes: dict[Path | str, str] = {}

    def size(self, path: Path, max_pixels: int) -> tuple[tuple[int, int] | None, str | None]:
        key = (path, max_pixels)
        if key not in self._checked:
            try:
                self._checked[key] = (check_image(path, max_pixels), None)
            except ImageError as e:
                self._checked[key] = (None, str(e))
        return self._checked[key]

    def weights_id(self, weights: str) -> str:
        if weights not in self._hashes:
            self._hashes[weights] = weights_identity(weights)
        return self._hashes[weights]

    def sha256(self, path: Path) -> str:
        if path not in self._hashes:
            self._hashes[path] = sha256_file(path)
        return self._hashes[path]


def pair_id(content_sha: str, style_sha: str, weights_id: str, cfg: Config) -> str:
    """Covers the inputs' bytes, the network and the pixel-changing config keys; not bookkeeping."""
    payload = {"content": content_sha, "style": style_sha, "weights": weights_id, "config": cfg.identity()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _check_output_dir(path: Path) -> str | None:
    if path.exists() and not path.is_dir():
        return f"output_dir {path}: exists and is not a directory"
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"output_dir {path}: {parent} is a file, so the directory cannot be created"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"output_dir {path}: {parent} is not writable"
    return None


def load_job(
    manifest: str | Path,
    *,
    preset: str | None = None,
    sets: dict[str, Any] | None = None,
    out: str | Path | None = None,
    weights: str | None = None,
    check_files: bool = True,
) -> Job:
    """Parse, resolve and validate a manifest. Never raises for user errors: every problem is
    recorded on the job (structure) or on its pair (config, files), so all can be listed at once."""
    manifest = Path(manifest)
    src = str(manifest)
    problems: list[str] = []
    job = Job(manifest, Path(out) if out else Path("."), weights or "imagenet", [], problems)

    if not manifest.is_file():
        problems.append(f"{src}: manifest not found" if not manifest.exists() else f"{src}: not a file")
        return job
    try:
        text = manifest.read_text(encoding="utf-8")
        data = cfgmod.load_yaml(text, src)
    except UnicodeDecodeError:
        problems.append(f"{src}: not a text (UTF-8) YAML file")
        return job
    except ConfigError as e:
        problems += e.problems
        return job
    if data is None:
        problems.append(f"{src}: the manifest is empty")
        return job
    if not isinstance(data, dict):
        problems.append(f"{src}: the manifest must be a mapping with output_dir and pairs or grid, got {type(data).__name__}")
        return job
    base = manifest.parent
    for key in data:
        if key not in TOP_KEYS:
            problems.append(f"{src}: unknown top-level key '{key}'{cfgmod.did_you_mean(key, TOP_KEYS)}")
    if not data.get("pairs") and not data.get("grid"):
        problems.append(f"{src}: no work: add a 'pairs' list or a 'grid'")

    # Output directory: --out (relative to cwd) beats output_dir (relative to the manifest).
    if out is None:
        out_value = data.get("output_dir")
        if not isinstance(out_value, str) or not out_value:
            problems.append(f"{src}: 'output_dir' must be a directory path (relative to the manifest)")
            out_value = "."
        job.output_dir = Path(os.path.normpath(base / out_value))
    if problem := _check_output_dir(job.output_dir):
        problems.append(f"{src}: {problem}")

    # Weights: --weights beats the manifest's `weights` (a path there is relative to the manifest).
    if weights is None and "weights" in data:
        w = data["weights"]
        if not isinstance(w, str) or not w:
            problems.append(f"{src}: 'weights' must be imagenet, random or a file path")
        else:
            job.weights = w if w in ("imagenet", "random") else str(base / w)
    if problem := check_weights_path(job.weights):
        problems.append(problem)

    # Config layers shared by every pair.
    layers: list[tuple[str, dict[str, Any]]] = []
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        problems.append(f"{src}: 'defaults' must be a mapping of config keys")
        defaults = {}
    defaults = dict(defaults)
    preset_name = preset or defaults.pop("preset", None)
    defaults.pop("preset", None)
    if preset_name is not None:
        try:
            layers.append(cfgmod.load_preset(str(preset_name)))
        except ConfigError as e:
            problems += [f"{src}: {p}" for p in e.problems]
    layers.append((f"{src}: defaults", defaults))
    try:
        cfgmod.resolve(layers)  # report problems in shared layers once, not once per pair
    except ConfigError as e:
        problems += e.problems
        layers = []

    files = _FileChecker()
    for entry, raw, varied in _raw_entries(data, base, src, problems):
        pair_keys = {k: v for k, v in raw.items() if k not in PAIR_KEYS}
        content, style = raw.get("content"), raw.get("style")
        name = raw.get("name")
        if name is None and content is not None and style is not None:
            name = f"{Path(content).stem}__{Path(style).stem}"
            name += "".join(f"__{k}-{_format_value(raw[k])}" for k in varied)
        pair = Pair(str(name), content, style, None, entry)
        where = f"{src}: {pair.label}"
        if problem := _check_name(name):
            pair.problems.append(f"{where}: {problem}")
        try:
            pair.config = cfgmod.resolve(layers + [(where, pair_keys), ("--set", sets or {})])
        except ConfigError as e:
            pair.problems += [p if p.startswith(src) or p.startswith("--set") else f"{where}: {p}" for p in e.problems]
        if content is None or style is None:
            pair.problems.append(f"{where}: needs both content and style")
        job.pairs.append(pair)
        if pair.config is None or content is None or style is None or not check_files:
            continue
        _check_pair_files(pair, files, where, job.weights)

    # Duplicate output names are refused, each entry named.
    seen: dict[str, Pair] = {}
    for pair in job.pairs:
        if pair.name in seen:
            pair.problems.append(f"{src}: {pair.label}: duplicate output name (also {seen[pair.name].entry}); set 'name'")
        else:
            seen[pair.name] = pair
    # A --set problem is the same for every pair: say it once.
    set_problems = sorted({p for pair in job.pairs for p in pair.problems if p.startswith("--set")})
    if set_problems:
        problems += set_problems
        for pair in job.pairs:
            pair.problems = [p for p in pair.problems if not p.startswith("--set")]
    return job


def _check_pair_files(pair: Pair, files: _FileChecker, where: str, weights: str) -> None:
    cfg = pair.config
    sizes = {}
    for role, path in (("content", pair.content), ("style", pair.style)):
        wh, err = files.size(path, cfg.max_pixels)
        if err:
            pair.problems.append(f"{where}: {role}: {err}")
        sizes[role] = wh
    if not all(sizes.values()):
        return
    need = min_input_size(cfg.layers_used)
    pair.out_size = fit_size(*sizes["content"], cfg.size)
    style_size = fit_size(*sizes["style"], cfg.size)
    for role, wh in (("output", pair.out_size), ("style", style_size)):
        if min(wh) < need:
            pair.problems.append(
                f"{where}: size {cfg.size} makes the {role} {wh[0]}x{wh[1]}, but layer "
                f"{max(cfg.layers_used, key=LAYER_INDEX.__getitem__)} needs at least {need} px on each side; "
                "raise 'size'"
            )
            return
    if not pair.problems and check_weights_path(weights) is None:
        wid = files.weights_id(weights)
        pair.id = pair_id(files.sha256(pair.content), files.sha256(pair.style), wid, cfg)
