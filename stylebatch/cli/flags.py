"""The command line's own values, checked before anything starts: counts and durations of `run`
(`--devices`, `--num-nodes`, `--sync-timeout`), whether this machine has the devices asked for,
and every path given as an argument. Each problem is one StylebatchError line (exit 2)."""

from __future__ import annotations

import argparse
import math
import os

from stylebatch.errors import StylebatchError
from stylebatch.job.values import path_problem, shown

MAX_SYNC_TIMEOUT = 30 * 24 * 3600  # seconds; beyond this no job waits, and timedelta arithmetic overflows


def whole_number(flag: str, text: str, auto: bool = False) -> int | None:
    value = str(text).strip()
    if auto and value == "auto":
        return None
    if not value.isdigit() or int(value) < 1 or len(value) > 6:
        raise StylebatchError(
            f"{flag} {shown(text)}: must be a whole number from 1 to 999999" + (", or auto" if auto else "")
        )
    return int(value)


def seconds(flag: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 < value <= MAX_SYNC_TIMEOUT):
        raise StylebatchError(
            f"{flag} {shown(text)}: must be a number of seconds above 0 and at most {MAX_SYNC_TIMEOUT:,}"
        )
    return value


def check_devices(accelerator: str, devices: int | None) -> None:
    """Refuse a device count this machine cannot give before any process is started."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if accelerator == "gpu" and not gpus:
        raise StylebatchError(
            "--accelerator gpu: no CUDA device is available here"
            + (f" (asked for --devices {devices})" if devices else "")
        )
    on_gpu = accelerator == "gpu" or (accelerator == "auto" and gpus > 0)
    external = int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", "1")) or 1) > 1
    if devices is None or external:
        return
    if on_gpu and devices > gpus:
        raise StylebatchError(f"--devices {devices}: this machine has {gpus} CUDA device(s)")
    cores = os.cpu_count() or 1
    if not on_gpu and devices > cores:
        # Each CPU worker loads its own torch and VGG19: more workers than cores only compete for
        # them, and enough of them exhaust memory.
        raise StylebatchError(
            f"--devices {devices}: this machine has {cores} CPU core(s); use at most {cores} CPU workers"
        )


def cpu_workers_note(accelerator: str, devices: int | None) -> str | None:
    """A word when CPU workers would get less than 2 cores each: every worker pays its own start-up
    (torch, the network) and splits the cores, so on 2 cores two workers ran slower than one (README)."""
    if not devices or devices < 2 or accelerator == "gpu":
        return None
    if accelerator == "auto":
        import torch

        if torch.cuda.is_available():
            return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cores // devices >= 2:
        return None
    return (
        f"--devices {devices} on {cores} CPU core(s) gives each worker {max(1, cores // devices)} core(s) and its own "
        "start-up; on 2 cores two workers ran slower than one with both (README, Speed): fewer workers may be faster"
    )


def check_paths(args: argparse.Namespace) -> None:
    """Every path given on the command line is printable UTF-8 text of a possible length."""
    for flag, attr in (
        ("manifest", "manifest"),
        ("--out", "out"),
        ("--weights", "weights"),
        ("--config", "config"),
        ("--from", "from_image"),
        ("output_dir", "output_dir"),
        ("image", "image"),
        ("dest", "dest"),
    ):
        value = getattr(args, attr, None)
        if isinstance(value, str) and (problem := path_problem(value)):
            raise StylebatchError(f"{flag} {shown(value)}: {problem}")
