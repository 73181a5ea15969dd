"""A file at an output path that the job did not write is the user's: `validate` and `run` refuse
the pair with one line naming it, and leave it as it was; `--overwrite` lets the job replace it.
The job's own earlier outputs (its record holds their sha256) are still redone and resumed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stylebatch.cli.main import main
from tests.jobkit import edit_manifest, make_image, records, tiny_job

ARGS = ["--weights", "random"]
FAST = {"steps": 4, "checkpoint_every": 2, "log_every": 2, "optimizer": "adam", "lr": 0.05}


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def refused(argv: list[str], capsys, path: Path) -> None:
    code, out, err = cli(argv, capsys)
    assert code == 2, out + err
    assert "Traceback" not in out + err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err
    assert str(path) in errors[0] and "--overwrite" in errors[0], errors[0]


@pytest.mark.parametrize("kind", ["derived name", "given name", "read-only", "link"])
def test_a_users_file_at_an_output_path_is_refused_and_kept(kind: str, tmp_path: Path, capsys) -> None:
    """`output_dir: photos` beside the user's own pictures: photos/cat__wave.png or photos/mine.png."""
    photos = tmp_path / "photos"
    make_image(photos / "cat.png", seed=1, size=(32, 32))
    make_image(photos / "wave.png", seed=2, size=(32, 32))
    pair = {"content": "photos/cat.png", "style": "photos/wave.png"}
    if kind == "given name":
        pair["name"] = "mine"
    manifest = tiny_job(tmp_path, pairs=[pair], defaults=FAST, output_dir="photos")
    users = photos / ("mine.png" if kind == "given name" else "cat__wave.png")
    if kind == "link":
        (tmp_path / "elsewhere.png").write_bytes(b"the user's picture")
        users.symlink_to(tmp_path / "elsewhere.png")
    else:
        users.write_bytes(b"the user's own picture")
    if kind == "read-only":
        users.chmod(0o444)
    for command in ("validate", "run"):
        refused([command, str(manifest), *ARGS], capsys, users)
    if kind == "link":
        assert users.is_symlink() and (tmp_path / "elsewhere.png").read_bytes() == b"the user's picture"
    else:
        assert users.read_bytes() == b"the user's own picture"
    assert records(photos) == {}  # refused before any work
    # --overwrite: the user said so; the job replaces it, and from then on it is the job's own.
    assert main(["run", str(manifest), *ARGS, "--overwrite"]) == 0
    assert users.read_bytes().startswith(b"\x89PNG") and not users.is_symlink()
    if kind == "link":
        assert (tmp_path / "elsewhere.png").read_bytes() == b"the user's picture"
    assert cli(["validate", str(manifest), *ARGS], capsys)[0] == 0


@pytest.mark.slow
def test_the_jobs_own_outputs_are_redone_and_resumed(tmp_path: Path, capsys) -> None:
    manifest = tiny_job(tmp_path, defaults=FAST)
    out = tmp_path / "out"
    assert main(["run", str(manifest), *ARGS]) == 0
    first = (out / "a__s1.png").read_bytes()
    # A changed setting: the job's own output is replaced without --overwrite.
    edit_manifest(manifest, lambda d: d["defaults"].update(style_weight=7))
    assert cli(["validate", str(manifest), *ARGS], capsys)[0] == 0
    assert main(["run", str(manifest), *ARGS]) == 0
    assert (out / "a__s1.png").read_bytes() != first
    # --fresh forgets the records, after the outputs were found to be the job's own.
    assert main(["run", str(manifest), *ARGS, "--fresh"]) == 0
    assert cli(["run", str(manifest), *ARGS], capsys)[0] == 0


def test_an_output_written_but_not_yet_recorded_is_the_jobs_own(tmp_path: Path, capsys) -> None:
    """Killed between writing the output and recording it: the record is still 'running', and the
    file carries the pair's id in its settings: the rerun takes it as the job's."""
    manifest = tiny_job(tmp_path, defaults=FAST)
    out = tmp_path / "out"
    assert main(["run", str(manifest), *ARGS]) == 0
    state = out / ".stylebatch" / "pairs" / "a__s1" / "state.json"
    import json

    record = json.loads(state.read_text())
    for key in ("output_sha256", "output_stat"):
        record.pop(key)
    record["status"] = "running"
    record["pid"] = 4_194_999  # gone
    state.write_text(json.dumps(record))
    assert cli(["validate", str(manifest), *ARGS], capsys)[0] == 0
    assert main(["run", str(manifest), *ARGS]) == 0
    assert records(out)["a__s1"]["status"] == "done"


def test_an_output_edited_by_the_user_is_refused(tmp_path: Path, capsys) -> None:
    """Recorded, but other bytes now (edited in place): the user's work, refused until --overwrite."""
    manifest = tiny_job(tmp_path, defaults=FAST)
    out = tmp_path / "out"
    assert main(["run", str(manifest), *ARGS]) == 0
    edited = out / "b__s2.png"
    st = os.stat(edited)
    edited.write_bytes(edited.read_bytes()[:-8] + bytes(8))
    os.utime(edited, ns=(st.st_atime_ns, st.st_mtime_ns))
    refused(["run", str(manifest), *ARGS], capsys, edited)
    assert edited.read_bytes().endswith(bytes(8))
    assert main(["run", str(manifest), *ARGS, "--overwrite"]) == 0
    assert records(out)["b__s2"]["status"] == "done" and not edited.read_bytes().endswith(bytes(8))
