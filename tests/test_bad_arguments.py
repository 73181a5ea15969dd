"""Every bad argument and manifest value is one clear `error:` line, exit 2.

Each was an exit 70 with a traceback (or worse) before: `--devices 0/-1/abc`, `--num-nodes 0`,
`--sync-timeout -5`, `--accelerator gpu` without a GPU, a lone surrogate or a newline in a name or
a path, `lr: 1e308`, `inspect` on a decompression bomb or a file that is no image, a pair name
taken for stylebatch's own records, a 50 MB value echoed whole, a weights zip that unpacks to
gigabytes, a 0-byte weights file, the L-BFGS hint given to an L-BFGS pair. Every case: exit 2, one
line naming the culprit, no traceback, the directory tree byte-identical before and after.
"""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path

import pytest
import torch

from stylebatch.cli.main import main
from stylebatch.fit.module import StyleTransferModule
from tests.jobkit import records, tiny_job, write_manifest
from tests.test_bad_inputs import png_bytes
from tests.test_user_files import snapshot

ARGS = ["--weights", "random"]
GOOD = {"content": "images/a.png", "style": "images/s1.png", "optimizer": "adam", "lr": 0.05}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    tiny_job(tmp_path, pairs=[dict(GOOD)], defaults={"steps": 2})
    return tmp_path


def refused(argv: list[str], root: Path, capsys, *fragments: str, code: int = 2) -> str:
    """`argv` exits `code` with one error line holding every fragment, no traceback, nothing written."""
    before = snapshot(root, skip_outputs=False)
    got = main(argv)
    captured = capsys.readouterr()
    assert got == code, (argv[:3], captured.out, captured.err)
    assert "Traceback" not in captured.out + captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, captured.err
    other = [line for line in captured.err.splitlines() if line.strip() and not line.startswith("error: ")]
    assert all(line.split()[1] == "problem(s);" for line in other), captured.err
    assert all(f in errors[0] for f in fragments), (fragments, errors[0])
    assert snapshot(root, skip_outputs=False) == before
    return errors[0]


def manifest_with(root: Path, text: str | None = None, **pair) -> Path:
    data = {"output_dir": "out", "defaults": {"steps": 2, "size": 32}, "pairs": [{**GOOD, **pair}]}
    return write_manifest(root / "bad.yaml", data, text)


# --- run's flags --------------------------------------------------------------------------------

FLAGS = [
    (["--devices", "0"], ["--devices '0'", "whole number"]),
    (["--devices", "-1"], ["--devices '-1'", "whole number"]),
    (["--devices", "abc"], ["--devices 'abc'", "or auto"]),
    (["--devices", "1e9"], ["--devices '1e9'"]),
    (["--devices", "99", "--accelerator", "cpu"], ["--devices 99", "CPU core"]),
    (["--num-nodes", "0"], ["--num-nodes '0'", "whole number"]),
    (["--num-nodes", "x"], ["--num-nodes 'x'"]),
    (["--sync-timeout", "-5"], ["--sync-timeout '-5'", "above 0"]),
    (["--sync-timeout", "nan"], ["--sync-timeout 'nan'"]),
    (["--sync-timeout", "1e308"], ["--sync-timeout '1e308'", "at most"]),
    (["--accelerator", "tpu"], ["--accelerator", "invalid choice: 'tpu'"]),
    (["--no-such-flag"], ["unrecognized arguments: --no-such-flag"]),
]


@pytest.mark.parametrize(("flags", "fragments"), FLAGS, ids=[" ".join(f) for f, _ in FLAGS])
def test_bad_run_flag_is_one_line(flags: list[str], fragments: list[str], root: Path, capsys) -> None:
    refused(["run", str(root / "job.yaml"), *ARGS, *flags], root, capsys, *fragments)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_gpu_asked_for_without_one_is_one_line(root: Path, capsys) -> None:
    refused(
        ["run", str(root / "job.yaml"), *ARGS, "--accelerator", "gpu", "--devices", "2"],
        root,
        capsys,
        "--accelerator gpu: no CUDA device is available here",
    )


# --- names and paths: surrogates, control characters, huge values --------------------------------


def _yaml_escaped(root: Path, key: str, escaped: str) -> Path:
    """A manifest whose `key` is a double-quoted YAML string with an escape (`\\ud83c`, `\\n`)."""
    place = {
        "name": f'  - {{content: images/a.png, style: images/s1.png, name: "{escaped}"}}\n',
        "content": f'  - {{content: "{escaped}", style: images/s1.png}}\n',
        "style": f'  - {{content: images/a.png, style: ["images/s1.png", "{escaped}"]}}\n',
    }
    top = f'output_dir: "{escaped}"\n' if key == "output_dir" else "output_dir: out\n"
    text = top + "pairs:\n" + place.get(key, "  - {content: images/a.png, style: images/s1.png}\n")
    path = root / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("key", ["name", "content", "style", "output_dir"])
@pytest.mark.parametrize(
    ("escaped", "fragment"),
    [("a\\ud83cb", "lone surrogate"), ("a\\nb", "control character"), ("a\\x1b[31mb", "control character")],
    ids=["surrogate", "newline", "escape"],
)
def test_surrogates_and_control_characters_in_names_and_paths(
    key: str, escaped: str, fragment: str, root: Path, capsys
) -> None:
    manifest = _yaml_escaped(root, key, escaped)
    for command in ("validate", "run"):
        refused(
            [command, str(manifest), *ARGS], root, capsys, fragment, "bad.yaml", "\\u" if "ud83c" in escaped else ""
        )


@pytest.mark.parametrize("flag", ["--out", "--weights", "--config"])
def test_surrogate_or_newline_in_a_path_flag(flag: str, root: Path, capsys) -> None:
    for value, fragment in (("o\ud83cut", "lone surrogate"), ("o\nut", "control character")):
        refused(["run", str(root / "job.yaml"), *ARGS, flag, value], root, capsys, flag, fragment)


def test_a_50_mb_path_is_echoed_shortened(root: Path, capsys) -> None:
    huge = "x" * 50_000_000
    line = refused(["run", str(root / "job.yaml"), *ARGS, "--out", huge], root, capsys, "--out", "characters cut")
    assert len(line) < 1000
    # 200 kB, 50x a path's limit: PyYAML's pure-Python writer and parser took 26 s over 5 MB, and the
    # check's own speed on a huge value is the 50 MB flag's, above.
    manifest = manifest_with(root, content=huge[:200_000])
    line = refused(["validate", str(manifest), *ARGS], root, capsys, "pairs[0]", "'content'", "characters cut")
    assert len(line) < 1000


def test_a_name_with_a_newline_never_reaches_report(root: Path, capsys) -> None:
    """It was accepted, then `report` crashed on it."""
    manifest = manifest_with(root, name="two\nlines")
    refused(["run", str(manifest), *ARGS], root, capsys, "'name'", "U+000A")


def test_a_reserved_internal_name_is_refused(root: Path, capsys) -> None:
    """`_invalid_keep` had its record deleted on every run (the invalid-entry bookkeeping's prefix)."""
    manifest = manifest_with(root, name="_invalid_keep")
    refused(["run", str(manifest), *ARGS], root, capsys, "'_invalid_keep'", "reserved")


# --- numbers torch cannot hold ------------------------------------------------------------------

NUMBERS = [
    ({"lr": 1e308}, "'lr' must be <= 1e+30"),
    ({"lr": 1e31}, "'lr' must be <= 1e+30"),
    ({"style_weight": 1e39}, "'style_weight' must be at most"),
    ({"style_layers": {"conv1_1": 1e300}}, "'style_layers' must be at most"),
    ({"steps": 10**30}, "'steps' must be at most 9,223,372,036,854,775,807"),
    ({"size": 10**30}, "'size' must be at most"),
    ({"lr": 10**400}, "'lr' must be number or empty"),
]


@pytest.mark.parametrize(("values", "fragment"), NUMBERS, ids=[str(v)[:30] for v, _ in NUMBERS])
def test_numbers_beyond_float32_or_int64_are_refused(values: dict, fragment: str, root: Path, capsys) -> None:
    manifest = manifest_with(root, **values)
    for command in ("validate", "run"):
        refused([command, str(manifest), *ARGS], root, capsys, "pairs[0]", fragment)


def test_an_integer_too_long_to_read_is_one_line(root: Path, capsys) -> None:
    text = "output_dir: out\npairs:\n  - {content: images/a.png, style: images/s1.png, steps: " + "9" * 5000 + "}\n"
    refused(["validate", str(manifest_with(root, text=text)), *ARGS], root, capsys, "bad.yaml", "not valid YAML")


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
@pytest.mark.slow
def test_the_largest_accepted_lr_runs_without_an_internal_error(optimizer: str, root: Path, capsys) -> None:
    """At the edge of what is accepted the pair runs: done, or failed with its own reason (a
    non-finite loss), never torch's float32 overflow as an internal error."""
    manifest = manifest_with(root, lr=1e30, optimizer=optimizer)
    assert main(["run", str(manifest), *ARGS]) in (0, 1)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err and "internal error" not in captured.out
    (rec,) = records(root / "out").values()
    assert rec["status"] == "done" or (rec["status"] == "failed" and "non-finite" in rec["error"]), rec


# --- inspect: bombs and non-images --------------------------------------------------------------


def _stylebatch_png(path: Path, meta: str) -> Path:
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("stylebatch", meta)
    Image.new("RGB", (4, 4)).save(path, pnginfo=info)
    return path


INSPECT = {
    "bomb": (lambda p: p.write_bytes(png_bytes(100_000, 100_000)), ["bomb", "exceeds max_pixels"]),
    "bomb-under-pil-limit": (lambda p: p.write_bytes(png_bytes(9000, 9000)), ["exceeds max_pixels"]),
    "text": (lambda p: p.write_text("no pixels here\n"), ["not an image"]),
    "empty": (lambda p: p.write_bytes(b""), ["empty file"]),
    "directory": (lambda p: p.mkdir(), ["is a directory"]),
    "fifo": (lambda p: os.mkfifo(p), ["not a regular file"]),
    "truncated": (lambda p: p.write_bytes(png_bytes(40, 40, raw=b"\0" * 10)[:-20]), ["cannot be"]),
    "losses-not-numbers": (
        lambda p: _stylebatch_png(p, '{"config": {}, "losses": {"total": "x"}}'),
        ["malformed", "'losses'"],
    ),
    "surrogate-in-settings": (
        lambda p: _stylebatch_png(p, '{"config": {"init": "\\ud83c"}}'),
        ["malformed", "lone surrogate"],
    ),
}


@pytest.mark.parametrize("case", sorted(INSPECT))
def test_inspect_refuses_bombs_and_non_images_with_one_line(case: str, tmp_path: Path, capsys) -> None:
    make, fragments = INSPECT[case]
    path = tmp_path / f"{case}.png"
    make(path)
    for extra in ([], ["--json"]):
        refused(["inspect", str(path), *extra], tmp_path, capsys, str(path), *fragments)


# --- weights: size-checked before unpacking -----------------------------------------------------


def _zip_claiming(path: Path, claimed: int) -> Path:
    """A small torch-style zip whose central directory says its member unpacks to `claimed` bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", b"\0" * 1024)
    data = bytearray(path.read_bytes())
    central = data.rfind(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, claimed)  # uncompressed size
    path.write_bytes(bytes(data))
    return path


def test_a_weights_zip_claiming_gigabytes_is_refused_without_reading_it(root: Path, capsys, monkeypatch) -> None:
    weights = _zip_claiming(root / "bomb.pth", 0xFFFF0000)  # 4 GiB, from a 1 KB file
    loads: list = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a))
    for command in ("validate", "run"):
        refused(
            [command, str(root / "job.yaml"), "--weights", str(weights)],
            root,
            capsys,
            "--weights",
            "bomb.pth",
            "4,294,901,760 bytes",
            "refused without unpacking",
        )
    assert loads == []


def test_a_zero_byte_weights_file_fails_validate(root: Path, capsys) -> None:
    (root / "empty.pth").write_bytes(b"")
    refused(
        ["validate", str(root / "job.yaml"), "--weights", str(root / "empty.pth")],
        root,
        capsys,
        "empty.pth",
        "empty file (0 bytes)",
    )


# --- the L-BFGS hint ----------------------------------------------------------------------------


@pytest.mark.slow
def test_the_try_lbfgs_hint_is_never_given_to_an_lbfgs_pair(tmp_path: Path, capsys, monkeypatch) -> None:
    original = StyleTransferModule.losses

    def nan_after_two(self, image):
        # A divergence: the iterate's loss turns NaN while the content image's own stays finite
        # (the engine asks for that one before it blames lr rather than the weights).
        out = original(self, image)
        return {k: v * float("nan") for k, v in out.items()} if self.evaluations >= 2 and image is self.target else out

    monkeypatch.setattr(StyleTransferModule, "losses", nan_after_two)
    pairs = [dict(GOOD), {"content": "images/b.png", "style": "images/s2.png", "optimizer": "lbfgs"}]
    manifest = tiny_job(tmp_path, pairs=pairs, defaults={"steps": 6, "log_every": 1, "batch_size": 1})
    assert main(["run", str(manifest), *ARGS]) == 1
    capsys.readouterr()
    recs = records(tmp_path / "out")
    assert "non-finite" in recs["a__s1"]["error"] and "optimizer: lbfgs" in recs["a__s1"]["error"]
    assert "non-finite" in recs["b__s2"]["error"] and "lbfgs" not in recs["b__s2"]["error"]
    assert "try a lower lr" in recs["b__s2"]["error"]
