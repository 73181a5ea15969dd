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

A style blend is a list in a pair (`style: [a.jpg, b.jpg]`, weights in `style_blend`) and, in a grid,
one entry of the style list written `{blend: [a.jpg, b.jpg], weights: [0.7, 0.3]}` (a plain list there
means alternatives); its output is named `<content>__<a>+<b>` (with the weights when given).

Every problem is collected (never the first only), each naming the manifest, the entry and the file.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import itertools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stylebatch import autosize
from stylebatch import config as cfgmod
from stylebatch.config import Config
from stylebatch.errors import ConfigError, ImageError
from stylebatch.images import check_image, fit_size
from stylebatch.state import INVALID_PREFIX, STATE_DIR, sha256_file
from stylebatch.values import path_problem, shown, text_problem
from stylebatch.vgg import LAYER_INDEX, check_weights_path, min_input_size, weights_identity

TOP_KEYS = ("output_dir", "weights", "defaults", "pairs", "grid")
PAIR_KEYS = ("content", "style", "name")
MAX_NAME_BYTES = 200  # file systems allow 255 bytes; the temp file's name adds a prefix and a suffix
# Never an output directory: the file system's root and the system's own directories (a job writes
# outputs and its state there), nor anything inside the trees that belong to the system alone.
SYSTEM_DIRS = {"/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/opt", "/proc",
               "/root", "/run", "/sbin", "/srv", "/sys", "/usr", "/var"}
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/sbin", "/sys", "/usr")


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

    @property
    def layers_used(self) -> list[str]:
        return sorted({name for p in self.valid_pairs for name in p.config.layers_used})


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
URL_HINT = "URLs are not supported; download the file first"
URLS = "\0urls"  # a pair entry's URLs, carried from _raw_entries to load_job (never a config key)


def is_url(value: Any) -> bool:
    """`https://...`, `s3://...`: not a local path (it would become a mangled 'file not found')."""
    return isinstance(value, str) and bool(_URL.match(value))


def _expand_paths(base: Path, values: list[Any], where: str, problems: list[str]) -> list[Path]:
    out = []
    for v in values:
        if not isinstance(v, str) or not v:
            problems.append(f"{where}: expected a file path, got {shown(v)}")
        elif is_url(v):
            problems.append(f"{where}: {shown(v)}: {URL_HINT}")
        elif problem := path_problem(v):
            problems.append(f"{where}: {shown(v)} {problem}")
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
    if isinstance(value, str) and ("/" in value or "\\" in value):  # a file (init: images/x.jpg): its stem
        return Path(value).stem
    return str(value)


def _check_name(name: Any) -> str | None:
    if not isinstance(name, str) or not name.strip():
        return f"'name' must be non-empty text, got {shown(name)}"
    if problem := text_problem(name):
        return f"'name' {shown(name)} {problem}"
    if "/" in name or "\\" in name or "\0" in name or name in (".", "..") or ".." in name.split(os.sep):
        return f"'name' {shown(name)} must not contain '/', '\\' or '..' (outputs stay inside output_dir)"
    if name.startswith("."):
        return f"'name' {shown(name)} must not start with '.' (reserved for {STATE_DIR})"
    if name.startswith(INVALID_PREFIX):
        return f"'name' {shown(name)} must not start with '{INVALID_PREFIX}' (reserved for the records of invalid entries)"
    size = len(name.encode("utf-8", "surrogateescape"))
    if size > MAX_NAME_BYTES:
        return f"'name' is {size} bytes long, at most {MAX_NAME_BYTES} fit a file name"
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
            problems.append(f"{where}: expected a mapping with content and style, got {shown(item)}")
            continue
        raw = dict(item)
        for key in ("content", "style"):
            value = raw.get(key)
            if value is None:
                problems.append(f"{where}: missing '{key}'")
            elif is_url(value) or (isinstance(value, list) and any(is_url(v) for v in value)):
                # Said once for the pair (load_job); the path stays, so the pair keeps its name.
                raw.setdefault(URLS, []).append(f"'{key}' {value!r}")
                raw[key] = base / (value if isinstance(value, str) else value[0])
            elif isinstance(value, list) and key == "style":  # a blend: weights in style_blend
                if len(value) < 1 or not all(isinstance(v, str) and v for v in value):
                    problems.append(f"{where}: 'style' as a blend must be a list of file paths, got {shown(value)}")
                    raw[key] = None
                elif bad := next((v for v in value if path_problem(v)), None):
                    problems.append(f"{where}: 'style' {shown(bad)} {path_problem(bad)}")
                    raw[key] = None
                else:
                    raw[key] = [base / v for v in value] if len(value) > 1 else base / value[0]
            elif isinstance(value, list):
                problems.append(f"{where}: '{key}' must be one file path")
                raw[key] = None
            elif not isinstance(value, str) or not value:
                problems.append(f"{where}: '{key}' must be a file path, got {shown(value)}")
                raw[key] = None
            elif problem := path_problem(value):
                problems.append(f"{where}: '{key}' {shown(value)} {problem}")
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
        if key == "style":
            axes[key] = []
            for i, v in enumerate(values):
                axes[key] += [_grid_blend(base, v, f"{where}[{i}]", problems)] if isinstance(v, dict) else \
                    _expand_paths(base, [v], where, problems)
        elif key == "content":
            axes[key] = _expand_paths(base, values, where, problems)
        elif key == "name":
            problems.append(f"{where}: grid outputs are named automatically; 'name' is not allowed here")
        elif key not in cfgmod.FIELDS:  # said once here, not once per grid entry
            problems.append(f"{where}: unknown key '{key}'{cfgmod.did_you_mean(key, [*PAIR_KEYS, *cfgmod.FIELDS])}")
        else:
            axes[key] = values
    for key in ("content", "style"):
        if key not in grid:
            problems.append(f"{src}: grid: missing '{key}'")
    if "style" in axes:
        axes["style"] = [v for v in axes["style"] if v is not None]
        if not axes["style"]:
            del axes["style"]
    if "content" not in axes or "style" not in axes:
        return entries
    varied = [k for k, v in axes.items() if k not in ("content", "style") and len(v) > 1]
    keys = list(axes)
    for n, combo in enumerate(itertools.product(*(axes[k] for k in keys))):
        raw = dict(zip(keys, combo))
        if isinstance(raw["style"], _Blend):
            blend = raw["style"]
            raw["style"] = blend.paths
            if blend.weights is not None:
                raw["style_blend"] = blend.weights
        entries.append((f"grid[{n}]", raw, varied))
    return entries


@dataclass
class _Blend:
    """A grid's `{blend: [a, b], weights: [...]}` style entry: one value of the style axis."""

    paths: list[Path]
    weights: list[Any] | None


def _grid_blend(base: Path, value: dict[str, Any], where: str, problems: list[str]) -> _Blend | None:
    extra = sorted(set(value) - {"blend", "weights"})
    paths, weights = value.get("blend"), value.get("weights")
    if extra:
        problems.append(f"{where}: a blend entry takes 'blend' and 'weights', not {extra}")
    elif not isinstance(paths, list) or len(paths) < 2 or not all(isinstance(p, str) and p for p in paths):
        problems.append(f"{where}: 'blend' must list at least two style files, got {shown(paths)}")
    elif any(is_url(p) for p in paths):
        problems.append(f"{where}: 'blend' {shown(paths)}: {URL_HINT}")
    elif bad := next((p for p in paths if path_problem(p)), None):
        problems.append(f"{where}: 'blend' {shown(bad)} {path_problem(bad)}")
    elif weights is not None and (not isinstance(weights, list) or len(weights) != len(paths)):
        problems.append(f"{where}: 'weights' must list one weight per style of the blend, got {shown(weights)}")
    else:
        return _Blend([base / p for p in paths], weights)
    return None


def _style_stem(style: Path | list[Path], weights: Any) -> str:
    """`a` for one style; `a+b` for a blend, `a-0.7+b-0.3` when its weights were given."""
    if not isinstance(style, list):
        return Path(style).stem
    ok = isinstance(weights, list) and len(weights) == len(style) and all(
        isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights) and sum(weights) > 0
    if not ok:
        return "+".join(p.stem for p in style)
    return "+".join(f"{p.stem}-{w / sum(weights):g}" for p, w in zip(style, weights))


class _FileChecker:
    """Checks (decode, size) and hashes each distinct file once, however many pairs use it."""

    def __init__(self, auto: Any = None):
        self.auto = auto or (lambda name, cfg, wh: cfg)  # resolves `auto` keys (autosize.resolver)
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


def pair_id(content_sha: str, style_sha: str | list[str], weights_id: str, cfg: Config,
            init_sha: str | None = None) -> str:
    """Covers the inputs' bytes (every style of a blend, an init image), the network and the
    pixel-changing config keys (blend weights included); not bookkeeping, not the init file's path."""
    identity = cfg.identity()
    if init_sha is not None:
        identity["init"] = f"sha256:{init_sha}"
    payload = {"content": content_sha, "style": style_sha, "weights": weights_id, "config": identity}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_output_dir(path: Path) -> str | None:
    """Why `path` cannot be the output directory, or None."""
    if problem := path_problem(str(path)):
        return f"output_dir {shown(str(path))} {problem}"
    try:
        return _output_dir_problem(path)
    except (OSError, ValueError) as e:  # a name too long, a NUL byte, a loop of links...
        return f"output_dir {shown(str(path))}: unusable ({e})"


def _output_dir_problem(path: Path) -> str | None:
    if "\0" in str(path):
        return f"output_dir {str(path)!r}: unusable (contains a NUL byte)"
    real = str(Path(os.path.abspath(path)).resolve())
    if real in SYSTEM_DIRS or any(real.startswith(tree + "/") for tree in SYSTEM_TREES):
        shown_as = f"{path} (that is {real})" if str(path) != real else str(path)
        return (f"output_dir {shown_as}: the file system's root or a system directory; "
                "use a directory of your own")
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
    device: str | None = None,
) -> Job:
    """Parse, resolve and validate a manifest. Never raises for user errors: every problem is
    recorded on the job (structure) or on its pair (config, files), so all can be listed at once.
    `device`: where `auto` sizes are measured for (default: the first GPU, else the CPU)."""
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
    if problem := check_output_dir(job.output_dir):
        problems.append(f"{src}: {problem}")

    # Weights: --weights beats the manifest's `weights` (a path there is relative to the manifest).
    if weights is None and "weights" in data:
        w = data["weights"]
        if not isinstance(w, str) or not w:
            problems.append(f"{src}: 'weights' must be imagenet, random or a file path")
        elif problem := path_problem(w):
            problems.append(f"{src}: 'weights' {shown(w)} {problem}")
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

    files = _FileChecker(autosize.resolver(job.output_dir, device))  # issue 16: size/tile/batch_size auto
    for entry, raw, varied in _raw_entries(data, base, src, problems):
        urls = raw.pop(URLS, [])
        pair_keys = {k: v for k, v in raw.items() if k not in PAIR_KEYS}
        unknown = [k for k in pair_keys if k not in cfgmod.FIELDS] if entry.startswith("pairs") else []
        content, style = raw.get("content"), raw.get("style")
        name = raw.get("name")
        if name is None and content is not None and style is not None:
            name = f"{Path(content).stem}__{_style_stem(style, raw.get('style_blend'))}"
            name += "".join(f"__{k}-{_format_value(raw[k])}" for k in varied)
        styles = list(style) if isinstance(style, list) else [style] if style is not None else []
        pair = Pair(str(name), content, styles, None, entry)
        where = f"{src}: {pair.label}"
        given_but_bad = [k for k in ("content", "style") if k in raw and raw[k] is None]  # already said why
        if (name is not None or not given_but_bad) and (problem := _check_name(name)):
            pair.problems.append(f"{where}: {problem}")
        for key in unknown:  # suggest pair keys (content, style, name) as well as config keys
            pair.problems.append(f"{where}: unknown key '{key}'{cfgmod.did_you_mean(key, [*PAIR_KEYS, *cfgmod.FIELDS])}")
            del pair_keys[key]
        try:
            pair.config = cfgmod.resolve(layers + [(where, pair_keys), ("--set", sets or {})])
        except ConfigError as e:
            pair.problems += [p if p.startswith(src) or p.startswith("--set") else f"{where}: {p}" for p in e.problems]
        if pair.config is not None and is_url(pair.config.init):
            pair.problems.append(f"{where}: 'init' {shown(pair.config.init)}: {URL_HINT}")
            pair.config = dataclasses.replace(pair.config, init="content")  # reported; nothing more to check
        elif pair.config is not None and pair.config.init not in cfgmod.INIT_MODES and (
                problem := path_problem(pair.config.init)):
            pair.problems.append(f"{where}: 'init' {shown(pair.config.init)} {problem}")
            pair.config = None
        if pair.config is not None and pair.config.init not in cfgmod.INIT_MODES:
            # An init image, like content and style, is relative to the manifest.
            pair.config = dataclasses.replace(pair.config, init=os.path.abspath(base / pair.config.init))
        if pair.config is not None and style is not None and (problem := _blend_problem(pair)):
            pair.problems.append(f"{where}: {problem}")
        if (content is None or style is None) and not given_but_bad:
            pair.problems.append(f"{where}: needs both content and style")
        pair.problems += [f"{where}: {url}: {URL_HINT}" for url in urls]
        job.pairs.append(pair)
        if pair.config is None or content is None or style is None or urls or not check_files:
            continue
        _check_pair_files(pair, files, where, job.weights)

    # Pooling is job-level: the pairs of a job share one network (and may be optimised as one batch).
    poolings = sorted({p.config.pooling for p in job.pairs if p.config is not None})
    if len(poolings) > 1:
        problems.append(f"{src}: 'pooling' is job-level, but the pairs use {', '.join(poolings)}; "
                        "set it once in defaults, the preset or --set")

    # An output must never overwrite an input (output_dir next to the images, a name like an input's).
    inputs = {_resolved(p) for pair in job.pairs for p in (pair.content, *pair.styles, *_init_file(pair))
              if p is not None} - {None}
    for pair in job.pairs:
        if pair.config is None or _check_name(pair.name):
            continue
        output = job.output_dir / f"{pair.name}.{getattr(pair.config, 'format', 'png')}"
        if _resolved(output) in inputs:
            pair.problems.append(f"{src}: {pair.label}: output {output} would overwrite an input image; "
                                 "set 'name' or another output_dir")

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


def _blend_problem(pair: Pair) -> str | None:
    n, blend = len(pair.styles), pair.config.style_blend
    if blend is not None and len(blend) != n:
        return f"'style_blend' has {len(blend)} weight(s) for {n} style file(s)"
    return None


def _init_file(pair: Pair) -> list[Path]:
    """The pair's init image, as a one-item list, or [] for content/noise/style_stats."""
    if pair.config is None or pair.config.init in cfgmod.INIT_MODES:
        return []
    return [Path(pair.config.init)]


def _resolved(path: Path) -> Path | None:
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError):
        return None


def _check_pair_files(pair: Pair, files: _FileChecker, where: str, weights: str) -> None:
    cfg = pair.config
    sizes = {}
    styles = pair.styles
    roles = [("content", pair.content)] + [("style" if len(styles) == 1 else f"style[{i}]", p)
                                             for i, p in enumerate(styles)]
    roles += [("init", p) for p in _init_file(pair)]
    for role, path in roles:
        wh, err = files.size(path, cfg.max_pixels)
        if err:
            pair.problems.append(f"{where}: {role}: {err}")
        sizes[role] = wh
    if not all(sizes.values()):
        return
    need = min_input_size(cfg.layers_used)
    pair.content_size = sizes["content"]
    declared = cfg
    cfg = pair.config = files.auto(pair.name, cfg, sizes["content"])  # issue 16: `auto` → numbers
    if problems := cfgmod.cross_check(cfg):
        pair.problems += [f"{where}: {p}" for p in problems]
        return
    pair.out_size = fit_size(*sizes["content"], cfg.size)
    # The largest images are those of the final pass; the smallest, those of the first.
    first, last = cfg.scale_sizes[0], cfg.size
    style_roles = [r for r, _ in roles if r.startswith("style")]
    biggest = [("output", pair.out_size)] + [(r, fit_size(*sizes[r], cfg.style_side(last))) for r in style_roles]
    smallest = [("output", fit_size(*sizes["content"], first))]
    smallest += [(r, fit_size(*sizes[r], cfg.style_side(first))) for r in style_roles]
    for role, wh in biggest:
        if wh[0] * wh[1] > cfg.max_pixels:
            pair.problems.append(
                f"{where}: size {cfg.size} makes the {role} {wh[0]}x{wh[1]} = {wh[0] * wh[1]:,} pixels, "
                f"above max_pixels {cfg.max_pixels:,}; lower 'size'"
            )
            return
    for role, wh in smallest:
        if min(wh) < need:
            at = f"size {cfg.size}" if first == last else f"the first scale ({first})"
            pair.problems.append(
                f"{where}: {at} makes the {role} {wh[0]}x{wh[1]}, but layer "
                f"{max(cfg.layers_used, key=LAYER_INDEX.__getitem__)} needs at least {need} px on each side; "
                "raise 'size'" + (" or the first scale" if first != last else "")
            )
            return
    if not pair.problems and check_weights_path(weights) is None:
        wid = files.weights_id(weights)
        style_sha = [files.sha256(p) for p in styles] if len(styles) > 1 else files.sha256(styles[0])
        init_sha = files.sha256(Path(cfg.init)) if _init_file(pair) else None
        # `tile: auto` stays auto in the id (it changes rounding only, and resolves per device).
        pair.id = pair_id(files.sha256(pair.content), style_sha, wid, dataclasses.replace(cfg, tile=declared.tile), init_sha)
