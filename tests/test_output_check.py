"""Resume start-up checks a done pair's output by the size, mtime and inode recorded when it was
written; the full sha256 is read only with `run --verify` or when those differ. A rerun with a
changed setting says what changed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from stylebatch.cli.main import main
from stylebatch.jobdir import state as state_mod
from tests.jobkit import records, tiny_job

FAST = {
    "steps": 4,
    "checkpoint_every": 2,
    "log_every": 2,
    "optimizer": "adam",
    "lr": 0.05,
    "style_weight": 0.1,
}  # pinned: the redo note below names the value it had
PAIRS = [{"content": "images/a.png", "style": "images/s1.png"}, {"content": "images/b.png", "style": "images/s2.png"}]


@pytest.fixture
def done(tmp_path: Path) -> Path:
    manifest = tiny_job(tmp_path, pairs=PAIRS, defaults=FAST)
    assert main(["run", str(manifest), "--weights", "random"]) == 0
    return manifest


def _run_counting_hashes(manifest: Path, monkeypatch, *extra: str) -> tuple[int, list[str]]:
    """Run again; returns the exit code and the outputs whose sha256 the start-up read."""
    hashed: list[str] = []
    original = state_mod.sha256_file

    def counting(path):
        if Path(path).parent == manifest.parent / "out":
            hashed.append(Path(path).name)
        return original(path)

    monkeypatch.setattr(state_mod, "sha256_file", counting)
    code = main(["run", str(manifest), "--weights", "random", *extra])
    monkeypatch.undo()
    return code, hashed


def test_an_untouched_output_is_not_read_again(done: Path, monkeypatch) -> None:
    out = done.parent / "out"
    stamp = records(out)["a__s1"]["output_stat"]
    st = os.stat(out / "a__s1.png")
    assert stamp == {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "inode": st.st_ino}
    code, hashed = _run_counting_hashes(done, monkeypatch)
    assert code == 0 and hashed == []
    code, hashed = _run_counting_hashes(done, monkeypatch, "--verify")
    assert code == 0 and sorted(hashed) == ["a__s1.png", "b__s2.png"]


def test_a_touched_output_is_hashed_once_and_kept(done: Path, monkeypatch) -> None:
    out = done.parent / "out"
    before = (out / "a__s1.png").read_bytes()
    finished = records(out)["a__s1"]["finished"]
    os.utime(out / "a__s1.png", ns=(1_000_000_000, 1_000_000_000))  # same bytes, another mtime
    code, hashed = _run_counting_hashes(done, monkeypatch)
    assert code == 0 and hashed == ["a__s1.png"]
    assert records(out)["a__s1"]["finished"] == finished and (out / "a__s1.png").read_bytes() == before  # not redone
    code, hashed = _run_counting_hashes(done, monkeypatch)  # stamped again: cheap again
    assert code == 0 and hashed == []


def test_a_replaced_output_is_the_users_and_redone_only_with_overwrite(
    done: Path, monkeypatch, capsys: pytest.CaptureFixture
) -> None:
    out = done.parent / "out"
    good = (out / "b__s2.png").read_bytes()
    # Same size, other bytes, written as a new file (a new inode), then given the old mtime back.
    st = os.stat(out / "b__s2.png")
    tampered = out / "tampered.png"
    tampered.write_bytes(good[:-8] + bytes(8))
    os.utime(tampered, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tampered, out / "b__s2.png")
    capsys.readouterr()
    code, hashed = _run_counting_hashes(done, monkeypatch)
    assert code == 2  # not what the job wrote: the user's, refused
    assert "b__s2.png exists and differs from what this job wrote there" in capsys.readouterr().err
    code, hashed = _run_counting_hashes(done, monkeypatch, "--overwrite")
    assert code == 0 and hashed == ["b__s2.png"]
    assert "redoing b__s2: its output b__s2.png changed since it was written" in capsys.readouterr().out
    assert (out / "b__s2.png").read_bytes() == good  # made again: the same bytes as the first time


def test_an_output_edited_in_place_with_its_mtime_set_back_is_noticed(done: Path, capsys) -> None:
    """Same inode, size and mtime: the ctime (which no program can set back) tells it, unread."""
    out = done.parent / "out"
    path = out / "a__s1.png"
    st = os.stat(path)
    with open(path, "r+b") as fh:
        fh.seek(st.st_size - 20)
        fh.write(bytes(8))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_ino == st.st_ino and os.stat(path).st_mtime_ns == st.st_mtime_ns
    capsys.readouterr()
    assert main(["run", str(done), "--weights", "random"]) == 2
    assert "a__s1.png exists and differs" in capsys.readouterr().err


@pytest.mark.slow
def test_a_changed_setting_says_what_changed(done: Path, capsys: pytest.CaptureFixture) -> None:
    out = done.parent / "out"
    capsys.readouterr()
    assert main(["run", str(done), "--weights", "random", "--set", "style_weight=3"]) == 0
    text = capsys.readouterr().out
    kept = "(the previous output is kept as .stylebatch/replaced/"
    assert f"redoing a__s1: style_weight 0.1 → 3 {kept}a__s1." in text
    assert f"redoing b__s2: style_weight 0.1 → 3 {kept}b__s2." in text
    shutil.copy(done.parent / "images" / "s2.png", done.parent / "images" / "s1.png")  # an input's bytes change
    assert main(["run", str(done), "--weights", "random", "--set", "style_weight=3"]) == 0
    text = capsys.readouterr().out
    assert f"redoing a__s1: style s1.png changed {kept}a__s1." in text
    assert "b__s2" not in text.split("to run")[0]  # unchanged: not redone, nothing said
    assert records(out)["b__s2"]["status"] == "done"
