"""Speed and memory of the engine against the hardware floor, on the current device.

    python scripts/bench.py                      # CPU here: sizes 128 256 512
    python scripts/bench.py --sizes 256 --evals 5
    python scripts/bench.py --out bench.txt      # also write the table to a file

For each size it prints: seconds per loss evaluation (forward + backward to the image, the unit of
`steps`), peak memory (RSS high-water mark on CPU, torch.cuda.max_memory_allocated on GPU),
checkpoint bytes per pair (Adam and L-BFGS), the FLOPs of one evaluation (analytic, cross-checked
with torch.utils.flop_counter.FlopCounterMode) and the floor = FLOPs / the device's measured peak
(best of several runs of a 3x3 conv 256->256 on 1x256x64x64 and a 4096^2 fp32 matmul). Then pairs
per hour end to end on a small manifest (load, save, checkpoints included). The output format is
stable so runs compare.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from stylebatch.fit.engine import module_for  # noqa: E402
from stylebatch.fit.module import StyleTransferModule  # noqa: E402
from stylebatch.fit.vgg import load_vgg  # noqa: E402
from stylebatch.geometry import LAYER_INDEX, LAYER_NAMES, VGG19_CFG  # noqa: E402
from stylebatch.job.config import Config  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def best_time(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up (allocations, kernel selection)
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def measure_peak(device: torch.device, repeats: int) -> dict[str, float]:
    """FLOP/s of fixed reference kernels; the best is the device's practical peak."""
    out = {}
    conv = torch.nn.Conv2d(256, 256, 3, padding=1, bias=False).to(device).requires_grad_(False)
    x = torch.randn(1, 256, 64, 64, device=device)
    flops = 2 * 256 * 256 * 9 * 64 * 64
    out["conv3x3 fp32"] = flops / best_time(lambda: conv(x), device, repeats)
    n = 4096
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    out["matmul4096 fp32"] = 2 * n**3 / best_time(lambda: a @ b, device, max(2, repeats // 2))
    if device.type == "cuda":
        a16, b16 = a.bfloat16(), b.bfloat16()
        out["matmul4096 bf16"] = 2 * n**3 / best_time(lambda: a16 @ b16, device, repeats)
    return out


def conv_layers(h: int, w: int, cfg: Config):
    """(name, C_in, C_out, H, W) of each conv up to the deepest layer `cfg` uses, at an h x w input."""
    deepest = max(LAYER_INDEX[n] for n in cfg.layers_used)
    cin, hh, ww, i = 3, h, w, 0
    for item in VGG19_CFG:
        if i > deepest:
            return
        if item == "M":
            hh, ww, i = hh // 2, ww // 2, i + 1
            continue
        yield LAYER_NAMES[i], cin, item, hh, ww
        cin, i = item, i + 2


def analytic_flops(h: int, w: int, cfg: Config) -> float:
    """Convs up to the deepest used layer: forward 2*Cin*Cout*9*H*W each, backward to the input
    the same again (weights frozen: no weight gradient), plus the Gram matmuls (one forward, one
    backward: losses._Gram) and nothing for ReLU/pool (memory-bound, negligible FLOPs)."""
    total = 0.0
    for name, cin, cout, hh, ww in conv_layers(h, w, cfg):
        # the first conv's backward to its input is needed too (the input is the optimised image)
        total += 2 * (2 * cin * cout * 9 * hh * ww)
        if name in cfg.style_layers:
            total += 2 * 2 * cout * cout * hh * ww  # G = F F^T forward, dF = (dG + dG^T) F backward
    return total


def counted_flops(module: StyleTransferModule) -> float:
    with FlopCounterMode(display=False) as counter:
        module.losses(module.target)["total"].sum().backward()
    module.target.grad = None
    return float(counter.get_total_flops())


def rss_hwm_reset() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux)
    except OSError:
        pass


def rss_hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def checkpoint_bytes(module: StyleTransferModule, optimizer: str, cfg: Config) -> int:
    """Bytes of what a checkpoint holds after a few steps: image + optimizer state (no VGG)."""
    module.cfg = Config(**{**cfg.to_dict(), "optimizer": optimizer})
    opt = module.configure_optimizers()

    def closure():
        opt.zero_grad()
        loss = module.losses(module.target)["total"].sum()
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    buf = io.BytesIO()
    torch.save({"state_dict": {"target": module.target.detach()}, "optimizer_states": [opt.state_dict()]}, buf)
    return buf.tell()


def bench_size(
    size: int, vgg, device: torch.device, cfg: Config, evals: int, compile_mode: str | None = None
) -> dict[str, float]:
    h, w = size * 3 // 4, size  # a 4:3 landscape, like most photos
    gen = torch.Generator().manual_seed(0)
    content = torch.rand(1, 3, h, w, generator=gen).to(device)
    style = torch.rand(1, 3, h, w, generator=gen).to(device)
    rss_hwm_reset()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    module = module_for(vgg, content, style, cfg).to(device)

    def evaluation():
        module.losses(module.target)["total"].sum().backward()
        module.target.grad = None

    seconds = best_time(evaluation, device, evals)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else rss_hwm_mib()
    bare = bare_vgg_seconds(vgg, content, cfg, evals)
    compiled = float("nan")
    if compile_mode:
        # The extractor's call counter is a Python int: without this every call would recompile.
        torch._dynamo.config.allow_unspec_int_on_nn_module = True
        losses = torch.compile(module.losses, mode=None if compile_mode == "default" else compile_mode)

        def compiled_evaluation():
            losses(module.target)["total"].sum().backward()
            module.target.grad = None

        compiled = best_time(compiled_evaluation, device, evals)
    flops = analytic_flops(h, w, cfg)
    counted = counted_flops(module) if device.type == "cpu" or size <= 512 else float("nan")
    ckpt_adam = checkpoint_bytes(module, "adam", cfg)
    ckpt_lbfgs = checkpoint_bytes(module, "lbfgs", cfg)
    return {
        "h": h,
        "w": w,
        "seconds": seconds,
        "bare": bare,
        "compiled": compiled,
        "peak_mib": peak,
        "flops": flops,
        "counted": counted,
        "ckpt_adam": ckpt_adam,
        "ckpt_lbfgs": ckpt_lbfgs,
    }


def bare_vgg_seconds(vgg, image: torch.Tensor, cfg: Config, evals: int) -> float:
    """The same convolutions as plain PyTorch: torchvision's layers (the engine's own weights) up to
    the deepest used layer, channels_last, forward and backward to the input, no losses. What the
    engine would cost with nothing but the network."""
    deepest = max(LAYER_INDEX[n] for n in cfg.layers_used)
    net = torch.nn.Sequential(*vgg.layers[: deepest + 1])
    x = image.clone().contiguous(memory_format=torch.channels_last).requires_grad_()

    def evaluation():
        net(x).sum().backward()
        x.grad = None

    return best_time(evaluation, image.device, evals)


def torchvision_bare(vgg, cfg: Config, channels_last: bool) -> torch.nn.Module:
    """torchvision's own VGG19 `features` (its in-place ReLUs) up to the deepest used layer, with the
    engine's weights: the bare eager pass users would write themselves."""
    import torchvision

    deepest = max(LAYER_INDEX[n] for n in cfg.layers_used)
    with torch.device("meta"):
        net = torchvision.models.vgg19().features[: deepest + 1]
    net = net.to_empty(device=vgg.mean.device)
    state = {k.removeprefix("layers."): v for k, v in vgg.state_dict().items() if k.startswith("layers.")}
    net.load_state_dict({k: v for k, v in state.items() if int(k.split(".")[0]) <= deepest})
    net.eval().requires_grad_(False)
    return net.to(memory_format=torch.channels_last) if channels_last else net


def plain_gatys(vgg, cfg: Config, content: torch.Tensor, style: torch.Tensor):
    """One evaluation of the Gatys loss as users write it in plain PyTorch: torchvision's VGG19 (its
    in-place ReLUs, channels_last) run once, its outputs at the used layers picked up on the way,
    Grams by torch.bmm, MSEs and a total-variation term. The yardstick for what the engine adds
    around the same arithmetic (its own Gram function, per-image losses, the Trainer aside)."""
    net = torchvision_bare(vgg, cfg, channels_last=True)
    wanted = {LAYER_INDEX[n]: n for n in cfg.layers_used}
    mean, std = vgg.mean, vgg.std

    def features(x: torch.Tensor) -> dict[str, torch.Tensor]:
        out, x = {}, ((x - mean) / std).contiguous(memory_format=torch.channels_last)
        for i, layer in enumerate(net):
            x = layer(x)
            if i in wanted:
                out[wanted[i]] = x.clone() if isinstance(layer, torch.nn.Conv2d) else x  # the next ReLU is in place
        return out

    def gram(f: torch.Tensor) -> torch.Tensor:
        b, c, h, w = f.shape
        f = f.reshape(b, c, h * w)
        return torch.bmm(f, f.transpose(1, 2)) / (h * w)

    with torch.no_grad():
        fc, fs = features(content), features(style)
        content_t = fc[cfg.content_layer]
        grams_t = {n: gram(fs[n]) for n in cfg.style_layers}
    x = content.clone().requires_grad_()

    def evaluation():
        f = features(x)
        loss = cfg.content_weight * torch.nn.functional.mse_loss(f[cfg.content_layer], content_t)
        loss = loss + cfg.style_weight * sum(
            torch.nn.functional.mse_loss(gram(f[n]), grams_t[n]) for n in cfg.style_layers
        )
        tv = (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean() + (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean()
        (loss + cfg.tv_weight * tv).backward()
        x.grad = None

    return evaluation


def side_by_side(size: int, vgg, device: torch.device, cfg: Config, repeats: int) -> dict[str, list[float]]:
    """Seconds of one evaluation (forward + backward to the image) of: the engine, the engine with
    out-of-place ReLUs (the extractor before it ran them in place), and the bare torchvision VGG19
    to the deepest used layer in NCHW and in channels_last. Interleaved: each repeat runs every
    variant once, in a rotating order, so a change in the machine's load reaches them all alike."""
    h, w = size * 3 // 4, size
    gen = torch.Generator().manual_seed(0)
    content = torch.rand(1, 3, h, w, generator=gen).to(device)
    style = torch.rand(1, 3, h, w, generator=gen).to(device)
    module = module_for(vgg, content, style, cfg).to(device)
    # The same engine with the Gram loss: what the engine adds to the bare pass apart from the
    # Wasserstein loss's own arithmetic (its float64 eigendecompositions and covariance products).
    gram = module_for(vgg, content, style, Config(**{**cfg.to_dict(), "style_loss": "gram"})).to(device)

    def engine(inplace: bool, module=module):
        def evaluation():
            vgg.inplace_relu = inplace
            try:
                module.losses(module.target)["total"].sum().backward()
            finally:
                vgg.inplace_relu = True
            module.target.grad = None

        return evaluation

    def bare(channels_last: bool):
        net = torchvision_bare(vgg, cfg, channels_last)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        x = content.clone().contiguous(memory_format=fmt).requires_grad_()

        def evaluation():
            net(x).sum().backward()
            x.grad = None

        return evaluation

    fns = {
        "engine": engine(True),
        "engine, out-of-place ReLUs": engine(False),
        "engine, Gram loss": engine(True, gram),
        "bare NCHW": bare(False),
        "bare channels_last": bare(True),
        "plain PyTorch Gatys (Gram loss)": plain_gatys(vgg, cfg, content, style),
    }
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm-up (allocations, kernel selection)
    sync(device)
    names = list(fns)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t = time.perf_counter()
            fns[name]()
            sync(device)
            times[name].append(time.perf_counter() - t)
    return times


def trainer_step_vs_bare(
    size: int, vgg, device: torch.device, cfg: Config, steps: int
) -> tuple[list[float], list[float]]:
    """(seconds per optimizer step of `engine.stylize` in its Lightning Trainer, seconds per bare
    torchvision pass), interleaved: after each step the bare pass runs once, inside a callback, and
    is subtracted from the step-to-step interval. One Adam pair, one pass at `size` (no scales)."""
    from PIL import Image

    from stylebatch.fit import engine

    gen = torch.Generator().manual_seed(0)
    h, w = size * 3 // 4, size
    bare_net = torchvision_bare(vgg, cfg, channels_last=True)
    x = torch.rand(1, 3, h, w, generator=gen).to(device).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    steps_s: list[float] = []
    bare_s: list[float] = []

    class Timer(L.Callback):
        last: float | None = None
        inside = 0.0

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            sync(device)
            now = time.perf_counter()
            if self.last is not None:
                steps_s.append(now - self.last - self.inside)
            self.last = now

        def on_train_batch_end(self, trainer, module, *args):
            sync(device)
            t = time.perf_counter()
            bare_net(x).sum().backward()
            x.grad = None
            sync(device)
            self.inside = time.perf_counter() - t
            bare_s.append(self.inside)

    make_trainer = engine._trainer

    def with_timer(device_, cfg_, callbacks, *rest, **kwargs):
        return make_trainer(device_, cfg_, [*callbacks, Timer()], *rest, **kwargs)

    run_cfg = Config(**{**cfg.to_dict(), "size": size, "scales": None, "steps": steps + 2, "checkpoint_every": 10**6})
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in ("content", "style"):
            pixels = (torch.rand(h, w, 3, generator=gen) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(root / f"{name}.png")
        member = engine.Member(
            root / "content.png",
            [root / "style.png"],
            run_cfg,
            root / "ck" / "pair.ckpt",
            root / "out.png",
            {},
            engine.PairHooks(),
        )
        engine._trainer = with_timer
        try:
            engine.stylize([member], vgg, device)
        finally:
            engine._trainer = make_trainer
    return steps_s[1:], bare_s[1:]  # the first interval holds the optimizer's state allocation


def layer_gain(device: torch.device, size: int, batch: int, cfg: Config, repeats: int) -> list[tuple]:
    """Per conv layer: forward + backward to the input, ms per image alone and in a batch of `batch`.
    Explains batching from the layer shapes: late layers (few positions, many channels) are small
    GEMMs that a batch fills; the early ones are already large."""
    rows = []
    for name, cin, cout, hh, ww in conv_layers(size * 3 // 4, size, cfg):
        conv = torch.nn.Conv2d(cin, cout, 3, padding=1).to(device).requires_grad_(False)
        conv = conv.to(memory_format=torch.channels_last)
        per_image = []
        for b in (1, batch):
            x = torch.rand(b, cin, hh, ww, device=device).contiguous(memory_format=torch.channels_last)
            x.requires_grad_()

            def step():
                conv(x).sum().backward()  # noqa: B023 (called at once, inside the loop)
                x.grad = None  # noqa: B023

            per_image.append(best_time(step, device, repeats) / b * 1000)
        rows.append((name, f"{cin}->{cout}", f"{hh}x{ww}", per_image[0], per_image[1]))
    return rows


def pairs_per_hour(device: str, pairs: int, size: int, steps: int, batch_size: int = 1) -> float:
    """End to end through the CLI on a small manifest: load, optimise, checkpoint, save."""
    from PIL import Image

    from stylebatch.cli.main import main

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest = _write_manifest(root, pairs, size, steps, batch_size)
        t = time.perf_counter()
        code = main(["run", str(manifest), "--weights", "random", "--accelerator", device])
        elapsed = time.perf_counter() - t
        assert code == 0 and len(list((root / "out").glob("*.png"))) == pairs
        Image.open(next((root / "out").glob("*.png"))).verify()
    return pairs / elapsed * 3600


JOBS = {
    # name: (manifest, preset or None, what it shows)
    "ratio_sweep": ("manifests/ratio_sweep.yaml", None, "the paper's α/β figure: one pair, four style weights"),
    "modern": ("manifests/bench_modern.yaml", "modern", "coarse-to-fine + EMA: 2 contents x 2 styles"),
}


def job_pairs_per_hour(
    job: str, size: int, steps: int | None, batch_size: int, accel: str = "cpu"
) -> tuple[float, int]:
    """(pairs/hour, pairs) of a bundled manifest end to end through the CLI (load, optimise,
    checkpoints, save), at `size`, with `batch_size` (1: unbatched)."""
    from stylebatch.cli.main import main

    manifest, preset, _ = JOBS[job]
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "run",
            str(REPO / manifest),
            "--weights",
            "random",
            "--accelerator",
            accel,
            "--out",
            tmp,
            "--set",
            f"size={size}",
            "--set",
            f"batch_size={batch_size}",
        ]
        args += ["--config", preset] if preset else []
        args += ["--set", f"steps={steps}"] if steps else []
        t = time.perf_counter()
        code = main(args)
        elapsed = time.perf_counter() - t
        pairs = len(list(Path(tmp).glob("*.png")))
        assert code == 0 and pairs > 0, f"{job}: exit {code}"
    return pairs / elapsed * 3600, pairs


def _write_manifest(root: Path, pairs: int, size: int, steps: int, batch_size: int = 1) -> Path:
    images = REPO / "manifests" / "images"
    contents = ["chelsea.jpg", "coffee.jpg"]  # same aspect ratio (3:2): batchable together
    styles = ["great_wave.jpg", "starry_night.jpg", "composition_vii.jpg"]
    lines = [
        "output_dir: out",
        f"defaults: {{size: {size}, steps: {steps}, optimizer: adam, checkpoint_every: {max(1, steps // 2)}, "
        f"batch_size: {batch_size}}}",
        "pairs:",
    ]
    for i in range(pairs):
        lines.append(
            f"  - {{content: {images / contents[i % 2]}, style: {images / styles[i % 3]}, name: p{i}, seed: {i}}}"
        )
    path = root / f"m{batch_size}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def per_pair_overhead(pairs: int = 20, size: int = 32, steps: int = 10) -> tuple[float, float]:
    """(seconds per pair end to end, seconds per pair outside the optimisation steps) on tiny pairs:
    validation, image loading, Trainer construction, targets, checkpoints, saving, state records."""
    from stylebatch.cli.main import main as cli_main

    # One thread for both measurements: tiny convolutions gain nothing from a second one, and on a
    # busy machine OpenMP's spinning workers make them erratic (both sides must match anyway).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = Config(optimizer="adam", size=size)
    vgg = load_vgg("random", cfg.layers_used)
    content = torch.rand(1, 3, size * 2 // 3, size)
    module = module_for(vgg, content, content, cfg)

    def evaluation():
        module.losses(module.target)["total"].sum().backward()
        module.target.grad = None

    t_eval = best_time(evaluation, torch.device("cpu"), 10)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = _write_manifest(Path(tmp), pairs, size, steps)
        t = time.perf_counter()
        assert cli_main(["run", str(manifest), "--weights", "random", "--accelerator", "cpu"]) == 0
        per_pair = (time.perf_counter() - t) / pairs
    torch.set_num_threads(threads)
    return per_pair, per_pair - steps * t_eval


def e2e_peak_rss(size: int, steps: int, pairs: int = 1, batch_size: int = 1) -> tuple[float, float]:
    """(peak RSS MiB, seconds) of `pairs` Adam pairs at `size` px run end to end through the CLI in a
    fresh process: weights, image loading, optimisation, checkpoint saves and the output files."""
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        manifest = _write_manifest(Path(tmp), pairs, size, steps, batch_size)
        t = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "stylebatch", "run", str(manifest), "--weights", "random", "--accelerator", "cpu"],
            cwd=tmp,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL,
        )
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak, not the max over all children
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - t
        assert proc.returncode == 0 and len(list((Path(tmp) / "out").glob("*.png"))) == pairs
    return usage.ru_maxrss / 1024, seconds


def workers_pairs_per_hour(devices: int, pairs: int, size: int, steps: int) -> float:
    """Pairs per hour with `devices` CPU worker processes (Lightning Fabric), process start included."""
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        manifest = _write_manifest(Path(tmp), pairs, size, steps)
        t = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "stylebatch",
                "run",
                str(manifest),
                "--weights",
                "random",
                "--accelerator",
                "cpu",
                "--devices",
                str(devices),
            ],
            check=True,
            cwd=tmp,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL,
        )
        return pairs / (time.perf_counter() - t) * 3600


def report_vs_bare(sizes: list[int], vgg, device: torch.device, cfg: Config, repeats: int, say) -> None:
    """The side-by-side table: best seconds of each variant, and the ratios to the faster bare
    layout as the best-to-best ratio and the median of the per-repeat ratios (same repeat, same load)."""
    say(f"side by side with the bare torchvision VGG19 pass to {max(cfg.layers_used, key=LAYER_INDEX.__getitem__)}")
    say(
        f"(forward + backward to the image, {repeats} interleaved repeats; engine: the default {cfg.style_loss} loss; load average before: {_load()})"
    )
    say("| size | HxW | variant | best s | ratio best/best | median ratio per repeat |")
    say("|---|---|---|---|---|---|")
    for size in sizes:
        times = side_by_side(size, vgg, device, cfg, repeats)
        base = min(("bare NCHW", "bare channels_last"), key=lambda k: min(times[k]))
        for name, ts in times.items():
            ratios = sorted(t / b for t, b in zip(ts, times[base]))
            say(
                f"| {size} | {size * 3 // 4}x{size} | {name}{' (reference)' if name == base else ''} | {min(ts):.4f} | "
                f"{min(ts) / min(times[base]):.3f} | {ratios[len(ratios) // 2]:.3f} |"
            )
        plain, mine = times["plain PyTorch Gatys (Gram loss)"], times["engine, Gram loss"]
        ratios = sorted(t / b for t, b in zip(mine, plain))
        say(
            f"| {size} | {size * 3 // 4}x{size} | engine, Gram loss vs plain PyTorch Gatys (same arithmetic) | "
            f"{min(mine):.4f} | {min(mine) / min(plain):.3f} | {ratios[len(ratios) // 2]:.3f} |"
        )
        step_s, bare_s = trainer_step_vs_bare(size, vgg, device, cfg, repeats)
        ratios = sorted(t / b for t, b in zip(step_s, bare_s))
        say(
            f"| {size} | {size * 3 // 4}x{size} | `run`'s Adam step in the Trainer (vs bare channels_last) | "
            f"{min(step_s):.4f} | {min(step_s) / min(bare_s):.3f} | {ratios[len(ratios) // 2]:.3f} |"
        )
    say(f"load average after: {_load()}")
    say()


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=None, help="per-evaluation table sizes (none: skip)")
    parser.add_argument("--evals", type=int, default=5, help="timed evaluations per size (best is kept)")
    parser.add_argument("--weights", default="random")
    parser.add_argument("--e2e-pairs", type=int, default=6)
    parser.add_argument("--e2e-sizes", type=int, nargs="*", default=[128])
    parser.add_argument(
        "--layer-gain",
        type=int,
        nargs=2,
        metavar=("SIZE", "BATCH"),
        default=None,
        help="also time each conv layer alone and in a batch (explains the batching gain)",
    )
    parser.add_argument("--e2e-steps", type=int, default=20)
    parser.add_argument(
        "--batch-sizes", type=int, nargs="*", default=[1, 4], help="end-to-end runs at these batch sizes"
    )
    parser.add_argument("--workers", type=int, nargs="*", default=[], help="also measure pairs/hour with N CPU workers")
    parser.add_argument("--overhead", action="store_true", help="also measure per-pair overhead on 20 tiny pairs")
    parser.add_argument(
        "--memory-e2e",
        nargs="*",
        default=[],
        metavar="SIZE[xBATCH]",
        help="also run one pair of this size (or a batch of BATCH pairs: 512x4) end to end in a "
        "fresh process; print its peak RSS",
    )
    parser.add_argument(
        "--compile",
        nargs="?",
        const="default",
        default=None,
        metavar="MODE",
        help="also time the losses under torch.compile (bench only: compiling takes minutes)",
    )
    parser.add_argument(
        "--jobs",
        nargs="*",
        default=[],
        choices=sorted(JOBS),
        help="pairs/hour of bundled jobs, unbatched vs batched (batch_size 4), at --job-sizes",
    )
    parser.add_argument("--job-sizes", type=int, nargs="*", default=[128, 256])
    parser.add_argument("--job-steps", type=int, default=None, help="override the jobs' evaluation budget")
    parser.add_argument(
        "--vs-bare",
        type=int,
        nargs="*",
        default=[],
        metavar="SIZE",
        help="the engine's evaluation and Trainer step side by side with the bare torchvision VGG19 pass "
        "(interleaved, --repeats each)",
    )
    parser.add_argument("--repeats", type=int, default=9, help="interleaved repeats for --vs-bare")
    parser.add_argument("--out", help="also write the report to this file")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sizes = (
        args.sizes if args.sizes is not None else ([128, 256, 512, 1024] if device.type == "cuda" else [128, 256, 512])
    )
    cfg = Config(optimizer="adam")
    vgg = load_vgg(args.weights, cfg.layers_used).to(device)
    lines = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    say(f"# stylebatch bench: {name}, torch {torch.__version__}, weights {args.weights}")
    peaks = measure_peak(device, repeats=5)
    for kernel, value in peaks.items():
        say(f"peak {kernel:<16} {value / 1e9:10.1f} GFLOP/s")
    peak = max(v for k, v in peaks.items() if "bf16" not in k)
    say(f"floor uses the best fp32 peak: {peak / 1e9:.1f} GFLOP/s")
    say()
    say(
        "| size | HxW | s/eval | floor s | ratio | bare VGG s | ratio bare | GFLOP analytic | GFLOP counted "
        "| peak MiB | ckpt Adam KiB | ckpt L-BFGS KiB |"
    )
    say("|---|---|---|---|---|---|---|---|---|---|---|---|")
    compiled_lines: list[str] = []
    if args.vs_bare:
        report_vs_bare(args.vs_bare, vgg, device, cfg, args.repeats, say)
    for size in sizes:
        r = bench_size(size, vgg, device, cfg, args.evals, args.compile)
        floor = r["flops"] / peak
        if args.compile:
            compiled_lines.append(
                f"torch.compile({args.compile}) at {size} px: {r['compiled']:.4f} s/eval, "
                f"{r['compiled'] / floor:.2f}x the floor ({r['seconds'] / r['compiled']:.2f}x eager)"
            )
        say(
            f"| {size} | {r['h']}x{r['w']} | {r['seconds']:.4f} | {floor:.4f} | {r['seconds'] / floor:.2f} | "
            f"{r['bare']:.4f} | {r['bare'] / floor:.2f} | "
            f"{r['flops'] / 1e9:.2f} | {r['counted'] / 1e9:.2f} | {r['peak_mib']:.0f} | "
            f"{r['ckpt_adam'] / 1024:.0f} | {r['ckpt_lbfgs'] / 1024:.0f} |"
        )
    for line in compiled_lines:
        say(line)
    say()
    for spec in args.memory_e2e:
        size, _, batch = spec.partition("x")
        size, batch = int(size), int(batch or 1)
        rss, seconds = e2e_peak_rss(size, steps=4, pairs=batch, batch_size=batch)
        what = f"one {size} px Adam pair" if batch == 1 else f"{batch} {size} px Adam pairs batched"
        say(
            f"{what} end to end in a fresh process (4 evaluations, a checkpoint every 2, output saved): "
            f"peak RSS {rss:.0f} MiB, {seconds:.1f} s"
        )
    if args.layer_gain:
        size, b = args.layer_gain
        say(f"per conv layer at {size} px, forward + backward to the input, ms per image: alone vs batch of {b}")
        say(f"| layer | channels | HxW | ms alone | ms in batch {b} | gain |")
        say("|---|---|---|---|---|---|")
        # Each call takes milliseconds: best of more runs than the evaluation timings.
        for name, ch, hw, alone, batched in layer_gain(device, size, b, cfg, max(20, 4 * args.evals)):
            say(f"| {name} | {ch} | {hw} | {alone:.2f} | {batched:.2f} | {alone / batched:.2f}x |")
        say()
    accel = device.type if device.type == "cpu" else "gpu"
    for e2e_size in args.e2e_sizes:
        base = None
        for bs in args.batch_sizes:
            pph = pairs_per_hour(accel, args.e2e_pairs, e2e_size, args.e2e_steps, batch_size=bs)
            base = base or pph
            label = "unbatched" if bs == 1 else f"batch_size {bs}"
            say(
                f"end to end, {args.e2e_pairs} pairs at {e2e_size} px x {args.e2e_steps} Adam evaluations, "
                f"{label}: {pph:.0f} pairs/hour ({pph / base:.2f}x the first)"
            )
    for n in args.workers:
        pph = workers_pairs_per_hour(n, args.e2e_pairs, args.e2e_sizes[0], args.e2e_steps)
        say(
            f"end to end with {n} CPU worker process(es), {args.e2e_pairs} pairs at {args.e2e_sizes[0]} px x "
            f"{args.e2e_steps} evaluations: {pph:.0f} pairs/hour"
        )
    for job in args.jobs:
        for size in args.job_sizes:
            alone, pairs = job_pairs_per_hour(job, size, args.job_steps, 1, accel)
            batched, _ = job_pairs_per_hour(job, size, args.job_steps, 4, accel)
            budget = f"{args.job_steps} evaluations" if args.job_steps else "its own evaluation budget"
            say(
                f"{job} ({JOBS[job][2]}), {pairs} pairs at {size} px, {budget}: unbatched {alone:.0f} pairs/hour, "
                f"batch_size 4 {batched:.0f} pairs/hour ({batched / alone:.2f}x)"
            )
    if args.overhead:
        per_pair, overhead = per_pair_overhead()
        say(
            f"per-pair overhead (20 pairs, 32 px, 10 Adam evaluations): {per_pair * 1000:.0f} ms per pair, "
            f"of which {overhead * 1000:.0f} ms outside the optimisation steps"
        )
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
