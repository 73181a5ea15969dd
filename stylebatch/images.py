"""Images in and out: safe decoding (pixel limit from the header, EXIF orientation, odd modes),
resizing, tensor conversion and atomic saving with settings in PNG text chunks."""

from __future__ import annotations

import io
import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from stylebatch.atomic import atomic_write
from stylebatch.errors import ImageError

log = logging.getLogger(__name__)


@dataclass
class LoadedImage:
    rgb: Image.Image  # mode RGB
    alpha: Image.Image | None  # mode L, when the file has transparency


def _open_checked(path: Path, max_pixels: int) -> Image.Image:
    """Open (header only) and refuse before any pixel is decoded if the image is too large."""
    if not path.exists():
        raise ImageError(f"{path}: file not found")
    if path.is_dir():
        raise ImageError(f"{path}: is a directory, expected an image file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # PIL's own bomb check only warns below 2x its limit; make it an error, never a warning.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
    except (UnidentifiedImageError, Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        if isinstance(e, UnidentifiedImageError):
            raise ImageError(f"{path}: not an image PIL can read") from None
        raise ImageError(f"{path}: image too large ({e})") from None
    except OSError as e:
        raise ImageError(f"{path}: cannot be read ({e})") from None
    w, h = img.size
    if w * h > max_pixels:
        img.close()
        raise ImageError(f"{path}: {w}x{h} = {w * h:,} pixels exceeds max_pixels {max_pixels:,}")
    if w < 1 or h < 1:
        img.close()
        raise ImageError(f"{path}: image has no pixels ({w}x{h})")
    return img


def _to_rgb_alpha(img: Image.Image, path: Path) -> LoadedImage:
    if getattr(img, "n_frames", 1) > 1:
        log.info("%s: animated image with %d frames; using the first", path, img.n_frames)
        img.seek(0)
    img = ImageOps.exif_transpose(img)  # honour the camera's orientation tag
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit greyscale: convert("L") would clip everything above 255 to white; scale instead.
        img = img.convert("I").point(lambda v: v * (1 / 256)).convert("L")
        mode = "L"
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
    img = _open_checked(path, max_pixels)
    try:
        with img:
            img.load()  # a truncated file only fails here, on full decode
            return _to_rgb_alpha(img, path)
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{path}: cannot be decoded ({e})") from None


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


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB → float tensor (1, 3, H, W) in [0, 1]."""
    data = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())  # (H, W, 3)
    return data.permute(2, 0, 1).unsqueeze(0).float().div(255).contiguous()


def to_pil(tensor: torch.Tensor) -> Image.Image:
    """Float tensor (1, 3, H, W) or (3, H, W) → PIL RGB, clamped to [0, 1] and rounded to 8 bits."""
    t = tensor.detach().to("cpu", torch.float32).squeeze(0).clamp(0, 1)
    data = t.mul(255).round().to(torch.uint8).permute(1, 2, 0).contiguous()  # (H, W, 3)
    return Image.fromarray(data.numpy())


def save_image(img: Image.Image, path: str | Path, text: dict[str, str] | None = None) -> bytes:
    """Encode as PNG (with `text` in tEXt chunks) and write atomically; returns the bytes written."""
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info)
    data = buf.getvalue()
    atomic_write(path, data)
    return data


def megapixels(wh: tuple[int, int]) -> float:
    return math.prod(wh) / 1e6
