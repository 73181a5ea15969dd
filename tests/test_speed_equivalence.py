"""Each CPU-side speed-up leaves results unchanged (within float rounding)."""

from __future__ import annotations

import pytest
import torch

from stylebatch.fit.vgg import load_vgg
from stylebatch.geometry import LAYER_INDEX
from stylebatch.job.config import Config
from tests.jobkit import ForwardCounter, module_for


def _loss_and_grad(vgg, cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    content, style = torch.rand(1, 3, 40, 56, generator=g), torch.rand(1, 3, 48, 48, generator=g)
    module = module_for(vgg, content, style, Config(**{**cfg.to_dict(), "init": "noise"}))
    loss = module.losses(module.target)["total"].sum()
    loss.backward()
    return loss.detach(), module.target.grad.clone()


def test_channels_last_matches_contiguous() -> None:
    # The Gram loss: the layouts differ by float32 rounding only, which the Wasserstein loss's
    # eigendecomposition amplifies on random weights (test_batching checks its exactness in float64).
    cfg = Config(style_loss="gram", style_weight=0.03, tv_weight=0.0)
    fast = load_vgg("random", cfg.layers_used)
    assert fast.channels_last and fast.layers[0].weight.is_contiguous(memory_format=torch.channels_last)
    plain = load_vgg("random", cfg.layers_used)
    plain.channels_last = False
    plain.to(memory_format=torch.contiguous_format)
    loss_a, grad_a = _loss_and_grad(fast, cfg)
    loss_b, grad_b = _loss_and_grad(plain, cfg)
    assert torch.allclose(loss_a, loss_b, rtol=1e-5)
    assert (grad_a - grad_b).abs().max() / grad_b.abs().max() < 1e-4
    assert grad_a.is_contiguous()  # the image parameter stays NCHW (L-BFGS views it flat)


@pytest.mark.slow
def test_in_place_relus_give_bit_identical_losses_gradients_and_pixels() -> None:
    """In-place and out-of-place ReLUs: the same loss and gradient bit for bit (autograd saves the
    ReLU's output either way), so the same pixels after Adam steps, for post-ReLU (the default) and
    pre-ReLU (the paper's conv) layers."""
    for cfg in (Config(), Config(content_layer="conv4_2", style_layers={"conv1_1": 1.0, "relu3_1": 1.0})):
        runs = []
        for inplace in (True, False):
            vgg = load_vgg("random", cfg.layers_used)
            vgg.inplace_relu = inplace
            loss, grad = _loss_and_grad(vgg, cfg)
            g = torch.Generator().manual_seed(8)
            module = module_for(vgg, torch.rand(1, 3, 32, 48, generator=g), torch.rand(1, 3, 32, 32, generator=g), cfg)
            opt = torch.optim.Adam([module.target], lr=0.05)
            for _ in range(5):
                opt.zero_grad()
                module.losses(module.target)["total"].sum().backward()
                opt.step()
            runs.append((loss, grad, module.target.detach().clone()))
        (loss_a, grad_a, pixels_a), (loss_b, grad_b, pixels_b) = runs
        assert torch.equal(loss_a, loss_b) and torch.equal(grad_a, grad_b)
        assert torch.equal(pixels_a, pixels_b)
        assert grad_a.abs().sum() > 0


def test_truncation_does_not_change_results() -> None:
    cfg = Config()
    deepest = max(cfg.layers_used, key=LAYER_INDEX.__getitem__)
    short = load_vgg("random", cfg.layers_used)
    full = load_vgg("random", None)
    assert short.depth == LAYER_INDEX[deepest] + 1 < full.depth
    loss_a, grad_a = _loss_and_grad(short, cfg)
    loss_b, grad_b = _loss_and_grad(full, cfg)
    assert torch.equal(loss_a, loss_b) and torch.equal(grad_a, grad_b)


def test_frozen_weights_get_no_gradient_and_targets_are_not_recomputed() -> None:
    cfg = Config()
    vgg = load_vgg("random", cfg.layers_used)
    with ForwardCounter(vgg) as calls:
        _loss_and_grad(vgg, cfg)
    assert all(p.grad is None and not p.requires_grad for p in vgg.parameters())
    assert calls.n == 3  # content target, style target, one evaluation: targets precomputed, not per step


def test_bf16_autocast_keeps_grams_and_losses_fp32_and_close() -> None:
    """bf16 is a GPU option; the same autocast code path runs on CPU, checked here for dtype and
    closeness (the GPU-side speed and equivalence check is scripts/gpu_check.sh)."""
    cfg = Config()
    vgg = load_vgg("random", cfg.layers_used)
    g = torch.Generator().manual_seed(5)
    content, style = torch.rand(1, 3, 40, 56, generator=g), torch.rand(1, 3, 48, 48, generator=g)
    module = module_for(vgg, content, style, Config(precision="bf16", init="noise"))
    reference = module.losses(module.target)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        mixed = module.losses(module.target)
    assert all(v.dtype == torch.float32 for v in mixed.values())
    for key in ("content", "style"):
        rel = ((mixed[key] - reference[key]).abs() / reference[key].abs().clamp_min(1e-6)).max()
        assert rel < 0.1, f"{key}: bf16 differs by {rel:.3f} relative"
