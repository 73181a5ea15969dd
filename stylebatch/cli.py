"""Command line: `stylebatch run | validate | status`. The only module that prints (with rich) and
maps errors to exit codes; `main(argv) -> int` is what tests call in process."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import traceback
from pathlib import Path
from typing import Any

from rich.console import Console
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

    def job_args(p: argparse.ArgumentParser, manifest_optional: bool = False) -> None:
        p.add_argument("manifest", nargs="?" if manifest_optional else None, help="YAML manifest listing the pairs")
        p.add_argument("--config", metavar="PRESET", help="preset name in configs/ (e.g. fast, gatys2016) or a YAML path")
        p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], help="override a config key (last wins)")
        p.add_argument("--weights", help="imagenet (default), random, or a path to VGG19 weights")
        p.add_argument("--out", help="output directory (overrides the manifest's output_dir; relative to cwd)")
        p.add_argument("--debug", action="store_true", help="show full tracebacks")

    run = sub.add_parser("run", help="run (or resume) every pair of a manifest")
    job_args(run, manifest_optional=True)
    run.add_argument("--from", dest="from_image", metavar="IMAGE",
                     help="instead of a manifest: make an output again from the settings it carries "
                          "(into --out, default ./reproduced)")
    run.add_argument("--fresh", action="store_true", help="forget previous progress and start over")
    run.add_argument("--retry-failed", action="store_true", help="retry pairs that used up max_attempts")
    run.add_argument("--skip-invalid", action="store_true", help="run the valid pairs, record invalid ones as failed")
    run.add_argument("--break-lock", action="store_true", help="remove a stale job lock (e.g. on NFS)")
    run.add_argument("--accelerator", choices=("auto", "cpu", "gpu"), default="auto")
    run.add_argument("--devices", default="1", help="number of devices (workers), or auto")
    run.add_argument("--num-nodes", type=int, default=1)
    run.add_argument("--sync-timeout", type=float, default=600.0,
                     help="seconds workers wait for rank 0's plan (and rank 0 for a worker to start)")

    val = sub.add_parser("validate", help="check a manifest and every file it names; print the plan")
    job_args(val)

    status = sub.add_parser("status", help="show the state of a job directory")
    status.add_argument("output_dir")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--debug", action="store_true")

    report = sub.add_parser("report", help="write report.html and contact_sheet.png of a job directory")
    report.add_argument("output_dir")
    report.add_argument("--group-by", choices=("style", "content"), default="style")
    report.add_argument("--columns", default="auto", metavar="KEY",
                        help="config key whose values become the columns (default: the one the job varies; none)")
    report.add_argument("--debug", action="store_true")

    inspect = sub.add_parser("inspect", help="print the settings, input hashes and versions an output carries")
    inspect.add_argument("image")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    inspect.add_argument("--debug", action="store_true")
    return parser


def _load(args: argparse.Namespace, device: str | None = None):
    from stylebatch.config import parse_set
    from stylebatch.manifest import load_job

    if not args.manifest:
        raise StylebatchError(f"{args.command}: give a manifest (or, for run, --from IMAGE)")
    sets = parse_set(args.set)
    return load_job(args.manifest, preset=args.config, sets=sets, out=args.out, weights=args.weights, device=device)


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
    from stylebatch.estimate import describe_job  # issue 16: memory and time per pair, and in total

    for line in describe_job(job.pairs):
        out.print(line, soft_wrap=True, markup=False)
    return 0


def cmd_run(args: argparse.Namespace, out: Console, err: Console) -> int:
    from stylebatch.runner import RunOptions, launch, run_job

    opts = RunOptions(
        fresh=args.fresh, retry_failed=args.retry_failed, skip_invalid=args.skip_invalid,
        break_lock=args.break_lock, sync_timeout=args.sync_timeout,
    )
    fabric = launch(args.accelerator, args.devices, args.num_nodes, args.sync_timeout)
    if fabric is not None and fabric.global_rank != 0:
        # Fabric re-executed this command for another device: rank 0 validates and plans, once.
        job = fabric.broadcast(None, src=0)
        return run_job(job, opts, fabric=fabric) if job is not None else 0
    # `auto` sizes are measured for the device this run uses (None: the first GPU if any, else the CPU).
    job = _load_from_image(args) if args.from_image else _load(args, "cpu" if args.accelerator == "cpu" else None)
    refuse = bool(job.problems or (job.all_problems and not args.skip_invalid) or not job.valid_pairs)
    if fabric is not None:
        fabric.broadcast(None if refuse else job, src=0)
    if job.all_problems:
        _print_problems(err, job.all_problems)
    if refuse:
        err.print(f"{len(job.all_problems)} problem(s); nothing was run (see --skip-invalid)", soft_wrap=True)
        return EXIT_INVALID
    if args.from_image:
        from stylebatch.provenance import batch_note

        if note := batch_note(args.from_image):
            err.print(f"note: {note}", soft_wrap=True, markup=False, highlight=False)
    if fabric is None:
        opts.device = _device(args.accelerator)
    from stylebatch.progress import RichReporter

    reporter = RichReporter(out)
    try:
        code = run_job(job, opts, reporter, fabric=fabric)
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


def _load_from_image(args: argparse.Namespace):
    """`run --from IMAGE`: a one-pair job from the settings the image carries (--out, default ./reproduced)."""
    from stylebatch.config import parse_set
    from stylebatch.provenance import job_from_image, recorded_threads

    if args.manifest or args.config:
        raise StylebatchError("run --from IMAGE takes no manifest or --config: the image's settings are the job")
    job = job_from_image(args.from_image, args.out or "reproduced", weights=args.weights, sets=parse_set(args.set))
    threads = recorded_threads(args.from_image)
    if threads:
        import torch

        torch.set_num_threads(threads)  # CPU results depend on the intra-op thread count: use the original's
    return job


def cmd_report(args: argparse.Namespace, out: Console, err: Console) -> int:
    from stylebatch.report import write_report

    result = write_report(Path(args.output_dir), group_by=args.group_by, columns=args.columns)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(result.counts.items()))
    geo = result.geometry
    out.print(f"{result.pairs} pairs ({counts})", soft_wrap=True, markup=False)
    out.print(f"report: {result.html}", soft_wrap=True, markup=False)
    out.print(f"contact sheet: {result.sheet} ({geo.width}x{geo.height}, {geo.cell} px cells)",
              soft_wrap=True, markup=False)
    return 0


def cmd_inspect(args: argparse.Namespace, out: Console, err: Console) -> int:
    from stylebatch.config import FIELDS
    from stylebatch.provenance import input_checks, input_files, read_metadata

    meta = read_metadata(args.image)
    checks = input_checks(meta)
    if args.json:
        out.print_json(json.dumps({**meta, "input_checks": checks}, default=str))
        return 0
    lines = [f"{args.image}", f"  name         {meta.get('name')}", f"  pair id      {meta.get('id')}"]
    for role, path, sha in input_files(meta):
        lines.append(f"  {role:<12} {path}")
        lines.append(f"  {'':<12} sha256 {sha} ({checks[role]})")
    lines.append(f"  weights      {meta.get('weights_source', '')} ({meta.get('weights')})")
    lines.append(f"  evaluations  {meta.get('evaluations')}")
    lines.append("  losses       " + ", ".join(f"{k} {v:.6g}" for k, v in (meta.get("losses") or {}).items()))
    size, threads = meta.get("output_size") or ["?", "?"], meta.get("cpu_threads")
    lines.append(f"  output       {size[0]}x{size[1]}, made on {meta.get('device', '?')}"
                 + (f" with {threads} thread(s)" if threads else ""))
    lines.append("  versions     " + ", ".join(f"{k} {v}" for k, v in (meta.get("versions") or {}).items()))
    lines.append("  config       (* differs from the default)")
    for key, value in meta["config"].items():
        f = FIELDS.get(key)
        default = f and (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
        lines.append(f"  {'*' if f is None or value != default else ' '} {key:<18} {value}")
    out.print("\n".join(lines), soft_wrap=True, markup=False, highlight=False)
    if any(state != "ok" for state in checks.values()):
        err.print("an input is missing or changed since: `run --from` would refuse", soft_wrap=True)
    return 0


COMMANDS = {"run": cmd_run, "validate": cmd_validate, "status": cmd_status, "report": cmd_report,
            "inspect": cmd_inspect}


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
    except OSError as e:  # the file system, not a bug (disk full, a directory removed): every write is
        # atomic and every finished pair recorded, so running the same command again resumes: exit 3
        if getattr(args, "debug", False):
            err.print(traceback.format_exc(), markup=False)
        err.print(f"error: {e}; the job stopped, nothing finished is lost: fix this and run the same command "
                  "again to resume", soft_wrap=True, markup=False, highlight=False)
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 (the one place that turns a bug into exit 70)
        err.print(traceback.format_exc(), markup=False)
        err.print(f"internal error: {type(e).__name__}: {e}. This is a bug in stylebatch {__version__}; "
                  "please report it with the traceback above.", soft_wrap=True, markup=False)
        return EXIT_INTERNAL


def entry_point() -> None:
    sys.exit(main())
