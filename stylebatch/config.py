"""The one place where every setting is defined: its type, default and a one-line doc.

Everything else reads from `Config`: presets (`configs/*.yaml`) hold only what differs from these
defaults, manifests override per pair, `--set key=value` overrides last, and the README's
reference table is generated from the field docs (`python -m stylebatch.config`).

Precedence, lowest first: defaults < preset < manifest `defaults` < pair/grid values < `--set`.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from stylebatch.errors import ConfigError
from stylebatch.vgg import LAYER_INDEX

PRESET_DIR = Path(__file__).resolve().parent.parent / "configs"

# The paper's layers (Gatys et al. 2016, section 3): content at conv4_2, style at convN_1.
PAPER_STYLE_LAYERS = {"conv1_1": 1.0, "conv2_1": 1.0, "conv3_1": 1.0, "conv4_1": 1.0, "conv5_1": 1.0}


def _field(default: Any, doc: str, *, identity: bool = True, choices: tuple = (), ge: float | None = None,
           gt: float | None = None):
    """A dataclass field with its doc and bounds. `identity=False` marks bookkeeping keys that never
    change pixels, so changing them does not rerun finished pairs."""
    meta = {"doc": doc, "identity": identity, "choices": choices, "ge": ge, "gt": gt}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Config:
    """Settings of one pair. Defaults follow Gatys et al. (2016) where the paper states them."""

    size: int = _field(512, "Longer side of the output in pixels; the content's aspect ratio is kept.", ge=1)
    steps: int = _field(
        500, "Budget of loss evaluations (forward+backward passes), the same unit for every optimizer.", ge=1
    )
    optimizer: str = _field("lbfgs", "`lbfgs` (strong-Wolfe line search) or `adam`.", choices=("lbfgs", "adam"))
    lr: Union[float, None] = _field(
        None, "Learning rate; empty means the optimizer's own default: 1.0 for L-BFGS, 0.02 for Adam.", gt=0
    )
    lbfgs_history: int = _field(
        20, "L-BFGS history size; each entry keeps 2 image-sized vectors in memory and checkpoints.", ge=1
    )
    lbfgs_line_search: str = _field(
        "strong_wolfe",
        "L-BFGS line search: `strong_wolfe` (robust to the network's loss scale) or `none` (fixed step lr).",
        choices=("strong_wolfe", "none"),
    )
    content_layer: str = _field("conv4_2", "VGG19 layer whose features define content (paper: conv4_2).")
    style_layers: dict[str, float] = _field(
        PAPER_STYLE_LAYERS, "VGG19 layers whose Gram matrices define style, each with its weight w_i."
    )
    content_weight: float = _field(1.0, "alpha: weight of the content loss.", ge=0)
    style_weight: float = _field(1000.0, "beta: weight of the style loss; alpha/beta trades content for style.", ge=0)
    tv_weight: float = _field(0.0, "Weight of the total-variation loss (smooths high-frequency noise).", ge=0)
    normalize_losses: bool = _field(
        True,
        "Divide each loss term by its target's mean square, so the weights mean the same on any network.",
    )
    init: str = _field("content", "Starting image: `content` or `noise` (seeded).", choices=("content", "noise"))
    seed: int = _field(0, "Random seed for noise init (and anything else random in a pair).")
    checkpoint_every: int = _field(
        50, "Save a resumable checkpoint every N loss evaluations.", identity=False, ge=1
    )
    max_attempts: int = _field(
        2, "A failed pair is retried on the next run until it has failed this many times.", identity=False, ge=1
    )
    keep_checkpoints: bool = _field(False, "Keep a pair's checkpoint after it is done.", identity=False)
    log_every: int = _field(10, "Record losses (and check for NaN) every N loss evaluations.", identity=False, ge=1)
    max_pixels: int = _field(
        50_000_000, "Refuse input images with more pixels than this (read from the header).", identity=False, ge=1
    )

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return 1.0 if self.optimizer == "lbfgs" else 0.02

    @property
    def layers_used(self) -> list[str]:
        return [self.content_layer, *self.style_layers]

    def identity(self) -> dict[str, Any]:
        """The keys that change pixels: part of a pair's id."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata["identity"]}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(Config)}
_HINTS = typing.get_type_hints(Config)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "empty"
    if typing.get_origin(tp) is dict:
        k, v = typing.get_args(tp)
        return f"mapping of {_type_name(k)} to {_type_name(v)}"
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
        return True, float(value)
    if tp is int:
        return (isinstance(value, int) and not isinstance(value, bool)), value
    return isinstance(value, tp), value


def did_you_mean(word: str, options: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_value(key: str, value: Any) -> tuple[list[str], Any]:
    """Problems with one key's value (unknown key, type, choice, minimum, layer names)."""
    if key not in FIELDS:
        return [f"unknown key '{key}'{did_you_mean(key, FIELDS)}"], value
    f, tp = FIELDS[key], _HINTS[key]
    ok, value = _coerce(value, tp)
    if not ok:
        return [f"'{key}' must be {_type_name(tp)}, got {value!r}"], value
    problems = []
    if f.metadata["choices"] and value not in f.metadata["choices"]:
        choices = ", ".join(f.metadata["choices"])
        problems.append(f"'{key}' must be one of {choices}, got {value!r}{did_you_mean(value, f.metadata['choices'])}")
    ge, gt = f.metadata["ge"], f.metadata["gt"]
    if isinstance(value, float) and value != value:
        problems.append(f"'{key}' must be a number, got NaN")
    elif ge is not None and value is not None and value < ge:
        problems.append(f"'{key}' must be >= {ge}, got {value!r}")
    elif gt is not None and value is not None and value <= gt:
        problems.append(f"'{key}' must be > {gt}, got {value!r}")
    if key == "content_layer" and value not in LAYER_INDEX:
        problems.append(f"'content_layer': unknown VGG19 layer '{value}'{did_you_mean(value, LAYER_INDEX)}")
    if key == "style_layers":
        if not value:
            problems.append("'style_layers' must name at least one layer")
        for name, weight in value.items():
            if name not in LAYER_INDEX:
                problems.append(f"'style_layers': unknown VGG19 layer '{name}'{did_you_mean(name, LAYER_INDEX)}")
            elif weight < 0:
                problems.append(f"'style_layers': weight of '{name}' must be >= 0, got {weight}")
    return problems, value


def resolve(layers: list[tuple[str, dict[str, Any]]]) -> Config:
    """Merge override layers (lowest precedence first) onto the defaults; each layer is
    (where it came from, mapping). Raises ConfigError listing every problem, each naming its source."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for source, mapping in layers:
        for key, value in mapping.items():
            found, value = check_value(key, value)
            problems += [f"{source}: {p}" for p in found]
            if not found:
                values[key] = value
    if problems:
        raise ConfigError(problems)
    return Config(**values)


class _NoAliasLoader(yaml.SafeLoader):
    """safe_load plus a refusal of anchors/aliases: an alias bomb ("billion laughs") parses fast into
    shared references and only explodes when the data is walked, so it must be refused while parsing."""

    def compose_node(self, parent, index):  # noqa: ANN001 (PyYAML's signature)
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(
                None, None, "YAML aliases (*name) are not allowed; write the values out", event.start_mark
            )
        return super().compose_node(parent, index)


def load_yaml(text: str, source: str) -> Any:
    """Parse YAML safely; syntax errors become one line with the file and line number."""
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 (safe loader subclass)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ConfigError(f"{where}: not valid YAML: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}") from None


def load_preset(name: str) -> tuple[str, dict[str, Any]]:
    """A preset by name (`configs/<name>.yaml`) or path; returns (source label, overrides)."""
    path = Path(name)
    if not path.suffix:
        path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
        raise ConfigError(f"preset '{name}' not found{did_you_mean(name, known)}; known presets: {', '.join(known)}")
    data = load_yaml(path.read_text(encoding="utf-8"), str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a preset must be a mapping of config keys")
    return f"preset '{name}'", data


def parse_set(items: list[str]) -> dict[str, Any]:
    """`--set key=value` pairs; values are YAML (`steps=20`, `style_layers={conv1_1: 1}`)."""
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value")
        out[key.strip()] = load_yaml(text, f"--set {key.strip()}") if text.strip() else None
    return out


def reference_table() -> str:
    """The README's config reference, generated from the field docs."""
    rows = ["| key | type | default | what it does |", "|---|---|---|---|"]
    for name, f in FIELDS.items():
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = "empty" if default is None else yaml.safe_dump(default, default_flow_style=True).strip()
        shown = shown.removesuffix("...").strip()
        doc = f.metadata["doc"] + ("" if f.metadata["identity"] else " *(bookkeeping: never reruns a pair)*")
        rows.append(f"| `{name}` | {_type_name(_HINTS[name])} | `{shown}` | {doc} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(reference_table())
