"""Manifest semantics: precedence, grid expansion and names, validation that lists every problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from stylebatch.cli.main import main
from stylebatch.job.config import Config
from stylebatch.job.manifest import load_job
from tests.jobkit import REPO, make_image, records, tiny_job, write_manifest


@pytest.fixture
def images(tmp_path: Path) -> Path:
    for i, name in enumerate(["a.png", "b.png", "s1.png", "s2.png"]):
        make_image(tmp_path / "images" / name, seed=i)
    return tmp_path


# Precedence, lowest first: defaults < preset < manifest defaults < pair/grid values < --set.
# Each row: which layers set `steps` (and to what); the expected effective value.
PRECEDENCE = [
    ({}, Config().steps),
    ({"preset": 200}, 200),
    ({"preset": 200, "defaults": 300}, 300),
    ({"preset": 200, "defaults": 300, "pair": 400}, 400),
    ({"preset": 200, "defaults": 300, "pair": 400, "set": 500}, 500),
    ({"preset": 200, "set": 500}, 500),
    ({"defaults": 300, "pair": 400}, 400),
    ({"preset": 200, "pair": 400}, 400),
]


@pytest.mark.parametrize(("layers", "expected"), PRECEDENCE)
def test_precedence(layers: dict, expected: int, images: Path) -> None:
    preset = images / "preset.yaml"
    write_manifest(preset, {"steps": layers["preset"]} if "preset" in layers else {})
    defaults = {"preset": str(preset)}
    if "defaults" in layers:
        defaults["steps"] = layers["defaults"]
    pair = {"content": "images/a.png", "style": "images/s1.png"}
    if "pair" in layers:
        pair["steps"] = layers["pair"]
    manifest = write_manifest(images / "m.yaml", {"output_dir": "out", "defaults": defaults, "pairs": [pair]})
    sets = {"steps": layers["set"]} if "set" in layers else None
    job = load_job(manifest, sets=sets, weights="random")
    assert not job.all_problems, job.all_problems
    assert job.pairs[0].config.steps == expected


def test_config_flag_beats_defaults_preset(images: Path) -> None:
    p1, p2 = write_manifest(images / "p1.yaml", {"steps": 11}), write_manifest(images / "p2.yaml", {"steps": 22})
    manifest = write_manifest(
        images / "m.yaml",
        {
            "output_dir": "out",
            "defaults": {"preset": str(p1)},
            "pairs": [{"content": "images/a.png", "style": "images/s1.png"}],
        },
    )
    assert load_job(manifest, weights="random").pairs[0].config.steps == 11
    assert load_job(manifest, preset=str(p2), weights="random").pairs[0].config.steps == 22


def test_out_is_relative_to_cwd_and_output_dir_to_manifest(images: Path, monkeypatch) -> None:
    sub = images / "sub"
    sub.mkdir()
    manifest = write_manifest(
        sub / "m.yaml",
        {"output_dir": "results", "pairs": [{"content": "../images/a.png", "style": "../images/s1.png"}]},
    )
    assert load_job(manifest, weights="random").output_dir == sub / "results"
    monkeypatch.chdir(images)
    assert load_job(manifest, out="elsewhere", weights="random").output_dir == Path("elsewhere")


def test_grid_expands_with_varied_keys_in_names(images: Path) -> None:
    manifest = write_manifest(
        images / "m.yaml",
        {
            "output_dir": "out",
            "grid": {
                "content": ["images/a.png", "images/b.png"],
                "style": ["images/s*.png"],
                "style_weight": [10, 1e4],
                "steps": [7],
            },
        },
    )
    job = load_job(manifest, weights="random")
    assert not job.all_problems, job.all_problems
    names = [p.name for p in job.pairs]
    assert len(names) == 2 * 2 * 2 == len(set(names))
    assert "a__s1__style_weight-10" in names and "b__s2__style_weight-10000" in names
    assert all(p.config.steps == 7 for p in job.pairs)  # a single value is not "varied": not in names


@pytest.mark.slow
def test_ratio_sweep_expands_to_four_named_pairs_and_runs(tmp_path: Path) -> None:
    manifest = REPO / "manifests" / "ratio_sweep.yaml"
    job = load_job(manifest, weights="random")
    assert not job.all_problems, job.all_problems
    weights = sorted(p.config.style_weight for p in job.pairs)
    assert len(job.pairs) == 4 and len(set(weights)) == 4
    assert len({p.name for p in job.pairs}) == 4
    assert all(p.name.startswith("chelsea__starry_night__style_weight-") for p in job.pairs)
    out = tmp_path / "sweep"
    assert (
        main(["run", str(manifest), "--weights", "random", "--out", str(out), "--set", "size=32", "--set", "steps=3"])
        == 0
    )
    assert sorted(f.stem for f in out.glob("*.png")) == sorted(p.name for p in job.pairs)


def test_duplicate_names_refused_naming_both_entries(images: Path) -> None:
    manifest = write_manifest(
        images / "m.yaml",
        {
            "output_dir": "out",
            "pairs": [
                {"content": "images/a.png", "style": "images/s1.png"},
                {"content": "images/a.png", "style": "images/s1.png", "steps": 5},
            ],
        },
    )
    job = load_job(manifest, weights="random")
    assert any("duplicate output name" in p and "pairs[1]" in p and "pairs[0]" in p for p in job.all_problems)


def test_validate_lists_every_problem_and_exits_2(images: Path, capsys) -> None:
    manifest = write_manifest(
        images / "m.yaml",
        {
            "output_dir": "out",
            "defaults": {"stpes": 3},
            "pairs": [
                {"content": "images/missing.png", "style": "images/s1.png"},
                {"content": "images/a.png", "style": "images/s1.png", "optimizer": "sgd"},
                {"content": "images/b.png", "style": "images/s2.png", "size": 0},
            ],
        },
    )
    assert main(["validate", str(manifest), "--weights", "random"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 4, err
    assert "stpes" in err and "did you mean 'steps'" in err
    assert "pairs[0]" in err and "missing.png" in err
    assert "pairs[1]" in err and "sgd" in err
    assert "pairs[2]" in err and "'size'" in err
    assert "Traceback" not in err
    assert not (images / "out").exists()  # nothing was run or created


def test_run_refuses_invalid_manifest_before_any_work(images: Path, capsys) -> None:
    manifest = tiny_job(
        images,
        pairs=[
            {"content": "images/a.png", "style": "images/s1.png"},
            {"content": "images/nope.png", "style": "images/s1.png"},
        ],
    )
    assert main(["run", str(manifest), "--weights", "random"]) == 2
    assert "nope.png" in capsys.readouterr().err
    assert not (images / "out").exists()


def test_skip_invalid_runs_valid_pairs_and_exits_1(images: Path) -> None:
    manifest = tiny_job(
        images,
        pairs=[
            {"content": "images/a.png", "style": "images/s1.png"},
            {"content": "images/nope.png", "style": "images/s1.png"},
        ],
        defaults={"steps": 3},
    )
    assert main(["run", str(manifest), "--weights", "random", "--skip-invalid"]) == 1
    recs = records(images / "out")
    assert recs["a__s1"]["status"] == "done" and (images / "out" / "a__s1.png").is_file()
    failed = [r for r in recs.values() if r["status"] == "failed"]
    assert len(failed) == 1 and "nope.png" in failed[0]["error"] and "pairs[1]" in failed[0]["error"]


def test_file_broken_after_validation_fails_only_its_pair(images: Path, monkeypatch) -> None:
    manifest = tiny_job(images, defaults={"steps": 3})
    from stylebatch.runner import loop as runner

    original = runner._run_batch

    def break_b_first(job, batch, *args, **kwargs):
        if any(pair.name == "b__s2" for pair in batch):
            (images / "images" / "b.png").write_bytes(b"not an image any more")
        return original(job, batch, *args, **kwargs)

    monkeypatch.setattr(runner, "_run_batch", break_b_first)
    assert main(["run", str(manifest), "--weights", "random"]) == 1
    recs = records(images / "out")
    assert recs["a__s1"]["status"] == "done"
    assert recs["b__s2"]["status"] == "failed" and "b.png" in recs["b__s2"]["error"]
