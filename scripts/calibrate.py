"""Check that the presets stylise on any network: one fit per (preset, weights) through the product's
own `engine.stylize`, then the saved output scored with the module's own (unweighted) losses.

    .venv/bin/python scripts/calibrate.py --save runs/calibration

Acceptance, per (preset, weights), at --size 256 and --steps 100 loss evaluations:
  style ratio   = style loss of the output / style loss of the content image itself      <= 0.2
  content ratio = content loss of the output / content loss of the style image (resized
                  to the output's exact size)                                            <= 0.5
Both losses are the per-term, unweighted ones of `StyleTransferModule.losses` (normalised as the
preset says), against the same content features and style Grams the fit optimised. "The output" is
the PNG `engine.stylize` saved (clamped to [0, 1], 8 bits), read back from disk.

Weights default to `random` plus the shared HED-VGG16 file (../shared/weights/vgg19_hed_features.pth,
activations ~100x torchvision's) when it exists: a preset must not depend on one network's loss scale.
Exits 1 if any row fails.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from stylebatch.config import PRESET_DIR, Config, load_preset, parse_set, resolve  # noqa: E402
from stylebatch.engine import Member, NonFiniteLossError, PairHooks, stylize  # noqa: E402
from stylebatch.inputs import load_images, pass_inputs  # noqa: E402
from stylebatch.module import StyleTransferModule  # noqa: E402
from stylebatch.images import load_image, resize, to_tensor  # noqa: E402
from stylebatch.engine import module_for  # noqa: E402
from stylebatch.vgg import LAYER_INDEX, VGGFeatures, check_weights_path, load_vgg  # noqa: E402

SHARED_WEIGHTS = REPO.parent / "shared" / "weights" / "vgg19_hed_features.pth"
MAX_STYLE_RATIO = 0.2
MAX_CONTENT_RATIO = 0.5


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", action="append", metavar="W",
                   help="`random` or a VGG19 state dict path; repeatable (default: random + the shared file)")
    p.add_argument("--presets", nargs="+", metavar="NAME", help="presets in configs/ (default: all)")
    p.add_argument("--size", type=int, default=256, help="output size, longer side (default 256)")
    p.add_argument("--steps", type=int, default=100, help="loss evaluations per fit (default 100)")
    p.add_argument("--content", type=Path, default=REPO / "manifests/images/chelsea.jpg")
    p.add_argument("--style", type=Path, default=REPO / "manifests/images/great_wave.jpg")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="extra override on top of every preset (YAML value), for exploring")
    p.add_argument("--save", type=Path, help="directory for the output PNGs (default: a temp dir, deleted)")
    args = p.parse_args(argv)
    if not args.weights:
        args.weights = ["random"] + ([str(SHARED_WEIGHTS)] if SHARED_WEIGHTS.is_file() else [])
    if not args.presets:
        args.presets = sorted(path.stem for path in PRESET_DIR.glob("*.yaml"))
    for weights in args.weights:
        if problem := check_weights_path(weights):
            p.error(problem)
    return args


def preset_config(preset: str, args: argparse.Namespace) -> Config:
    """The preset as a pair would get it, at the calibration's size and budget (and any --set)."""
    return resolve([load_preset(preset), ("calibration", {"size": args.size, "steps": args.steps}),
                    ("--set", parse_set(args.sets))])


def short_name(weights: str) -> str:
    return weights if weights == "random" else Path(weights).stem


@torch.no_grad()
def score(module: StyleTransferModule, image: torch.Tensor) -> tuple[float, float]:
    """(content, style) unweighted per-term losses of one (1, 3, H, W) image, by the module's code."""
    losses = module.losses(image)
    return float(losses["content"].sum()), float(losses["style"].sum())


def calibrate_one(preset: str, weights: str, vgg: VGGFeatures, args: argparse.Namespace, outdir: Path) -> dict:
    """Fit one (preset, weights) with `engine.stylize`, then score the saved output."""
    cfg = preset_config(preset, args)
    output = outdir / f"{Path(preset).stem}__{short_name(weights)}.png"
    with tempfile.TemporaryDirectory() as work:  # the fit's checkpoint and loss curve, thrown away
        member = Member(args.content, args.style, cfg, Path(work) / "last.ckpt", output,
                        {"preset": preset, "weights": weights}, PairHooks())
        (result,) = stylize([member], vgg, torch.device("cpu"))
    if result.interrupted:
        raise RuntimeError(f"{preset} / {weights}: the fit stopped after {result.evaluations} evaluations")

    # Score the saved file against the targets the fit's last pass optimised towards (pass_inputs:
    # content at the output's size, style at its own size); the content and style images themselves
    # are scored resized to the output's exact size.
    out = to_tensor(load_image(output, cfg.max_pixels).rgb)  # (1, 3, H, W), what the user gets
    h, w = out.shape[-2:]
    content_at_out = to_tensor(resize(load_image(args.content, cfg.max_pixels).rgb, (w, h)))
    style_at_out = to_tensor(resize(load_image(args.style, cfg.max_pixels).rgb, (w, h)))
    inputs = pass_inputs(load_images(args.content, args.style, cfg), cfg)
    module = module_for(vgg, inputs.content, inputs.styles[0], cfg)
    out_c, out_s = score(module, out)
    _, content_s = score(module, content_at_out)
    style_c, _ = score(module, style_at_out)
    style_ratio, content_ratio = out_s / content_s, out_c / style_c
    return {
        "preset": preset, "weights": short_name(weights), "evals": result.evaluations,
        "style_ratio": style_ratio, "content_ratio": content_ratio,
        "out_style": out_s, "content_style": content_s, "out_content": out_c, "style_content": style_c,
        "ok": style_ratio <= MAX_STYLE_RATIO and content_ratio <= MAX_CONTENT_RATIO,
        "seconds": result.seconds,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(0)
    configs = [preset_config(p, args) for p in args.presets]  # every preset checked before any fit
    layers = sorted({name for cfg in configs for name in cfg.layers_used}, key=LAYER_INDEX.__getitem__)
    print(f"content {args.content.name}, style {args.style.name}, {args.size} px, {args.steps} evaluations; "
          f"pass: style ratio <= {MAX_STYLE_RATIO}, content ratio <= {MAX_CONTENT_RATIO}")
    header = (f"{'preset':<12} {'weights':<18} {'evals':>5} {'style ratio':>11} {'content ratio':>13} "
              f"{'result':>6} {'seconds':>7}   (out style / content's style, out content / style's content)")
    print(header)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        outdir = args.save or Path(tmp)
        outdir.mkdir(parents=True, exist_ok=True)
        for weights in args.weights:
            vgg = load_vgg(weights, layers)
            for preset in args.presets:
                try:
                    r = calibrate_one(preset, weights, vgg, args, outdir)
                except NonFiniteLossError as e:
                    print(f"{preset:<12} {short_name(weights):<18} FAIL: {e}", flush=True)
                    rows.append({"ok": False})
                    continue
                rows.append(r)
                print(f"{r['preset']:<12} {r['weights']:<18} {r['evals']:>5} {r['style_ratio']:>11.4f} "
                      f"{r['content_ratio']:>13.4f} {'PASS' if r['ok'] else 'FAIL':>6} {r['seconds']:>7.1f}   "
                      f"({r['out_style']:.4g} / {r['content_style']:.4g}, "
                      f"{r['out_content']:.4g} / {r['style_content']:.4g})", flush=True)
    failed = [r for r in rows if not r["ok"]]
    print(f"{len(rows) - len(failed)}/{len(rows)} pass")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
