"""Style and colour controls, each checked by its effect: style blends, style scale, total variation,
preserve_color, init, pooling, coarse-to-fine scales (with a resume mid-scale), iterate averaging,
intermediate images, alpha; plus the example manifests and presets. Random weights, <= 48 px."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from stylebatch.cli.main import main
from stylebatch.errors import ConfigError
from stylebatch.fit import color, engine
from stylebatch.fit import inputs as controls
from stylebatch.fit.losses import total_variation
from stylebatch.fit.module import StyleTransferModule
from stylebatch.fit.pixels import to_pil, to_tensor
from stylebatch.fit.targets import blended_grams
from stylebatch.fit.vgg import AVG_POOL_GAIN
from stylebatch.images import load_image, resize
from stylebatch.job.config import Config, load_preset, resolve
from stylebatch.job.manifest import load_job
from tests.jobkit import REPO, final_target, fit_one, module_for, records, run_with_sigterm_at, tiny_job, write_manifest

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*module\\(s\\) in eval mode"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec"),
]

IMAGES = REPO / "manifests" / "images"
SHALLOW = dict(content_layer="conv2_1", style_layers={"conv1_1": 1.0, "conv2_1": 1.0})
BASE = dict(size=32, checkpoint_every=10**6, log_every=10**6, optimizer="adam", lr=0.05, **SHALLOW)


def fit(vgg, tmp_path: Path, content: Path, style: Any, name: str = "out", **overrides: Any) -> torch.Tensor:
    """One pair through the product's engine; returns the saved output (RGB) as (1, 3, H, W)."""
    cfg = Config(**{**BASE, **overrides})
    output = tmp_path / f"{name}.png"
    result = fit_one(vgg, content, style, cfg, tmp_path / f"{name}.ckpt", output)
    assert not result.interrupted
    return to_tensor(load_image(output, 10**8).rgb)


def content_at(path: Path, wh: tuple[int, int]) -> torch.Tensor:
    return to_tensor(resize(load_image(path, 10**8).rgb, wh))


# 1. Style blends ----------------------------------------------------------------------------------


def test_blend_weights_one_zero_give_exactly_the_single_styles_grams(vgg, make_image) -> None:
    a = to_tensor(load_image(make_image("a.png", (32, 32), seed=1), 10**6).rgb)
    b = to_tensor(load_image(make_image("b.png", (40, 24), seed=2), 10**6).rgb)
    c = to_tensor(load_image(make_image("c.png", (32, 24), seed=3), 10**6).rgb)
    single = Config(**SHALLOW)
    one_zero = resolve([("test", {**SHALLOW, "style_blend": [1, 0]})])
    g_a = blended_grams(vgg, [a], single)
    g_blend = blended_grams(vgg, [a, b], one_zero)
    assert set(g_a) == set(module_for(vgg, c, [a, b], one_zero).style_layers)
    assert all(torch.equal(g_blend[k], g_a[k]) for k in g_a)

    half = resolve([("test", {**SHALLOW, "style_blend": [3, 3]})])
    assert half.style_blend == [0.5, 0.5]  # normalised
    g_b = blended_grams(vgg, [b], single)
    g_half = blended_grams(vgg, [a, b], half)
    for k in g_a:
        assert torch.allclose(g_half[k], (g_a[k] + g_b[k]) / 2, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(g_half[k], g_a[k])


def _job(root: Path, body: dict[str, Any]) -> Any:
    manifest = write_manifest(root / "job.yaml", {"output_dir": "out", "defaults": {"size": 32, **SHALLOW}, **body})
    return load_job(manifest, weights="random")


def test_blend_in_pairs_and_grid_names_ids_and_problems(tmp_path: Path, make_image) -> None:
    for i, name in enumerate(["c.png", "s1.png", "s2.png", "s3.png"]):
        make_image(name, (32, 32), seed=i)

    def blend(weights: list[float], s2: str = "s2.png") -> Any:
        return _job(tmp_path, {"pairs": [{"content": "c.png", "style": ["s1.png", s2], "style_blend": weights}]})

    job = blend([0.7, 0.3])
    assert not job.all_problems, job.all_problems
    pair = job.pairs[0]
    assert pair.name == "c__s1-0.7+s2-0.3" and [p.name for p in pair.styles] == ["s1.png", "s2.png"]
    assert blend([7, 3]).pairs[0].id == pair.id  # the same weights, normalised
    assert blend([0.6, 0.4]).pairs[0].id != pair.id  # the weights are in the id
    shutil.copy(tmp_path / "s3.png", tmp_path / "s2b.png")
    assert blend([0.7, 0.3], "s2b.png").pairs[0].id != pair.id  # so is every style file's bytes
    assert "1 style file" not in " ".join(blend([0.7, 0.3]).all_problems)
    assert any("3 weight(s) for 2 style file(s)" in p for p in blend([1, 1, 1]).all_problems)

    # A grid: a plain list means alternatives; one blend is one entry {blend, weights}.
    job = _job(
        tmp_path,
        {"grid": {"content": ["c.png"], "style": ["s1.png", {"blend": ["s1.png", "s2.png"], "weights": [1, 3]}]}},
    )
    assert not job.all_problems, job.all_problems
    assert [p.name for p in job.pairs] == ["c__s1", "c__s1-0.25+s2-0.75"]
    assert job.pairs[1].config.style_blend == [0.25, 0.75] and job.pairs[0].config.style_blend is None
    bad = _job(tmp_path, {"grid": {"content": ["c.png"], "style": [{"blend": ["s1.png"]}]}})
    assert any("at least two style files" in p for p in bad.all_problems)


# 2. Style scale -----------------------------------------------------------------------------------


def test_style_scale_and_style_size_set_the_style_size_at_every_scale(make_image) -> None:
    content, style = make_image("c.png", (40, 30), seed=1), make_image("s.png", (64, 48), seed=2)

    def style_sizes(**kw: Any) -> list[tuple[int, int]]:
        cfg = resolve([("test", {"size": 32, **kw})])
        images = controls.load_images(content, [style], cfg)
        return [
            tuple(controls.pass_inputs(images, cfg, k).styles[0].shape[-1:-3:-1]) for k in range(len(cfg.scale_sizes))
        ]

    assert style_sizes() == [(32, 24)]  # the output's longer side
    assert style_sizes(style_scale=0.5) == [(16, 12)]
    assert style_sizes(style_scale=2.0, scales=[16]) == [(32, 24), (64, 48)]  # relative to each pass
    assert style_sizes(style_size=20, scales=[16]) == [(20, 15), (20, 15)]  # fixed


# 3. Total variation -------------------------------------------------------------------------------


def test_tv_weight_lowers_the_outputs_total_variation(vgg, tmp_path: Path, make_image) -> None:
    content, style = make_image("c.png", (32, 32), seed=1), make_image("s.png", (32, 32), seed=2)
    kw = dict(init="noise", steps=25, optimizer="lbfgs", lr=None)
    plain = fit(vgg, tmp_path, content, style, "plain", **kw)
    smooth = fit(vgg, tmp_path, content, style, "smooth", tv_weight=1e4, **kw)  # TV is not normalised
    assert float(total_variation(smooth)) < 0.5 * float(total_variation(plain))


# 4. Colour control --------------------------------------------------------------------------------


def _chroma(x: torch.Tensor) -> torch.Tensor:
    return color.rgb_to_ycbcr(x)[:, 1:]


def test_preserve_color_modes(vgg, tmp_path: Path) -> None:
    """The cat in the Great Wave's blues: luminance and post keep the cat's chroma (to 8-bit
    rounding), none does not; histogram gives the style the cat's colours before transfer."""
    content, style = IMAGES / "chelsea.jpg", IMAGES / "great_wave.jpg"
    kw = dict(size=48, steps=30, style_weight=1e4)
    outs = {
        mode: fit(vgg, tmp_path, content, style, mode, preserve_color=mode, **kw)
        for mode in ("none", "luminance", "post", "histogram")
    }
    c = content_at(content, outs["none"].shape[-1:-3:-1])
    dist = {m: float((_chroma(o) - _chroma(c)).abs().mean()) for m, o in outs.items()}
    assert dist["luminance"] < 0.01 and dist["post"] < 0.01, dist
    assert dist["none"] > 5 * max(dist["luminance"], dist["post"]), dist
    # Luminance mode still transfers style: its luma moved away from the content's.
    assert float((color.luminance(outs["luminance"]) - color.luminance(c)).abs().mean()) > 0.02
    # Histogram: the style the network sees has the content's colour mean and covariance ...
    cfg = resolve([("test", {**BASE, **kw, "preserve_color": "histogram"})])
    inputs = controls.pass_inputs(controls.load_images(content, [style], cfg), cfg)
    s, cc = inputs.styles[0].reshape(3, -1), inputs.colour.reshape(3, -1)
    assert torch.allclose(s.mean(1), cc.mean(1), atol=0.02)
    assert torch.allclose(torch.cov(s), torch.cov(cc), atol=0.01)
    # ... so the output's mean colour stays nearer the content's than without it.
    mean_dist = {m: float((o.mean((2, 3)) - c.mean((2, 3))).abs().sum()) for m, o in outs.items()}
    assert mean_dist["histogram"] < 0.5 * mean_dist["none"], mean_dist


@pytest.mark.parametrize("method", ["chol", "pca", "sym"])
def test_match_color_gives_the_references_mean_and_covariance(method: str) -> None:
    g = torch.Generator().manual_seed(0)
    image = 0.5 + 0.1 * torch.randn(1, 3, 20, 20, generator=g)
    mix = torch.tensor([[1.0, 0.3, 0.0], [0.0, 1.0, 0.2], [0.1, 0.0, 1.0]])
    ref = 0.4 + 0.08 * torch.einsum("ij,bjhw->bihw", mix, torch.randn(1, 3, 16, 16, generator=g))
    out = color.match_color(image, ref, method).reshape(3, -1).double()
    r = ref.reshape(3, -1).double()
    assert torch.allclose(out.mean(1), r.mean(1), atol=1e-5)
    assert torch.allclose(torch.cov(out, correction=0), torch.cov(r, correction=0), atol=1e-4)


# 5. Init ------------------------------------------------------------------------------------------


def test_init_style_stats_and_image(vgg, tmp_path: Path, make_image, monkeypatch) -> None:
    content, style = make_image("c.png", (40, 30), seed=1), make_image("s.png", (32, 32), seed=2)
    start = make_image("start.png", (20, 20), seed=3)
    cfg = resolve([("test", {**BASE, "init": "style_stats", "seed": 5})])
    images = controls.load_images(content, [style], cfg)
    inputs = controls.pass_inputs(images, cfg)
    noise = controls.initial_image(images, cfg, inputs)
    s = inputs.styles[0]
    assert noise.shape == inputs.content.shape
    assert torch.allclose(noise.mean((0, 2, 3)), s.mean((0, 2, 3)), atol=0.03)
    assert torch.allclose(noise.std((0, 2, 3)), s.std((0, 2, 3)), rtol=0.2)
    assert torch.equal(noise, controls.initial_image(images, cfg, inputs))  # seeded

    # An image file, through the engine: the fit starts from it, resized to the output.
    starts = []

    class Watch(StyleTransferModule):
        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            starts.append(self.target.detach().clone())

    monkeypatch.setattr(engine, "StyleTransferModule", Watch)
    fit(vgg, tmp_path, content, style, init=str(start), steps=1)
    assert torch.equal(starts[0], to_tensor(resize(load_image(start, 10**6).rgb, (32, 24))))


def test_init_image_is_validated_and_identified_by_its_bytes(tmp_path: Path, make_image) -> None:
    make_image("c.png", (32, 32), seed=1), make_image("s.png", (32, 32), seed=2)
    make_image("start.png", (32, 32), seed=3)
    (tmp_path / "text.png").write_text("not an image")

    def job(init: str) -> Any:
        return _job(tmp_path, {"pairs": [{"content": "c.png", "style": "s.png", "init": init}]})

    assert not job("start.png").all_problems
    assert any("init" in p and "not found" in p for p in job("missing.png").all_problems)
    assert any("init" in p and "text.png" in p for p in job("text.png").all_problems)
    assert any("did you mean 'content'" in p for p in job("contnet").all_problems)
    first = job("start.png").pairs[0].id
    shutil.copy(tmp_path / "start.png", tmp_path / "moved.png")
    assert job("moved.png").pairs[0].id == first  # the bytes, not the path
    make_image("start.png", (32, 32), seed=4)
    assert job("start.png").pairs[0].id != first


# 6. Pooling ---------------------------------------------------------------------------------------


def test_avg_pooling_is_scaled_average_pooling_and_job_level(vgg, tmp_path: Path, make_image) -> None:
    x = to_tensor(load_image(make_image("x.png", (32, 32), seed=1), 10**6).rgb)
    with torch.no_grad():
        avg = vgg(x, ["relu2_1"], pooling="avg")["relu2_1"]
        mx = vgg(x, ["relu2_1"])["relu2_1"]
        h = (x - vgg.mean) / vgg.std
        for m in vgg.layers[:4]:  # conv1_1 relu1_1 conv1_2 relu1_2
            h = m(h)
        h = F.avg_pool2d(h, 2, 2) * AVG_POOL_GAIN
        by_hand = vgg.layers[6](vgg.layers[5](h))  # conv2_1, relu2_1
    assert torch.equal(avg, by_hand) and not torch.equal(avg, mx)

    make_image("c.png", (32, 32), seed=1), make_image("s.png", (32, 32), seed=2)
    pairs = [
        {"content": "c.png", "style": "s.png", "pooling": "avg"},
        {"content": "c.png", "style": "s.png", "name": "other"},
    ]
    assert any("'pooling' is job-level" in p for p in _job(tmp_path, {"pairs": pairs}).problems)
    pairs[1]["pooling"] = "avg"
    assert not _job(tmp_path, {"pairs": pairs}).all_problems


# 7-9. Coarse-to-fine, iterate averaging, intermediate images --------------------------------------

SCALED = {
    "scales": [16, 24],
    "steps": 30,
    "checkpoint_every": 4,
    "save_every": 5,
    "ema_decay": 0.8,
    "content_layer": "conv3_1",
    "style_layers": {"conv1_1": 1.0, "conv2_1": 1.0, "conv3_1": 1.0},
}
NAMES = ("a__s1", "b__s2")  # jobkit's pairs: a 40x30 content with Adam, a 30x40 one with L-BFGS


def _final(out: Path, name: str) -> dict[str, torch.Tensor]:
    ckpt = torch.load(out / ".stylebatch" / "pairs" / name / "last.ckpt", weights_only=True)
    return {k: v for k, v in ckpt["state_dict"].items() if k in ("target", "ema", "ema_steps")}


@pytest.mark.slow
def test_scales_sizes_and_a_resume_mid_scale_matches_the_uninterrupted_run(tmp_path: Path) -> None:
    base = tmp_path / "base"
    assert main(["run", str(tiny_job(base, defaults=SCALED)), "--weights", "random"]) == 0
    out = base / "out"
    # Each pass's images (save_every) have that pass's size: passes end at 10, 20, 30 evaluations.
    pair_dir = out / ".stylebatch" / "pairs" / "a__s1"
    sizes = {int(p.stem[5:]): load_image(p, 10**6).rgb.size for p in pair_dir.glob("iter_*.png")}
    assert sizes == {5: (16, 12), 10: (16, 12), 15: (24, 18), 20: (24, 18), 25: (32, 24), 30: (32, 24)}
    assert load_image(out / "b__s2.png", 10**6).rgb.size == (24, 32)
    assert final_target(out, "a__s1").shape[-2:] == (24, 32)
    baseline = {n: _final(out, n) for n in NAMES}

    # SIGTERM in the middle of the second pass of the first pair, then the same command again.
    root = tmp_path / "resumed"
    manifest = tiny_job(root, defaults=SCALED)
    code, fired = run_with_sigterm_at(manifest, 15, "--weights", "random")
    assert fired and code == 3
    ckpt = torch.load(root / "out" / ".stylebatch" / "pairs" / "a__s1" / "last.ckpt", weights_only=True)
    # The stop is seen at a step boundary near 15 (the stop hooks are polled, not asked every step).
    done = ckpt["stylebatch"]["evaluations"]
    assert ckpt["stylebatch"]["scale"] == 1 and 10 < done < 20
    assert ckpt["state_dict"]["target"].shape[-2:] == (18, 24) and int(ckpt["state_dict"]["ema_steps"]) == done - 10
    assert records(root / "out")["a__s1"]["status"] == "interrupted"

    assert main(["run", str(manifest), "--weights", "random"]) == 0
    for name in NAMES:
        resumed = _final(root / "out", name)
        assert resumed.keys() == baseline[name].keys() == {"target", "ema", "ema_steps"}
        for key in resumed:
            assert torch.equal(resumed[key], baseline[name][key]), f"{name}: {key} differs"
        resumed_png, base_png = (load_image(d / f"{name}.png", 10**6).rgb for d in (root / "out", out))
        assert resumed_png.tobytes() == base_png.tobytes()


def test_ema_output_is_the_average_of_the_iterates(vgg, tmp_path: Path, make_image, monkeypatch) -> None:
    content, style = make_image("c.png", (32, 32), seed=1), make_image("s.png", (32, 32), seed=2)
    iterates: list[torch.Tensor] = []

    class Watch(StyleTransferModule):
        def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
            super().optimizer_step(*args, **kwargs)
            iterates.append(self.target.detach().clone())

    monkeypatch.setattr(engine, "StyleTransferModule", Watch)
    d = 0.6
    out = fit(vgg, tmp_path, content, style, init="noise", steps=4, lr=0.1, ema_decay=d, keep_checkpoints=True)
    assert len(iterates) == 4
    # By hand: sum_i (1 - d) d^(t - i) x_i / (1 - d^t) over the t = 4 iterates.
    t = len(iterates)
    average = sum((1 - d) * d ** (t - i) * x for i, x in enumerate(iterates, 1)) / (1 - d**t)
    state = torch.load(tmp_path / "out.ckpt", weights_only=True)["state_dict"]
    assert int(state["ema_steps"]) == t
    assert torch.allclose(state["ema"] / (1 - d**t), average, atol=1e-6)
    assert torch.equal(out, to_tensor(to_pil(average)))  # the saved output is the average ...
    assert not torch.equal(out, to_tensor(to_pil(iterates[-1])))  # ... not the last iterate
    assert torch.equal(state["target"], iterates[-1])


def test_save_every_is_bookkeeping() -> None:
    cfg = Config()
    assert "save_every" not in cfg.identity() and "ema_decay" in cfg.identity() and "scales" in cfg.identity()


# 11. Alpha ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["none", "luminance"])
def test_content_alpha_survives(vgg, tmp_path: Path, mode: str) -> None:
    content = IMAGES / "retina_alpha.png"
    fit(vgg, tmp_path, content, IMAGES / "great_wave.jpg", steps=2, preserve_color=mode)
    saved = load_image(tmp_path / "out.png", 10**6)
    want = resize(load_image(content, 10**8).alpha, saved.rgb.size)
    assert saved.alpha is not None and saved.alpha.tobytes() == want.tobytes()
    assert len(set(want.tobytes())) > 1  # really transparent somewhere


# Example manifests and presets --------------------------------------------------------------------


@pytest.mark.parametrize("manifest", sorted((REPO / "manifests" / "controls").glob("*.yaml")), ids=lambda p: p.stem)
def test_control_example_manifests_validate(manifest: Path) -> None:
    job = load_job(manifest, weights="random")
    assert not job.all_problems, job.all_problems
    assert job.pairs


@pytest.mark.parametrize("preset", ["jcjohnson", "modern", "fast-preview"])
def test_presets_resolve(preset: str) -> None:
    cfg = resolve([load_preset(preset)])
    assert cfg.size >= 256


def test_bad_control_values_are_refused() -> None:
    for bad, words in [
        ({"scales": [64, 32]}, "ascending"),
        ({"scales": {"factor": 1.0, "min": 8}}, "factor"),
        ({"size": 64, "scales": [64]}, "smaller than 'size'"),
        ({"ema_decay": 1.0}, "<="),
        ({"preserve_color": "lum"}, "luminance"),
        ({"style_blend": [0, 0]}, "not all 0"),
        ({"pooling": "mean"}, "max, avg"),
    ]:
        with pytest.raises(ConfigError) as e:
            resolve([("test", bad)])
        assert words in str(e.value), (bad, str(e.value))
