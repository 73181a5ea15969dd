"""Loss curves: one row per log interval, exact floats, and a resumed pair's curve equal to the
uninterrupted one's, row for row (after a SIGTERM checkpoint, and after a kill mid-checkpoint that
leaves rows past the last good checkpoint)."""

from __future__ import annotations

import csv
import io
import signal
from pathlib import Path

import pytest

from stylebatch.cli.main import main
from stylebatch.jobdir.curves import CurveWriter, read_curve
from tests.jobkit import records, run_subprocess, run_with_sigterm_at, tiny_job

NAMES = ("a__s1", "b__s2")
# log_every 4 against checkpoint_every 10: a resume starts between log points (at 10, or 13 after
# a SIGTERM), where logging "every 4 since the last log" would have moved every later row.
CURVE_JOB = {"log_every": 4}


def _curves(out: Path) -> dict[str, str]:
    return {n: (out / ".stylebatch" / "pairs" / n / "losses.csv").read_text() for n in NAMES}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("curve-baseline")
    assert main(["run", str(tiny_job(root, defaults=CURVE_JOB)), "--weights", "random"]) == 0
    return _curves(root / "out")


def test_writer_truncates_to_checkpoint_and_skips_torn_rows(tmp_path: Path) -> None:
    path = tmp_path / "losses.csv"
    w = CurveWriter(path)
    w.restart(at=0)
    for n in (4, 8, 12):
        w.append(n, {"content": n / 3, "style": 1e-7 * n, "total": 0.1 + n})
    w.close()
    rows = read_curve(path)
    assert [r["evaluations"] for r in rows] == [4, 8, 12]
    assert rows[0]["content"] == 4 / 3 and rows[1]["style"] == 1e-7 * 8  # exact floats
    with open(path, "a") as fh:
        fh.write("16,0.5,0.2")  # a kill in the middle of a row
    assert [r["evaluations"] for r in read_curve(path)] == [4, 8, 12]
    w.restart(at=8)
    assert [r["evaluations"] for r in read_curve(path)] == [4, 8]
    w.append(12, {"content": 1.0, "style": 2.0, "total": 3.0})
    w.close()
    assert path.read_text().splitlines() == [
        "evaluations,content,style,total",
        f"4,{4 / 3!r},{4e-7!r},4.1",
        f"8,{8 / 3!r},{8e-7!r},8.1",
        "12,1.0,2.0,3.0",
    ]
    w.restart(at=0)
    assert read_curve(path) == []


@pytest.mark.slow
def test_uninterrupted_curve_has_a_row_per_log_interval(uninterrupted: dict[str, str]) -> None:
    adam = [line.split(",")[0] for line in uninterrupted["a__s1"].splitlines()]
    assert adam == ["evaluations", *map(str, range(4, 29, 4)), "30"]  # every 4, and the last
    lbfgs = list(csv.DictReader(io.StringIO(uninterrupted["b__s2"])))
    assert int(lbfgs[-1]["evaluations"]) >= 30 and all(float(r["total"]) > 0 for r in lbfgs)


@pytest.mark.slow
def test_sigterm_resume_gives_the_same_curve(tmp_path: Path, uninterrupted: dict[str, str]) -> None:
    manifest = tiny_job(tmp_path, defaults=CURVE_JOB)
    code, fired = run_with_sigterm_at(manifest, 13, "--weights", "random")
    assert code == 3
    assert fired and records(tmp_path / "out")["a__s1"]["steps_done"] == 13
    assert main(["run", str(manifest), "--weights", "random"]) == 0
    assert _curves(tmp_path / "out") == uninterrupted


@pytest.mark.slow
def test_kill_mid_checkpoint_then_resume_gives_the_same_curve(tmp_path: Path, uninterrupted: dict[str, str]) -> None:
    """Killed while writing the second checkpoint (at 20): the file has rows up to 20, the last good
    checkpoint is at 10, so the resume must drop rows 12-20 and write them again."""
    manifest = tiny_job(tmp_path, defaults=CURVE_JOB)
    marker = tmp_path / "fired"
    # One thread like the in-process runs (conftest): CPU float results depend on the thread count.
    proc = run_subprocess(
        ["run", str(manifest), "--weights", "random"],
        cwd=tmp_path,
        OMP_NUM_THREADS="1",
        STYLEBATCH_FAULT="tmp:ckpt@2",
        STYLEBATCH_FAULT_MARKER=str(marker),
    )
    assert marker.exists(), proc.stderr
    assert proc.returncode == -signal.SIGKILL
    killed = read_curve(tmp_path / "out" / ".stylebatch" / "pairs" / "a__s1" / "losses.csv")
    assert killed[-1]["evaluations"] == 20  # rows past the checkpoint that survived (at 10)
    assert main(["run", str(manifest), "--weights", "random"]) == 0
    assert _curves(tmp_path / "out") == uninterrupted
