"""`StyleTransferModule`: B images optimised against their own targets, as one LightningModule.

The images are the module's only parameter, (B, 3, H, W); everything else is given to the
constructor: the frozen VGG (shared, registered so Lightning moves it with the module, and left out
of checkpoints: it is rebuilt, not saved), the starting images, the loss targets and weights
(`targets.LossTargets`, (B,) per weight) and the optimizer. A single pair is a batch of one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from stylebatch import geometry
from stylebatch.fit import tiling
from stylebatch.fit.losses import content_loss, style_loss, total_variation
from stylebatch.fit.targets import LossTargets
from stylebatch.fit.vgg import VGGFeatures
from stylebatch.memory import ladder as oom

LBFGS_MAX_ITER = 20  # inner iterations per optimizer step: the granularity of stops and checkpoints
OPTIMIZERS = ("lbfgs", "adam")


class _Forever(IterableDataset):
    """The data of an optimisation whose only 'data' is its parameter: a constant, forever.
    The evaluation budget, not the loader, ends the run."""

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            yield torch.zeros(())


@dataclass(frozen=True)
class OptimizerSpec:
    name: str  # one of OPTIMIZERS
    lr: float
    lbfgs_history: int = 20
    line_search: str | None = "strong_wolfe"

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:  # never silently run an unknown name as something else
            raise ValueError(f"unknown optimizer {self.name!r}; known: {', '.join(OPTIMIZERS)}")


class StyleTransferModule(L.LightningModule):
    """Gatys et al. (2016): optimise the pixels of `init` so each image's VGG features match its
    content image's at the content layer and its Gram matrices match its style's.

    Usable in any `lightning.Trainer` (docs/lightning.md); stylebatch's engine builds one per pass.

    Args:
        vgg: the frozen feature extractor (`fit.vgg.load_vgg`), shared, never trained nor saved.
        init: the starting images (B, 3, H, W) in [0, 1], on the device: the photo, noise, or the
            previous pass's result upsampled. Copied into the module's only parameter, `target`.
        targets: the B pairs' targets and weights (`fit.targets.compute_targets`, one pair;
            `LossTargets.cat` for several of the same size): content features, style Grams,
            alpha, beta, tv and the per-layer weights, each (B,).
        optimizer: `OptimizerSpec(name, lr, lbfgs_history, line_search)`: `adam` or `lbfgs`
            (`engine.optimizer_spec(cfg)` builds it from a Config).
        scale_end: the evaluation count at which this pass ends; the module never stops itself
            (stylebatch's budget callback, or your Trainer's `max_steps`, does).
        pooling: `max` or `avg` (scaled 2x2 average pooling), as the targets were computed with.
        ema_decay: > 0 makes `result()` the bias-corrected moving average of the iterates.
        evaluations: loss evaluations (forward + backward), the unit of `steps`, done before this
            pass (so counts go on across passes and resumes).
        scale: the index of this coarse-to-fine pass (recorded in checkpoints).
        tile: compute the loss tile by tile (tiling.py, exact) when the image is larger than this
            many pixels on a side; None: never.
        tile_seed: seeds the tile grid's offset at each evaluation.
    """

    def __init__(
        self,
        vgg: VGGFeatures,
        init: torch.Tensor,
        targets: LossTargets,
        *,
        optimizer: OptimizerSpec,
        scale_end: int,
        pooling: str = "max",
        ema_decay: float = 0.0,
        evaluations: int = 0,
        scale: int = 0,
        tile: int | None = None,
        tile_seed: int = 0,
    ) -> None:
        super().__init__()
        self.vgg = vgg
        self.tile, self.tile_seed = tile, tile_seed
        self.strict_loading = False  # checkpoints hold the image and optimizer, not the VGG
        self.optimizer_spec, self.pooling, self.ema_decay = optimizer, pooling, ema_decay
        self.evaluations, self.scale, self.scale_end = evaluations, scale, scale_end
        self.content_layer, self.style_layers = targets.content_layer, list(targets.grams)
        # Targets and weights are buffers (they follow the module's device), never saved.
        for name, value in (
            ("content_target", targets.content),
            ("content_scale", targets.content_scale),
            ("alpha", targets.alpha),
            ("beta", targets.beta),
            ("tv", targets.tv),
        ):
            self.register_buffer(name, value, persistent=False)
        for name in self.style_layers:
            self.register_buffer(f"gram_{name}", targets.grams[name], persistent=False)
            self.register_buffer(f"weight_{name}", targets.layer_weights[name], persistent=False)
        self.use_tv = bool((targets.tv > 0).any())
        # contiguous: L-BFGS views the gradient flat
        self.target = nn.Parameter(init.detach().clone(memory_format=torch.contiguous_format))
        if ema_decay > 0:  # persistent buffers: the average is in every checkpoint
            self.register_buffer("ema", torch.zeros_like(self.target))
            self.register_buffer("ema_steps", torch.zeros((), dtype=torch.long, device=init.device))
        self.last_losses: dict[str, torch.Tensor] = {}  # (B,) each, from the latest evaluation
        self.restored_losses: dict[str, torch.Tensor] = {}  # from a checkpoint, until the first evaluation
        oom.track(self)  # so the out-of-memory ladder can check a failed fit's module is gone

    def losses(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-image (B,) losses of `image`: content, style, tv (when any member weighs it), total."""
        grams = {name: getattr(self, f"gram_{name}") for name in self.style_layers}
        weights = {name: getattr(self, f"weight_{name}") for name in self.style_layers}
        tiled = geometry.needs_tiling(*image.shape[-2:], self.tile)
        if tiled:  # the same content and style losses, tile by tile (tiling.py)
            c, s = tiling.TiledLoss.apply(image, self._tiled_objective(image, grams, weights))
        else:
            feats = self.vgg(image, [self.content_layer, *self.style_layers], pooling=self.pooling)
        # Grams and losses always in fp32: a Gram sums H*W products, which bf16's 8-bit mantissa
        # cannot carry. Autocast is switched off here (a .float() inside autocast is not enough:
        # the matmul would be cast back down).
        with torch.autocast(device_type=image.device.type, enabled=False):
            if not tiled:
                feats = {k: v.float() for k, v in feats.items()}
                c = content_loss(feats[self.content_layer], self.content_target) * self.content_scale
                s = style_loss(feats, grams, weights)
            out = {"content": c, "style": s}
            total = self.alpha * c + self.beta * s
            if self.use_tv:
                out["tv"] = total_variation(image.float())
                total = total + self.tv * out["tv"]
        out["total"] = total
        return out

    def _tiled_objective(self, image: torch.Tensor, grams: dict, weights: dict) -> tiling.TiledObjective:
        """This evaluation's tiles: the grid moved by the offset seeded from (tile_seed, evaluations)."""
        layers = [self.content_layer, *self.style_layers]
        h, w = image.shape[-2:]
        offset = tiling.offset_for(self.tile_seed, self.evaluations, self.tile, geometry.grid_unit(layers))
        return tiling.TiledObjective(
            self.vgg,
            self.content_layer,
            self.style_layers,
            self.pooling,
            self.content_target,
            self.content_scale,
            grams,
            weights,
            tiling.grid(h, w, self.tile, geometry.halo(layers), offset),
        )

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.evaluations += 1
        losses = self.losses(self.target)
        self.last_losses = {k: v.detach() for k, v in losses.items()}
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
        # style loss 0.06 before the file's clamp and 0.62 after (the content image's own: 2.65).
        # Clamped here, inside the step, not in on_train_batch_end: Lightning runs the callbacks'
        # on_train_batch_end (the budget callback's checkpoint) before the module's, so a clamp there
        # came after the checkpoint was written, and a resumed run started from unclamped pixels.
        with torch.no_grad():
            self.target.clamp_(0, 1)
            if self.ema_decay > 0:  # iterate averaging: one iterate per optimizer step
                self.ema.mul_(self.ema_decay).add_(self.target, alpha=1 - self.ema_decay)
                self.ema_steps += 1

    def result(self) -> torch.Tensor:
        """The images this pass yields, (B, 3, H, W): the bias-corrected EMA of the iterates with
        `ema_decay` (sum_i (1-d) d^(t-i) x_i / (1 - d^t) over the t optimizer steps so far), else the
        last iterate."""
        if self.ema_decay > 0 and int(self.ema_steps) > 0:
            return self.ema / (1 - self.ema_decay ** int(self.ema_steps))
        return self.target.detach()

    def member_losses(self, i: int) -> dict[str, float]:
        """Member i's own latest losses (restored from the checkpoint before its first evaluation)."""
        losses = self.last_losses or self.restored_losses
        return {k: float(v[i]) for k, v in losses.items()}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        spec = self.optimizer_spec
        if spec.name == "adam":
            return oom.track(torch.optim.Adam([self.target], lr=spec.lr))
        if spec.name == "lbfgs":
            return oom.track(
                torch.optim.LBFGS(
                    [self.target],
                    lr=spec.lr,
                    max_iter=LBFGS_MAX_ITER,
                    history_size=spec.lbfgs_history,
                    line_search_fn=spec.line_search,
                )
            )
        raise ValueError(f"unknown optimizer {spec.name!r}")  # OptimizerSpec refuses it first

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_Forever(), batch_size=None)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Keep the frozen VGG (76 MiB) out: it is rebuilt from the weights, not saved per pair.
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("vgg.")}
        # Each member's own losses, (B,): split per member with the rest of the checkpoint.
        losses = {k: v.detach().cpu() for k, v in (self.last_losses or self.restored_losses).items()}
        checkpoint["stylebatch"] = {"evaluations": self.evaluations, "losses": losses, "scale": self.scale}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        info = checkpoint["stylebatch"]
        self.evaluations = int(info["evaluations"])
        self.scale = int(info.get("scale", 0))
        # Older checkpoints stored the batch's summed floats; read those as one member's.
        self.restored_losses = {
            k: v if isinstance(v, torch.Tensor) else torch.tensor([float(v)]) for k, v in info.get("losses", {}).items()
        }
