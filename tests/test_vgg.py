"""The VGG19 extractor: layer names against torchvision's own network, frozen weights, truncation,
ReLUs in place except after a requested conv layer, and the minimum input size."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from stylebatch.fit.vgg import VGGFeatures, load_vgg
from stylebatch.geometry import LAYER_INDEX, LAYER_NAMES, min_input_size
from tests.jobkit import ForwardCounter

BLOCK_CHANNELS = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}
BLOCK_CONVS = {1: 2, 2: 2, 3: 4, 4: 4, 5: 4}  # VGG19 ("E")


@pytest.fixture(scope="module")
def tv_features() -> nn.Sequential:
    with torch.device("meta"):  # structure only: no weights allocated
        return torchvision.models.vgg19().features


def test_layer_table_matches_torchvision(tv_features):
    modules = list(tv_features)
    assert len(LAYER_NAMES) == len(modules) == 37
    assert len(set(LAYER_NAMES)) == len(LAYER_NAMES)
    assert LAYER_INDEX == {name: i for i, name in enumerate(LAYER_NAMES)}
    for name, i in LAYER_INDEX.items():
        kind = name.rstrip("0123456789_")
        expected = {"conv": nn.Conv2d, "relu": nn.ReLU, "pool": nn.MaxPool2d}[kind]
        assert isinstance(modules[i], expected), f"{name} is index {i}, which is {modules[i]}"
        if kind == "conv":
            block = int(name[4])
            assert modules[i].out_channels == BLOCK_CHANNELS[block], name
            assert isinstance(modules[i + 1], nn.ReLU) and LAYER_NAMES[i + 1] == "relu" + name[4:]
    for block, convs in BLOCK_CONVS.items():
        names = [f"conv{block}_{k}" for k in range(1, convs + 1)]
        assert all(n in LAYER_INDEX for n in names)
        assert f"conv{block}_{convs + 1}" not in LAYER_INDEX
        # The pool closes the block: right after its last ReLU, before the next block's first conv.
        assert LAYER_INDEX[f"pool{block}"] == LAYER_INDEX[f"relu{block}_{convs}"] + 1
        if block < 5:
            assert LAYER_INDEX[f"conv{block + 1}_1"] == LAYER_INDEX[f"pool{block}"] + 1
    assert LAYER_NAMES[-1] == "pool5"


def test_extractor_has_torchvision_structure(vgg, tv_features):
    assert vgg.depth == len(tv_features)
    for name, ours, theirs in zip(LAYER_NAMES, vgg.layers, tv_features):
        assert type(ours) is type(theirs), name
        if isinstance(ours, nn.Conv2d):
            assert ours.weight.shape == theirs.weight.shape, name


@pytest.mark.parametrize("conv", ["conv1_1", "conv3_4", "conv4_2", "conv5_1"])
def test_a_requested_conv_alone_keeps_its_negatives(vgg, conv):
    """The ReLU after a requested conv runs out of place even when its own output is not asked for
    (and later ReLUs run in place): the returned map is the pre-activation."""
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    deeper = "relu5_1" if conv != "conv5_1" else "relu5_2"
    feats = vgg(image, [conv, deeper])
    assert (feats[conv] < 0).any(), conv
    relu = "relu" + conv[4:]
    assert torch.equal(vgg(image, [relu])[relu], feats[conv].clamp_min(0))


def test_in_place_relus_write_no_returned_map(vgg):
    """Every returned map is what the out-of-place network returns, for post-ReLU, pre-ReLU and
    pooled layers requested together."""
    image = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(6))
    layers = ["relu1_1", "conv2_1", "relu2_1", "pool2", "conv3_1", "relu4_2", "conv5_1", "relu5_1"]
    fast = vgg(image, layers)
    vgg.inplace_relu = False
    try:
        slow = vgg(image, layers)
    finally:
        vgg.inplace_relu = True
    for name in layers:
        assert torch.equal(fast[name], slow[name]), name


def test_conv_is_pre_activation_and_relu_post_activation(vgg):
    image = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    # Both in one call: with torchvision's in-place ReLUs the conv output would be overwritten.
    feats = vgg(image, ["conv1_1", "relu1_1", "conv4_2", "relu4_2"])
    for conv, relu in (("conv1_1", "relu1_1"), ("conv4_2", "relu4_2")):
        assert (feats[conv] < 0).any(), conv
        assert (feats[relu] >= 0).all(), relu
        assert torch.equal(feats[relu], feats[conv].clamp_min(0))
    assert feats["conv1_1"].shape == (1, 64, 24, 24)
    assert feats["conv4_2"].shape == (1, 512, 3, 3)


def test_extractor_is_frozen(vgg):
    params = list(vgg.parameters())
    assert params and not any(p.requires_grad for p in params)
    vgg.train()
    assert not vgg.training and not any(m.training for m in vgg.modules())
    vgg.train(True)
    assert not any(m.training for m in vgg.modules())
    # Gradients still flow to the input (the image being optimised), never into the weights.
    image = torch.rand(1, 3, 16, 16, requires_grad=True)
    vgg(image, ["conv2_1"])["conv2_1"].square().sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    assert all(p.grad is None for p in params)


def test_truncation_after_deepest_requested_layer(vgg):
    small = load_vgg("random", layers=["conv1_1", "conv3_1", "relu2_1"])
    assert isinstance(small, VGGFeatures)
    assert small.depth == LAYER_INDEX["conv3_1"] + 1
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in vgg.parameters())
    image = torch.rand(1, 3, 20, 20, generator=torch.Generator().manual_seed(2))
    ours, full = small(image, ["relu2_1", "conv3_1"]), vgg(image, ["relu2_1", "conv3_1"])
    for name in ("relu2_1", "conv3_1"):  # same seeded weights as the full network
        assert torch.equal(ours[name], full[name])
    with pytest.raises(ValueError, match="conv3_2"):
        small(image, ["conv3_2"])


def test_forward_counter_counts_calls(vgg):
    image = torch.rand(1, 3, 8, 8)
    with ForwardCounter(vgg) as calls:
        vgg(image, ["conv1_1"])
        vgg(image, ["conv1_1", "conv2_1"])
    vgg(image, ["conv1_1"])  # after the counter is removed: not counted
    assert calls.n == 2


def test_min_input_size_examples():
    assert min_input_size(["conv1_1"]) == 1
    assert min_input_size(["conv2_1"]) == 2
    assert min_input_size(["conv4_2"]) == 8
    assert min_input_size(["conv5_1"]) == 16
    assert min_input_size(["conv1_1", "conv5_1", "conv3_1"]) == 16


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_min_input_size_is_the_smallest_that_works(vgg, name):
    """At min_input_size the layer has at least one position; one pixel less it has none."""
    need = min_input_size([name])
    out = vgg(torch.rand(1, 3, need, need), [name])[name]
    assert out.shape[-1] >= 1 and out.shape[-2] >= 1
    if need > 1:
        try:
            out = vgg(torch.rand(1, 3, need - 1, need - 1), [name])[name]
        except RuntimeError:
            return  # "output size is too small": the layer has no position
        assert out.shape[-1] == 0 or out.shape[-2] == 0


@pytest.mark.slow
def test_random_weights_are_kept_in_the_cache_and_read_back_bit_for_bit(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    made = load_vgg("random").state_dict()  # torchvision's seeded init, then kept
    (kept,) = (tmp_path / "stylebatch").glob("random-vgg19-seed*.pt")
    assert f"torch{torch.__version__}" in kept.name and f"torchvision{torchvision.__version__}" in kept.name
    read = load_vgg("random").state_dict()  # from the cache
    assert made.keys() == read.keys() and all(torch.equal(made[k], read[k]) for k in made)
    kept.write_bytes(kept.read_bytes()[:1000])  # a truncated cache: made again, the same tensors
    again = load_vgg("random").state_dict()
    assert all(torch.equal(made[k], again[k]) for k in made)
    assert kept.stat().st_size > 1000  # and kept again
