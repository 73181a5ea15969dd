"""No traceback from any file stylebatch reads: YAML nested hundreds of levels (a manifest, a
--set value), deeply nested JSON in an image's settings (`inspect`, `run --from`), a state.json
nested too deeply or holding wrong types (`status`, `report`, `run`: it counts as absent), a file
name that is not UTF-8 (`report`). One line naming the file, never exit 70."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from stylebatch.cli.main import main
from tests.jobkit import make_image, records, tiny_job, write_manifest

ARGS = ["--weights", "random"]
FAST = {"steps": 3, "checkpoint_every": 2, "log_every": 1, "optimizer": "adam", "lr": 0.05}
PAIRS = [{"content": "images/a.png", "style": "images/s1.png"}]


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err, captured.err
    assert "internal error" not in captured.err, captured.err
    return code, captured.out, captured.err


@pytest.mark.parametrize("depth", [60, 400, 3000])
def test_deep_yaml_in_a_manifest_or_set_is_one_line(depth: int, tmp_path: Path, capsys) -> None:
    manifest = tiny_job(tmp_path, pairs=[dict(p) for p in PAIRS], defaults=FAST)
    deep = "[" * depth + "1" + "]" * depth
    text = manifest.read_text() + f"\nextra: {deep}\n"
    nested = write_manifest(tmp_path / "deep.yaml", text=text)
    code, out, err = cli(["validate", str(nested), *ARGS], capsys)
    assert code == 2 and "nested more than" in err and str(nested) in err, err
    code, out, err = cli(["validate", str(manifest), *ARGS, "--set", f"style_weight={deep}"], capsys)
    assert code == 2 and "nested more than" in err and "--set style_weight" in err, err


@pytest.mark.parametrize("depth", [100, 100_000])
def test_deep_json_in_an_images_settings_is_one_line(depth: int, tmp_path: Path, capsys) -> None:
    image = tmp_path / "deep.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("stylebatch", '{"config": {}, "x": ' + "[" * depth + "]" * depth + "}")
    Image.new("RGB", (8, 8)).save(image, pnginfo=info)
    for argv in (["inspect", str(image)], ["run", "--from", str(image), *ARGS, "--out", str(tmp_path / "o")]):
        code, out, err = cli(argv, capsys)
        assert code == 2 and str(image) in err and "nested too deeply" in err, (argv, err)


BAD_RECORDS = {
    "pid text": lambda r: {**r, "status": "running", "pid": "12x"},
    "heartbeat list": lambda r: {**r, "status": "running", "host": "elsewhere", "heartbeat": [1]},
    "attempts text": lambda r: {**r, "status": "failed", "attempts": "many"},
    "status list": lambda r: {**r, "status": ["done"]},
    "losses text": lambda r: {**r, "losses": {"total": "low"}},
    "batch numbers": lambda r: {**r, "batch": [1, 2]},
    "fallback text": lambda r: {**r, "memory_fallback": {"rungs": "all", "config": {}}},
}


@pytest.mark.parametrize("case", [*BAD_RECORDS, "deep json"])
def test_a_corrupt_record_counts_as_absent(case: str, tmp_path: Path, capsys) -> None:
    manifest = tiny_job(tmp_path, pairs=[dict(p) for p in PAIRS], defaults=FAST)
    out = tmp_path / "out"
    assert main(["run", str(manifest), *ARGS]) == 0
    path = out / ".stylebatch" / "pairs" / "a__s1" / "state.json"
    if case == "deep json":
        path.write_text('{"status": "done", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    else:
        path.write_text(json.dumps(BAD_RECORDS[case](json.loads(path.read_text()))))
    capsys.readouterr()
    code, stdout, err = cli(["status", str(out)], capsys)
    assert code == 0 and "pending" in stdout, stdout
    assert cli(["report", str(out)], capsys)[0] == 0
    # Absent: the pair is run again (its output carries its id: the job's own to replace).
    code, stdout, err = cli(["run", str(manifest), *ARGS], capsys)
    assert code == 0, stdout + err
    assert records(out)["a__s1"]["status"] == "done"


def test_report_with_a_file_name_that_is_not_utf8(tmp_path: Path, capsys) -> None:
    """The name made from it is refused (not valid text); with --skip-invalid the job runs the rest,
    and its report shows the invalid entry, the file's path %-escaped from its own bytes."""
    pics = tmp_path / "pics"
    make_image(pics / os.fsdecode(b"caf\xe9.png"), seed=1, size=(32, 32))
    make_image(pics / "dog.png", seed=2, size=(32, 32))
    make_image(tmp_path / "styles" / "wave.png", seed=3, size=(32, 32))
    manifest = write_manifest(
        tmp_path / "job.yaml",
        # 32 px as tiny_job's: the default size (256 px) made the one pair that runs take most of a minute.
        {
            "output_dir": "out",
            "defaults": {**FAST, "size": 32},
            "grid": {"content": ["pics/*.png"], "style": ["styles/*.png"]},
        },
    )
    code, out, err = cli(["run", str(manifest), *ARGS], capsys)
    assert code == 2 and "lone surrogate" in err, err
    code, out, err = cli(["run", str(manifest), *ARGS, "--skip-invalid"], capsys)
    assert code == 1, out + err
    code, out, err = cli(["report", str(tmp_path / "out")], capsys)
    assert code == 0 and "1 done, 1 invalid" in out, out + err
    html = (tmp_path / "out" / ".stylebatch" / "report" / "report.html").read_text(encoding="utf-8")
    assert "caf%E9" in html
