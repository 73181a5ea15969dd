"""What an output says about itself, and a one-pair job that makes it again.

Every output carries one JSON object (`pair_metadata` plus what `write_output` adds): the
pair's name and id, the absolute content/style paths and their sha256, the weights' identity and
source, the effective config (every key), the evaluations and final losses, the output size, the
device type and the versions of stylebatch, torch, torchvision, lightning, Pillow and Python.
PNG (8 or 16 bits) keeps it in a tEXt chunk named `stylebatch`; jpg/webp in the EXIF UserComment
and TIFF (8 or 16 bits) in its ImageDescription, both as `stylebatch=<json>`.

`stylebatch inspect IMAGE` prints it; `stylebatch run --from IMAGE` rebuilds the pair from it and
refuses if an input or the weights are no longer the bytes that made the image.
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path
from typing import Any

from PIL import Image

from stylebatch import __version__
from stylebatch.errors import ImageError, StylebatchError
from stylebatch.images import EXIF_IFD, EXIF_USER_COMMENT, USER_COMMENT_ASCII, opened, save_image, save_output
from stylebatch.job import config as cfgmod
from stylebatch.job.checks import FileChecker, check_name, check_output_dir, check_pair_files
from stylebatch.job.config import Config
from stylebatch.job.pairs import Job, Pair
from stylebatch.job.values import text_problem
from stylebatch.job.weights import check_weights_path, weights_identity
from stylebatch.job.yamlfiles import MAX_DEPTH, nesting_depth
from stylebatch.jobdir.state import sha256_file

KEY = "stylebatch"


def versions() -> dict[str, str]:
    import lightning
    import PIL
    import torch
    import torchvision

    return {
        "stylebatch": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "lightning": lightning.__version__,
        "pillow": PIL.__version__,
        "python": platform.python_version(),
    }


def pair_metadata(job: Job, pair: Pair, weights_id: str) -> dict[str, Any]:
    """What an output carries about its pair: enough to reproduce it."""
    return {
        "name": pair.name,
        "id": pair.id,
        "content": str(pair.content.resolve()),  # absolute: `run --from` finds them from anywhere
        "style": str(pair.styles[0].resolve()),  # the first (the only one, but for a blend)
        "content_sha256": sha256_file(pair.content),
        "style_sha256": sha256_file(pair.styles[0]),
        "weights": weights_id,
        "weights_source": job.weights if job.weights in ("imagenet", "random") else str(Path(job.weights).resolve()),
        "config": pair.config.to_dict(),
        "versions": versions(),
        **(
            {
                "styles": [str(p.resolve()) for p in pair.styles],  # a blend: every style file
                "styles_sha256": [sha256_file(p) for p in pair.styles],
            }
            if len(pair.styles) > 1
            else {}
        ),
    }


def write_output(
    pixels: Any,
    alpha: Image.Image | None,
    icc: bytes | None,
    output: Path,
    cfg: Config,
    device: Any,
    meta: dict[str, Any],
) -> str:
    """Save a finished pair's float sRGB pixels (H, W, 3) atomically, in the content's ICC profile
    `icc` (carried in the file) and at the config's format and bit depth, with its settings, inputs
    and versions embedded; returns the file's sha256."""
    import torch

    from stylebatch import icc as colour

    meta = {
        **meta,
        "device": device.type,
        "output_size": [int(pixels.shape[1]), int(pixels.shape[0])],
        **({"icc_profile": colour.description(icc) or "unnamed"} if icc else {}),
        "encoding": cfg.encoding(),
        "versions": versions(),
    }
    if device.type == "cpu":
        meta["cpu_threads"] = torch.get_num_threads()  # CPU float results depend on it (`run --from` uses it)
    text = {KEY: json.dumps(meta, sort_keys=True, default=str)}  # ASCII: json escapes the rest
    data = save_output(pixels, alpha, output, text=text, format=cfg.format, quality=cfg.quality, icc=icc)
    return hashlib.sha256(data).hexdigest()


def reencode_output(source: Path, output: Path, cfg: Config) -> str:
    """Write a finished output again in `cfg`'s 8-bit format from a lossless 8-bit file of it (png,
    tiff, webp at quality 100): its very pixels, alpha and ICC profile (which are what `write_output`
    would encode from the float result: it rounds once, into the profile), and the settings it
    carries with the new format. Returns the new file's sha256."""
    meta = {**read_metadata(source), "config": cfg.to_dict(), "encoding": cfg.encoding()}
    try:
        with opened(source, cfg.max_pixels) as img:
            img.load()
            icc, picture = img.info.get("icc_profile"), img.copy()
    except (ImageError, OSError, ValueError) as e:
        raise StylebatchError(f"{source}: cannot be re-encoded ({e})") from None
    if picture.mode not in ("RGB", "RGBA"):
        raise StylebatchError(f"{source}: cannot be re-encoded (mode {picture.mode}, not an 8-bit output)")
    text = {KEY: json.dumps(meta, sort_keys=True, default=str)}
    data = save_image(picture, output, text, cfg.format, cfg.quality, icc)
    return hashlib.sha256(data).hexdigest()


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The settings an output was made with; StylebatchError when the file has none."""
    path = Path(path)
    if not path.exists():
        raise StylebatchError(f"{path}: no such file")
    try:
        # Refused from the header like any input (a decompression bomb, a FIFO, not an image): PNG
        # text chunks after the pixels are only reached by decoding them.
        with opened(path, cfgmod.FIELDS["max_pixels"].default) as img:
            if img.format == "PNG":
                text = dict(getattr(img, "text", None) or {})
            elif img.format == "TIFF":
                text = _lines(str(img.tag_v2.get(270) or ""))
            else:
                text = _exif_text(img)
    except ImageError as e:
        raise StylebatchError(str(e)) from None
    if KEY not in text:
        raise StylebatchError(
            f"{path}: carries no stylebatch settings (not a stylebatch output, or re-saved by "
            "another program that dropped them)"
        )
    try:
        meta = json.loads(text[KEY])
    except ValueError as e:
        raise StylebatchError(f"{path}: its stylebatch settings are not valid JSON ({e})") from None
    except RecursionError:
        raise StylebatchError(f"{path}: its stylebatch settings are malformed (nested too deeply)") from None
    if nesting_depth(meta) > MAX_DEPTH:  # inspect prints it, run --from rebuilds a job from it
        raise StylebatchError(f"{path}: its stylebatch settings are malformed (nested too deeply)")
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise StylebatchError(f"{path}: its stylebatch settings are incomplete")
    if problem := _shape_problem(meta):
        raise StylebatchError(f"{path}: its stylebatch settings are malformed ({problem})")
    return meta


def _shape_problem(meta: dict[str, Any]) -> str | None:
    """What `inspect` would trip over in settings written by hand (or by a hostile program)."""
    losses, size = meta.get("losses"), meta.get("output_size")
    if losses is not None and not (
        isinstance(losses, dict)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in losses.values())
    ):
        return "'losses' is not a mapping of numbers"
    if size is not None and not (isinstance(size, list) and len(size) == 2):
        return "'output_size' is not [width, height]"
    for key in ("versions",):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            return f"'{key}' is not a mapping"
    stack: list[Any] = [meta]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, list):
            stack += item
        elif isinstance(item, str) and (problem := text_problem(item)):
            return f"a value {problem}"
    return None


def _exif_text(img: Image.Image) -> dict[str, str]:
    raw = img.getexif().get_ifd(EXIF_IFD).get(EXIF_USER_COMMENT)
    if not isinstance(raw, bytes) or not raw.startswith(USER_COMMENT_ASCII):
        return {}
    return _lines(raw[len(USER_COMMENT_ASCII) :].decode("ascii", "replace"))


def _lines(text: str) -> dict[str, str]:
    """`key=value` lines (how jpg, webp and tiff outputs carry their settings)."""
    return dict(line.split("=", 1) for line in text.split("\n") if "=" in line)


def recorded_threads(path: str | Path) -> int | None:
    """The CPU thread count an output was made with (CPU float results depend on it), if recorded."""
    try:
        threads = read_metadata(path).get("cpu_threads")
    except StylebatchError:
        return None
    return int(threads) if isinstance(threads, int) and threads > 0 else None


def batch_note(path: str | Path) -> str | None:
    """What `run --from` says before it reruns an output that was made in a batch, or None."""
    try:
        batch = read_metadata(path).get("batch")
    except StylebatchError:
        return None
    if not isinstance(batch, list) or len(batch) < 2:
        return None
    return (
        f"{path} was made in a batch of {len(batch)} ({', '.join(map(str, batch))}); it is rerun alone, so "
        "the result is of the same quality but not the same pixels (see batch_size)"
    )


def input_files(meta: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """(role, path, recorded sha256) of every input file: content, style, or a blend's styles."""
    found = [("content", meta.get("content") or "", meta.get("content_sha256"))]
    if isinstance(meta.get("styles"), list):
        hashes = meta.get("styles_sha256") or [None] * len(meta["styles"])
        found += [(f"style[{i}]", path, sha) for i, (path, sha) in enumerate(zip(meta["styles"], hashes))]
    else:
        found.append(("style", meta.get("style") or "", meta.get("style_sha256")))
    return found


def input_checks(meta: dict[str, Any]) -> dict[str, str]:
    """Per input (content, style or style[i]): 'ok', 'missing' or 'changed' (the sha256 differs)."""
    out = {}
    for role, path, sha in input_files(meta):
        if not path or not Path(path).is_file():
            out[role] = "missing"
        else:
            out[role] = "ok" if sha256_file(Path(path)) == sha else "changed"
    return out


def _weights_for(meta: dict[str, Any], weights: str | None, image: Path) -> str:
    """The weights to rebuild with: --weights if given, else the recorded source; refuses a network
    whose identity is not the recorded one."""
    want = meta.get("weights", "")
    source = weights or meta.get("weights_source")
    if source is None:  # an output written before weights_source was recorded
        source = "random" if str(want).startswith("random") else "imagenet" if want == "imagenet" else None
    if source is None:
        raise StylebatchError(f"{image}: made with weights {want}; pass --weights with that file")
    if problem := check_weights_path(source):
        raise StylebatchError(
            f"{image}: made with weights {source}, which is not available here ({problem}); "
            "pass --weights with a copy of that file"
        )
    if weights_identity(source) != want:
        raise StylebatchError(
            f"{image}: made with weights {want}, but {source} is {weights_identity(source)}; "
            "that would not reproduce it"
        )
    return source


def job_from_image(
    image: str | Path, out: str | Path, weights: str | None = None, sets: dict[str, Any] | None = None
) -> Job:
    """A one-pair job that reproduces `image` into `out` (same name, inputs and config; `sets`
    override config keys, which of course makes it a variation, not a reproduction). Like
    `load_job`, it never raises for user errors: a job that cannot be built has no pairs and says why."""
    image = Path(image)
    try:
        return _job_from_image(image, Path(out), weights, sets)
    except StylebatchError as e:
        return Job(image, Path(out), weights or "imagenet", [], e.problems)


def _job_from_image(image: Path, out: Path, weights: str | None, sets: dict[str, Any] | None) -> Job:
    meta = read_metadata(image)
    checks = input_checks(meta)
    paths = {role: path for role, path, _ in input_files(meta)}
    bad = [
        f"{role} {paths[role]} is {state}"
        + (" (its sha256 differs from the one recorded)" if state == "changed" else "")
        for role, state in checks.items()
        if state != "ok"
    ]
    if bad:
        raise StylebatchError([f"{image}: cannot reproduce: {b}" for b in bad])
    source = _weights_for(meta, weights, image)
    where = f"{image} (recorded settings)"
    if problem := check_name(meta.get("name")):
        raise StylebatchError(f"{where}: {problem}")
    if problem := check_output_dir(out):
        raise StylebatchError(f"--out: {problem}")
    cfg = cfgmod.resolve([(where, meta["config"]), ("--set", sets or {})])
    styles = [Path(p) for p in meta.get("styles") or [meta["style"]]]  # a blend records every style
    pair = Pair(str(meta["name"]), Path(meta["content"]), styles, cfg, entry=f"--from {image.name}")
    check_pair_files(pair, FileChecker(), where, source)
    job = Job(image, Path(out), source, [pair], [])
    if pair.id and meta.get("id") and pair.id != meta["id"] and not sets:
        job.problems.append(f"{where}: the rebuilt pair id {pair.id} differs from the recorded {meta['id']}")
    return job
