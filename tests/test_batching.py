"""Batched Adam pairs follow separate runs; checkpoints split per pair and join back exactly."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from stylebatch.batching import batch_key, batch_limit, group, join_checkpoints, split_checkpoint, stack
from stylebatch.cli import main
from stylebatch.config import Config
from stylebatch.module import StyleTransferModule
from stylebatch.vgg import load_vgg
from tests.jobkit import final_target, records, run_with_sigterm_at, temp_files, tiny_job

CFG = Config(optimizer="adam", lr=0.05, size=32, steps=8, batch_size=3, style_layers={"conv1_1": 1.0, "conv2_1": 1.0, "conv3_1": 1.0}, content_layer="conv2_2")


def _inputs(i: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + i)
    return torch.rand(1, 3, 24, 32, generator=g), torch.rand(1, 3, 20 + 4 * i, 32, generator=g)  # styles differ in size


def _adam(module: StyleTransferModule, steps: int) -> torch.Tensor:
    opt = torch.optim.Adam([module.target], lr=module.cfg.learning_rate)
    for _ in range(steps):
        opt.zero_grad()
        module.losses(module.target)["total"].sum().backward()
        opt.step()
        with torch.no_grad():
            module.target.clamp_(0, 1)
    return module.target.detach()


def test_batched_adam_matches_separate_runs() -> None:
    vgg = load_vgg("random", CFG.layers_used)
    cfgs = [Config(**{**CFG.to_dict(), "init": "noise", "seed": i}) for i in range(3)]
    separate = [_adam(StyleTransferModule(vgg, *_inputs(i), cfgs[i]), 8) for i in range(3)]
    batched = _adam(stack([StyleTransferModule(vgg, *_inputs(i), cfgs[i]) for i in range(3)]), 8)
    assert batched.shape == (3, 3, 24, 32)
    for i in range(3):
        diff = (batched[i : i + 1] - separate[i]).abs().max().item()
        assert diff < 1e-4, f"pair {i} differs by {diff}"  # float rounding of batched convs only
    # ...and the pairs really are different images (the test is not comparing three copies)
    assert (separate[0] - separate[1]).abs().max() > 0.05


def test_summed_not_mean_loss_keeps_each_gradient_its_own() -> None:
    vgg = load_vgg("random", CFG.layers_used)
    members = [StyleTransferModule(vgg, *_inputs(i), CFG) for i in range(2)]
    alone = []
    for m in members:
        m.losses(m.target)["total"].sum().backward()
        alone.append(m.target.grad.clone())
        m.target.grad = None
    batch = stack([StyleTransferModule(vgg, *_inputs(i), CFG) for i in range(2)])
    batch.losses(batch.target)["total"].sum().backward()
    for i in range(2):
        rel = (batch.target.grad[i : i + 1] - alone[i]).abs().max() / alone[i].abs().max()
        assert rel < 1e-4, f"pair {i}: relative gradient difference {rel:.2e}"  # a mean would give 1/B


def test_checkpoint_split_then_join_is_exact() -> None:
    b = 3
    ckpt = {
        "state_dict": {"target": torch.rand(b, 3, 4, 4), "ema_steps": torch.tensor(5)},
        "optimizer_states": [{"state": {0: {"step": torch.tensor(7.0), "exp_avg": torch.rand(b, 3, 4, 4),
                                            "exp_avg_sq": torch.rand(b, 3, 4, 4)}}, "param_groups": [{"lr": 0.1}]}],
        "stylebatch": {"evaluations": 7},
        "global_step": 7,
    }
    parts = split_checkpoint(ckpt, b)
    assert [p["state_dict"]["target"].shape[0] for p in parts] == [1, 1, 1]
    assert torch.equal(parts[1]["optimizer_states"][0]["state"][0]["exp_avg"], ckpt["optimizer_states"][0]["state"][0]["exp_avg"][1:2])
    joined = join_checkpoints(parts)
    assert torch.equal(joined["state_dict"]["target"], ckpt["state_dict"]["target"])
    assert torch.equal(joined["state_dict"]["ema_steps"], ckpt["state_dict"]["ema_steps"])
    for k in ("step", "exp_avg", "exp_avg_sq"):
        assert torch.equal(joined["optimizer_states"][0]["state"][0][k], ckpt["optimizer_states"][0]["state"][0][k])
    assert joined["global_step"] == 7


@dataclass
class _P:
    name: str
    config: Config
    out_size: tuple[int, int] = (32, 24)


def test_grouping_rules() -> None:
    adam = CFG
    pairs = [_P(f"a{i}", Config(**{**adam.to_dict(), "seed": i})) for i in range(5)]
    pairs.append(_P("lbfgs", Config(**{**adam.to_dict(), "optimizer": "lbfgs"})))
    pairs.append(_P("big", adam, out_size=(64, 48)))
    pairs.append(_P("other_weight", Config(**{**adam.to_dict(), "style_weight": 5.0})))
    batches = [[p.name for p in b] for b in group(pairs, recorded={})]
    assert ["a0", "a1", "a2"] in batches and ["a3", "a4"] in batches  # chunks of batch_size, seeds may differ
    assert ["lbfgs"] in batches and ["big"] in batches and ["other_weight"] in batches  # never mixed
    # Each batch takes its first member's place: the plan's order (costliest first) is kept.
    assert batches == [["a0", "a1", "a2"], ["a3", "a4"], ["lbfgs"], ["big"], ["other_weight"]]
    assert batch_key(pairs[5]) is None
    # A recorded batch (from an interrupted run) keeps its members together.
    batches = [[p.name for p in b] for b in group(pairs, recorded={"a1": ["a1", "a3", "a4"]})]
    assert ["a1", "a3", "a4"] in batches and ["a0", "a2"] in batches
    # ...unless batching was turned off since: then every pair resumes alone.
    off = [_P(p.name, Config(**{**p.config.to_dict(), "batch_size": 1})) for p in pairs[:5]]
    assert group(off, recorded={"a1": ["a1", "a3", "a4"]}) == [[p] for p in off]
    assert sorted(n for b in batches for n in b) == sorted(p.name for p in pairs)


def test_batch_pixels_caps_a_batch_by_its_total_pixels() -> None:
    """`batch_pixels` bounds a batch's memory: 5 same-size pairs of 32x24 (768 px each) with room
    for two per batch come in batches of 2, 2, 1; with room for less than two, none is batched."""
    two = Config(**{**CFG.to_dict(), "batch_size": 4, "batch_pixels": 2 * 768 + 767})
    pairs = [_P(f"a{i}", Config(**{**two.to_dict(), "seed": i})) for i in range(5)]
    assert [batch_limit(p) for p in pairs] == [2] * 5
    assert [[p.name for p in b] for b in group(pairs, recorded={})] == [["a0", "a1"], ["a2", "a3"], ["a4"]]
    one = Config(**{**two.to_dict(), "batch_pixels": 2 * 768 - 1})
    alone = [_P(f"b{i}", Config(**{**one.to_dict(), "seed": i})) for i in range(3)]
    assert batch_key(alone[0]) is None
    assert [[p.name for p in b] for b in group(alone, recorded={})] == [["b0"], ["b1"], ["b2"]]
    # The defaults: 4 pairs at 512 px (4:3 or square), 2 at 768, 1 at 1024.
    default = Config(optimizer="adam")
    assert [batch_limit(_P("x", default, out_size=s)) for s in [(512, 384), (512, 512), (768, 576), (1024, 768)]] \
        == [4, 4, 2, 1]


# --- end to end through the runner ---------------------------------------------------------------

FOUR = [{"content": "images/a.png", "style": s, "name": f"q{i}", "seed": i, "init": "noise", "optimizer": "adam",
         "lr": 0.05} for i, s in enumerate(["images/s1.png", "images/s2.png", "images/s1.png", "images/s2.png"])]


def _batched_job(root: Path, batch_size: int) -> Path:
    return tiny_job(root, pairs=FOUR, defaults={"batch_size": batch_size})


def test_runner_batches_match_unbatched_within_tolerance(tmp_path: Path) -> None:
    single, batched = tmp_path / "single", tmp_path / "batched"
    assert main(["run", str(_batched_job(single, 1)), "--weights", "random"]) == 0
    assert main(["run", str(_batched_job(batched, 3)), "--weights", "random"]) == 0
    recs = records(batched / "out")
    assert [recs[f"q{i}"]["batch"] for i in range(4)] == [["q0", "q1", "q2"]] * 3 + [None]
    assert all(r["status"] == "done" and r["steps_done"] == 30 for r in recs.values())
    # Stated tolerance after 30 Adam evaluations: mean |difference| < 5e-3 (1.3/255), max < 0.1. Batched
    # convolutions round differently; Adam's normalised step turns that noise into up to lr-sized moves
    # on pixels whose gradient is near zero (measured: mean 2e-3, max 0.04; after 8 steps max < 1e-4).
    for i in range(4):
        diff = (final_target(batched / "out", f"q{i}") - final_target(single / "out", f"q{i}")).abs()
        assert diff.mean() < 5e-3 and diff.max() < 0.1, f"q{i}: mean {diff.mean():.2e}, max {diff.max():.2e}"


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


def test_a_batch_out_of_memory_runs_its_pairs_one_by_one(tmp_path: Path, monkeypatch) -> None:
    from stylebatch.module import StyleTransferModule

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
    assert "out of memory; running its pairs one by one" in logs


def test_interrupted_batch_resumes_with_same_members_bit_identical(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    assert main(["run", str(_batched_job(reference, 3)), "--weights", "random"]) == 0

    root = tmp_path / "interrupted"
    manifest = _batched_job(root, 3)
    code, fired = run_with_sigterm_at(manifest, 13, "--weights", "random")
    assert code == 3
    recs = records(root / "out")
    assert fired and all(recs[f"q{i}"]["status"] == "interrupted" and recs[f"q{i}"]["steps_done"] == 13 for i in range(3))
    # per-pair checkpoints, one slice each
    for i in range(3):
        ckpt = torch.load(root / "out" / ".stylebatch" / "pairs" / f"q{i}" / "last.ckpt", weights_only=True)
        assert ckpt["state_dict"]["target"].shape[0] == 1
    assert main(["run", str(manifest), "--weights", "random"]) == 0
    assert not temp_files(root / "out")
    for i in range(4):
        assert torch.equal(final_target(root / "out", f"q{i}"), final_target(reference / "out", f"q{i}")), f"q{i}"


def test_batching_turned_off_on_resume_continues_each_pair_alone(tmp_path: Path, monkeypatch) -> None:
    """Interrupted in a batch of 3 at 13 evaluations, resumed with `batch_size: 1` (bookkeeping:
    nothing restarts): each member continues alone from its own checkpoint slice (17 evaluations
    each, the unbatched q3 its 30), and the curve rows logged before the interruption are kept."""
    from stylebatch.module import StyleTransferModule

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
