"""Weights whose network overflows float32 (VGG19 weights scaled by 1e30, or by 10 where the style
statistics overflow) stop the job once, with one line naming the weights and no lr hint, before any
pair is charged an attempt; a real divergence of the optimisation still gets the lr hint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stylebatch.cli.main import main
from stylebatch.errors import WeightsError
from stylebatch.fit.vgg import load_vgg
from tests.jobkit import records, run_subprocess, tiny_job


@pytest.fixture(scope="module")
def scaled(tmp_path_factory, vgg):
    """scaled(factor) -> a weights file holding the seeded random VGG19 features times `factor`."""
    root = tmp_path_factory.mktemp("weights")

    def make(factor: float) -> Path:
        path = root / f"vgg_x{factor:g}.pth"
        if not path.exists():
            torch.save({k: v * factor for k, v in vgg.layers.state_dict().items()}, path)
        return path

    return make


def test_weights_times_1e30_are_refused_when_loaded(scaled):
    with pytest.raises(WeightsError) as info:
        load_vgg(str(scaled(1e30)))
    message = str(info.value)
    assert "\n" not in message
    assert f"weights file {scaled(1e30)}" in message
    assert "not usable VGG19 weights" in message and "lr" in message.split("no setting")[1]
    assert "try a lower lr" not in message
    # The largest weight is shown: the user sees the 1e29 at once.
    assert "e+29" in message or "e+30" in message


def test_weights_of_a_sane_scale_load(scaled):
    assert load_vgg(str(scaled(1.0))).source == f"weights file {scaled(1.0)}"


@pytest.mark.slow
def test_a_run_with_weights_times_1e30_stops_at_once_with_one_line(scaled, tmp_path):
    """The real command: exit 2, one line naming the file, no traceback, no pair run or failed, and
    nothing written (the weights are loaded before the job directory is made)."""
    manifest = tiny_job(tmp_path)
    result = run_subprocess(["run", str(manifest), "--weights", str(scaled(1e30))], cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert str(scaled(1e30)) in lines[0] and "overflows float32" in lines[0]
    assert "try a lower lr" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("style_loss", ["gram", "wasserstein"])
def test_weights_that_overflow_only_in_the_style_statistics_stop_the_job_at_the_first_pair(
    scaled, tmp_path, capsys, style_loss
):
    """Times 10 passes the load-time check (features and Grams finite on the test image), but the
    Gram targets' mean square (style_loss gram) or the W2 products (wasserstein) overflow: found when
    the first pair's targets are made or at its first NaN, before a second pair is tried; nobody is
    charged an attempt and the pairs stay resumable."""
    manifest = tiny_job(tmp_path, defaults={"style_loss": style_loss})
    code = main(["run", str(manifest), "--weights", str(scaled(10.0))])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"weights file {scaled(10.0)}" in err and "the weights are the problem" in err
    assert "lower lr" not in err
    got = records(tmp_path / "out")
    assert [r["status"] for r in got.values()] == ["interrupted"], got  # the first pair only, then stopped
    assert all(r["attempts"] == 0 for r in got.values())


@pytest.mark.slow
def test_a_divergence_of_the_optimisation_still_suggests_a_lower_lr(tmp_path, capsys):
    """L-BFGS with no line search and a step of 1e30: the image leaves [0, 1] inside a step and the
    loss overflows, while the content image's own loss is finite: a lower lr is the cure."""
    manifest = tiny_job(
        tmp_path,
        pairs=[{"content": "images/a.png", "style": "images/s1.png"}],
        defaults={"optimizer": "lbfgs", "lbfgs_line_search": "none", "lr": 1e30, "steps": 20},
    )
    assert main(["run", str(manifest), "--weights", "random"]) == 1
    error = records(tmp_path / "out")["a__s1"]["error"]
    assert "non-finite" in error and "try a lower lr" in error


def test_loss_weights_too_large_for_float32_are_named_as_such(tmp_path):
    manifest = tiny_job(
        tmp_path,
        pairs=[{"content": "images/a.png", "style": "images/s1.png"}],
        defaults={"content_weight": 3e38, "style_weight": 3e38, "steps": 10},
    )
    assert main(["run", str(manifest), "--weights", "random"]) == 1
    error = records(tmp_path / "out")["a__s1"]["error"]
    assert "lower content_weight, style_weight or tv_weight" in error and "lr" not in error.split(":")[0]
