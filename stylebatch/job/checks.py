"""Checks of a manifest's pairs and the job's output directory: names, output directories, the
input files (decoded, sized, hashed once each) and the stable pair id they give."""

from __future__ import annotations

import dataclasses
import os
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stylebatch.errors import ImageError
from stylebatch.geometry import LAYER_INDEX, min_input_size
from stylebatch.images import check_image, fit_size
from stylebatch.job import config as cfgmod
from stylebatch.job.config import Config
from stylebatch.job.pairs import Pair, config_identity_json, pair_id
from stylebatch.job.values import path_problem, shown, text_problem
from stylebatch.job.weights import check_weights_path, weights_identity
from stylebatch.jobdir.state import INVALID_PREFIX, STATE_DIR, sha256_file

MAX_NAME_BYTES = 200  # file systems allow 255 bytes; the temp file's name adds a prefix and a suffix
# Never an output directory: the file system's root and the system's own directories (a job writes
# outputs and its state there), nor anything inside the trees that belong to the system alone.
SYSTEM_DIRS = {
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/srv",
    "/sys",
    "/usr",
    "/var",
}
SYSTEM_TREES = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/sbin",
    "/sys",
    "/usr",
    # The system's own data under /var and /run: the package manager's database and lists, the
    # journal and logs, caches, spools, and the per-user runtime folders (/run/user/<uid>).
    "/var/lib",
    "/var/cache",
    "/var/log",
    "/var/spool",
    "/var/mail",
    "/run",
)
PRIVATE_DIRS = (".ssh", ".gnupg")  # a user's keys: never an output directory, nor anything inside one


def _name_char_problem(name: str) -> str | None:
    """A character an output name must not hold, though a path may: one that breaks or hides in a
    line (U+2028, U+2029), looks like a space but is not one (NBSP and the other spaces), or has
    no meaning of its own (private use, unassigned)."""
    if name.isascii():
        return None
    for ch in name:
        category = unicodedata.category(ch)
        if category in ("Zl", "Zp") or (category == "Zs" and ch != " "):
            return (
                f"contains U+{ord(ch):04X} ({unicodedata.name(ch, 'a separator')}), which shows as a space or a break"
            )
        if category in ("Co", "Cn"):
            kind = "a private-use character" if category == "Co" else "an unassigned code point"
            return f"contains U+{ord(ch):04X}, {kind}"
    return None


def check_name(name: Any) -> str | None:
    if not isinstance(name, str) or not name.strip():
        return f"'name' must be non-empty text, got {shown(name)}"
    if problem := text_problem(name) or _name_char_problem(name):
        return f"'name' {shown(name)} {problem}"
    if "/" in name or "\\" in name or "\0" in name or name in (".", "..") or ".." in name.split(os.sep):
        return f"'name' {shown(name)} must not contain '/', '\\' or '..' (outputs stay inside output_dir)"
    if name.startswith("."):
        return f"'name' {shown(name)} must not start with '.' (reserved for {STATE_DIR})"
    if name.startswith(INVALID_PREFIX):
        return (
            f"'name' {shown(name)} must not start with '{INVALID_PREFIX}' (reserved for the records of invalid entries)"
        )
    size = len(name.encode("utf-8", "surrogateescape"))
    if size > MAX_NAME_BYTES:
        return f"'name' is {size} bytes long, at most {MAX_NAME_BYTES} fit a file name"
    return None


# Turns a pair's `auto` settings into numbers: (pair name, config, content size) -> config.
AutoResolver = Callable[[str, Config, tuple[int, int]], Config]


class FileChecker:
    """Checks (decode, size) and hashes each distinct file once, however many pairs use it."""

    def __init__(self, auto: AutoResolver | None = None) -> None:
        self.auto = auto or (lambda name, cfg, wh: cfg)  # resolves `auto` keys (AutoResolver)
        self._checked: dict[tuple[Path, int], tuple[tuple[int, int] | None, str | None]] = {}
        self._hashes: dict[Any, Any] = {}
        self._configs: dict[tuple[int, str], tuple[Config, str]] = {}
        self.geometry: dict[tuple, tuple[Config, tuple[int, int] | None, list[str]]] = {}

    def size(self, path: Path, max_pixels: int) -> tuple[tuple[int, int] | None, str | None]:
        key = (path, max_pixels)
        if key not in self._checked:
            try:
                self._checked[key] = (check_image(path, max_pixels), None)
            except ImageError as e:
                self._checked[key] = (None, str(e))
        return self._checked[key]

    def weights_ok(self, weights: str) -> bool:
        """check_weights_path found nothing (a file's size, archive and magic read once per job)."""
        if ("ok", weights) not in self._hashes:
            self._hashes[("ok", weights)] = check_weights_path(weights) is None
        return self._hashes[("ok", weights)]

    def config_json(self, cfg: Config, tile: Any) -> str:
        """`config_identity_json` of `cfg` with `tile`, once per distinct config (pairs of the same
        settings share their Config object; it is kept here so its id stays its own)."""
        key = (id(cfg), repr(tile))
        if key not in self._configs:
            self._configs[key] = (cfg, config_identity_json(dataclasses.replace(cfg, tile=tile)))
        return self._configs[key][1]

    def weights_id(self, weights: str) -> str:
        if weights not in self._hashes:
            self._hashes[weights] = weights_identity(weights)
        return self._hashes[weights]

    def sha256(self, path: Path) -> str:
        if path not in self._hashes:
            self._hashes[path] = sha256_file(path)
        return self._hashes[path]


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
    private = any(part in PRIVATE_DIRS for part in Path(real).parts)
    if real in SYSTEM_DIRS or private or any(real.startswith(tree + "/") for tree in SYSTEM_TREES):
        shown_as = f"{path} (that is {real})" if str(path) != real else str(path)
        what = "a folder of your keys" if private else "the file system's root or a system directory"
        return f"output_dir {shown_as}: {what}; use a directory of your own"
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


def blend_problem(pair: Pair) -> str | None:
    n, blend = len(pair.styles), pair.config.style_blend
    if blend is not None and len(blend) != n:
        return f"'style_blend' has {len(blend)} weight(s) for {n} style file(s)"
    return None


def init_file(pair: Pair) -> list[Path]:
    """The pair's init image, as a one-item list, or [] for content/noise/style_stats."""
    if pair.config is None or pair.config.init in cfgmod.INIT_MODES:
        return []
    return [Path(pair.config.init)]


def resolved(path: Path) -> Path | None:
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError):
        return None


def wrong_folder_hint(path: Path, base: Path | None) -> str:
    """For a file not found relative to the manifest's folder: that it exists relative to the
    current directory, when it does (paths in a manifest are relative to the manifest)."""
    if base is None:
        return ""
    try:
        given = Path(os.path.relpath(path, base))
    except ValueError:
        return ""
    if given.is_absolute() or not (Path.cwd() / given).is_file():
        return ""
    return (
        f" ({given} exists relative to the current directory, but paths in a manifest are relative to "
        f"the manifest's folder, {base}: write {os.path.relpath(Path.cwd() / given, base)})"
    )


def check_pair_files(pair: Pair, files: FileChecker, where: str, weights: str, base: Path | None = None) -> None:
    cfg = pair.config
    sizes = {}
    styles = pair.styles
    roles = [("content", pair.content)] + [
        ("style" if len(styles) == 1 else f"style[{i}]", p) for i, p in enumerate(styles)
    ]
    roles += [("init", p) for p in init_file(pair)]
    for role, path in roles:
        wh, err = files.size(path, cfg.max_pixels)
        if err:
            hint = wrong_folder_hint(path, base) if err.endswith(": file not found") else ""
            pair.problems.append(f"{where}: {role}: {err}{hint}")
        sizes[role] = wh
    if not all(sizes.values()):
        return
    pair.content_size = sizes["content"]
    declared = cfg
    cfg = pair.config = files.auto(pair.name, cfg, sizes["content"])  # `auto` → numbers
    # The checks below depend only on the config and the images' sizes: once per distinct couple
    # (a grid of 100,000 pairs has a handful), the Config kept so its id stays its own.
    key = (id(cfg), tuple(sizes.items()))
    if key not in files.geometry:
        files.geometry[key] = (cfg, *_size_problems(cfg, sizes, [r for r, _ in roles]))
    _, out_size, problems = files.geometry[key]
    pair.out_size = out_size
    if problems:
        pair.problems += [f"{where}: {p}" for p in problems]
        return
    if not pair.problems and files.weights_ok(weights):
        wid = files.weights_id(weights)
        style_sha = [files.sha256(p) for p in styles] if len(styles) > 1 else files.sha256(styles[0])
        init_sha = files.sha256(Path(cfg.init)) if init_file(pair) else None
        # `tile: auto` stays auto in the id (it changes rounding only, and resolves per device).
        config_json = files.config_json(cfg, declared.tile) if init_sha is None else None
        pair.id = pair_id(
            files.sha256(pair.content),
            style_sha,
            wid,
            dataclasses.replace(cfg, tile=declared.tile) if init_sha is not None else cfg,
            init_sha,
            config_json,
        )


def _size_problems(
    cfg: Config, sizes: dict[str, tuple[int, int]], roles: list[str]
) -> tuple[tuple[int, int] | None, list[str]]:
    """(output size, problems) of a config with inputs of these sizes: its keys together, and every
    pass's images within max_pixels and large enough for the deepest layer."""
    if problems := cfgmod.cross_check(cfg):
        return None, problems
    need = min_input_size(cfg.layers_used)
    out_size = fit_size(*sizes["content"], cfg.size)
    # The largest images are those of the final pass; the smallest, those of the first.
    first, last = cfg.scale_sizes[0], cfg.size
    style_roles = [r for r in roles if r.startswith("style")]
    biggest = [("output", out_size)] + [(r, fit_size(*sizes[r], cfg.style_side(last))) for r in style_roles]
    smallest = [("output", fit_size(*sizes["content"], first))]
    smallest += [(r, fit_size(*sizes[r], cfg.style_side(first))) for r in style_roles]
    for role, wh in biggest:
        if wh[0] * wh[1] > cfg.max_pixels:
            return out_size, [
                f"size {cfg.size} makes the {role} {wh[0]}x{wh[1]} = {wh[0] * wh[1]:,} pixels, "
                f"above max_pixels {cfg.max_pixels:,}; lower 'size'"
            ]
    for role, wh in smallest:
        if min(wh) < need:
            at = f"size {cfg.size}" if first == last else f"the first scale ({first})"
            src = sizes["content"]
            # The 'size' at which the output's short side reaches `need` in the first pass; when the
            # output or a style is then past max_pixels, no 'size' helps (a 1x20000 strip): the
            # content's shape is the problem, not the size.
            target = -(-need * max(src) * last // (max(1, min(src)) * first))
            at_target = [fit_size(*src, target)] + [fit_size(*sizes[r], cfg.style_side(target)) for r in style_roles]
            if role == "output" and any(w * h > cfg.max_pixels for w, h in at_target):
                return out_size, [
                    f"the content is {src[0]}x{src[1]}: too narrow for layer "
                    f"{max(cfg.layers_used, key=LAYER_INDEX.__getitem__)}, which needs at least {need} px on each "
                    f"side, within max_pixels {cfg.max_pixels:,} at any 'size'; crop or pad the image"
                ]
            return out_size, [
                f"{at} makes the {role} {wh[0]}x{wh[1]}, but layer "
                f"{max(cfg.layers_used, key=LAYER_INDEX.__getitem__)} needs at least {need} px on each side; "
                "raise 'size'" + (" or the first scale" if first != last else "")
            ]
    return out_size, []
