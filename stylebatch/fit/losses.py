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


def feature_moments(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (B, C) and second raw moment F·Fᵀ / (H·W) (B, C, C, the Gram) of features (B, C, H, W).
    Unlike covariances these blend linearly over several style images."""
    return features.float().mean((2, 3)), gram_matrix(features.float())


def covariance(mean: torch.Tensor, second_moment: torch.Tensor) -> torch.Tensor:
    """(B, C, C) covariance from the mean (B, C) and the second raw moment (B, C, C)."""
    return second_moment - mean.unsqueeze(2) * mean.unsqueeze(1)


def sqrtm_psd(matrix: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a batch of symmetric positive semi-definite matrices (B, C, C), by
    eigendecomposition in float64; eigenvalues below 0 (rounding) count as 0. For targets only: no
    gradient is taken through it."""
    vals, vecs = torch.linalg.eigh(matrix.double())
    return (vecs * vals.clamp_min(0).sqrt().unsqueeze(1)) @ vecs.transpose(1, 2)


class _TraceSqrtm(torch.autograd.Function):
    """tr(M^½) = Σ √λ_i of a batch of symmetric PSD matrices (B, C, C) → (B,), with the gradient
    ½ M^-½ = V diag(1 / (2√λ)) Vᵀ. Only the trace enters the Wasserstein distance, so no matrix
    square root has to be differentiated (whose eigenvector gradients divide by λ_i − λ_j and blow
    up on nearly equal eigenvalues); eigenvalues are floored at `floor` (B,) so the gradient stays
    finite on singular covariances."""

    @staticmethod
    def forward(ctx: FunctionCtx, m: torch.Tensor, floor: torch.Tensor) -> torch.Tensor:
        vals, vecs = torch.linalg.eigh(m.double())
        vals = torch.maximum(vals, floor.double().unsqueeze(1))
        root = vals.sqrt()
        ctx.save_for_backward(vecs, root)
        ctx.dtype = m.dtype
        return root.sum(1).to(m.dtype)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: torch.Tensor):
        vecs, root = ctx.saved_tensors
        g = (vecs * (0.5 / root).unsqueeze(1)) @ vecs.transpose(1, 2)
        return (g * grad.double().view(-1, 1, 1)).to(ctx.dtype), None


def wasserstein_layer(
    features: torch.Tensor, mean_t: torch.Tensor, cov_t: torch.Tensor, cov_t_sqrt: torch.Tensor, eps: torch.Tensor
) -> torch.Tensor:
    """Squared Wasserstein-2 distance between the Gaussians fitted to the image's feature vectors and
    to the style's (crowsonkb/style-transfer-pytorch's StyleLossW2), per channel → (B,):
    mean_c (μ − μ_t)² + tr(Σ + Σ_t − 2 (Σ_t^½ Σ Σ_t^½)^½) / C. `eps` (B,) is added to Σ's diagonal
    (the target's was given it when it was made) and floors the eigenvalues."""
    mean, second = feature_moments(features)
    c = mean.shape[1]
    eye = torch.eye(c, device=features.device, dtype=mean.dtype)
    cov = covariance(mean, second) + eps.view(-1, 1, 1) * eye
    cross = cov_t_sqrt @ cov @ cov_t_sqrt
    cross = (cross + cross.transpose(1, 2)) / 2  # exactly symmetric for eigh
    trace = cov.diagonal(dim1=1, dim2=2).sum(1) + cov_t.diagonal(dim1=1, dim2=2).sum(1)
    w2 = trace - 2 * _TraceSqrtm.apply(cross, eps * eps)
    return (mean - mean_t).pow(2).mean(1) + w2 / c


def wasserstein_style_loss(
    features: dict[str, torch.Tensor], targets: dict[str, tuple[torch.Tensor, ...]], weights: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Σ_i w_i · W2²(image, style) at each style layer → (B,); targets[name] = (mean, cov, cov_sqrt, eps)."""
    return sum(weights[name] * wasserstein_layer(features[name], *targets[name]) for name in weights)
