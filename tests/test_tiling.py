"""Exact tiling (tiling.py): the tiled loss and gradient equal the untiled ones up to float rounding,
for shallow and deep layer sets, at any grid offset that is a multiple of the unit; controls show
the comparison can fail (a halo below the receptive field, an unaligned offset). Then the product's
paths: targets, the module, L-BFGS and Adam fits, coarse-to-fine, batching off, and a tiled run
that resumes bit-identically after SIGTERM. Random weights, images of at most 128 px."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stylebatch import geometry
from stylebatch.fit import tiling
from stylebatch.fit.targets import compute_targets
from stylebatch.job.config import Config
from tests.jobkit import ForwardCounter, final_target, module_for, records, run_with_sigterm_at, tiny_job

# Tiling computes the Gram loss exactly tile by tile; the Wasserstein loss (the default) is refused
# with a tile (config check), so every tiled case here is a Gram one.
SHALLOW = dict(content_layer="conv2_1", style_layers={"conv1_1": 1.0, "conv2_1": 0.5}, style_loss="gram")
DEEP = dict(
    content_layer="conv4_2",
    style_layers={"conv1_1": 1.0, "relu2_1": 1.0, "conv3_1": 1.0, "conv4_1": 1.0, "conv5_1": 1.0},
    style_loss="gram",
)
TOLERANCE = 1e-5


def test_receptive_field_and_halo_follow_from_the_layers() -> None:
    assert geometry.receptive_field("relu5_1") == 156  # the figure every VGG receptive-field table gives
    assert geometry.receptive_field("conv1_1") == 3
    assert geometry.halo(list(DEEP["style_layers"])) == 80  # 70 px rounded up to the 16 px unit
    assert geometry.grid_unit(list(DEEP["style_layers"])) == 16
    assert geometry.halo(["conv1_1", "conv2_1"]) == 16  # 2 + 2 px, one unit
    assert geometry.grid_unit(["pool5"]) == 32


def test_grid_covers_the_image_once_and_crops_stay_inside() -> None:
    h, w = 100, 77
    tiles = tiling.grid(h, w, 32, 16, (16, 0))
    covered = torch.zeros(h, w, dtype=torch.int64)
    for t in tiles:
        covered[t.y0 : t.y1, t.x0 : t.x1] += 1
        assert 0 <= t.cy0 <= t.y0 < t.y1 <= t.cy1 <= h and 0 <= t.cx0 <= t.x0 < t.x1 <= t.cx1 <= w
    assert covered.eq(1).all()


def test_offsets_are_seeded_multiples_of_the_unit_that_move() -> None:
    offsets = [tiling.offset_for(7, n, 128, 16) for n in range(1, 40)]
    assert offsets == [tiling.offset_for(7, n, 128, 16) for n in range(1, 40)]  # the same on a resume
    assert all(0 <= o < 128 and o % 16 == 0 for pair in offsets for o in pair)
    assert len(set(offsets)) > 10
    assert offsets != [tiling.offset_for(8, n, 128, 16) for n in range(1, 40)]  # another pair, other offsets


def _module(vgg, layers: dict, hw: tuple[int, int], batch: int = 1, **cfg_kw):
    g = torch.Generator().manual_seed(0)
    # No TV unless asked: the explicit-grid sum below holds the content and style terms only.
    cfg = Config(**{"optimizer": "adam", "tv_weight": 0.0, **layers, **cfg_kw})
    content = torch.rand(batch, 3, *hw, generator=g)
    style = torch.rand(batch, 3, 64, 64, generator=g)
    return module_for(vgg, content, style, cfg, init=torch.rand(batch, 3, *hw, generator=g))


def _losses(module, tile=None, margin=None, offset=(0, 0)):
    """(total loss per image, image gradient): untiled, or tiled on an explicit grid."""
    x = module.target.detach().clone().requires_grad_()
    if tile is None:
        total = module.losses(x)["total"]
    else:
        layers = [module.content_layer, *module.style_layers]
        grams = {n: getattr(module, f"gram_{n}") for n in module.style_layers}
        weights = {n: getattr(module, f"weight_{n}") for n in module.style_layers}
        grid = tiling.grid(*x.shape[-2:], tile, geometry.halo(layers) if margin is None else margin, offset)
        obj = tiling.TiledObjective(
            module.vgg,
            module.content_layer,
            module.style_layers,
            module.pooling,
            module.content_target,
            module.content_scale,
            grams,
            weights,
            grid,
        )
        c, s = tiling.TiledLoss.apply(x, obj)
        total = module.alpha * c + module.beta * s
    total.sum().backward()
    return total.detach(), x.grad


def _error(a: tuple, b: tuple) -> float:
    """The larger relative error of the losses and of the gradient (as a whole vector)."""
    loss = ((a[0] - b[0]).abs() / b[0].abs()).max().item()
    grad = ((a[1] - b[1]).norm() / b[1].norm()).item()
    return max(loss, grad)


@pytest.mark.parametrize(
    "layers, hw, tile, offset",
    [
        (SHALLOW, (48, 64), 16, (0, 0)),
        (SHALLOW, (50, 63), 32, (16, 16)),  # odd sides: pools floor, border tiles end at the image's edge
        (DEEP, (176, 64), 64, (0, 0)),  # tall: crops begin and end inside the image
        (DEEP, (176, 64), 64, (48, 16)),
    ],
)
def test_tiled_loss_and_gradient_equal_the_untiled(vgg, layers: dict, hw: tuple, tile: int, offset: tuple) -> None:
    module = _module(vgg, layers, hw)
    assert _error(_losses(module, tile, offset=offset), _losses(module)) < TOLERANCE


@pytest.mark.parametrize(
    "layers, hw, tile, margin, offset",
    [
        (SHALLOW, (48, 64), 16, 0, (0, 0)),  # no halo: conv1_1..conv2_1 see 4 px past each edge
        (DEEP, (176, 64), 64, 48, (0, 0)),  # below conv5_1's 70 px
        (SHALLOW, (48, 64), 16, None, (1, 0)),  # an odd edge splits pool1's windows
        (DEEP, (176, 64), 64, None, (8, 8)),  # a multiple of 8, not 16: pool4's windows split
    ],
)
def test_controls_too_small_a_halo_or_an_unaligned_offset_do_not_match(vgg, layers, hw, tile, margin, offset) -> None:
    module = _module(vgg, layers, hw)
    try:
        error = _error(_losses(module, tile, margin, offset), _losses(module))
    except RuntimeError:  # unaligned crops can even disagree with the whole image's shapes
        error = float("inf")
    assert error > 1e-3


def test_batch_and_total_variation_through_the_module(vgg) -> None:
    module = _module(vgg, SHALLOW, (48, 64), batch=2, tv_weight=3.0)
    untiled = _losses(module)
    module.tile, module.evaluations = 16, 5  # the module's own seeded grid for evaluation 5
    assert _error(_losses(module), untiled) < TOLERANCE


def test_tiled_targets_equal_one_pass(vgg) -> None:
    cfg = Config(**DEEP)
    g = torch.Generator().manual_seed(1)
    content, style = torch.rand(1, 3, 112, 128, generator=g), torch.rand(1, 3, 96, 100, generator=g)
    whole, tiled = compute_targets(vgg, content, [style], cfg), compute_targets(vgg, content, [style], cfg, tile=32)
    assert ((tiled.content - whole.content).norm() / whole.content.norm()) < TOLERANCE
    for name in cfg.style_layers:
        assert ((tiled.grams[name] - whole.grams[name]).norm() / whole.grams[name].norm()) < TOLERANCE


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_fits_tiled_follow_the_untiled_fit(tmp_path: Path, make_image, optimizer: str) -> None:
    """Whole fits through the product's path (engine.stylize), coarse-to-fine: the 32 px pass is
    below the tile (untiled), the 64 px pass tiled; the results agree within rounding."""
    from stylebatch.fit.vgg import load_vgg
    from tests.jobkit import fit_one

    # L-BFGS's line search magnifies round-off on some images (seeds 1 and 2: 0.1); these fit calmly.
    content, style = make_image("c.png", (64, 48), seed=5), make_image("s.png", (48, 48), seed=6)
    base = dict(
        size=64,
        scales=[32],
        steps=24,
        optimizer=optimizer,
        lbfgs_history=5,
        init="noise",
        checkpoint_every=10**6,
        log_every=10**6,
        keep_checkpoints=True,
        style_weight=2.0,
        tv_weight=0.0,
        lr=0.02 if optimizer == "adam" else None,
        **SHALLOW,
    )  # a calm fit: round-off stays round-off
    vgg = load_vgg("random", Config(**SHALLOW).layers_used)
    images, passes = {}, {}
    for tile in (None, 16):
        out = tmp_path / f"t{tile}"
        with ForwardCounter(vgg) as calls:
            result = fit_one(vgg, content, style, Config(**base, tile=tile), out / "last.ckpt", out / "o.png")
        passes[tile] = calls.n
        assert result.evaluations >= 24
        images[tile] = torch.load(out / "last.ckpt", weights_only=True)["state_dict"]["target"]
    assert passes[16] > 3 * passes[None]  # the 64 px pass really ran tile by tile (2 VGG passes per tile)
    assert (images[16] - images[None]).abs().max() < 1e-3


def test_tiled_pairs_never_batch(tmp_path: Path) -> None:
    from stylebatch.memory.autosize import load_job
    from stylebatch.runner.plan import batch_key

    manifest = tiny_job(
        tmp_path,
        pairs=[{"content": "images/a.png", "style": "images/s1.png", "optimizer": "adam"}],
        defaults={"tile": 16, "style_loss": "gram"},
    )
    pair = load_job(manifest).valid_pairs[0]
    assert batch_key(pair) is None
    pair.config = pair.config.__class__(**{**pair.config.to_dict(), "tile": None})
    assert batch_key(pair) is not None  # the control: the same pair untiled may batch


@pytest.mark.slow
def test_tiled_run_resumes_bit_identical_after_sigterm(tmp_path: Path) -> None:
    pairs = [
        {"content": "images/a.png", "style": "images/s1.png", "optimizer": "adam", "lr": 0.05},
        {"content": "images/b.png", "style": "images/s2.png", "optimizer": "lbfgs", "lbfgs_history": 5},
    ]
    defaults = {"tile": 16, **SHALLOW}
    whole = tiny_job(tmp_path / "whole", pairs, defaults)
    assert run_with_sigterm_at(whole, 10**9, "--weights", "random")[0] == 0
    cut = tiny_job(tmp_path / "cut", pairs, defaults)
    code, fired = run_with_sigterm_at(cut, 15, "--weights", "random")
    assert fired and code == 3
    assert run_with_sigterm_at(cut, 10**9, "--weights", "random")[0] == 0
    for name in records(tmp_path / "whole" / "out"):
        assert torch.equal(final_target(tmp_path / "cut" / "out", name), final_target(tmp_path / "whole" / "out", name))


@pytest.mark.parametrize(
    "value, layers, problem",
    [
        (24, None, "'tile' must be a multiple of 16 px"),
        ("big", None, "'tile' must be integer or auto or empty"),
        (48, {"pool5": 1.0}, "tiles must be a multiple of 32 px"),  # pool5's windows are 32 px
        ("auto", None, None),
        (None, None, None),
        (64, {"pool5": 1.0}, None),
    ],
)
def test_tile_values(value, layers, problem) -> None:
    from stylebatch.errors import ConfigError
    from stylebatch.job.config import resolve

    overrides = {"tile": value, "style_loss": "gram", **({"style_layers": layers} if layers else {})}
    if problem is None:
        assert resolve([("test", overrides)]).tile == value
    else:
        with pytest.raises(ConfigError, match=problem):
            resolve([("test", overrides)])
