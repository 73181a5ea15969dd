"""A checkpoint is resumed only when it is its pair's own, as saved: it carries the pair's id, its
image's shape and a checksum of its tensors. Any other (bytes overwritten inside the tensor data,
another pair's copied in, another size, truncated) is removed with one line, the pair restarts
from 0 and ends as an uninterrupted run would; no resume point is shown that was not used."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from stylebatch.cli.main import main
from stylebatch.fit.checkpoint import stamp_checkpoint
from tests.jobkit import records, run_with_sigterm_at, tiny_job

ARGS = ["--weights", "random"]
PAIRS = [
    {"content": "images/a.png", "style": "images/s1.png", "optimizer": "adam", "lr": 0.05},
    {"content": "images/b.png", "style": "images/s2.png", "optimizer": "adam", "lr": 0.05},
]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reference")
    assert main(["run", str(tiny_job(root, pairs=[dict(p) for p in PAIRS])), *ARGS]) == 0
    return root / "out"


def _overwrite_tensor_bytes(path: Path) -> None:
    """400 bytes inside the largest tensor's data: the zip's directory stays valid, and torch.load
    checks no CRC, so the file still loads."""
    with zipfile.ZipFile(path) as zf:
        info = max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "r+b") as fh:
        fh.seek(info.header_offset + 26)
        name_len, extra_len = int.from_bytes(fh.read(2), "little"), int.from_bytes(fh.read(2), "little")
        fh.seek(info.header_offset + 30 + name_len + extra_len + info.file_size // 2 - 200)
        fh.write(bytes(range(200)) * 2)
    torch.load(path, weights_only=True)  # still loads


def _other_size(path: Path) -> None:
    """The pair's own id and a valid checksum, but an image of another size."""
    ckpt = torch.load(path, weights_only=True)
    big = torch.rand(1, 3, 48, 64)
    ckpt["state_dict"]["target"] = big
    for opt in ckpt["optimizer_states"]:
        for st in opt["state"].values():
            for key, value in list(st.items()):
                if isinstance(value, torch.Tensor) and value.dim() == 4:
                    st[key] = torch.zeros_like(big)
    torch.save(stamp_checkpoint(ckpt, ckpt["stylebatch"]["pair"]), path)


def pixels(path: Path) -> bytes:
    with Image.open(path) as im:
        return im.tobytes()


TAMPER = {
    "corrupt bytes": (_overwrite_tensor_bytes, "is corrupt"),
    "another pair's": (None, "belongs to another pair"),
    "another size": (_other_size, "is of another size"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "is unreadable"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", [*TAMPER, "untouched"])
def test_a_checkpoint_not_the_pairs_own_is_discarded_and_the_pair_restarts(
    case: str, tmp_path: Path, reference: Path, capsys
) -> None:
    manifest = tiny_job(tmp_path, pairs=[dict(p) for p in PAIRS])
    out = tmp_path / "out"
    code, fired = run_with_sigterm_at(manifest, 12, *ARGS)
    assert fired and code == 3
    ckpt = out / ".stylebatch" / "pairs" / "a__s1" / "last.ckpt"
    resumed_at = torch.load(ckpt, weights_only=True)["stylebatch"]["evaluations"]
    assert 0 < resumed_at < 30
    if case == "another pair's":
        shutil.copy(reference / ".stylebatch" / "pairs" / "b__s2" / "last.ckpt", ckpt)
    elif case != "untouched":
        TAMPER[case][0](ckpt)
    capsys.readouterr()

    assert main(["run", str(manifest), *ARGS]) == 0
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "internal error" not in text and "Traceback" not in text
    notes = [line for line in text.splitlines() if "restarts from 0" in line]
    if case == "untouched":
        assert notes == [] and f"a__s1 (resuming at {resumed_at})" in text
    else:
        assert len(notes) == 1 and "a__s1: checkpoint last.ckpt" in notes[0] and TAMPER[case][1] in notes[0], text
        assert "resuming at" not in text  # never a resume point that was not used
    assert records(out)["a__s1"]["status"] == "done"
    # From 0 or from its own checkpoint: the same pixels as the uninterrupted run.
    for name in ("a__s1.png", "b__s2.png"):
        assert pixels(out / name) == pixels(reference / name), name
