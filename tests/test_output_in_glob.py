"""A job whose output_dir lies inside a content (or style) pattern: its own outputs match the
pattern, but they are never taken as inputs; the rerun resumes, and a new picture of the user's
that matches is still a new pair."""

from __future__ import annotations

from pathlib import Path

from stylebatch.cli.main import main
from stylebatch.job.manifest import load_job
from tests.jobkit import make_image, records, write_manifest

FAST = {"size": 32, "steps": 3, "checkpoint_every": 2, "log_every": 1, "optimizer": "adam", "lr": 0.05}


def test_outputs_inside_the_content_pattern_are_not_inputs(tmp_path: Path, capsys) -> None:
    pics = tmp_path / "pics"
    make_image(pics / "cat.png", seed=1, size=(32, 32))
    make_image(pics / "dog.png", seed=2, size=(32, 32))
    make_image(tmp_path / "styles" / "wave.png", seed=3, size=(32, 32))
    manifest = write_manifest(
        tmp_path / "job.yaml",
        {"output_dir": "pics", "defaults": FAST, "grid": {"content": ["pics/*.png"], "style": ["styles/*.png"]}},
    )
    assert main(["run", str(manifest), "--weights", "random"]) == 0
    assert sorted(records(pics)) == ["cat__wave", "dog__wave"]
    assert (pics / "cat__wave.png").is_file()
    capsys.readouterr()

    job = load_job(manifest, weights="random")
    assert [p.name for p in job.pairs] == ["cat__wave", "dog__wave"] and not job.all_problems
    assert main(["validate", str(manifest), "--weights", "random"]) == 0
    assert main(["run", str(manifest), "--weights", "random"]) == 0  # resumes: nothing new to run
    captured = capsys.readouterr()
    assert "2 pairs: 2 already done, 0 to run" in captured.out, captured.out + captured.err
    assert sorted(records(pics)) == ["cat__wave", "dog__wave"]

    # The user's own new picture in the folder is an input, as before.
    make_image(pics / "owl.png", seed=4, size=(32, 32))
    assert [p.name for p in load_job(manifest, weights="random").pairs] == ["cat__wave", "dog__wave", "owl__wave"]
    # A file named like an output but not the job's (other bytes): an input like any other.
    (pics / "cat__wave.png").write_bytes((pics / "dog.png").read_bytes())
    names = [p.name for p in load_job(manifest, weights="random").pairs]
    assert "cat__wave__wave" in names
