"""StyleTransferModule through the product's own Lightning fit (`engine.stylize`): VGG passes
per pair, the frozen network, checkpoint contents, convergence, the evaluation budget and pixel
validity. Random weights, 32 px images, shallow layers: each fit takes well under a second."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from stylebatch.fit import engine
from stylebatch.fit.engine import PairHooks, PairResult
from stylebatch.fit.inputs import load_images, pass_inputs
from stylebatch.fit.losses import gram_matrix, total_variation
from stylebatch.fit.module import OptimizerSpec, StyleTransferModule
from stylebatch.fit.pixels import to_pil, to_tensor
from stylebatch.images import load_image
from stylebatch.job.config import Config
from tests.jobkit import ForwardCounter, fit_one, module_for

# engine.py filters this at import; pytest restores the warning filters around every test.
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*module\\(s\\) in eval mode"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec"),
]

BASE = dict(
    size=32,
    init="noise",
    content_layer="conv2_1",
    style_layers={"conv1_1": 1.0, "conv2_1": 1.0},
    checkpoint_every=10**6,
    log_every=10**6,
)


class Recorder(StyleTransferModule):
    """The product's module, watched: closure calls, the image each evaluation sees, and the
    evaluation count at every optimizer-step boundary."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.init = self.target.detach().clone()
        self.closure_calls = 0
        self.evaluated_ranges: list[tuple[float, float]] = []
        self.boundaries: list[int] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.closure_calls += 1
        self.evaluated_ranges.append((self.target.min().item(), self.target.max().item()))
        return super().training_step(batch, batch_idx)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)
        self.boundaries.append(self.evaluations)


@dataclass
class Run:
    result: PairResult
    module: Recorder
    cfg: Config
    vgg_forwards: int  # VGG passes during the fit (targets included)


class Pair:
    """One content/style pair run through engine.stylize on the CPU; `run(**overrides)`."""

    def __init__(self, vgg, content: Path, style: Path, tmp_path: Path, made: list[Recorder]):
        self.vgg, self.content, self.style, self._made = vgg, content, style, made
        self.output, self.ckpt = tmp_path / "out.png", tmp_path / "pair.ckpt"

    def run(self, hooks: PairHooks | None = None, **overrides: Any) -> Run:
        cfg = Config(**{**BASE, **overrides})
        with ForwardCounter(self.vgg) as calls:
            result = fit_one(self.vgg, self.content, self.style, cfg, self.ckpt, self.output, hooks, {"test": True})
        forwards = calls.n
        assert len(self._made) == 1
        return Run(result, self._made.pop(), cfg, forwards)

    def saved_output_losses(self, run: Run) -> tuple[dict[str, float], dict[str, float]]:
        """(losses of the initial image, losses of the PNG on disk), scored by a fresh module built
        from the same inputs: the saved file is what the user gets (clamped to [0, 1], 8 bits)."""
        inputs = pass_inputs(load_images(self.content, [self.style], run.cfg), run.cfg)
        content, style = inputs.content, inputs.styles[0]
        scorer = module_for(self.vgg, content, style, run.cfg)
        if self._made and self._made[-1] is scorer:  # built through the patched engine: not a fit's module
            self._made.pop()
        saved = to_tensor(load_image(self.output, run.cfg.max_pixels).rgb)
        assert saved.shape == content.shape == run.module.target.shape
        with torch.no_grad():
            first = {k: float(v.sum()) for k, v in scorer.losses(run.module.init).items()}
            last = {k: float(v.sum()) for k, v in scorer.losses(saved).items()}
        return first, last


@pytest.fixture
def pair(vgg, make_image, tmp_path, monkeypatch) -> Pair:
    made: list[Recorder] = []

    class Recording(Recorder):
        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(engine, "StyleTransferModule", Recording)
    content = make_image("content.png", size=(40, 30), seed=1)  # output 32x24
    style = make_image("style.jpg", size=(32, 32), seed=2)
    return Pair(vgg, content, style, tmp_path, made)


def vgg_digest(vgg) -> str:
    digest = hashlib.sha256()
    for key, tensor in sorted(vgg.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# --- VGG passes, frozen network, checkpoints ---------------------------------------------------


def test_vgg_runs_steps_plus_two_times_with_adam(pair):
    run = pair.run(optimizer="adam", steps=7)
    assert run.result.evaluations == run.module.evaluations == run.module.closure_calls == 7
    # Content and style targets once per pair, then one pass per evaluation.
    assert run.vgg_forwards == 7 + 2
    assert not run.result.interrupted and pair.output.is_file()


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_vgg_is_frozen_and_left_out_of_checkpoints(pair, vgg, optimizer):
    saved: list[tuple[int, dict]] = []

    def on_checkpoint(n: int) -> None:  # called once each checkpoint is on disk
        saved.append((n, torch.load(pair.ckpt, map_location="cpu", weights_only=True)))

    before = vgg_digest(vgg)
    steps, every = (6, 2) if optimizer == "adam" else (30, 1)
    run = pair.run(
        hooks=PairHooks(on_checkpoint=on_checkpoint), optimizer=optimizer, steps=steps, checkpoint_every=every
    )

    assert vgg_digest(vgg) == before
    assert all(p.grad is None and not p.requires_grad for p in vgg.parameters())
    assert not vgg.training
    assert saved, "no checkpoint was written"
    for n, ckpt in saved:
        assert not [k for k in ckpt["state_dict"] if k.startswith("vgg.")]
        assert list(ckpt["state_dict"]) == ["target"]
        assert ckpt["state_dict"]["target"].shape == run.module.target.shape
        assert ckpt["stylebatch"]["evaluations"] == n
        (opt_state,) = ckpt["optimizer_states"]
        (state,) = opt_state["state"].values()  # one parameter: the image
        assert ("exp_avg" in state) if optimizer == "adam" else ("old_dirs" in state and "d" in state)
    counts = [n for n, _ in saved]
    assert counts == sorted(set(counts)) and counts[-1] < steps  # the budget's end writes the output


# --- convergence ---------------------------------------------------------------------------------


def test_content_only_lbfgs_from_noise_cuts_content_loss_99_percent(pair):
    run = pair.run(optimizer="lbfgs", steps=40, style_weight=0.0)
    first, last = pair.saved_output_losses(run)
    assert first["content"] > 0.5  # noise starts far from the content (relative error)
    assert last["content"] <= 0.01 * first["content"], (first, last)
    # L-BFGS is clamped to [0, 1] after each optimizer step (not inside one); the file is the
    # 8-bit image of the final iterate.
    expected = to_tensor(to_pil(run.module.target))
    assert torch.equal(to_tensor(load_image(pair.output, run.cfg.max_pixels).rgb), expected)


def test_style_only_lbfgs_from_noise_cuts_style_loss_95_percent(pair):
    layers = {"conv1_1": 1.0, "conv2_1": 1.0, "conv3_1": 1.0}
    run = pair.run(optimizer="lbfgs", steps=20, content_weight=0.0, style_layers=layers)
    first, last = pair.saved_output_losses(run)
    assert first["style"] > 1.0
    assert last["style"] <= 0.05 * first["style"], (first, last)
    # Style only: the content is not reproduced (the content term stays of the order of the start's).
    assert last["content"] > 0.1 * first["content"]


# --- the evaluation budget ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "optimizer, line_search, steps",
    [("adam", "strong_wolfe", 9), ("lbfgs", "none", 33), ("lbfgs", "strong_wolfe", 33)],
)
def test_steps_is_a_budget_of_loss_evaluations(pair, optimizer, line_search, steps):
    run = pair.run(optimizer=optimizer, lbfgs_line_search=line_search, steps=steps)
    n = run.module.closure_calls
    # Every count agrees: closure calls, VGG passes less the two target passes, the module, the result.
    assert n == run.vgg_forwards - 2 == run.module.evaluations == run.result.evaluations
    assert not run.result.interrupted
    # The run stops at the first optimizer-step boundary at or past the budget.
    assert run.module.boundaries[-1] == n >= steps
    assert all(b < steps for b in run.module.boundaries[:-1])
    if optimizer == "adam":
        assert n == steps and len(run.module.boundaries) == steps
    else:
        assert len(run.module.boundaries) >= 2  # the budget spans several L-BFGS steps
        if line_search == "none":
            assert n == steps  # one evaluation per iteration: the cap is exact
    first, last = pair.saved_output_losses(run)
    assert last["total"] < first["total"]


# --- pixel validity ----------------------------------------------------------------------------


def test_adam_keeps_pixels_in_range_at_every_step_and_in_checkpoints(pair):
    ckpt_ranges: list[tuple[float, float]] = []

    def on_checkpoint(n: int) -> None:
        target = torch.load(pair.ckpt, map_location="cpu", weights_only=True)["state_dict"]["target"]
        ckpt_ranges.append((target.min().item(), target.max().item()))

    # A large learning rate: every step pushes pixels past 0 and 1.
    run = pair.run(hooks=PairHooks(on_checkpoint=on_checkpoint), optimizer="adam", lr=0.3, steps=8, checkpoint_every=1)
    assert len(run.module.evaluated_ranges) == 8 and len(ckpt_ranges) == 7
    for lo, hi in run.module.evaluated_ranges + ckpt_ranges:
        assert 0.0 <= lo and hi <= 1.0
    # The bounds were reached (so the clamp was doing work), and the final image is in range too.
    assert any(lo == 0.0 or hi == 1.0 for lo, hi in run.module.evaluated_ranges[1:])
    assert 0.0 <= run.module.target.min() and run.module.target.max() <= 1.0


def test_adam_resumed_at_the_bounds_matches_an_uninterrupted_run(pair):
    """A checkpoint holds the clamped image, so resuming continues exactly where the run stood."""
    settings = dict(optimizer="adam", lr=0.3, steps=6, checkpoint_every=100)
    straight = pair.run(**settings)
    expected = straight.module.target.detach().clone()
    pair.output.unlink()

    stopped = pair.run(hooks=PairHooks(should_stop=lambda: True), **settings)  # checkpoint after 1 step
    assert stopped.result.interrupted and stopped.result.evaluations == 1 and pair.ckpt.is_file()
    resumed = pair.run(**settings)
    assert resumed.result.evaluations == 6 and resumed.module.closure_calls == 5
    assert torch.equal(resumed.module.target.detach(), expected)
    assert min(lo for lo, _ in straight.module.evaluated_ranges) == 0.0  # the clamp was active


# --- the module's loss, as documented -------------------------------------------------------------


def test_module_losses_are_the_documented_weighted_sum(vgg):
    gen = torch.Generator().manual_seed(5)
    content, style = torch.rand(2, 3, 20, 16, generator=gen), torch.rand(2, 3, 24, 24, generator=gen)
    image = torch.rand(2, 3, 20, 16, generator=gen)
    cfg = Config(
        content_layer="conv2_1",
        style_layers={"conv1_1": 0.5, "relu2_1": 2.0},
        content_weight=3.0,
        style_weight=7.0,
        tv_weight=0.25,
    )
    module = module_for(vgg, content, style, cfg)
    with torch.no_grad():
        got = module.losses(image)
        f, fc = vgg(image, ["conv2_1"])["conv2_1"], vgg(content, ["conv2_1"])["conv2_1"]
        content_ref = ((f - fc) ** 2).flatten(1).mean(1) / (fc**2).flatten(1).mean(1)
        style_ref = torch.zeros(2)
        for name, w in cfg.style_layers.items():
            g, gs = gram_matrix(vgg(image, [name])[name]), gram_matrix(vgg(style, [name])[name])
            style_ref += w * ((g - gs) ** 2).flatten(1).mean(1) / (gs**2).flatten(1).mean(1)
    assert torch.allclose(got["content"], content_ref, rtol=1e-4)
    assert torch.allclose(got["style"], style_ref, rtol=1e-4)
    expected = 3.0 * content_ref + 7.0 * style_ref + 0.25 * total_variation(image)
    assert torch.allclose(got["total"], expected, rtol=1e-4)
    # Each pair of the batch is its own problem: pair 1 alone gives pair 1's losses.
    alone = module_for(vgg, content[1:], style[1:], cfg)
    with torch.no_grad():
        assert torch.allclose(alone.losses(image[1:])["total"], got["total"][1:], rtol=1e-4)


def test_an_unknown_optimizer_is_refused_never_run_as_another(vgg) -> None:
    """A new optimizer name that nothing handles fails loudly: in the config, and in the module even
    if a config let it through (it is never silently run as L-BFGS)."""
    from stylebatch.errors import ConfigError
    from stylebatch.job.config import resolve

    with pytest.raises(ConfigError, match="'optimizer' must be one of lbfgs, adam"):
        resolve([("test", {"optimizer": "sgd"})])
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        OptimizerSpec("sgd", 0.1)
    module = module_for(vgg, torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16), Config(**BASE))
    object.__setattr__(module.optimizer_spec, "name", "sgd")  # past every check: still refused
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        module.configure_optimizers()
