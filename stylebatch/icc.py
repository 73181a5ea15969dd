"""Colour profiles: inputs into sRGB for the network, outputs back into the content's profile.

The VGG was trained on sRGB photos, so every input with an ICC profile other than sRGB (Adobe RGB,
Display P3, ProPhoto, a CMYK press profile) is converted to sRGB when it is decoded (LittleCMS
through PIL's ImageCms, relative colorimetric). The output is converted back into the content's
profile and carries it, so a colour-managed viewer or a print workflow shows the colours the
photo had. That conversion is done in floating point from the result (`from_srgb`) for the RGB
matrix/TRC profiles cameras and editors write (Adobe RGB, Display P3, ProPhoto), so a 16-bit output
never passes through 8 bits; other profiles (LUT-based) go through ImageCms at 8 bits.
"""

from __future__ import annotations

import functools
import io
import logging
import struct

import numpy as np
from PIL import Image, ImageCms

log = logging.getLogger(__name__)


@functools.cache
def srgb_bytes() -> bytes:
    """LittleCMS's built-in sRGB profile (what the network's pixels mean)."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _profile(icc: bytes) -> ImageCms.ImageCmsProfile | None:
    try:
        return ImageCms.ImageCmsProfile(io.BytesIO(icc))
    except (OSError, ImageCms.PyCMSError, ValueError, TypeError):
        return None


def description(icc: bytes | None) -> str:
    """The profile's own name ("Adobe RGB (1998)", "sRGB IEC61966-2.1"), or '' if unreadable."""
    profile = _profile(icc) if icc else None
    if profile is None:
        return ""
    try:
        return (ImageCms.getProfileDescription(profile) or "").strip()
    except ImageCms.PyCMSError:
        return ""


def is_srgb(icc: bytes | None) -> bool:
    """No profile (pixels are sRGB by convention), or an sRGB one: nothing to convert. Judged by the
    profile's name: the many sRGB profiles in the wild differ in bytes, not in meaning."""
    return not icc or "srgb" in description(icc).lower().replace(" ", "")


def usable(icc: bytes | None) -> bytes | None:
    """`icc` if LittleCMS can read it, else None (a broken profile is dropped, with a log line)."""
    if icc and _profile(icc) is None:
        log.warning("an unreadable ICC profile (%d bytes) was ignored; the pixels are taken as sRGB", len(icc))
        return None
    return icc or None


def to_srgb(img: Image.Image, icc: bytes | None) -> Image.Image:
    """An RGB (or CMYK) image described by `icc` as RGB sRGB pixels (8 bits, ImageCms)."""
    if is_srgb(icc) or img.mode not in ("RGB", "CMYK"):
        return img.convert("RGB")
    source = _profile(icc)  # usable() has vetted it
    srgb = ImageCms.ImageCmsProfile(io.BytesIO(srgb_bytes()))
    intent = ImageCms.Intent.RELATIVE_COLORIMETRIC
    return ImageCms.profileToProfile(img, source, srgb, renderingIntent=intent, outputMode="RGB")


# ------------------------------------------------------------ matrix/TRC profiles in floating point


def _tags(icc: bytes) -> dict[bytes, bytes]:
    (count,) = struct.unpack_from(">I", icc, 128)
    tags = {}
    for i in range(count):
        sig, offset, size = struct.unpack_from(">4sII", icc, 132 + 12 * i)
        tags[sig] = icc[offset : offset + size]
    return tags


def _xyz(data: bytes) -> np.ndarray:
    if data[:4] != b"XYZ ":
        raise ValueError("not an XYZ tag")
    return np.array(struct.unpack_from(">3i", data, 8), dtype=np.float64) / 65536


_PARA_COUNTS = {0: 1, 1: 3, 2: 4, 3: 5, 4: 7}


def _curve(data: bytes) -> np.ndarray:
    """The tone curve sampled at 4097 evenly spaced inputs in [0, 1]."""
    x = np.linspace(0.0, 1.0, 4097)
    kind = data[:4]
    if kind == b"curv":
        (n,) = struct.unpack_from(">I", data, 8)
        if n == 0:
            return x
        if n == 1:
            return x ** (struct.unpack_from(">H", data, 12)[0] / 256)
        table = np.array(struct.unpack_from(f">{n}H", data, 12), dtype=np.float64) / 65535
        return np.interp(x, np.linspace(0.0, 1.0, n), table)
    if kind == b"para":
        (fn,) = struct.unpack_from(">H", data, 8)
        if fn not in _PARA_COUNTS:
            raise ValueError(f"parametric curve type {fn}")
        p = [v / 65536 for v in struct.unpack_from(f">{_PARA_COUNTS[fn]}i", data, 12)]
        g, a, b, c, d, e, f = (p + [0.0] * 7)[:7]
        if fn == 0:
            return x**g
        if fn == 1:
            return np.where(x >= -b / a, np.clip(a * x + b, 0, None) ** g, 0.0)
        if fn == 2:
            return np.where(x >= -b / a, np.clip(a * x + b, 0, None) ** g + c, c)
        if fn == 3:
            return np.where(x >= d, np.clip(a * x + b, 0, None) ** g, c * x)
        return np.where(x >= d, np.clip(a * x + b, 0, None) ** g + e, c * x + f)
    raise ValueError(f"tone curve of type {kind!r}")


@functools.cache
def _matrix_shaper(icc: bytes) -> tuple[np.ndarray, list[np.ndarray]] | None:
    """(RGB-linear → XYZ D50 matrix, three sampled tone curves), or None for any other profile."""
    try:
        if icc[16:20] != b"RGB ":
            return None
        tags = _tags(icc)
        matrix = np.stack([_xyz(tags[k]) for k in (b"rXYZ", b"gXYZ", b"bXYZ")], axis=1)
        curves = [np.maximum.accumulate(np.clip(_curve(tags[k]), 0, 1)) for k in (b"rTRC", b"gTRC", b"bTRC")]
    except (KeyError, ValueError, struct.error, ZeroDivisionError):
        return None
    if abs(np.linalg.det(matrix)) < 1e-6:
        return None
    return matrix, curves


_GRID = np.linspace(0.0, 1.0, 4097)


def from_srgb(rgb: np.ndarray, icc: bytes) -> np.ndarray | None:
    """sRGB pixels (H, W, 3) in [0, 1] as pixels of the RGB matrix/TRC profile `icc`, in floating
    point (relative colorimetric: both through XYZ D50, clipped to the destination's gamut); None
    when either profile is not matrix/TRC (then ImageCms converts at 8 bits)."""
    source, target = _matrix_shaper(srgb_bytes()), _matrix_shaper(icc)
    if source is None or target is None:
        return None
    (m_src, trc_src), (m_dst, trc_dst) = source, target
    flat = rgb.reshape(-1, 3).astype(np.float64)
    linear = np.stack([np.interp(flat[:, i], _GRID, trc_src[i]) for i in range(3)], axis=1)
    dest = np.clip(linear @ m_src.T @ np.linalg.inv(m_dst).T, 0, 1)
    out = np.stack([np.interp(dest[:, i], trc_dst[i], _GRID) for i in range(3)], axis=1)
    return out.reshape(rgb.shape).astype(np.float32)


def from_srgb_8bit(img: Image.Image, icc: bytes) -> Image.Image:
    """An 8-bit sRGB image in the profile `icc` (ImageCms), its alpha kept."""
    alpha = img.getchannel("A") if img.mode == "RGBA" else None
    srgb = ImageCms.ImageCmsProfile(io.BytesIO(srgb_bytes()))
    out = ImageCms.profileToProfile(
        img.convert("RGB"),
        srgb,
        _profile(icc),
        renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
        outputMode="RGB",
    )
    if alpha is not None:
        out.putalpha(alpha)
    return out


def shown_as_srgb(img: Image.Image) -> Image.Image:
    """An image as a browser shows it, in sRGB RGB (or RGBA): its own ICC profile applied, if any
    (report and gallery pictures, which drop the profile when they are resized)."""
    icc = usable(img.info.get("icc_profile"))
    alpha = img.getchannel("A") if img.mode in ("RGBA", "LA") else None
    if img.mode not in ("RGB", "CMYK"):
        img = img.convert("RGB")
    out = to_srgb(img, icc)
    if alpha is not None:
        out.putalpha(alpha)
    return out
