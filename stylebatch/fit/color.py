"""Colour transforms for `preserve_color` (Gatys, Bethge, Hertzmann, Shechtman, "Controlling
Perceptual Factors in Neural Style Transfer", CVPR 2017, section 5).

All functions take and return float tensors (B, 3, H, W) with RGB in [0, 1] (results are clamped
to [0, 1] where they are images to be optimised or saved).

- `luminance`: Y of full-range YCbCr (ITU-R BT.601, as JPEG and PIL's "YCbCr" mode).
- `match_luminance`: the style's luminance shifted and scaled to the content's mean and std (§5.1).
- `match_color`: a linear map x -> A (x - mu_s) + mu_c that gives the style's pixels the content's
  colour mean and covariance (§5.2). Three choices of A, as in Gatys' `match_color`
  (leongatys/NeuralImageSynthesis): `chol` (Cholesky factors), `pca` (symmetric square roots,
  Hertzmann's Image Analogies colour transfer) and `sym` (the symmetric map, i.e. the optimal
  transport map between the two Gaussian colour distributions). The project uses `sym`: of all
  linear maps that match mean and covariance it moves the style's colours least (in mean squared
  RGB distance), and it does not depend on the order of the RGB channels as `chol` does.
- `merge_chroma`: Y from one image, Cb and Cr from another (the post-hoc `original_colors` of
  jcjohnson/neural-style, and the recombination step of luminance-only transfer).
"""

from __future__ import annotations

import torch

# Full-range BT.601 RGB -> YCbCr (JPEG / JFIF), offsets 0.5 on Cb and Cr for values in [0, 1].
_RGB_TO_YCBCR = torch.tensor(
    [
        [0.299, 0.587, 0.114],
        [-0.168736, -0.331264, 0.5],
        [0.5, -0.418688, -0.081312],
    ]
)
_YCBCR_TO_RGB = torch.tensor(
    [
        [1.0, 0.0, 1.402],
        [1.0, -0.344136, -0.714136],
        [1.0, 1.772, 0.0],
    ]
)
_OFFSET = torch.tensor([0.0, 0.5, 0.5])

MATCH_METHOD = "sym"  # the method `preserve_color: histogram` uses; see the module doc


def _apply(matrix: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,bjhw->bihw", matrix.to(image), image)


def rgb_to_ycbcr(image: torch.Tensor) -> torch.Tensor:
    return _apply(_RGB_TO_YCBCR, image) + _OFFSET.to(image).view(1, 3, 1, 1)


def ycbcr_to_rgb(image: torch.Tensor) -> torch.Tensor:
    return _apply(_YCBCR_TO_RGB, image - _OFFSET.to(image).view(1, 3, 1, 1))


def luminance(image: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> (B, 1, H, W) luma Y in [0, 1]."""
    return rgb_to_ycbcr(image)[:, :1]


def grey(y: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) luminance -> (B, 3, H, W) grey RGB image (R = G = B = Y), what VGG is fed."""
    return y.expand(-1, 3, -1, -1).clamp(0, 1).contiguous()


def match_luminance(style_y: torch.Tensor, content_y: torch.Tensor) -> torch.Tensor:
    """Gatys 2017 §5.1: L_s' = sigma_c / sigma_s (L_s - mu_s) + mu_c, per image."""
    mu_s, sd_s = style_y.mean((1, 2, 3), keepdim=True), style_y.std((1, 2, 3), keepdim=True)
    mu_c, sd_c = content_y.mean((1, 2, 3), keepdim=True), content_y.std((1, 2, 3), keepdim=True)
    return ((style_y - mu_s) * (sd_c / sd_s.clamp_min(1e-6)) + mu_c).clamp(0, 1)


def merge_chroma(luma_from: torch.Tensor, chroma_from: torch.Tensor) -> torch.Tensor:
    """RGB with the Y of `luma_from` and the Cb, Cr of `chroma_from` (same size), clamped to [0, 1]."""
    y = rgb_to_ycbcr(luma_from)[:, :1]
    cbcr = rgb_to_ycbcr(chroma_from)[:, 1:]
    return ycbcr_to_rgb(torch.cat([y, cbcr], 1)).clamp(0, 1)


def _stats(image: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (3, 1) and covariance (3, 3) of one image's pixels, in float64, with eps on the diagonal."""
    x = image.reshape(3, -1).double()
    mu = x.mean(1, keepdim=True)
    d = x - mu
    cov = d @ d.T / d.shape[1] + eps * torch.eye(3, dtype=torch.float64)
    return mu, cov


def _sqrtm(cov: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(cov)
    return vecs @ torch.diag(vals.clamp_min(0).sqrt()) @ vecs.T


def match_color(
    image: torch.Tensor, reference: torch.Tensor, method: str = MATCH_METHOD, eps: float = 1e-5
) -> torch.Tensor:
    """Gatys 2017 §5.2: `image` (1, 3, H, W) with its pixels' colour mean and covariance made the
    `reference`'s (1, 3, h, w), by x -> A (x - mu_i) + mu_r; clamped to [0, 1]."""
    if image.shape[0] != 1 or reference.shape[0] != 1:
        return torch.cat([match_color(i[None], r[None], method, eps) for i, r in zip(image, reference)])
    mu_i, cov_i = _stats(image[0], eps)
    mu_r, cov_r = _stats(reference[0], eps)
    if method == "chol":
        a = torch.linalg.cholesky(cov_r) @ torch.linalg.inv(torch.linalg.cholesky(cov_i))
    elif method == "pca":  # Image Analogies: Sigma_r^1/2 Sigma_i^-1/2
        a = _sqrtm(cov_r) @ torch.linalg.inv(_sqrtm(cov_i))
    elif method == "sym":  # Sigma_i^-1/2 (Sigma_i^1/2 Sigma_r Sigma_i^1/2)^1/2 Sigma_i^-1/2
        qi = _sqrtm(cov_i)
        qi_inv = torch.linalg.inv(qi)
        a = qi_inv @ _sqrtm(qi @ cov_r @ qi) @ qi_inv
    else:
        raise ValueError(f"unknown colour matching method {method!r}")
    x = image[0].reshape(3, -1).double()
    out = a @ (x - mu_i) + mu_r
    return out.reshape(image.shape).to(image.dtype).clamp(0, 1)
