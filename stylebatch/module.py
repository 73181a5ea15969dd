"""`StyleTransferModule`: one pair (or a batch of same-size pairs) as a LightningModule.

The optimised image is the module's only parameter; the frozen VGG is shared, registered so
Lightning moves it with the module, and left out of checkpoints (it is rebuilt, not saved).
"""

from __future__ import annotations

from typing import Any, Iterator

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from stylebatch.config import Config
from stylebatch.controls import blended_grams
from stylebatch.losses import content_loss, style_loss, total_variation
from stylebatch.vgg import VGGFeatures

LBFGS_MAX_ITER = 20  # inner iterations per optimizer step: the granularity of stops and checkpoints


class _Forever(IterableDataset):
    """The data of an optimisation whose only 'data' is its parameter: a constant, forever.
    The evaluation budget, not the loader, ends the run."""

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            yield torch.zeros(())


class StyleTransferModule(L.LightningModule):
    """Gatys et al. (2016): optimise the pixels of `target` so its VGG features match the content
    image's at `content_layer` and its Gram matrices match the style image's at `style_layers`.

    content, style: (B, 3, H, W) and (B, 3, h, w) in [0, 1], already on the device; the content and
    style features are computed here, once per pair (two VGG passes), never per step.
    """

    def __init__(self, vgg: VGGFeatures, content: torch.Tensor, style: torch.Tensor | list[torch.Tensor],
                 cfg: Config, init: torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        self.vgg = vgg
        self.strict_loading = False  # checkpoints hold the image and optimizer, not the VGG
        self.evaluations = 0  # loss evaluations (forward+backward); the unit of `steps`
        self.scale = 0  # coarse-to-fine: index of this module's pass in cfg.scale_sizes (engine sets it)
        self.scale_end = cfg.steps  # evaluation count at which this pass ends (engine sets it)

        with torch.no_grad():
            content_target = vgg(content, [cfg.content_layer], pooling=cfg.pooling)[cfg.content_layer]
        grams = blended_grams(vgg, style, cfg)  # one style, or several with cfg.style_blend
        self.register_buffer("content_target", content_target, persistent=False)
        for name, g in grams.items():
            self.register_buffer(f"gram_{name}", g, persistent=False)

        # Departure from the paper: with `normalize_losses`, each term is divided by its target's
        # mean square (per image), making it a relative error. The paper's absolute losses depend on
        # the network's activation scale (4th power for Grams), so weights tuned on one VGG fail on
        # another; relative errors keep one preset meaningful across networks.
        def norm(t: torch.Tensor) -> torch.Tensor:
            if not cfg.normalize_losses:
                return torch.ones(t.shape[0], device=t.device)
            return 1.0 / t.pow(2).flatten(1).mean(1).clamp_min(1e-12)  # (B,)

        self.register_buffer("content_norm", norm(content_target), persistent=False)
        self.layer_weights = {name: cfg.style_layers[name] * norm(g) for name, g in grams.items()}

        if init is not None:  # style_stats, an image file, or the previous scale's result (controls.py)
            init = init.to(content).clone(memory_format=torch.contiguous_format)
        elif cfg.init == "noise":  # white noise, as in the paper; seeded so a pair is reproducible
            gen = torch.Generator().manual_seed(cfg.seed)
            init = torch.rand(content.shape, generator=gen).to(content.device)
        else:
            init = content.clone(memory_format=torch.contiguous_format)  # L-BFGS views grads flat
        self.target = nn.Parameter(init)
        if cfg.ema_decay > 0:  # persistent buffers: the average is in every checkpoint
            self.register_buffer("ema", torch.zeros_like(init))
            self.register_buffer("ema_steps", torch.zeros((), dtype=torch.long, device=init.device))
        self.last_losses: dict[str, torch.Tensor] = {}
        self.restored_losses: dict[str, float] = {}  # from a checkpoint, until the first evaluation

    def style_grams(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, f"gram_{name}") for name in self.cfg.style_layers}

    def losses(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-image (B,) losses of `image`: content, style, tv and the weighted total."""
        cfg = self.cfg
        feats = self.vgg(image, cfg.layers_used, pooling=cfg.pooling)  # bf16 convs under `precision: bf16`
        # Grams and losses always in fp32: a Gram sums H*W products, which bf16's 8-bit mantissa
        # cannot carry. Autocast is switched off here (a .float() inside autocast is not enough:
        # the matmul would be cast back down).
        with torch.autocast(device_type=image.device.type, enabled=False):
            feats = {k: v.float() for k, v in feats.items()}
            c = content_loss(feats[cfg.content_layer], self.content_target) * self.content_norm
            s = style_loss(feats, self.style_grams(), self.layer_weights)
            total = cfg.content_weight * c + cfg.style_weight * s
            out = {"content": c, "style": s}
            if cfg.tv_weight:
                out["tv"] = total_variation(image.float())
                total = total + cfg.tv_weight * out["tv"]
        out["total"] = total
        return out

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.evaluations += 1
        losses = self.losses(self.target)
        self.last_losses = {k: v.detach() for k, v in losses.items()}
        for key in ("content", "style", "total"):
            self.log(key, losses[key].sum().detach(), on_step=True, on_epoch=False, batch_size=1)
        # Per-pair losses are summed, not averaged: each image's gradient is then exactly its own
        # pair's, so a batch of B pairs optimises like B separate runs.
        return losses["total"].sum()

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # Pixel validity: the image is clamped to [0, 1] after each optimizer step: every Adam step,
        # and every L-BFGS step (up to LBFGS_MAX_ITER iterations; never inside one, where the line
        # search and the curvature pairs assume x + t*d). Left unconstrained for a whole run, L-BFGS
        # drifted ever further out of range and the saved (clamped) file lost what it had gained:
        # gatys2016 at 256 px on the shared weights, 500 evaluations, 21 % of pixels outside [0, 1],
        # style loss 0.06 before the file's clamp and 0.62 after (the content image's own: 2.65);
        # clamped per step, the file's style loss was 0.08 (scripts/calibrate.py).
        # Clamped here, inside the step, not in on_train_batch_end: Lightning runs the callbacks'
        # on_train_batch_end (the budget callback's checkpoint) before the module's, so a clamp there
        # came after the checkpoint was written, and a resumed run started from unclamped pixels.
        with torch.no_grad():
            self.target.clamp_(0, 1)
        if self.cfg.ema_decay > 0:  # iterate averaging: one iterate per optimizer step
            with torch.no_grad():
                self.ema.mul_(self.cfg.ema_decay).add_(self.target, alpha=1 - self.cfg.ema_decay)
                self.ema_steps += 1

    def result(self) -> torch.Tensor:
        """The image this pass yields: the bias-corrected EMA of the iterates with `ema_decay`
        (sum_i (1-d) d^(t-i) x_i / (1 - d^t) over the t optimizer steps so far), else the last iterate."""
        if self.cfg.ema_decay > 0 and int(self.ema_steps) > 0:
            return self.ema / (1 - self.cfg.ema_decay ** int(self.ema_steps))
        return self.target.detach()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        cfg = self.cfg
        if cfg.optimizer == "adam":
            return torch.optim.Adam([self.target], lr=cfg.learning_rate)
        return torch.optim.LBFGS(
            [self.target],
            lr=cfg.learning_rate,
            max_iter=LBFGS_MAX_ITER,
            history_size=cfg.lbfgs_history,
            line_search_fn=None if cfg.lbfgs_line_search == "none" else cfg.lbfgs_line_search,
        )

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_Forever(), batch_size=None)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Keep the frozen VGG (76 MiB) out: it is rebuilt from the weights, not saved per pair.
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("vgg.")}
        losses = {k: float(v.sum()) for k, v in self.last_losses.items()}
        checkpoint["stylebatch"] = {"evaluations": self.evaluations, "losses": losses, "scale": self.scale}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.evaluations = int(checkpoint["stylebatch"]["evaluations"])
        self.scale = int(checkpoint["stylebatch"].get("scale", 0))
        self.restored_losses = dict(checkpoint["stylebatch"].get("losses", {}))
