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
