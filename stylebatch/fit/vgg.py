"""A frozen VGG19 used only as a feature extractor, with layers addressed by name.

torchvision's `vgg19().features` uses in-place ReLUs, so a hook on `conv4_2` would silently return
`relu4_2`. The extractor keeps them in place (they spare a pass over each conv's output: the bench's
ratio to the bare torchvision pass) except after a conv layer a caller asks for, whose map must stay
the pre-activation: `conv4_2` is the pre-activation and `relu4_2` the post-activation, as named.
Both ReLUs give bit-identical values and gradients (autograd saves the output either way).

Weights: `imagenet` (torchvision's VGG19_Weights.IMAGENET1K_V1, cached where torch.hub caches),
a local file (a full torchvision vgg19 state dict or features only; float16 accepted), or
`random` (seeded, for tests and dry runs).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from stylebatch.atomic import atomic_write
from stylebatch.errors import WeightsError
from stylebatch.fit.losses import gram_matrix
from stylebatch.geometry import LAYER_INDEX, LAYER_NAMES
from stylebatch.job.weights import RANDOM_WEIGHTS_SEED, check_weights_path
from stylebatch.memory.calibration import cache_dir

# `pooling: avg` replaces each 2x2 max pool by a 2x2 average pool times this gain, so activations keep
# roughly their magnitude (a window's mean is below its max). 2.0 is crowsonkb/style-transfer-pytorch's
# factor for torchvision's ImageNet VGG19. We measured, pool by pool through the averaged network, the
# gain that makes mean(avg pool) equal mean(max pool) on five example images at 256 px: 1.3-2.2 (mean
# 1.8) on the trained VGG weights here (../shared/weights/vgg19_hed_features.pth), 1.2-1.5 on random
# weights. The spread between images is as large as between networks, so a per-network measured gain
# would depend on the image it was measured on; one fixed factor it is. Pools hold no weights, so one
# network serves both modes: the choice is made per forward pass.
AVG_POOL_GAIN = 2.0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGGFeatures(nn.Module):
    """VGG19 `features` truncated after the deepest layer it is asked for, frozen, with ImageNet
    normalisation inside. `forward(x, layers)` takes RGB in [0, 1] and returns {name: features}."""

    def __init__(
        self, features: nn.Sequential, deepest: str = "pool5", channels_last: bool = True, source: str = "the weights"
    ) -> None:
        super().__init__()
        self.channels_last = channels_last
        self.source = source  # how messages name the weights ("weights file x.pth"): a problem of theirs says so
        stop = LAYER_INDEX[deepest] + 1
        self.layers = nn.Sequential(*list(features)[:stop])
        # Switched off by tests that compare the two kinds of ReLU; forward() never runs one in
        # place on a map it returns.
        self.inplace_relu = True
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        # Frozen: eval mode and no gradients for the weights (detach() would do nothing here).
        self.eval().requires_grad_(False)

    @property
    def depth(self) -> int:
        return len(self.layers)

    def forward(self, image: torch.Tensor, layers: list[str], pooling: str = "max") -> dict[str, torch.Tensor]:
        wanted = {LAYER_INDEX[name]: name for name in layers}
        last = max(wanted)
        if last >= self.depth:
            raise ValueError(f"layer {wanted[last]} is deeper than this network ({LAYER_NAMES[self.depth - 1]})")
        x = (image - self.mean) / self.std
        if self.channels_last:
            # NHWC activations: oneDNN/cuDNN's faster conv kernels (bench: ~18 % per evaluation on this
            # CPU at 256 px). The image parameter itself stays NCHW (L-BFGS views its gradient flat).
            x = x.contiguous(memory_format=torch.channels_last)
        out = {}
        for i, module in enumerate(self.layers[: last + 1]):
            if isinstance(module, nn.ReLU):
                # In place on the conv's output unless that output is itself returned (a conv layer).
                x = torch.relu_(x) if self.inplace_relu and i - 1 not in wanted else torch.relu(x)
            elif pooling == "avg" and isinstance(module, nn.MaxPool2d):
                x = nn.functional.avg_pool2d(x, module.kernel_size, module.stride) * AVG_POOL_GAIN
            else:
                x = module(x)
            if i in wanted:
                out[wanted[i]] = x
        return out

    def train(self, mode: bool = True) -> VGGFeatures:
        # Lightning calls model.train() at fit start; the extractor stays in eval mode regardless.
        return super().train(False)


def imagenet_cache_path() -> Path:
    """Where torchvision looks for (and downloads) the ImageNet VGG19 weights."""
    from torchvision.models import VGG19_Weights

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(VGG19_Weights.IMAGENET1K_V1.url)


def _features_state_dict(state: dict, source: str) -> dict[str, torch.Tensor]:
    """Accept a full torchvision vgg19 state dict (`features.N.*`, classifier ignored) or features
    only (`N.*`); cast to float32; check names, shapes and finiteness."""
    if not isinstance(state, dict) or not state:
        raise WeightsError(f"{source}: not a VGG19 state dict (expected a mapping of tensor names)")
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    import torchvision

    feats = {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier.")}
    with torch.device("meta"):  # shapes only: nothing allocated or initialised, no download
        reference = torchvision.models.vgg19().features.state_dict()
    missing = sorted(set(reference) - set(feats), key=lambda k: int(k.split(".")[0]))
    unexpected = sorted(set(feats) - set(reference))
    if missing or unexpected:
        detail = f"missing {missing[:4]}" if missing else f"unexpected {unexpected[:4]}"
        raise WeightsError(f"{source}: not VGG19 feature weights ({detail})")
    out = {}
    for key, ref in reference.items():
        t = feats[key]
        if not isinstance(t, torch.Tensor) or t.shape != ref.shape:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise WeightsError(f"{source}: '{key}' has shape {shape}, VGG19 needs {tuple(ref.shape)}")
        t = t.float()
        if not torch.isfinite(t).all():
            raise WeightsError(f"{source}: '{key}' contains NaN or infinite values")
        out[key] = t
    return out


def _load_imagenet() -> dict:
    from torchvision.models import VGG19_Weights

    path = imagenet_cache_path()
    try:
        return VGG19_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
    except Exception as e:  # noqa: BLE001 (network and hash errors come in many types)
        raise WeightsError(
            f"cannot obtain the ImageNet VGG19 weights ({type(e).__name__}: {e}). "
            f"Download {VGG19_Weights.IMAGENET1K_V1.url} on a machine with internet and copy it to {path}, "
            f"or run with --weights PATH (a VGG19 state dict) or --weights random (untrained, for testing)"
        ) from None


# The test image the loaded weights are tried on: smooth colour ramps in [0, 1], the range every
# input has. 32 px is the least that reaches pool5 (five 2x2 pools).
PROBE_PX = 32


def _probe_image() -> torch.Tensor:
    ramp = torch.linspace(0.0, 1.0, PROBE_PX)
    y, x = ramp.view(-1, 1).expand(PROBE_PX, PROBE_PX), ramp.view(1, -1).expand(PROBE_PX, PROBE_PX)
    return torch.stack([x, y, (x + y) / 2]).unsqueeze(0)


def check_feature_scale(vgg: VGGFeatures) -> None:
    """Refuse weights whose network cannot be used for any picture: features or their Gram matrices
    (what every style target is made of) that are not finite on a test image in [0, 1]. Finite
    weights can still do it: scaled by 1e30, conv1_2's output is past float32's range. Each pair's
    loss would then be NaN from its first evaluation, which no learning rate mends, so the job is
    stopped here, once, naming the weights."""
    names = LAYER_NAMES[: vgg.depth]
    with torch.no_grad():
        feats = vgg(_probe_image().to(vgg.mean.device), names)
        for name in names:
            x = feats[name].float()
            what = name if not torch.isfinite(x).all() else f"{name}'s Gram matrix"
            if what != name and torch.isfinite(gram_matrix(x)).all():
                continue
            largest = max(float(p.detach().abs().max()) for p in vgg.parameters())
            raise WeightsError(
                f"{vgg.source}: the network overflows float32 ({what} is not finite for a test image in "
                f"[0, 1]; the largest weight is {largest:.3g}): these are not usable VGG19 weights "
                "(wrongly scaled?); no setting (lr, optimizer) can help"
            )


def _random_cache_file(torchvision: ModuleType) -> Path:
    name = f"random-vgg19-seed{RANDOM_WEIGHTS_SEED}-torch{torch.__version__}-torchvision{torchvision.__version__}.pt"
    return cache_dir() / name


def _random_features(torchvision: ModuleType) -> nn.Sequential:
    """torchvision's VGG19 `features` with its own (Kaiming) init, seeded: the same tensors on every
    machine with these torch and torchvision versions. Making them means building and initialising
    the whole VGG19, its ~120M-parameter classifier included (its draws come before the features'
    final ones), seconds of CPU for every process that uses `random`; so the features are kept in
    the cache directory after the first time, named by the seed and both versions, and read back
    bit for bit. A cache that cannot be read or written is only slower."""
    cache = _random_cache_file(torchvision)
    with torch.device("meta"):
        features = torchvision.models.vgg19().features
    try:
        state = torch.load(cache, map_location="cpu", weights_only=True)
        features = features.to_empty(device="cpu")
        features.load_state_dict(state)
        return features
    except Exception:  # noqa: BLE001 (absent, truncated, another layout: made again below)
        pass
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        features = torchvision.models.vgg19().features
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cache, lambda fh: torch.save(features.state_dict(), fh))
    except OSError:
        pass
    return features


def load_vgg(weights: str = "imagenet", layers: list[str] | None = None) -> VGGFeatures:
    """Build the frozen extractor, truncated after the deepest of `layers` (all of them if None)."""
    # Imported here: torchvision (with torch._dynamo, which its ops import) takes seconds, and
    # `validate` and the start of `run` need only the layer table of this module.
    import torchvision

    if weights == "random":
        features = _random_features(torchvision)
    else:
        # Every parameter is overwritten by the loaded weights: build on the meta device instead of
        # allocating and randomly initialising a whole VGG19 (classifier included, ~550 MB) first.
        with torch.device("meta"):
            features = torchvision.models.vgg19().features
        if weights == "imagenet":
            state, source = _load_imagenet(), "imagenet weights"
        else:
            problem = check_weights_path(weights)
            if problem:
                raise WeightsError(problem)
            try:
                state = torch.load(weights, map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001 (corrupt zip, pickle refusal, EOF...)
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise WeightsError(
                    f"--weights {weights}: cannot be loaded as a tensor file ({first[:200]}); "
                    "only plain state dicts are accepted (torch.load weights_only=True)"
                ) from None
            source = f"--weights {weights}"
        checked = _features_state_dict(state, source)
        features = features.to_empty(device="cpu")
        features.load_state_dict(checked)
    deepest = max(layers, key=LAYER_INDEX.__getitem__) if layers else LAYER_NAMES[-1]
    vgg = VGGFeatures(features, deepest, source=_weights_name(weights))
    vgg = vgg.to(memory_format=torch.channels_last) if vgg.channels_last else vgg
    if weights != "random":  # torchvision's seeded init is known to be fine
        check_feature_scale(vgg)
    return vgg


def _weights_name(weights: str) -> str:
    """The weights as messages name them, wherever they were chosen (--weights or the manifest)."""
    return f"{weights} weights" if weights in ("imagenet", "random") else f"weights file {weights}"
