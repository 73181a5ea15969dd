"""What a running job shows: rich progress bars on a terminal, plain lines when piped.

The overall bar counts loss evaluations over every pending pair (so it moves while a batch runs,
not only when pairs finish) and says how many pairs are done; its ETA divides what is left by the
evaluation rate measured since the job's first evaluation, so it stays shown however far apart
updates are. Every running pair (each member of a batch) has its own bar with its own evaluations
and loss.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.text import Text

from stylebatch.job.pairs import Pair

PIPED_INTERVAL_S = 10.0  # piped output: one line per running pair at most this often


class _RateETA(ProgressColumn):
    """Time left from the overall measured rate (rich's own column forgets its speed once updates
    are more than ~30 s apart, and then shows -:--:--)."""

    def render(self, task: Task) -> Text:
        rate, left = task.fields.get("rate"), (task.total or 0) - task.completed
        if not rate or left <= 0 or task.finished:
            return Text("", style="progress.remaining")
        s = int(left / rate)
        return Text(f"eta {s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}", style="progress.remaining")


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
        self.done_evals: dict[str, int] = {}  # pair name -> this run's evaluations counted into the overall bar
        self.offset: dict[str, int] = {}  # pair name -> evaluations it had done before this run
        self.pairs_total = self.pairs_done = self.failed = 0
        self.started = self.first_eval = None
        self.evals_at_first = 0
        self.last_line: dict[str, float] = {}

    def start(self, total: int, done: int, pending: list[Pair]) -> None:
        self.console.print(f"{total} pairs: {done} already done, {len(pending)} to run", soft_wrap=True)
        self.pairs_total, self.pairs_done = done + len(pending), done
        self.progress.start()
        evals = sum(p.config.steps for p in pending)
        self.overall = self.progress.add_task(
            "pairs", total=max(evals, 1), completed=0, info="", rate=None, count=self._count()
        )
        self.started = time.monotonic()

    def _count(self) -> str:
        return f"{self.pairs_done}/{self.pairs_total} pairs"

    def _advance(self, pair: Pair, n: int) -> None:
        """Count a pair's evaluations into the overall bar and refresh the measured rate."""
        previous = self.done_evals.get(pair.name, 0)
        self.done_evals[pair.name] = n
        completed = self.progress.tasks[self.overall].completed + max(0, n - previous)
        now = time.monotonic()
        if self.first_eval is None:
            self.first_eval, self.evals_at_first = now, completed
        rate = (completed - self.evals_at_first) / (now - self.first_eval) if now > self.first_eval else None
        self.progress.update(self.overall, completed=completed, rate=rate or None)

    def pair_start(self, pair: Pair, steps_done: int, batch: list[str] | None) -> None:
        # A resumed pair's earlier evaluations are not this run's work: out of the total, and of the rate.
        self.offset[pair.name], self.done_evals[pair.name] = steps_done, 0
        if steps_done:
            self.progress.update(self.overall, total=max(1, self.progress.tasks[self.overall].total - steps_done))
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
        self._advance(pair, n - self.offset.get(pair.name, 0))
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
            # A failed or stopped pair's unused budget leaves the total, so the bar still ends full.
            spent = self.done_evals.get(pair.name, 0)
            unused = pair.config.steps - self.offset.get(pair.name, 0) - spent
            if unused > 0:
                self.progress.update(self.overall, total=max(1, self.progress.tasks[self.overall].total - unused))
        info = f"failed {self.failed}" if self.failed else ""
        self.progress.update(self.overall, info=info, count=self._count())
        line = f"{status} {pair.name}" + (
            f" ({detail})" if detail and status == "done" else f": {detail}" if detail else ""
        )
        if not self.live or status != "done":
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
