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
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stylebatch.errors import ConfigError
from stylebatch.job import config as cfgmod
from stylebatch.job.checks import (
    AutoResolver,
    FileChecker,
    blend_problem,
    check_name,
    check_output_dir,
    check_pair_files,
    init_file,
    resolved,
)
from stylebatch.job.entries import PAIR_KEYS, URL_HINT, URLS, format_value, is_url, raw_entries, style_stem
from stylebatch.job.pairs import Job, Pair
from stylebatch.job.values import path_problem, shown
from stylebatch.job.weights import check_weights_path
from stylebatch.jobdir.state import JobState, own_output

TOP_KEYS = ("output_dir", "weights", "defaults", "pairs", "grid")


def _own_outputs(output_dir: Path) -> Callable[[Path], bool]:
    """Whether a file a pattern matched is this job's own output (output_dir inside a content or
    style pattern): never an input, or each rerun would find its outputs as new pairs."""
    state, parents = JobState(output_dir), {}
    try:
        real_out = os.path.realpath(output_dir)
    except (OSError, ValueError):  # an unusable output_dir (reported as such): it holds no outputs
        return lambda path: False

    def skip(path: Path) -> bool:
        try:
            if path.parent not in parents:
                parents[path.parent] = os.path.realpath(path.parent)
            return parents[path.parent] == real_out and own_output(state, path)
        except (OSError, ValueError):  # a name no output can have (a NUL byte, bytes not UTF-8)
            return False

    return skip


def load_job(
    manifest: str | Path,
    *,
    preset: str | None = None,
    sets: dict[str, Any] | None = None,
    out: str | Path | None = None,
    weights: str | None = None,
    check_files: bool = True,
    resolve_auto: Callable[[Path], AutoResolver] | None = None,
    preset_flag: str | None = None,
) -> Job:
    """Parse, resolve and validate a manifest. Never raises for user errors: every problem is
    recorded on the job (structure) or on its pair (config, files), so all can be listed at once.
    `resolve_auto(output_dir)`: turns `auto` settings into numbers for one pair (the memory model's
    `autosize.resolver`, which `memory.autosize.load_job` passes); None leaves them `auto`.
    `preset_flag`: what a bad `preset` is blamed on (the CLI's "--config X"; default the manifest)."""
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
        problems.append(
            f"{src}: the manifest must be a mapping with output_dir and pairs or grid, got {type(data).__name__}"
        )
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
        except ConfigError as e:  # a bad --config is the flag's (`preset_flag`), not the manifest's
            where = (preset_flag or src) if preset else f"{src}: defaults"
            problems += [f"{where}: {p}" for p in e.problems]
    layers.append((f"{src}: defaults", defaults))
    try:
        cfgmod.resolve(layers)  # report problems in shared layers once, not once per pair
    except ConfigError as e:
        problems += e.problems
        layers = []

    files = FileChecker(resolve_auto(job.output_dir) if resolve_auto else None)  # size/tile/batch_size auto
    resolved_configs: dict[str, cfgmod.Config] = {}
    for entry, raw, varied in raw_entries(data, base, src, problems, _own_outputs(job.output_dir)):
        urls = raw.pop(URLS, [])
        pair_keys = {k: v for k, v in raw.items() if k not in PAIR_KEYS}
        unknown = [k for k in pair_keys if k not in cfgmod.FIELDS] if entry.startswith("pairs") else []
        content, style = raw.get("content"), raw.get("style")
        name = raw.get("name")
        if name is None and content is not None and style is not None:
            name = f"{Path(content).stem}__{style_stem(style, raw.get('style_blend'))}"
            name += "".join(f"__{k}-{format_value(raw[k])}" for k in varied)
        styles = list(style) if isinstance(style, list) else [style] if style is not None else []
        pair = Pair("" if name is None else str(name), content, styles, None, entry)
        where = f"{src}: {pair.label}"
        given_but_bad = [k for k in ("content", "style") if k in raw and raw[k] is None]  # already said why
        # A name is made from content and style: with one missing, that (or its typo) is the one problem.
        if (name is not None or (content is not None and style is not None)) and (problem := check_name(name)):
            pair.problems.append(f"{where}: {problem}")
        for key in unknown:  # suggest pair keys (content, style, name) as well as config keys
            pair.problems.append(
                f"{where}: unknown key '{key}'{cfgmod.did_you_mean(key, [*PAIR_KEYS, *cfgmod.FIELDS])}"
            )
            del pair_keys[key]
        # A grid's entries differ in a handful of keys: resolve each distinct mapping once and share
        # the (frozen) Config, which also shares every per-config cache after it (estimates, ids).
        key = repr(sorted(pair_keys.items(), key=lambda kv: kv[0]))
        pair.config = resolved_configs.get(key)
        if pair.config is None:
            try:
                pair.config = resolved_configs[key] = cfgmod.resolve(
                    layers + [(where, pair_keys), ("--set", sets or {})]
                )
            except ConfigError as e:
                pair.problems += [
                    p if p.startswith(src) or p.startswith("--set") else f"{where}: {p}" for p in e.problems
                ]
        if pair.config is not None and is_url(pair.config.init):
            pair.problems.append(f"{where}: 'init' {shown(pair.config.init)}: {URL_HINT}")
            pair.config = dataclasses.replace(pair.config, init="content")  # reported; nothing more to check
        elif (
            pair.config is not None
            and pair.config.init not in cfgmod.INIT_MODES
            and (problem := path_problem(pair.config.init))
        ):
            pair.problems.append(f"{where}: 'init' {shown(pair.config.init)} {problem}")
            pair.config = None
        if pair.config is not None and pair.config.init not in cfgmod.INIT_MODES:
            # An init image, like content and style, is relative to the manifest.
            pair.config = dataclasses.replace(pair.config, init=os.path.abspath(base / pair.config.init))
        if pair.config is not None and style is not None and (problem := blend_problem(pair)):
            pair.problems.append(f"{where}: {problem}")
        # A pairs entry without content or style was said as missing (or misspelt) already.
        if (content is None or style is None) and not given_but_bad and not entry.startswith("pairs"):
            pair.problems.append(f"{where}: needs both content and style")
        pair.problems += [f"{where}: {url}: {URL_HINT}" for url in urls]
        job.pairs.append(pair)
        if pair.config is None or content is None or style is None or urls or not check_files:
            continue
        check_pair_files(pair, files, where, job.weights, base)

    job.notes = [f"{name}: {why}" for name, why in getattr(files.auto, "notes", {}).items()]

    # Pooling is job-level: the pairs of a job share one network (and may be optimised as one batch).
    poolings = sorted({p.config.pooling for p in job.pairs if p.config is not None})
    if len(poolings) > 1:
        problems.append(
            f"{src}: 'pooling' is job-level, but the pairs use {', '.join(poolings)}; "
            "set it once in defaults, the preset or --set"
        )

    # An output must never overwrite an input (output_dir next to the images, a name like an input's).
    # Each distinct input resolved once; each output as its resolved directory joined with its name
    # (a valid name has no separator), resolved itself only where that name is a link.
    distinct = {p for pair in job.pairs for p in (pair.content, *pair.styles, *init_file(pair)) if p is not None}
    inputs = {resolved(p) for p in distinct} - {None}
    out_dir = resolved(job.output_dir)
    for pair in job.pairs:
        if pair.config is None or check_name(pair.name):
            continue
        output = job.output_path(pair)
        final = out_dir / output.name if out_dir is not None and not os.path.islink(output) else resolved(output)
        if final in inputs:
            pair.problems.append(
                f"{src}: {pair.label}: output {output} would overwrite an input image; set 'name' or another output_dir"
            )

    # Duplicate output names are refused, each entry named.
    seen: dict[str, Pair] = {}
    for pair in job.pairs:
        if not pair.name:  # an entry without content or style: its own problem says so
            continue
        if pair.name in seen:
            pair.problems.append(
                f"{src}: {pair.label}: duplicate output name (also {seen[pair.name].entry}); set 'name'"
            )
        else:
            seen[pair.name] = pair
    # A --set problem is the same for every pair: say it once.
    set_problems = sorted({p for pair in job.pairs for p in pair.problems if p.startswith("--set")})
    if set_problems:
        problems += set_problems
        for pair in job.pairs:
            pair.problems = [p for p in pair.problems if not p.startswith("--set")]
    return job
