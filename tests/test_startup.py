"""Start-up at scale: a grid's pairs share one resolved Config per distinct setting, are estimated
once per distinct (config, content size), keep the ids they always had, and validate prints one
line per pair."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from stylebatch.cli.main import main
from stylebatch.job.config import Config
from stylebatch.job.manifest import load_job
from stylebatch.job.pairs import pair_id
from stylebatch.memory import estimate
from tests.jobkit import make_image, write_manifest


def _reference_id(content: str, style, weights: str, cfg: Config, init_sha: str | None = None) -> str:
    """The id's definition, written out: sha256 of the sorted JSON of inputs, network and config."""
    identity = cfg.identity()
    if init_sha is not None:
        identity["init"] = f"sha256:{init_sha}"
    payload = {"content": content, "style": style, "weights": weights, "config": identity}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


@pytest.mark.parametrize(
    "cfg",
    [Config(), Config(style_layers={"conv1_1": 0.5, "relu3_1": 2.0}, size=96, style_blend=[0.3, 0.7], tile="auto")],
)
@pytest.mark.parametrize("style", ["b" * 64, ["c" * 64, "d" * 64]])
@pytest.mark.parametrize("init_sha", [None, "e" * 64])
def test_pair_id_is_the_definition(cfg: Config, style, init_sha) -> None:
    assert pair_id("a" * 64, style, "random:0", cfg, init_sha) == _reference_id(
        "a" * 64, style, "random:0", cfg, init_sha
    )


def _grid(tmp_path: Path, contents: int, styles: int, **varied) -> Path:
    images = tmp_path / "images"
    for i in range(contents):
        make_image(images / f"c{i}.png", i, (40, 30) if i % 2 else (30, 40))
    for i in range(styles):
        make_image(images / f"s{i}.png", 100 + i)
    grid = {
        "content": [f"images/c{i}.png" for i in range(contents)],
        "style": [f"images/s{i}.png" for i in range(styles)],
    }
    grid.update(varied)
    return write_manifest(
        tmp_path / "job.yaml", {"output_dir": "out", "defaults": {"size": 32, "steps": 4}, "grid": grid}
    )


def test_grid_pairs_share_configs_and_keep_their_ids(tmp_path: Path) -> None:
    manifest = _grid(tmp_path, 4, 3, style_weight=[1.0, 10.0])
    job = load_job(manifest, weights="random")
    assert not job.all_problems and len(job.pairs) == 24
    # One Config per distinct setting (style_weight 1 and 10), shared by the pairs that have it.
    assert len({id(p.config) for p in job.pairs}) == 2
    assert {p.config.style_weight for p in job.pairs} == {1.0, 10.0}
    for p in job.pairs:  # each pair's id is still the definition over its own files and settings
        sha = lambda path: hashlib.sha256(Path(path).read_bytes()).hexdigest()  # noqa: E731
        assert p.id == _reference_id(sha(p.content), sha(p.styles[0]), "random:0", p.config)
    assert len({p.id for p in job.pairs}) == 24


def test_estimates_are_computed_once_per_config_and_content_size(tmp_path: Path, monkeypatch, capsys) -> None:
    manifest = _grid(tmp_path, 4, 3, style_weight=[1.0, 10.0])
    calls = []
    real = estimate.estimate
    monkeypatch.setattr(estimate, "estimate", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    assert main(["validate", str(manifest), "--weights", "random"]) == 0
    # 2 settings x 2 content shapes (40x30 and 30x40), not 24 pairs.
    assert sorted(calls) == sorted([(40, 30), (30, 40)] * 2)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    assert len(lines) == 24  # still one line per pair, each with its own size
    assert sum("32x24" in line for line in lines) == 12 and sum("24x32" in line for line in lines) == 12


def test_a_bad_setting_is_still_reported_for_every_entry(tmp_path: Path) -> None:
    manifest = _grid(tmp_path, 2, 2, steps=[4, -1])
    job = load_job(manifest, weights="random")
    bad = [p for p in job.pairs if p.problems]
    assert len(bad) == 4 and all(p.config is None for p in bad)
    assert all(p.entry in p.problems[0] and "steps" in p.problems[0] for p in bad)
    assert len({p.problems[0] for p in bad}) == 4  # each names its own entry


def test_output_over_an_input_found_with_shared_resolution(tmp_path: Path) -> None:
    make_image(tmp_path / "c0.png", 1)
    make_image(tmp_path / "s0.png", 2)
    manifest = write_manifest(
        tmp_path / "job.yaml",
        {
            "output_dir": ".",
            "defaults": {"size": 32},
            "pairs": [{"content": "c0.png", "style": "s0.png", "name": "s0"}],
        },
    )
    job = load_job(manifest, weights="random")
    assert any("would overwrite an input image" in p for p in job.all_problems)
    link_dir = tmp_path / "links"
    link_dir.mkdir()
    (link_dir / "x.png").symlink_to(tmp_path / "c0.png")  # an output name that is a link to an input
    manifest = write_manifest(
        tmp_path / "job2.yaml",
        {
            "output_dir": "links",
            "defaults": {"size": 32},
            "pairs": [{"content": "c0.png", "style": "s0.png", "name": "x"}],
        },
    )
    job = load_job(manifest, weights="random")
    assert any("would overwrite an input image" in p for p in job.all_problems)


def test_shared_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().steps = 3  # type: ignore[misc]


@pytest.mark.slow
def test_a_restart_passes_done_pairs_without_claims_and_still_redoes_a_touched_output(
    tmp_path: Path, monkeypatch
) -> None:
    import os

    from stylebatch.jobdir import claims
    from tests.jobkit import records, tiny_job

    manifest = tiny_job(tmp_path, defaults={"steps": 2, "checkpoint_every": 2, "keep_checkpoints": False})
    assert main(["run", str(manifest), "--weights", "random", "--accelerator", "cpu"]) == 0
    first = {name: r["finished"] for name, r in records(tmp_path / "out").items()}
    assert len(first) == 2
    plans = []
    real = claims.try_claim
    monkeypatch.setattr(
        claims, "try_claim", lambda s, n, r, purpose: plans.append((n, purpose)) or real(s, n, r, purpose)
    )
    assert main(["run", str(manifest), "--weights", "random", "--accelerator", "cpu"]) == 0
    assert plans == []  # both done, outputs as recorded: no claim, nothing rerun
    assert {name: r["finished"] for name, r in records(tmp_path / "out").items()} == first
    # An output changed since it was written: the full check under the pair's claim sees it. Its bytes
    # are no longer the job's, so it is refused (exit 2) until --overwrite, which redoes it.
    output = next((tmp_path / "out").glob("a__s1*.png"))
    output.write_bytes(b"not the picture")
    os.utime(output, ns=(1, 1))
    assert main(["run", str(manifest), "--weights", "random", "--accelerator", "cpu"]) == 2
    assert main(["run", str(manifest), "--weights", "random", "--accelerator", "cpu", "--overwrite"]) == 0
    assert ("a__s1", "plan") in plans
    after = {name: r["finished"] for name, r in records(tmp_path / "out").items()}
    assert after["a__s1"] > first["a__s1"] and after["b__s2"] == first["b__s2"]


def test_a_restart_reads_each_done_record_once_and_sees_a_record_changed_since(tmp_path: Path, monkeypatch) -> None:
    """`run` on a finished job: the user-files check reads each record; the plan's survey, under the
    lock, re-stats the record and the output instead of reading the record again. A record changed
    between the two (another id: the pair's inputs changed) is read again, and the pair is redone."""
    from stylebatch.jobdir.state import JobState
    from stylebatch.runner import options
    from stylebatch.runner.user_files import check_user_files
    from tests.jobkit import records, tiny_job

    manifest = tiny_job(tmp_path, defaults={"steps": 2, "checkpoint_every": 2, "keep_checkpoints": False})
    assert main(["run", str(manifest), "--weights", "random", "--accelerator", "cpu"]) == 0
    reads: list[str] = []
    real = JobState.read_stamped
    monkeypatch.setattr(JobState, "read_stamped", lambda self, name: reads.append(name) or real(self, name))
    surveyed: list[list[str]] = []  # the reads before the survey, and the survey's own
    real_survey = options.survey

    def survey(*args):
        surveyed.append(list(reads))
        found = real_survey(*args)
        surveyed.append(reads[len(surveyed[0]) :])
        return found

    monkeypatch.setattr(options, "survey", survey)
    first = {name: r["finished"] for name, r in records(tmp_path / "out").items()}
    assert main(["run", str(manifest), "--weights", "random", "--accelerator", "cpu"]) == 0
    assert sorted(surveyed[0]) == ["a__s1", "b__s2"] and surveyed[1] == []  # the user-files check's reads only
    assert {name: r["finished"] for name, r in records(tmp_path / "out").items()} == first
    monkeypatch.setattr(options, "survey", real_survey)

    job = load_job(manifest, weights="random")
    check_user_files(job, overwrite=False)
    assert all(p.settled is not None for p in job.pairs)
    state = JobState(job.output_dir)
    state.update("a__s1", id="0" * 16)  # written after the check: as if its inputs had changed meanwhile
    reads.clear()
    found = options.survey(job, state, options.RunOptions())
    assert reads == ["a__s1"] and [p.name for p in found.redo] == ["a__s1"] and found.plainly_done == {"b__s2"}


def test_job_json_is_streamed_in_pieces_and_reads_back_whole(tmp_path: Path, monkeypatch) -> None:
    from stylebatch.job import jobfile

    manifest = _grid(tmp_path, 4, 3, style_weight=[1.0, 10.0])
    job = load_job(manifest, weights="random")
    writes = []
    real_write = jobfile.atomic_write

    def recording(path, write):
        class Recorder:
            def write(self, data: bytes) -> None:
                writes.append(data)

        write(Recorder())  # the pieces as written
        real_write(path, write)

    monkeypatch.setattr(jobfile, "STREAM_CHARS", 500)
    monkeypatch.setattr(jobfile, "atomic_write", recording)
    path = tmp_path / "job.json"
    jobfile.write_job_file(job, path)
    assert len(writes) >= 5 and all(len(w) < 1000 for w in writes[1:])  # the head, then pieces of lines
    assert b"".join(writes) == path.read_bytes() == jobfile.job_file_bytes(job)
    back = jobfile.read_job_file(path)
    assert [e.name for e in back.entries] == [p.name for p in job.pairs]
    assert {back.value(e, "style_weight") for e in back.entries} == {1.0, 10.0}
