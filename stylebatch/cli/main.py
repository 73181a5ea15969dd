"""Command line: `stylebatch validate | run | status | report | inspect`. With the rest of cli/, the
only place that prints (with rich) and maps errors to exit codes; `main(argv) -> int` is what tests
call in process."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import re
import signal
import sys
import traceback
from pathlib import Path

from rich.console import Console

from stylebatch import __version__
from stylebatch.atomic import fault_point
from stylebatch.cli.flags import check_devices, check_paths, cpu_workers_note, seconds, whole_number
from stylebatch.errors import (
    EXIT_CODES,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_TOO_LARGE,
    StopNow,
    StylebatchError,
    is_disk_full,
)
from stylebatch.job.pairs import Job
from stylebatch.job.values import shorten

log = logging.getLogger("stylebatch")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one `error:` line like every other refusal (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise StylebatchError(f"{self.prog}: {shorten(message, 400)} (see {self.prog} --help)")


def _parser() -> argparse.ArgumentParser:
    epilog = "exit codes:\n" + "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODES.items())
    parser = _Parser(
        prog="stylebatch",
        description="Neural style transfer (Gatys et al. 2016) for many pairs, resumable.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"stylebatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def job_args(p: argparse.ArgumentParser, manifest_optional: bool = False) -> None:
        p.add_argument("manifest", nargs="?" if manifest_optional else None, help="YAML manifest listing the pairs")
        p.add_argument(
            "--config",
            metavar="PRESET",
            help="a bundled preset (fast, gatys2016, ...: README, Presets) or a YAML file's path",
        )
        p.add_argument(
            "--set", metavar="KEY=VALUE", action="append", default=[], help="override a config key (last wins)"
        )
        p.add_argument("--weights", help="imagenet (default), random, or a path to VGG19 weights")
        p.add_argument("--out", help="output directory (overrides the manifest's output_dir; relative to cwd)")
        p.add_argument(
            "--overwrite",
            action="store_true",
            help="let the job replace files at its output paths that it did not write",
        )
        p.add_argument("--debug", action="store_true", help="show full tracebacks")

    run = sub.add_parser(
        "run",
        help="run (or resume) every pair of a manifest",
        epilog=f"presets (--config, or defaults.preset in a manifest): {', '.join(_preset_names())}\n"
        "every config key, its type, default and meaning (for --set and manifests): the README's\n"
        "'Configuration reference' (README.md next to this package's source, or the project page)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    job_args(run, manifest_optional=True)
    run.add_argument(
        "--from",
        dest="from_image",
        metavar="IMAGE",
        help="instead of a manifest: make an output again from the settings it carries "
        "(into --out, default ./reproduced)",
    )
    run.add_argument("--fresh", action="store_true", help="forget previous progress and start over")
    run.add_argument("--retry-failed", action="store_true", help="retry pairs that used up max_attempts")
    run.add_argument("--skip-invalid", action="store_true", help="run the valid pairs, record invalid ones as failed")
    run.add_argument("--break-lock", action="store_true", help="remove a stale job lock (e.g. on NFS)")
    from stylebatch.jobdir.state import REDO_UNASKED

    run.add_argument(
        "--redo",
        action="store_true",
        help=f"go ahead when a changed setting, input or weights would make more than {REDO_UNASKED} finished "
        "pairs again (each previous output is kept in .stylebatch/replaced/)",
    )
    run.add_argument(
        "--verify",
        action="store_true",
        help="re-hash every finished output (sha256) instead of trusting its recorded size, mtime and inode",
    )
    run.add_argument(
        "--accelerator",
        choices=("auto", "cpu", "gpu"),
        default="auto",
        help="where the pairs run: auto (a GPU if there is one), cpu or gpu (default: auto)",
    )
    run.add_argument(
        "--devices",
        default="1",
        help="number of devices (one worker each), or auto: every GPU, or one worker on the CPU (default: 1)",
    )
    run.add_argument(
        "--num-nodes",
        default="1",
        help="number of machines (SLURM/torchrun), each with --devices workers (default: 1)",
    )
    run.add_argument(
        "--sync-timeout",
        default="600",
        help="seconds workers wait for rank 0's plan (and rank 0 for a worker to start) (default: 600)",
    )

    val = sub.add_parser("validate", help="check a manifest and every file it names; print the plan")
    job_args(val)

    status = sub.add_parser("status", help="show the state of every pair of a job directory")
    status.add_argument("output_dir", help="the job's output directory (the manifest's output_dir or --out)")
    status.add_argument(
        "--all", action="store_true", help="one line per pair (default: counts, failed and running pairs)"
    )
    status.add_argument(
        "--json",
        action="store_true",
        help='machine-readable, streamed: {"pairs": [one object per line], "counts": {...}}',
    )
    status.add_argument("--debug", action="store_true", help="show full tracebacks")

    report = sub.add_parser("report", help="write the job's results as a matrix: report.html and contact sheets")
    report.add_argument("output_dir", help="the job's output directory (the manifest's output_dir or --out)")
    report.add_argument(
        "--columns",
        default="auto",
        metavar="KEY",
        help="content, style or a config key whose values make the columns "
        "(default: the key a sweep varies, else style)",
    )
    report.add_argument(
        "--rows",
        default="auto",
        metavar="KEY",
        help="content, style or a config key whose values make the rows (default: content)",
    )
    report.add_argument(
        "--live-every",
        type=float,
        metavar="MINUTES",
        help="as the running job writes it: pages reload every MINUTES while pairs are left (the unit of report_every)",
    )
    report.add_argument("--debug", action="store_true", help="show full tracebacks")

    gallery = sub.add_parser(
        "gallery", help="write the job's pictures as a self-contained folder to send: pages, contact sheets, files"
    )
    gallery.add_argument("output_dir", help="the job's output directory (the manifest's output_dir or --out)")
    gallery.add_argument("dest", help="the folder to write (new, empty, or an earlier gallery, which is remade)")
    gallery.add_argument("--losses", action="store_true", help="show each picture's final losses")
    gallery.add_argument("--title", help="the pages' title (default: from the job directory's name)")
    gallery.add_argument("--columns", default="auto", metavar="KEY", help="as for report")
    gallery.add_argument("--rows", default="auto", metavar="KEY", help="as for report")
    gallery.add_argument("--debug", action="store_true", help="show full tracebacks")

    inspect = sub.add_parser("inspect", help="print the settings, input hashes and versions an output carries")
    inspect.add_argument("image", help="an output image made by stylebatch")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    inspect.add_argument("--debug", action="store_true", help="show full tracebacks")
    return parser


def _preset_names() -> list[str]:
    """The bundled presets' names, read from the files (importing the config would load torch for --help)."""
    package = Path(__file__).resolve().parents[1]
    folders = [package / "job" / "presets", package.parent / "configs"]
    return sorted({p.stem for folder in folders if folder.is_dir() for p in folder.glob("*.yaml")})


def _load(args: argparse.Namespace, device: str | None = None):
    from stylebatch.job.config import parse_set
    from stylebatch.memory.autosize import load_job

    if not args.manifest:
        raise StylebatchError(f"{args.command}: give a manifest (or, for run, --from IMAGE)")
    sets = parse_set(args.set)
    return load_job(
        args.manifest,
        preset=args.config,
        sets=sets,
        out=args.out,
        weights=args.weights,
        device=device,
        preset_flag=f"--config {args.config}",
    )


def _print_problems(err: Console, problems: list[str]) -> None:
    for problem in problems:
        err.print(f"error: {shorten(problem, 1000)}", soft_wrap=True, markup=False, highlight=False)


def _plan_line(job: Job) -> str:
    pairs = job.valid_pairs
    work = sum(p.cost for p in pairs)
    return (
        f"{job.manifest}: {len(pairs)} valid pair(s) of {len(job.pairs)}, output to {job.output_dir}; "
        f"work {work / 1e6:,.1f} Mpx x evaluations"
    )


def cmd_validate(args: argparse.Namespace, out: Console, err: Console) -> int:
    from stylebatch.runner.user_files import check_user_files

    job = _load(args)
    check_user_files(job, args.overwrite)  # a file at an output path that the job did not write
    problems = job.all_problems
    if problems:  # the plan line only for a job that would run: never just above a refusal
        _print_problems(err, problems)
        err.print(f"{len(problems)} problem(s); nothing was run", soft_wrap=True)
        return EXIT_INVALID
    out.print(shorten(_plan_line(job), 1000), soft_wrap=True, markup=False)  # may hold a long path
    from stylebatch.memory.calibration import Device
    from stylebatch.memory.estimate import describe_job  # memory and time per pair, and in total
    from stylebatch.runner.plan import group  # batched pairs share their fixed costs

    for note in job.notes:  # what `size: auto` chose
        out.print(f"  {note}", soft_wrap=True, markup=False)
    memory = Device.current(_device("auto"), probe=True)  # no recorded runs: this machine's speed, probed
    lines, misfits = describe_job(job.pairs, memory, batches=group(job.valid_pairs, {}))
    # Plain text (no markup, no styles, never wrapped): written as one block, not a rich print per
    # line, which costs about a millisecond each (100,000 pairs: minutes).
    out.file.write("".join(f"{line}\n" for line in lines))
    out.file.flush()
    if misfits:
        err.print(
            f"{misfits} pair(s) do not fit this device's memory; exit {EXIT_TOO_LARGE}: {EXIT_CODES[EXIT_TOO_LARGE]}",
            soft_wrap=True,
            markup=False,
        )
        return EXIT_TOO_LARGE
    return 0


def cmd_run(args: argparse.Namespace, out: Console, err: Console) -> int:
    from stylebatch.runner import workers
    from stylebatch.runner.loop import RunOptions, run_job
    from stylebatch.runner.workers import launch

    devices = whole_number("--devices", args.devices, auto=True)
    num_nodes = whole_number("--num-nodes", args.num_nodes)
    sync_timeout = seconds("--sync-timeout", args.sync_timeout)
    check_devices(args.accelerator, devices)
    if note := cpu_workers_note(args.accelerator, devices):
        err.print(f"note: {note}", soft_wrap=True, markup=False, highlight=False)
    opts = RunOptions(
        fresh=args.fresh,
        retry_failed=args.retry_failed,
        skip_invalid=args.skip_invalid,
        break_lock=args.break_lock,
        sync_timeout=sync_timeout,
        verify=args.verify,
        redo=args.redo,
    )
    if workers.launcher_missing(num_nodes):  # the exact commands, with this run's manifest
        where = str(args.manifest) if getattr(args, "manifest", None) else "MANIFEST"
        raise StylebatchError(workers.no_launcher_message(num_nodes, devices, where))
    fabric = launch(args.accelerator, devices, num_nodes, sync_timeout)
    if fabric is not None and fabric.global_rank != 0:
        # Fabric re-executed this command for another device: rank 0 validates and plans, once.
        fault_point("worker_joined")
        job = fabric.broadcast(None, src=0)
        return run_job(job, opts, fabric=fabric) if job is not None else 0
    # `auto` sizes are measured for the device this run uses (None: the first GPU if any, else the CPU).
    job = _load_from_image(args) if args.from_image else _load(args, "cpu" if args.accelerator == "cpu" else None)
    from stylebatch.runner.user_files import check_user_files

    check_user_files(job, args.overwrite)  # before --fresh forgets the records that make an output ours
    refuse = bool(job.problems or (job.all_problems and not args.skip_invalid) or not job.valid_pairs)
    if fabric is not None:
        workers.broadcast(fabric, None if refuse else job)  # a worker lost here: one line, exit 3
    if job.all_problems:
        _print_problems(err, job.all_problems)
    if refuse:
        err.print(f"{len(job.all_problems)} problem(s); nothing was run (see --skip-invalid)", soft_wrap=True)
        return EXIT_INVALID
    for note in job.notes:  # what `size: auto` chose
        out.print(note, soft_wrap=True, markup=False)
    if args.from_image:
        from stylebatch.fit.provenance import batch_note

        if note := batch_note(args.from_image):
            err.print(f"note: {note}", soft_wrap=True, markup=False, highlight=False)
    if fabric is None:
        opts.device = _device(args.accelerator)
    from stylebatch.cli.progress import RichReporter

    reporter = RichReporter(out)
    try:
        code = run_job(job, opts, reporter, fabric=fabric)
    finally:
        reporter.stop()
    if _WHOLE_PROCESS:
        # The job is over and the process exits with the code printed next: a Ctrl-C from here on
        # would turn it into 130 (Python's KeyboardInterrupt exit) after "exit 3" was printed.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
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
    """Every pair of the job, pending ones included, one record read at a time (status_view.py)."""
    from stylebatch.cli.status import Summary, json_chunks
    from stylebatch.jobdir.state import JobState
    from stylebatch.report.rows import pair_rows

    rows = pair_rows(Path(args.output_dir))
    summary = Summary(every=args.all)
    fh = out.file
    if args.json:
        kept = [str(p) for p in JobState(Path(args.output_dir)).replaced()]
        for chunk in json_chunks(rows, summary, kept):
            fh.write(chunk)
        fh.flush()
        return 0
    for row in rows:
        summary.add(row)
    if args.all or not out.is_terminal:  # piped or in a file: one line per pair, names in full
        fh.writelines(summary.aligned())
        fh.flush()
    elif (table := summary.table()) is not None:
        out.print(table)
    if more := summary.more():
        out.print(more, soft_wrap=True, markup=False)
    out.print(summary.line(args.output_dir), soft_wrap=True, markup=False)
    kept = JobState(Path(args.output_dir)).replaced()
    if kept:
        out.print(
            f"{len(kept)} earlier output(s) that a changed setting replaced are kept in {kept[0].parent}"
            + ("" if args.all else " (--all lists them)"),
            soft_wrap=True,
            markup=False,
        )
        if args.all:
            fh.writelines(f"  {path.name}\n" for path in kept)
            fh.flush()
    return 0


def _load_from_image(args: argparse.Namespace):
    """`run --from IMAGE`: a one-pair job from the settings the image carries (--out, default ./reproduced)."""
    from stylebatch.fit.provenance import job_from_image, recorded_threads
    from stylebatch.job.config import parse_set

    if args.manifest or args.config:
        raise StylebatchError("run --from IMAGE takes no manifest or --config: the image's settings are the job")
    job = job_from_image(args.from_image, args.out or "reproduced", weights=args.weights, sets=parse_set(args.set))
    threads = recorded_threads(args.from_image)
    if threads:
        import torch

        torch.set_num_threads(threads)  # CPU results depend on the intra-op thread count: use the original's
    return job


def cmd_report(args: argparse.Namespace, out: Console, err: Console) -> int:
    from stylebatch.report.build import write_report

    live_every = args.live_every * 60 if args.live_every else None  # minutes, like report_every
    if live_every:
        os.nice(10)  # the running job's refresh (live_report.py): the pairs come first
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    result = write_report(
        Path(args.output_dir), columns=args.columns, rows=args.rows, live_every=live_every, workers=cores
    )
    counts = ", ".join(f"{n} {s}" for s, n in result.counts.items())
    layout = result.layout
    if layout.grouped:  # a manifest's list of grids: each its own matrix
        groups = dict.fromkeys(s.group for s in layout.sections)
        shape = "; ".join(groups)
    else:
        shape = f"rows {layout.row_axis}, columns {layout.column_axis}" + (
            f", sections by {', '.join(layout.section_axes)}" if layout.section_axes else ""
        )
    out.print(f"{result.pairs} pairs ({counts}): {shape}", soft_wrap=True, markup=False)
    out.print(
        f"report: {result.html}" + (f" (index of {result.pages} pages)" if result.pages > 1 else ""),
        soft_wrap=True,
        markup=False,
    )
    sheets = result.sheets[0] if len(result.sheets) == 1 else f"{len(result.sheets)} in {result.sheets[0].parent}"
    out.print(f"contact sheet: {sheets}", soft_wrap=True, markup=False)
    return 0


def cmd_gallery(args: argparse.Namespace, out: Console, err: Console) -> int:
    from stylebatch.report.gallery import write_gallery

    result = write_gallery(
        Path(args.output_dir),
        Path(args.dest),
        losses=args.losses,
        columns=args.columns,
        rows=args.rows,
        heading=args.title,
    )
    out.print(
        f"gallery: {result.index} ({result.pictures} pictures, {result.pages} page(s), "
        f"{len(result.sheets)} contact sheet(s)); zip the folder {args.dest} to send it",
        soft_wrap=True,
        markup=False,
    )
    return 0


def cmd_inspect(args: argparse.Namespace, out: Console, err: Console) -> int:
    from stylebatch.fit.provenance import input_checks, input_files, read_metadata
    from stylebatch.job.config import FIELDS

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
    lines.append(
        f"  output       {size[0]}x{size[1]}, made on {meta.get('device', '?')}"
        + (f" with {threads} thread(s)" if threads else "")
    )
    if meta.get("icc_profile"):  # the content's colour profile, which the output is in and carries
        lines.append(f"  icc profile  {meta['icc_profile']}")
    lines.append("  versions     " + ", ".join(f"{k} {v}" for k, v in (meta.get("versions") or {}).items()))
    for path in _kept_copies(Path(args.image)):
        lines.append(f"  replaced     {path} (an earlier output of this name, kept)")
    lines.append("  config       (* differs from the default)")
    for key, value in meta["config"].items():
        f = FIELDS.get(key)
        default = f and (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
        lines.append(f"  {'*' if f is None or value != default else ' '} {key:<18} {value}")
    out.print("\n".join(lines), soft_wrap=True, markup=False, highlight=False)
    if any(state != "ok" for state in checks.values()):
        err.print("an input is missing or changed since: `run --from` would refuse", soft_wrap=True)
    return 0


def _kept_copies(image: Path) -> list[Path]:
    """The earlier outputs of an output's name that a changed setting replaced (kept by `run`)."""
    from stylebatch.jobdir.state import JobState

    own = re.compile(re.escape(image.stem) + r"\.(?:[0-9a-f]{16}|unknown)(?:-\d+)?\.\w+")
    return [p for p in JobState(image.parent).replaced() if own.fullmatch(p.name)]


COMMANDS = {
    "run": cmd_run,
    "validate": cmd_validate,
    "status": cmd_status,
    "report": cmd_report,
    "inspect": cmd_inspect,
    "gallery": cmd_gallery,
}


def main(argv: list[str] | None = None) -> int:
    out, err = Console(highlight=False), Console(stderr=True, highlight=False)
    out.on_broken_pipe = _broken_pipe  # type: ignore[method-assign]  # rich's own exits 1 there
    logging.raiseExceptions = False  # a log line lost to a full disk is not worth a traceback on stderr
    argv = sys.argv[1:] if argv is None else argv
    if not argv:  # bare `stylebatch`: the commands, not a usage error
        _parser().print_help()
        return 0
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # argparse: --help or --version (0)
        return int(e.code or 0)
    except StylebatchError as e:  # a usage mistake
        _print_problems(err, e.problems)
        return e.exit_code
    try:
        check_paths(args)
        return COMMANDS[args.command](args, out, err)
    except StylebatchError as e:
        if args.debug:
            err.print(traceback.format_exc(), markup=False)
        _print_problems(err, e.problems)
        return e.exit_code
    except KeyboardInterrupt:
        if args.command != "run":
            return EXIT_CTRL_C  # a read-only command has nothing to resume
        err.print("interrupted; run the same command again to resume", soft_wrap=True)
        return EXIT_INTERRUPTED
    except StopNow:
        err.print(
            "stopped at once (second Ctrl-C); exit 3: the pair in progress resumes from its last "
            "checkpoint when you run the same command again",
            soft_wrap=True,
        )
        return EXIT_INTERRUPTED
    except OSError as e:  # the file system, not a bug (disk full, a directory removed): every write is
        # atomic and every finished pair recorded, so running the same command again resumes: exit 3
        if isinstance(e, BrokenPipeError):
            # The reader went away (`status --all | head`): what is still buffered for stdout goes
            # nowhere instead of raising again when Python exits.
            _drop_stdout()
            if args.command != "run":
                return EXIT_CLOSED_PIPE  # quietly, as Unix tools do
        if getattr(args, "debug", False):
            err.print(traceback.format_exc(), markup=False)
        if args.command != "run":  # read-only: no job ran, nothing stopped
            err.print(f"error: {shorten(str(e), 1000)}", soft_wrap=True, markup=False, highlight=False)
            return EXIT_INVALID
        fix = "free space" if is_disk_full(e) else "fix this"
        err.print(
            f"error: {shorten(str(e), 1000)}; the job stopped, nothing finished is lost: {fix} and run the "
            "same command again to resume",
            soft_wrap=True,
            markup=False,
            highlight=False,
        )
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 (the one place that turns a bug into exit 70)
        err.print(traceback.format_exc(), markup=False)
        err.print(
            f"internal error: {type(e).__name__}: {e}. This is a bug in stylebatch {__version__}; "
            "please report it with the traceback above.",
            soft_wrap=True,
            markup=False,
        )
        return EXIT_INTERNAL


EXIT_CLOSED_PIPE = 141  # 128 + SIGPIPE: what a Unix tool killed by a closed pipe exits with
EXIT_CTRL_C = 130  # 128 + SIGINT


def _broken_pipe() -> None:
    """Rich's reaction to a closed stdout: turned into the BrokenPipeError main() ends on."""
    _drop_stdout()
    raise BrokenPipeError(32, "Broken pipe")


def _drop_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


_WHOLE_PROCESS = False  # True when main() is the process (entry_point), not a call from a test


def entry_point() -> None:
    global _WHOLE_PROCESS
    _WHOLE_PROCESS = True
    code = main()
    _leave_past_the_process_group(code)
    sys.exit(code)


def _leave_past_the_process_group(code: int) -> None:
    """In a process group whose peer is gone (a worker killed after joining), the group's C++
    threads are still joinable when the interpreter destroys it, and the process ends on
    std::terminate (SIGABRT, "terminate called without an active exception") instead of the exit
    code just printed. Everything of the job is on disk by now (every write atomic, every record
    written before its claim is released), so a process in a group leaves without the destructors."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return
    logging.shutdown()  # the rank's log file, flushed and closed
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
