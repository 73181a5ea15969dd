"""How good are the pictures? Run presets (and a sweep) through the product's own `stylebatch run`,
put other tools' outputs beside them, measure every picture with a yardstick the engine does not
optimise, and draw a full sheet and a crop sheet per network.

    python scripts/quality.py                                            # default fast, 9 pairs, 256 px, 100 evaluations
    python scripts/quality.py --presets default --sweep style_weight=0.001,0.01,0.1,1 --pairs chelsea__starry_night
    python scripts/quality.py --external vgg19_hed_features:crowsonkb=../scratch/kc_256_100
    python scripts/quality.py --files CONTENT STYLE OUTPUT [OUTPUT ...]    # measure pictures only

The measures (every one computed on the picture as saved, the content and style Lanczos-fitted to
its longer side), none of them a loss any preset optimises:

- `chroma`, `luma` (grain): mean |Laplacian| of the output's Cb and Cr (resp. Y) divided by the
  same of the style image; 1.0 = as grainy as the painting. Pixel-level speckle raises them,
  brush strokes a few pixels wide hardly do.
- `colour`: sliced Wasserstein-2 distance between the output's and the style's pixel distributions
  in CIELab (64 fixed directions, seed 0), in Lab units. Lower: the style's palette.
- `tex`: sliced Wasserstein texture distance (Heitz et al., CVPR 2021) between the output's and the
  style's feature distributions at relu1_1 ... relu4_1, each layer relative to the style's own
  spread, mean of the four; on the shared network (`tex_shared`) and on a fixed random-initialised
  VGG19 that no preset and no `--weights random` run uses (`tex_probe`). Lower: the style's texture.
- `structure`: Pearson correlation of the output's and the content's edge maps (Sobel gradient
  magnitude of the Gaussian-blurred luminance, sigma 2 px at 256 px). Higher: the content's
  shapes kept; the content itself scores 1.
- `content`, `style`: the Gram scorer (stylebatch/score.py), kept as one column; its style term is
  the Gram loss the engine optimises, so it flatters the product.

`default` means no preset (the config defaults); any other name is a bundled preset or a YAML
path. Each (weights, setting) is one `stylebatch run` of a temporary manifest with all the pairs,
at `--set batch_size=1` so each pair's seconds are its own. `--external WEIGHTS:LABEL=DIR` adds
another tool's outputs (`DIR/<pair>.png`, seconds from `DIR/times.txt` lines `<pair> <seconds>`)
to the table of the network WEIGHTS (`random` or a weights file's stem).

Outputs go to --out (default runs/quality): quality.md / quality.csv (one row per pair and
setting), sheet_<weights>.png (rows = pairs; content | style | each output) and
crops_<weights>.png (the central 128x128 of each picture at 3x, nearest neighbour, side by side). A
finished run is not redone when the script is run again (the product resumes): delete --out to
measure again. Images come from --images (default ../shared/images, else manifests/images), found
by file stem. Timings depend on the machine and its load: compare seconds within one table.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from stylebatch.cli import main as cli  # noqa: E402
from stylebatch.fit.pixels import to_tensor  # noqa: E402
from stylebatch.fit.score import LAYERS, SCORE_SIZE, Scorer, load_output, load_pair  # noqa: E402
from stylebatch.fit.vgg import VGGFeatures, load_vgg  # noqa: E402
from stylebatch.images import fit_size, resize  # noqa: E402
from stylebatch.job.weights import check_weights_path  # noqa: E402
from stylebatch.report.sheet import label_font  # noqa: E402

SHARED = REPO.parent / "shared"
SHARED_WEIGHTS = SHARED / "weights" / "vgg19_hed_features.pth"
DEFAULT_IMAGES = SHARED / "images" if (SHARED / "images").is_dir() else REPO / "manifests" / "images"
# Nine pairs over six photos and seven paintings: a face, a still life, a thin subject on a flat sky,
# a wide starfield and a flat grey wall; the first is the shared pair of the table.
PAIRS = [
    ("chelsea", "starry_night"),
    ("chelsea", "the_scream"),
    ("chelsea", "water_lilies_1919"),
    ("coffee", "composition_vii"),
    ("coffee", "water_lilies_1919"),
    ("rocket_portrait", "great_wave"),
    ("rocket_portrait", "manet_flowers"),
    ("hubble_wide", "starry_night"),
    ("brick_gray", "shipwreck"),
]
CELL = 256  # full sheet cell side in pixels: the outputs' own size at the default --size
CROP, ZOOM = 128, 3  # crop sheet: the central 128x128 of each picture, 3x nearest
# ---------------------------------------------------------------------------------------------
# The yardstick the engine does not optimise. Every measure takes PIL RGB images; the style and
# the content are compared at the output's own size (Lanczos-fitted to its longer side).
# ---------------------------------------------------------------------------------------------

TEXTURE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
# The second texture network: torchvision's VGG19 initialisation under a seed no preset and no
# `--weights random` run uses (those use vgg.RANDOM_WEIGHTS_SEED = 0), so no run can have fitted it.
PROBE_SEED = 20210621
PROJECTION_SEED = 0  # every sliced distance uses the same fixed directions
COLOUR_PROJECTIONS = 64
STRUCTURE_SIGMA = 2.0  # px at 256 px output (scaled with the output's size): strokes are texture, not structure


def _array(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0


def _at(img: Image.Image, like: Image.Image) -> Image.Image:
    """`img` Lanczos-fitted to the longer side of `like` (aspect kept)."""
    return resize(img.convert("RGB"), fit_size(*img.size, max(like.size)))


def ycbcr(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB in [0, 1] -> full-range BT.601 YCbCr (JPEG's), Cb/Cr centred on 0.5."""
    m = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
    return rgb @ m.T + np.array([0.0, 0.5, 0.5])


def laplacian_energy(channel: np.ndarray) -> float:
    """Mean |4-neighbour Laplacian| over the interior: what pixel-level speckle adds and strokes do not."""
    c = channel
    lap = c[1:-1, :-2] + c[1:-1, 2:] + c[:-2, 1:-1] + c[2:, 1:-1] - 4 * c[1:-1, 1:-1]
    return float(np.abs(lap).mean())


@dataclass(frozen=True)
class Grain:
    chroma: float  # mean |Laplacian| of Cb and Cr, output / style at the same size; 1 = as grainy as the painting
    luma: float  # the same of Y


def grain(output: Image.Image, style: Image.Image) -> Grain:
    out, ref = ycbcr(_array(output)), ycbcr(_array(_at(style, output)))
    chroma = lambda x: (laplacian_energy(x[..., 1]) + laplacian_energy(x[..., 2])) / 2  # noqa: E731
    return Grain(
        chroma(out) / max(chroma(ref), 1e-12), laplacian_energy(out[..., 0]) / max(laplacian_energy(ref[..., 0]), 1e-12)
    )


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) sRGB in [0, 1] -> CIELab (D65), L in [0, 100]."""
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = np.array(
        [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
    )
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def _directions(n: int, dim: int, seed: int) -> torch.Tensor:
    """n fixed unit directions in R^dim, (dim, n), float64."""
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(dim, n, generator=g, dtype=torch.float64)
    return d / d.norm(dim=0, keepdim=True)


def _quantiles(sorted_values: torch.Tensor, n: int) -> torch.Tensor:
    """(N, P) values sorted along dim 0 -> (n, P), linearly interpolated at n evenly spaced ranks,
    so two samples of different sizes compare rank for rank."""
    m = sorted_values.shape[0]
    pos = torch.linspace(0, m - 1, n, dtype=torch.float64)
    lo = pos.floor().long()
    hi = (lo + 1).clamp_max(m - 1)
    t = (pos - lo).unsqueeze(1)
    return sorted_values[lo] * (1 - t) + sorted_values[hi] * t


def sliced_w2(x: torch.Tensor, y: torch.Tensor, directions: torch.Tensor) -> float:
    """Sliced Wasserstein-2 distance between two point clouds x (N, D) and y (M, D): the root mean,
    over the fixed directions, of the squared W2 between the 1-D projections (sorted, rank for rank)."""
    px, _ = (x.double() @ directions).sort(0)
    py, _ = (y.double() @ directions).sort(0)
    n = min(px.shape[0], py.shape[0])
    return float((_quantiles(px, n) - _quantiles(py, n)).pow(2).mean().sqrt())


def colour(output: Image.Image, style: Image.Image) -> float:
    """Sliced W2 between the output's and the style's pixel distributions in CIELab (Lab units)."""
    lab = lambda img: torch.from_numpy(srgb_to_lab(_array(img)).reshape(-1, 3))  # noqa: E731
    return sliced_w2(lab(output), lab(style), _directions(COLOUR_PROJECTIONS, 3, PROJECTION_SEED))


def probe_network() -> VGGFeatures:
    """The fixed random-initialised VGG19 (seed PROBE_SEED) the texture measure also reads."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(PROBE_SEED)
        features = torchvision.models.vgg19().features
    return VGGFeatures(features, TEXTURE_LAYERS[-1], channels_last=False)


class Texture:
    """Heitz et al. (CVPR 2021) sliced Wasserstein texture distance: at each of relu1_1 ... relu4_1,
    the output's and the style's feature vectors projected on C fixed directions (C = the layer's
    channels), sorted and compared rank for rank. Each layer's distance is divided by the root mean
    square of the style's projected features, so layers and networks of any activation scale weigh
    alike; the measure is the mean over the four layers (0: the same feature distributions)."""

    def __init__(self, net: VGGFeatures):
        self.net = net
        self.directions: dict[str, torch.Tensor] = {}

    def features(self, img: Image.Image) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            feats = self.net(to_tensor(img.convert("RGB")), list(TEXTURE_LAYERS))
        return {k: v[0].flatten(1).T.double() for k, v in feats.items()}  # (positions, C)

    def __call__(self, output: Image.Image, style: Image.Image) -> float:
        fo, fs = self.features(output), self.features(_at(style, output))
        total = 0.0
        for i, name in enumerate(TEXTURE_LAYERS):
            c = fo[name].shape[1]
            if name not in self.directions:
                self.directions[name] = _directions(c, c, PROJECTION_SEED + i)
            d = self.directions[name]
            scale = (fs[name] @ d).pow(2).mean().sqrt().clamp_min(1e-12)
            total += sliced_w2(fo[name], fs[name], d) / float(scale)
        return total / len(TEXTURE_LAYERS)


def _gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a 2-D array, reflected at the borders."""
    r = max(1, min(int(3 * sigma + 0.5), min(x.shape) - 1))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float64) / sigma) ** 2)
    k = k / k.sum()
    t = torch.nn.functional.pad(torch.from_numpy(x)[None, None], (r, r, r, r), mode="reflect")
    t = torch.nn.functional.conv2d(t, k.view(1, 1, 1, -1))
    return torch.nn.functional.conv2d(t, k.view(1, 1, -1, 1))[0, 0].numpy()


def edge_map(luma: np.ndarray, sigma: float) -> np.ndarray:
    """Sobel gradient magnitude of the blurred luminance."""
    b = np.pad(_gaussian_blur(luma, sigma), 1, mode="edge")
    gx = (b[:-2, 2:] + 2 * b[1:-1, 2:] + b[2:, 2:]) - (b[:-2, :-2] + 2 * b[1:-1, :-2] + b[2:, :-2])
    gy = (b[2:, :-2] + 2 * b[2:, 1:-1] + b[2:, 2:]) - (b[:-2, :-2] + 2 * b[:-2, 1:-1] + b[:-2, 2:])
    return np.hypot(gx, gy)


def structure(output: Image.Image, content: Image.Image) -> float:
    """Pearson correlation of the output's and the content's edge maps (blurred Sobel gradient
    magnitude of the luminance, the content at the output's size); 1: the same edges, ~0: unrelated."""
    content = resize(content.convert("RGB"), output.size)
    sigma = STRUCTURE_SIGMA * max(output.size) / 256
    a = edge_map(ycbcr(_array(output))[..., 0], sigma).ravel()
    b = edge_map(ycbcr(_array(content))[..., 0], sigma).ravel()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / max(np.sqrt((a * a).sum() * (b * b).sum()), 1e-12))


# ---------------------------------------------------------------------------------------------
# Running and tabulating
# ---------------------------------------------------------------------------------------------

MEASURES = ("content", "style", "chroma", "luma", "colour", "tex_shared", "tex_probe", "structure")


@dataclass
class Row:
    weights: str
    pair: str
    setting: str
    evaluations: int | None
    seconds: float | None
    values: dict[str, float] = field(default_factory=dict)  # MEASURES
    image: Path | None = None


def pair_name(content: str, style: str) -> str:
    return f"{Path(content).stem}__{Path(style).stem}"


def find_image(images: Path, stem: str) -> Path:
    found = sorted(p for p in images.rglob(f"{stem}.*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not found:
        raise SystemExit(f"error: no image named {stem}.* under {images}")
    return found[0]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--presets",
        nargs="*",
        default=["default", "fast"],
        metavar="NAME",
        help="`default` (no preset), a bundled preset, or a YAML path (default: default fast)",
    )
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every setting (repeatable)",
    )
    p.add_argument("--sweep", metavar="KEY=V1,V2,...", help="run every preset at each value of one key")
    p.add_argument(
        "--weights",
        action="append",
        metavar="W",
        help="`random` or a VGG19 state dict path; repeatable (default: random + the shared file)",
    )
    p.add_argument(
        "--external",
        action="append",
        default=[],
        metavar="WEIGHTS:LABEL=DIR",
        help="another tool's outputs DIR/<pair>.png, shown as LABEL in the WEIGHTS table",
    )
    p.add_argument("--pairs", nargs="+", metavar="NAME", help="only these pairs (content__style), default all nine")
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="where the pairs' images are (by stem)")
    p.add_argument("--size", type=int, default=256, help="output size, longer side (default 256)")
    p.add_argument(
        "--steps", default="100", help="loss evaluations per pair (default 100), or `preset`: each preset's own"
    )
    p.add_argument("--out", type=Path, default=REPO / "runs" / "quality", help="directory for outputs, table, sheets")
    p.add_argument("--files", nargs="+", metavar="IMAGE", help="CONTENT STYLE OUTPUT...: only measure these pictures")
    args = p.parse_args(argv)
    if args.files:
        if len(args.files) < 3:
            p.error("--files: CONTENT STYLE OUTPUT [OUTPUT ...]")
        return args
    if not args.weights:
        args.weights = ["random"] + ([str(SHARED_WEIGHTS)] if SHARED_WEIGHTS.is_file() else [])
    for w in args.weights:
        if problem := check_weights_path(w):
            p.error(problem)
    names = [pair_name(c, s) for c, s in PAIRS]
    for name in args.pairs or []:
        if name not in names:
            p.error(f"--pairs {name}: unknown pair (choose from {', '.join(names)})")
    args.pair_list = [pair for pair, name in zip(PAIRS, names) if not args.pairs or name in args.pairs]
    if args.steps != "preset" and not args.steps.isdigit():
        p.error("--steps: a number of loss evaluations, or `preset`")
    args.sweep_values = []
    if args.sweep:
        key, _, values = args.sweep.partition("=")
        if not key or not values:
            p.error("--sweep: KEY=V1,V2,... (e.g. style_weight=0.1,1,10,100)")
        args.sweep_key, args.sweep_values = key, values.split(",")
    args.externals = []
    for item in args.external:
        head, sep, folder = item.partition("=")
        weights, colon, label = head.partition(":")
        if not sep or not colon or not label or not Path(folder).is_dir():
            p.error(f"--external {item}: expected WEIGHTS:LABEL=DIR with an existing DIR")
        args.externals.append((weights, label, Path(folder)))
    return args


def settings(args: argparse.Namespace) -> list[tuple[str, str, list[str]]]:
    """(label, preset, extra --set values) for every preset x sweep value, in table order."""
    out = []
    for preset in args.presets:
        label = Path(preset).stem if preset.endswith((".yaml", ".yml")) else preset
        for value in args.sweep_values or [None]:
            if value is None:
                out.append((label, preset, []))
            else:
                out.append((f"{label} {args.sweep_key}={value}", preset, [f"{args.sweep_key}={value}"]))
    return out


def short(weights: str) -> str:
    return weights if weights in ("random", "imagenet") else Path(weights).stem


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def write_manifest(path: Path, pairs: list[tuple[str, str]], images: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# written by scripts/quality.py", "pairs:"]
    lines += [
        f"  - {{content: {json.dumps(str(find_image(images, c)))}, style: {json.dumps(str(find_image(images, s)))}}}"
        for c, s in pairs
    ]
    path.write_text("\n".join(lines) + "\n")


def run_setting(args: argparse.Namespace, weights: str, preset: str, extra: list[str], outdir: Path) -> dict[str, dict]:
    """One `stylebatch run` over all pairs for one (weights, setting); returns status records by pair name."""
    manifest = outdir / "quality_manifest.yaml"
    write_manifest(manifest, args.pair_list, args.images)
    sets = ["batch_size=1", f"size={args.size}"] + ([] if args.steps == "preset" else [f"steps={args.steps}"])
    sets += args.sets + extra
    argv = ["run", str(manifest), "--weights", weights, "--out", str(outdir)]
    argv += [] if preset == "default" else ["--config", preset]
    for s in sets:
        argv += ["--set", s]
    print(f"# stylebatch {' '.join(argv)}", flush=True)
    code = cli.main(argv)
    if code != 0:
        raise SystemExit(f"error: stylebatch run exited {code} for {preset} {extra} on {short(weights)}")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        cli.main(["status", str(outdir), "--json"])
    return {p["name"]: p for p in json.loads(buf.getvalue())["pairs"]}


class Yardstick:
    """Every measure of one (content, style) pair; the networks are built once."""

    def __init__(self, scorer_weights: str):
        self.gram_net = load_vgg(scorer_weights, LAYERS)
        self.textures = {"tex_probe": Texture(probe_network())}
        if SHARED_WEIGHTS.is_file():
            self.textures["tex_shared"] = Texture(load_vgg(str(SHARED_WEIGHTS), list(TEXTURE_LAYERS)))

    def measure(
        self, content_path: Path, style_path: Path, outputs: dict[str, Image.Image]
    ) -> dict[str, dict[str, float]]:
        """{label: {measure: value}} for the outputs, plus the content and style images themselves."""
        c_img, s_img = load_pair(content_path, style_path, SCORE_SIZE)
        scorer = Scorer(self.gram_net, c_img, s_img)
        pictures = {"content image": c_img, "style image": _at(s_img, c_img), **outputs}
        out = {}
        for label, img in pictures.items():
            img = img.convert("RGB")
            gram = scorer(img)
            g = grain(img, s_img)
            values = {
                "content": gram.content,
                "style": gram.style,
                "chroma": g.chroma,
                "luma": g.luma,
                "colour": colour(img, s_img),
                "structure": structure(img, c_img),
            }
            for name, texture in self.textures.items():
                values[name] = texture(img, s_img)
            out[label] = values
        return out


def external_seconds(folder: Path) -> dict[str, float]:
    times = folder / "times.txt"
    if not times.is_file():
        return {}
    return {
        line.split()[0]: float(line.split()[1]) for line in times.read_text().splitlines() if len(line.split()) == 2
    }


def measure(args: argparse.Namespace) -> list[Row]:
    rows = []
    for weights in args.weights:
        runs = []
        for label, preset, extra in settings(args):
            outdir = args.out / short(weights) / slug(label)
            runs.append((label, outdir, run_setting(args, weights, preset, extra, outdir)))
        externals = [
            (label, folder, external_seconds(folder)) for w, label, folder in args.externals if w == short(weights)
        ]
        stick = Yardstick(weights)
        for content, style in args.pair_list:
            name = pair_name(content, style)
            images = {label: outdir / f"{name}.png" for label, outdir, _ in runs}
            # Another tool's folder may hold only some of the pairs: the others are left blank.
            images.update(
                {label: folder / f"{name}.png" for label, folder, _ in externals if (folder / f"{name}.png").is_file()}
            )
            values = stick.measure(
                find_image(args.images, content),
                find_image(args.images, style),
                {label: load_output(path) for label, path in images.items()},
            )
            for ref in ("content image", "style image"):
                rows.append(Row(short(weights), name, ref, None, None, values[ref]))
            for label, _folder, secs in externals:
                if label not in images:
                    continue
                rows.append(Row(short(weights), name, label, None, secs.get(name), values[label], images[label]))
            for label, _outdir, records in runs:
                rec = records[name]
                rows.append(
                    Row(short(weights), name, label, rec["steps_done"], rec["seconds"], values[label], images[label])
                )
    return rows


HEADER = "| weights | pair | setting | evals | seconds | content | style | chroma | luma | colour | tex shared | tex probe | structure |"


def table(rows: list[Row]) -> str:
    lines = [HEADER, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        evals = "" if r.evaluations is None else str(r.evaluations)
        secs = "" if r.seconds is None else f"{r.seconds:.1f}"
        cells = " | ".join("" if m not in r.values else f"{r.values[m]:.3g}" for m in MEASURES)
        lines.append(f"| {r.weights} | {r.pair} | {r.setting} | {evals} | {secs} | {cells} |")
    return "\n".join(lines)


def sweep_summary(rows: list[Row], args: argparse.Namespace) -> str:
    """Per (weights, preset, pair): are the Gram content and style scores (and the texture distance)
    monotone over the sweep, their spans (max / min), the chroma grain of each picture, and the mean
    |pixel difference| (in 1/255) between neighbouring outputs."""
    lines = []
    mono = lambda v: all(x <= y for x, y in zip(v, v[1:])) or all(x >= y for x, y in zip(v, v[1:]))  # noqa: E731
    span = lambda v: max(v) / max(min(v), 1e-12)  # noqa: E731
    for weights in dict.fromkeys(r.weights for r in rows):
        for preset in args.presets:
            label = Path(preset).stem if preset.endswith((".yaml", ".yml")) else preset
            for content, style in args.pair_list:
                name = pair_name(content, style)
                sw = [r for r in rows if r.weights == weights and r.pair == name and r.setting.startswith(label + " ")]
                arrays = [np.asarray(Image.open(r.image).convert("RGB"), dtype=np.float64) for r in sw]
                diffs = [float(np.abs(a - b).mean()) for a, b in zip(arrays, arrays[1:]) if a.shape == b.shape]
                parts = []
                for m in ("content", "style", "tex_shared"):
                    v = [r.values[m] for r in sw if m in r.values]
                    if v:
                        parts.append(f"{m} monotone {mono(v)} span {span(v):.1f}x")
                chroma = ", ".join(f"{r.values['chroma']:.2f}" for r in sw)
                lines.append(
                    f"{weights} {label} {name}: {', '.join(parts)}; chroma {chroma}; "
                    f"neighbour |diff| {', '.join(f'{d:.1f}' for d in diffs)} /255"
                )
    return "\n".join(lines)


def caption(r: Row) -> str:
    v = r.values
    return f"chroma {v['chroma']:.2f} colour {v['colour']:.1f} tex {v.get('tex_shared', v['tex_probe']):.3f} struct {v['structure']:.2f}"


def _contenders(rows: list[Row], weights: str) -> list[str]:
    return list(dict.fromkeys(r.setting for r in rows if r.image is not None and r.weights == weights))


def sheet(rows: list[Row], weights: str, pairs: list[tuple[str, str]], images: Path, path: Path) -> None:
    """Rows = pairs; columns = content | style | each setting's output, captioned with its measures."""
    labels = _contenders(rows, weights)
    cap, font = 30, label_font(12)
    img = Image.new("RGB", ((2 + len(labels)) * CELL, len(pairs) * (CELL + cap)), "white")
    draw = ImageDraw.Draw(img)
    for i, (content, style) in enumerate(pairs):
        name = pair_name(content, style)
        mine = {r.setting: r for r in rows if r.weights == weights and r.pair == name}
        cells = [
            (find_image(images, content), content, mine["content image"]),
            (find_image(images, style), style, mine["style image"]),
        ]
        cells += [(mine[label].image, label, mine[label]) if label in mine else None for label in labels]
        y = i * (CELL + cap)
        for j, cell in enumerate(cells):
            if cell is None:
                continue
            file, text, r = cell
            pic = Image.open(file).convert("RGB")
            pic = resize(pic, fit_size(*pic.size, CELL))  # up or down: a 128 px output fills its cell too
            img.paste(pic, (j * CELL + (CELL - pic.width) // 2, y + (CELL - pic.height) // 2))
            draw.text((j * CELL + 4, y + CELL + 1), text[:40], fill="black", font=font)
            draw.text((j * CELL + 4, y + CELL + 15), caption(r)[:46], fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def central_crop(img: Image.Image, size: int = CROP) -> Image.Image:
    w, h = img.size
    cw, ch = min(size, w), min(size, h)
    left, top = (w - cw) // 2, (h - ch) // 2
    return img.crop((left, top, left + cw, top + ch))


def crop_sheet(
    rows: list[Row], weights: str, pairs: list[tuple[str, str]], images: Path, path: Path, size: int | None = None
) -> None:
    """Rows = pairs; columns = the content and each contender, the central CROP x CROP of each picture
    (the content at the outputs' size) magnified ZOOM x with nearest neighbour, so single-pixel
    speckle shows as ZOOM x ZOOM blocks."""
    labels = _contenders(rows, weights)
    side, cap, font = CROP * ZOOM, 18, label_font(14)
    img = Image.new("RGB", ((1 + len(labels)) * side, len(pairs) * (side + cap)), "white")
    draw = ImageDraw.Draw(img)
    for i, (content, style) in enumerate(pairs):
        name = pair_name(content, style)
        mine = {r.setting: r for r in rows if r.weights == weights and r.pair == name}
        outputs = {label: Image.open(mine[label].image).convert("RGB") for label in labels if label in mine}
        long_side = size or (max(next(iter(outputs.values())).size) if outputs else CELL)
        c_img = Image.open(find_image(images, content)).convert("RGB")
        pics = [(resize(c_img, fit_size(*c_img.size, long_side)), f"{name} content")]
        pics += [
            (outputs[label], f"{label}: chroma {mine[label].values['chroma']:.2f}") if label in outputs else None
            for label in labels
        ]
        y = i * (side + cap)
        for j, cell in enumerate(pics):
            if cell is None:
                continue
            pic, text = cell
            crop = central_crop(pic)
            crop = crop.resize((crop.width * ZOOM, crop.height * ZOOM), Image.Resampling.NEAREST)
            img.paste(crop, (j * side, y + cap))
            draw.text((j * side + 4, y + 1), text[:48], fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def measure_files(paths: list[str]) -> int:
    content, style, *outputs = (Path(p) for p in paths)
    weights = str(SHARED_WEIGHTS) if SHARED_WEIGHTS.is_file() else "random"
    values = Yardstick(weights).measure(content, style, {str(p): load_output(p) for p in outputs})
    print(f"{'image':<48} " + " ".join(f"{m:>10}" for m in MEASURES))
    for label, v in values.items():
        print(f"{label[-48:]:<48} " + " ".join(f"{v.get(m, float('nan')):>10.4g}" for m in MEASURES))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.files:
        return measure_files(args.files)
    rows = measure(args)
    text = table(rows)
    print(text)
    summary = sweep_summary(rows, args) if args.sweep_values else ""
    if summary:
        print(summary)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quality.md").write_text(text + "\n" + (f"\n{summary}\n" if summary else ""))
    with open(args.out / "quality.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["weights", "pair", "setting", "evaluations", "seconds", *MEASURES, "image"])
        for r in rows:
            writer.writerow(
                [
                    r.weights,
                    r.pair,
                    r.setting,
                    r.evaluations,
                    r.seconds,
                    *(r.values.get(m, "") for m in MEASURES),
                    r.image or "",
                ]
            )
    for weights in dict.fromkeys(r.weights for r in rows):
        sheet(rows, weights, args.pair_list, args.images, args.out / f"sheet_{slug(weights)}.png")
        crop_sheet(rows, weights, args.pair_list, args.images, args.out / f"crops_{slug(weights)}.png")
        print(f"sheets: {args.out / f'sheet_{slug(weights)}.png'} {args.out / f'crops_{slug(weights)}.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
