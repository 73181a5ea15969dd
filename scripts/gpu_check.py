"""The GPU questions in one run, each section timed and bounded (scripts/gpu_check.sh runs it):

    python scripts/gpu_check.py                 # the first GPU: 256 and 512 px
    python scripts/gpu_check.py --dry-run       # CPU, tiny sizes and budgets: every section, in seconds

Sections, per size:
  evaluation vs bare VGG    one evaluation (forward + backward to the image) of the engine (default
                            Wasserstein loss, and with the Gram loss) and of a plain PyTorch Gatys
                            loss next to the bare torchvision VGG19 pass, interleaved
                            (scripts/bench.py's --vs-bare)
  pairs/hour by batch size  `stylebatch run` end to end at batch_size 1, 4, 8, 16 and auto
  peak memory vs estimate   each of those runs' measured peak (its state record) next to the estimate
  fp32 vs bf16              pairs/hour at precision 32 and bf16, and the pictures: mean |pixel
                            difference| (0-255) and scripts/quality.py's yardstick (grain, colour,
                            texture, structure, the Gram scorer) of each, and bf16's relative change
  bundled example           manifests/example.yaml with --devices N for every N the machine has

Uses only torch APIs that torch 2.0 already had (the GPU machines may have another torch than here).
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
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import bench  # noqa: E402  (scripts/bench.py: the side-by-side timing and the manifests)

from stylebatch.cli.main import main as cli  # noqa: E402
from stylebatch.fit.vgg import load_vgg  # noqa: E402
from stylebatch.job.config import Config  # noqa: E402
from stylebatch.memory.autosize import load_job  # noqa: E402  (auto settings resolved, as validate and run do)
from stylebatch.memory.calibration import Device  # noqa: E402
from stylebatch.memory.estimate import estimate  # noqa: E402

SECTIONS = (
    "evaluation vs bare VGG",
    "pairs/hour by batch size",
    "peak memory vs estimate",
    "fp32 vs bf16",
    "bundled example",
)
IMAGES = REPO / "manifests" / "images"
SHARED_WEIGHTS = REPO.parent / "shared" / "weights" / "vgg19_hed_features.pth"


class Report:
    def __init__(self, out: Path | None):
        self.lines: list[str] = []
        self.out = out

    def say(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)
        if self.out:
            self.out.write_text("\n".join(self.lines) + "\n")


def manifest(root: Path, pairs: int, size: int, steps: int, **defaults: object) -> Path:
    """`pairs` pairs of one aspect (3:2, so any of them batch together), Adam, one pass at `size`."""
    contents, styles = ["chelsea.jpg", "coffee.jpg"], ["great_wave.jpg", "starry_night.jpg", "composition_vii.jpg"]
    settings = {"size": size, "steps": steps, "optimizer": "adam", "scales": None, "checkpoint_every": steps}
    settings.update(defaults)
    entries = [
        {"content": str(IMAGES / contents[i % 2]), "style": str(IMAGES / styles[i % 3]), "name": f"p{i}", "seed": i}
        for i in range(pairs)
    ]
    path = root / "job.yaml"
    path.write_text(json.dumps({"output_dir": "out", "defaults": settings, "pairs": entries}))  # JSON is YAML
    return path


def run_cli(path: Path, weights: str, accel: str) -> tuple[float, int]:
    """(seconds, pairs done) of `stylebatch run` in this process (the network's load included)."""
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # its progress lines would bury the report's tables
        code = cli(["run", str(path), "--weights", weights, "--accelerator", accel])
    seconds = time.perf_counter() - t
    done = len(list((path.parent / "out").glob("*.png")))
    if code != 0:
        raise RuntimeError(f"stylebatch run {path}: exit {code}")
    return seconds, done


def records(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (out / ".stylebatch" / "pairs").glob("*/state.json")}


def section_bare(rep: Report, sizes: list[int], vgg, device: torch.device, repeats: int) -> None:
    """The default engine (Wasserstein loss), the engine with the Gram loss and a plain PyTorch Gatys
    evaluation next to the bare pass: the Wasserstein loss's eigendecompositions are the part of an
    evaluation that grows least with the pixels, so on a GPU they may weigh far more than on a CPU."""
    cfg = Config(optimizer="adam")
    variants = ("engine", "engine, Gram loss", "plain PyTorch Gatys (Gram loss)")
    rep.say(
        "| size | bare NCHW s | bare channels_last s | "
        + " | ".join(f"{v} s | / faster bare (best) | median per repeat" for v in variants)
        + " |"
    )
    rep.say("|---|---|---|" + "---|---|---|" * len(variants))
    for size in sizes:
        times = bench.side_by_side(size, vgg, device, cfg, repeats)
        base = min(("bare NCHW", "bare channels_last"), key=lambda k: min(times[k]))
        cells = []
        for v in variants:
            ratios = sorted(e / b for e, b in zip(times[v], times[base]))
            cells.append(
                f"{min(times[v]):.4f} | {min(times[v]) / min(times[base]):.3f} | {ratios[len(ratios) // 2]:.3f}"
            )
        rep.say(
            f"| {size} | {min(times['bare NCHW']):.4f} | {min(times['bare channels_last']):.4f} | "
            + " | ".join(cells)
            + " |"
        )


def section_batches(
    rep: Report, sizes: list[int], batches: list, pairs: int, steps: int, weights: str, accel: str, device: torch.device
) -> list[tuple]:
    """Pairs/hour per batch size; returns (size, batch, measured peak, estimated peak) per run."""
    memory = Device.current(device)
    peaks = []
    rep.say("| size | batch_size | pairs | seconds | pairs/hour | vs batch 1 |")
    rep.say("|---|---|---|---|---|---|")
    for size in sizes:
        base = None
        for bs in batches:
            with tempfile.TemporaryDirectory() as tmp:
                path = manifest(Path(tmp), pairs, size, steps, batch_size=bs)
                seconds, done = run_cli(path, weights, accel)
                pph = done / seconds * 3600
                base = base or pph
                rep.say(f"| {size} | {bs} | {done} | {seconds:.1f} | {pph:.0f} | {pph / base:.2f}x |")
                recs = records(Path(tmp) / "out")
                job = load_job(path, weights=weights, device=str(device))
                by_batch: dict[str, list] = {}
                for p in job.valid_pairs:
                    # Members of one batch share their record's `batch` list; an unbatched pair is its own.
                    key = json.dumps(recs[p.name].get("batch") or p.name)
                    by_batch.setdefault(key, []).append(p)
                for group in by_batch.values():
                    p = group[0]
                    measured = (recs[p.name].get("measured") or {}).get("peak_bytes")
                    est = estimate(p.config, p.content_size, memory, batch=len(group))
                    peaks.append((size, bs, len(group), measured, est.peak))
    return peaks


def section_peaks(rep: Report, peaks: list[tuple]) -> None:
    rep.say("| size | batch_size | members | measured peak MiB | estimate MiB | measured / estimate |")
    rep.say("|---|---|---|---|---|---|")
    seen = set()
    for size, bs, members, measured, est in peaks:
        if (size, bs, members) in seen:
            continue
        seen.add((size, bs, members))
        ratio = f"{measured / est:.2f}" if measured else "n/a (CPU: no new high-water mark)"
        shown = f"{measured / 2**20:.0f}" if measured else "n/a"
        rep.say(f"| {size} | {bs} | {members} | {shown} | {est / 2**20:.0f} | {ratio} |")


def section_precision(rep: Report, sizes: list[int], pairs: int, steps: int, weights: str, accel: str) -> None:
    """fp32 against bf16: pairs/hour, how far apart the pictures are, and the pictures' quality on
    scripts/quality.py's yardstick (measures no preset optimises), the mean over the pairs."""
    import quality  # scripts/quality.py: grain, colour, texture, structure and the Gram scorer

    stick = quality.Yardstick(weights)
    shown = [m for m in quality.MEASURES if m != "tex_shared" or quality.SHARED_WEIGHTS.is_file()]
    rep.say("| size | precision | pairs/hour | mean abs pixel diff vs fp32 (0-255) | " + " | ".join(shown) + " |")
    rep.say("|---|---|---|---|" + "---|" * len(shown))
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            outs, pph = {}, {}
            for precision in ("32", "bf16"):
                root = Path(tmp) / precision
                root.mkdir()
                path = manifest(root, pairs, size, steps, precision=precision, batch_size=1)
                seconds, done = run_cli(path, weights, accel)
                pph[precision], outs[precision] = done / seconds * 3600, root / "out"
                job = load_job(path, weights=weights)
            values: dict[str, list[dict[str, float]]] = {"32": [], "bf16": []}
            diffs = []
            for p in job.valid_pairs:
                files = {k: outs[k] / f"{p.name}.png" for k in outs}
                measured = stick.measure(p.content, p.styles[0], {k: quality.load_output(f) for k, f in files.items()})
                for k in files:
                    values[k].append(measured[k])
                a, b = (np.asarray(Image.open(files[k]).convert("RGB"), dtype=np.float64) for k in ("32", "bf16"))
                diffs.append(float(np.abs(a - b).mean()))
            mean = {k: {m: float(np.mean([v[m] for v in vs])) for m in shown} for k, vs in values.items()}
            for k in ("32", "bf16"):
                diff = f"{np.mean(diffs):.2f} (max pair {max(diffs):.2f})" if k == "bf16" else "0"
                cells = " | ".join(f"{mean[k][m]:.4g}" for m in shown)
                rep.say(f"| {size} | {k} | {pph[k]:.0f} | {diff} | {cells} |")
            rel = " | ".join(f"{mean['bf16'][m] / mean['32'][m] - 1:+.1%}" if mean["32"][m] else "n/a" for m in shown)
            rep.say(f"| {size} | bf16 vs fp32 | {pph['bf16'] / pph['32']:.2f}x | | {rel} |")


def section_example(rep: Report, devices: list[int], weights: str, accel: str, sets: list[str]) -> None:
    rep.say("| --devices | pairs | seconds | pairs/hour |")
    rep.say("|---|---|---|---|")
    for n in devices:
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            cmd = [sys.executable, "-m", "stylebatch", "run", str(REPO / "manifests" / "example.yaml"), "--out", tmp]
            cmd += ["--weights", weights, "--accelerator", accel, "--devices", str(n)]
            for s in sets:
                cmd += ["--set", s]
            proc = subprocess.run(
                cmd,
                cwd=tmp,
                env={**os.environ, "PYTHONPATH": str(REPO)},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            seconds = time.perf_counter() - t
            done = len(list(Path(tmp).glob("*.png")))
            if proc.returncode != 0:
                rep.say(f"| {n} | {done} | {seconds:.1f} | failed: exit {proc.returncode}: {proc.stdout[-300:]!r} |")
                continue
            rep.say(f"| {n} | {done} | {seconds:.1f} | {done / seconds * 3600:.0f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes and budgets: checks every section runs")
    parser.add_argument("--weights", default=None, help="default: the shared HED VGG19 file if present, else random")
    parser.add_argument("--out", type=Path, default=None, help="also write the report here (rewritten as it goes)")
    parser.add_argument("--sections", nargs="*", default=list(SECTIONS), choices=SECTIONS, metavar="NAME")
    args = parser.parse_args(argv)

    dry = args.dry_run
    cuda = torch.cuda.is_available() and not dry
    device = torch.device("cuda:0" if cuda else "cpu")
    accel = "gpu" if cuda else "cpu"
    weights = args.weights or (str(SHARED_WEIGHTS) if SHARED_WEIGHTS.is_file() and not dry else "random")
    # Real: 256 and 512 px, 16 pairs (a batch of 16 has its members), 40 evaluations each (enough for
    # the steady state, short enough that the five batch sizes x two sizes fit the budget).
    sizes = [32, 48] if dry else [256, 512]
    pairs, steps = (2, 2) if dry else (16, 40)
    batches = [1, 2, "auto"] if dry else [1, 4, 8, 16, "auto"]
    q_pairs, q_steps = (1, 2) if dry else (3, 100)
    repeats = 2 if dry else 10
    count = torch.cuda.device_count() if cuda else 1
    example_sets = ["steps=2", "size=32", "scales=null"] if dry else []

    rep = Report(args.out)
    name = torch.cuda.get_device_name(0) if cuda else f"CPU x{torch.get_num_threads()} threads"
    rep.say(
        f"# stylebatch GPU check{' (dry run)' if dry else ''}: {name} ({count} device(s)), torch {torch.__version__}, "
        f"python {sys.version.split()[0]}, weights {Path(weights).name}"
    )
    start = time.perf_counter()
    vgg = load_vgg(weights, Config().layers_used).to(device)
    peaks: list[tuple] = []
    for section in SECTIONS:
        if section not in args.sections:
            continue
        t = time.perf_counter()
        rep.say()
        rep.say(f"## {section}")
        try:
            if section == "evaluation vs bare VGG":
                section_bare(rep, sizes, vgg, device, repeats)
            elif section == "pairs/hour by batch size":
                rep.say(f"({pairs} pairs of 3:2 photos, {steps} Adam evaluations each, one pass at the size)")
                peaks = section_batches(rep, sizes, batches, pairs, steps, weights, accel, device)
            elif section == "peak memory vs estimate":
                section_peaks(rep, peaks)
            elif section == "fp32 vs bf16":
                rep.say(f"({q_pairs} pairs, {q_steps} Adam evaluations, batch_size 1; scripts/quality.py's measures)")
                section_precision(rep, sizes, q_pairs, q_steps, weights, accel)
            elif section == "bundled example":
                section_example(rep, list(range(1, count + 1)), weights, accel, example_sets)
        except Exception as e:  # noqa: BLE001  (one failing section must not hide the others' figures)
            rep.say(f"section failed: {type(e).__name__}: {e}")
        rep.say(f"({section}: {time.perf_counter() - t:.0f} s)")
    rep.say()
    rep.say(f"total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
