"""The `weights` setting, checked and identified without loading a network: `imagenet`, `random` or
a file. A file is looked at (size, archive directory, first bytes) before torch ever unpickles it,
and its sha256 is the network's part of every pair's id.

May import: nothing of stylebatch (no torch either: validate and status stay quick to start).
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from pathlib import Path

RANDOM_WEIGHTS_SEED = 0  # `random` weights are torch.manual_seed(this) and vgg19(weights=None)


def weights_identity(weights: str) -> str:
    """What identifies the network in a pair's id: `imagenet`, `random:<seed>` or the file's sha256."""
    if weights in ("imagenet", "random"):
        return f"random:{RANDOM_WEIGHTS_SEED}" if weights == "random" else "imagenet"
    digest = hashlib.sha256()
    with open(weights, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


# The most a weights file may hold: a full torchvision VGG19 (classifier included, 143,667,240
# parameters) in float64, plus room for the archive's own records. Checked before anything is
# unpacked: a 4 MB zip whose members inflate to gigabytes is refused from its directory alone.
VGG19_PARAMETERS = 143_667_240
MAX_WEIGHTS_BYTES = VGG19_PARAMETERS * 8 + (64 << 20)


def check_weights_path(weights: str) -> str | None:
    """A problem with `--weights` that can be seen without loading, or None."""
    if weights in ("imagenet", "random"):
        return None
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", weights):
        return f"--weights {weights}: URLs are not supported; download the file first"
    path = Path(weights)
    if not path.exists():
        return f"--weights {weights}: no such file (use imagenet, random or a path to a VGG19 state dict)"
    if not path.is_file():
        return f"--weights {weights}: not a file"
    return _weights_size_problem(path, weights) or _not_tensor_file(path, weights)


# The first bytes of what torch.save writes: a zip archive (the default since torch 1.6) or a
# legacy pickle (protocol 2+ starts with 0x80). Anything else, torch.load refuses with a hint about
# weights_only=False that is wrong here (a PNG is not a state dict whatever the flag).
_TENSOR_MAGIC = (b"PK\x03\x04", b"\x80")
_KNOWN_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"%PDF": "a PDF",
    b"\x1f\x8b": "a gzip file",
    b"RIFF": "a RIFF (WebP/WAV) file",
}


def _not_tensor_file(path: Path, weights: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as e:
        return f"--weights {weights}: cannot be read ({e.strerror or e})"
    if head.startswith(_TENSOR_MAGIC):
        return None
    what = next(
        (name for magic, name in _KNOWN_MAGIC.items() if head.startswith(magic)),
        "empty" if not head else "not a file torch.save writes",
    )
    return (
        f"--weights {weights}: cannot be loaded: not a PyTorch weights file ({what}); give a VGG19 "
        "state dict saved with torch.save, or imagenet, or random"
    )


def _weights_size_problem(path: Path, weights: str) -> str | None:
    size = path.stat().st_size
    if size == 0:
        return f"--weights {weights}: empty file (0 bytes), cannot be loaded as VGG19 weights"
    try:
        is_zip = zipfile.is_zipfile(path)
    except OSError as e:
        return f"--weights {weights}: cannot be read ({e.strerror or e})"
    if is_zip:  # torch.save's format: the central directory says what each member unpacks to
        try:
            with zipfile.ZipFile(path) as archive:
                unpacked = sum(info.file_size for info in archive.infolist())
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            return f"--weights {weights}: cannot be loaded as a tensor file (a broken archive: {e})"
        if unpacked > MAX_WEIGHTS_BYTES:
            return (
                f"--weights {weights}: its archive unpacks to {unpacked:,} bytes, far more than VGG19 weights "
                f"need (at most {MAX_WEIGHTS_BYTES:,}); refused without unpacking it"
            )
    elif size > MAX_WEIGHTS_BYTES:
        return f"--weights {weights}: {size:,} bytes, far more than VGG19 weights need (at most {MAX_WEIGHTS_BYTES:,})"
    return None
