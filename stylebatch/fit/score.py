"""The neutral scorer: a fixed, standard Gatys score of a stylised picture, to judge presets and to
compare with other tools. Deliberately *not* the loss the product optimises (that one is normalised,
configurable and may change); this one never changes, so numbers stay comparable over time.

    python -m stylebatch.fit.score CONTENT STYLE OUTPUT [OUTPUT ...] --weights PATH|random

- VGG19 with the run's weights (`stylebatch.fit.vgg.load_vgg`), torchvision's input normalisation,
  post-ReLU activations.
- content = MSE(relu4_2(output), relu4_2(content)).
- style = Σ over relu1_1 … relu5_1 of MSE(G(output), G(style)), G = F·Fᵀ / (C·H·W), the style
  image at its own size.
- Both inputs are first resized (Lanczos) to `size` px on the longer side (256 for comparisons);
  the output is resized (bicubic) to the content's size. Lower is better on both.

The Gram is divided by C as well as H·W (unlike the product's `losses.gram_matrix`), so that the
five layers' terms are of comparable size without any per-layer weights.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from stylebatch.fit.pixels import to_tensor
from stylebatch.images import fit_size, load_image, resize

SCORE_SIZE = 256
CONTENT_LAYER = "relu4_2"
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
LAYERS = [*STYLE_LAYERS[:4], CONTENT_LAYER, STYLE_LAYERS[4]]  # in network order
MAX_PIXELS = 50_000_000

# (1, 3, H, W) image in [0, 1], layer names -> {name: (1, C, h, w) features}; VGGFeatures fits.
Extractor = Callable[[torch.Tensor, list[str]], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Score:
    content: float
    style: float


def gram(features: torch.Tensor) -> torch.Tensor:
    """G = F·Fᵀ / (C·H·W) for features (B, C, H, W) → (B, C, C), in float64."""
    b, c, h, w = features.shape
    f = features.double().reshape(b, c, h * w)
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


def mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).pow(2).mean())


def fit(img: Image.Image, size: int) -> Image.Image:
    """Lanczos-resize so the longer side is `size` (up or down), aspect kept."""
    return resize(img, fit_size(*img.size, size))


class Scorer:
    """Scores outputs of one (content, style) pair; the targets are computed once.

    content, style: PIL RGB images, already at the size they are compared at (see `load_pair`)."""

    def __init__(self, extract: Extractor, content: Image.Image, style: Image.Image) -> None:
        self.extract = extract
        self.size = content.size  # (w, h): every output is resized to this
        with torch.no_grad():
            self.content_target = extract(to_tensor(content), [CONTENT_LAYER])[CONTENT_LAYER]
            feats = extract(to_tensor(style), list(STYLE_LAYERS))  # the style at its own size
            self.grams = {name: gram(feats[name]) for name in STYLE_LAYERS}
        self.content_image, self.style_image = content, style

    @torch.no_grad()
    def __call__(self, output: Image.Image) -> Score:
        if output.size != self.size:
            output = output.resize(self.size, Image.Resampling.BICUBIC)
        feats = self.extract(to_tensor(output.convert("RGB")), LAYERS)
        content = mse(feats[CONTENT_LAYER], self.content_target)
        style = sum(mse(gram(feats[name]), self.grams[name]) for name in STYLE_LAYERS)
        return Score(content, style)

    def references(self) -> dict[str, Score]:
        """The scores of the content image and the style image themselves, as if they were outputs:
        the two corners a stylised picture sits between."""
        return {"content image": self(self.content_image), "style image": self(self.style_image)}


def load_pair(content: str | Path, style: str | Path, size: int = SCORE_SIZE) -> tuple[Image.Image, Image.Image]:
    """Content and style images, RGB, each Lanczos-resized to `size` on the longer side."""
    return (fit(load_image(content, MAX_PIXELS).rgb, size), fit(load_image(style, MAX_PIXELS).rgb, size))


def load_output(path: str | Path) -> Image.Image:
    return load_image(path, MAX_PIXELS).rgb


def main(argv: list[str] | None = None) -> int:
    from stylebatch.fit.vgg import load_vgg

    p = argparse.ArgumentParser(prog="python -m stylebatch.fit.score", description=__doc__.split("\n\n")[0])
    p.add_argument("content", type=Path)
    p.add_argument("style", type=Path)
    p.add_argument("outputs", type=Path, nargs="*")
    p.add_argument("--weights", default="imagenet", help="imagenet, random or a VGG19 state dict path")
    p.add_argument("--size", type=int, default=SCORE_SIZE, help="longer side the inputs are compared at")
    args = p.parse_args(argv)
    scorer = Scorer(load_vgg(args.weights, LAYERS), *load_pair(args.content, args.style, args.size))
    rows = {**scorer.references(), **{str(path): scorer(load_output(path)) for path in args.outputs}}
    print(f"{'image':<40} {'content':>10} {'style':>10}")
    for name, s in rows.items():
        print(f"{name:<40} {s.content:>10.4g} {s.style:>10.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
