"""A manifest mistake is one line for its one cause: a misspelt key is not also a missing key, a
missing content not also a bad name; a path written relative to the current directory says so; a
bad --config is blamed on the flag."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stylebatch.cli.main import main
from tests.jobkit import make_image, write_manifest


@pytest.fixture
def folder(tmp_path: Path, monkeypatch) -> Path:
    make_image(tmp_path / "photo.png", seed=1)
    make_image(tmp_path / "paint.png", seed=2)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _errors(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


def test_two_typos_are_two_lines(folder: Path, capsys) -> None:
    text = (
        "output_dir: out\n"
        "defaults: {size: 32, steps: 2, styel_weight: 0.1}\n"
        "pairs:\n"
        "  - {contnet: ../photo.png, style: ../paint.png}\n"
    )
    manifest = write_manifest(folder / "sub" / "m.yaml", text=text)
    assert main(["validate", str(manifest), "--weights", "random"]) == 2
    errors = _errors(capsys)
    assert errors == [
        f"error: {manifest}: defaults: unknown key 'styel_weight' (did you mean 'style_weight'?)",
        f"error: {manifest}: pairs[0]: unknown key 'contnet' (did you mean 'content'?)",
    ]


def test_a_missing_style_is_one_line_without_a_name_problem(folder: Path, capsys) -> None:
    manifest = write_manifest(
        folder / "sub" / "m.yaml",
        text="output_dir: out\npairs:\n  - {content: ../photo.png}\n  - {style: ../paint.png}\n",
    )
    assert main(["validate", str(manifest), "--weights", "random"]) == 2
    assert _errors(capsys) == [
        f"error: {manifest}: pairs[0]: missing 'style'",
        f"error: {manifest}: pairs[1]: missing 'content'",
    ]


def test_a_path_relative_to_the_current_directory_says_so(folder: Path, capsys) -> None:
    text = "output_dir: out\ndefaults: {size: 32, steps: 2}\npairs:\n  - {content: photo.png, style: ../paint.png}\n"
    manifest = write_manifest(folder / "sub" / "m.yaml", text=text)
    assert main(["validate", os.path.relpath(manifest), "--weights", "random"]) == 2
    (error,) = _errors(capsys)
    assert "content: sub/photo.png: file not found (photo.png exists relative to the current directory" in error
    assert "relative to the manifest's folder, sub: write ../photo.png)" in error
    # A file found nowhere gets no such hint.
    write_manifest(manifest, text=text.replace("photo.png", "nowhere.png"))
    assert main(["validate", str(manifest), "--weights", "random"]) == 2
    (error,) = _errors(capsys)
    assert error.endswith("nowhere.png: file not found")


def test_a_bad_config_flag_is_blamed_on_the_flag(folder: Path, capsys) -> None:
    text = "output_dir: out\ndefaults: {size: 32, steps: 2}\npairs:\n  - {content: ../photo.png, style: ../paint.png}\n"
    manifest = write_manifest(folder / "sub" / "m.yaml", text=text)
    assert main(["validate", str(manifest), "--weights", "random", "--config", "fsat"]) == 2
    (error,) = _errors(capsys)
    assert error.startswith("error: --config fsat: preset 'fsat' not found (did you mean 'fast'?)")
    write_manifest(manifest, text=text.replace("size: 32", "preset: fsat, size: 32"))
    assert main(["validate", str(manifest), "--weights", "random"]) == 2
    (error,) = _errors(capsys)
    assert error.startswith(f"error: {manifest}: defaults: preset 'fsat' not found")


def test_a_list_of_grids_is_every_grid_s_pairs(tmp_path: Path, monkeypatch, capsys) -> None:
    """Photos x paintings beside a style_weight sweep on one pair, in one manifest."""
    from tests.jobkit import tiny_job

    tiny_job(tmp_path)  # the images
    grids = [
        {"content": ["images/a.png", "images/b.png"], "style": ["images/s1.png", "images/s2.png"]},
        {"content": ["images/a.png"], "style": ["images/s1.png"], "style_weight": [0.01, 0.1]},
    ]
    manifest = write_manifest(tmp_path / "grids.yaml", {"output_dir": "out", "defaults": {"size": 32}, "grid": grids})
    from stylebatch.memory.autosize import load_job

    job = load_job(manifest, weights="random")
    assert not job.all_problems
    assert [(p.entry, p.name) for p in job.pairs] == [
        ("grid[0][0]", "a__s1"),
        ("grid[0][1]", "a__s2"),
        ("grid[0][2]", "b__s1"),
        ("grid[0][3]", "b__s2"),
        ("grid[1][0]", "a__s1__style_weight-0.01"),
        ("grid[1][1]", "a__s1__style_weight-0.1"),
    ]
    grids[1]["stlye_weight"] = grids[1].pop("style_weight")
    write_manifest(manifest, {"output_dir": "out", "grid": grids})
    assert main(["validate", str(manifest), "--weights", "random"]) == 2
    assert _errors(capsys) == [
        f"error: {manifest}: grid[1].stlye_weight: unknown key 'stlye_weight' (did you mean 'style_weight'?)"
    ]
