"""load_vgg's weight sources: torchvision state dict files (full, features only, float16), seeded
random weights, and every way a file or the ImageNet download can fail: each a WeightsError whose
one-line message names the file."""

from __future__ import annotations

import random
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision

from stylebatch.errors import WeightsError
from stylebatch.fit import vgg as vgg_module
from stylebatch.fit.vgg import load_vgg
from stylebatch.geometry import LAYER_INDEX
from stylebatch.job.weights import RANDOM_WEIGHTS_SEED, weights_identity


@pytest.fixture(scope="module")
def features_state(vgg) -> dict[str, torch.Tensor]:
    """VGG19 feature weights (keys `0.weight` ... `34.bias`) that differ from the random ones."""
    gen = torch.Generator().manual_seed(11)
    return {k: v + 0.01 * torch.randn(v.shape, generator=gen) for k, v in vgg.layers.state_dict().items()}


def assert_loads(net, expected: dict[str, torch.Tensor]) -> None:
    got = net.layers.state_dict()
    assert set(got) == set(expected)
    for key, tensor in got.items():
        assert tensor.dtype == torch.float32, key
        assert torch.equal(tensor, expected[key].float()), key
    assert not any(p.requires_grad for p in net.parameters())


def weights_error(path: Path, *fragments: str) -> str:
    with pytest.raises(WeightsError) as info:
        load_vgg(str(path))
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return message


# --- files that load --------------------------------------------------------------------------


def test_full_torchvision_state_dict(tmp_path, vgg):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = torchvision.models.vgg19()  # features *and* classifier, as torchvision saves it
    path = tmp_path / "vgg19_full.pth"
    torch.save(model.state_dict(), path)
    expected = model.features.state_dict()
    del model
    net = load_vgg(str(path))
    assert_loads(net, expected)
    assert not torch.equal(net.layers[0].weight, vgg.layers[0].weight)  # the file's, not random


@pytest.mark.parametrize("layout", ["features", "prefixed", "wrapped"])
def test_features_only_state_dict(tmp_path, features_state, layout):
    state = {
        "features": features_state,
        "prefixed": {f"features.{k}": v for k, v in features_state.items()},
        "wrapped": {"state_dict": features_state},
    }[layout]
    path = tmp_path / "features.pth"
    torch.save(state, path)
    assert_loads(load_vgg(str(path)), features_state)


def test_float16_state_dict_loads_as_float32(tmp_path, features_state):
    half = {k: v.half() for k, v in features_state.items()}
    path = tmp_path / "vgg19_fp16.pth"
    torch.save(half, path)
    net = load_vgg(str(path), layers=["relu2_1"])  # a file loads into a truncated extractor too
    assert net.depth == LAYER_INDEX["relu2_1"] + 1
    expected = {k: v.float() for k, v in half.items() if int(k.split(".")[0]) <= 6}
    assert_loads(net, expected)
    out = net(torch.rand(1, 3, 8, 8), ["relu2_1"])["relu2_1"]
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_random_weights_are_seeded_and_leave_the_global_rng_alone(vgg):
    rng_before = torch.get_rng_state()
    again = load_vgg("random")
    assert torch.equal(torch.get_rng_state(), rng_before)
    first, second = vgg.state_dict(), again.state_dict()
    assert set(first) == set(second)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert weights_identity("random") == f"random:{RANDOM_WEIGHTS_SEED}"


# --- files that are refused ---------------------------------------------------------------------


def test_missing_file(tmp_path):
    weights_error(tmp_path / "no_such_weights.pth", "no such file", "random")


def test_directory_instead_of_file(tmp_path):
    weights_error(tmp_path, "not a file")


@pytest.mark.parametrize("kind", ["random_bytes", "empty", "truncated", "text"])
def test_corrupt_file(tmp_path, features_state, kind):
    path = tmp_path / f"{kind}.pth"
    if kind == "random_bytes":
        path.write_bytes(random.Random(0).randbytes(4096))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("these are not the weights you are looking for\n" * 3)
    else:
        torch.save(features_state, path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    weights_error(path, "cannot be loaded")


class _RunsCode:
    """Unpickling this runs `exec(code)`: what a malicious .pth file does."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return exec, (self.code,)


def test_pickled_code_is_refused_and_never_runs(tmp_path, features_state):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pth"
    payload = _RunsCode(f"open({str(marker)!r}, 'w').write('ran')")
    torch.save({**features_state, "payload": payload}, path)

    weights_error(path, "weights_only")
    assert not marker.exists()
    # Control: the payload is live. An unrestricted load would have run it.
    torch.load(path, weights_only=False)
    assert marker.read_text() == "ran"


@pytest.mark.parametrize(
    "change, fragments",
    [
        ("conv_shape", ["'10.weight'", "(256, 128, 3, 3)", "(128, 128, 3, 3)"]),
        ("bias_shape", ["'34.bias'", "(512,)", "(511,)"]),
        ("missing_layer", ["missing", "34.weight"]),
        ("unexpected_key", ["unexpected", "37.weight"]),
        ("vgg16", ["not VGG19 feature weights"]),
        ("not_a_dict", ["not a VGG19 state dict"]),
        ("empty_dict", ["not a VGG19 state dict"]),
        ("not_a_tensor", ["'0.weight'", "list"]),
    ],
)
def test_wrong_shapes_or_keys(tmp_path, features_state, change, fragments):
    state: object = dict(features_state)
    if change == "conv_shape":
        state["10.weight"] = torch.zeros(128, 128, 3, 3)  # conv3_1 takes 128 channels in and gives 256
    elif change == "bias_shape":
        state["34.bias"] = torch.zeros(511)
    elif change == "missing_layer":
        del state["34.weight"], state["34.bias"]
    elif change == "unexpected_key":
        state["37.weight"] = torch.zeros(3)
    elif change == "vgg16":
        with torch.device("meta"):
            keys = torchvision.models.vgg16().features.state_dict()
        state = {k: torch.zeros(v.shape) for k, v in keys.items()}
    elif change == "not_a_dict":
        state = torch.zeros(3, 3)
    elif change == "empty_dict":
        state = {}
    elif change == "not_a_tensor":
        state["0.weight"] = [1.0, 2.0]
    path = tmp_path / f"{change}.pth"
    torch.save(state, path)
    weights_error(path, *fragments)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights(tmp_path, features_state, bad):
    state = dict(features_state)
    state["28.weight"] = state["28.weight"].clone()
    state["28.weight"][3, 2, 1, 0] = bad
    path = tmp_path / "nonfinite.pth"
    torch.save(state, path)
    weights_error(path, "'28.weight'", "NaN or infinite")


# --- imagenet without a network -----------------------------------------------------------------


def test_imagenet_unreachable_names_the_cache_path_and_the_alternatives(tmp_path, monkeypatch):
    torch_home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    attempts: list[str] = []

    def no_network(url, dst, *args, **kwargs):
        attempts.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)

    cache = vgg_module.imagenet_cache_path()
    assert cache.is_relative_to(torch_home) and cache.name.endswith(".pth")
    assert not cache.exists()
    with pytest.raises(WeightsError) as info:
        load_vgg("imagenet")
    message = str(info.value)
    assert attempts == [torchvision.models.VGG19_Weights.IMAGENET1K_V1.url]  # it did try, and failed
    assert "\n" not in message
    assert str(cache) in message
    assert "--weights PATH" in message and "--weights random" in message
    assert "URLError" in message
