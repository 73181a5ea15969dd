"""A manifest's `pairs` and `grid` → raw entries: content and style paths resolved (globs expanded,
blends gathered), the grid's cartesian product taken, and the automatic output names' parts.

Every problem is collected, each naming the manifest, the entry and the file.
"""

from __future__ import annotations

import difflib
import glob
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stylebatch.job import config as cfgmod
from stylebatch.job.values import path_problem, shown

PAIR_KEYS = ("content", "style", "name")


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
URL_HINT = "URLs are not supported; download the file first"
URLS = "\0urls"  # a pair entry's URLs, carried from raw_entries to load_job (never a config key)


def is_url(value: Any) -> bool:
    """`https://...`, `s3://...`: not a local path (it would become a mangled 'file not found')."""
    return isinstance(value, str) and bool(_URL.match(value))


def _expand_paths(
    base: Path, values: list[Any], where: str, problems: list[str], skip: Callable[[Path], bool] | None = None
) -> list[Path]:
    """Files named or matched; `skip`: a match that is not an input (the job's own output)."""
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
            matches = [m for m in matches if skip is None or not skip(m)]
            if not matches:
                problems.append(f"{where}: pattern '{v}' matches no file")
            out += matches
        else:
            out.append(base / v)
    return out


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return "-".join(f"{k}{format_value(v)}" for k, v in value.items())
    if isinstance(value, str) and ("/" in value or "\\" in value):  # a file (init: images/x.jpg): its stem
        return Path(value).stem
    return str(value)


def misspelt(raw: dict[str, Any], key: str) -> str | None:
    """The key of `raw` that looks like a misspelling of `key` (an unknown key close to it), if any."""
    unknown = [k for k in raw if isinstance(k, str) and k not in PAIR_KEYS and k not in cfgmod.FIELDS]
    found = [k for k in unknown if difflib.get_close_matches(k, [key], n=1, cutoff=0.75)]
    return found[0] if found else None


def raw_entries(
    data: dict[str, Any], base: Path, src: str, problems: list[str], skip: Callable[[Path], bool] | None = None
) -> list[tuple[str, dict[str, Any], list[str]]]:
    """(entry label, raw mapping with content/style paths resolved, varied keys) for pairs and grid.
    `skip`: files a pattern matches that are not inputs (the job's own outputs, when output_dir
    lies inside a pattern: a rerun must not take them as new pairs)."""
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
                if not misspelt(raw, key):  # a typo ('contnet') is said once, as an unknown key
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
    if isinstance(grid, list):  # several grids: photos x paintings beside a sweep on one pair
        if not grid:
            problems.append(f"{src}: 'grid' as a list must hold at least one grid")
        for i, one in enumerate(grid):
            entries += _grid_entries(one, f"grid[{i}]", base, src, problems, skip)
        return entries
    return entries + _grid_entries(grid, "grid", base, src, problems, skip)


def _grid_entries(
    grid: Any, label: str, base: Path, src: str, problems: list[str], skip: Callable[[Path], bool] | None = None
) -> list[tuple[str, dict[str, Any], list[str]]]:
    """The entries of one grid (the cartesian product of its lists), labelled `<label>[n]`."""
    entries: list[tuple[str, dict[str, Any], list[str]]] = []
    if not isinstance(grid, dict):
        problems.append(f"{src}: '{label}' must be a mapping of content, style and config keys to lists")
        return entries
    axes: dict[str, list[Any]] = {}
    misspelt = False
    for key, values in grid.items():
        where = f"{src}: {label}.{key}"
        if not isinstance(values, list) or not values:
            problems.append(f"{where}: must be a non-empty list of values")
            continue
        if key == "style":
            axes[key] = []
            for i, v in enumerate(values):
                axes[key] += (
                    [_grid_blend(base, v, f"{where}[{i}]", problems)]
                    if isinstance(v, dict)
                    else _expand_paths(base, [v], where, problems, skip)
                )
        elif key == "content":
            axes[key] = _expand_paths(base, values, where, problems, skip)
        elif key == "name":
            problems.append(f"{where}: grid outputs are named automatically; 'name' is not allowed here")
        elif key not in cfgmod.FIELDS:  # said once here, not once per grid entry
            problems.append(f"{where}: unknown key '{key}'{cfgmod.did_you_mean(key, [*PAIR_KEYS, *cfgmod.FIELDS])}")
            misspelt = True
        else:
            axes[key] = values
    for key in ("content", "style"):
        if key not in grid:
            problems.append(f"{src}: {label}: missing '{key}'")
    if "style" in axes:
        axes["style"] = [v for v in axes["style"] if v is not None]
        if not axes["style"]:
            del axes["style"]
    if "content" not in axes or "style" not in axes or misspelt:
        return entries  # a misspelt sweep would make its pairs duplicates of others: its one line is enough
    varied = [k for k, v in axes.items() if k not in ("content", "style") and len(v) > 1]
    keys = list(axes)
    for n, combo in enumerate(itertools.product(*(axes[k] for k in keys))):
        raw = dict(zip(keys, combo))
        if isinstance(raw["style"], _Blend):
            blend = raw["style"]
            raw["style"] = blend.paths
            if blend.weights is not None:
                raw["style_blend"] = blend.weights
        entries.append((f"{label}[{n}]", raw, varied))
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


def style_stem(style: Path | list[Path], weights: Any) -> str:
    """`a` for one style; `a+b` for a blend, `a-0.7+b-0.3` when its weights were given."""
    if not isinstance(style, list):
        return Path(style).stem
    ok = (
        isinstance(weights, list)
        and len(weights) == len(style)
        and all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights)
        and sum(weights) > 0
    )
    if not ok:
        return "+".join(p.stem for p in style)
    return "+".join(f"{p.stem}-{w / sum(weights):g}" for p, w in zip(style, weights))
