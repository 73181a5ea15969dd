"""`format` and `quality` are bookkeeping: changing them on a finished pair writes the new file from
the finished picture when it can be had (a lossless 8-bit output, or the kept final checkpoint)
without optimising again, makes the pair again (saying why) when it cannot, and never leaves the
previous file behind: it is kept in .stylebatch/replaced/ and listed by `status`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from stylebatch.cli.main import main
from stylebatch.fit.provenance import read_metadata
from stylebatch.runner import loop
from tests.jobkit import records, tiny_job

FAST = {"steps": 4, "checkpoint_every": 2, "log_every": 2, "keep_checkpoints": False}
ONE = [{"content": "images/a.png", "style": "images/s1.png"}]
FOUR = [
    {"content": c, "style": s} for c in ("images/a.png", "images/b.png") for s in ("images/s1.png", "images/s2.png")
]
RANDOM = ["--weights", "random"]


def _no_optimisation(monkeypatch) -> list:
    """Make any fit this run would start fail the test."""
    calls: list = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("the pair was optimised again")

    monkeypatch.setattr(loop, "stylize", refuse)
    return calls


def _kept(out: Path) -> list[str]:
    replaced = out / ".stylebatch" / "replaced"
    return sorted(p.name for p in replaced.iterdir()) if replaced.is_dir() else []


@pytest.mark.slow  # four runs
def test_png_to_jpg_is_written_from_the_finished_png_and_the_png_is_kept(tmp_path, capsys, monkeypatch):
    manifest = tiny_job(tmp_path, pairs=ONE, defaults=FAST)
    out = tmp_path / "out"
    assert main(["run", str(manifest), *RANDOM]) == 0
    png = (out / "a__s1.png").read_bytes()
    pair_id = records(out)["a__s1"]["id"]
    # A fresh jpg run of the same pair elsewhere: what the re-encoded file must equal.
    assert main(["run", str(manifest), *RANDOM, "--set", "format=jpg", "--out", str(tmp_path / "fresh")]) == 0
    capsys.readouterr()

    calls = _no_optimisation(monkeypatch)
    assert main(["run", str(manifest), *RANDOM, "--set", "format=jpg"]) == 0
    text = capsys.readouterr().out
    assert not calls
    assert (
        f"re-encoded a__s1: png → jpg q95 from its finished picture, nothing optimised again (the a__s1.png is kept as .stylebatch/replaced/a__s1.{pair_id}.png)"
        in text
    )
    assert "1 already done, 0 to run" in text
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["a__s1.jpg"]  # no png left behind
    assert (out / "a__s1.jpg").read_bytes() == (tmp_path / "fresh" / "a__s1.jpg").read_bytes()
    assert (out / ".stylebatch" / "replaced" / f"a__s1.{pair_id}.png").read_bytes() == png
    record = records(out)["a__s1"]
    assert record["encoding"] == {"format": "jpg", "quality": 95} and record["output"] == "a__s1.jpg"
    assert read_metadata(out / "a__s1.jpg")["encoding"] == record["encoding"]

    # Nothing more to do the next time; status lists the kept png.
    assert main(["run", str(manifest), *RANDOM, "--set", "format=jpg"]) == 0
    assert "re-encoded" not in capsys.readouterr().out
    assert main(["status", str(out), "--all"]) == 0
    assert f"a__s1.{pair_id}.png" in capsys.readouterr().out


@pytest.mark.slow  # four pairs, made twice
def test_jpg_to_png_is_made_again_saying_why_and_the_jpg_is_kept(tmp_path, capsys):
    """A JPEG has lost what a png keeps: converting it would give a larger file with the same
    artefacts, so the pair is optimised again (counted like any redo: more than 3 need --redo)."""
    manifest = tiny_job(tmp_path, pairs=FOUR, defaults={**FAST, "format": "jpg"})
    out = tmp_path / "out"
    assert main(["run", str(manifest), *RANDOM]) == 0
    jpgs = {p.name: p.read_bytes() for p in out.glob("*.jpg")}
    capsys.readouterr()
    assert main(["run", str(manifest), *RANDOM, "--set", "format=png"]) == 2
    err = capsys.readouterr().err
    assert "would make 4 finished pairs again" in err and "format jpg q95 → png" in err and "--redo" in err
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == sorted(jpgs)  # nothing touched

    assert main(["run", str(manifest), *RANDOM, "--set", "format=png", "--redo"]) == 0
    text = capsys.readouterr().out
    assert "redoing a__s1: jpg q95 → png: a jpg q95 file has lost pixels that png would keep" in text
    assert "so it is optimised again (4 evaluations;" in text
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == sorted(n.replace(".jpg", ".png") for n in jpgs)
    ids = {name: r["id"] for name, r in records(out).items()}
    assert _kept(out) == sorted(f"{n.removesuffix('.jpg')}.{ids[n.removesuffix('.jpg')]}.jpg" for n in jpgs)
    for name, data in jpgs.items():
        assert (
            out / ".stylebatch" / "replaced" / f"{name.removesuffix('.jpg')}.{ids[name.removesuffix('.jpg')]}.jpg"
        ).read_bytes() == data
    assert all(r["status"] == "done" and r["encoding"] == {"format": "png"} for r in records(out).values())


def test_a_kept_checkpoint_gives_a_16_bit_file_without_optimising(tmp_path, capsys, monkeypatch):
    """png → png16 at the same path: the png is kept first, then the engine renders the kept final
    checkpoint (the float result): the same bytes as a fresh png16 run, no evaluation added."""
    manifest = tiny_job(tmp_path, pairs=ONE, defaults={**FAST, "keep_checkpoints": True})
    out = tmp_path / "out"
    assert main(["run", str(manifest), *RANDOM]) == 0
    png = (out / "a__s1.png").read_bytes()
    assert main(["run", str(manifest), *RANDOM, "--set", "format=png16", "--out", str(tmp_path / "fresh")]) == 0
    capsys.readouterr()
    from stylebatch.fit import engine

    monkeypatch.setattr(engine.L.Trainer, "fit", lambda *a, **k: pytest.fail("optimised again"))
    assert main(["run", str(manifest), *RANDOM, "--set", "format=png16"]) == 0
    text = capsys.readouterr().out
    assert "re-encoding a__s1: png → png16 from its kept checkpoint, without optimising again" in text
    assert (out / "a__s1.png").read_bytes() == (tmp_path / "fresh" / "a__s1.png").read_bytes()
    assert read_metadata(out / "a__s1.png")["encoding"] == {"format": "png16"}
    pair_id = records(out)["a__s1"]["id"]
    assert (out / ".stylebatch" / "replaced" / f"a__s1.{pair_id}.png").read_bytes() == png
    assert records(out)["a__s1"]["steps_done"] == 4


def test_a_run_stopped_inside_the_change_finishes_it(tmp_path, capsys, monkeypatch):
    """Stopped after the png was kept but before the jpg was written: the next run writes the jpg
    from the kept copy. Stopped after the jpg was written but before the record said so: that jpg
    (it carries the pair's id) is the job's own, not a user's file to refuse, and is written again."""
    manifest = tiny_job(tmp_path, pairs=ONE, defaults=FAST)
    out = tmp_path / "out"
    assert main(["run", str(manifest), *RANDOM]) == 0
    record_file = out / ".stylebatch" / "pairs" / "a__s1" / "state.json"
    before = record_file.read_text()
    pair_id = json.loads(before)["id"]
    kept = out / ".stylebatch" / "replaced" / f"a__s1.{pair_id}.png"
    kept.parent.mkdir(parents=True)
    (out / "a__s1.png").rename(kept)  # what keep_replaced did before the stop
    calls = _no_optimisation(monkeypatch)
    assert main(["run", str(manifest), *RANDOM, "--set", "format=jpg"]) == 0
    assert not calls and (out / "a__s1.jpg").exists() and not (out / "a__s1.png").exists()
    jpg = (out / "a__s1.jpg").read_bytes()

    record_file.write_text(before)  # the jpg written, the record not yet updated
    kept.rename(out / "a__s1.png")  # (and the png as it was, to be kept again)
    capsys.readouterr()
    assert main(["validate", str(manifest), *RANDOM, "--set", "format=jpg"]) == 0, capsys.readouterr().err
    assert main(["run", str(manifest), *RANDOM, "--set", "format=jpg"]) == 0
    assert not calls and (out / "a__s1.jpg").read_bytes() == jpg
    assert records(out)["a__s1"]["encoding"]["format"] == "jpg"
    assert _kept(out) == [f"a__s1.{pair_id}.png"]


def test_an_edited_previous_output_is_left_alone_and_the_pair_made_again(tmp_path, capsys):
    manifest = tiny_job(tmp_path, pairs=ONE, defaults=FAST)
    out = tmp_path / "out"
    assert main(["run", str(manifest), *RANDOM]) == 0
    Image.new("RGB", (8, 8), "red").save(out / "a__s1.png")  # the user's own picture now
    edited = (out / "a__s1.png").read_bytes()
    capsys.readouterr()
    assert main(["run", str(manifest), *RANDOM, "--set", "format=jpg"]) == 0
    text = capsys.readouterr().out
    assert "redoing a__s1: format png → jpg, and its previous png output changed since it was written" in text
    assert (out / "a__s1.png").read_bytes() == edited and (out / "a__s1.jpg").exists()
