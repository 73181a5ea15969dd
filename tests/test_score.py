"""The neutral scorer against hand computations: a fake extractor whose features are the pixels
themselves (Grams and MSEs written out as loops), and the real random VGG19 read layer by layer from
torchvision's own module list. Plus the corners a real picture sits between."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from stylebatch.fit.score import CONTENT_LAYER, STYLE_LAYERS, Scorer, fit, load_pair, main
from stylebatch.fit.vgg import IMAGENET_MEAN, IMAGENET_STD

# Each fake layer's features are the image's pixels times a layer factor (C = 3 channels).
FACTORS = {"relu1_1": 1.0, "relu2_1": 2.0, "relu3_1": 3.0, "relu4_1": 4.0, "relu4_2": 0.5, "relu5_1": 5.0}


def fake_extract(image: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
    return {name: image * FACTORS[name] for name in layers}


def pixels(values: list[list[tuple[int, int, int]]]) -> Image.Image:
    return Image.fromarray(np.array(values, dtype=np.uint8), "RGB")


def loop_gram(img: Image.Image, k: float) -> list[list[float]]:
    """G[c][d] = Σ_p F[c,p]·F[d,p] / (C·H·W) with F = k·pixels/255, by hand."""
    w, h = img.size
    px = [[k * v / 255 for v in img.getpixel((x, y))] for y in range(h) for x in range(w)]
    return [[sum(p[c] * p[d] for p in px) / (3 * h * w) for d in range(3)] for c in range(3)]


def loop_mse(a: list[list[float]], b: list[list[float]]) -> float:
    flat = [(x - y) ** 2 for ra, rb in zip(a, b) for x, y in zip(ra, rb)]
    return sum(flat) / len(flat)


CONTENT = pixels([[(0, 51, 102), (255, 0, 0)], [(10, 200, 30), (90, 90, 90)]])  # 2x2
STYLE = pixels([[(255, 255, 255), (0, 0, 255), (128, 64, 32)]])  # 3x1: its own size, not the content's
OUTPUT = pixels([[(20, 40, 60), (250, 10, 5)], [(0, 180, 60), (100, 80, 70)]])


def test_score_matches_hand_computation():
    s = Scorer(fake_extract, CONTENT, STYLE)(OUTPUT)
    k = FACTORS[CONTENT_LAYER]
    diffs = [
        (k * (a - b) / 255) ** 2
        for xy in itertools.product(range(2), range(2))
        for a, b in zip(OUTPUT.getpixel(xy), CONTENT.getpixel(xy))
    ]
    assert s.content == pytest.approx(sum(diffs) / len(diffs), rel=1e-6)  # float32 pixels
    style = sum(loop_mse(loop_gram(OUTPUT, FACTORS[n]), loop_gram(STYLE, FACTORS[n])) for n in STYLE_LAYERS)
    assert s.style == pytest.approx(style, rel=1e-6)  # to_tensor's float32 pixels, float64 Grams
    # One Gram entry written out: G_style[2][2] for relu1_1 = (1 + 1 + (32/255)^2) / (3*3*1).
    assert loop_gram(STYLE, 1.0)[2][2] == pytest.approx((1 + 1 + (32 / 255) ** 2) / 9)


def test_style_target_is_independent_of_the_style_images_size():
    """The style image at its own size: the same pixels tiled twice give the same Grams (divided by
    H·W), so the content image scores 0 against its own tiling."""
    tiled = Image.new("RGB", (4, 2))
    tiled.paste(CONTENT, (0, 0))
    tiled.paste(CONTENT, (2, 0))
    assert Scorer(fake_extract, CONTENT, tiled)(CONTENT).style == pytest.approx(0, abs=1e-12)


def test_output_is_resized_bicubic_to_the_content_size():
    scorer = Scorer(fake_extract, CONTENT, STYLE)
    big = OUTPUT.resize((5, 5), Image.Resampling.NEAREST)
    assert scorer(big) == scorer(big.resize(CONTENT.size, Image.Resampling.BICUBIC))
    assert scorer(big) != scorer(big.resize(CONTENT.size, Image.Resampling.LANCZOS))


def test_fit_sets_the_longer_side():
    assert fit(Image.new("RGB", (451, 300)), 256).size == (256, 170)
    assert fit(Image.new("RGB", (100, 200)), 256).size == (128, 256)  # up as well as down


def vgg_by_index(vgg, image: torch.Tensor) -> dict[str, torch.Tensor]:
    """Post-ReLU features by torchvision's indices (relu1_1 = 1, ..., relu4_2 = 22, relu5_1 = 29),
    run module by module through the same weights, normalisation written out here."""
    index = {"relu1_1": 1, "relu2_1": 6, "relu3_1": 11, "relu4_1": 20, "relu4_2": 22, "relu5_1": 29}
    x = (image - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    out = {}
    for i, module in enumerate(vgg.layers[:30]):
        x = module(x)
        out.update({name: x.clone() for name, j in index.items() if j == i})
    return out


def test_real_vgg_score_uses_post_relu_layers(vgg, make_image):
    content, style = load_pair(make_image("c.png", (48, 40), seed=1), make_image("s.png", (40, 56), seed=2), 32)
    output = Image.open(make_image("o.png", (32, 27), seed=3)).convert("RGB")
    s = Scorer(vgg, content, style)(output)
    with torch.no_grad():
        to = lambda img: torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)[None]  # noqa: E731
        fo, fc, fs = (
            vgg_by_index(vgg, to(img))
            for img in (output.resize(content.size, Image.Resampling.BICUBIC), content, style)
        )
    assert all((f >= 0).all() for f in fo.values())  # post-ReLU
    g = lambda f: torch.einsum("bchw,bdhw->bcd", f.double(), f.double()) / f[0].numel()  # noqa: E731
    style_ref = sum(float((g(fo[n]) - g(fs[n])).pow(2).mean()) for n in STYLE_LAYERS)
    assert s.content == pytest.approx(float((fo[CONTENT_LAYER] - fc[CONTENT_LAYER]).double().pow(2).mean()), rel=1e-5)
    assert s.style == pytest.approx(style_ref, rel=1e-5)


def test_the_content_image_itself_fails_on_style(vgg, make_image):
    """The photo returned unchanged scores 0 on content and its own (large) style score: the
    scorer cannot be satisfied by doing nothing. The style image is the other corner."""
    content, style = load_pair(make_image("c.png", (40, 40), seed=1), make_image("s.png", (40, 40), seed=2), 32)
    scorer = Scorer(vgg, content, style)
    refs = scorer.references()
    unchanged = scorer(content)
    assert unchanged.content == 0
    assert unchanged.style == refs["content image"].style > 0
    assert refs["style image"].style == 0  # same size here, so its Grams are the targets exactly
    assert refs["style image"].content > 0


def test_cli_prints_the_reference_rows(make_image, capsys):
    c, s = make_image("c.png", (40, 40), seed=1), make_image("s.png", (40, 40), seed=2)
    assert main([str(c), str(s), str(c), "--weights", "random", "--size", "40"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines[1:3]] == [["content", "image"], ["style", "image"]]
    assert lines[3].split()[0].endswith("c.png") and float(lines[3].split()[1]) == 0
