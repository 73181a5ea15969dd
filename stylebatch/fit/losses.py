"""The losses of Gatys et al. (2016) as small functions. Every function keeps the batch dimension
and returns one value per image, shape (B,), so several pairs can share one VGG pass."""

from __future__ import annotations

import torch
from torch.autograd.function import FunctionCtx


class _Gram(torch.autograd.Function):
    """G = X·Xᵀ·scale for X (B, C, N), or Xᵀ·X·scale for X (B, N, C) (`positions_first`), with a
    backward of one matmul: dX = (dG + dGᵀ)·X·scale. Autograd's own backward of bmm(X, Xᵀ) runs two
    matmuls (one per operand) and then adds two X-sized gradients, a full extra pass over the largest
    activations (conv1_1 at 256 px: 64 x 49152). The scale is applied to the C x C matrices only."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, scale: float, positions_first: bool) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.scale, ctx.positions_first = scale, positions_first
        xt = x.transpose(1, 2)
        return torch.bmm(xt, x).mul_(scale) if positions_first else torch.bmm(x, xt).mul_(scale)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        sym = (grad + grad.transpose(1, 2)).mul_(ctx.scale)  # (B, C, C)
        return (torch.bmm(x, sym) if ctx.positions_first else torch.bmm(sym, x)), None, None


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """G = F·Fᵀ / (H·W) for features (B, C, H, W) → (B, C, C).

    The paper sums over positions; we divide by H·W (as Gatys' own PyTorch code does) so G is the
    mean outer product of the feature vectors, independent of image size: a style image of another
    size than the output gives comparable targets. Dividing by C as well (as some tools do) would
    only rescale each layer, which `normalize_losses` makes irrelevant anyway.

    Channels-last features (the extractor's layout) are read as (B, H·W, C) without a copy, and the
    gradient comes back in the same layout; other layouts as (B, C, H·W).
    """
    b, c, h, w = features.shape
    if features.is_contiguous(memory_format=torch.channels_last) and not features.is_contiguous():
        x = features.permute(0, 2, 3, 1).reshape(b, h * w, c)  # a view: NHWC memory is (B, HW, C)
        return _Gram.apply(x, 1.0 / (h * w), True)
    return _Gram.apply(features.reshape(b, c, h * w), 1.0 / (h * w), False)


def mse_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all but the batch dimension → (B,)."""
    return (a - b).pow(2).flatten(1).mean(1)


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE between the image's and the content image's features at the content layer → (B,)."""
    return mse_per_image(features, target)


def style_loss(
    features: dict[str, torch.Tensor], target_grams: dict[str, torch.Tensor], weights: dict[str, float]
) -> torch.Tensor:
    """Σ_i w_i · MSE(G_i(image), G_i(style)) over the style layers → (B,)."""
    return sum(weights[name] * mse_per_image(gram_matrix(features[name]), target_grams[name]) for name in weights)


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between neighbouring pixels (B, C, H, W) → (B,); smooths noise."""
    dx = (image[..., :, 1:] - image[..., :, :-1]).pow(2).flatten(1).mean(1)
    dy = (image[..., 1:, :] - image[..., :-1, :]).pow(2).flatten(1).mean(1)
    return dx + dy
