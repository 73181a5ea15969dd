"""The losses of Gatys et al. (2016) as small functions. Every function keeps the batch dimension
and returns one value per image, shape (B,), so several pairs can share one VGG pass."""

from __future__ import annotations

import torch


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """G = F·Fᵀ / (H·W) for features (B, C, H, W) → (B, C, C).

    The paper sums over positions; we divide by H·W (as Gatys' own PyTorch code does) so G is the
    mean outer product of the feature vectors, independent of image size: a style image of another
    size than the output gives comparable targets. Dividing by C as well (as some tools do) would
    only rescale each layer, which `normalize_losses` makes irrelevant anyway.
    """
    b, c, h, w = features.shape
    f = features.reshape(b, c, h * w)  # (B, C, HW)
    return torch.bmm(f, f.transpose(1, 2)) / (h * w)  # (B, C, C)


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
