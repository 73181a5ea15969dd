"""Nothing is replaced without a copy: a finished output that a changed setting makes stale is moved
to .stylebatch/replaced/<name>.<old id>.png (listed by `status` and `inspect`), `run` says how many
finished pairs it makes again before it starts, and more than REDO_UNASKED need `run --redo`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from stylebatch.cli.main import main
from stylebatch.jobdir.state import REDO_UNASKED
from tests.jobkit import records, tiny_job

FAST = {"steps": 4, "checkpoint_every": 2, "log_every": 2, "optimizer": "adam", "lr": 0.05, "style_weight": 0.1}
FOUR = [
    {"content": c, "style": s} for c in ("images/a.png", "images/b.png") for s in ("images/s1.png", "images/s2.png")
]


@pytest.fixture
def done(tmp_path: Path) -> Path:
    manifest = tiny_job(tmp_path, pairs=FOUR, defaults=FAST)
    assert main(["run", str(manifest), "--weights", "random"]) == 0
    return manifest


def _snapshot(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.png"))}


@pytest.mark.slow
def test_more_than_a_handful_to_redo_needs_redo_and_runs_nothing_without(done: Path, capsys) -> None:
    assert REDO_UNASKED < len(FOUR)
    out = done.parent / "out"
    before, recs, job_file = _snapshot(out), records(out), (out / ".stylebatch" / "job.json").read_bytes()
    capsys.readouterr()
    code = main(["run", str(done), "--weights", "random", "--set", "style_weight=3"])
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2 and len(errors) == 1, captured.err
    assert "would make 4 finished pairs again" in errors[0] and "--redo" in errors[0]
    assert "style_weight 0.1 → 3" in errors[0]  # the example names what changed
    assert "nothing was run" in errors[0]
    # Nothing touched: the outputs, the records, the job file; no kept copies.
    assert _snapshot(out) == before and records(out) == recs
    assert (out / ".stylebatch" / "job.json").read_bytes() == job_file
    assert not (out / ".stylebatch" / "replaced").exists()

    assert main(["run", str(done), "--weights", "random", "--set", "style_weight=3", "--redo"]) == 0
    text = capsys.readouterr().out
    assert "4 finished pair(s) will be made again" in text.split("to run")[0]  # said before it starts
    kept = sorted((out / ".stylebatch" / "replaced").iterdir())
    assert [p.name for p in kept] == sorted(f"{name}.{recs[name]['id']}.png" for name in recs)
    for p in kept:  # the very bytes of the previous outputs
        assert p.read_bytes() == before[p.name.split(".")[0] + ".png"]
    for name, record in records(out).items():
        assert record["status"] == "done" and record["id"] != recs[name]["id"]
        assert f"redoing {name}: style_weight 0.1 → 3 (the previous output is kept as " in text


def test_a_few_are_redone_unasked_and_status_and_inspect_list_the_copies(done: Path, capsys) -> None:
    out = done.parent / "out"
    old = records(out)["a__s1"]["id"]
    before = (out / "a__s1.png").read_bytes()
    capsys.readouterr()
    # Two of the four pairs change in the manifest: made again without --redo, their outputs kept.
    data = yaml.safe_load(done.read_text())
    for p in data["pairs"][:2]:
        p["style_weight"] = 0.5
    done.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["run", str(done), "--weights", "random"]) == 0
    text = capsys.readouterr().out
    assert "2 finished pair(s) will be made again" in text
    kept = out / ".stylebatch" / "replaced" / f"a__s1.{old}.png"
    assert kept.read_bytes() == before
    assert f"(the previous output is kept as .stylebatch/replaced/a__s1.{old}.png)" in text

    assert main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2 earlier output(s) that a changed setting replaced are kept in" in text
    assert main(["status", str(out), "--all"]) == 0
    assert f"  a__s1.{old}.png" in capsys.readouterr().out.splitlines()
    assert main(["status", str(out), "--json"]) == 0
    assert str(kept) in json.loads(capsys.readouterr().out)["replaced"]
    assert main(["inspect", str(out / "a__s1.png")]) == 0
    text = capsys.readouterr().out
    assert f"replaced     {kept} (an earlier output of this name, kept)" in text
    assert "a__s2." not in text  # another pair's copy is not this one's
    assert main(["inspect", str(kept)]) == 0  # the copy carries its own settings
    assert f"pair id      {old}" in capsys.readouterr().out
