"""The memory and time model (stylebatch/memory/estimate.py) against measurements: each case is one pair run
end to end through `stylebatch run` in a fresh process (random weights), its peak resident set read
with os.wait4 (ru_maxrss: that child's own high-water mark) and its wall time measured.

    .venv/bin/python scripts/memory_model.py                 # memory part (CPU: minutes)
    .venv/bin/python scripts/memory_model.py --part time     # time part: needs an idle machine
    .venv/bin/python scripts/memory_model.py --device cuda   # on a GPU: allocated peak, 512..4096 px
    .venv/bin/python scripts/memory_model.py --big 4096 --tile 1024 --keep runs/big   # one large tiled run

The model is calibrated the way the product calibrates itself (calibration.py), from separate runs
only: the baseline (memory in use before the pair starts) from a tiny 32 px run, and the memory
scale and FLOP rate from the first case ("calibration"); every other case is a prediction. Each
process gets its own empty $XDG_CACHE_HOME, so no run's calibration leaks into another's.
Prints predicted vs measured and the relative error per case (targets: memory within 15 %, time
within 25 %).
"""

from __future__ import annotations

import argparse
import contextlib
import io
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

from stylebatch.job.config import Config  # noqa: E402
from stylebatch.memory.calibration import Device  # noqa: E402
from stylebatch.memory.estimate import estimate, own_bytes, work  # noqa: E402

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


def run_case(overrides: dict, batch: int, device: str, root: Path, weights: str = "random") -> tuple[int, float, dict]:
    """(peak bytes, seconds, the pair's `measured` record) of one `stylebatch run`: in a fresh
    process on CPU (its ru_maxrss), in this one on a GPU (the allocator's peak, reset per pair)."""
    cfg = {"steps": 4, "optimizer": "adam", "checkpoint_every": 10**6, "log_every": 10**6, **overrides}
    if device == "cuda":
        cfg["format"] = "jpg"  # PNG-encoding a 50-megapixel output alone would take most of a minute
    pairs = "".join(f"  - {{content: {CONTENT}, style: {STYLE}, name: p{i}, seed: {i}}}\n" for i in range(batch))
    manifest = root / "job.yaml"
    root.mkdir(parents=True, exist_ok=True)
    manifest.write_text(f"output_dir: out\ndefaults: {json.dumps(cfg)}\npairs:\n{pairs}")
    args = ["run", str(manifest), "--weights", weights, "--accelerator", "gpu" if device == "cuda" else "cpu"]
    t = time.perf_counter()
    if device == "cuda":
        from stylebatch.cli.main import main as cli_main

        os.environ["XDG_CACHE_HOME"] = str(root / "cache")
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = cli_main(args)  # its progress display would bury the table
        rusage_peak = None
    else:
        env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_CACHE_HOME": str(root / "cache")}
        proc = subprocess.Popen(
            [sys.executable, "-m", "stylebatch", *args],
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak, not the max over all children
        code, rusage_peak = os.waitstatus_to_exitcode(status), usage.ru_maxrss * 1024
    seconds = time.perf_counter() - t
    if code != 0:
        detail = proc.stderr.read().decode()[-2000:] if device != "cuda" else ""
        raise SystemExit(f"run failed (exit {code}) for {overrides}: {detail}")
    record = json.loads((root / "out" / ".stylebatch" / "pairs" / "p0" / "state.json").read_text())
    measured = record.get("measured") or {}
    return measured.get("peak_bytes") if device == "cuda" else rusage_peak, seconds, measured


def config_of(overrides: dict) -> Config:
    return Config(**{"steps": 4, "optimizer": "adam", **overrides})


def content_wh() -> tuple[int, int]:
    from PIL import Image

    with Image.open(CONTENT) as im:
        return im.size


def compare(part: str, cases: list, device: Device, baseline: int, floor: int, where: str, wh: tuple) -> Device:
    """Print predicted vs measured for each case; returns the device as the first case calibrated it."""
    print(f"\n## {part}\n| case | predicted | measured | error |\n|---|---|---|---|")
    calibrated = None
    for label, overrides, batch in cases:
        cfg = config_of(overrides)
        tile = cfg.tile if isinstance(cfg.tile, int) else None
        with tempfile.TemporaryDirectory() as tmp:
            try:
                peak, seconds, _ = run_case(overrides, batch, where, Path(tmp))
            except SystemExit as e:
                print(f"| {label} | | failed: {str(e)[:120]} | |", flush=True)
                continue
        if calibrated is None:  # the calibration case: what one run teaches the product
            own, flops = own_bytes(cfg, wh, batch, tile), work(cfg, wh, 0, cfg.steps, batch, tile)
            calibrated = replace(
                device,
                baseline=baseline,
                floor=floor,
                memory_scale=(peak - baseline) / own,
                flop_rate=flops / max(seconds - device.pair_overhead, seconds / 2),
            )
        est = estimate(cfg, wh, calibrated, batch=batch, tile=tile)
        predicted, measured, unit = (
            (est.peak / 2**20, peak / 2**20, "MiB") if part == "memory" else (est.seconds, seconds, "s")
        )
        print(
            f"| {label} | {predicted:.1f} {unit} | {measured:.1f} {unit} | {(predicted - measured) / measured:+.1%} |",
            flush=True,
        )
    if calibrated is not None:
        print(f"calibration: memory scale {calibrated.memory_scale:.3f}, {calibrated.flop_rate / 1e9:.1f} GFLOP/s")
    return calibrated or device


def gpu_largest(device: Device, wh: tuple) -> None:
    """The largest untiled size the calibrated model fits in memory_fraction of free memory, run for real."""
    import torch

    from stylebatch.memory.autosize import largest_size

    torch.cuda.empty_cache()  # the earlier runs' cached blocks are free memory for the next
    free = Device.current("cuda:0").free
    side = largest_size(Config(optimizer="adam", size=64, steps=2), wh, replace(device, free=free))
    est = estimate(config_of({"size": side, "steps": 2}), wh, replace(device, free=free))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            peak, seconds, _ = run_case({"size": side, "steps": 2}, 1, "cuda", Path(tmp))
            outcome = f"ran: peak {peak / 2**30:.1f} GiB ({(est.peak - peak) / peak:+.1%} predicted), {seconds:.0f} s"
        except SystemExit as e:
            outcome = f"FAILED: {str(e)[:200]}"
    print(
        f"largest untiled size for 0.8 of {free / 2**30:.1f} GiB free: {side} px, predicted peak "
        f"{est.peak / 2**30:.1f} GiB; {outcome}"
    )


def gpu_ladder_check(wh: tuple) -> None:
    """A real CUDA out-of-memory error (an allocation larger than the free memory) in every untiled
    evaluation: the ladder frees the failed fit (memory_allocated back to its level before it) and
    finishes the pair tiled."""
    import torch

    from stylebatch.fit.module import StyleTransferModule

    original = StyleTransferModule.training_step

    def step(self, batch, batch_idx):
        if self.tile is None:
            held = torch.empty(64 * 2**20, device=self.device)  # noqa: F841 (what the failed fit holds as it fails)
            torch.empty(torch.cuda.mem_get_info()[0] + 2**30, dtype=torch.uint8, device=self.device)
        return original(self, batch, batch_idx)

    StyleTransferModule.training_step = step
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run_case({"size": 512, "steps": 4}, 1, "cuda", Path(tmp))
            record = json.loads((Path(tmp) / "out" / ".stylebatch" / "pairs" / "p0" / "state.json").read_text())
    except SystemExit as e:
        print(f"ladder check FAILED: {e}")
        return
    finally:
        StyleTransferModule.training_step = original
    rungs = (record.get("memory_fallback") or {}).get("rungs", [])
    ok = record["status"] == "done" and [r["rung"] for r in rungs] == ["tiled"] and all(r["freed"] for r in rungs)
    print(
        f"ladder check on CUDA ({'ok' if ok else 'FAILED'}): status {record['status']}, rungs "
        + "; ".join(
            f"{r['rung']} (allocated {r.get('allocated')} <= before {r.get('baseline')}, "
            f"live objects {r['live_objects']})"
            for r in rungs
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("memory", "time", "both"), default="memory")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--sizes", type=int, nargs="*", default=GPU_SIZES, help="GPU: output sizes")
    parser.add_argument("--big", type=int, metavar="SIZE", help="instead: one run at SIZE px (e.g. 4096), tiled")
    parser.add_argument("--tile", type=int, default=1024, help="--big: the tile size")
    parser.add_argument("--steps", type=int, default=4, help="--big: evaluations")
    parser.add_argument("--weights", default="random", help="--big: VGG weights (random or a file)")
    parser.add_argument("--keep", type=Path, help="--big: keep the run's directory (the picture) here")
    args = parser.parse_args()
    if args.big:
        return big_run(args)
    wh = content_wh()
    device = Device.current("cuda:0" if args.device == "cuda" else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        floor_peak, _, tiny = run_case({"size": 32}, 1, args.device, Path(tmp))
    baseline = tiny.get("start_bytes") or floor_peak
    floor = tiny.get("start_peak_bytes") or baseline
    print(
        f"# memory model vs measured on {device.key}; from a 32 px run: baseline (in use before a pair) "
        f"{baseline / 2**20:.0f} MiB, floor (peak before it) {floor / 2**20:.0f} MiB"
    )
    if args.device == "cuda":  # allocator peaks in this process; the first size calibrates
        cases = [(f"{s} adam", {"size": s}, 1) for s in args.sizes]
        cases += [(f"{s} adam, tile 1024", {"size": s, "tile": 1024}, 1) for s in args.sizes if s > 1024]
        calibrated = compare("memory", cases, device, baseline, floor, "cuda", wh)
        gpu_largest(calibrated, wh)
        gpu_ladder_check(wh)
        return 0
    for part in ["memory", "time"] if args.part == "both" else [args.part]:
        compare(part, MEMORY_CASES if part == "memory" else TIME_CASES, device, baseline, floor, "cpu", wh)
    return 0


def big_run(args: argparse.Namespace) -> int:
    """One large tiled pair end to end: predicted (uncalibrated, this machine's defaults) vs measured."""
    wh = content_wh()
    overrides = {"size": args.big, "tile": args.tile, "steps": args.steps}
    root = args.keep or Path(tempfile.mkdtemp(prefix="stylebatch-big-"))
    device = Device.current("cuda:0" if args.device == "cuda" else "cpu")
    cfg = config_of(overrides)
    est = estimate(cfg, wh, device, tile=args.tile)
    print(
        f"# {args.big} px, tiles of {args.tile}, {args.steps} Adam evaluations, weights {args.weights}, "
        f"on {device.key}: predicted peak {est.peak / 2**30:.2f} GiB, ~{est.seconds / 60:.1f} min",
        flush=True,
    )
    peak, seconds, measured = run_case(overrides, 1, args.device, root, weights=args.weights)
    print(
        f"measured peak {peak / 2**30:.2f} GiB ({(est.peak - peak) / peak:+.1%} predicted), "
        f"{seconds / 60:.1f} min; output {root / 'out' / 'p0.png'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
