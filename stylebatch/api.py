"""The Python API: what the CLI does, for notebooks and scripts.

    import stylebatch
    picture = stylebatch.stylize("photo.jpg", "painting.jpg", preset="fast", weights="random")
    summary = stylebatch.run("manifests/example.yaml", out="runs/example", size=128)

Both go through the CLI's own path: the manifest loader and its checks (the same one-line messages),
the runner (locks, checkpoints, resume, records) and the engine's one fit. `stylize` is a one-pair
job in a temporary directory. Errors are stylebatch's own exceptions (`stylebatch.errors`), never a
printed line and an exit code; nothing prints unless `progress=True`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from stylebatch.errors import (
    EXIT_CODES,
    EXIT_FAILED_PAIRS,
    EXIT_INTERRUPTED,
    EXIT_LOCKED,
    ConfigError,
    ImageError,
    LockedError,
    ManifestError,
    StylebatchError,
)

__all__ = ["JobSummary", "PairSummary", "run", "stylize"]


@dataclass
class PairSummary:
    """One pair of a job as its record says after the run."""

    name: str
    status: str  # done, failed, interrupted, pending, running
    output: Path | None  # the output file (absolute), when the pair is done
    error: str | None = None  # the one-line reason of a failed pair
    evaluations: int = 0
    losses: dict[str, float] = field(default_factory=dict)


@dataclass
class JobSummary:
    """What `stylebatch.run` returns: the exit code the CLI would give and every pair's state."""

    output_dir: Path
    exit_code: int  # 0 every pair done, 1 some failed, 3 interrupted (run again to resume)
    pairs: dict[str, PairSummary]

    @property
    def message(self) -> str:
        return EXIT_CODES[self.exit_code]

    @property
    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for pair in self.pairs.values():
            counts[pair.status] = counts.get(pair.status, 0) + 1
        return counts

    @property
    def outputs(self) -> dict[str, Path]:
        """The output file of every done pair, by pair name."""
        return {name: p.output for name, p in self.pairs.items() if p.output is not None}

    @property
    def failed(self) -> dict[str, str]:
        return {name: p.error or "" for name, p in self.pairs.items() if p.status == "failed"}


def _device(device: str | None) -> str:
    """`None`: the first GPU if there is one, else the CPU; otherwise a torch device string."""
    import torch

    if device is None:
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise StylebatchError(f"device {device!r}: expected cpu, cuda or cuda:N") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise StylebatchError(f"device {device!r}: no CUDA device is available here")
    return str(parsed) if parsed.type != "cuda" or parsed.index is not None else "cuda:0"


class _Lines:
    """`progress=True`: the runner's news as plain lines on stderr (a notebook shows them as they
    come; rich's live bars belong to the terminal CLI), each running pair's at most every 10 s."""

    EVERY_S = 10.0

    def __init__(self) -> None:
        self.last: dict[str, float] = {}

    def _say(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def start(
        self, total: int, done: int, pending: list, before: dict | None = None, settled: list | None = None
    ) -> None:
        self._say(f"{total} pairs: {done} already done, {len(pending)} to run")

    def pair_start(self, pair: Any, steps_done: int, batch: list[str] | None) -> None:
        resumed = f" (resumed at {steps_done})" if steps_done else ""
        self._say(f"start {pair.name}{resumed}" + (f" in a batch of {len(batch)}" if batch else ""))

    def pair_progress(self, pair: Any, evaluations: int, losses: dict[str, float]) -> None:
        now = time.monotonic()
        if now - self.last.get(pair.name, 0.0) >= self.EVERY_S:
            self.last[pair.name] = now
            self._say(
                f"  {pair.name}: {evaluations}/{pair.config.steps} evaluations, loss {losses.get('total', 0):.4g}"
            )

    def pair_end(self, pair: Any, status: str, detail: str = "") -> None:
        self._say(f"{status} {pair.name}" + (f" ({detail})" if detail else ""))

    def waiting(self, ranks: list[int], counts: dict[str, int]) -> None: ...

    def note(self, message: str) -> None:
        self._say(message)


def _reporter(progress: bool) -> Any:
    """The runner's reporter: plain lines with `progress`, else the silent one."""
    from stylebatch.runner.options import Reporter

    return _Lines() if progress else Reporter()


def _refuse(job: Any, skip_invalid: bool) -> None:
    """Raise what the CLI would print before refusing to run (exit 2), or return."""
    if job.problems or (job.all_problems and not skip_invalid) or not job.valid_pairs:
        raise _problems_error(job.all_problems or [f"{job.manifest}: no valid pair to run"])


def _problems_error(problems: list[str]) -> StylebatchError:
    """ConfigError when only the settings passed as keywords (`--set`) are wrong, else ManifestError."""
    return (ConfigError if all(p.startswith("--set") for p in problems) else ManifestError)(problems)


def _summary(job: Any, code: int) -> JobSummary:
    from stylebatch.jobdir.state import JobState, effective_status

    state = JobState(job.output_dir)
    pairs = {}
    for pair in job.pairs:
        if pair.problems:
            pairs[pair.name] = PairSummary(pair.name, "failed", None, "; ".join(pair.problems))
            continue
        record = state.read(pair.name) or {}
        status = effective_status(record) if record else "pending"
        out = job.output_path(pair).absolute()  # a notebook may change directory afterwards
        pairs[pair.name] = PairSummary(
            pair.name,
            status,
            out if status == "done" and out.is_file() else None,
            record.get("error"),
            int(record.get("steps_done") or 0),
            dict(record.get("losses") or {}),
        )
    return JobSummary(job.output_dir.absolute(), code, pairs)


def _run_job(job: Any, device: str, progress: bool, **options: Any) -> int:
    from stylebatch.runner.loop import run_job
    from stylebatch.runner.options import RunOptions

    return run_job(job, RunOptions(device=device, **options), _reporter(progress))


def run(
    manifest: str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    weights: str | None = None,
    devices: int | str | None = None,
    progress: bool = False,
    preset: str | None = None,
    fresh: bool = False,
    retry_failed: bool = False,
    skip_invalid: bool = False,
    verify: bool = False,
    **settings: Any,
) -> JobSummary:
    """Run (or resume) every pair of a manifest, as `stylebatch run MANIFEST` does, and return each
    pair's status and output path.

    `out`, `weights`, `preset` (`--config`), `fresh`, `retry_failed`, `skip_invalid` and `verify`
    are the CLI's options; `settings` are config keys, as `--set KEY=VALUE` (highest precedence).
    `devices`: None (one device: the first GPU if any, else the CPU), a device string (`"cpu"`,
    `"cuda:1"`), or a number of devices or `"auto"`, run as `stylebatch run --devices N` in a
    subprocess (one worker process per device). Interrupted (Ctrl-C, SIGTERM), it checkpoints and
    returns exit code 3; the same call again resumes. A manifest with problems raises
    `ManifestError` listing them, a locked output directory `LockedError`.
    """
    if isinstance(devices, int) and not isinstance(devices, bool) and devices > 1 or devices == "auto":
        return _run_workers(manifest, out, weights, devices, progress, preset, settings, fresh, retry_failed, verify)
    if isinstance(devices, int) and devices != 1:
        raise StylebatchError(f"devices {devices}: expected a positive number, 'auto' or a device string")
    device = _device(None if devices in (None, 1) else str(devices))
    from stylebatch.memory.autosize import load_job

    job = load_job(
        manifest, preset=preset, sets=settings, out=out, weights=weights, device="cpu" if device == "cpu" else None
    )
    _refuse(job, skip_invalid)
    code = _run_job(
        job, device, progress, fresh=fresh, retry_failed=retry_failed, skip_invalid=skip_invalid, verify=verify
    )
    return _summary(job, code)


def _run_workers(
    manifest: Any,
    out: Any,
    weights: str | None,
    devices: int | str,
    progress: bool,
    preset: str | None,
    settings: dict[str, Any],
    fresh: bool,
    retry_failed: bool,
    verify: bool,
) -> JobSummary:
    """Several devices: the CLI in a subprocess (its launcher starts one worker per device and
    re-executes the command line, which a notebook's process cannot be)."""
    import yaml

    args = [sys.executable, "-m", "stylebatch", "run", os.fspath(manifest), "--devices", str(devices)]
    args += ["--out", os.fspath(out)] if out is not None else []
    args += ["--weights", weights] if weights is not None else []
    args += ["--config", preset] if preset is not None else []
    for key, value in settings.items():
        args += ["--set", f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...')}"]
    args += [flag for flag, on in (("--fresh", fresh), ("--retry-failed", retry_failed), ("--verify", verify)) if on]
    result = subprocess.run(args, stdout=None if progress else subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if progress:
        sys.stderr.write(result.stderr)
    problems = [line.removeprefix("error: ") for line in result.stderr.splitlines() if line.startswith("error: ")]
    if result.returncode == EXIT_LOCKED:
        raise LockedError(problems or [EXIT_CODES[EXIT_LOCKED]])
    if result.returncode not in (0, EXIT_FAILED_PAIRS, EXIT_INTERRUPTED):
        raise StylebatchError(problems or [f"stylebatch run exited {result.returncode}"])
    from stylebatch.memory.autosize import load_job

    job = load_job(manifest, preset=preset, sets=settings, out=out, weights=weights, check_files=False)
    return _summary(job, result.returncode)


def _as_file(image: Any, folder: Path, stem: str) -> Path:
    """A path given stays the user's path (messages name it); a PIL image is written losslessly,
    with its ICC profile, into the temporary job."""
    if isinstance(image, (str, os.PathLike)):
        return Path(image).absolute()
    if isinstance(image, Image.Image):
        path = folder / f"{stem}.png"
        icc = image.info.get("icc_profile")
        image.save(path, format="PNG", **({"icc_profile": icc} if icc else {}))
        return path
    raise ImageError(f"{stem}: expected a file path or a PIL image, got {type(image).__name__}")


def _stem(image: Any, fallback: str) -> str:
    if isinstance(image, (str, os.PathLike)):
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(image).stem).strip("._")
        return stem or fallback
    return fallback


def stylize(
    content: str | os.PathLike | Image.Image,
    style: str | os.PathLike | Image.Image | list[str | os.PathLike | Image.Image],
    *,
    preset: str | None = None,
    weights: str = "imagenet",
    device: str | None = None,
    progress: bool = False,
    **settings: Any,
) -> Image.Image:
    """One picture: `content` painted in `style` (a path or PIL image; a list of them is a blend),
    through the same loader checks, runner and fit as `stylebatch run` on a one-pair manifest.

    `preset` is a name in `configs/` or a YAML path (`--config`); `settings` are config keys
    (`size=256, steps=100, style_weight=0.1`), checked as `--set` is, with the same messages.
    `weights`: `imagenet`, `random` or a file path. `device`: None (the first GPU, else the CPU),
    or a torch device string. Returns the output image (its settings in `.info["stylebatch"]` for
    png); a 16-bit format (`png16`, `tiff16`) comes back as PIL decodes it, 8 bits per channel:
    use `run` to keep the 16-bit file. Raises the project's exceptions (`ConfigError`,
    `ImageError`, `ManifestError`, `WeightsError`...) with the CLI's one-line messages; a pair that
    fails in the fit raises `StylebatchError` with its recorded reason.
    """
    import yaml

    from stylebatch.memory.autosize import load_job

    styles = style if isinstance(style, (list, tuple)) else [style]
    device = _device(device)
    settings = {"report_every": 0, **settings}  # a report of a temporary job is never seen
    with tempfile.TemporaryDirectory(prefix="stylebatch-") as tmp:
        folder = Path(tmp)
        content_file = _as_file(content, folder, "content")
        style_files = [_as_file(s, folder, f"style{i}" if len(styles) > 1 else "style") for i, s in enumerate(styles)]
        name = f"{_stem(content, 'content')}__{'+'.join(_stem(s, f'style{i}') for i, s in enumerate(styles))}"
        entry = {
            "content": str(content_file),
            "style": [str(p) for p in style_files] if len(style_files) > 1 else str(style_files[0]),
            "name": name[:120],
        }
        manifest = folder / "stylize.yaml"
        manifest.write_text(
            yaml.safe_dump({"output_dir": "out", "pairs": [entry]}, sort_keys=False, allow_unicode=True),
            encoding="utf-8",
        )
        job = load_job(
            manifest, preset=preset, sets=settings, weights=weights, device="cpu" if device == "cpu" else None
        )
        if job.all_problems:
            raise _problems_error([_untemp(p, manifest, entry["name"]) for p in job.all_problems])
        code = _run_job(job, device, progress)
        summary = _summary(job, code)
        (pair,) = summary.pairs.values()
        if pair.status == "failed":
            raise StylebatchError(pair.error or "the pair failed")
        if code == EXIT_INTERRUPTED or pair.output is None:
            raise KeyboardInterrupt  # stopped by a signal; a temporary job cannot be resumed
        with Image.open(pair.output) as img:
            img.load()
            return img.copy()


def _untemp(problem: str, manifest: Path, name: str) -> str:
    """A problem about the temporary manifest, said about the call instead (its paths mean nothing)."""
    return problem.replace(f"{manifest}: pairs[0] '{name}': ", "stylize: ").replace(f"{manifest}: ", "stylize: ")
