"""Small JPEG copies of the images a report shows, cached under `<report>/thumbs/`.

A thumbnail is named by its source's path, size and mtime (a changed file gets a new one, an
unchanged one is never redone) and carries its own pixel size in the name, so a page can give every
`<img>` its width and height without opening a file:

    thumbs/3f/3f9c0e1d2b4a5c6d7e8f_256x192.jpg

They are a cache, rebuilt from the sources at will: written by rename without fsync (a report of
100,000 pairs writes 100,000 of them), and spread over 256 subdirectories.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from stylebatch.atomic import temp_path
from stylebatch.icc import shown_as_srgb

THUMB = 256  # longest side of a thumbnail, px
OWN_THUMB = re.compile(r"([0-9a-f]{20})_(\d+)x(\d+)\.jpg")  # <key>_<w>x<h>.jpg, as _make names it


@dataclass(frozen=True)
class Thumb:
    path: Path
    width: int
    height: int


def flatten(im: Image.Image) -> Image.Image:
    """Any mode → RGB, transparency over white."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGB", im.size, (255, 255, 255))
        bg.paste(im, mask=im.getchannel("A"))
        return bg
    return im.convert("RGB")


def write_cache_file(path: Path, data: bytes) -> None:
    """Write by rename (never half a file for a reader), without fsync: a cache, redone if lost."""
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class Thumbs:
    """The thumbnail cache of one report directory; `prune` removes the ones this report did not use."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.existing: dict[str, Thumb] = {}
        self.used: set[str] = set()
        self.made = 0
        self._fresh: dict[Path, Image.Image] = {}  # made since forget(): the contact sheet needs no re-read
        self._dirs: set[Path] = set()
        self._made: dict[str, Thumb] = {}
        if self.dir.is_dir():
            for sub in os.scandir(self.dir):
                if sub.is_dir(follow_symlinks=False):
                    for f in os.scandir(sub.path):
                        self._known(Path(f.path))

    def _known(self, path: Path) -> None:
        # Only a file named as _make names it, in its key's subdirectory: anything else found here
        # is not the report's, and prune must never delete it.
        found = OWN_THUMB.fullmatch(path.name)
        if found and path.parent.name == found[1][:2]:
            self.existing[found[1]] = Thumb(path, int(found[2]), int(found[3]))

    def get(self, src: Path | None) -> Thumb | None:
        """The thumbnail of `src`, made if needed; None for a missing or unreadable file (shown as
        missing, never a failed report)."""
        if src is None:
            return None
        try:
            st = os.stat(src)
        except (OSError, ValueError):
            return None
        ident = f"{os.path.abspath(src)}|{st.st_size}|{st.st_mtime_ns}"
        key = hashlib.sha1(ident.encode("utf-8", "surrogateescape")).hexdigest()[:20]
        thumb = self.existing.get(key)
        if thumb is None:
            thumb = self._make(src, key)
            if thumb is None:
                return None
            self.existing[key] = thumb
        self.used.add(key)
        return thumb

    def _make(self, src: Path, key: str) -> Thumb | None:
        try:
            with Image.open(src) as im:
                im.draft("RGB", (THUMB, THUMB))  # JPEG: decode at reduced size
                if im.format != "PNG" or "exif" in im.info:  # outputs are PNG without EXIF: skip the parse
                    im = ImageOps.exif_transpose(im)
                im.thumbnail((THUMB, THUMB), Image.Resampling.LANCZOS)
                rgb = flatten(shown_as_srgb(im))  # a wide-gamut image in its colours: thumbnails carry no profile
        except Exception:  # noqa: BLE001 (a broken or half-written input shows as missing)
            return None
        buf = io.BytesIO()
        rgb.save(buf, format="JPEG", quality=85)
        path = self.dir / key[:2] / f"{key}_{rgb.width}x{rgb.height}.jpg"
        if path.parent not in self._dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(path.parent)
        write_cache_file(path, buf.getvalue())
        self.made += 1
        self._fresh[path] = rgb
        self._made[key] = Thumb(path, rgb.width, rgb.height)
        return self._made[key]

    def load(self, thumb: Thumb, size: tuple[int, int]) -> Image.Image:
        """The thumbnail's pixels (RGB), at least `size` where the JPEG decoder can reduce it for free."""
        fresh = self._fresh.get(thumb.path)
        if fresh is not None:
            return fresh
        with Image.open(thumb.path) as im:
            im.draft("RGB", size)  # decode at 1/2, 1/4 ... of the size when that still covers `size`
            return im.convert("RGB")

    def take(self) -> tuple[set[str], dict[str, Thumb]]:
        """The keys used and the thumbnails made since the last call (a forked page writer hands
        them back to the report, which prunes the rest)."""
        used, made = self.used, self._made
        self.used, self._made = set(), {}
        return used, made

    def forget(self) -> None:
        """Drop the pixels kept since the last call (one page's worth at a time)."""
        self._fresh.clear()

    def prune(self) -> int:
        """Remove the thumbnails this report did not use; returns how many."""
        removed = 0
        for key, thumb in list(self.existing.items()):
            if key not in self.used:
                thumb.path.unlink(missing_ok=True)
                del self.existing[key]
                removed += 1
        return removed
