"""Command line: `stylebatch run | validate | status`. The only module that prints (with rich) and
maps errors to exit codes; `main(argv) -> int` is what tests call in process."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from stylebatch import __version__
from stylebatch.errors import EXIT_CODES, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_INVALID, StylebatchError

log = logging.getLogger("stylebatch")


def _parser() -> argparse.ArgumentParser:
    epilog = "exit codes:\n" + "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODES.items())
    parser = argparse.ArgumentParser(
        prog="stylebatch", description="Neural style transfer (Gatys et al. 2016) for many pairs, resumable.",
        epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"stylebatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def job_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("manifest", help="YAML manifest listing the pairs")
        p.add_argument("--config", metavar="PRESET", help="preset name in configs/ (e.g. fast, gatys2016) or a YAML path")
        p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], help="override a config key (last wins)")
        p.add_argument("--weights", help="imagenet (default), random, or a path to VGG19 weights")
        p.add_argument("--out", help="output directory (overrides the manifest's output_dir; relative to cwd)")
        p.add_argument("--debug", action="store_true", help="show full tracebacks")

    run = sub.add_parser("run", help="run (or resume) every pair of a manifest")
    job_args(run)
    run.add_argument("--fresh", action="store_true", help="forget previous progress and start over")
    run.add_argument("--retry-failed", action="store_true", help="retry pairs that used up max_attempts")
    run.add_argument("--skip-invalid", action="store_true", help="run the valid pairs, record invalid ones as failed")
    run.add_argument("--break-lock", action="store_true", help="remove a stale job lock (e.g. on NFS)")
    run.add_argument("--accelerator", choices=("auto", "cpu", "gpu"), default="auto")
    run.add_argument("--devices", default="1", help="number of devices (workers), or auto")
    run.add_argument("--num-nodes", type=int, default=1)

    val = sub.add_parser("validate", help="check a manifest and every file it names; print the plan")
    job_args(val)

    status = sub.add_parser("status", help="show the state of a job directory")
    status.add_argument("output_dir")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--debug", action="store_true")
    return parser


class RichReporter:
    """Overall bar over pairs (done/failed/ETA) and the current pair's evaluations and loss; plain
    lines when stdout is not a terminal."""

    def __init__(self, console: Console):
        self.console = console
        self.live = console.is_terminal
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=not self.live,
        )
        self.failed = 0
        self.overall = None
        self.current = None
        self.last_line = 0.0

    def start(self, total: int, done: int, pending: int) -> None:
        self.console.print(f"{total} pairs: {done} already done, {pending} to run", soft_wrap=True)
        self.progress.start()
        self.overall = self.progress.add_task("pairs", total=done + pending, completed=done, info="")

    def pair_start(self, pair: Any, steps_done: int) -> None:
        if self.current is not None:
            self.progress.remove_task(self.current)
        resumed = f" (resuming at {steps_done})" if steps_done else ""
        self.current = self.progress.add_task(pair.name, total=pair.config.steps, completed=steps_done, info="")
        if not self.live:
            self.console.print(f"start {pair.name}{resumed}", soft_wrap=True)

    def pair_progress(self, pair: Any, n: int, losses: dict[str, float]) -> None:
        self.progress.update(self.current, completed=min(n, pair.config.steps), info=f"loss {losses.get('total', 0):.4g}")
        if not self.live and time.monotonic() - self.last_line > 10:
            self.console.print(f"  {pair.name}: {n}/{pair.config.steps} evaluations, loss {losses.get('total', 0):.4g}")
            self.last_line = time.monotonic()

    def pair_end(self, pair: Any, status: str, detail: str = "") -> None:
        if status == "failed":
            self.failed += 1
        if status in ("done", "failed"):
            self.progress.advance(self.overall)
        self.progress.update(self.overall, info=f"failed {self.failed}" if self.failed else "")
        line = f"{status} {pair.name}" + (f": {detail}" if detail else "")
        if not self.live or status != "done":
            self.console.print(line, soft_wrap=True, markup=False)

    def stop(self) -> None:
        self.progress.stop()


def _load(args: argparse.Namespace):
    from stylebatch.config import parse_set
    from stylebatch.manifest import load_job

    sets = parse_set(args.set)
    return load_job(args.manifest, preset=args.config, sets=sets, out=args.out, weights=args.weights)


def _print_problems(err: Console, problems: list[str]) -> None:
    for problem in problems:
        err.print(f"error: {problem}", soft_wrap=True, markup=False, highlight=False)


def _plan_line(job: Any) -> str:
    pairs = job.valid_pairs
    work = sum(p.cost for p in pairs)
    return (f"{job.manifest}: {len(pairs)} valid pair(s) of {len(job.pairs)}, output to {job.output_dir}; "
            f"work {work / 1e6:,.1f} Mpx x evaluations")


def cmd_validate(args: argparse.Namespace, out: Console, err: Console) -> int:
    job = _load(args)
    problems = job.all_problems
    out.print(_plan_line(job), soft_wrap=True, markup=False)
    if problems:
        _print_problems(err, problems)
        err.print(f"{len(problems)} problem(s); nothing was run", soft_wrap=True)
        return EXIT_INVALID
    for pair in job.pairs:
        w, h = pair.out_size
        out.print(f"  {pair.name}: {w}x{h}, {pair.config.steps} evaluations, {pair.config.optimizer}",
                  soft_wrap=True, markup=False)
    return 0


def cmd_run(args: argparse.Namespace, out: Console, err: Console) -> int:
    from stylebatch.runner import RunOptions, run_job

    job = _load(args)
    if job.problems or (job.all_problems and not args.skip_invalid):
        _print_problems(err, job.all_problems)
        err.print(f"{len(job.all_problems)} problem(s); nothing was run (see --skip-invalid)", soft_wrap=True)
        return EXIT_INVALID
    if not job.valid_pairs:
        _print_problems(err, job.all_problems)
        return EXIT_INVALID
    if job.all_problems:
        _print_problems(err, job.all_problems)
    opts = RunOptions(
        fresh=args.fresh, retry_failed=args.retry_failed, skip_invalid=args.skip_invalid,
        break_lock=args.break_lock, device=_device(args.accelerator),
    )
    reporter = RichReporter(out)
    try:
        code = run_job(job, opts, reporter)
    finally:
        reporter.stop()
    out.print(f"exit {code}: {EXIT_CODES[code]}; outputs in {job.output_dir}", soft_wrap=True, markup=False)
    return code


def _device(accelerator: str) -> str:
    import torch

    if accelerator == "gpu" or (accelerator == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise StylebatchError("--accelerator gpu: no CUDA device is available here")
        return "cuda:0"
    return "cpu"


def cmd_status(args: argparse.Namespace, out: Console, err: Console) -> int:
    from stylebatch.state import JobState, summarize

    state = JobState(Path(args.output_dir))
    if not state.root.is_dir():
        raise StylebatchError(f"{args.output_dir}: not a stylebatch output directory (no {state.root.name}/)")
    summary = summarize(state.records())
    if args.json:
        out.print_json(json.dumps(summary))
        return 0
    table = Table(title=f"{args.output_dir}")
    for col in ("pair", "status", "evaluations", "attempts", "rank", "seconds", "error"):
        table.add_column(col)
    for p in summary["pairs"]:
        steps = f"{p['steps_done']}/{p['steps']}" if p["steps"] else str(p["steps_done"])
        table.add_row(p["name"], p["status"], steps, str(p["attempts"]), str(p["rank"] if p["rank"] is not None else ""),
                      f"{p['seconds']:.1f}" if p["seconds"] else "", p["error"] or "")
    out.print(table)
    out.print(", ".join(f"{k} {v}" for k, v in summary["counts"].items() if v), soft_wrap=True)
    return 0


COMMANDS = {"run": cmd_run, "validate": cmd_validate, "status": cmd_status}


def main(argv: list[str] | None = None) -> int:
    out, err = Console(highlight=False), Console(stderr=True, highlight=False)
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2)
        return int(e.code or 0)
    try:
        return COMMANDS[args.command](args, out, err)
    except StylebatchError as e:
        if args.debug:
            err.print(traceback.format_exc(), markup=False)
        _print_problems(err, e.problems)
        return e.exit_code
    except KeyboardInterrupt:
        err.print("interrupted; run the same command again to resume", soft_wrap=True)
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 (the one place that turns a bug into exit 70)
        err.print(traceback.format_exc(), markup=False)
        err.print(f"internal error: {type(e).__name__}: {e}. This is a bug in stylebatch {__version__}; "
                  "please report it with the traceback above.", soft_wrap=True, markup=False)
        return EXIT_INTERNAL


def entry_point() -> None:
    sys.exit(main())
