"""How far `validate`'s time estimate is from the time the job then takes, on real small jobs.

    python scripts/estimate_check.py                 # the default sequence, on the CPU, 1 thread
    python scripts/estimate_check.py --code DIR      # run another checkout's stylebatch (before/after)
    python scripts/estimate_check.py --fill 39       # the last two jobs estimated after 50 recorded runs
    python scripts/estimate_check.py --fill 39 --cache /tmp/cal   # keep the calibration it leaves

Starts from an empty calibration (a fresh $XDG_CACHE_HOME) and runs a sequence of jobs of mixed
sizes through the real CLI (`python -m stylebatch`), each one estimated by `validate` just before it
runs (so later jobs are estimated from the calibration the earlier ones left, tiny runs included).
For each job it prints the estimate, the measured wall time of `run` (process start to exit) and the
error, estimate / measured - 1. The goal: every error within ±30 %.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "manifests" / "images"
CONTENTS = ["chelsea.jpg", "coffee.jpg"]
STYLES = ["great_wave.jpg", "starry_night.jpg", "composition_vii.jpg"]
# (label, pairs, size, steps): the first is estimated with an empty calibration; the tiny ones are
# dominated by fixed per-pair costs, the runs that used to drag a median FLOP rate down.
SEQUENCE = [
    ("192px x3 30ev (empty calibration)", 3, 192, 30),
    *[(f"tiny {i}: 32px x1 5ev", 1, 32, 5) for i in range(6)],
    ("128px x2 40ev", 2, 128, 40),
    ("96px x4 30ev", 4, 96, 30),
    ("256px x1 24ev", 1, 256, 24),
    ("192px x3 30ev (after mixed runs)", 3, 192, 30),
    ("320px x2 16ev", 2, 320, 16),
]
# --fill: runs of mixed sizes (pairs, size, steps) recorded, not estimated, between the sequence's
# first part and its last two jobs, so those are estimated from a calibration of many runs.
FILL = [(1, 32, 5), (2, 64, 10), (1, 128, 12), (3, 48, 8), (1, 96, 15), (2, 160, 6)]
LAST = 2
UNITS = {"s": 1, "min": 60, "h": 3600}


def write_manifest(root: Path, pairs: int, size: int, steps: int) -> Path:
    lines = [
        "output_dir: out",
        f"defaults: {{size: {size}, steps: {steps}, optimizer: adam, checkpoint_every: {max(1, steps // 2)}}}",
        "pairs:",
    ]
    for i in range(pairs):
        content, style = IMAGES / CONTENTS[i % 2], IMAGES / STYLES[i % 3]
        lines.append(f"  - {{content: {content}, style: {style}, name: p{i}, seed: {i}}}")
    path = root / "job.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def cli(code: Path, cache: Path, cwd: Path, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    """`python -m stylebatch ARGS` from `code`, run in `cwd` (not in a checkout: `-m` puts the current
    directory first on the path, ahead of PYTHONPATH)."""
    env = {**os.environ, "PYTHONPATH": str(code), "XDG_CACHE_HOME": str(cache), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "stylebatch", *args], env=env, capture_output=True, text=True, cwd=cwd)
    return done, time.perf_counter() - start


def estimated_seconds(text: str) -> float:
    """The total from validate's last line: '~X unit' (before) or '~X unit (A-B unit)' (after)."""
    last = [line for line in text.splitlines() if "in all" in line][-1]
    found = re.search(r"~([\d.]+) (s|min|h)\b(?:[^~]*)in all", last)
    return float(found[1]) * UNITS[found[2]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", type=Path, default=REPO, help="the checkout whose stylebatch runs")
    parser.add_argument("--quick", action="store_true", help="only the first job and the tiny ones")
    parser.add_argument(
        "--fill", type=int, default=0, metavar="N", help="before the last two jobs, N more runs of mixed sizes"
    )
    parser.add_argument(
        "--cache", type=Path, help="keep the calibration here ($XDG_CACHE_HOME; must not exist yet) to study the fit"
    )
    args = parser.parse_args()
    if args.cache is not None and args.cache.exists():
        sys.exit(f"{args.cache} exists: the check starts from an empty calibration")
    errors = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or Path(tmp) / "cache"
        sequence = SEQUENCE[:7] if args.quick else SEQUENCE
        fill = [(f"fill {k}", *FILL[k % len(FILL)]) for k in range(args.fill)]
        if fill:
            sequence = (
                sequence[:-LAST]
                + fill
                + [
                    (f"{label} (after {len(SEQUENCE) - LAST + args.fill} runs)", *rest)
                    for label, *rest in sequence[-LAST:]
                ]
            )
        for i, (label, pairs, size, steps) in enumerate(sequence):
            root = Path(tmp) / f"job{i}"
            root.mkdir()
            if label.startswith("fill"):
                manifest = write_manifest(root, pairs, size, steps)
                ran, seconds = cli(
                    args.code, cache, root, "run", str(manifest), "--weights", "random", "--accelerator", "cpu"
                )
                if ran.returncode:
                    sys.exit(f"run failed:\n{ran.stdout}{ran.stderr}")
                print(
                    f"{label:<36} {pairs} x {size} px, {steps} evaluations: {seconds:.1f} s (recorded, not estimated)",
                    flush=True,
                )
                continue
            manifest = write_manifest(root, pairs, size, steps)
            checked, _ = cli(args.code, cache, root, "validate", str(manifest), "--weights", "random")
            if checked.returncode:
                sys.exit(f"validate failed:\n{checked.stdout}{checked.stderr}")
            estimate = estimated_seconds(checked.stdout)
            ran, seconds = cli(
                args.code, cache, root, "run", str(manifest), "--weights", "random", "--accelerator", "cpu"
            )
            if ran.returncode:
                sys.exit(f"run failed:\n{ran.stdout}{ran.stderr}")
            error = estimate / seconds - 1
            if not label.startswith(("tiny", "fill")):
                errors.append(error)
            print(f"{label:<36} estimate {estimate:7.1f} s  measured {seconds:7.1f} s  error {error:+6.0%}", flush=True)
    print(f"largest error over the jobs that are not tiny: {max(errors, key=abs):+.0%}")


if __name__ == "__main__":
    main()
