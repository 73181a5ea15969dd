"""Images in and out: safe decoding (pixel limit from the header, EXIF orientation, odd modes, ICC
profiles into sRGB: icc.py), resizing and atomic saving (png, jpg, webp, tiff at 8
bits; png16 and tiff16 at 16 bits from the float result) with the content's ICC profile and the
settings in a PNG text chunk, the EXIF UserComment or the TIFF ImageDescription."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import stat
import struct
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, PngImagePlugin, UnidentifiedImageError

from stylebatch import icc as colour
from stylebatch.atomic import atomic_write
from stylebatch.errors import ImageError

log = logging.getLogger(__name__)


@dataclass
class LoadedImage:
    rgb: Image.Image  # mode RGB, sRGB (converted from the file's ICC profile when it has another)
    alpha: Image.Image | None  # mode L, when the file has transparency
    icc: bytes | None = None  # the file's RGB ICC profile, which an output made from it carries


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
    profile = colour.usable(img.info.get("icc_profile"))
    space = profile[16:20] if profile else b""
    if profile and (space, mode) in ((b"RGB ", "RGB"), (b"RGB ", "RGBA"), (b"CMYK", "CMYK")):
        # The network sees sRGB: a wide-gamut photo (Adobe RGB, Display P3) or a press CMYK file is
        # converted through its profile, not reinterpreted (which would shift every colour).
        rgb = colour.to_srgb(img.convert("RGB") if mode == "RGBA" else img, profile)
    else:
        rgb = img.convert("RGB")  # also CMYK, YCbCr, L, 1, P, 48-bit RGB (PIL decodes those to 8 bits)
    return LoadedImage(rgb, alpha, profile if space == b"RGB " else None)


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
OUTPUT_FORMATS = ("png", "jpg", "webp", "tiff", "png16", "tiff16")


def output_extension(fmt: str) -> str:
    """An output file's extension for a `format`: png16 makes a `.png`, tiff and tiff16 a `.tif`."""
    return {"png16": "png", "tiff": "tif", "tiff16": "tif"}.get(fmt, fmt)


EXIF_IFD, EXIF_USER_COMMENT = 0x8769, 0x9286
USER_COMMENT_ASCII = b"ASCII\0\0\0"  # the EXIF UserComment character-code prefix


def save_image(
    img: Image.Image,
    path: str | Path,
    text: dict[str, str] | None = None,
    format: str = "png",
    quality: int = 95,
    icc: bytes | None = None,
) -> bytes:
    """Encode (8 bits per channel) and write atomically; returns the bytes written.

    png: lossless, `text` in tEXt chunks. jpg/webp: `quality` 1-100 (webp at 100 is lossless); the
    `text` values (ASCII JSON) go into the EXIF UserComment, one `key=value` per line. tiff:
    Deflate, `text` in the ImageDescription the same way. JPEG has no alpha: a transparent
    content's alpha is dropped there. `icc`: the ICC profile the pixels are in, embedded as is."""
    buf = io.BytesIO()
    profile = {"icc_profile": icc} if icc else {}
    if format == "png":
        info = PngImagePlugin.PngInfo()
        for key, value in (text or {}).items():
            info.add_text(key, value)
        img.save(buf, format="PNG", pnginfo=info, **profile)
    elif format == "tiff":
        description = "\n".join(f"{k}={v}" for k, v in (text or {}).items())
        tags = {270: description.encode("ascii", "replace").decode("ascii")} if text else {}
        img.save(buf, format="TIFF", compression="tiff_adobe_deflate", tiffinfo=tags, **profile)
    else:
        exif = Image.Exif()
        if text:
            comment = "\n".join(f"{k}={v}" for k, v in text.items())
            exif.get_ifd(EXIF_IFD)[EXIF_USER_COMMENT] = USER_COMMENT_ASCII + comment.encode("ascii", "replace")
        if format == "jpg":
            img.convert("RGB").save(buf, format="JPEG", quality=quality, exif=exif.tobytes(), **profile)
        elif format == "webp":
            img.save(buf, format="WEBP", quality=quality, lossless=quality == 100, exif=exif.tobytes(), **profile)
        else:
            raise ValueError(f"unknown image format {format!r}")
    data = buf.getvalue()
    atomic_write(path, data)
    return data


def save_output(
    rgb: np.ndarray,
    alpha: Image.Image | None,
    path: str | Path,
    *,
    text: dict[str, str] | None = None,
    format: str = "png",
    quality: int = 95,
    icc: bytes | None = None,
) -> bytes:
    """A result's float sRGB pixels (H, W, 3) in [0, 1] encoded and written atomically; returns the bytes.

    With a content profile `icc` other than sRGB, the pixels are converted into it (in floating
    point for RGB matrix/TRC profiles, icc.py) and the file carries it; with an sRGB one, the file
    carries that. png16/tiff16 are written from the floats at 16 bits per channel (alpha 8 bits
    scaled by 257); the 8-bit formats round once, as `to_pil` does."""
    icc = colour.usable(icc)
    converted = None if colour.is_srgb(icc) else colour.from_srgb(rgb, icc)
    if format in ("png16", "tiff16"):
        if icc and not colour.is_srgb(icc) and converted is None:
            log.warning("%s: a 16-bit conversion into this ICC profile is not supported; written as sRGB", path)
            icc = colour.srgb_bytes()
        pixels = converted if converted is not None else rgb
        data16 = np.round(np.clip(pixels, 0, 1) * np.float32(65535)).astype(np.uint16)
        if alpha is not None:
            data16 = np.dstack([data16, np.asarray(alpha, dtype=np.uint16) * 257])
        encode = _png16 if format == "png16" else _tiff16
        data = encode(data16, text or {}, icc)
        atomic_write(path, data)
        return data
    pixels = converted if converted is not None else rgb
    img = Image.fromarray(np.round(np.clip(pixels, 0, 1) * np.float32(255)).astype(np.uint8), "RGB")
    if icc and not colour.is_srgb(icc) and converted is None:
        img = colour.from_srgb_8bit(img, icc)
    if alpha is not None:
        img.putalpha(alpha)
    return save_image(img, path, text, format, quality, icc)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png16(pixels: np.ndarray, text: dict[str, str], icc: bytes | None) -> bytes:
    """A 16-bit RGB(A) PNG (PIL writes 16 bits only for greyscale): IHDR, iCCP, tEXt, IDAT, IEND."""
    h, w, channels = pixels.shape
    header = struct.pack(">IIBBBBB", w, h, 16, 6 if channels == 4 else 2, 0, 0, 0)
    rows = pixels.astype(">u2").reshape(h, -1).view(np.uint8)  # big-endian samples, as PNG stores them
    raw = np.hstack([np.zeros((h, 1), np.uint8), rows]).tobytes()  # filter type 0 on every row
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
    if icc:
        out += _chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(icc))
    for key, value in text.items():
        out += _chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1", "replace"))
    return out + _chunk(b"IDAT", zlib.compress(raw, 6)) + _chunk(b"IEND", b"")


def _tiff16(pixels: np.ndarray, text: dict[str, str], icc: bytes | None) -> bytes:
    """A 16-bit RGB(A) TIFF, little-endian, one Deflate-compressed strip, the settings in its
    ImageDescription and the profile in tag 34675 (PIL writes 16 bits only for greyscale)."""
    h, w, channels = pixels.shape
    strip = zlib.compress(pixels.astype("<u2").tobytes(), 6)
    description = ("\n".join(f"{k}={v}" for k, v in text.items()).encode("ascii", "replace") + b"\0") if text else b""
    short, long_, ascii_, undefined = 3, 4, 2, 7

    def entries(strip_offset: int) -> list[tuple[int, int, int, bytes]]:  # (tag, type, count, value), by tag
        return [
            (256, long_, 1, struct.pack("<I", w)),
            (257, long_, 1, struct.pack("<I", h)),
            (258, short, channels, struct.pack(f"<{channels}H", *[16] * channels)),
            (259, short, 1, struct.pack("<H", 8)),  # Adobe Deflate
            (262, short, 1, struct.pack("<H", 2)),  # RGB
            *([(270, ascii_, len(description), description)] if description else []),
            (273, long_, 1, struct.pack("<I", strip_offset)),
            (277, short, 1, struct.pack("<H", channels)),
            (278, long_, 1, struct.pack("<I", h)),
            (279, long_, 1, struct.pack("<I", len(strip))),
            (284, short, 1, struct.pack("<H", 1)),  # chunky
            *([(338, short, 1, struct.pack("<H", 2))] if channels == 4 else []),  # unassociated alpha
            *([(34675, undefined, len(icc), icc)] if icc else []),
        ]

    def layout(strip_offset: int) -> tuple[bytes, bytes]:
        found = entries(strip_offset)
        cursor = 8 + 2 + 12 * len(found) + 4  # values longer than 4 bytes follow the IFD
        table, blobs = b"", b""
        for tag, kind, count, value in found:
            if len(value) <= 4:
                table += struct.pack("<HHI", tag, kind, count) + value.ljust(4, b"\0")
            else:
                table += struct.pack("<HHII", tag, kind, count, cursor + len(blobs))
                blobs += value + (b"\0" if len(value) % 2 else b"")
        return struct.pack("<H", len(found)) + table + struct.pack("<I", 0), blobs

    ifd, blobs = layout(0)
    ifd, blobs = layout(8 + len(ifd) + len(blobs))  # the same sizes: only the strip's offset changes
    return b"II*\0" + struct.pack("<I", 8) + ifd + blobs + strip
