"""Checking one config value: its type (with coercion: ints as floats, never bools as numbers), its
choices and bounds, layer names, init modes, blends and scales; the type names and the "did you
mean" hints the messages use."""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

from stylebatch.geometry import LAYER_INDEX
from stylebatch.job.values import number_problem, shown

INIT_MODES = ("content", "noise", "style_stats")
AUTO_KEYS = ("size", "batch_size", "tile")  # keys that also take `auto` (estimate.py resolves them)


def type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "empty"
    if typing.get_origin(tp) is Literal:
        return " or ".join(str(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        return f"list of {type_name(typing.get_args(tp)[0])}"
    if typing.get_origin(tp) is dict:
        k, v = typing.get_args(tp)
        return f"mapping of {type_name(k)} to {type_name(v)}"
    return {int: "integer", float: "number", str: "text", bool: "true/false"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    """(ok, value): check `value` against the annotation; ints are accepted as floats, bools never as numbers."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, v = _coerce(value, arg)
            if ok:
                return True, v
        return False, value
    if tp is type(None):
        return value is None, None
    if typing.get_origin(tp) is Literal:
        return value in typing.get_args(tp) and isinstance(value, str), value
    if typing.get_origin(tp) is list:
        (et,) = typing.get_args(tp)
        if not isinstance(value, list):
            return False, value
        items = [_coerce(v, et) for v in value]
        if not all(ok for ok, _ in items):
            return False, value
        return True, [v for _, v in items]
    if typing.get_origin(tp) is dict:
        kt, vt = typing.get_args(tp)
        if not isinstance(value, dict):
            return False, value
        out = {}
        for k, v in value.items():
            ok_k, k2 = _coerce(k, kt)
            ok_v, v2 = _coerce(v, vt)
            if not (ok_k and ok_v):
                return False, value
            out[k2] = v2
        return True, out
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False, value
        try:
            return True, float(value)
        except OverflowError:  # an integer beyond any float
            return False, value
    if tp is int:
        return (isinstance(value, int) and not isinstance(value, bool)), value
    return isinstance(value, tp), value


def did_you_mean(word: str, options: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_value(
    key: str, value: Any, fields: dict[str, dataclasses.Field], hints: dict[str, Any]
) -> tuple[list[str], Any]:
    """Problems with one key's value (unknown key, type, choice, minimum, layer names), given the
    config's fields (with their bounds) and type hints."""
    if key not in fields:
        return [f"unknown key '{key}'{did_you_mean(key, fields)}"], value
    f, tp = fields[key], hints[key]
    ok, value = _coerce(value, tp)
    if not ok:
        return [f"'{key}' must be {type_name(tp)}, got {shown(value)}"], value
    if key in AUTO_KEYS and value in ("auto", "auto-up"):  # auto-up: size only (its type says so)
        return [], value  # estimate.py resolves it once the image sizes are known
    if f.metadata["le"] is None and (problem := number_problem(value)):
        return [f"'{key}' {problem}"], value  # what torch cannot hold (float32 image, int64 counts)
    if key == "tile" and value is not None and (value < 16 or value % 16):
        return [f"'tile' must be a multiple of 16 px (at least 16), or auto, got {shown(value)}"], value
    problems = []
    if f.metadata["choices"] and value not in f.metadata["choices"]:
        choices = ", ".join(f.metadata["choices"])
        problems.append(
            f"'{key}' must be one of {choices}, got {shown(value)}{did_you_mean(value, f.metadata['choices'])}"
        )
    ge, gt = f.metadata["ge"], f.metadata["gt"]
    if isinstance(value, float) and not math.isfinite(value):
        problems.append(f"'{key}' must be a finite number, got {shown(value)}")
    elif ge is not None and value is not None and value < ge:
        problems.append(f"'{key}' must be >= {ge}, got {shown(value)}")
    elif gt is not None and value is not None and value <= gt:
        problems.append(f"'{key}' must be > {gt}, got {shown(value)}")
    elif f.metadata.get("le") is not None and value is not None and value > f.metadata["le"]:
        problems.append(f"'{key}' must be <= {f.metadata['le']}, got {shown(value)}")
    if key == "content_layer" and value not in LAYER_INDEX:
        problems.append(f"'content_layer': unknown VGG19 layer '{value}'{did_you_mean(value, LAYER_INDEX)}")
    if key == "style_layers":
        if not value:
            problems.append("'style_layers' must name at least one layer")
        for name, weight in value.items():
            if name not in LAYER_INDEX:
                problems.append(f"'style_layers': unknown VGG19 layer '{name}'{did_you_mean(name, LAYER_INDEX)}")
            elif not math.isfinite(weight) or weight < 0:
                problems.append(f"'style_layers': weight of '{name}' must be a finite number >= 0, got {weight}")
    if key == "init" and value not in INIT_MODES and not Path(value).suffix:
        problems.append(
            f"'init' must be one of {', '.join(INIT_MODES)} or an image file path, got {shown(value)}"
            f"{did_you_mean(value, INIT_MODES)}"
        )
    if key == "style_blend" and value is not None:
        if not value or not all(math.isfinite(w) and w >= 0 for w in value) or sum(value) <= 0:
            problems.append(f"'style_blend' must be one finite weight >= 0 per style, not all 0, got {shown(value)}")
        else:
            value = [w / sum(value) for w in value]  # normalised: [7, 3] and [0.7, 0.3] are the same pair
    if key == "scales" and isinstance(value, list):
        if not value or any(v < 1 for v in value) or any(b <= a for a, b in zip(value, value[1:])):
            problems.append(
                f"'scales' must be ascending sizes >= 1 (the final pass at 'size' is implied), got {shown(value)}"
            )
    elif key == "scales" and isinstance(value, dict):
        if set(value) != {"factor", "min"}:
            problems.append(f"'scales' as a mapping takes exactly 'factor' and 'min', got {sorted(value)}")
        elif not (math.isfinite(value["factor"]) and value["factor"] > 1) or not (
            math.isfinite(value["min"]) and value["min"] >= 1
        ):
            problems.append(f"'scales': factor must be > 1 and min >= 1, got {shown(value)}")
    return problems, value
