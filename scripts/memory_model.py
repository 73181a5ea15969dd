"""The memory and time model (stylebatch/estimate.py) against measurements: each case is one pair run
end to end through `stylebatch run` in a fresh process (random weights), its peak resident set read
with os.wait4 (ru_maxrss: that child's own high-water mark) and its wall time measured.

    .venv/bin/python scripts/memory_model.py                 # memory part (CPU: minutes)
    .venv/bin/python scripts/memory_model.py --part time     # time part: needs an idle machine
    .venv/bin/python scripts/memory_model.py --device cuda   # on a GPU: allocated peak, 512..4096 px

The model is calibrated the way the product calibrates itself (calibration.py), from separate runs
only: the baseline (memory in use before the pair starts) from a tiny 32 px run, and the memory
scale and FLOP rate from the first case ("calibration"); every other case is a prediction. Each
process gets its own empty $XDG_CACHE_HOME, so no run's calibration leaks into another's.
Prints predicted vs measured and the relative error per case (targets: memory within 15 %, time
within 25 %).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from stylebatch.calibration import Device  # noqa: E402
from stylebatch.config import Config  # noqa: E402
from stylebatch.estimate import estimate, own_bytes, work  # noqa: E402

IMAGES = REPO / "manifests" / "images"
CONTENT, STYLE = IMAGES / "chelsea.jpg", IMAGES / "great_wave.jpg"

# (label, config overrides, batch). The first is the calibration case.
MEMORY_CASES = [
    ("calibration: 768 adam", {"size": 768}, 1),
    ("256 adam", {"size": 256}, 1),
    ("512 adam", {"size": 512}, 1),
    ("1024 adam", {"size": 1024}, 1),
    ("1024 adam, avg pooling", {"size": 1024, "pooling": "avg"}, 1),
    ("1024 adam, relu style layers", {"size": 1024, "style_layers": {f"relu{i}_1": 1.0 for i in range(1, 6)}}, 1),
    ("512 lbfgs m=5", {"size": 512, "optimizer": "lbfgs", "lbfgs_history": 5, "steps": 14}, 1),
    ("768 lbfgs m=5", {"size": 768, "optimizer": "lbfgs", "lbfgs_history": 5, "steps": 14}, 1),
    ("512 adam, batch of 2", {"size": 512, "batch_size": 2}, 2),
    ("1024 adam, scales [512]", {"size": 1024, "scales": [512], "steps": 6}, 1),
    ("1024 adam, tile 512", {"size": 1024, "tile": 512}, 1),
]
TIME_CASES = [
    ("calibration: 512 adam", {"size": 512, "steps": 20}, 1),
    ("256 adam", {"size": 256, "steps": 40}, 1),
    ("768 adam", {"size": 768, "steps": 12}, 1),
    ("1024 adam", {"size": 1024, "steps": 8}, 1),
    ("512 lbfgs m=5", {"size": 512, "optimizer": "lbfgs", "lbfgs_history": 5, "steps": 20}, 1),
    ("1024 adam, tile 512", {"size": 1024, "tile": 512, "steps": 6}, 1),
]
GPU_SIZES = [512, 1024, 2048, 4096]


def run_case(overrides: dict, batch: int, device: str, root: Path) -> tuple[int, float, dict]:
    """(peak bytes, seconds, the pair's `measured` record) of one fresh `stylebatch run`."""
    cfg = {"steps": 4, "optimizer": "adam", "checkpoint_every": 10**6, "log_every": 10**6, **overrides}
    pairs = "".join(f"  - {{content: {CONTENT}, style: {STYLE}, name: p{i}, seed: {i}}}\n" for i in range(batch))
    manifest = root / "job.yaml"
    manifest.write_text(f"output_dir: out\ndefaults: {json.dumps(cfg)}\npairs:\n{pairs}")
    env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_CACHE_HOME": str(root / "cache")}
    accel = "gpu" if device == "cuda" else "cpu"
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "stylebatch", "run", str(manifest), "--weights", "random",
                             "--accelerator", accel], cwd=root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak, not the max over all children
    seconds = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"run failed for {overrides}: {proc.stderr.read().decode()[-2000:]}")
    record = json.loads((root / "out" / ".stylebatch" / "pairs" / "p0" / "state.json").read_text())
    measured = record.get("measured") or {}
    peak = measured.get("peak_bytes") if device == "cuda" else usage.ru_maxrss * 1024
    return peak, seconds, measured


def config_of(overrides: dict) -> Config:
    return Config(**{"steps": 4, "optimizer": "adam", **overrides})


def content_wh() -> tuple[int, int]:
    from PIL import Image

    with Image.open(CONTENT) as im:
        return im.size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("memory", "time", "both"), default="memory")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--sizes", type=int, nargs="*", default=None, help="GPU: output sizes (default 512..4096)")
    args = parser.parse_args()
    wh = content_wh()
    device = Device.current("cuda:0" if args.device == "cuda" else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        floor_peak, _, tiny = run_case({"size": 32}, 1, args.device, Path(tmp))
    baseline = tiny.get("start_bytes") or floor_peak
    floor = tiny.get("start_peak_bytes") or baseline
    print(f"# memory model vs measured on {device.key}; from a 32 px run: baseline (in use before a pair) "
          f"{baseline / 2**20:.0f} MiB, floor (peak before it) {floor / 2**20:.0f} MiB")
    parts = ["memory", "time"] if args.part == "both" else [args.part]
    if args.device == "cuda":
        cases = [(f"{s} adam", {"size": s}, 1) for s in (args.sizes or GPU_SIZES)]
        cases = [cases[0]] + cases[1:] + [(f"{s} adam, tile 1024", {"size": s, "tile": 1024}, 1)
                                          for s in (args.sizes or GPU_SIZES) if s > 1024]
    for part in parts:
        if args.device != "cuda":
            cases = MEMORY_CASES if part == "memory" else TIME_CASES
        print(f"\n## {part}\n| case | predicted | measured | error |\n|---|---|---|---|")
        scale = rate = None
        for label, overrides, batch in cases:
            cfg = config_of(overrides)
            tile = cfg.tile if isinstance(cfg.tile, int) else None
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    peak, seconds, measured = run_case(overrides, batch, args.device, Path(tmp))
                except SystemExit as e:
                    print(f"| {label} | | failed: {str(e)[:120]} | |")
                    continue
            own = own_bytes(cfg, wh, batch, tile)
            flops = work(cfg, wh, 0, cfg.steps, batch, tile)
            if scale is None:  # the calibration case: what one run teaches the product
                scale = (peak - baseline) / own
                rate = flops / max(seconds - device.pair_overhead, seconds / 2)
            calibrated = replace(device, baseline=baseline, floor=floor, memory_scale=scale, flop_rate=rate)
            est = estimate(cfg, wh, calibrated, batch=batch, tile=tile)
            if part == "memory":
                predicted = est.peak
                print(f"| {label} | {predicted / 2**20:.0f} MiB | {peak / 2**20:.0f} MiB | "
                      f"{(predicted - peak) / peak:+.1%} |", flush=True)
            else:
                print(f"| {label} | {est.seconds:.1f} s | {seconds:.1f} s | {(est.seconds - seconds) / seconds:+.1%} |",
                      flush=True)
        print(f"calibration: memory scale {scale:.3f}, {rate / 1e9:.1f} GFLOP/s")
    if args.device == "cuda":
        from stylebatch.autosize import largest_size

        print(f"largest size that fits untiled (memory_fraction 0.8 of {device.free / 2**30:.1f} GiB free): "
              f"{largest_size(Config(optimizer='adam', size=64), wh, replace(device, memory_scale=scale))} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
