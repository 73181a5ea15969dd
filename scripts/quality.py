"""How good are the pictures? Run presets (and a sweep) through the product's own `stylebatch run`,
score every output with the neutral scorer (stylebatch/fit/score.py), print one table and draw one sheet
per network.

    python scripts/quality.py                                   # default fast modern, 9 pairs, 256 px, 100 evaluations
    python scripts/quality.py --presets default --sweep style_weight=1,10,100,1000 --pairs chelsea__starry_night
    python scripts/quality.py --presets default my_try.yaml --set lr=0.05 --weights random

`default` means no preset (the config defaults); any other name is a bundled preset or a YAML
path. Each (weights, setting) is one `stylebatch run` of a temporary manifest with all the pairs, at
`--set batch_size=1` so each pair's seconds are its own. The table has, per pair, the content and
the style image's own scores (the corners), then one row per setting: evaluations, seconds (the
pair's wall time as `stylebatch status` records it: targets, fit and save), content, style. Lower is
better on both. With `--sweep`, it also prints, per pair, whether the scores are monotone over the
sweep, their span (max / min), and the mean absolute pixel difference between neighbouring outputs.

Outputs, the table (quality.csv and quality.md) and the sheets (sheet_<weights>.png: rows = pairs,
columns = content | style | each output) go to --out (default runs/quality). A finished run is not
redone when the script is run again (the product resumes): delete --out to measure again.
Weights default to `random` plus the shared HED-VGG16 file (../shared/weights/vgg19_hed_features.pth)
when it exists. Timings depend on the machine and its load: compare seconds within one table.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from stylebatch.cli import main as cli  # noqa: E402
from stylebatch.fit.score import LAYERS, SCORE_SIZE, Scorer, load_output, load_pair  # noqa: E402
from stylebatch.fit.vgg import load_vgg  # noqa: E402
from stylebatch.images import fit_size, resize  # noqa: E402
from stylebatch.job.weights import check_weights_path  # noqa: E402
from stylebatch.report.sheet import label_font  # noqa: E402

IMAGES = REPO / "manifests" / "images"
SHARED_WEIGHTS = REPO.parent / "shared" / "weights" / "vgg19_hed_features.pth"
# Three photos x five paintings, nine pairs; the first is the shared pair of the table.
PAIRS = [
    ("chelsea.jpg", "starry_night.jpg"),
    ("chelsea.jpg", "great_wave.jpg"),
    ("chelsea.jpg", "the_scream.jpg"),
    ("coffee.jpg", "starry_night.jpg"),
    ("coffee.jpg", "composition_vii.jpg"),
    ("coffee.jpg", "shipwreck.jpg"),
    ("rocket_portrait.jpg", "great_wave.jpg"),
    ("rocket_portrait.jpg", "the_scream.jpg"),
    ("rocket_portrait.jpg", "composition_vii.jpg"),
]
CELL = 256  # sheet cell side in pixels: the outputs' own size at the default --size


@dataclass
class Row:
    weights: str
    pair: str
    setting: str
    evaluations: int | None
    seconds: float | None
    content: float
    style: float
    image: Path | None = None


def pair_name(content: str, style: str) -> str:
    return f"{Path(content).stem}__{Path(style).stem}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--presets",
        nargs="+",
        default=["default", "fast", "modern"],
        metavar="NAME",
        help="`default` (no preset), a bundled preset, or a YAML path (default: default fast modern)",
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
    p.add_argument("--pairs", nargs="+", metavar="NAME", help="only these pairs (content__style), default all nine")
    p.add_argument("--size", type=int, default=256, help="output size, longer side (default 256)")
    p.add_argument(
        "--steps", default="100", help="loss evaluations per pair (default 100), or `preset`: each preset's own"
    )
    p.add_argument("--out", type=Path, default=REPO / "runs" / "quality", help="directory for outputs, table, sheets")
    args = p.parse_args(argv)
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


def write_manifest(path: Path, pairs: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# written by scripts/quality.py", "pairs:"]
    lines += [f"  - {{content: {json.dumps(str(IMAGES / c))}, style: {json.dumps(str(IMAGES / s))}}}" for c, s in pairs]
    path.write_text("\n".join(lines) + "\n")


def run_setting(args: argparse.Namespace, weights: str, preset: str, extra: list[str], outdir: Path) -> dict[str, dict]:
    """One `stylebatch run` over all pairs for one (weights, setting); returns status records by pair name."""
    manifest = outdir / "quality_manifest.yaml"
    write_manifest(manifest, args.pair_list)
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


def measure(args: argparse.Namespace) -> list[Row]:
    rows = []
    for weights in args.weights:
        runs = []
        for label, preset, extra in settings(args):
            outdir = args.out / short(weights) / slug(label)
            runs.append((label, outdir, run_setting(args, weights, preset, extra, outdir)))
        vgg = load_vgg(weights, LAYERS)
        for content, style in args.pair_list:
            name = pair_name(content, style)
            c_img, s_img = load_pair(IMAGES / content, IMAGES / style, SCORE_SIZE)
            scorer = Scorer(vgg, c_img, s_img)
            for ref, score in scorer.references().items():
                rows.append(Row(short(weights), name, ref, None, None, score.content, score.style))
            for label, outdir, records in runs:
                rec = records[name]
                image = outdir / f"{name}.png"
                score = scorer(load_output(image))
                rows.append(
                    Row(
                        short(weights),
                        name,
                        label,
                        rec["steps_done"],
                        rec["seconds"],
                        score.content,
                        score.style,
                        image,
                    )
                )
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        "| weights | pair | setting | evaluations | seconds | content | style |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        evals = "" if r.evaluations is None else str(r.evaluations)
        secs = "" if r.seconds is None else f"{r.seconds:.1f}"
        lines.append(f"| {r.weights} | {r.pair} | {r.setting} | {evals} | {secs} | {r.content:.4g} | {r.style:.4g} |")
    return "\n".join(lines)


def sweep_summary(rows: list[Row], args: argparse.Namespace) -> str:
    """Per (weights, preset, pair): are content and style monotone over the sweep, their spans, and
    the mean |pixel difference| (in 1/255) between neighbouring outputs."""
    lines = []
    for weights in dict.fromkeys(r.weights for r in rows):
        for preset in args.presets:
            label = Path(preset).stem if preset.endswith((".yaml", ".yml")) else preset
            for content, style in args.pair_list:
                name = pair_name(content, style)
                sw = [r for r in rows if r.weights == weights and r.pair == name and r.setting.startswith(label + " ")]
                cs, ss = [r.content for r in sw], [r.style for r in sw]
                arrays = [np.asarray(Image.open(r.image).convert("RGB"), dtype=np.float64) for r in sw]
                diffs = [float(np.abs(a - b).mean()) for a, b in zip(arrays, arrays[1:]) if a.shape == b.shape]
                mono = lambda v: all(x <= y for x, y in zip(v, v[1:])) or all(x >= y for x, y in zip(v, v[1:]))  # noqa: E731
                span = lambda v: max(v) / max(min(v), 1e-12)  # noqa: E731
                lines.append(
                    f"{weights} {label} {name}: content monotone {mono(cs)} span {span(cs):.1f}x, "
                    f"style monotone {mono(ss)} span {span(ss):.1f}x, "
                    f"neighbour |diff| {', '.join(f'{d:.1f}' for d in diffs)} /255"
                )
    return "\n".join(lines)


def sheet(rows: list[Row], weights: str, pairs: list[tuple[str, str]], path: Path) -> None:
    """Rows = pairs; columns = content | style | each setting's output, captioned with its scores."""
    labels = list(dict.fromkeys(r.setting for r in rows if r.image is not None))
    caption, font = 30, label_font(12)
    img = Image.new("RGB", ((2 + len(labels)) * CELL, len(pairs) * (CELL + caption)), "white")
    draw = ImageDraw.Draw(img)
    for i, (content, style) in enumerate(pairs):
        name = pair_name(content, style)
        mine = {r.setting: r for r in rows if r.weights == weights and r.pair == name}
        cells = [
            (IMAGES / content, f"{Path(content).stem}", mine["content image"]),
            (IMAGES / style, f"{Path(style).stem}", mine["style image"]),
        ]
        cells += [(mine[label].image, label, mine[label]) for label in labels]
        y = i * (CELL + caption)
        for j, (file, text, r) in enumerate(cells):
            pic = Image.open(file).convert("RGB")
            pic = resize(pic, fit_size(*pic.size, CELL))  # up or down: a 128 px output fills its cell too
            img.paste(pic, (j * CELL + (CELL - pic.width) // 2, y + (CELL - pic.height) // 2))
            draw.text((j * CELL + 4, y + CELL + 1), text[:40], fill="black", font=font)
            draw.text(
                (j * CELL + 4, y + CELL + 15), f"content {r.content:.3g}  style {r.style:.3g}", fill="black", font=font
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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
        writer.writerow(["weights", "pair", "setting", "evaluations", "seconds", "content", "style", "image"])
        for r in rows:
            writer.writerow([r.weights, r.pair, r.setting, r.evaluations, r.seconds, r.content, r.style, r.image or ""])
    for weights in dict.fromkeys(r.weights for r in rows):
        sheet(rows, weights, args.pair_list, args.out / f"sheet_{slug(weights)}.png")
        print(f"sheet: {args.out / f'sheet_{slug(weights)}.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
