"""The Gatys losses against independent references written here (loops / einsum), on a fixed random
network's features, and the Gram normalisation on a hand-computed example."""

from __future__ import annotations

import itertools

import pytest
import torch

from stylebatch.fit.losses import content_loss, gram_matrix, style_loss, total_variation

LAYERS = ["conv1_1", "relu2_1", "conv3_1"]


def ref_gram(f: torch.Tensor) -> torch.Tensor:
    """G[b, c, d] = sum over positions of F[b, c, p] F[b, d, p], divided by H*W."""
    h, w = f.shape[-2:]
    return torch.einsum("bchw,bdhw->bcd", f.double(), f.double()) / (h * w)


def ref_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.stack([((x.double() - y.double()) ** 2).sum() / x.numel() for x, y in zip(a, b)])


@pytest.fixture(scope="module")
def feats(vgg):
    """Features of two random images (a batch of 2) and of two other ones (the targets)."""
    gen = torch.Generator().manual_seed(123)
    image = torch.rand(2, 3, 24, 20, generator=gen)
    other = torch.rand(2, 3, 24, 20, generator=gen)
    with torch.no_grad():
        return vgg(image, LAYERS), vgg(other, LAYERS)


def test_gram_matrix_matches_reference(feats):
    image_feats, _ = feats
    for name in LAYERS:
        f = image_feats[name]
        g = gram_matrix(f)
        b, c = f.shape[:2]
        assert g.shape == (b, c, c)
        assert torch.allclose(g.double(), ref_gram(f), rtol=1e-4, atol=1e-6), name
        assert torch.allclose(g, g.transpose(1, 2))


def test_gram_of_eight_4x4_feature_maps_by_hand():
    # 8 feature maps of 4x4 with known integer values: F[c, i, j] = ((c + 1) * (4i + j) + c) % 7 - 3.
    values = [[[((c + 1) * (4 * i + j) + c) % 7 - 3 for j in range(4)] for i in range(4)] for c in range(8)]
    f = torch.tensor([values], dtype=torch.float32)  # (1, 8, 4, 4)
    positions = list(itertools.product(range(4), range(4)))
    by_hand = [[sum(values[c][i][j] * values[d][i][j] for i, j in positions) / 16 for d in range(8)] for c in range(8)]
    g = gram_matrix(f)
    assert g.shape == (1, 8, 8)
    # Small integers and a power-of-two divisor: float32 is exact, so the match is exact.
    assert g[0].tolist() == by_hand
    # A channel of ones has G = 1 with itself; doubling the map (same statistics, 4x the positions)
    # leaves G unchanged: the documented per-position normalisation.
    ones = torch.ones(1, 1, 4, 4)
    assert gram_matrix(ones).item() == 1.0
    tiled = f.repeat(1, 1, 2, 2)  # (1, 8, 8, 8)
    assert torch.equal(gram_matrix(tiled), g)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_gram_gradient_matches_autograd_reference(layout):
    """The Gram's one-matmul backward equals autograd's own gradient of the einsum reference (float64,
    both memory layouts), passes gradcheck, and hands back the features' layout: a speed change
    (bench: 0.290 -> 0.262 s per evaluation at 256 px here) that must leave every gradient unchanged."""
    gen = torch.Generator().manual_seed(5)
    f = torch.randn(2, 6, 5, 7, generator=gen, dtype=torch.float64).to(memory_format=layout).requires_grad_()
    upstream = torch.randn(2, 6, 6, generator=gen, dtype=torch.float64)  # not symmetric on purpose
    (gram_matrix(f) * upstream).sum().backward()
    ours, f.grad = f.grad, None
    (ref_gram(f) * upstream).sum().backward()
    assert torch.allclose(ours, f.grad, rtol=1e-12, atol=1e-12)
    assert ours.is_contiguous(memory_format=layout)
    assert torch.autograd.gradcheck(gram_matrix, (f.detach().requires_grad_(),))


def test_content_loss_matches_reference(feats):
    image_feats, target_feats = feats
    for name in LAYERS:
        loss = content_loss(image_feats[name], target_feats[name])
        assert loss.shape == (2,)
        assert torch.allclose(loss.double(), ref_mse(image_feats[name], target_feats[name]), rtol=1e-5)
        assert (loss > 0).all()
        assert torch.equal(content_loss(target_feats[name], target_feats[name]), torch.zeros(2))


def test_style_loss_matches_reference(feats):
    image_feats, target_feats = feats
    targets = {name: gram_matrix(target_feats[name]) for name in LAYERS}
    weights = {"conv1_1": 0.5, "relu2_1": 2.0, "conv3_1": 0.25}
    loss = style_loss(image_feats, targets, weights)
    assert loss.shape == (2,)
    expected = torch.zeros(2, dtype=torch.float64)
    for name, wt in weights.items():
        g, t = ref_gram(image_feats[name]), ref_gram(target_feats[name])
        c = g.shape[-1]
        for b in range(2):
            expected[b] += wt * ((g[b] - t[b]) ** 2).sum() / (c * c)
    assert torch.allclose(loss.double(), expected, rtol=1e-4)
    # Only the layers in `weights` count, and a weight scales its term.
    only = style_loss(image_feats, targets, {"relu2_1": 3.0})
    assert torch.allclose(only.double(), 3.0 * _layer_term(feats, "relu2_1"), rtol=1e-4)


def _layer_term(feats, name):
    image_feats, target_feats = feats
    g, t = ref_gram(image_feats[name]), ref_gram(target_feats[name])
    return ((g - t) ** 2).flatten(1).mean(1)


def test_losses_are_per_image(feats):
    """Each image's loss is its own: the batch of 2 equals the two images run alone."""
    image_feats, target_feats = feats
    targets = {name: gram_matrix(target_feats[name]) for name in LAYERS}
    weights = {name: 1.0 for name in LAYERS}
    both = style_loss(image_feats, targets, weights)
    for b in range(2):
        one = style_loss(
            {k: v[b : b + 1] for k, v in image_feats.items()}, {k: v[b : b + 1] for k, v in targets.items()}, weights
        )
        assert torch.allclose(one, both[b : b + 1], rtol=1e-5)
        assert torch.allclose(
            content_loss(image_feats["conv3_1"][b : b + 1], target_feats["conv3_1"][b : b + 1]),
            content_loss(image_feats["conv3_1"], target_feats["conv3_1"])[b : b + 1],
            rtol=1e-5,
        )


def test_total_variation_matches_reference():
    image = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(7))
    tv = total_variation(image)
    assert tv.shape == (2,)
    b_, c_, h_, w_ = image.shape
    x = image.double().tolist()
    for b in range(b_):
        horizontal = [
            (x[b][c][i][j + 1] - x[b][c][i][j]) ** 2 for c in range(c_) for i in range(h_) for j in range(w_ - 1)
        ]
        vertical = [
            (x[b][c][i + 1][j] - x[b][c][i][j]) ** 2 for c in range(c_) for i in range(h_ - 1) for j in range(w_)
        ]
        expected = sum(horizontal) / len(horizontal) + sum(vertical) / len(vertical)
        assert tv[b].item() == pytest.approx(expected, rel=1e-5)
    assert torch.equal(total_variation(torch.full((1, 3, 4, 4), 0.3)), torch.zeros(1))


def _gaussian_w2(m1, c1, m2, c2) -> float:
    """Squared W2 between two Gaussians, written out with numpy's own eigendecompositions."""
    import numpy as np

    def sqrtm(a):
        vals, vecs = np.linalg.eigh(a)
        return vecs @ np.diag(np.sqrt(np.clip(vals, 0, None))) @ vecs.T

    root = sqrtm(c2)
    return float(((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * sqrtm(root @ c1 @ root)))


def _w2_target(f: torch.Tensor, eps_rel: float = 1e-4):
    from stylebatch.fit.losses import covariance, feature_moments, sqrtm_psd

    mean, second = feature_moments(f)
    cov = covariance(mean, second)
    eps = eps_rel * cov.diagonal(dim1=1, dim2=2).mean(1)
    cov = cov + eps.view(-1, 1, 1) * torch.eye(cov.shape[1])
    return mean, cov, sqrtm_psd(cov).float(), eps


def test_wasserstein_layer_matches_the_gaussian_formula_per_image():
    from stylebatch.fit.losses import wasserstein_layer

    torch.manual_seed(0)
    target, image = torch.randn(2, 4, 5, 6), torch.randn(2, 4, 7, 3) * 1.5 + 0.3
    mean_t, cov_t, root_t, eps = _w2_target(target)
    got = wasserstein_layer(image, mean_t, cov_t, root_t, eps)
    assert got.shape == (2,)
    for b in range(2):
        x = image[b].flatten(1).double()
        m = x.mean(1)
        c = (x - m[:, None]) @ (x - m[:, None]).T / x.shape[1] + float(eps[b]) * torch.eye(4, dtype=torch.float64)
        want = _gaussian_w2(m.numpy(), c.numpy(), mean_t[b].double().numpy(), cov_t[b].double().numpy()) / 4
        assert float(got[b]) == pytest.approx(want, rel=1e-4)
    # The style's own features are at distance 0; a shift by s in every channel costs s² (per channel).
    assert wasserstein_layer(target, mean_t, cov_t, root_t, eps).abs().max() < 1e-4
    assert wasserstein_layer(target + 0.5, mean_t, cov_t, root_t, eps) == pytest.approx(
        torch.tensor([0.25, 0.25]), abs=1e-4
    )


def test_wasserstein_gradient_matches_finite_differences():
    from stylebatch.fit.losses import _TraceSqrtm

    torch.manual_seed(1)
    a = torch.randn(3, 5, 5, dtype=torch.float64)
    m = (a @ a.transpose(1, 2) + 0.1 * torch.eye(5, dtype=torch.float64)).requires_grad_()
    floor = torch.full((3,), 1e-8, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: _TraceSqrtm.apply((x + x.transpose(1, 2)) / 2, floor), (m,))


def test_wasserstein_style_loss_is_per_image_and_weighted():
    from stylebatch.fit.losses import wasserstein_layer, wasserstein_style_loss

    torch.manual_seed(2)
    feats = {"a": torch.randn(2, 3, 4, 4), "b": torch.randn(2, 6, 2, 2)}
    targets = {k: _w2_target(torch.randn(2, v.shape[1], 5, 5)) for k, v in feats.items()}
    weights = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.5, 0.0])}
    got = wasserstein_style_loss(feats, targets, weights)
    want = sum(weights[k] * wasserstein_layer(feats[k], *targets[k]) for k in feats)
    assert torch.allclose(got, want)
    # Image 1 alone gives image 1's value: nothing leaks across the batch.
    one = wasserstein_style_loss(
        {k: v[1:] for k, v in feats.items()},
        {k: tuple(t[1:] for t in v) for k, v in targets.items()},
        {k: v[1:] for k, v in weights.items()},
    )
    assert torch.allclose(one, got[1:], rtol=1e-5)
