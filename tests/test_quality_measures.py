"""The quality yardstick (scripts/quality.py) on cases with known answers: the content image and
the style image themselves, a blurred and a noised copy, hand-computable patterns. Tiny images."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "manifests" / "images"


@pytest.fixture(scope="module")
def q():
    spec = importlib.util.spec_from_file_location("quality", REPO / "scripts" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["quality"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def small(name: str, side: int = 64) -> Image.Image:
    img = Image.open(IMAGES / name).convert("RGB")
    scale = side / max(img.size)
    return img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)


def noised(img: Image.Image, amount: float = 40, seed: int = 0) -> Image.Image:
    """Independent uniform noise per pixel and channel: the rainbow speckle the measures must catch."""
    a = np.asarray(img, dtype=np.float64)
    a = a + np.random.default_rng(seed).uniform(-amount, amount, a.shape)
    return Image.fromarray(np.clip(a, 0, 255).round().astype(np.uint8))


def blurred(img: Image.Image, radius: float = 2) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(radius))


@pytest.fixture(scope="module")
def content() -> Image.Image:
    return small("chelsea.jpg")


@pytest.fixture(scope="module")
def style() -> Image.Image:
    return small("starry_night.jpg")


def test_laplacian_energy_of_a_checkerboard_is_four(q):
    # Each interior pixel differs from its 4 neighbours by 1: |lap| = 4 everywhere.
    board = (np.indices((10, 12)).sum(0) % 2).astype(np.float64)
    assert q.laplacian_energy(board) == pytest.approx(4.0)
    assert q.laplacian_energy(np.full((10, 12), 0.3)) == 0


def test_grain(q, content, style):
    assert q.grain(style, style) == q.Grain(1.0, 1.0)  # the painting is as grainy as itself
    clean, speckled, smooth = q.grain(content, style), q.grain(noised(content), style), q.grain(blurred(content), style)
    assert speckled.chroma > 3 * clean.chroma and speckled.luma > 2 * clean.luma
    assert smooth.chroma < clean.chroma and smooth.luma < clean.luma
    # A grey-level speckle adds luma grain but no chroma grain.
    grey_noise = np.random.default_rng(1).uniform(-40, 40, (content.height, content.width, 1))
    grey = Image.fromarray(np.clip(np.asarray(content, dtype=np.float64) + grey_noise, 0, 255).round().astype(np.uint8))
    assert q.grain(grey, style).luma > 2 * clean.luma
    assert q.grain(grey, style).chroma < 1.5 * clean.chroma


def test_colour(q, content, style):
    assert q.colour(style, style) == 0
    # A distribution measure: the style's own pixels in another order are at distance 0.
    pixels = np.asarray(style).reshape(-1, 3)
    shuffled = pixels[np.random.default_rng(0).permutation(len(pixels))].reshape(np.asarray(style).shape)
    assert q.colour(Image.fromarray(shuffled), style) == pytest.approx(0, abs=1e-9)
    # Two flat colours: every projection of the Lab difference d is the same shift, so the distance
    # is the root mean square of d's projections on the fixed directions.
    a, b = Image.new("RGB", (8, 8), (200, 30, 30)), Image.new("RGB", (6, 6), (30, 30, 200))
    d = q.srgb_to_lab(np.array([200, 30, 30]) / 255) - q.srgb_to_lab(np.array([30, 30, 200]) / 255)
    dirs = q._directions(q.COLOUR_PROJECTIONS, 3, q.PROJECTION_SEED).numpy()
    assert q.colour(a, b) == pytest.approx(float(np.sqrt(np.mean((d @ dirs) ** 2))), rel=1e-9)
    # Lab of sRGB white is L 100, a = b = 0.
    assert q.srgb_to_lab(np.ones(3)) == pytest.approx([100, 0, 0], abs=1e-3)
    assert 0 < q.colour(blurred(style), style) < q.colour(content, style)


@pytest.fixture(scope="module")
def texture(q):
    return q.Texture(q.probe_network())


def test_texture(q, texture, content, style):
    assert texture(style, style) == 0
    # Stationary statistics: the painting moved by a quarter of its width stays closer to itself
    # than the photo is; noise and blur move it away.
    rolled = Image.fromarray(np.roll(np.asarray(style), style.width // 4, axis=1))
    far = texture(content, style)
    assert 0 < texture(rolled, style) < far / 2
    assert texture(noised(style), style) > texture(rolled, style)
    assert texture(blurred(style), style) > texture(rolled, style)


def test_probe_network_is_fixed_and_not_the_runs_random_weights(q):
    from stylebatch.fit.vgg import load_vgg

    a, b = q.probe_network(), q.probe_network()
    first = next(iter(a.parameters()))
    assert first.equal(next(iter(b.parameters())))
    assert not first.equal(next(iter(load_vgg("random", ["relu1_1"]).parameters())))


def test_structure(q, content, style):
    assert q.structure(content, content) == pytest.approx(1.0)
    smooth, speckled = q.structure(blurred(content, 1), content), q.structure(noised(content, 60), content)
    assert 0.8 < smooth < 1 and 0.3 < speckled < 1
    assert q.structure(style.resize(content.size), content) < 0.3  # the painting has the photo's edges by chance only
    # Flipping the photo keeps its edge statistics but not where its edges are.
    assert q.structure(content.transpose(Image.Transpose.FLIP_TOP_BOTTOM), content) < 0.5


def test_crop_sheet_magnifies_the_central_crop(q, tmp_path, content):
    out = tmp_path / "x.png"
    content.save(out)
    crop = q.central_crop(Image.open(out), 16)
    assert crop.size == (16, 16)
    w, h = content.size
    assert np.array_equal(
        np.asarray(crop), np.asarray(content)[(h - 16) // 2 : (h - 16) // 2 + 16, (w - 16) // 2 : (w - 16) // 2 + 16]
    )
