"""What a pass's images are compared with, and how much each loss term weighs, per pair.

`compute_targets` turns one pair's pass inputs (content and style tensors) and its config into
`LossTargets`: the content features, the (blended) style Gram matrices, and every weight as a (1,)
tensor. `LossTargets.cat` joins members along the batch, so a batch of pairs with different α, β,
TV or per-layer weights is one module with (B,) weights.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from stylebatch import geometry
from stylebatch.errors import WeightsError
from stylebatch.fit import tiling
from stylebatch.fit.losses import feature_moments, gram_matrix
from stylebatch.fit.vgg import VGGFeatures
from stylebatch.job.config import Config


def blend_weights(cfg: Config, n: int) -> list[float]:
    if cfg.style_blend is None:
        return [1.0 / n] * n
    if len(cfg.style_blend) != n:
        raise ValueError(f"style_blend has {len(cfg.style_blend)} weights for {n} style(s)")
    return list(cfg.style_blend)


def _moments(
    vgg: VGGFeatures, image: torch.Tensor, cfg: Config, tile: int | None
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One image's Gram matrices, and with `style_loss: wasserstein` its mean feature vectors, from one
    VGG pass, or tile by tile where it is larger than `tile` (Grams only: W2 refuses tiles)."""
    if geometry.needs_tiling(*image.shape[-2:], tile):
        return tiling.tiled_targets(vgg, image, None, list(cfg.style_layers), cfg.pooling, tile)[1], {}
    feats = vgg(image, list(cfg.style_layers), pooling=cfg.pooling)
    grams = {name: gram_matrix(feats[name]) for name in cfg.style_layers}
    if cfg.style_loss != "wasserstein":
        return grams, {}
    return grams, {name: feature_moments(feats[name])[0] for name in cfg.style_layers}


@torch.no_grad()
def blended_moments(
    vgg: VGGFeatures, styles: list[torch.Tensor], cfg: Config, tile: int | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """({layer: sum_j w_j G_j}, {layer: sum_j w_j mu_j}): each style's Gram matrices (second raw
    moments) and, for `style_loss: wasserstein`, mean feature vectors (else {}), one VGG pass per
    style, blended with the normalised `style_blend` weights (JJ, NSPT and crowsonkb blend the
    targets the same way; the mean and the second raw moment blend linearly, a covariance would
    not). A single style's are returned unscaled, so weights [1, 0] give exactly the first style's."""
    weights = blend_weights(cfg, len(styles))
    grams: dict[str, torch.Tensor] = {}
    means: dict[str, torch.Tensor] = {}
    for w, s in zip(weights, styles):
        for out, part in zip((grams, means), _moments(vgg, s, cfg, tile)):
            for name, v in part.items():
                v = v * w if len(styles) > 1 else v
                out[name] = v if name not in out else out[name] + v
    return grams, means


def blended_grams(
    vgg: VGGFeatures, styles: list[torch.Tensor], cfg: Config, tile: int | None = None
) -> dict[str, torch.Tensor]:
    """{layer: sum_j w_j G_j}: the blended Gram matrices alone (see `blended_moments`)."""
    return blended_moments(vgg, styles, cfg, tile)[0]


@dataclass
class LossTargets:
    """Targets and weights of B pairs (one pass). Every weight is a (B,) tensor."""

    content_layer: str
    content: torch.Tensor  # (B, C, h, w) content features at content_layer
    grams: dict[str, torch.Tensor]  # style layer -> (B, C, C) Gram targets (second raw moments)
    content_scale: torch.Tensor  # multiplies the content MSE: 1 / its target's mean square when normalised
    layer_weights: dict[str, torch.Tensor]  # style layer -> w_i (times 1 / its target's mean square)
    alpha: torch.Tensor  # content_weight
    beta: torch.Tensor  # style_weight
    tv: torch.Tensor  # tv_weight
    # style layer -> (B, C) mean feature vectors; only for `style_loss: wasserstein` (else empty)
    means: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)

    @staticmethod
    def cat(parts: list[LossTargets]) -> LossTargets:
        first = parts[0]
        if len(parts) == 1:
            return first
        if any(p.content_layer != first.content_layer or set(p.grams) != set(first.grams) for p in parts):
            raise ValueError("batch members must use the same layers")
        cat = lambda get: torch.cat([get(p) for p in parts])  # noqa: E731
        return LossTargets(
            first.content_layer,
            cat(lambda p: p.content),
            {k: cat(lambda p, k=k: p.grams[k]) for k in first.grams},
            cat(lambda p: p.content_scale),
            {k: cat(lambda p, k=k: p.layer_weights[k]) for k in first.grams},
            cat(lambda p: p.alpha),
            cat(lambda p: p.beta),
            cat(lambda p: p.tv),
            {k: cat(lambda p, k=k: p.means[k]) for k in first.means},
        )


def _relative(t: torch.Tensor, on: bool) -> torch.Tensor:
    """(1,) scale of a loss term. Departure from the paper: with `normalize_losses` each term is
    divided by its target's mean square, making it a relative error. The paper's absolute losses
    depend on the network's activation scale (4th power for Grams), so weights tuned on one VGG fail
    on another; relative errors keep one preset meaningful across networks."""
    if not on:
        return torch.ones(t.shape[0], device=t.device)
    return 1.0 / t.pow(2).flatten(1).mean(1).clamp_min(1e-12)


def _relative_trace(g: torch.Tensor, on: bool) -> torch.Tensor:
    """(1,) scale of a Wasserstein style term: 1 / the style's mean square activation (tr(G) / C)."""
    if not on:
        return torch.ones(g.shape[0], device=g.device)
    return 1.0 / g.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1e-12)


def _check_targets(vgg: VGGFeatures, targets: dict[str, torch.Tensor], scales: list[torch.Tensor]) -> None:
    """The images are in [0, 1]: targets that are not finite, or a normaliser that overflowed (1 / inf
    is 0, which would silence the term and then give 0 x inf = NaN), come from the network's weights,
    not from the optimisation, so no learning rate can help. Checked once per pass, before any step."""
    bad = [name for name, t in targets.items() if not torch.isfinite(t).all()]
    if bad or not all(bool(torch.isfinite(s).all() and (s > 0).all()) for s in scales):
        where = f"not finite at {', '.join(bad)}" if bad else "their mean square overflows"
        raise WeightsError(
            f"{getattr(vgg, 'source', 'the weights')}: the network's features of the images are out of "
            f"float32's range ({where}): the weights are the problem (wrongly scaled?), not lr or the optimizer"
        )


@torch.no_grad()
def compute_targets(
    vgg: VGGFeatures, content: torch.Tensor, styles: list[torch.Tensor], cfg: Config, tile: int | None = None
) -> LossTargets:
    """One pair's targets: content (1, 3, H, W) and its style image(s), already on the device; two
    VGG passes for one style (one for the content, one per style), each tile by tile where the
    image is larger than `tile` (a 4096 px image's conv1 maps alone would take 8 GiB)."""
    if geometry.needs_tiling(*content.shape[-2:], tile):
        feats = tiling.tiled_targets(vgg, content, cfg.content_layer, [], cfg.pooling, tile)[0]
    else:
        feats = vgg(content, [cfg.content_layer], pooling=cfg.pooling)[cfg.content_layer]
    grams, means = blended_moments(vgg, styles, cfg, tile)
    one = lambda v: torch.full((1,), float(v), device=content.device)  # noqa: E731
    if cfg.style_loss == "wasserstein":
        # W2 is in squared activation units (a Gram error is in fourth powers): relative to the
        # style's mean square activation, tr(G) / C, the same relative error on any network.
        scale = {name: _relative_trace(g, cfg.normalize_losses) for name, g in grams.items()}
    else:
        scale = {name: _relative(g, cfg.normalize_losses) for name, g in grams.items()}
    content_scale = _relative(feats, cfg.normalize_losses)
    _check_targets(vgg, {cfg.content_layer: feats, **grams, **means}, [content_scale, *scale.values()])
    return LossTargets(
        cfg.content_layer,
        feats,
        grams,
        content_scale,
        {name: cfg.style_layers[name] * scale[name] for name in grams},
        one(cfg.content_weight),
        one(cfg.style_weight),
        one(cfg.tv_weight),
        means,
    )
