"""The one place where every setting is defined: its type, default and a one-line doc.

Everything else reads from `Config`: presets (`presets/*.yaml` beside this file) hold only what differs from these
defaults, manifests override per pair, `--set key=value` overrides last, and the README's
reference table is generated from the field docs (`python scripts/update_readme.py`).

Precedence, lowest first: defaults < preset < manifest `defaults` < pair/grid values < `--set`.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union

from stylebatch.errors import ConfigError
from stylebatch.geometry import LAYER_INDEX, grid_unit
from stylebatch.images import OUTPUT_FORMATS

# Re-exported: importers of the config find the value checks here too.
from stylebatch.job.config_checks import AUTO_KEYS, INIT_MODES, check_value, did_you_mean, type_name  # noqa: F401
from stylebatch.job.values import shown
from stylebatch.job.yamlfiles import load_yaml

# The bundled presets are package data, read through importlib.resources so an installed wheel (not
# only a checkout) finds them; a user's own preset is any YAML file given by path.
PRESETS = resources.files("stylebatch.job") / "presets"


def preset_names() -> list[str]:
    """The bundled presets' names, sorted."""
    return sorted(p.name[: -len(".yaml")] for p in PRESETS.iterdir() if p.name.endswith(".yaml"))


# The paper's layers (Gatys et al. 2016, section 3): content at conv4_2, style at convN_1.
PAPER_STYLE_LAYERS = {"conv1_1": 1.0, "conv2_1": 1.0, "conv3_1": 1.0, "conv4_1": 1.0, "conv5_1": 1.0}
# The default's style layers: the paper's five, post-ReLU, weighted 256:64:16:4:1 from fine to coarse
# (crowsonkb/style-transfer-pytorch's weights). With normalised losses every layer's term is a
# relative error of the same order, so these weights put the strokes and palette (relu1_1..relu3_1)
# first: measured with scripts/quality.py (docs/quality.md), equal weights left the photo's colours
# (neutral style score 185 at 100 evaluations on chelsea x starry night); these reach 0.4.
DEFAULT_STYLE_LAYERS = {"relu1_1": 256.0, "relu2_1": 64.0, "relu3_1": 16.0, "relu4_1": 4.0, "relu5_1": 1.0}


def _field(
    default: Any,
    doc: str,
    *,
    identity: bool = True,
    choices: tuple = (),
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    bookkeeping: str = "never reruns a pair",
):
    """A dataclass field with its doc and bounds. `identity=False` marks bookkeeping keys that never
    change pixels, so changing them does not rerun finished pairs (`bookkeeping`: what the README
    says of such a key)."""
    meta = {
        "doc": doc,
        "identity": identity,
        "choices": choices,
        "ge": ge,
        "gt": gt,
        "le": le,
        "bookkeeping": bookkeeping,
    }
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Config:
    """Settings of one pair. Defaults follow Gatys et al. (2016) where the paper states them."""

    size: Union[int, Literal["auto", "auto-up"]] = _field(
        512,
        "Longer side of the output in pixels; the content's aspect ratio is kept. `auto`: the largest that "
        "fits `memory_fraction` of the device's free memory, never past the content's own longer side; "
        "`auto-up`: the same, upscaling the content where memory allows (README, How large can I go).",
        ge=1,
    )
    steps: int = _field(
        500, "Budget of loss evaluations (forward+backward passes), the same unit for every optimizer.", ge=1
    )
    optimizer: str = _field(
        "adam",
        "`adam` (pixels clamped to [0, 1] after each step) or `lbfgs` (strong-Wolfe line search).",
        choices=("lbfgs", "adam"),
    )
    # At most 1e30: torch's optimizers scale lr (Adam's bias correction, L-BFGS's line search up to
    # 10x) into float32 arguments, which overflow from 3.4e38 ("value cannot be converted to type float").
    lr: Union[float, None] = _field(
        None,
        "Learning rate; empty means the optimizer's own default: 1.0 for L-BFGS, 0.05 for Adam (in pixel "
        "units of [0, 1] per step; crowsonkb/style-transfer-pytorch uses 0.02 with 10x the evaluations).",
        gt=0,
        le=1e30,
    )
    lbfgs_history: int = _field(
        20, "L-BFGS history size; each entry keeps 2 image-sized vectors in memory and checkpoints.", ge=1
    )
    lbfgs_line_search: str = _field(
        "strong_wolfe",
        "L-BFGS line search: `strong_wolfe` (robust to the network's loss scale) or `none` (fixed step lr).",
        choices=("strong_wolfe", "none"),
    )
    content_layer: str = _field(
        "relu4_2", "VGG19 layer whose features define content (paper: conv4_2; relu4_2 is its post-ReLU output)."
    )
    style_layers: dict[str, float] = _field(
        DEFAULT_STYLE_LAYERS,
        "VGG19 layers whose Gram matrices define style, each with its weight w_i (the paper: conv1_1..conv5_1, "
        "1 each; the default weighs fine layers more).",
    )
    content_weight: float = _field(1.0, "alpha: weight of the content loss.", ge=0)
    style_weight: float = _field(
        0.1,
        "beta: weight of the style loss; alpha/beta trades content for style. Not the paper's 1e3: our "
        "losses are normalised relative errors, and the layer weights sum to 341 by default; 0.001 keeps the "
        "photo with a tint of the style, 1 leaves texture with a hint of the content (README, alpha/beta).",
        ge=0,
    )
    style_loss: str = _field(
        "wasserstein",
        "How style is compared at each style layer: `gram` (Gatys: MSE between Gram matrices) or `wasserstein` "
        "(squared Wasserstein-2 distance between Gaussians fitted to the feature vectors: means and "
        "covariances, as crowsonkb/style-transfer-pytorch; not with `tile`).",
        choices=("gram", "wasserstein"),
    )
    # 3, measured (docs/quality.md): without it the Wasserstein default still left chroma grain 2.0 on
    # chelsea x starry night (the painting's own is 1.0); with it 0.5, and colour and texture closer too.
    tv_weight: float = _field(
        3.0,
        "Weight of the total-variation loss (smooths high-frequency noise; not "
        "normalised: mean squared neighbour difference in [0, 1] pixel units).",
        ge=0,
    )
    normalize_losses: bool = _field(
        True,
        "Divide each loss term by its target's mean square, so the weights mean the same on any network.",
    )
    init: str = _field(
        "content",
        "Starting image: `content`, `noise` (uniform, seeded), `style_stats` (Gaussian noise with the style's "
        "per-channel mean and std, seeded) or an image file (relative to the manifest; resized to the output). "
        "With `scales` it starts the first scale.",
    )
    style_blend: Union[list[float], None] = _field(
        None,
        "Blend weights of several styles (`style: [a.jpg, b.jpg]` in a pair; in a grid one style entry "
        "`{blend: [a.jpg, b.jpg], weights: [0.7, 0.3]}`), one per style, normalised to sum 1; the Gram "
        "targets are blended. Empty: equal weights.",
    )
    style_scale: float = _field(
        1.0,
        "Style image's longer side as a multiple of the output's (at every scale); unused with `style_size`.",
        gt=0,
    )
    style_size: Union[int, None] = _field(
        None, "Fixed longer side of the style image(s) in pixels, at every scale; empty: use `style_scale`.", ge=1
    )
    preserve_color: str = _field(
        "none",
        "Colour control (Gatys et al. 2017, sec. 5): `none`; `luminance` (transfer on luminance only, the "
        "style's luminance matched to the content's mean and std, then the content's Cb/Cr put back); "
        "`histogram` (the style's colours given the content's mean and covariance before transfer, by the "
        "symmetric/optimal-transport linear map); `post` (YCbCr: Y from the output, Cb/Cr from the content).",
        choices=("none", "luminance", "histogram", "post"),
    )
    pooling: str = _field(
        "max",
        "VGG pooling: `max`, or `avg` (2x2 average pooling times 2.0, so activations keep roughly their "
        "magnitude). Job-level: every pair of a job must use the same value.",
        choices=("max", "avg"),
    )
    scales: Union[list[int], dict[str, float], None] = _field(
        {"factor": 2.0, "min": 256.0},
        "Coarse-to-fine (default: halving down to 256 px, so 256, 512 at 512 px; one pass at 256 px and below): the longer sides of the passes run before the final one at `size`, ascending, each "
        "below `size` (`[128, 256]`), or `{factor: 2, min: 128}` for size/factor, size/factor^2, ... down to "
        "min. Each pass starts from the previous result upsampled, with the targets recomputed at its size. "
        "`steps` is the total budget, split evenly over the passes (the final one gets any remainder). "
        "Empty (`scales: null`): one pass at `size`.",
    )
    carry_adam: bool = _field(
        False,
        "Coarse-to-fine with Adam: start each pass with the previous pass's Adam moments, resized to the new "
        "size (crowsonkb's scale_adam), instead of a fresh optimizer whose first steps move every pixel by lr.",
    )
    ema_decay: float = _field(
        0.0,
        "Iterate averaging: if > 0, the output is the (bias-corrected) exponential moving average of the "
        "image after each optimizer step, restarted at each scale. 0: the last iterate.",
        ge=0,
        le=0.9999,
    )
    save_every: int = _field(
        0,
        "Also save the image every N loss evaluations (at the first optimizer step past each multiple) to "
        "`.stylebatch/pairs/<name>/iter_<n>.png`. 0: never.",
        identity=False,
        ge=0,
    )
    seed: int = _field(
        0, "Random seed for noise init (and anything else random in a pair).", ge=-(2**63), le=2**64 - 1
    )  # torch.manual_seed's range
    precision: str = _field(
        "32",
        "`32`, or `bf16`: VGG convolutions in bfloat16 autocast (GPU speed-up; Grams and losses stay fp32). "
        "Use with Adam; L-BFGS's line search is not shown to cope.",
        choices=("32", "bf16"),
    )
    # Default 4 from scripts/bench.py on 2 CPU cores: end to end +19 % pairs/hour at 128 px (batch 8:
    # +27 %, twice the memory), neutral at 256 px; late layers (few positions) gain most. README,
    # "Speed and memory". A GPU, which one pair leaves mostly idle, should gain more.
    batch_size: Union[int, Literal["auto"]] = _field(
        4,
        "Optimise up to N Adam pairs together in one VGG pass when they share the pass (output size at every "
        "scale, layers, pooling, lr, steps, scales, precision, ema_decay); their loss weights, inputs and "
        "colour controls may differ (a style_weight sweep is one batch). L-BFGS pairs always run alone. "
        "A member's picture is of the same quality as its separate run (neutral scores within ~15 %), not the "
        "same pixels: batched convolutions round differently and Adam grows that into other brush strokes "
        "(README, Batching). 1 turns batching off; `auto`: as many as fit `memory_fraction` of free memory (at most 32; replaces `batch_pixels`).",
        identity=False,
        ge=1,
    )
    batch_pixels: int = _field(
        1_048_576,
        "At most this many output pixels per batch in total (bounds a batch's memory): the default "
        "batches 4 pairs at 512 px, 2 at 768, none at 1024.",
        identity=False,
        ge=1,
    )
    tile: Union[int, Literal["auto"], None] = _field(
        None,
        "Exact tiling for outputs larger than memory: a pass larger than N px (a multiple of 16) computes its "
        "loss tile by tile with the whole image's Grams, equal to the untiled loss up to float rounding; `auto`: "
        "tiles only where the pair would not fit `memory_fraction` of free memory. Empty: never. Tiled pairs run "
        "unbatched.",
    )
    memory_fraction: float = _field(
        0.8,
        "Share of the device's free memory that `auto` sizes, batches and tiles may plan to use.",
        identity=False,
        gt=0,
        le=1,
    )
    checkpoint_every: int = _field(50, "Save a resumable checkpoint every N loss evaluations.", identity=False, ge=1)
    report_every: float = _field(
        5.0,
        "While a job runs, rank 0 rewrites its report (`.stylebatch/report/`) every N minutes (the first time "
        "within a minute) and once more at the end; the pages reload themselves meanwhile. 0: `run` writes no report.",
        identity=False,
        ge=0,
    )
    max_attempts: int = _field(
        2, "A failed pair is retried on the next run until it has failed this many times.", identity=False, ge=1
    )
    keep_checkpoints: bool = _field(False, "Keep a pair's checkpoint after it is done.", identity=False)
    log_every: int = _field(10, "Record losses (and check for NaN) every N loss evaluations.", identity=False, ge=1)
    max_pixels: int = _field(
        50_000_000, "Refuse input images with more pixels than this (read from the header).", identity=False, ge=1
    )
    # Encoding only: the optimised float image is the same, so a change re-encodes a kept checkpoint
    # (or redoes the pair when none is kept) through the output's name and the record's `encoding`.
    format: str = _field(
        "png",
        "Output file format: `png` (lossless; settings in a text chunk), `jpg` or `webp` (settings in the EXIF "
        "UserComment; jpg drops transparency), `tiff` (Deflate; settings in the ImageDescription), 8 bits per "
        "channel; `png16` or `tiff16`: 16 bits per channel from the float result (`.png`/`.tif` files). Every "
        "format carries the content's ICC profile; a content in another profile than sRGB (Adobe RGB, Display "
        "P3) is converted to sRGB for the network and the output back into its profile. Changed on a finished "
        "pair, the new file is written from the previous one when that is lossless at 8 bits (png, tiff, webp at "
        "100) and the new format has 8 bits, or from the pair's kept final checkpoint (`keep_checkpoints`), "
        "without optimising again; otherwise (from jpg or lossy webp, or from 8 to 16 bits) the pair is made "
        "again and `run` says why. The previous file is kept in `.stylebatch/replaced/`.",
        identity=False,
        choices=OUTPUT_FORMATS,
        bookkeeping="not part of the pair's identity; a change re-encodes the output, see `format`",
    )
    quality: int = _field(
        95,
        "JPEG/WebP quality, 1-100 (webp at 100 is lossless); ignored for png.",
        identity=False,
        ge=1,
        le=100,
        bookkeeping="not part of the pair's identity; a change re-encodes the output, see `format`",
    )

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        # Adam's first steps move every pixel and channel by about lr (lr * sign(grad)): at 0.1 that was
        # independent +-0.1 jumps, the rainbow speckle of the old default; 0.05 halves the grain at the
        # same budget (docs/quality.md, choosing the defaults).
        return 1.0 if self.optimizer == "lbfgs" else 0.05

    @property
    def layers_used(self) -> list[str]:
        return [self.content_layer, *self.style_layers]

    @property
    def scale_sizes(self) -> list[int]:
        """Longer side of each coarse-to-fine pass, ascending; the last is `size` (one pass without `scales`)."""
        if isinstance(self.scales, dict):
            factor, low = self.scales.get("factor", 2.0), self.scales.get("min", 1.0)
            coarse, s = [], self.size / factor
            while factor > 1 and round(s) >= max(low, 1) and len(coarse) < 32:
                coarse.insert(0, round(s))
                s /= factor
            return coarse + [self.size]
        return [*(self.scales or []), self.size]

    def style_side(self, side: int) -> int:
        """Longer side of the style image(s) in a pass whose output's longer side is `side`."""
        return self.style_size or max(1, round(self.style_scale * side))

    @property
    def scale_ends(self) -> list[int]:
        """Cumulative evaluation budget at the end of each pass: `steps` split evenly, remainder last."""
        n = len(self.scale_sizes)
        return [self.steps * (k + 1) // n for k in range(n)]

    def identity(self) -> dict[str, Any]:
        """The keys that change pixels: part of a pair's id."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata["identity"]}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def encoding(self) -> dict[str, Any]:
        """How the output is encoded (its record keeps this, so a change re-encodes it)."""
        lossless = self.format in ("png", "tiff", "png16", "tiff16")  # quality means nothing there
        return {"format": self.format} if lossless else {"format": self.format, "quality": self.quality}


FIELDS = {f.name: f for f in dataclasses.fields(Config)}
HINTS = typing.get_type_hints(Config)


def cross_check(cfg: Config) -> list[str]:
    """Problems between keys, once every layer is merged."""
    problems = []
    if cfg.size in ("auto", "auto-up"):
        return problems  # checked again once the size is resolved (manifest.py)
    if isinstance(cfg.tile, int) and cfg.tile % (unit := grid_unit(cfg.layers_used)):
        problems.append(
            f"'tile' {cfg.tile}: with layer {max(cfg.layers_used, key=LAYER_INDEX.__getitem__)} tiles "
            f"must be a multiple of {unit} px"
        )
    if cfg.style_loss == "wasserstein" and cfg.tile is not None:
        problems.append("'style_loss' wasserstein is not computed tile by tile: use 'tile' with style_loss gram")
    if isinstance(cfg.scales, list) and cfg.scales and cfg.scales[-1] >= cfg.size:
        problems.append(
            f"'scales' {cfg.scales}: each coarse pass must be smaller than 'size' {cfg.size} "
            "(the final pass at 'size' is implied)"
        )
    elif cfg.steps < len(cfg.scale_sizes):
        problems.append(f"'steps' {cfg.steps} is fewer than the {len(cfg.scale_sizes)} passes of 'scales'")
    return problems


def resolve(layers: list[tuple[str, dict[str, Any]]]) -> Config:
    """Merge override layers (lowest precedence first) onto the defaults; each layer is
    (where it came from, mapping). Raises ConfigError listing every problem, each naming its source."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for source, mapping in layers:
        for key, value in mapping.items():
            found, value = check_value(key, value, FIELDS, HINTS)
            problems += [f"{source}: {p}" for p in found]
            if not found:
                values[key] = value
    if problems:
        raise ConfigError(problems)
    cfg = Config(**values)
    if problems := cross_check(cfg):
        raise ConfigError(problems)
    return cfg


def load_preset(name: str) -> tuple[str, dict[str, Any]]:
    """A bundled preset by name (`stylebatch/job/presets/<name>.yaml`) or a YAML file by path;
    returns (source label, overrides)."""
    path = Path(name)
    bundled = PRESETS / f"{name}.yaml"
    if not path.suffix and bundled.is_file():
        text, path = bundled.read_text(encoding="utf-8"), Path(f"presets/{name}.yaml")
    elif path.suffix and path.is_file():
        text = path.read_text(encoding="utf-8")
    else:
        known = preset_names()
        raise ConfigError(f"preset '{name}' not found{did_you_mean(name, known)}; known presets: {', '.join(known)}")
    data = load_yaml(text, str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a preset must be a mapping of config keys")
    return f"preset '{name}'", data


def parse_set(items: list[str]) -> dict[str, Any]:
    """`--set key=value` pairs; values are YAML (`steps=20`, `style_layers={conv1_1: 1}`)."""
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {shown(item)}: expected key=value")
        out[key.strip()] = load_yaml(text, f"--set {key.strip()}") if text.strip() else None
    return out
