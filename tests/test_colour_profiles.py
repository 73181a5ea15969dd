"""Colour-managed outputs: a content's ICC profile is carried into every format, its pixels are
converted to sRGB for the network and back, and png16/tiff16 keep the float result's precision."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from stylebatch import icc as colour
from stylebatch.cli.main import main
from stylebatch.fit.provenance import read_metadata
from stylebatch.images import load_image, save_output
from tests.iccbuild import matrix_profile
from tests.jobkit import make_image, records, write_manifest

ADOBE = matrix_profile()
FORMATS = ("png", "jpg", "webp", "tiff", "png16", "tiff16")
EXT = {"png": "png", "jpg": "jpg", "webp": "webp", "tiff": "tif", "png16": "png", "tiff16": "tif"}
# ΔE (CIE 1976, on LittleCMS's 8-bit Lab) between the content as a colour-managed viewer shows it and
# the output as one shows it, when the fit leaves the pixels as they were (style_weight 0): at most
# this on average, and this at worst (8-bit rounding of sRGB and of Adobe RGB on the way, both ways).
MEAN_DE, MAX_DE = 1.0, 4.0


def _lab(img: Image.Image, icc: bytes | None) -> np.ndarray:
    """CIE Lab of an RGB image as its profile (sRGB without one) says, through LittleCMS."""
    source = ImageCms.ImageCmsProfile(io.BytesIO(icc or colour.srgb_bytes()))
    lab = ImageCms.profileToProfile(
        img.convert("RGB"), source, ImageCms.createProfile("LAB"), outputMode="LAB"
    )  # PIL's 8-bit Lab: L scaled by 255/100, a and b signed bytes
    arr = np.asarray(lab)
    return np.dstack([arr[..., 0] * 100 / 255, arr[..., 1:].view(np.int8)]).astype(np.float64)


def _delta_e(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(((a - b) ** 2).sum(-1))


def _adobe_photo(path: Path, seed: int = 5) -> Path:
    """A smooth photo-like sRGB image stored as Adobe RGB pixels with the Adobe RGB profile."""
    srgb = Image.open(make_image(path.with_suffix(".srgb.png"), seed, (40, 30))).convert("RGB")
    adobe = ImageCms.profileToProfile(
        srgb, ImageCms.createProfile("sRGB"), ImageCms.ImageCmsProfile(io.BytesIO(ADOBE)), outputMode="RGB"
    )
    adobe.save(path, icc_profile=ADOBE)
    return path


def read_png16(path: Path) -> np.ndarray:
    """A 16-bit RGB(A) PNG's samples (PIL decodes them to 8 bits), every row filter undone."""
    data = path.read_bytes()
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    w, h, depth, ctype = header[:4]
    assert depth == 16
    channels = {2: 3, 6: 4}[ctype]
    bpp, stride = 2 * channels, 2 * channels * w
    raw = zlib.decompress(idat)
    rows, prev = [], bytearray(stride)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return np.frombuffer(b"".join(rows), dtype=">u2").reshape(h, w, channels).astype(np.int64)


def read_tiff16(path: Path) -> np.ndarray:
    """A 16-bit RGB(A) TIFF's samples, its strips located by PIL's tag reader, inflated here."""
    with Image.open(path) as im:
        tags = im.tag_v2
        w, h, bits, spp = tags[256], tags[257], tags[258], tags[277]
        offsets, counts, compression = tags[273], tags[279], tags[259]
    assert tuple(bits) == (16,) * spp and compression == 8
    data = path.read_bytes()
    raw = b"".join(zlib.decompress(data[o : o + n]) for o, n in zip(offsets, counts))
    return np.frombuffer(raw, dtype="<u2").reshape(h, w, spp).astype(np.int64)


def test_the_profile_parser_agrees_with_littlecms() -> None:
    """The float conversion (icc.from_srgb) against LittleCMS on random colours: within 2/255."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    ours = colour.from_srgb(pixels / 255, ADOBE) * 255
    lcms = np.asarray(colour.from_srgb_8bit(Image.fromarray(pixels), ADOBE), dtype=np.float64)
    assert np.abs(ours - lcms).max() < 2.0 and np.abs(ours - lcms).mean() < 0.5
    assert colour.is_srgb(None) and colour.is_srgb(colour.srgb_bytes()) and not colour.is_srgb(ADOBE)


def test_inputs_are_converted_to_srgb(tmp_path: Path) -> None:
    photo = _adobe_photo(tmp_path / "adobe.png")
    loaded = load_image(photo, 10**6)
    assert loaded.icc == ADOBE
    srgb = np.asarray(Image.open(tmp_path / "adobe.srgb.png").convert("RGB"), dtype=np.float64)
    seen = np.asarray(loaded.rgb, dtype=np.float64)
    assert np.abs(seen - srgb).mean() < 1.0  # what the network sees is the sRGB photo again
    stored = np.asarray(Image.open(photo).convert("RGB"), dtype=np.float64)
    assert np.abs(stored - srgb).mean() > 4.0  # and not the Adobe RGB numbers taken as sRGB


def test_report_thumbnails_show_a_profiled_image_in_its_colours(tmp_path: Path) -> None:
    from stylebatch.report.thumbs import Thumbs

    # a saturated green, where Adobe RGB's numbers differ most from sRGB's, as an Adobe RGB file
    srgb = Image.new("RGB", (48, 32), (40, 200, 60))
    to_adobe = ImageCms.ImageCmsProfile(io.BytesIO(ADOBE))
    ImageCms.profileToProfile(srgb, ImageCms.createProfile("sRGB"), to_adobe).save(
        tmp_path / "g.png", icc_profile=ADOBE
    )
    thumb = Thumbs(tmp_path / "thumbs").get(tmp_path / "g.png")
    with Image.open(thumb.path) as im, Image.open(tmp_path / "g.png") as stored:
        shown, numbers = np.asarray(im.convert("RGB"), float).mean((0, 1)), np.asarray(stored, float).mean((0, 1))
    assert np.abs(shown - (40, 200, 60)).max() < 3 and np.abs(numbers - (40, 200, 60)).max() > 15, (shown, numbers)


@pytest.mark.slow
def test_adobe_rgb_content_keeps_its_profile_and_colours_in_every_format(tmp_path: Path, capsys) -> None:
    photo = _adobe_photo(tmp_path / "img" / "adobe.png")
    style = make_image(tmp_path / "img" / "style.png", 6)
    pairs = [{"content": str(photo), "style": str(style), "name": f"as_{fmt}", "format": fmt} for fmt in FORMATS]
    pairs += [{"content": str(photo), "style": str(style), "name": "painted", "style_weight": 0.1}]
    # style_weight 0: the content loss is 0 at the content, so the fit leaves the pixels as they came
    # (unbatched: a batch's convolutions round differently from the targets', and Adam moves on that)
    # and no TV, which would smooth them.
    defaults = {
        "size": 40,
        "steps": 4,
        "scales": None,
        "style_weight": 0.0,
        "tv_weight": 0.0,
        "quality": 100,
        "batch_size": 1,
    }
    manifest = write_manifest(tmp_path / "job.yaml", {"output_dir": "out", "defaults": defaults, "pairs": pairs})
    assert main(["run", str(manifest), "--weights", "random"]) == 0
    capsys.readouterr()
    content_lab = _lab(Image.open(photo), ADOBE)
    for fmt in FORMATS:
        out = tmp_path / "out" / f"as_{fmt}.{EXT[fmt]}"
        with Image.open(out) as im:
            assert im.info.get("icc_profile") == ADOBE, fmt  # carried as is (PNG iCCP, JPEG/WebP ICC, TIFF)
            de = _delta_e(_lab(im, ADOBE), content_lab)
            if fmt != "jpg":  # jpg's chroma subsampling changes colours by itself
                assert de.mean() < MEAN_DE and de.max() < MAX_DE, (fmt, de.mean(), de.max())
            # the same pixels without their profile would be other colours: the test can fail
            assert _delta_e(_lab(im, None), content_lab).mean() > 3 * MEAN_DE, fmt
        meta = read_metadata(out)  # settings embedded in every format
        assert meta["name"] == f"as_{fmt}" and meta["icc_profile"] == "Adobe RGB (1998) test copy"
        assert main(["inspect", str(out)]) == 0
        shown = capsys.readouterr().out
        assert f"as_{fmt}" in shown and "icc profile  Adobe RGB (1998) test copy" in shown
    with Image.open(tmp_path / "out" / "painted.png") as im:
        assert im.info.get("icc_profile") == ADOBE


@pytest.mark.slow
def test_16_bit_outputs_keep_the_float_precision_and_reproduce(tmp_path: Path, capsys) -> None:
    """A smooth gradient painted at 64 px after a 32 px pass (bicubic upsampling: floats between the
    8-bit levels): the 16-bit files hold far more than 256 values per channel, equal to the 8-bit
    file's within rounding; `run --from` makes the same bytes again."""
    ramp = np.linspace(0, 255, 64)
    grad = np.dstack([np.tile(ramp, (48, 1)), np.tile(ramp[:48, None], (1, 64)), np.tile(255 - ramp, (48, 1))])
    content = tmp_path / "img" / "gradient.png"
    content.parent.mkdir(parents=True)
    Image.fromarray(grad.round().astype(np.uint8)).save(content)
    style = make_image(tmp_path / "img" / "style.png", 7)
    pairs = [{"content": str(content), "style": str(style), "name": f"g_{f}", "format": f} for f in FORMATS[-3:]]
    pairs.append({"content": str(content), "style": str(style), "name": "g_png", "format": "png"})
    defaults = {"size": 64, "steps": 8, "scales": [32], "style_weight": 0.01, "batch_size": 1}
    manifest = write_manifest(tmp_path / "job.yaml", {"output_dir": "out", "defaults": defaults, "pairs": pairs})
    assert main(["run", str(manifest), "--weights", "random"]) == 0
    out = tmp_path / "out"
    eight = np.asarray(Image.open(out / "g_png.png").convert("RGB"), dtype=np.int64)
    for name, samples in (
        ("g_png16", read_png16(out / "g_png16.png")),
        ("g_tiff16", read_tiff16(out / "g_tiff16.tif")),
    ):
        assert samples.shape == (48, 64, 3)
        distinct = [len(np.unique(samples[..., c])) for c in range(3)]
        assert min(distinct) > 256, (name, distinct)
        assert (samples % 257 != 0).mean() > 0.9  # not 8-bit levels scaled up
        assert np.abs(samples / 257 - eight).max() <= 0.51  # the same picture as the 8-bit output
        assert records(out)[name]["encoding"] == {"format": name.removeprefix("g_")}
    for name in ("g_png16.png", "g_tiff16.tif"):
        assert main(["run", "--from", str(out / name), "--weights", "random", "--out", str(tmp_path / "again")]) == 0
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes()


def test_16_bit_writer_round_trips_a_float_gradient(tmp_path: Path) -> None:
    x = np.linspace(0, 1, 3000, dtype=np.float32)
    rgb = np.dstack([np.tile(x, (2, 1)), np.tile(x[::-1], (2, 1)), np.tile(x * 0.5, (2, 1))])
    alpha = Image.fromarray(np.full((2, 3000), 200, np.uint8), "L")
    for fmt, read in (("png16", read_png16), ("tiff16", read_tiff16)):
        path = tmp_path / f"g.{fmt}"
        save_output(rgb, alpha, path, text={"stylebatch": '{"k": 1}'}, format=fmt, icc=colour.srgb_bytes())
        samples = read(path)
        assert np.abs(samples[..., :3] - rgb * 65535).max() <= 0.5  # rounded once, from the floats
        assert (samples[..., 3] == 200 * 257).all()
        assert len(np.unique(samples[..., 0])) == 3000
        with Image.open(path) as im:  # other readers see a valid file, its profile and its text
            im.load()
            assert im.size == (3000, 2) and im.info.get("icc_profile") == colour.srgb_bytes()
