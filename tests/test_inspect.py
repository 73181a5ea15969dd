"""Outputs carry what made them: `inspect` round-trips the settings written into an output,
`run --from` makes the same bytes again (and refuses when an input changed), and jpg/webp outputs
carry the same settings in EXIF."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from stylebatch import __version__
from stylebatch.cli.main import main
from stylebatch.fit.pixels import to_tensor
from stylebatch.job.manifest import load_job
from stylebatch.jobdir.state import sha256_file
from tests.jobkit import records, tiny_job

ONE_PAIR = [
    {"content": "images/a.png", "style": "images/s1.png", "optimizer": "adam", "lr": 0.05, "style_weight": 300.0}
]
SMALL = {"steps": 8, "checkpoint_every": 4, "log_every": 2}


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inspect")
    manifest = tiny_job(root, pairs=ONE_PAIR, defaults=SMALL)
    assert main(["run", str(manifest), "--weights", "random"]) == 0
    return root


def _inspect_json(image: Path, capsys: pytest.CaptureFixture) -> dict:
    capsys.readouterr()
    assert main(["inspect", str(image), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_inspect_round_trips_the_settings(done: Path, capsys: pytest.CaptureFixture) -> None:
    meta = _inspect_json(done / "out" / "a__s1.png", capsys)
    job = load_job(done / "job.yaml", weights="random")
    pair = job.pairs[0]
    assert meta["config"] == json.loads(json.dumps(pair.config.to_dict()))  # every effective key, as run
    assert meta["config"]["style_weight"] == 300.0 and meta["config"]["steps"] == 8
    assert meta["name"] == "a__s1" and meta["id"] == pair.id
    assert Path(meta["content"]) == (done / "images" / "a.png").resolve()
    assert meta["content_sha256"] == sha256_file(done / "images" / "a.png")
    assert meta["style_sha256"] == sha256_file(done / "images" / "s1.png")
    assert meta["weights"] == "random:0" and meta["weights_source"] == "random"
    assert meta["versions"]["stylebatch"] == __version__ and meta["versions"]["torch"] == torch.__version__
    assert meta["evaluations"] == 8 and meta["output_size"] == [32, 24]
    assert meta["losses"] == records(done / "out")["a__s1"]["losses"]
    assert meta["input_checks"] == {"content": "ok", "style": "ok"}

    capsys.readouterr()
    assert main(["inspect", str(done / "out" / "a__s1.png")]) == 0
    text = capsys.readouterr().out
    assert "sha256 " + meta["content_sha256"] in text and "* style_weight" in text and "random:0" in text


def test_inspect_refuses_an_image_without_settings(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    assert main(["inspect", str(tmp_path / "plain.png")]) == 2
    assert "carries no stylebatch settings" in capsys.readouterr().err


def test_run_from_reproduces_the_same_png(done: Path, tmp_path: Path) -> None:
    original = done / "out" / "a__s1.png"
    assert main(["run", "--from", str(original), "--out", str(tmp_path / "again")]) == 0
    again = tmp_path / "again" / "a__s1.png"
    assert again.read_bytes() == original.read_bytes()  # pixels and settings, byte for byte


@pytest.mark.slow
def test_run_from_a_batched_output_says_it_reruns_alone(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pairs = [{**ONE_PAIR[0], "name": f"m{i}", "seed": i, "init": "noise"} for i in range(2)]
    manifest = tiny_job(tmp_path, pairs=pairs, defaults={**SMALL, "batch_size": 2})
    assert main(["run", str(manifest), "--weights", "random"]) == 0
    original = tmp_path / "out" / "m1.png"
    assert records(tmp_path / "out")["m1"]["batch"] == ["m0", "m1"]
    capsys.readouterr()
    assert main(["run", "--from", str(original), "--out", str(tmp_path / "again")]) == 0
    err = capsys.readouterr().err
    assert "made in a batch of 2 (m0, m1); it is rerun alone" in err and "not the same pixels" in err
    diff = (
        to_tensor(Image.open(tmp_path / "again" / "m1.png").convert("RGB"))
        - to_tensor(Image.open(original).convert("RGB"))
    ).abs()
    assert diff.mean() < 5e-3  # within the batching tolerance
    # An output made alone says nothing of the kind.
    assert main(["run", "--from", str(tmp_path / "again" / "m1.png"), "--out", str(tmp_path / "third")]) == 0
    assert "batch" not in capsys.readouterr().err


def test_run_from_refuses_changed_inputs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    manifest = tiny_job(tmp_path, pairs=ONE_PAIR, defaults={**SMALL, "steps": 2})
    assert main(["run", str(manifest), "--weights", "random"]) == 0
    style = tmp_path / "images" / "s1.png"
    Image.open(style).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(style)
    capsys.readouterr()
    assert main(["run", "--from", str(tmp_path / "out" / "a__s1.png"), "--out", str(tmp_path / "again")]) == 2
    err = capsys.readouterr().err
    assert "cannot reproduce" in err and "s1.png is changed" in err
    assert not (tmp_path / "again" / "a__s1.png").exists()
    assert main(["run", "--from", str(tmp_path / "out" / "a__s1.png"), str(manifest)]) == 2  # one or the other
    assert main(["run"]) == 2


def test_jpg_and_webp_carry_the_settings_and_reencode_without_rerunning(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    manifest = tiny_job(tmp_path, pairs=ONE_PAIR, defaults={**SMALL, "steps": 4, "format": "jpg", "quality": 80})
    out = tmp_path / "out"
    assert main(["run", str(manifest), "--weights", "random"]) == 0
    assert not (out / "a__s1.png").exists()
    with Image.open(out / "a__s1.jpg") as im:
        assert im.format == "JPEG" and im.size == (32, 24)
    meta = _inspect_json(out / "a__s1.jpg", capsys)
    assert meta["config"]["format"] == "jpg" and meta["encoding"] == {"format": "jpg", "quality": 80}
    curve = (out / ".stylebatch" / "pairs" / "a__s1" / "losses.csv").read_text()

    # Another encoding of the same pair: re-encoded from the kept final checkpoint, not optimised again.
    from stylebatch.fit import module

    def no_optimising(*args):
        raise AssertionError("the pair was optimised again")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(module.StyleTransferModule, "training_step", no_optimising)
        assert main(["run", str(manifest), "--weights", "random", "--set", "format=webp", "--set", "quality=100"]) == 0
    meta2 = _inspect_json(out / "a__s1.webp", capsys)
    assert meta2["encoding"] == {"format": "webp", "quality": 100} and meta2["losses"] == meta["losses"]
    assert records(out)["a__s1"]["output"] == "a__s1.webp"
    assert (out / ".stylebatch" / "pairs" / "a__s1" / "losses.csv").read_text() == curve
    with Image.open(out / "a__s1.webp") as im:
        assert im.format == "WEBP"
    # quality is checked like any other key
    capsys.readouterr()
    assert main(["run", str(manifest), "--weights", "random", "--set", "quality=101"]) == 2
    assert "'quality' must be <= 100" in capsys.readouterr().err
