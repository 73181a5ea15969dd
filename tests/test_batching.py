"""Batches follow separate runs: Adam pairs, coarse-to-fine passes, weight sweeps, snapshots and
each member's own losses; checkpoints split per pair and join back exactly; a batch resumes exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from stylebatch.cli.main import main
from stylebatch.fit.checkpoint import join_checkpoints, split_checkpoint
from stylebatch.fit.vgg import load_vgg
from stylebatch.job.config import Config
from tests.jobkit import final_target, module_for, records, run_subprocess, run_with_sigterm_at, temp_files, tiny_job

CFG = Config(
    optimizer="adam",
    lr=0.05,
    size=32,
    steps=8,
    batch_size=3,
    style_layers={"conv1_1": 1.0, "conv2_1": 1.0, "conv3_1": 1.0},
    content_layer="conv2_2",
    # The Gram loss: these tests check the batch's arithmetic to float32 rounding. The Wasserstein
    # loss's eigendecomposition amplifies that rounding (a batched convolution's) ~25x; its members'
    # independence is checked exactly in float64 below.
    style_loss="gram",
)


def _inputs(i: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + i)
    return torch.rand(1, 3, 24, 32, generator=g), torch.rand(1, 3, 20 + 4 * i, 32, generator=g)  # styles differ in size


def _adam(module, steps: int) -> torch.Tensor:
    opt = torch.optim.Adam([module.target], lr=module.optimizer_spec.lr)
    for _ in range(steps):
        opt.zero_grad()
        module.losses(module.target)["total"].sum().backward()
        opt.step()
        with torch.no_grad():
            module.target.clamp_(0, 1)
    return module.target.detach()


def _batch(vgg, cfgs: list[Config]):
    """One module for the members i = 0.. with their own inputs and configs (engine.build_module)."""
    from stylebatch.fit.engine import build_module
    from stylebatch.fit.inputs import start_image

    parts = []
    for i, cfg in enumerate(cfgs):
        c, s = _inputs(i)
        parts.append((c, [s], cfg, start_image(c, [s], cfg)))
    return build_module(vgg, parts)


def test_batched_adam_matches_separate_runs() -> None:
    vgg = load_vgg("random", CFG.layers_used)
    cfgs = [Config(**{**CFG.to_dict(), "init": "noise", "seed": i}) for i in range(3)]
    separate = [_adam(module_for(vgg, *_inputs(i), cfgs[i]), 8) for i in range(3)]
    batched = _adam(_batch(vgg, cfgs), 8)
    assert batched.shape == (3, 3, 24, 32)
    for i in range(3):
        # Float rounding of batched convs only, which Adam's normalised step can grow into lr-sized
        # moves where a gradient is ~0 (here up to 0.06 at a few pixels of one pair after 8 steps at
        # style_weight 0.03; ~1e-6 at 2). On tiny images and 8 steps the mean stays small; over a whole
        # fit at lr 0.1 the strokes differ (README, Batching), so this checks the arithmetic, not a promise.
        diff = (batched[i : i + 1] - separate[i]).abs()
        assert diff.mean() < 5e-3, f"pair {i} differs by {diff.mean():.2e} on average"
    # ...and the pairs really are different images (the test is not comparing three copies)
    assert (separate[0] - separate[1]).abs().max() > 0.05


def test_members_with_different_weights_match_their_separate_runs() -> None:
    """Loss weights are (B,) tensors: members with other alpha, beta, TV and layer weights (and one
    not normalised) share a module; each gets exactly its own gradient, and after 8 Adam steps each
    is its separate run within the batching tolerance."""
    vgg = load_vgg("random", CFG.layers_used)
    variants = [
        {"style_weight": 0.1},
        {"style_weight": 30.0, "tv_weight": 5.0},
        {"content_weight": 0.2, "style_layers": {"conv1_1": 3.0, "conv2_1": 0.0, "conv3_1": 1.0}},
        {"normalize_losses": False, "style_weight": 1e3},
    ]  # absolute losses: ~1e-4 here
    cfgs = [Config(**{**CFG.to_dict(), "init": "noise", "seed": i, **v}) for i, v in enumerate(variants)]
    batch = _batch(vgg, cfgs)
    batch.losses(batch.target)["total"].sum().backward()
    for i in range(4):
        alone = module_for(vgg, *_inputs(i), cfgs[i])
        alone.losses(alone.target)["total"].sum().backward()
        rel = (batch.target.grad[i : i + 1] - alone.target.grad).abs().max() / alone.target.grad.abs().max()
        assert rel < 1e-4, f"member {i} ({variants[i]}): relative gradient difference {rel:.2e}"
    separate = [_adam(module_for(vgg, *_inputs(i), cfgs[i]), 8) for i in range(4)]
    batched = _adam(_batch(vgg, cfgs), 8)
    for i in range(4):
        # Adam's normalised step turns rounding noise into lr-sized moves where a gradient is ~0.
        diff = (batched[i : i + 1] - separate[i]).abs()
        assert diff.mean() < 1e-3, f"member {i} ({variants[i]}) differs by {diff.mean():.2e} on average"
    assert (separate[0] - separate[1]).abs().mean() > 0.01  # the weights really change the result


def test_summed_not_mean_loss_keeps_each_gradient_its_own() -> None:
    vgg = load_vgg("random", CFG.layers_used)
    members = [module_for(vgg, *_inputs(i), CFG) for i in range(2)]
    alone = []
    for m in members:
        m.losses(m.target)["total"].sum().backward()
        alone.append(m.target.grad.clone())
        m.target.grad = None
    batch = _batch(vgg, [CFG, CFG])
    batch.losses(batch.target)["total"].sum().backward()
    for i in range(2):
        rel = (batch.target.grad[i : i + 1] - alone[i]).abs().max() / alone[i].abs().max()
        assert rel < 1e-4, f"pair {i}: relative gradient difference {rel:.2e}"  # a mean would give 1/B


@pytest.mark.slow
def test_wasserstein_members_get_exactly_their_own_gradient_in_float64() -> None:
    """The Wasserstein loss (the default) per member: in float64, where rounding cannot hide a leak,
    a batch of two gives each member exactly the gradient it gets alone; in float32 they agree to
    the rounding its eigendecomposition amplifies (measured 2.5e-3 relative)."""
    cfg = Config(**{**CFG.to_dict(), "style_loss": "wasserstein"})
    for dtype, tolerance in ((torch.float64, 1e-12), (torch.float32, 2e-2)):
        vgg = load_vgg("random", cfg.layers_used).to(dtype)
        inputs = [tuple(x.to(dtype) for x in _inputs(i)) for i in range(2)]
        alone = []
        for content, style in inputs:
            m = module_for(vgg, content, style, cfg).to(dtype)
            m.losses(m.target)["total"].sum().backward()
            alone.append(m.target.grad.clone())
        from stylebatch.fit.engine import build_module
        from stylebatch.fit.inputs import start_image

        batch = build_module(vgg, [(c, [s], cfg, start_image(c, [s], cfg)) for c, s in inputs]).to(dtype)
        assert batch.target.dtype == dtype
        batch.losses(batch.target)["total"].sum().backward()
        for i in range(2):
            rel = (batch.target.grad[i : i + 1] - alone[i]).abs().max() / alone[i].abs().max()
            assert rel < tolerance, f"{dtype} member {i}: relative gradient difference {rel:.2e}"
        assert (alone[0] - alone[1]).abs().max() > 0.1 * alone[0].abs().max()  # two different pairs


def test_checkpoint_split_then_join_is_exact() -> None:
    b = 3
    ckpt = {
        "state_dict": {"target": torch.rand(b, 3, 4, 4), "ema_steps": torch.tensor(5)},
        "optimizer_states": [
            {
                "state": {
                    0: {
                        "step": torch.tensor(7.0),
                        "exp_avg": torch.rand(b, 3, 4, 4),
                        "exp_avg_sq": torch.rand(b, 3, 4, 4),
                    }
                },
                "param_groups": [{"lr": 0.1}],
            }
        ],
        "stylebatch": {"evaluations": 7, "scale": 1, "losses": {"content": torch.rand(b), "total": torch.rand(b)}},
        "global_step": 7,
    }
    parts = split_checkpoint(ckpt, b)
    assert [p["state_dict"]["target"].shape[0] for p in parts] == [1, 1, 1]
    assert torch.equal(
        parts[1]["optimizer_states"][0]["state"][0]["exp_avg"], ckpt["optimizer_states"][0]["state"][0]["exp_avg"][1:2]
    )
    assert float(parts[2]["stylebatch"]["losses"]["content"]) == float(ckpt["stylebatch"]["losses"]["content"][2])
    joined = join_checkpoints(parts)
    assert torch.equal(joined["state_dict"]["target"], ckpt["state_dict"]["target"])
    assert torch.equal(joined["state_dict"]["ema_steps"], ckpt["state_dict"]["ema_steps"])
    for k in ("step", "exp_avg", "exp_avg_sq"):
        assert torch.equal(joined["optimizer_states"][0]["state"][0][k], ckpt["optimizer_states"][0]["state"][0][k])
    assert torch.equal(joined["stylebatch"]["losses"]["total"], ckpt["stylebatch"]["losses"]["total"])
    assert joined["global_step"] == 7 and joined["stylebatch"]["scale"] == 1
    parts[1]["stylebatch"] = {**parts[1]["stylebatch"], "scale": 0}
    try:
        join_checkpoints(parts)
    except ValueError as e:
        assert "different (pass, evaluations)" in str(e)
    else:
        raise AssertionError("members at different passes were joined")


# --- end to end through the runner ---------------------------------------------------------------

FOUR = [
    {
        "content": "images/a.png",
        "style": s,
        "name": f"q{i}",
        "seed": i,
        "init": "noise",
        "optimizer": "adam",
        "lr": 0.05,
    }
    for i, s in enumerate(["images/s1.png", "images/s2.png", "images/s1.png", "images/s2.png"])
]


def _batched_job(root: Path, batch_size: int) -> Path:
    # Gram: the pixel tolerance below is float32 rounding through Adam (see CFG on Wasserstein).
    return tiny_job(root, pairs=FOUR, defaults={"batch_size": batch_size, "style_loss": "gram"})


@pytest.mark.slow
def test_runner_batches_match_unbatched_within_tolerance(tmp_path: Path) -> None:
    single, batched = tmp_path / "single", tmp_path / "batched"
    assert main(["run", str(_batched_job(single, 1)), "--weights", "random"]) == 0
    assert main(["run", str(_batched_job(batched, 3)), "--weights", "random"]) == 0
    recs = records(batched / "out")
    assert [recs[f"q{i}"]["batch"] for i in range(4)] == [["q0", "q1", "q2"]] * 3 + [None]
    assert all(r["status"] == "done" and r["steps_done"] == 30 for r in recs.values())
    # Batched convolutions round differently; Adam's normalised step turns that noise into up to
    # lr-sized moves on pixels whose gradient is near zero, and over a whole fit into other strokes
    # (README, Batching). On these tiny images after 30 evaluations the mean stays small (measured
    # 2.2e-3 at the default lr 0.1, a few pixels up to 0.13): the image as a whole is the same.
    for i in range(4):
        diff = (final_target(batched / "out", f"q{i}") - final_target(single / "out", f"q{i}")).abs()
        assert diff.mean() < 5e-3, f"q{i}: mean {diff.mean():.2e}, max {diff.max():.2e}"


@pytest.mark.slow
def test_a_failing_member_fails_alone_and_its_batch_finishes(tmp_path: Path, monkeypatch, capsys) -> None:
    """One member of a batch raises (here an injected OSError, as an unreadable image or output
    would): the batch is rerun one pair at a time, so that pair fails with its own reason, counted
    once, and its companions finish with the results they get unbatched."""
    monkeypatch.setenv("STYLEBATCH_FAULT", "pair:q1!raise")
    root = tmp_path / "faulty"
    assert main(["run", str(_batched_job(root, 3)), "--weights", "random"]) == 1
    recs = records(root / "out")
    assert recs["q1"]["status"] == "failed" and "injected fault at pair:q1" in recs["q1"]["error"]
    assert recs["q1"]["attempts"] == 1
    assert all(recs[n]["status"] == "done" and recs[n]["attempts"] == 1 for n in ("q0", "q2", "q3"))
    assert sorted(p.name for p in (root / "out").glob("*.png")) == ["q0.png", "q2.png", "q3.png"]
    assert "Traceback" not in "".join(capsys.readouterr())
    monkeypatch.delenv("STYLEBATCH_FAULT")
    single = tmp_path / "single"
    assert main(["run", str(_batched_job(single, 1)), "--weights", "random"]) == 0
    for name in ("q0", "q2"):
        assert torch.equal(final_target(root / "out", name), final_target(single / "out", name)), name


@pytest.mark.slow
def test_a_batch_out_of_memory_runs_its_pairs_one_by_one(tmp_path: Path, monkeypatch) -> None:
    from stylebatch.fit.module import StyleTransferModule

    original = StyleTransferModule.training_step

    def oom_when_batched(self, batch, batch_idx):
        if self.target.shape[0] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return original(self, batch, batch_idx)

    monkeypatch.setattr(StyleTransferModule, "training_step", oom_when_batched)
    root = tmp_path / "oom"
    assert main(["run", str(_batched_job(root, 3)), "--weights", "random"]) == 0
    recs = records(root / "out")
    assert all(r["status"] == "done" and r["attempts"] == 1 and r["batch"] is None for r in recs.values()), recs
    logs = "".join(f.read_text() for f in (root / "out" / ".stylebatch" / "logs").glob("*.log"))
    assert "out of memory (" in logs and "retrying unbatched" in logs  # the first rung of the ladder (oom.py)


@pytest.mark.slow
def test_interrupted_batch_resumes_with_same_members_bit_identical(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    assert main(["run", str(_batched_job(reference, 3)), "--weights", "random"]) == 0

    root = tmp_path / "interrupted"
    manifest = _batched_job(root, 3)
    code, fired = run_with_sigterm_at(manifest, 13, "--weights", "random")
    assert code == 3
    recs = records(root / "out")
    assert fired and all(
        recs[f"q{i}"]["status"] == "interrupted" and recs[f"q{i}"]["steps_done"] == 13 for i in range(3)
    )
    # per-pair checkpoints, one slice each
    for i in range(3):
        ckpt = torch.load(root / "out" / ".stylebatch" / "pairs" / f"q{i}" / "last.ckpt", weights_only=True)
        assert ckpt["state_dict"]["target"].shape[0] == 1
    assert main(["run", str(manifest), "--weights", "random"]) == 0
    assert not temp_files(root / "out")
    for i in range(4):
        assert torch.equal(final_target(root / "out", f"q{i}"), final_target(reference / "out", f"q{i}")), f"q{i}"


@pytest.mark.slow
def test_batching_turned_off_on_resume_continues_each_pair_alone(tmp_path: Path, monkeypatch) -> None:
    """Interrupted in a batch of 3 at 13 evaluations, resumed with `batch_size: 1` (bookkeeping:
    nothing restarts): each member continues alone from its own checkpoint slice (17 evaluations
    each, the unbatched q3 its 30), and the curve rows logged before the interruption are kept."""
    from stylebatch.fit.module import StyleTransferModule

    root = tmp_path / "job"
    manifest = _batched_job(root, 3)
    code, fired = run_with_sigterm_at(manifest, 13, "--weights", "random")
    assert code == 3 and fired
    curve = root / "out" / ".stylebatch" / "pairs" / "q0" / "losses.csv"
    before = curve.read_text().splitlines()
    evaluations: list[int] = []
    original = StyleTransferModule.training_step

    def counted(self, batch, batch_idx):
        evaluations.append(self.target.shape[0])
        return original(self, batch, batch_idx)

    monkeypatch.setattr(StyleTransferModule, "training_step", counted)
    assert main(["run", str(manifest), "--weights", "random", "--set", "batch_size=1"]) == 0
    assert set(evaluations) == {1} and len(evaluations) == 3 * (30 - 13) + 30
    recs = records(root / "out")
    assert all(r["status"] == "done" and r["steps_done"] == 30 and r["batch"] is None for r in recs.values()), recs
    after = curve.read_text().splitlines()
    assert [row.split(",")[0] for row in before[1:]] == ["5", "10"]
    assert after[:3] == before and [row.split(",")[0] for row in after[3:]] == ["15", "20", "25", "30"]


# --- one fit path: what a batch member gets is what it gets alone ------------------------------------

SWEEP = {"content": ["images/a.png"], "style": ["images/s1.png"], "style_weight": [0.3, 1.0, 3.0, 10.0]}
C2F = {
    "optimizer": "adam",
    "lr": 0.02,
    "scales": [16],
    "ema_decay": 0.5,
    "save_every": 10,
    "steps": 30,
    "content_layer": "conv2_2",
    "style_layers": {"conv1_1": 1.0, "conv2_1": 1.0, "conv3_1": 1.0},
}


def _sweep_job(root: Path, batch_size: int) -> Path:
    return tiny_job(root, pairs=[], grid=SWEEP, defaults={**C2F, "batch_size": batch_size, "style_loss": "gram"})


def _meta(path: Path) -> dict:
    return json.loads(Image.open(path).text["stylebatch"])


@pytest.mark.slow
def test_a_coarse_to_fine_weight_sweep_is_one_batch_and_each_member_matches_its_separate_run(tmp_path: Path) -> None:
    """The α/β sweep with coarse-to-fine passes, iterate averaging and snapshots (`modern`'s kind of
    fit) runs as one batch of 4; each member's output, snapshots and losses are its own and match its
    separate run within the batching tolerance; re-rendered from its kept checkpoint it carries the
    same losses."""
    alone, batched = tmp_path / "alone", tmp_path / "batched"
    assert main(["run", str(_sweep_job(alone, 1)), "--weights", "random"]) == 0
    assert main(["run", str(_sweep_job(batched, 4)), "--weights", "random"]) == 0
    names = [f"a__s1__style_weight-{w:g}" for w in SWEEP["style_weight"]]
    recs = records(batched / "out")
    assert all(recs[n]["batch"] == names and recs[n]["steps_done"] == 30 for n in names), recs
    assert all(r["batch"] is None for r in records(alone / "out").values())
    for n in names:
        diff = (final_target(batched / "out", n) - final_target(alone / "out", n)).abs()
        assert diff.mean() < 5e-3 and diff.max() < 0.1, f"{n}: mean {diff.mean():.2e}, max {diff.max():.2e}"
        # Snapshots: the same evaluation counts (across both passes), each this member's picture.
        snaps = {d: sorted((d / "out" / ".stylebatch" / "pairs" / n).glob("iter_*.png")) for d in (alone, batched)}
        assert (
            [p.name for p in snaps[batched]]
            == [p.name for p in snaps[alone]]
            == ["iter_10.png", "iter_20.png", "iter_30.png"]
        )
        for a, b in zip(snaps[alone], snaps[batched]):
            pa, pb = (torch.tensor(list(Image.open(p).convert("RGB").getdata()), dtype=torch.float32) for p in (a, b))
            assert (pa - pb).abs().mean() / 255 < 5e-3, f"{n} {a.name}"
        # Its own losses: embedded in its output, in its record and in its checkpoint slice, and close
        # to what it got alone (not the batch's sums).
        own = _meta(batched / "out" / f"{n}.png")["losses"]
        ckpt = torch.load(batched / "out" / ".stylebatch" / "pairs" / n / "last.ckpt", weights_only=True)
        assert own == recs[n]["losses"] == {k: float(v) for k, v in ckpt["stylebatch"]["losses"].items()}
        single = _meta(alone / "out" / f"{n}.png")["losses"]
        assert all(abs(own[k] - single[k]) <= 0.05 * abs(single[k]) + 1e-6 for k in single), (own, single)
        assert _meta(batched / "out" / f"{n}.png")["batch"] == names
    totals = [_meta(batched / "out" / f"{n}.png")["losses"]["total"] for n in names]
    assert len(set(totals)) == 4  # four different members, not one sum copied four times
    # Re-rendered from the kept checkpoints (outputs deleted): the same pictures and the same losses.
    before = {n: (batched / "out" / f"{n}.png").read_bytes() for n in names}
    for n in names:
        (batched / "out" / f"{n}.png").unlink()
    assert main(["run", str(_sweep_job(batched, 4)), "--weights", "random"]) == 0
    for n in names:
        assert _meta(batched / "out" / f"{n}.png")["losses"] == recs[n]["losses"]
        assert (batched / "out" / f"{n}.png").read_bytes() == before[n]


@pytest.mark.slow
def test_a_batch_killed_at_a_checkpoint_resumes_bit_identical(tmp_path: Path) -> None:
    """SIGKILL right after a batch's second checkpoint (inside the second pass), then the same
    command again: every member ends bit-identical to an uninterrupted batched run."""
    reference = tmp_path / "reference"
    assert main(["run", str(_sweep_job(reference, 4)), "--weights", "random", "--set", "checkpoint_every=8"]) == 0
    root = tmp_path / "killed"
    manifest = _sweep_job(root, 4)
    marker = tmp_path / "fired"
    proc = run_subprocess(
        ["run", str(manifest), "--weights", "random", "--set", "checkpoint_every=8"],
        cwd=root,
        STYLEBATCH_FAULT="after_checkpoint@2",
        STYLEBATCH_FAULT_MARKER=str(marker),
    )
    assert marker.exists() and proc.returncode == -9, proc.stderr
    # Killed after the second checkpoint was on disk, before its record said so.
    assert {r["steps_done"] for r in records(root / "out").values()} == {8}
    ckpts = [torch.load(p, weights_only=True) for p in (root / "out" / ".stylebatch" / "pairs").glob("*/last.ckpt")]
    assert len(ckpts) == 4 and {(c["stylebatch"]["scale"], c["stylebatch"]["evaluations"]) for c in ckpts} == {
        (1, 23)
    }  # pass 2 starts at 15
    assert main(["run", str(manifest), "--weights", "random", "--set", "checkpoint_every=8"]) == 0
    assert not temp_files(root / "out")
    for n in records(reference / "out"):
        assert torch.equal(final_target(root / "out", n), final_target(reference / "out", n)), n
        pixels = [Image.open(d / "out" / f"{n}.png").tobytes() for d in (root, reference)]
        assert pixels[0] == pixels[1], n  # (the files' embedded paths differ: two job directories)
