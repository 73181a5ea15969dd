"""Images in and out: safe decoding (pixel limit from the header, EXIF orientation, odd modes),
resizing, tensor conversion and atomic saving (png, jpg, webp; 8 bits) with the settings in a PNG text
chunk or the EXIF UserComment."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import stat
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageFile, ImageOps, PngImagePlugin, UnidentifiedImageError

from stylebatch.atomic import atomic_write
from stylebatch.errors import ImageError

log = logging.getLogger(__name__)


@dataclass
class LoadedImage:
    rgb: Image.Image  # mode RGB
    alpha: Image.Image | None  # mode L, when the file has transparency


@contextlib.contextmanager
def _strict_pil(max_pixels: int) -> Iterator[None]:
    """For one decode: PIL's own bomb check at `max_pixels`, raised as an error (never a warning),
    and truncated files refused (LOAD_TRUNCATED_IMAGES off, whatever another library set)."""
    saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = max_pixels, False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _too_many_pixels(path: Path, e: Exception, max_pixels: int) -> str:
    """PIL's bomb check (at max_pixels, see _strict_pil), said as our own header check says it."""
    found = re.search(r"\((\d+) pixels\)", str(e))
    pixels = f"{int(found.group(1)):,} pixels" if found else _first_line(e)
    return f"{path}: {pixels} exceeds max_pixels {max_pixels:,} (refused from the header, before decoding)"


def _open_checked(path: Path, max_pixels: int) -> Image.Image:
    """Open (header only) and refuse before any pixel is decoded if the image is too large.
    Call inside `_strict_pil`."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except (OSError, ValueError) as e:  # a name too long, a NUL byte, a loop of links...
        raise ImageError(f"{path}: cannot be read ({_first_line(e)})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(f"{path}: is a directory, expected an image file")
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block the open forever, a device never ends
        raise ImageError(f"{path}: not a regular file, expected an image file")
    if st.st_size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")
    try:
        img = Image.open(path)
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image PIL can read") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise ImageError(_too_many_pixels(path, e, max_pixels)) from None
    except Exception as e:  # noqa: BLE001 (a hostile header can raise many types)
        raise ImageError(f"{path}: cannot be read ({_first_line(e)})") from None
    w, h = img.size
    if w * h > max_pixels:
        img.close()
        raise ImageError(f"{path}: {w}x{h} = {w * h:,} pixels exceeds max_pixels {max_pixels:,}")
    if w < 1 or h < 1:
        img.close()
        raise ImageError(f"{path}: image has no pixels ({w}x{h})")
    return img


def _wide_grey_to_l(img: Image.Image, path: Path) -> Image.Image:
    """32-bit integer or float greyscale → 8 bits, by the range its values use: a float image in
    [0, 1] (the usual convention) would otherwise decode as black, and 8- or 16-bit data stored in
    32-bit integers as black or white. The range chosen is logged."""
    low, high = img.getextrema()
    if img.mode == "F" and high <= 1.0:
        scale, what = 255.0, "floats in [0, 1]"
    elif high <= 255:
        scale, what = 1.0, "values in [0, 255]"
    elif high <= 65535:
        scale, what = 255.0 / 65535, "values in [0, 65535]"
    else:
        scale, what = 255.0 / high, f"values up to {high:g}, scaled to that maximum"
    if low < 0:
        log.warning("%s: negative values (down to %g) are shown as black", path, low)
    log.info("%s: %d-bit %s greyscale read as %s", path, 32, "float" if img.mode == "F" else "integer", what)
    return img.convert("F").point(lambda v: v * scale).convert("L")  # "L" clamps to [0, 255]


def _to_rgb_alpha(img: Image.Image, path: Path) -> LoadedImage:
    fmt = img.format  # before exif_transpose, whose copy has none
    try:
        img = ImageOps.exif_transpose(img)  # honour the camera's orientation tag
    except Exception as e:  # noqa: BLE001 (a malformed EXIF block: keep the pixels as stored)
        log.warning("%s: unreadable EXIF orientation (%s); using the image as stored", path, _first_line(e))
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N") or (mode == "I" and fmt == "PNG"):  # PNG: 16 bits at most
        # 16-bit greyscale: convert("L") would clip everything above 255 to white; scale instead.
        img = img.convert("I").point(lambda v: v * (1 / 256)).convert("L")
        mode = "L"
    elif mode in ("I", "F"):
        img, mode = _wide_grey_to_l(img, path), "L"
    alpha = None
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        alpha = img.getchannel("A")
    rgb = img.convert("RGB")  # also CMYK, YCbCr, L, 1, P, 48-bit RGB (PIL decodes those to 8 bits)
    return LoadedImage(rgb, alpha)


def load_image(path: str | Path, max_pixels: int) -> LoadedImage:
    """Fully decode an image file into RGB (+ alpha); every failure is one ImageError line."""
    path = Path(path)
    with _strict_pil(max_pixels):
        img = _open_checked(path, max_pixels)
        try:
            with img:
                if getattr(img, "is_animated", False):  # asks for a second frame only, never counts them
                    log.info("%s: animated image; using its first frame", path)
                    img.seek(0)
                img.load()  # a truncated file only fails here, on full decode
                return _to_rgb_alpha(img, path)
        except ImageError:
            raise
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:  # a later frame's size
            raise ImageError(_too_many_pixels(path, e, max_pixels)) from None
        except MemoryError:
            raise ImageError(
                f"{path}: not enough memory to decode it; lower max_pixels or use a smaller file"
            ) from None
        except Exception as e:  # noqa: BLE001 (a hostile file can make a decoder raise many types)
            raise ImageError(f"{path}: cannot be decoded ({_first_line(e)})") from None


@contextlib.contextmanager
def opened(path: str | Path, max_pixels: int) -> Iterator[Image.Image]:
    """An image opened for its header and metadata (what `inspect` reads), with load_image's
    refusals (pixel limit from the header, FIFOs, empty files, non-images); whatever reading it
    raises inside the block becomes one ImageError line."""
    path = Path(path)
    with _strict_pil(max_pixels):
        img = _open_checked(path, max_pixels)
        with img:
            try:
                yield img
            except ImageError:
                raise
            except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
                raise ImageError(_too_many_pixels(path, e, max_pixels)) from None
            except Exception as e:  # noqa: BLE001 (a hostile file can make a reader raise many types)
                raise ImageError(f"{path}: cannot be read ({_first_line(e)})") from None


def check_image(path: str | Path, max_pixels: int) -> tuple[int, int]:
    """Validate a file as the run would load it; returns its (width, height) after EXIF rotation."""
    loaded = load_image(path, max_pixels)
    return loaded.rgb.size


def fit_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(w, h) with the longer side = size and the aspect ratio kept (each side at least 1)."""
    scale = size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize(img: Image.Image, wh: tuple[int, int]) -> Image.Image:
    return img if img.size == wh else img.resize(wh, Image.Resampling.LANCZOS)


# The formats outputs are written in (Config.format's choices; the claims sweep their temp files).
OUTPUT_FORMATS = ("png", "jpg", "webp")

EXIF_IFD, EXIF_USER_COMMENT = 0x8769, 0x9286
USER_COMMENT_ASCII = b"ASCII\0\0\0"  # the EXIF UserComment character-code prefix


def save_image(
    img: Image.Image, path: str | Path, text: dict[str, str] | None = None, format: str = "png", quality: int = 95
) -> bytes:
    """Encode (8 bits per channel) and write atomically; returns the bytes written.

    png: lossless, `text` in tEXt chunks. jpg/webp: `quality` 1-100 (webp at 100 is lossless); the
    `text` values (ASCII JSON) go into the EXIF UserComment, one `key=value` per line. JPEG has no
    alpha: a transparent content's alpha is dropped there."""
    buf = io.BytesIO()
    if format == "png":
        info = PngImagePlugin.PngInfo()
        for key, value in (text or {}).items():
            info.add_text(key, value)
        img.save(buf, format="PNG", pnginfo=info)
    else:
        exif = Image.Exif()
        if text:
            comment = "\n".join(f"{k}={v}" for k, v in text.items())
            exif.get_ifd(EXIF_IFD)[EXIF_USER_COMMENT] = USER_COMMENT_ASCII + comment.encode("ascii", "replace")
        if format == "jpg":
            img.convert("RGB").save(buf, format="JPEG", quality=quality, exif=exif.tobytes())
        elif format == "webp":
            img.save(buf, format="WEBP", quality=quality, lossless=quality == 100, exif=exif.tobytes())
        else:
            raise ValueError(f"unknown image format {format!r}")
    data = buf.getvalue()
    atomic_write(path, data)
    return data
