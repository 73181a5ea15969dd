"""Smaller refusals and displays: system data folders and a user's keys as output_dir, names that
hide characters, rich markup in names shown by `status`, and a content image too narrow for any
'size' (told to crop, not to raise 'size')."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from stylebatch.cli.main import main
from tests.jobkit import tiny_job

ARGS = ["--weights", "random"]
FAST = {"steps": 2, "checkpoint_every": 2, "log_every": 1, "optimizer": "adam", "lr": 0.05}
PAIR = {"content": "images/a.png", "style": "images/s1.png"}


def one_error(capsys, argv: list[str], code: int = 2) -> str:
    assert main(argv) == code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, captured.err
    return errors[0]


@pytest.mark.parametrize(
    "where",
    ["/var/lib/dpkg", "/var/lib/apt/lists", "/var/log/journal", "/var/cache/out", f"/run/user/{os.getuid()}", "~/.ssh"],
)
def test_system_data_folders_and_a_users_keys_are_refused_as_output_dir(where: str, tmp_path: Path, capsys) -> None:
    manifest = tiny_job(tmp_path, pairs=[dict(PAIR)], defaults=FAST)
    out = os.path.expanduser(where)
    line = one_error(capsys, ["validate", str(manifest), *ARGS, "--out", out])
    assert out in line and ("system directory" in line or "keys" in line), line


@pytest.mark.parametrize(
    "name, what",
    [
        ("line\u2028break", "U+2028"),
        ("no\u00a0break", "U+00A0"),
        ("private\ue000use", "private-use"),
        ("unassigned\U000e0080x", "unassigned"),
    ],
)
def test_names_that_hide_characters_are_refused(name: str, what: str, tmp_path: Path, capsys) -> None:
    manifest = tiny_job(tmp_path, pairs=[{**PAIR, "name": name}], defaults=FAST)
    line = one_error(capsys, ["validate", str(manifest), *ARGS])
    assert "pairs[0]" in line and what in line, line


def test_status_shows_names_and_errors_as_they_are(tmp_path: Path, capsys, monkeypatch) -> None:
    from stylebatch.jobdir.state import JobState

    name = "[@click=a(]x[bold]y"
    manifest = tiny_job(tmp_path, pairs=[{**PAIR, "name": name}], defaults=FAST)
    assert main(["run", str(manifest), *ARGS]) == 0
    JobState(tmp_path / "out").update(name, status="failed", error="[red]boom[/red] at [@click=b(]")
    capsys.readouterr()
    monkeypatch.setenv("COLUMNS", "300")  # one table row a line
    assert main(["status", str(tmp_path / "out")]) == 0
    shown = "".join(capsys.readouterr().out.split()).replace("│", "")
    assert "[@click=a(]x[bold]y" in shown and "[red]boom[/red]at[@click=b(]" in shown, shown


def test_a_content_too_narrow_for_any_size_is_told_to_crop(tmp_path: Path, capsys) -> None:
    manifest = tiny_job(tmp_path, pairs=[{"content": "images/strip.png", "style": "images/s1.png"}], defaults=FAST)
    Image.new("RGB", (1, 20000), (120, 30, 200)).save(tmp_path / "images" / "strip.png")
    line = one_error(capsys, ["validate", str(manifest), *ARGS])
    assert "1x20000" in line and "crop or pad" in line and "raise 'size'" not in line, line
    # A merely small size on a sound image is still told to raise it.
    manifest = tiny_job(tmp_path, pairs=[dict(PAIR)], defaults={**FAST, "size": 8})
    assert "raise 'size'" in one_error(capsys, ["validate", str(manifest), *ARGS])


def test_status_and_report_do_not_count_a_deleted_output_as_done(tmp_path: Path, capsys) -> None:
    import json

    manifest = tiny_job(tmp_path, defaults=FAST)
    out = tmp_path / "out"
    assert main(["run", str(manifest), *ARGS]) == 0
    (out / "a__s1.png").unlink()
    capsys.readouterr()
    assert main(["status", str(out), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["counts"]["done"] == 1 and document["counts"]["pending"] == 1, document["counts"]
    row = next(p for p in document["pairs"] if p["name"] == "a__s1")
    assert row["status"] == "pending" and "a__s1.png is missing" in row["error"]
    assert main(["report", str(out)]) == 0
    assert "1 done, 1 pending" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["float 0-1", "int32 0-255", "int32 full range"])
def test_float_and_32_bit_integer_tiffs_decode_by_their_range(kind: str, tmp_path: Path) -> None:
    import numpy as np

    from stylebatch.images import load_image

    ramp = np.linspace(0, 1, 32 * 32).reshape(32, 32)
    array = {
        "float 0-1": ramp.astype(np.float32),
        "int32 0-255": (ramp * 255).astype(np.int32),
        "int32 full range": (ramp * (2**31 - 1)).astype(np.int32),
    }[kind]
    path = tmp_path / "grey.tif"
    Image.fromarray(array, mode="F" if kind.startswith("float") else "I").save(path)
    rgb = np.asarray(load_image(path, 10**7).rgb)
    assert rgb.min() == 0 and rgb.max() == 255  # the whole ramp, neither black nor zeros
    assert abs(int(rgb[16, 0, 0]) - 128) < 4  # the middle of the ramp is mid-grey
