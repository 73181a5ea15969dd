"""Kill -9 soak: random SIGKILLs of a 6-pair job with 1 and 2 workers, then a completing run whose
outputs must equal a clean run's byte for byte.

    python scripts/soak.py                 # 10 kills with 1 worker, 10 with 2
    python scripts/soak.py --kills 50 --seed 3 --keep /tmp/soak
    python scripts/soak.py --kills 50 --busy 2   # under CPU contention: a busy loop per core beside it
    python scripts/soak.py --scenario twice --tries 50 --busy 2   # the twice-killed resume, 50 times
    python scripts/soak.py --scenario twice --tries 50 --style-loss gram   # the same, ~3x sooner

Each round starts `stylebatch run` (CPU, random weights, 32 px) and, at a random moment of what
is left of the job (estimated from the clean run's time and the records), SIGKILLs one process of
it: the only one with 1 worker, rank 0 or the worker (at random) with 2. Then it waits for the rest
of the job to end on its own (a worker whose rank 0 died stops after a checkpoint; a rank 0 whose
worker died stops the job with exit 3) and starts the next round on the same output directory. A
round that finishes before its kill comes starts the job over from nothing. After the last kill,
one more run must finish (exit 0). Printed per worker count: kills (whom, and how many since the
last fresh start: those the final comparison covers), rounds finished before their kill, outputs
that differ from the clean run's, processes left behind, temp files left, and pairs whose claims
record shows two processes at once. Every count but kills and rounds is expected 0.

`--scenario twice` replays a fixed case instead, `--tries` times on a fresh output directory each:
a 1-worker `run` SIGKILLed at 35 % of the clean run's working time (its wall time less its
start-up), counted from the moment the run logs its plan, the same command again SIGKILLed at 50 %
of that time (from its own plan), then the same command to the end (exit 0); every output must equal the clean run's byte for byte. Printed per try: the exit codes, how
far the records stood after each kill, and the pairs whose output differs (with the batch each
was recorded in and where its last run resumed, from the logs); then the count of tries with a
mismatch (expected 0).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402
from PIL import Image  # noqa: E402

from stylebatch.atomic import TMP_MARK  # noqa: E402

NAMES = [f"p{i}" for i in range(6)]


def make_job(root: Path, steps: int, style_loss: str | None = None) -> Path:
    """Six pairs: four Adam (batched in twos by size), two L-BFGS; 32 px, checkpoints every 5.
    `style_loss` overrides the default loss (gram: ~5x less time per step at 32 px, so more tries
    fit in the same hour; the kill/resume bookkeeping under test is the same for both)."""
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for name, size in (("a.png", (40, 30)), ("b.png", (30, 40)), ("s1.png", (40, 30)), ("s2.png", (30, 40))):
        img = Image.new("RGB", size)
        img.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(size[0] * size[1])])
        img.save(images / name)
    pairs = [
        {
            "content": "images/a.png" if i % 2 else "images/b.png",
            "style": "images/s1.png" if i < 3 else "images/s2.png",
            "name": name,
            "seed": i,
            "init": "noise",
            **({"optimizer": "lbfgs", "lbfgs_history": 5} if i >= 4 else {"optimizer": "adam", "lr": 0.05}),
        }
        for i, name in enumerate(NAMES)
    ]
    manifest = {
        "output_dir": "out",
        "defaults": {
            "size": 32,
            "steps": steps,
            "checkpoint_every": 5,
            "log_every": 5,
            **({"style_loss": style_loss} if style_loss else {}),
        },
        "pairs": pairs,
    }
    path = root / "job.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(manifest: Path, out: Path, workers: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STYLEBATCH_")}
    env.update(
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""), OMP_NUM_THREADS="1", MASTER_PORT=str(free_port())
    )
    cmd = [
        sys.executable,
        "-m",
        "stylebatch",
        "run",
        str(manifest),
        "--weights",
        "random",
        "--accelerator",
        "cpu",
        "--devices",
        str(workers),
        "--out",
        str(out),
        "--sync-timeout",
        "120",
    ]
    # Each run's output, kept beside its output directory: a run that ends in an error is shown.
    runs = sorted(out.parent.glob(f"{out.name}.run*.txt"))
    with open(out.parent / f"{out.name}.run{len(runs):03d}.txt", "wb") as sink:
        return subprocess.Popen(cmd, cwd=manifest.parent, env=env, stdout=sink, stderr=subprocess.STDOUT)


def last_output(out: Path, lines: int = 25) -> str:
    """The end of the newest run's output for `out`, indented (what an unexpected exit printed)."""
    runs = sorted(out.parent.glob(f"{out.name}.run*.txt"))
    text = runs[-1].read_text(errors="replace").splitlines()[-lines:] if runs else ["(no output kept)"]
    return "\n".join("      | " + line for line in text)


def worker_pid(out: Path) -> int | None:
    try:
        return int(json.loads((out / ".stylebatch" / "ranks" / "rank1.json").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def job_pids(out: Path) -> set[int]:
    """Every process that ever worked on this output directory (one log file each)."""
    return {int(p.name.split("-")[-2]) for p in (out / ".stylebatch" / "logs").glob("*.log")}


def overlapping_claims(out: Path, death: dict[int, float]) -> int:
    """Pairs whose claims.log shows two holders at once (a SIGKILLed holder held until it died)."""
    bad = 0
    for name in NAMES:
        path = out / ".stylebatch" / "pairs" / name / "claims.log"
        if not path.exists():
            continue
        intervals, open_ = [], {}
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if "claimed" in entry:
                open_[entry["pid"]] = entry["claimed"]
            elif entry["pid"] in open_:
                intervals.append((open_.pop(entry["pid"]), entry["released"]))
        intervals += [(t, death.get(pid, float("inf"))) for pid, t in open_.items()]
        intervals.sort()
        bad += any(end > nxt for (_, end), (nxt, _) in zip(intervals, intervals[1:]))
    return bad


def done_fraction(out: Path, steps: int) -> float:
    """How much of the job's evaluations the records say are done."""
    total = 0
    for name in NAMES:
        try:
            record = json.loads((out / ".stylebatch" / "pairs" / name / "state.json").read_text())
        except (OSError, ValueError):
            continue
        total += steps if record.get("status") == "done" else min(steps, int(record.get("steps_done", 0)))
    return total / (steps * len(NAMES))


def soak(
    manifest: Path, out: Path, workers: int, kills: int, duration: float, startup: float, steps: int, rng: random.Random
) -> dict:
    stats = {
        "kills": 0,
        "rank 0 killed": 0,
        "worker killed": 0,
        "finished before the kill": 0,
        "kills since a fresh start": 0,
    }
    death: dict[int, float] = {}
    while stats["kills"] < kills:
        # A kill at a random moment of what is left of the job (the start-up included).
        left = startup + (duration - startup) * (1 - done_fraction(out, steps))
        proc = start(manifest, out, workers)
        deadline = time.monotonic() + rng.uniform(0.5, max(1.0, left))
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        if proc.poll() is not None:  # done before the kill: start the job over to have more to kill
            stats["finished before the kill"] += 1
            stats["kills since a fresh start"] = 0
            subprocess.run(["rm", "-rf", str(out)], check=True)
            continue
        victim = proc.pid
        if workers > 1 and rng.random() < 0.5 and (pid := worker_pid(out)) and alive(pid):
            victim = pid
        os.kill(victim, signal.SIGKILL)
        death[victim] = time.time()
        stats["kills"] += 1
        stats["kills since a fresh start"] += 1
        stats["worker killed" if victim != proc.pid else "rank 0 killed"] += 1
        proc.wait(timeout=300)  # a lost worker stops the job; a lost rank 0 stops its worker
        end = time.monotonic() + 60
        while any(alive(p) for p in job_pids(out)) and time.monotonic() < end:
            time.sleep(0.1)
    final = start(manifest, out, workers)
    stats["final exit"] = final.wait(timeout=900)
    if stats["final exit"] != 0:
        print(f"  the final run exited {stats['final exit']}:\n{last_output(out)}", flush=True)
    time.sleep(1)
    stats["processes left"] = sum(alive(p) for p in job_pids(out))
    stats["temp files left"] = sum(1 for p in out.rglob("*") if TMP_MARK in p.name)
    stats["claims overlapping"] = overlapping_claims(out, death)
    return stats


def planned(out: Path, pid: int) -> bool:
    """Whether the run with this pid has logged its plan (its start-up is over, its work begins)."""
    for log in (out / ".stylebatch" / "logs").glob(f"*-{pid}-rank0.log"):
        if "plan:" in log.read_text(errors="replace"):
            return True
    return False


def killed_at(manifest: Path, out: Path, seconds: float, from_plan: bool = False) -> int | None:
    """`run` with 1 worker, SIGKILLed `seconds` after its start (`from_plan`: after it logged its
    plan, so that a slow start-up under contention does not move the kill out of the work); its
    exit code if it ended first."""
    proc = start(manifest, out, 1)
    while from_plan and proc.poll() is None and not planned(out, proc.pid):
        time.sleep(0.01)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    if proc.poll() is not None:
        if proc.returncode != 0:
            print(f"  a run to be killed exited {proc.returncode} first:\n{last_output(out)}", flush=True)
        return proc.returncode
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    return None


def resumes(out: Path) -> dict[str, list[str]]:
    """Per pair, what each run's log says of it ("start"/"resume" lines, in run order)."""
    found: dict[str, list[str]] = {}
    for log in sorted((out / ".stylebatch" / "logs").glob("*.log"), key=lambda p: p.stat().st_mtime):
        for line in log.read_text(errors="replace").splitlines():
            for name in NAMES:
                if f" {name}:" in line and (" starts at " in line or "restarts" in line or " done," in line):
                    found.setdefault(name, []).append(line.split(": ", 1)[-1][:120])
    return found


def twice(
    root: Path, manifest: Path, duration: float, startup: float, steps: int, tries: int, reference: dict[str, bytes]
) -> int:
    """The twice-killed resume (see the module doc), `tries` times; returns the tries with a mismatch."""
    bad = 0
    for k in range(tries):
        out = root / f"twice-{k}"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        codes, stood = [], []
        for fraction in (0.35, 0.50):
            # The clean run's work (its time after start-up), from each run's own plan: under
            # contention a start-up takes longer, and a kill timed from the process start would
            # land in it, before any pair has begun.
            codes.append(killed_at(manifest, out, fraction * (duration - startup), from_plan=True))
            stood.append(f"{done_fraction(out, steps):.0%}")
        final = start(manifest, out, 1).wait(timeout=900)
        if final != 0:
            print(f"  try {k + 1}: the final run exited {final}:\n{last_output(out)}", flush=True)
        differ = [
            n for n in NAMES if not (out / f"{n}.png").exists() or (out / f"{n}.png").read_bytes() != reference[n]
        ]
        bad += bool(differ)
        detail = ""
        for name in differ:
            try:
                record = json.loads((out / ".stylebatch" / "pairs" / name / "state.json").read_text())
            except (OSError, ValueError):
                record = {}
            detail += f"\n    {name}: batch {record.get('batch')}; log: {resumes(out).get(name)}"
        print(
            f"try {k + 1}: killed runs' exits {codes} (None: killed), records at {', '.join(stood)} after each kill, "
            f"final exit {final}, outputs differing {differ or 0}{detail}",
            flush=True,
        )
    return bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10, help="kills per worker count")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="work here (kept) instead of a temporary directory")
    parser.add_argument("--busy", type=int, default=0, help="busy-loop processes running beside it (CPU contention)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to soak")
    parser.add_argument(
        "--scenario", choices=["random", "twice"], default="random", help="random kills, or the twice-killed resume"
    )
    parser.add_argument("--tries", type=int, default=6, help="--scenario twice: how many times")
    parser.add_argument("--style-loss", choices=["gram", "wasserstein"], help="override the default style loss")
    args = parser.parse_args()
    busy = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], stdout=subprocess.DEVNULL)
        for _ in range(args.busy)
    ]
    try:
        run(args)
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()


def run(args: argparse.Namespace) -> None:
    root = args.keep or Path(tempfile.mkdtemp(prefix="stylebatch-soak-"))
    manifest = make_job(root, args.steps, args.style_loss)
    rng = random.Random(args.seed)

    t0 = time.monotonic()
    clean = start(manifest, root / "clean", 1)
    while not (root / "clean" / ".stylebatch" / "logs").is_dir() and clean.poll() is None:
        time.sleep(0.02)
    startup = time.monotonic() - t0  # imports and validation, until the job directory appears
    assert clean.wait(timeout=900) == 0, "the clean run failed"
    duration = time.monotonic() - t0
    print(f"clean run: 6 pairs, {args.steps} evaluations each, {duration:.1f}s wall ({startup:.1f}s start-up)")
    reference = {name: (root / "clean" / f"{name}.png").read_bytes() for name in NAMES}

    print(f"busy loops beside it: {args.busy}; load average {os.getloadavg()[0]:.1f}", flush=True)
    if args.scenario == "twice":
        bad = twice(root, manifest, duration, startup, args.steps, args.tries, reference)
        print(
            f"tries with an output unlike the clean run's: {bad} of {args.tries}; load average {os.getloadavg()[0]:.1f}"
        )
        print(f"work directory: {root}")
        return
    for workers in args.workers:
        out = root / f"soak-{workers}"
        stats = soak(manifest, out, workers, args.kills, duration, startup, args.steps, rng)
        mismatches = sum(
            (out / f"{n}.png").read_bytes() != reference[n] if (out / f"{n}.png").exists() else 1 for n in NAMES
        )
        print(
            f"workers {workers}: kills {stats['kills']} (rank 0 {stats['rank 0 killed']}, worker "
            f"{stats['worker killed']}; {stats['kills since a fresh start']} since the last fresh start), rounds "
            f"finished before their kill {stats['finished before the kill']}, "
            f"final exit {stats['final exit']}, mismatches {mismatches} of {len(NAMES)}, processes left "
            f"{stats['processes left']}, temp files left {stats['temp files left']}, pairs with overlapping "
            f"claims {stats['claims overlapping']}",
            flush=True,
        )
    print(f"work directory: {root}")


if __name__ == "__main__":
    main()
