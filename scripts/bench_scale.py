"""How the bookkeeping commands scale with the number of pairs: seconds and peak RSS of `validate`,
`run` start-up (to its first pair), `status`, `status --json` and `report`, each in a fresh process.

    python scripts/bench_scale.py --sizes 1000 10000 100000

For each N it writes a job of N done pairs (a grid of contents x styles, 32 px images), as a run
leaves it: job.json, and per pair its output (a real 32x24 PNG), state record (with the output's
sha256 and its size/mtime/inode stamp) and a 20-row loss curve; one pair is left pending so `run`
has a first pair to reach. Then it times each command. Goals: each linear in N;
100k `status` <= 5 s and <= 500 MB; `report` <= 60 s (cold: every thumbnail made; warm: a second
report, nothing changed). Figures from a busy machine are inflated: compare ratios within a run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from stylebatch.job.jobfile import write_job_file  # noqa: E402
from stylebatch.jobdir.state import HOST, output_stamp, sha256_file  # noqa: E402
from stylebatch.memory.autosize import load_job  # noqa: E402

DEFAULTS = {
    "size": 32,
    "steps": 20,
    "optimizer": "adam",
    "lr": 0.05,
    "log_every": 1,
    "checkpoint_every": 10,
    "batch_size": 1,
}


def _grid_shape(n: int) -> tuple[int, int]:
    styles = max(1, int(round(n**0.5 / 1.6)))  # wider than tall, like a real style sweep
    return n // styles, styles


def _png(path: Path, rng: np.random.Generator, size: tuple[int, int] = (32, 24)) -> None:
    w, h = size
    coarse = rng.integers(0, 256, size=(h // 4, w // 4, 3), dtype=np.uint8)
    Image.fromarray(coarse, "RGB").resize((w, h), Image.Resampling.BILINEAR).save(path)


def make_job(root: Path, n: int) -> tuple[Path, Path, str]:
    """A manifest of n grid pairs, run to completion on paper; returns (manifest, out, pending name)."""
    contents, styles = _grid_shape(n)
    rng = np.random.default_rng(0)
    images = root / "images"
    images.mkdir(parents=True)
    for kind, count in (("c", contents), ("s", styles)):
        for i in range(count):
            _png(images / f"{kind}{i:04d}.png", rng, (40, 30))
    manifest = root / "job.yaml"
    manifest.write_text(
        json.dumps(
            {  # JSON is YAML
                "output_dir": "out",
                "defaults": DEFAULTS,
                "grid": {
                    "content": [f"images/c{i:04d}.png" for i in range(contents)],
                    "style": [f"images/s{i:04d}.png" for i in range(styles)],
                },
            }
        )
    )
    job = load_job(manifest, weights="random")
    assert not job.all_problems, job.all_problems[:3]
    out = job.output_dir
    state_root = out / ".stylebatch"
    (state_root / "pairs").mkdir(parents=True)
    write_job_file(job, state_root / "job.json")
    curve = "evaluations,content,style,total\n" + "".join(
        f"{k},{1 / k!r},{10 / k!r},{11 / k!r}\n" for k in range(1, DEFAULTS["steps"] + 1)
    )
    now = time.time()
    for pair in job.pairs[:-1]:  # the last pair stays pending
        output = out / f"{pair.name}.png"
        _png(output, rng)
        d = state_root / "pairs" / pair.name
        d.mkdir()
        record = {
            "id": pair.id,
            "status": "done",
            "attempts": 1,
            "steps": DEFAULTS["steps"],
            "started": now,
            "error": None,
            "output": output.name,
            "batch": None,
            "rank": 0,
            "host": HOST,
            "pid": 1,
            "heartbeat": now,
            "steps_done": DEFAULTS["steps"],
            "output_sha256": sha256_file(output),
            "encoding": {"format": "png"},
            "output_stat": output_stamp(output),
            "losses": {"content": 0.05, "style": 0.5, "total": 1.05},
            "seconds": 1.5,
            "finished": now,
            "name": pair.name,
            "updated": now,
        }
        (d / "state.json").write_text(json.dumps(record, indent=1, sort_keys=True))
        (d / "losses.csv").write_text(curve)
    return manifest, out, job.pairs[-1].name


# Forks and execs the command from a small process, so the child's peak RSS is its own (a child
# forked from this process, which has torch loaded, would start at this process's size).
LAUNCHER = """
import json, os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
cpu = usage.ru_utime + usage.ru_stime
open(sys.argv[1], "w").write(json.dumps({"code": os.waitstatus_to_exitcode(status), "maxrss_kb": usage.ru_maxrss, "cpu": cpu}))
"""


def _cpu_seconds(launcher: int) -> float | None:
    """User + system CPU seconds so far of the launcher's child (the command), from /proc."""
    try:
        child = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()[0]
        fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class Measured(NamedTuple):
    """One fresh `python -m stylebatch ...`: wall seconds, peak RSS MiB, seconds until a stdout line
    starting with `until`, exit code, and CPU seconds (user + system: what a busy machine's other
    jobs hardly change) in all and until that line."""

    seconds: float
    rss: float
    first: float | None
    code: int
    cpu: float
    cpu_first: float | None


def measure(args: list[str], cwd: Path, until: str | None = None) -> Measured:
    cpu_first = None
    with tempfile.NamedTemporaryFile(suffix=".json") as usage_file:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, usage_file.name, sys.executable, "-m", "stylebatch", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        )
        first, tail = None, []
        for line in proc.stdout:
            if until and first is None and line.startswith(until):
                first = time.perf_counter() - start
                cpu_first = _cpu_seconds(proc.pid)
            tail = (tail + [line])[-5:]
        proc.wait()
        seconds = time.perf_counter() - start
        usage = json.loads(Path(usage_file.name).read_text())
    if usage["code"] not in (0, 1, 3):
        sys.exit(f"{args}: exit {usage['code']}\n{''.join(tail)}")
    return Measured(seconds, usage["maxrss_kb"] / 1024, first, usage["code"], usage["cpu"], cpu_first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000], help="job sizes (pairs)")
    parser.add_argument("--dir", type=Path, help="where to write the jobs (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the generated jobs")
    parser.add_argument("--reuse", action="store_true", help="reuse a job of the same size kept in --dir by --keep")
    parser.add_argument(
        "--commands",
        nargs="+",
        default=["validate", "run", "status", "report"],
        choices=["validate", "run", "status", "report"],
        help="which commands to time (default: all)",
    )
    args = parser.parse_args()
    base = Path(args.dir or tempfile.mkdtemp(prefix="bench_scale_"))
    print(
        f"jobs under {base}; python {sys.version.split()[0]}, {os.cpu_count()} CPU(s), "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    results: dict[int, dict[str, tuple[float, float]]] = {}
    try:
        for n in args.sizes:
            root = base / f"job{n}"
            t = time.perf_counter()
            if args.reuse and (root / "job.yaml").is_file():
                manifest, out = root / "job.yaml", root / "out"
                pending = json.loads((root / "pending.json").read_text())
                print(f"\nN = {n:,}: reusing {root}", flush=True)
            else:
                shutil.rmtree(root, ignore_errors=True)
                manifest, out, pending = make_job(root, n)
                (root / "pending.json").write_text(json.dumps(pending))
                print(
                    f"\nN = {n:,}: grid {_grid_shape(n)[0]} x {_grid_shape(n)[1]}, "
                    f"generated in {time.perf_counter() - t:.1f} s",
                    flush=True,
                )
            row: dict[str, tuple[float, float]] = {}

            def note(name: str, seconds: float, rss: float, cpu: float | None) -> None:
                row[name] = (seconds, rss)  # noqa: B023 (called inside the loop)
                per_pair = 1e6 * seconds / n  # noqa: B023
                used = f"  CPU {cpu:7.2f} s" if cpu is not None else ""
                print(
                    f"  {name:<36} {seconds:8.2f} s  {per_pair:8.1f} us/pair  peak RSS {rss:7.0f} MiB{used}", flush=True
                )

            if "validate" in args.commands:
                m = measure(["validate", str(manifest)], root)
                note("validate", m.seconds, m.rss, m.cpu)
            if "run" in args.commands:
                _time_run(manifest, out, pending, root, note)
            if "status" in args.commands:
                _time_status(out, root, note)
            if "report" in args.commands:
                _time_report(base, n, out, root, note)
            results[n] = row
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
    finally:
        for old in base.glob("old-report-*"):
            shutil.rmtree(old, ignore_errors=True)
        if not args.keep and not args.dir:
            shutil.rmtree(base, ignore_errors=True)
    _linearity(results)
    print(f"\n(this process's own peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")


def _time_run(manifest: Path, out: Path, pending: str, root: Path, note) -> None:
    shutil.rmtree(out / ".stylebatch" / "pairs" / pending, ignore_errors=True)  # one pair to run
    (out / f"{pending}.png").unlink(missing_ok=True)
    m = measure(["run", str(manifest), "--weights", "random"], root, until="start ")
    assert m.first is not None, "run never reached its first pair"
    note("run: start-up to 1st pair", m.first, m.rss, m.cpu_first)
    note("run: whole (1 pair + final report)", m.seconds, m.rss, m.cpu)
    m = measure(["run", str(manifest), "--weights", "random"], root, until="exit ")
    note("run: all done (start-up)", m.first or m.seconds, m.rss, m.cpu_first if m.first else m.cpu)


def _time_status(out: Path, root: Path, note) -> None:
    for name, cmd in (
        ("status", ["status", str(out)]),
        ("status --json", ["status", str(out), "--json"]),
        ("status --all", ["status", str(out), "--all"]),
    ):
        m = measure(cmd, root)
        note(name, m.seconds, m.rss, m.cpu)


def _time_report(base: Path, n: int, out: Path, root: Path, note) -> None:
    # Cold: no report yet. Moved aside (removing 100,000 thumbnails takes minutes on a busy disk).
    report = out / ".stylebatch" / "report"
    if report.exists():
        report.rename(base / f"old-report-{n}-{time.time_ns()}")
    m = measure(["report", str(out)], root)
    note("report (cold: thumbnails made)", m.seconds, m.rss, m.cpu)
    m = measure(["report", str(out)], root)
    note("report (warm: nothing changed)", m.seconds, m.rss, m.cpu)
    pages = len(list(report.glob("page-*.html"))) or 1
    biggest = max(f.stat().st_size for f in report.glob("*.html"))
    job_json = (out / ".stylebatch" / "job.json").stat().st_size
    print(
        f"  report: {pages} page(s), largest HTML file {biggest / 1e6:.2f} MB; job.json {job_json / 1e6:.1f} MB "
        f"({job_json / n:.0f} bytes/pair)"
    )


def _linearity(results: dict[int, dict[str, tuple[float, float]]]) -> None:
    if len(results) > 1:
        sizes = sorted(results)
        print(f"\nlinearity: seconds per pair at N = {sizes[-1]:,} / at N = {sizes[0]:,} (1.0 = linear)")
        for name in results[sizes[0]]:
            a, b = results[sizes[0]][name][0] / sizes[0], results[sizes[-1]][name][0] / sizes[-1]
            print(f"  {name:<36} {b / a:6.2f}")


if __name__ == "__main__":
    main()
