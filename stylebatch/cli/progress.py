"""What a running job shows: rich progress bars on a terminal, plain lines when piped.

The overall bar counts the job's work (FLOPs of loss evaluations, memory/estimate.work, so a 512 px
evaluation weighs 16 times a 128 px one) over every valid pair: what finished pairs did and what
resumed pairs had done before this run count as done, so a resumed job's bar stands where the
interrupted one left it. Its ETA divides the work left by the rate this job measured since its first
evaluation of this run (overheads between pairs included), shown as "estimating…" until that rate
rests on a few seconds of work; it stays shown however far apart updates are. Every running pair
(each member of a batch) has its own bar with its own evaluations and loss, and every finished pair
its "done" line, on a terminal as when piped.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.text import Text

from stylebatch.job.pairs import Pair

PIPED_INTERVAL_S = 10.0  # piped output: one line per running pair at most this often
RATE_AFTER_S = 5.0  # the ETA waits for this much measured time: the first evaluations carry start-up


def eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "eta estimating…"
    s = max(1, round(seconds))
    return f"eta {s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class _RateETA(ProgressColumn):
    """Time left from the job's measured rate (rich's own column forgets its speed once updates
    are more than ~30 s apart, and then shows -:--:--)."""

    def render(self, task: Task) -> Text:
        rate, left = task.fields.get("rate"), (task.total or 0) - task.completed
        if task.finished or left <= 0:
            return Text("", style="progress.remaining")
        return Text(eta_text(left / rate if rate else None), style="progress.remaining")


_WORK: dict[tuple, tuple[Any, float]] = {}


def pair_work(pair: Pair, start: int, end: int) -> float:
    """The work of evaluations start..end of a pair: its FLOPs where its sizes are known, else the
    evaluations themselves (every pair then weighs the same per evaluation)."""
    if end <= start:
        return 0.0
    cfg = pair.config
    wh = getattr(pair, "content_size", None) or getattr(pair, "out_size", None)
    if wh is None and isinstance(cfg.size, int):
        wh = (cfg.size, cfg.size)
    if wh is not None:
        try:
            from stylebatch.memory.estimate import work

            tile = cfg.tile if isinstance(cfg.tile, int) else None
            # Once per distinct (config, size, span): a grid's pairs share their Config object, and a
            # 100,000-pair start sums every pair's work twice. The entry keeps its config, so an id
            # reused after the config is gone never matches.
            key = (id(cfg), tuple(wh), start, end, tile)
            hit = _WORK.get(key)
            if hit is None or hit[0] is not cfg:
                if len(_WORK) > 4096:
                    _WORK.clear()
                hit = _WORK[key] = (cfg, work(cfg, tuple(wh), start, end, 1, tile))
            return hit[1]
        except Exception:  # noqa: BLE001 (a progress bar never stops a job)
            pass
    return float(end - start)


class RichReporter:
    """The runner's Reporter for a person: see the module doc."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = console.is_terminal
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[count]}"),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            _RateETA(),
            console=console,
            disable=not self.live,
        )
        self.overall: Any = None
        self.tasks: dict[str, Any] = {}  # pair name -> its task
        self.counted: dict[str, int] = {}  # pair name -> its evaluations counted into the overall bar
        self.pairs_total = self.pairs_done = self.failed = 0
        self.ran = 0.0  # work of the evaluations this run did (the rate's numerator)
        self.first_eval: float | None = None
        self.last_line: dict[str, float] = {}

    def start(
        self,
        total: int,
        done: int,
        pending: list[Pair],
        before: dict[str, int] | None = None,
        settled: list[Pair] | None = None,
    ) -> None:
        """`before`: the evaluations each pending pair had done before this run (its checkpoint);
        `settled`: the valid pairs this run has nothing left to do for (done, or failed for good)."""
        self.console.print(f"{total} pairs: {done} already done, {len(pending)} to run", soft_wrap=True)
        before = before or {}
        self.pairs_total, self.pairs_done = done + len(pending), done
        self.progress.start()
        whole = sum(pair_work(p, 0, p.config.steps) for p in [*(settled or []), *pending])
        completed = sum(pair_work(p, 0, p.config.steps) for p in settled or [])
        for p in pending:
            self.counted[p.name] = min(int(before.get(p.name, 0)), p.config.steps)
            completed += pair_work(p, 0, self.counted[p.name])
        self.overall = self.progress.add_task(
            "pairs", total=max(whole, 1.0), completed=completed, info="", rate=None, count=self._count()
        )
        if completed and pending:  # a resume: where the job stands, by work rather than pairs
            self.console.print(
                f"{100 * completed / whole:.0f}% of the job's work was done before this run", soft_wrap=True
            )

    def _count(self) -> str:
        return f"{self.pairs_done}/{self.pairs_total} pairs"

    def _move(self, pair: Pair, n: int, ran: bool) -> None:
        """Count a pair as standing at `n` evaluations in the overall bar; `ran`: evaluations this
        run did (they feed the measured rate; a restart or a batch rerun only moves the bar)."""
        previous = self.counted.get(pair.name, 0)
        n = min(n, pair.config.steps)
        self.counted[pair.name] = n
        delta = pair_work(pair, previous, n) - pair_work(pair, n, previous)
        task = self.progress.tasks[self.overall]
        now = time.monotonic()
        if ran and delta > 0:
            if self.first_eval is None:
                self.first_eval = now  # the rate is measured from here: process start-up is not the job's pace
            else:
                self.ran += delta
        elapsed = now - self.first_eval if self.first_eval is not None else 0.0
        rate = self.ran / elapsed if elapsed >= RATE_AFTER_S and self.ran > 0 else None
        self.progress.update(self.overall, completed=task.completed + delta, rate=rate)

    def eta(self) -> float | None:
        """Seconds left by the measured rate, None while it is being measured."""
        task = self.progress.tasks[self.overall]
        rate = task.fields.get("rate")
        return max(0.0, (task.total or 0) - task.completed) / rate if rate else None

    def pair_start(self, pair: Pair, steps_done: int, batch: list[str] | None) -> None:
        self._move(pair, steps_done, ran=False)  # where its checkpoint stands (a restart from 0 moves back)
        label = pair.name if not batch else f"{pair.name} [batch of {len(batch)}]"
        self.tasks[pair.name] = self.progress.add_task(
            label,
            total=pair.config.steps,
            completed=steps_done,
            info="",
            rate=None,
            count=f"{steps_done}/{pair.config.steps}",
        )
        if not self.live:
            resumed = f" (resuming at {steps_done})" if steps_done else ""
            in_batch = f" in a batch of {len(batch)}" if batch else ""
            self.console.print(f"start {pair.name}{resumed}{in_batch}", soft_wrap=True, markup=False)

    def pair_progress(self, pair: Pair, n: int, losses: dict[str, float]) -> None:
        steps = pair.config.steps
        self._move(pair, n, ran=True)
        loss = f"loss {losses.get('total', 0):.4g}"
        self.progress.update(
            self.tasks[pair.name], completed=min(n, steps), info=loss, count=f"{min(n, steps)}/{steps}"
        )
        now = time.monotonic()
        if not self.live and now - self.last_line.get(pair.name, 0.0) >= PIPED_INTERVAL_S:
            self.console.print(f"  {pair.name}: {n}/{steps} evaluations, {loss}", soft_wrap=True, markup=False)
            self.last_line[pair.name] = now

    def pair_end(self, pair: Pair, status: str, detail: str = "") -> None:
        task = self.tasks.pop(pair.name, None)
        if task is not None:
            self.progress.remove_task(task)
        if status == "failed":
            self.failed += 1
        if status in ("done", "failed"):
            self.pairs_done += 1
            # A failed pair's unused budget leaves the total, so the bar still ends full.
            unused = pair_work(pair, self.counted.get(pair.name, 0), pair.config.steps)
            if unused > 0 and status == "failed":
                self.progress.update(self.overall, total=max(1.0, self.progress.tasks[self.overall].total - unused))
            elif unused > 0:
                self._move(pair, pair.config.steps, ran=False)
        info = f"failed {self.failed}" if self.failed else ""
        self.progress.update(self.overall, info=info, count=self._count())
        line = f"{status} {pair.name}" + (
            f" ({detail})" if detail and status == "done" else f": {detail}" if detail else ""
        )
        if status == "done" and not self.live:  # the bars show the rest on a terminal
            line += f" [{self._count()}, {eta_text(self.eta())}]" if self.pairs_done < self.pairs_total else ""
        self.console.print(line, soft_wrap=True, markup=False)

    def note(self, message: str) -> None:
        self.console.print(message, soft_wrap=True, markup=False)

    def waiting(self, ranks: list[int], counts: dict[str, int]) -> None:
        now = time.monotonic()
        if now - self.last_line.get("", 0.0) >= PIPED_INTERVAL_S:
            summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            self.console.print(f"waiting for rank(s) {ranks}: {summary}", soft_wrap=True)
            self.last_line[""] = now

    def stop(self) -> None:
        self.progress.stop()
