"""The memory and time model (estimate.py) against what torch itself does: the bytes autograd saves
(counted with saved_tensors_hooks), the FLOPs (torch.utils.flop_counter), the optimizer's state
(counted in the optimizer after a fit); then the calibration file, `auto` sizes and what
`validate` prints. Peak-vs-measured accuracy is shown by scripts/memory_model.py, not here."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from stylebatch.job.config import Config
from stylebatch.memory import autosize, calibration, estimate, measure
from stylebatch.memory.calibration import Device
from tests.jobkit import fit_one, module_for, tiny_job

LAYER_SETS = [
    {},  # the paper's: conv1_1..conv5_1 (pre-activation, each kept only by its Gram), content conv4_2
    {"style_layers": {f"relu{i}_1": 1.0 for i in range(1, 6)}},  # post-ReLU: already kept by the network
    {"content_layer": "relu5_2", "style_layers": {"pool2": 1.0, "conv3_3": 1.0}, "tv_weight": 1.0},
    {"content_layer": "conv2_1", "style_layers": {"conv1_1": 1.0, "conv2_1": 1.0}, "pooling": "avg"},
]


def _saved_by_autograd(module) -> int:
    """Bytes of the distinct storages autograd saves in one evaluation, not counting the network's
    weights or the module's buffers (those exist anyway)."""
    own = {t.untyped_storage().data_ptr() for t in [*module.parameters(), *module.buffers()]}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = t.untyped_storage().data_ptr()
        if key not in own:
            seen[key] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module.losses(module.target)["total"].sum()
    return sum(seen.values())


@pytest.mark.parametrize("kw", LAYER_SETS)
@pytest.mark.parametrize("h, w, batch", [(64, 64, 1), (128, 96, 1), (64, 48, 2), (66, 79, 1)])
def test_saved_bytes_equal_the_formula_exactly(vgg, kw: dict, h: int, w: int, batch: int) -> None:
    cfg = Config(optimizer="adam", style_loss="gram", **kw)  # the model counts the Gram loss's tensors
    content = torch.rand(batch, 3, h, w)
    module = module_for(vgg, content, torch.rand(batch, 3, 48, 48), cfg)
    formula = estimate.saved_bytes(
        h, w, cfg.content_layer, list(cfg.style_layers), cfg.pooling, batch, tv=cfg.tv_weight > 0
    )
    assert _saved_by_autograd(module) == formula


@pytest.mark.parametrize("kw", LAYER_SETS[:3])
def test_flops_equal_torch_flop_counter(vgg, kw: dict) -> None:
    cfg = Config(optimizer="adam", style_loss="gram", **kw)  # the model counts the Gram loss's FLOPs
    module = module_for(vgg, torch.rand(1, 3, 48, 64), torch.rand(1, 3, 48, 48), cfg)
    with FlopCounterMode(display=False) as counter:
        module.losses(module.target)["total"].sum().backward()
    assert counter.get_total_flops() == estimate.flops(48, 64, cfg.layers_used)


def _image_sized(state: dict, numel: int) -> int:
    found = 0
    for v in state.values():
        items = v if isinstance(v, list) else [v]
        found += sum(1 for t in items if isinstance(t, torch.Tensor) and t.numel() == numel)
    return found


@pytest.mark.parametrize("optimizer, history, steps", [("adam", 0, 6), ("lbfgs", 3, 30)])
def test_optimizer_state_is_the_vectors_the_model_counts(
    tmp_path: Path, make_image, vgg, optimizer, history, steps
) -> None:
    """After a fit, the optimizer's state holds the model's image-sized vectors: Adam 2, L-BFGS
    2 per history entry (min(history, evaluations)) + 2 (direction, previous gradient)."""
    cfg = Config(
        size=32,
        steps=steps,
        optimizer=optimizer,
        lbfgs_history=max(history, 1),
        keep_checkpoints=True,
        content_layer="conv2_1",
        style_layers={"conv1_1": 1.0},
        init="noise",
    )
    content, style = make_image("c.png", (32, 32), seed=1), make_image("s.png", (32, 32), seed=2)
    fit_one(vgg, content, style, cfg, tmp_path / "last.ckpt", tmp_path / "o.png")
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=True)
    state = next(iter(ckpt["optimizer_states"][0]["state"].values()))
    model = estimate.vectors(cfg) - 5 - (estimate.LINE_SEARCH_VECTORS["strong_wolfe"] if optimizer == "lbfgs" else 0)
    assert _image_sized(state, 3 * 32 * 32) == model


def _device(free: int, **kw) -> Device:
    return Device(
        "cpu",
        "test",
        free,
        baseline=500 * 2**20,
        floor=500 * 2**20,
        memory_scale=1.0,
        flop_rate=1e11,
        pair_overhead=1.0,
        **kw,
    )


def test_estimate_grows_with_size_history_and_batch_and_tiling_bounds_it() -> None:
    cfg, wh = Config(optimizer="adam", size=1024), (1500, 1000)
    memory = _device(64 * 2**30)
    base = estimate.estimate(cfg, wh, memory)
    assert estimate.estimate(dataclasses.replace(cfg, size=2048), wh, memory).peak > 3 * (base.peak - 500 * 2**20)
    lbfgs = dataclasses.replace(cfg, optimizer="lbfgs", lbfgs_history=100)
    assert estimate.estimate(lbfgs, wh, memory).peak > base.peak + 200 * 3 * 1024 * 683 * 4
    assert estimate.estimate(cfg, wh, memory, batch=2).peak > base.peak
    tiled = estimate.estimate(cfg, wh, memory, tile=256)
    assert tiled.peak < base.peak and tiled.seconds > base.seconds  # less memory, more work (halo, 2 passes)


def test_largest_size_is_the_last_that_fits() -> None:
    cfg, wh, memory = Config(optimizer="adam"), (1500, 1000), _device(4 * 2**30)
    side = autosize.largest_size(cfg, wh, memory)
    assert side % 64 == 0 and 256 < side < 4096
    assert estimate.estimate(dataclasses.replace(cfg, size=side), wh, memory).fits
    assert not estimate.estimate(dataclasses.replace(cfg, size=side + 64), wh, memory).fits
    assert autosize.largest_size(cfg, wh, _device(8 * 2**30)) > side  # more memory, larger
    tiled = autosize.largest_size(dataclasses.replace(cfg, tile=512), wh, memory)
    assert tiled > side  # tiles hold one crop's activations: only image-sized vectors grow


def test_auto_tile_and_batch() -> None:
    cfg, wh = Config(optimizer="adam", size=2048), (1500, 1000)
    assert autosize.auto_tile(cfg, wh, _device(64 * 2**30)) is None  # fits untiled: no tiles
    small = _device(2 * 2**30)
    tile = autosize.auto_tile(cfg, wh, small)
    assert tile and tile % 16 == 0 and estimate.estimate(cfg, wh, small, tile=tile).fits
    assert not estimate.estimate(cfg, wh, small, tile=tile + 16).fits
    at256 = dataclasses.replace(cfg, size=256)
    assert autosize.largest_batch(at256, wh, _device(64 * 2**30)) == autosize.AUTO_BATCH_MAX
    n = autosize.largest_batch(at256, wh, _device(2 * 2**30))
    assert 1 < n < autosize.AUTO_BATCH_MAX and not estimate.estimate(at256, wh, _device(2 * 2**30), batch=n + 1).fits


def test_calibration_records_and_reads_back_per_device(tmp_path: Path) -> None:
    path = tmp_path / "calibration.json"
    device = torch.device("cpu")
    before = measure.observe(device)
    rss, hwm = measure._rss()
    big = torch.ones((hwm - rss + 192 * 2**20) // 4)  # past the process's high-water mark so far
    big += 1
    entry = measure.record(device, before, predicted_own=96 * 2**20, work_flops=1e9, path=path)
    del big
    assert entry["peak_bytes"] >= before["hwm"] + 150 * 2**20
    seen = json.loads(path.read_text())["devices"][calibration.device_key(device)]
    assert len(seen["memory"]) == len(seen["rate"]) == 1
    current = Device.current("cpu", path)
    own = entry["peak_bytes"] - entry["start_bytes"]
    assert current.memory_scale == pytest.approx(own / (96 * 2**20)) and current.observations == 2
    assert Device.current("cpu", tmp_path / "none.json").observations == 0  # another machine: defaults


def test_validate_prints_peak_time_and_fit_per_pair_and_in_total(tmp_path: Path, capsys) -> None:
    from stylebatch.cli.main import main

    assert main(["validate", str(tiny_job(tmp_path)), "--weights", "random"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("  ")]
    assert len(lines) == 2 and all("peak ~" in line and ": fits" in line for line in lines)
    assert "largest peak ~" in out and "in all on one device" in out
    assert (
        main(["validate", str(tiny_job(tmp_path / "b", defaults={"memory_fraction": 1e-6})), "--weights", "random"])
        == 5
    )
    out = capsys.readouterr().out
    assert out.count("does NOT fit") == 2 and "2 pair(s) do not fit" in out


def test_size_auto_resolves_once_and_sticks_on_resume(tmp_path: Path, monkeypatch) -> None:
    from stylebatch.memory.autosize import load_job

    manifest = tiny_job(
        tmp_path,
        pairs=[{"content": "images/a.png", "style": "images/s1.png", "optimizer": "adam"}],
        defaults={"size": "auto-up", "batch_size": "auto", "tile": "auto"},
    )
    monkeypatch.setattr(calibration, "free_memory", lambda device: 3 * 2**30)
    pair = load_job(manifest).valid_pairs[0]
    assert not pair.problems
    assert isinstance(pair.config.size, int) and pair.config.size > 32 and pair.config.tile is None
    assert max(pair.out_size) == pair.config.size and isinstance(pair.config.batch_size, int)
    # A previous run's job.json (as runner writes it) keeps the size though free memory changed.
    (tmp_path / "out" / ".stylebatch").mkdir(parents=True)
    (tmp_path / "out" / ".stylebatch" / "job.json").write_text(
        json.dumps({"pairs": [{"name": pair.name, "config": {**pair.config.to_dict(), "size": 96}}]}, default=str)
    )
    monkeypatch.setattr(calibration, "free_memory", lambda device: 6 * 2**30)
    assert load_job(manifest).valid_pairs[0].config.size == 96
    other = tiny_job(
        tmp_path / "b",
        pairs=[{"content": "images/a.png", "style": "images/s1.png", "optimizer": "adam"}],
        defaults={"size": "auto-up"},
    )
    assert load_job(other).valid_pairs[0].config.size > pair.config.size  # fresh job, more memory: larger


def test_each_run_records_its_figures_in_the_state_and_the_machine_file(tmp_path: Path, monkeypatch) -> None:
    from stylebatch.cli.main import main
    from tests.jobkit import records

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    pairs = [{"content": "images/a.png", "style": "images/s1.png", "optimizer": "adam"}]
    assert main(["run", str(tiny_job(tmp_path, pairs=pairs, defaults={"steps": 6})), "--weights", "random"]) == 0
    measured = next(iter(records(tmp_path / "out").values()))["measured"]
    assert measured["flops"] == estimate.work(Config(size=32, steps=6), (40, 30), 0, 6)
    assert measured["predicted_bytes"] > 0 and measured["start_bytes"] > 0 and measured["seconds"] > 0
    seen = json.loads(calibration.cache_file().read_text())["devices"][measured["device"]]
    assert seen["rate"][0][0] == measured["flops"] and seen["rate"][0][1] == pytest.approx(
        measured["seconds"], abs=1e-3
    )
    assert seen["rate"][0][2] == 6  # the member-evaluations: one member, 6 evaluations


def test_time_fit_separates_overhead_from_rate_and_tiny_runs_do_not_set_the_rate() -> None:
    """Runs of mixed sizes on a machine with 3 s of fixed cost a pair and 50 GFLOP/s: the fit finds
    both, however many tiny runs (all overhead) are among them, and estimates a big run within 10 %."""
    overhead, rate = 3.0, 50e9
    big = [[f, overhead + f / rate] for f in (2e11, 8e11, 3e12, 1e13)]
    tiny = [[f, overhead + f / rate + 0.4] for f in [1e8] * 20]  # noisy, slower than the model: all overhead
    fit = calibration.fit_time(big + tiny, default_overhead=1.0)
    fitted_rate, fitted_overhead, spread = fit.flop_rate, fit.pair_overhead, fit.spread
    assert fitted_overhead == pytest.approx(overhead, rel=0.2)
    assert fitted_rate == pytest.approx(rate, rel=0.1)
    job = 5e13
    assert (fitted_overhead + job / fitted_rate) == pytest.approx(overhead + job / rate, rel=0.1)
    # The median per-run rate (the model before) is set by the tiny runs: 30x too slow.
    median = sorted(f / max(s - 1.0, s / 2) for f, s in big + tiny)[len(big + tiny) // 2]
    assert median < rate / 10
    assert calibration.MIN_SPREAD <= spread < 0.5
    # Runs of one size cannot tell overhead from rate: the default overhead, the rate from the rest.
    same = [[1e12, 23.0]] * 5
    fit = calibration.fit_time(same, default_overhead=3.0)
    assert fit.pair_overhead == 3.0 and fit.flop_rate == pytest.approx(1e12 / 20.0)
    assert calibration.fit_time([], default_overhead=1.0) is None


def test_time_fit_charges_the_per_step_cost_of_small_runs_to_steps_not_to_flops() -> None:
    """Runs as this project's CPU records them (0.5 s a batch, 0.14 s per member's evaluation that
    does not grow with the image, 110 GFLOP/s): fitted against FLOPs alone, the small runs' per-step
    cost is charged to the FLOPs and a large image's estimate is 50-100 % too long; with each run's
    member-evaluations recorded, jobs up to 5x larger than any run are estimated within 10 %."""
    per_batch, per_step, rate = 0.5, 0.14, 110e9
    mix = [(4.5e9, 5)] * 6 + [(7.8e10, 20), (1.9e11, 12), (1.28e12, 80), (1.12e12, 120), (3.1e10, 8), (2.4e11, 12)]
    runs = [[f, per_batch + n * per_step + f / rate * (1.03 if k % 2 else 0.97), n] for k, (f, n) in enumerate(mix)]
    fit = calibration.fit_time(runs, default_overhead=1.0)
    old = calibration.fit_time([r[:2] for r in runs], default_overhead=1.0)  # a file without steps
    assert fit.step_overhead == pytest.approx(per_step, rel=0.15) and old.step_overhead == 0.0
    for flops, steps in ((1.57e12, 24), (3.35e12, 90), (6.3e12, 32)):  # 256 px alone, 192 px x 3, 512 px
        truth = per_batch + steps * per_step + flops / rate
        assert fit.pair_overhead + steps * fit.step_overhead + flops / fit.flop_rate == pytest.approx(truth, rel=0.1)
        assert old.pair_overhead + flops / old.flop_rate > truth * 1.3
    # One large run and repeats of a tiny one cannot tell the three costs apart: the per-evaluation
    # cost is the device's default, and the rate what the runs leave after it.
    few = [runs[9], *[runs[0]] * 5]
    prior = calibration.fit_time(few, default_overhead=1.0, default_step=0.1)
    f, s, n = runs[9]
    assert prior.step_overhead == 0.1
    assert prior.pair_overhead + n * 0.1 + f / prior.flop_rate == pytest.approx(s, rel=0.05)


def test_validate_shows_the_total_with_a_range_and_batches_share_their_overhead(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    from stylebatch.cli.main import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # this machine, not the other tests' runs
    pairs = [{"content": "images/a.png", "style": s, "optimizer": "adam"} for s in ("images/s1.png", "images/s2.png")]
    assert main(["validate", str(tiny_job(tmp_path, pairs=pairs)), "--weights", "random"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    found = re.search(r"~([\d.]+) (?:s|min) \(([\d.]+)-([\d.]+) (?:s|min)\) in all", last)
    assert found and 0 <= float(found[2]) < float(found[1]) < float(found[3]), last
    device = Device.current("cpu")
    from stylebatch.memory.autosize import load_job

    job = load_job(tmp_path / "job.yaml", weights="random")
    alone = estimate.job_seconds([[p] for p in job.valid_pairs], device)
    together = estimate.job_seconds([job.valid_pairs], device)
    assert alone - together == pytest.approx(device.pair_overhead)


def test_size_auto_never_upscales_unless_asked_and_says_what_it_chose(tmp_path: Path, monkeypatch, capsys) -> None:
    from stylebatch.cli.main import main
    from stylebatch.memory.autosize import load_job

    monkeypatch.setattr(calibration, "free_memory", lambda device: 3 * 2**30)
    pairs = [{"content": "images/a.png", "style": "images/s1.png", "optimizer": "adam"}]  # a.png is 40x30
    manifest = tiny_job(tmp_path, pairs=pairs, defaults={"size": "auto"})
    job = load_job(manifest)
    assert job.valid_pairs[0].config.size == 40 and job.valid_pairs[0].out_size == (40, 30)
    assert job.notes == ["a__s1: size auto → 40 px: the content's own size (size: auto-up to upscale it)"]
    assert main(["validate", str(manifest), "--weights", "random"]) == 0
    assert "  a__s1: size auto → 40 px: the content's own size" in capsys.readouterr().out
    up = tiny_job(tmp_path / "up", pairs=pairs, defaults={"size": "auto-up"})
    job = load_job(up)
    assert job.valid_pairs[0].config.size > 40
    assert job.notes[0].startswith(f"a__s1: size auto-up → {job.valid_pairs[0].config.size} px: the largest that fits")
    # A photo larger than memory allows: the largest that fits, below its own size.
    size, why = autosize.auto_size(Config(size="auto"), (6000, 4000), Device.current("cpu"))
    assert size < 6000 and size % autosize.SIZE_STEP == 0 and why.startswith("the largest that fits")


def test_validate_exits_5_when_a_pair_does_not_fit(tmp_path: Path, capsys) -> None:
    from stylebatch.cli.main import main
    from stylebatch.errors import EXIT_CODES, EXIT_TOO_LARGE

    manifest = tiny_job(tmp_path, defaults={"memory_fraction": 1e-6})
    assert main(["validate", str(manifest), "--weights", "random"]) == EXIT_TOO_LARGE == 5
    captured = capsys.readouterr()
    assert captured.out.count("does NOT fit") == 2
    assert captured.err.strip() == f"2 pair(s) do not fit this device's memory; exit 5: {EXIT_CODES[5]}"
    assert "| 5 | " + EXIT_CODES[5] in (Path(__file__).parent.parent / "README.md").read_text()


def test_an_empty_calibration_probes_the_machine_instead_of_guessing(tmp_path: Path) -> None:
    empty = tmp_path / "none.json"
    guessed = Device.current("cpu", empty)
    probed = Device.current("cpu", empty, probe=True)
    assert guessed.flop_rate == calibration.DEFAULTS["cpu"]["flop_rate"]
    assert probed.flop_rate != guessed.flop_rate and probed.spread == calibration.PROBED_SPREAD
    # The probe measures: a second one on the same machine within a factor of 3 of the first.
    again = calibration.probe_rate(torch.device("cpu")) * calibration.PROBE_EFFICIENCY
    assert probed.flop_rate / 3 < again < probed.flop_rate * 3
