"""Shared fixtures: one random-weight VGG19 per session and a factory for tiny image files."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from stylebatch.fit.vgg import VGGFeatures, load_vgg

# One intra-op thread for the whole session, here and (through the inherited OMP_NUM_THREADS) in the
# CLI subprocesses tests start. Tests use tiny tensors, where a second thread gains nothing, and with
# other processes on the cores OpenMP's spinning workers made fits 10-40x slower. Both sides must
# agree: results are bit-identical only at the same thread count (reduction order), and resume tests
# compare a subprocess run against an in-process one.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)
# Runs record their memory and rate in a per-machine calibration file (calibration.py), and the seeded
# random weights are kept there after their first build (fit/vgg.py): tests keep theirs in a temporary
# cache, shared by this process and its CLI subprocesses, never in the user's.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="stylebatch-test-cache-")


@pytest.fixture(scope="session")
def vgg() -> VGGFeatures:
    """The full (pool5-deep) extractor with the seeded random weights. Shared: building VGG19 takes
    seconds. It is frozen, so tests cannot change it; count its passes with jobkit.ForwardCounter."""
    return load_vgg("random")


@pytest.fixture
def make_image(tmp_path: Path) -> Callable[..., Path]:
    """make_image(name, size=(w, h), seed=0, mode="RGB") -> path of `jobkit.make_image`'s image in the
    test's tmp_path. The format follows the suffix (.png, .jpg, ...)."""

    def make(name: str = "image.png", size: tuple[int, int] = (32, 32), seed: int = 0, mode: str = "RGB") -> Path:
        from tests.jobkit import make_image  # not at the top: it imports the engine, after the settings above

        return make_image(tmp_path / name, seed, size, mode)

    return make
