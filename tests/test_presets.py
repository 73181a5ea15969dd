"""Every preset paints on any network: run through `stylebatch run` on a real photo and painting
(48 px, a short budget), each output, scored by the neutral scorer (stylebatch/fit/score.py), sits
between the two corners: much closer to the painting's style than the photo is, and much closer to
the photo's content than the painting is. Random weights always; the shared trained network
(`../shared/weights/vgg19_hed_features.pth`, activations ~100x torchvision's) when it is there."""

from __future__ import annotations

from pathlib import Path

import pytest

from stylebatch.cli.main import main
from stylebatch.fit.score import LAYERS, Scorer, load_output, load_pair
from stylebatch.fit.vgg import load_vgg
from stylebatch.job.config import preset_names
from tests.jobkit import REPO, write_manifest

IMAGES = REPO / "manifests" / "images"
HED = REPO.parent / "shared" / "weights" / "vgg19_hed_features.pth"
PRESETS = ["default", *preset_names()]
SIZE, STEPS = 48, 60


def _paint(tmp_path: Path, preset: str, weights: str) -> Path:
    manifest = write_manifest(
        tmp_path / "job.yaml",
        {
            "output_dir": "out",
            "pairs": [{"content": str(IMAGES / "chelsea.jpg"), "style": str(IMAGES / "starry_night.jpg")}],
        },
    )
    argv = [
        "run",
        str(manifest),
        "--weights",
        weights,
        "--set",
        f"size={SIZE}",
        "--set",
        f"steps={STEPS}",
        "--set",
        "report_every=0",
    ]
    assert main(argv + ([] if preset == "default" else ["--config", preset])) == 0
    return tmp_path / "out" / "chelsea__starry_night.png"


def _check(tmp_path: Path, preset: str, weights: str) -> None:
    output = _paint(tmp_path, preset, weights)
    scorer = Scorer(load_vgg(weights, LAYERS), *load_pair(IMAGES / "chelsea.jpg", IMAGES / "starry_night.jpg", SIZE))
    refs, score = scorer.references(), scorer(load_output(output))
    # The photo's own style score is the "no style at all" corner, the painting's content score the
    # "no content at all" one; a picture that paints the photo is far from both.
    assert score.style < 0.5 * refs["content image"].style, (preset, score, refs)
    assert score.content < 0.5 * refs["style image"].content, (preset, score, refs)


@pytest.mark.slow  # a 60-step fit at 48 px per preset: several seconds each
@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_paints_on_random_weights(tmp_path: Path, preset: str) -> None:
    _check(tmp_path, preset, "random")


@pytest.mark.slow
@pytest.mark.skipif(not HED.is_file(), reason="the shared trained network is not beside this checkout")
@pytest.mark.parametrize("preset", [p for p in PRESETS if p != "legacy"])  # legacy keeps the photo's colours
def test_every_preset_paints_on_a_trained_network(tmp_path: Path, preset: str) -> None:
    _check(tmp_path, preset, str(HED))
