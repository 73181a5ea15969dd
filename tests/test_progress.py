"""What a running job shows: every batch member with its own bar, an overall bar that moves with
evaluations, an ETA from the measured rate however far apart updates are, shared time labelled."""

from __future__ import annotations

import io
from dataclasses import dataclass

import pytest
from rich.console import Console

from stylebatch.cli import progress
from stylebatch.cli.progress import RichReporter, _RateETA
from stylebatch.job.config import Config


@dataclass
class _Pair:
    name: str
    config: Config


# One pass at one size: every evaluation is the same work, so the overall bar's work reads as evaluations.
PAIRS = [_Pair(f"p{i}", Config(steps=100, size=64, scales=None)) for i in range(4)]
EVAL = progress.pair_work(PAIRS[0], 0, 1)  # the work of one evaluation


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> _Clock:
    c = _Clock()
    monkeypatch.setattr(progress.time, "monotonic", c)
    return c


def _reporter(terminal: bool) -> tuple[RichReporter, io.StringIO]:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=terminal, width=160, color_system=None)
    return RichReporter(console), buf


def test_every_member_has_its_own_bar_and_the_overall_bar_counts_evaluations(clock) -> None:
    rep, _ = _reporter(terminal=True)
    rep.start(total=5, done=1, pending=PAIRS)
    names = [p.name for p in PAIRS]
    for p in PAIRS:
        rep.pair_start(p, 0, names)
    tasks = {t.description: t for t in rep.progress.tasks}
    assert set(tasks) == {"pairs", *(f"{n} [batch of 4]" for n in names)}
    for i, p in enumerate(PAIRS):
        clock.now += 1
        rep.pair_progress(p, 10 * (i + 1), {"total": float(i)})
    tasks = {t.description: t for t in rep.progress.tasks}
    assert [tasks[f"p{i} [batch of 4]"].completed for i in range(4)] == [10, 20, 30, 40]
    assert [tasks[f"p{i} [batch of 4]"].fields["info"] for i in range(4)] == [f"loss {i}" for i in range(4)]
    overall = tasks["pairs"]
    assert overall.total == 400 * EVAL and overall.completed == 100 * EVAL  # moves while the batch runs
    assert overall.fields["count"] == "1/5 pairs"
    rep.pair_end(PAIRS[0], "done", "batch of 4, 702.0 s")
    overall = rep.progress.tasks[0]
    assert overall.fields["count"] == "2/5 pairs" and len(rep.progress.tasks) == 4
    rep.stop()


def test_the_eta_comes_from_the_measured_rate_even_when_updates_are_minutes_apart(clock) -> None:
    rep, _ = _reporter(terminal=True)
    rep.start(total=1, done=0, pending=PAIRS[:1])
    rep.pair_start(PAIRS[0], 0, None)
    rep.pair_progress(PAIRS[0], 10, {"total": 1.0})
    assert _RateETA().render(rep.progress.tasks[0]).plain == "eta estimating…"  # no rate yet: never 0:00:00
    clock.now += 300  # five minutes for 10 evaluations: 2 evaluations a minute
    rep.pair_progress(PAIRS[0], 20, {"total": 1.0})
    overall = rep.progress.tasks[0]
    text = _RateETA().render(overall).plain
    # 80 evaluations left at 10 per 300 s (measured since the first evaluation) = 2400 s
    assert text == "eta 0:40:00", text
    rep.stop()


def test_a_resumed_pair_and_a_failed_one_leave_the_overall_total_right(clock) -> None:
    rep, _ = _reporter(terminal=True)
    rep.start(total=2, done=0, pending=PAIRS[:2])
    rep.pair_start(PAIRS[0], 60, None)  # resumed at 60 (its record said 0: the checkpoint is what counts)
    assert rep.progress.tasks[0].total == 200 * EVAL and rep.progress.tasks[0].completed == 60 * EVAL
    rep.pair_progress(PAIRS[0], 100, {"total": 0.0})
    rep.pair_end(PAIRS[0], "done")
    rep.pair_start(PAIRS[1], 0, None)
    rep.pair_progress(PAIRS[1], 30, {"total": 0.0})
    rep.pair_end(PAIRS[1], "failed", "boom")
    overall = rep.progress.tasks[0]
    assert overall.completed == overall.total == 130 * EVAL and overall.fields["count"] == "2/2 pairs"
    rep.stop()


def test_piped_output_is_one_line_per_member_per_interval_with_shared_time_labelled(clock) -> None:
    rep, buf = _reporter(terminal=False)
    rep.start(total=2, done=0, pending=PAIRS[:2])
    names = ["p0", "p1"]
    for p in PAIRS[:2]:
        rep.pair_start(p, 0, names)
    for n in (10, 20, 30):  # three updates each, 4 s apart: one interval
        clock.now += 4
        for p in PAIRS[:2]:
            rep.pair_progress(p, n, {"total": 0.5})
    clock.now += progress.PIPED_INTERVAL_S
    for p in PAIRS[:2]:
        rep.pair_progress(p, 40, {"total": 0.25})
        rep.pair_end(p, "done", "batch of 2, 702.0 s")
    lines = buf.getvalue().splitlines()
    assert "start p0 in a batch of 2" in lines and "start p1 in a batch of 2" in lines
    for name in names:
        mine = [line for line in lines if line.startswith(f"  {name}:")]
        assert mine == [f"  {name}: 10/100 evaluations, loss 0.5", f"  {name}: 40/100 evaluations, loss 0.25"]
    assert "done p0 (batch of 2, 702.0 s) [1/2 pairs, eta 0:00:21]" in lines  # 70 left at 60 per 18 s
    assert "done p1 (batch of 2, 702.0 s)" in lines  # the last: nothing left to estimate


def test_a_resumed_job_starts_where_the_interrupted_one_stood(clock) -> None:
    """Work done before an interrupt counts: finished pairs in full, resumed ones up to their checkpoint."""
    rep, _ = _reporter(terminal=True)
    rep.start(total=4, done=1, pending=PAIRS[1:], before={"p1": 50, "p2": 0, "p3": 0}, settled=PAIRS[:1])
    overall = rep.progress.tasks[0]
    assert overall.total == 400 * EVAL and overall.completed == 150 * EVAL
    assert overall.fields["count"] == "1/4 pairs"
    rep.pair_start(PAIRS[1], 50, None)
    rep.pair_progress(PAIRS[1], 51, {"total": 1.0})  # the first evaluation of this run: the rate starts here
    clock.now += 0.5  # a batch's members report together: a tiny interval must not make a rate (eta 0:00:00)
    rep.pair_progress(PAIRS[1], 60, {"total": 1.0})
    assert _RateETA().render(rep.progress.tasks[0]).plain == "eta estimating…"
    clock.now += 9.5
    rep.pair_progress(PAIRS[1], 100, {"total": 1.0})
    # 49 evaluations in 10 s; 200 left
    assert rep.progress.tasks[0].completed == 200 * EVAL
    assert _RateETA().render(rep.progress.tasks[0]).plain == "eta 0:00:41"
    rep.stop()
