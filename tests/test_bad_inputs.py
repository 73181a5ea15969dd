"""Broken and hostile input: every refusal is one line naming the manifest, the entry and the file,
with no traceback, exit 2 and nothing written; images decode safely and right; YAML is loaded safely.

Validation cases run `stylebatch validate` and `stylebatch run` in process (no optimisation at all:
`run` refuses before any work). The few runs that optimise use `--weights random`, size 32, 2 steps.
Weights files (pickled code, wrong shapes, NaN) are covered in tests/test_weights.py.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from stylebatch.cli.main import main
from stylebatch.errors import ImageError
from stylebatch.images import load_image
from stylebatch.job.manifest import load_job
from tests.jobkit import make_image, records, run_subprocess, temp_files, write_manifest

GOOD = {"content": "images/a.png", "style": "images/s1.png"}
RUN_TINY = ["--weights", "random", "--set", "size=32", "--set", "steps=2", "--set", "optimizer=adam"]


# --- helpers ------------------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for i, name in enumerate(["a.png", "b.png", "s1.png", "s2.png"]):
        make_image(tmp_path / "images" / name, seed=i)  # 40x30
    return tmp_path


def one_pair(root: Path, **pair) -> Path:
    return write_manifest(root / "job.yaml", {"output_dir": "out", "pairs": [{**GOOD, **pair}]})


def png_bytes(width: int, height: int, raw: bytes = b"\0", bit_depth: int = 8, color_type: int = 2) -> bytes:
    """A PNG written by hand: signature, IHDR, one IDAT of `raw` scanlines, IEND, with real CRCs."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(out: str, err: str, fragments: list[str]) -> str:
    """No traceback; every stderr line is an `error:` line or the closing count; one names everything."""
    assert "Traceback" not in out + err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "no error printed"
    for line in lines:
        assert line.startswith("error: ") or line.split()[1] == "problem(s);", f"not a one-line error: {line!r}"
    matching = [line for line in lines if all(f in line for f in fragments)]
    assert matching, f"no error line with all of {fragments}:\n{err}"
    return matching[0]


def refused_everywhere(root: Path, manifest: Path, fragments: list[str], extra: list[str], capsys) -> None:
    """`validate` and `run` both refuse with exit 2, the same one-line message, and write nothing."""
    before = sorted(p for p in root.rglob("*"))
    for command in ("validate", "run"):
        code, out, err = cli([command, str(manifest), "--weights", "random", *extra], capsys)
        assert code == 2, (command, out, err)
        assert_one_line_error(out, err, fragments)
    assert sorted(p for p in root.rglob("*")) == before  # no output dir, state, partial or temp file


# --- manifest structure and YAML ----------------------------------------------------------------


def _case_missing(root: Path):
    return root / "nope.yaml", ["nope.yaml", "manifest not found"]


def _case_directory(root: Path):
    (root / "dir.yaml").mkdir()
    return root / "dir.yaml", ["dir.yaml", "not a file"]


def _case_syntax_tab(root: Path):
    m = write_manifest(root / "job.yaml", text="output_dir: out\npairs:\n\t- {content: images/a.png}\n")
    return m, [f"{m}:3:", "not valid YAML"]


def _case_syntax_bracket(root: Path):
    m = write_manifest(root / "job.yaml", text="output_dir: out\npairs:\n  - {content: images/a.png, style: [x\n\n")
    return m, [f"{m}:", "not valid YAML"]


def _case_empty(root: Path):
    return write_manifest(root / "job.yaml", text=""), ["job.yaml", "empty"]


def _case_only_comments(root: Path):
    return write_manifest(root / "job.yaml", text="# nothing here\n\n"), ["job.yaml", "empty"]


def _case_top_list(root: Path):
    return write_manifest(root / "job.yaml", text="- images/a.png\n- images/s1.png\n"), [
        "job.yaml",
        "must be a mapping",
        "list",
    ]


def _case_top_scalar(root: Path):
    return write_manifest(root / "job.yaml", text="just some words\n"), ["job.yaml", "must be a mapping", "str"]


def _case_not_utf8(root: Path):
    path = root / "job.yaml"
    path.write_bytes(b"output_dir: \xff\xfe\x00out\n")
    return path, ["job.yaml", "not a text (UTF-8)"]


def _case_binary(root: Path):
    path = root / "job.yaml"
    path.write_bytes((root / "images" / "a.png").read_bytes())
    return path, ["job.yaml", "not"]


def _case_unknown_top_key(root: Path):
    m = write_manifest(root / "job.yaml", {"output_dir": "out", "pair": [GOOD]})
    return m, ["job.yaml", "unknown top-level key 'pair'", "did you mean 'pairs'"]


def _case_no_work(root: Path):
    return write_manifest(root / "job.yaml", {"output_dir": "out"}), ["job.yaml", "no work"]


def _case_duplicate_yaml_key(root: Path):
    text = (
        "output_dir: out\npairs:\n  - content: images/a.png\n    style: images/s1.png\n    steps: 3\n    steps: 300\n"
    )
    m = write_manifest(root / "job.yaml", text=text)
    return m, [f"{m}:6:", "key 'steps' given twice (first on line 5)"]


def _case_pairs_not_list(root: Path):
    return write_manifest(root / "job.yaml", {"output_dir": "out", "pairs": GOOD}), [
        "job.yaml",
        "'pairs' must be a list",
    ]


def _case_pair_not_mapping(root: Path):
    m = write_manifest(root / "job.yaml", {"output_dir": "out", "pairs": ["images/a.png"]})
    return m, ["job.yaml", "pairs[0]", "expected a mapping"]


def _case_pair_missing_style(root: Path):
    m = write_manifest(root / "job.yaml", {"output_dir": "out", "pairs": [GOOD, {"content": "images/b.png"}]})
    return m, ["job.yaml", "pairs[1]", "missing 'style'"]


def _case_pair_key_typo(root: Path):
    m = write_manifest(
        root / "job.yaml", {"output_dir": "out", "pairs": [{"contnet": "images/a.png", "style": "images/s1.png"}]}
    )
    return m, ["job.yaml", "pairs[0]", "unknown key 'contnet'", "did you mean 'content'"]


def _case_defaults_key_typo(root: Path):
    m = write_manifest(root / "job.yaml", {"output_dir": "out", "defaults": {"stpes": 3}, "pairs": [GOOD]})
    return m, ["job.yaml", "defaults", "unknown key 'stpes'", "did you mean 'steps'"]


def _case_defaults_not_mapping(root: Path):
    m = write_manifest(root / "job.yaml", {"output_dir": "out", "defaults": [1, 2], "pairs": [GOOD]})
    return m, ["job.yaml", "'defaults' must be a mapping"]


def _case_grid_key_typo(root: Path):
    grid = {"content": ["images/a.png"], "style": ["images/s1.png", "images/s2.png"], "styel_weight": [1, 2]}
    m = write_manifest(root / "job.yaml", {"output_dir": "out", "grid": grid})
    return m, ["job.yaml", "grid.styel_weight", "unknown key", "did you mean 'style_weight'"]


def _case_grid_no_match(root: Path):
    m = write_manifest(
        root / "job.yaml", {"output_dir": "out", "grid": {"content": ["images/*.jpg"], "style": ["images/s1.png"]}}
    )
    return m, ["job.yaml", "grid.content", "'images/*.jpg' matches no file"]


def _case_grid_name(root: Path):
    m = write_manifest(
        root / "job.yaml",
        {"output_dir": "out", "grid": {"content": ["images/a.png"], "style": ["images/s1.png"], "name": ["x"]}},
    )
    return m, ["job.yaml", "grid.name", "not allowed"]


def _case_alias_bomb(root: Path):
    # "Billion laughs": 9 levels of 9 aliases is 9**9 strings once walked. Refused at the first alias.
    lines = ['a0: &a0 ["lol"]'] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    m = write_manifest(root / "job.yaml", text="\n".join(lines + ["output_dir: out", "pairs: *a9", ""]))
    return m, [f"{m}:2:", "aliases", "not allowed"]


STRUCTURE_CASES = {name.removeprefix("_case_"): fn for name, fn in globals().items() if name.startswith("_case_")}


@pytest.mark.parametrize("case", sorted(STRUCTURE_CASES))
def test_manifest_refused(case: str, root: Path, capsys) -> None:
    manifest, fragments = STRUCTURE_CASES[case](root)
    refused_everywhere(root, manifest, fragments, [], capsys)


# --- every config key: wrong type or impossible value -------------------------------------------

CONFIG_CASES = [
    ("size", 0, "'size' must be >= 1"),
    ("size", -32, "'size' must be >= 1"),
    ("size", "big", "'size' must be integer"),
    ("size", 32.5, "'size' must be integer"),
    ("size", True, "'size' must be integer"),
    ("size", 100_000, "above max_pixels"),  # the output itself would be a bomb
    ("size", 8, "needs at least 16 px"),  # too small for conv5_1
    ("steps", 0, "'steps' must be >= 1"),
    ("steps", -5, "'steps' must be >= 1"),
    ("optimizer", "sgd", "'optimizer' must be one of lbfgs, adam"),
    ("optimizer", "adamw", "did you mean 'adam'"),
    ("lr", 0, "'lr' must be > 0"),
    ("lr", float("nan"), "'lr' must be a finite number"),
    ("lr", float("inf"), "'lr' must be a finite number"),
    ("style_weight", "lots", "'style_weight' must be number"),
    ("style_weight", float("nan"), "'style_weight' must be a finite number"),
    ("content_weight", float("-inf"), "'content_weight' must be a finite number"),
    ("content_weight", -1, "'content_weight' must be >= 0"),
    ("tv_weight", -0.5, "'tv_weight' must be >= 0"),
    ("content_layer", "conv4_9", "unknown VGG19 layer 'conv4_9'"),
    ("style_layers", {"conv1_1": "high"}, "'style_layers' must be mapping of text to number"),
    ("style_layers", {"conv1_1": float("nan")}, "weight of 'conv1_1' must be a finite number"),
    ("style_layers", {"conv1_1": -1.0}, "weight of 'conv1_1' must be a finite number >= 0"),
    ("style_layers", {"relu9_1": 1.0}, "unknown VGG19 layer 'relu9_1'"),
    ("style_layers", {}, "'style_layers' must name at least one layer"),
    ("style_layers", ["conv1_1"], "'style_layers' must be mapping"),
    ("init", "random", "'init' must be one of content, noise"),
    ("lbfgs_line_search", "wolf", "must be one of strong_wolfe, none, got 'wolf'"),
    ("lbfgs_history", 0, "'lbfgs_history' must be >= 1"),
    ("checkpoint_every", 0, "'checkpoint_every' must be >= 1"),
    ("log_every", -1, "'log_every' must be >= 1"),
    ("max_attempts", 0, "'max_attempts' must be >= 1"),
    ("max_pixels", 0, "'max_pixels' must be >= 1"),
    ("seed", 2**70, "'seed' must be <="),
    ("normalize_losses", "yes", "'normalize_losses' must be true/false"),
    ("keep_checkpoints", 1, "'keep_checkpoints' must be true/false"),
]


@pytest.mark.parametrize(
    ("key", "value", "fragment"), CONFIG_CASES, ids=[f"{k}={v!r}"[:40] for k, v, _ in CONFIG_CASES]
)
def test_config_value_refused(key: str, value, fragment: str, root: Path, capsys) -> None:
    manifest = one_pair(root, **{key: value})
    refused_everywhere(root, manifest, [str(manifest), "pairs[0]", fragment], [], capsys)


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["--set", "steps=abc"], ["--set", "'steps' must be integer"]),
        (["--set", "steps"], ["--set 'steps'", "expected key=value"]),
        (["--set", "size=.inf"], ["--set", "'size' must be integer"]),
        (["--config", "fats"], ["preset 'fats' not found", "did you mean 'fast'"]),
    ],
)
def test_bad_flags_refused(argv: list[str], fragments: list[str], root: Path, capsys) -> None:
    refused_everywhere(root, one_pair(root), fragments, argv, capsys)


def test_yaml_12_numbers_are_numbers(root: Path) -> None:
    """`1e4` is a number to people and to YAML 1.2 (PyYAML reads it as text): accepted."""
    manifest = write_manifest(
        root / "job.yaml",
        text="output_dir: out\npairs:\n  - {content: images/a.png, style: images/s1.png, "
        "style_weight: 1e4, content_weight: 2.5E-1}\n",
    )
    job = load_job(manifest, weights="random")
    assert not job.all_problems, job.all_problems
    assert job.pairs[0].config.style_weight == 1e4 and job.pairs[0].config.content_weight == 0.25


# --- the files a manifest names -----------------------------------------------------------------


def _file_missing_content(root: Path):
    return {"content": "images/missing.png"}, ["content", "missing.png", "file not found"]


def _file_missing_style(root: Path):
    return {"style": "images/gone.jpg"}, ["style", "gone.jpg", "file not found"]


def _file_directory(root: Path):
    (root / "images" / "folder.png").mkdir()
    return {"content": "images/folder.png"}, ["content", "folder.png", "is a directory"]


def _file_not_an_image(root: Path):
    (root / "images" / "notes.png").write_text("these are notes, not pixels\n")
    return {"style": "images/notes.png"}, ["style", "notes.png", "not an image"]


def _file_zero_bytes(root: Path):
    (root / "images" / "empty.jpg").write_bytes(b"")
    return {"content": "images/empty.jpg"}, ["content", "empty.jpg", "empty file (0 bytes)"]


def _file_truncated_png(root: Path):
    data = (root / "images" / "a.png").read_bytes()
    (root / "images" / "cut.png").write_bytes(data[: len(data) // 2])
    return {"content": "images/cut.png"}, ["content", "cut.png", "cannot be decoded", "truncated"]


def _file_truncated_jpeg(root: Path):
    Image.open(root / "images" / "a.png").save(root / "images" / "full.jpg", quality=95)
    data = (root / "images" / "full.jpg").read_bytes()
    (root / "images" / "cut.jpg").write_bytes(data[: len(data) * 2 // 3])
    return {"style": "images/cut.jpg"}, ["style", "cut.jpg", "cannot be decoded"]


def _file_png_garbage_after_signature(root: Path):
    (root / "images" / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    return {"content": "images/fake.png"}, ["content", "fake.png", "not an image"]


def _file_fifo(root: Path):
    os.mkfifo(root / "images" / "pipe.png")  # opening it would block forever
    return {"content": "images/pipe.png"}, ["content", "pipe.png", "not a regular file"]


def _file_header_bomb(root: Path):
    (root / "images" / "bomb.png").write_bytes(png_bytes(100_000, 100_000))
    return {"content": "images/bomb.png"}, ["content", "bomb.png", "max_pixels 50,000,000"]


def _file_over_max_pixels(root: Path):
    # 8000x8000 = 64 Mpx: under PIL's own limit (89 Mpx), over the default max_pixels (50 Mpx).
    (root / "images" / "big.png").write_bytes(png_bytes(8000, 8000))
    return {"style": "images/big.png"}, ["style", "big.png", "max_pixels 50,000,000"]


def _file_small_max_pixels(root: Path):
    return {"max_pixels": 1000}, ["content", "a.png", "1,200 pixels exceeds max_pixels 1,000"]


def _file_path_too_long(root: Path):
    return {"content": "images/" + "x" * 300 + ".png"}, ["content", "xxxx.png", "cannot be read"]


def _file_list_of_styles(root: Path):  # a blend (style_blend) is a list; each of its files is checked
    return {"style": ["images/s1.png", "images/gone.png"]}, ["style[1]", "gone.png", "file not found"]


def _file_list_of_contents(root: Path):
    return {"content": ["images/a.png", "images/b.png"]}, ["'content' must be one file path"]


def _file_not_a_path(root: Path):
    return {"content": 5}, ["'content' must be a file path, got 5"]


FILE_CASES = {name.removeprefix("_file_"): fn for name, fn in globals().items() if name.startswith("_file_")}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_bad_file_refused(case: str, root: Path, capsys) -> None:
    pair, fragments = FILE_CASES[case](root)
    manifest = write_manifest(
        root / "job.yaml", {"output_dir": "out", "pairs": [dict(GOOD), {**GOOD, "name": "second", **pair}]}
    )
    refused_everywhere(root, manifest, [str(manifest), "pairs[1]", *fragments], [], capsys)


def test_header_bomb_is_refused_before_any_pixel_is_decoded(tmp_path: Path, monkeypatch) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bytes(100_000, 100_000))  # 10 Gpx claimed, 60 bytes on disk
    decoded: list[str] = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(str(self.size)) or real_load(self))
    pil_limit = Image.MAX_IMAGE_PIXELS
    for max_pixels in (50_000_000, 10**10 - 1):  # far over the limit, and just over it
        with pytest.raises(ImageError) as info:
            load_image(bomb, max_pixels=max_pixels)
        assert str(bomb) in str(info.value) and f"max_pixels {max_pixels:,}" in str(info.value)
    assert decoded == []  # refused from the header: the decoder never ran, nothing was allocated
    assert Image.MAX_IMAGE_PIXELS == pil_limit  # PIL's global limit is restored


def test_pil_settings_are_strict_during_a_load_and_restored_after(root: Path, monkeypatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as some other library might set it
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 123)
    data = (root / "images" / "a.png").read_bytes()
    (root / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="cannot be decoded"):
        load_image(root / "cut.png", max_pixels=50_000_000)  # never silently padded with grey
    assert load_image(root / "images" / "a.png", max_pixels=50_000_000).rgb.size == (40, 30)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True and Image.MAX_IMAGE_PIXELS == 123


# --- output names and the output directory ------------------------------------------------------


@pytest.mark.parametrize(
    ("pairs", "fragments"),
    [
        ([dict(GOOD), dict(GOOD)], ["pairs[1]", "duplicate output name (also pairs[0])"]),
        ([dict(GOOD), {**GOOD, "style": "images/s2.png", "name": "a__s1"}], ["pairs[1]", "duplicate output name"]),
        ([{**GOOD, "name": "sub/evil"}], ["pairs[0]", "must not contain '/'"]),
        ([{**GOOD, "name": "../escape"}], ["pairs[0]", "'../escape' must not contain '/'"]),
        ([{**GOOD, "name": ".."}], ["pairs[0]", "must not contain"]),
        ([{**GOOD, "name": "a\\b"}], ["pairs[0]", "must not contain"]),
        ([{**GOOD, "name": ".stylebatch"}], ["pairs[0]", "must not start with '.'"]),
        ([{**GOOD, "name": ""}], ["pairs[0]", "'name' must be non-empty text"]),
        ([{**GOOD, "name": 7}], ["pairs[0]", "'name' must be non-empty text, got 7"]),
        ([{**GOOD, "name": "n" * 250}], ["pairs[0]", "250 bytes long, at most 200"]),
    ],
    ids=[
        "duplicate",
        "duplicate-explicit",
        "slash",
        "dotdot-slash",
        "dotdot",
        "backslash",
        "dot",
        "empty",
        "int",
        "too-long",
    ],
)
def test_bad_output_name_refused(pairs: list[dict], fragments: list[str], root: Path, capsys) -> None:
    manifest = write_manifest(root / "job.yaml", {"output_dir": "out", "pairs": pairs})
    refused_everywhere(root, manifest, [str(manifest), *fragments], [], capsys)


def test_output_that_would_overwrite_an_input_refused(root: Path, capsys) -> None:
    manifest = write_manifest(root / "job.yaml", {"output_dir": "images", "pairs": [{**GOOD, "name": "s1"}]})
    refused_everywhere(root, manifest, [str(manifest), "pairs[0] 's1'", "would overwrite an input image"], [], capsys)


@pytest.mark.parametrize("case", ["existing-file", "under-a-file", "missing-key", "nul-byte", "--out-under-a-file"])
def test_unusable_output_dir_refused(case: str, root: Path, capsys) -> None:
    (root / "taken").write_text("a file, not a directory")
    data, extra = {"output_dir": "out", "pairs": [GOOD]}, []
    fragments = {
        "existing-file": "exists and is not a directory",
        "under-a-file": "is a file, so the directory",
        "missing-key": "'output_dir' must be a directory path",
        "nul-byte": "unusable",
        "--out-under-a-file": "is a file, so the directory",
    }[case]
    if case == "existing-file":
        data["output_dir"] = "taken"
    elif case == "under-a-file":
        data["output_dir"] = "taken/deeper/out"
    elif case == "missing-key":
        del data["output_dir"]
    elif case == "nul-byte":
        data["output_dir"] = "o\0ut"
    else:
        extra = ["--out", str(root / "taken" / "out")]
    manifest = write_manifest(root / "job.yaml", data)
    refused_everywhere(
        root, manifest, [str(manifest), fragments] if case != "--out-under-a-file" else [fragments], extra, capsys
    )


def test_missing_weights_file_refused(root: Path, capsys) -> None:
    manifest = one_pair(root)
    for command in ("validate", "run"):
        code, out, err = cli([command, str(manifest), "--weights", str(root / "vgg.pth")], capsys)
        assert code == 2
        assert_one_line_error(out, err, ["--weights", "vgg.pth", "no such file"])
    assert not (root / "out").exists()


# --- mixed good and bad pairs -------------------------------------------------------------------


def test_skip_invalid_runs_the_good_pairs_and_records_the_bad(root: Path, capsys) -> None:
    (root / "images" / "notes.jpg").write_text("not an image")
    (root / "images" / "bomb.png").write_bytes(png_bytes(100_000, 100_000))
    pairs = [
        dict(GOOD),
        {"content": "images/b.png", "style": "images/s2.png"},
        {"content": "images/missing.png", "style": "images/s1.png"},
        {"content": "images/b.png", "style": "images/notes.jpg"},
        {"content": "images/bomb.png", "style": "images/s1.png"},
        {**GOOD, "name": "../escaped"},
        {**GOOD, "name": "bad_size", "size": 0},
        dict(GOOD),  # a duplicate of pairs[0]'s output name
    ]
    manifest = write_manifest(root / "job.yaml", {"output_dir": "out", "pairs": pairs})
    out_dir = root / "out"

    code, out, err = cli(["run", str(manifest), *RUN_TINY], capsys)
    assert code == 2 and not out_dir.exists()
    assert_one_line_error(out, err, ["pairs[2]", "missing.png"])

    code, out, err = cli(["run", str(manifest), *RUN_TINY, "--skip-invalid"], capsys)
    assert code == 1, out + err
    assert "Traceback" not in out + err
    for entry, fragment in [
        (2, "missing.png"),
        (3, "notes.jpg"),
        (4, "bomb.png"),
        (5, "../escaped"),
        (6, "'size'"),
        (7, "duplicate output name"),
    ]:
        assert_one_line_error("", err, [str(manifest), f"pairs[{entry}]", fragment])
    assert sorted(p.name for p in out_dir.glob("*.png")) == ["a__s1.png", "b__s2.png"]
    for name in ("a__s1.png", "b__s2.png"):
        with Image.open(out_dir / name) as img:
            assert img.size == (32, 24)
    recs = records(out_dir)
    assert recs["a__s1"]["status"] == "done" and recs["b__s2"]["status"] == "done"
    failed = sorted(r["error"] for r in recs.values() if r["status"] == "failed")
    assert len(failed) == 6 and all(str(manifest) in e for e in failed)
    assert not (root / "escaped.png").exists()
    assert temp_files(root) == []


# --- images decoded safely and right ------------------------------------------------------------


def test_exif_orientation_is_applied(root: Path) -> None:
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 20, 20))  # stored: red left half, blue right half
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = root / "images" / "camera.jpg"
    img.save(path, exif=exif.tobytes(), quality=95)

    loaded = load_image(path, max_pixels=10**6).rgb
    assert loaded.size == (20, 40)  # portrait, as displayed
    top, bottom = loaded.getpixel((10, 3)), loaded.getpixel((10, 36))
    assert top[0] > 200 and top[2] < 60, top  # the stored left (red) is now on top
    assert bottom[2] > 200 and bottom[0] < 60, bottom
    job = load_job(one_pair(root, content="images/camera.jpg", size=32), weights="random")
    assert not job.all_problems and job.pairs[0].out_size == (16, 32)


def test_16bit_grayscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 256, 32768, 65535]], dtype=np.uint16).repeat(4, axis=0)
    path = tmp_path / "gray16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    rgb = np.asarray(load_image(path, max_pixels=10**6).rgb)
    assert rgb.shape == (4, 4, 3)
    assert np.abs(rgb[0, :, 0].astype(int) - [0, 1, 128, 255]).max() <= 1, rgb[0, :, 0]
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()


def test_16bit_rgb_png(tmp_path: Path) -> None:
    row = b"\0" + struct.pack(">HHH", 65535, 32768, 0) + struct.pack(">HHH", 0, 0, 65535)
    path = tmp_path / "rgb48.png"
    path.write_bytes(png_bytes(2, 2, raw=row * 2, bit_depth=16, color_type=2))
    rgb = np.asarray(load_image(path, max_pixels=10**6).rgb).astype(int)
    assert rgb.shape == (2, 2, 3)
    assert np.abs(rgb[0, 0] - [255, 128, 0]).max() <= 1 and np.abs(rgb[0, 1] - [0, 0, 255]).max() <= 1


def test_cmyk_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "print.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=95)  # pure red in CMYK
    loaded = load_image(path, max_pixels=10**6)
    assert loaded.rgb.mode == "RGB" and loaded.alpha is None
    r, g, b = loaded.rgb.getpixel((8, 8))
    assert r > 230 and g < 30 and b < 30


def test_palette_png_with_transparency(tmp_path: Path) -> None:
    img = Image.new("P", (8, 8), 1)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.paste(0, (0, 0, 4, 8))
    path = tmp_path / "palette.png"
    img.save(path, transparency=0)  # palette index 0 is transparent
    loaded = load_image(path, max_pixels=10**6)
    assert loaded.rgb.mode == "RGB" and loaded.alpha is not None
    assert loaded.alpha.getpixel((1, 1)) == 0 and loaded.alpha.getpixel((6, 1)) == 255
    assert loaded.rgb.getpixel((6, 1)) == (255, 0, 0)


@pytest.mark.parametrize("mode", ["L", "LA", "1", "RGBA"])
def test_grayscale_bilevel_and_alpha_modes(tmp_path: Path, mode: str) -> None:
    path = make_image(tmp_path / f"img_{mode}.png", seed=3, mode=mode)
    loaded = load_image(path, max_pixels=10**6)
    assert loaded.rgb.mode == "RGB" and loaded.rgb.size == (40, 30)
    assert (loaded.alpha is not None) == ("A" in mode)
    if mode in ("L", "1"):
        rgb = np.asarray(loaded.rgb)
        assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == rgb[..., 2]).all()


def test_animated_gif_uses_first_frame_and_says_so(tmp_path: Path, caplog) -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    caplog.set_level(logging.INFO, logger="stylebatch.images")
    rgb = load_image(path, max_pixels=10**6).rgb
    r, g, b = rgb.getpixel((8, 8))
    assert r > 200 and g < 50 and b < 50  # the first (red) frame
    assert any(
        "animated" in rec.getMessage() and "first frame" in rec.getMessage() and str(path) in rec.getMessage()
        for rec in caplog.records
    )


def test_unicode_and_spaces_in_paths_run_end_to_end(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "fotos von Zoë" / "日本 画"
    make_image(folder / "my café.png", seed=1)
    frames = [Image.new("RGB", (40, 30), c) for c in ((200, 30, 30), (30, 30, 200))]
    frames[0].save(folder / "stïle anim.gif", save_all=True, append_images=frames[1:])
    manifest = write_manifest(
        tmp_path / "travail ünï.yaml",
        {
            "output_dir": "résultats et sorties",
            "pairs": [
                {"content": "fotos von Zoë/日本 画/my café.png", "style": "fotos von Zoë/日本 画/stïle anim.gif"}
            ],
        },
    )
    code, out, err = cli(["run", str(manifest), *RUN_TINY], capsys)
    assert code == 0, out + err
    out_dir = tmp_path / "résultats et sorties"
    assert (out_dir / "my café__stïle anim.png").is_file()
    log_text = "".join(p.read_text(encoding="utf-8") for p in (out_dir / ".stylebatch" / "logs").glob("*.log"))
    assert "animated image; using its first frame" in log_text and "stïle anim.gif" in log_text
    assert temp_files(out_dir) == []


# --- the real console script --------------------------------------------------------------------


@pytest.mark.slow
def test_console_script_one_line_error_and_debug_traceback(root: Path) -> None:
    manifest = one_pair(root, optimizer="adamw")
    result = run_subprocess(["validate", str(manifest), "--weights", "random"], cwd=root, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(manifest) in errors[0] and "pairs[0]" in errors[0] and "adamw" in errors[0]

    result = run_subprocess(["status", str(root / "nowhere"), "--debug"], cwd=root, timeout=120)
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "StylebatchError" in result.stderr
    assert "error: " + str(root / "nowhere") in result.stderr
    assert not (root / "nowhere").exists() and not (root / "out").exists()
