"""GPU-only equivalence checks, printed as a table: bf16 autocast vs fp32, and batched vs unbatched
Adam pairs, on the GPU. Run by scripts/gpu_check.sh; exits 1 if a check fails its tolerance."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stylebatch.fit.engine import build_module, module_for  # noqa: E402
from stylebatch.fit.inputs import start_image  # noqa: E402
from stylebatch.fit.module import StyleTransferModule  # noqa: E402
from stylebatch.fit.vgg import load_vgg  # noqa: E402
from stylebatch.job.config import Config  # noqa: E402


def adam(module: StyleTransferModule, steps: int, bf16: bool) -> tuple[torch.Tensor, float]:
    opt = torch.optim.Adam([module.target], lr=0.02)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = module.losses(module.target)["total"].sum()
        loss.backward()
        opt.step()
        with torch.no_grad():
            module.target.clamp_(0, 1)
    torch.cuda.synchronize()
    return module.target.detach(), (time.perf_counter() - t) / steps


def main() -> int:
    assert torch.cuda.is_available(), "needs a GPU"
    dev = torch.device("cuda")
    cfg = Config(optimizer="adam", init="noise")
    vgg = load_vgg("random", cfg.layers_used).to(dev)
    g = torch.Generator().manual_seed(0)
    pairs = [
        (torch.rand(1, 3, 384, 512, generator=g).to(dev), torch.rand(1, 3, 384, 512, generator=g).to(dev))
        for _ in range(8)
    ]
    ok = True
    print("| check | s/eval | max abs diff | mean abs diff | verdict |")
    print("|---|---|---|---|---|")
    ref, t32 = adam(module_for(vgg, *pairs[0], cfg), 100, bf16=False)
    out, t16 = adam(module_for(vgg, *pairs[0], cfg), 100, bf16=True)
    d = (out - ref).abs()
    good = d.mean().item() < 0.02
    ok &= good
    print(f"| fp32, 512 px, 100 Adam evals | {t32:.4f} | - | - | reference |")
    print(
        f"| bf16 autocast vs fp32 | {t16:.4f} | {d.max():.3e} | {d.mean():.3e} | {'PASS' if good else 'FAIL'} (mean < 0.02) |"
    )
    separate = [
        adam(module_for(vgg, c, s, Config(**{**cfg.to_dict(), "seed": i})), 50, False) for i, (c, s) in enumerate(pairs)
    ]
    cfgs = [Config(**{**cfg.to_dict(), "seed": i}) for i in range(len(pairs))]
    batch = build_module(vgg, [(c, [s], k, start_image(c, [s], k)) for (c, s), k in zip(pairs, cfgs)])
    bt, tb = adam(batch, 50, False)
    d = torch.stack([(bt[i : i + 1] - separate[i][0]).abs() for i in range(8)])
    good = d.mean().item() < 5e-3
    ok &= good
    t1 = sum(t for _, t in separate) / 8
    print(f"| unbatched, 8 pairs, 512 px | {t1:.4f} per pair | - | - | reference |")
    print(
        f"| batched B=8 vs unbatched | {tb / 8:.4f} per pair ({t1 / (tb / 8):.2f}x) | {d.max():.3e} | {d.mean():.3e} | "
        f"{'PASS' if good else 'FAIL'} (mean < 5e-3) |"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
