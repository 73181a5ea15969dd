"""Faults during a run, each injected: a full disk while writing an output, a checkpoint or a state
record; a NaN loss; a GPU out-of-memory; a second run on a locked directory, a lock left by a
killed process; an internal error. Each fails only what it must, with the reason, and loses nothing.

Tests run as root, so permission bits prove nothing: faults are injected (OSError(ENOSPC) from a
write or an fsync, torch.cuda.OutOfMemoryError on the CPU). Runs are tiny: random weights, 32 px.

Decision, NaN/Inf loss: the pair fails with the reason (no automatic retry at a lower lr). The last
checkpoint on disk is always finite (the check runs before every save), so the next `run` retries
the pair from it (up to max_attempts); the message suggests a lower lr or L-BFGS.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import weakref
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image

from stylebatch import atomic
from stylebatch.cli.main import main
from stylebatch.fit.module import StyleTransferModule
from stylebatch.jobdir.state import JobState
from stylebatch.memory import ladder as oom
from tests.jobkit import REPO, cli_env, records, temp_files, tiny_job

ARGS = ["--weights", "random"]
# Pair a (Adam, seed 7: the one faults target) and pair b (L-BFGS), 32 px.
PAIRS = [
    {"content": "images/a.png", "style": "images/s1.png", "optimizer": "adam", "lr": 0.05, "seed": 7},
    {"content": "images/b.png", "style": "images/s2.png", "optimizer": "lbfgs", "lbfgs_history": 5},
]


def job(root: Path, **defaults) -> Path:
    return tiny_job(
        root,
        pairs=[dict(p) for p in PAIRS],
        defaults={"steps": 3, "checkpoint_every": 2, "log_every": 100, "keep_checkpoints": False, **defaults},
    )


def run(manifest: Path, capsys, *extra: str) -> tuple[int, str, str]:
    code = main(["run", str(manifest), *ARGS, *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def target(self: StyleTransferModule) -> bool:
    return self.optimizer_spec.name == "adam"  # the pair a__s1


def full_disk_at_fsync(monkeypatch, matches: Callable[[str], bool], after: int = 0) -> list[str]:
    """os.fsync raises ENOSPC for files whose path `matches`, after `after` successful ones: the
    data was written to the page cache, and the disk turns out to be full when it is flushed."""
    real_fsync, hits = os.fsync, []

    def fsync(fd: int) -> None:
        name = os.readlink(f"/proc/self/fd/{fd}")
        if matches(name):
            hits.append(name)
            if len(hits) > after:
                raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return hits


# --- a full disk ------------------------------------------------------------------------------------


class _HalfThenFull:
    """A file whose write stores half the bytes, then fails as a full disk does."""

    def __init__(self, fh):
        self.fh = fh

    def write(self, data: bytes) -> int:
        self.fh.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()


def _stopped_by_full_disk(code: int, stdout: str, stderr: str, file: str) -> None:
    """Exit 3 and one `error:` line naming the file and saying to free space (a full disk
    stops the job; it is no pair's fault)."""
    assert code == 3, stdout + stderr
    assert "Traceback" not in stdout + stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"error: [Errno {errno.ENOSPC}] No space left on device") and file in lines[0]
    assert "free space and run the same command again" in lines[0]


@pytest.mark.slow
def test_full_disk_while_saving_an_output_keeps_the_previous_one(tmp_path: Path, capsys, monkeypatch) -> None:
    manifest = job(tmp_path)
    out = tmp_path / "out"
    assert run(manifest, capsys)[0] == 0
    previous = {name: (out / name).read_bytes() for name in ("a__s1.png", "b__s2.png")}

    half_written: list[Path] = []
    real_open_temp = atomic._open_temp

    def open_temp(tmp: Path):
        fh = real_open_temp(tmp)
        if tmp.name.startswith(f".a__s1.png{atomic.TMP_MARK}"):
            half_written.append(tmp)
            return _HalfThenFull(fh)
        return fh

    monkeypatch.setattr(atomic, "_open_temp", open_temp)
    code, stdout, stderr = run(manifest, capsys, "--set", "steps=4")  # new settings: both pairs rerun
    _stopped_by_full_disk(code, stdout, stderr, str(out / "a__s1.png"))
    assert half_written  # the fault fired, mid-write
    recs = records(out)
    assert recs["a__s1"]["status"] == "interrupted" and recs["a__s1"]["attempts"] == 0  # no attempt used up
    # The previous good outputs are intact: kept under replaced/ once the new settings made them
    # stale, never overwritten by the half-written file (which is gone).
    for name in ("a__s1", "b__s2"):
        kept = list((out / ".stylebatch" / "replaced").glob(f"{name}.*.png"))
        assert len(kept) == 1 and kept[0].read_bytes() == previous[f"{name}.png"]
        assert not (out / f"{name}.png").exists()
    assert temp_files(tmp_path) == []

    monkeypatch.undo()  # space freed: the same command finishes the job
    assert run(manifest, capsys, "--set", "steps=4")[0] == 0
    recs = records(out)
    assert recs["a__s1"]["status"] == "done" and recs["a__s1"]["attempts"] == 1
    assert all((out / name).read_bytes() != previous[name] for name in previous)


@pytest.mark.slow
def test_full_disk_while_checkpointing_keeps_the_last_good_checkpoint(tmp_path: Path, capsys, monkeypatch) -> None:
    manifest = job(tmp_path, steps=6)
    out = tmp_path / "out"
    ckpt = out / ".stylebatch" / "pairs" / "a__s1" / "last.ckpt"
    hits = full_disk_at_fsync(monkeypatch, lambda path: f"/a__s1/.last.ckpt{atomic.TMP_MARK}" in path, after=1)
    code, stdout, stderr = run(manifest, capsys)
    monkeypatch.undo()
    _stopped_by_full_disk(code, stdout, stderr, "last.ckpt")
    assert len(hits) == 2  # a's first checkpoint was written, its second hit the full disk
    recs = records(out)
    assert recs["a__s1"]["status"] == "interrupted" and recs["a__s1"]["attempts"] == 0
    assert "b__s2" not in recs or recs["b__s2"].get("status") != "done"  # the job stopped
    saved = torch.load(ckpt, weights_only=True)  # the previous checkpoint: whole, loadable, finite
    assert saved["stylebatch"]["evaluations"] == 2 and torch.isfinite(saved["state_dict"]["target"]).all()
    assert not (out / "a__s1.png").exists() and temp_files(tmp_path) == []

    code, stdout, _ = run(manifest, capsys)  # the disk has room again: the pair resumes from it
    assert code == 0 and "start a__s1 (resuming at 2)" in stdout
    assert records(out)["a__s1"]["status"] == "done" and (out / "a__s1.png").is_file()


def test_full_disk_for_the_job_state_stops_with_one_line_and_exit_3(tmp_path: Path, capsys, monkeypatch) -> None:
    manifest = job(tmp_path)
    out = tmp_path / "out"
    full_disk_at_fsync(monkeypatch, lambda path: f"/.state.json{atomic.TMP_MARK}" in path)
    code, stdout, stderr = run(manifest, capsys)
    monkeypatch.undo()
    assert code == 3, stdout + stderr
    assert "Traceback" not in stdout + stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: [Errno 28] No space left on device")
    assert "state.json" in lines[0] and "run the same command again" in lines[0]
    assert temp_files(tmp_path) == []
    assert run(manifest, capsys)[0] == 0  # nothing was lost: the same command finishes the job
    assert {r["status"] for r in records(out).values()} == {"done"}


# --- NaN / Inf loss -------------------------------------------------------------------------------


@pytest.mark.parametrize(("log_every", "caught_at"), [(1, 3), (100, 4)], ids=["at-log-interval", "before-checkpoint"])
@pytest.mark.slow
def test_nan_loss_fails_the_pair_and_is_never_checkpointed(
    tmp_path: Path, capsys, monkeypatch, log_every: int, caught_at: int
) -> None:
    original = StyleTransferModule.losses

    def nan_from_third_evaluation(self, image):
        out = original(self, image)
        if target(self) and self.evaluations >= 3 and image is self.target:  # the iterate diverges
            out = {k: v * float("nan") for k, v in out.items()}
        return out

    monkeypatch.setattr(StyleTransferModule, "losses", nan_from_third_evaluation)
    manifest = job(tmp_path, steps=6, log_every=log_every)
    out = tmp_path / "out"
    code, stdout, stderr = run(manifest, capsys)
    assert code == 1, stdout + stderr
    recs = records(out)
    assert recs["a__s1"]["status"] == "failed" and recs["b__s2"]["status"] == "done"
    assert f"loss became non-finite after {caught_at} evaluations" in recs["a__s1"]["error"]
    assert "lower lr" in recs["a__s1"]["error"]
    saved = torch.load(out / ".stylebatch" / "pairs" / "a__s1" / "last.ckpt", weights_only=True)
    assert saved["stylebatch"]["evaluations"] == 2  # the last finite state; the NaN one was never saved
    assert torch.isfinite(saved["state_dict"]["target"]).all()
    assert not (out / "a__s1.png").exists() and temp_files(tmp_path) == []
    assert "Traceback" not in stdout + stderr


# --- GPU out of memory ----------------------------------------------------------------------------


def test_out_of_memory_frees_memory_and_fails_only_that_pair(tmp_path: Path, capsys, monkeypatch) -> None:
    modules: list[weakref.ref] = []
    freed: list[tuple[str, bool]] = []
    original_step, original_free = StyleTransferModule.training_step, oom.free

    def oom_step(self, batch, batch_idx):
        if target(self):
            modules.append(weakref.ref(self))
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return original_step(self, batch, batch_idx)

    def free(device, *args):
        out = original_free(device, *args)
        freed.append((str(device), modules[-1]() is None))
        return out

    monkeypatch.setattr(StyleTransferModule, "training_step", oom_step)
    monkeypatch.setattr(oom, "free", free)
    code, stdout, stderr = run(job(tmp_path), capsys)
    assert code == 1, stdout + stderr
    assert len(modules) == 2  # as planned, then tiled (the out-of-memory ladder, oom.py), then failed
    assert freed == [("cpu", True)] * 2  # freed before each rung: by then the failed fit's module was gone
    recs = records(tmp_path / "out")
    assert recs["a__s1"]["status"] == "failed" and "out of memory at 32x24" in recs["a__s1"]["error"]
    assert "lower 'size'" in recs["a__s1"]["error"]
    assert recs["b__s2"]["status"] == "done" and (tmp_path / "out" / "b__s2.png").is_file()
    assert "Traceback" not in stdout + stderr


# --- the job lock -----------------------------------------------------------------------------------


def test_second_run_on_a_locked_directory_exits_4(tmp_path: Path, capsys) -> None:
    manifest = job(tmp_path)
    out = tmp_path / "out"
    with JobState(out).lock():
        code, stdout, stderr = run(manifest, capsys)
    assert code == 4
    assert "Traceback" not in stdout + stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {out}: another stylebatch job is running here")
    assert f"pid {os.getpid()}" in lines[0] and "--break-lock" in lines[0]
    assert sorted(p.name for p in (out / ".stylebatch").iterdir()) == ["lock"]  # nothing else was touched
    assert run(manifest, capsys)[0] == 0  # released: the job runs


def _hold_lock_in_subprocess(out: Path) -> subprocess.Popen:
    code = (
        "import sys, time; from pathlib import Path; from stylebatch.jobdir.state import JobState\n"
        "with JobState(Path(sys.argv[1])).lock():\n    print('locked', flush=True); time.sleep(120)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(out)], cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_lock_of_a_killed_process_is_recovered_automatically(tmp_path: Path, capsys) -> None:
    manifest = job(tmp_path)
    out = tmp_path / "out"
    holder = _hold_lock_in_subprocess(out)
    try:
        assert run(manifest, capsys)[0] == 4  # really held by the live process
        holder.send_signal(signal.SIGKILL)  # killed: no cleanup, the lock file stays behind
        holder.wait(timeout=30)
        assert (out / ".stylebatch" / "lock").exists()
        assert run(manifest, capsys)[0] == 0  # the kernel released its flock: recovered, no flag needed
    finally:
        holder.kill()
        holder.wait()


def test_break_lock_takes_over_a_lock_that_flock_still_reports_held(tmp_path: Path, capsys) -> None:
    """--break-lock is for file systems whose locks outlive their holder (some NFS setups):
    simulated by a flock still held while the lock records a holder that is gone (another host's
    process). A holder alive on this host is never broken (tests/test_orphans.py)."""
    manifest = job(tmp_path)
    holder = _hold_lock_in_subprocess(tmp_path / "out")
    try:
        assert run(manifest, capsys)[0] == 4
        (tmp_path / "out" / ".stylebatch" / "lock").write_text("pid 12345 on a-node-that-is-gone")
        code, stdout, stderr = run(manifest, capsys, "--break-lock")
        assert code == 0, stdout + stderr
    finally:
        holder.kill()
        holder.wait()


# --- internal errors and --debug ------------------------------------------------------------------


def test_internal_error_prints_traceback_and_hint_and_exits_70(tmp_path: Path, capsys, monkeypatch) -> None:
    from stylebatch.job import manifest as manifest_module

    def broken(*args, **kwargs):
        raise RuntimeError("something impossible happened")

    monkeypatch.setattr(manifest_module, "load_job", broken)
    for command in ("validate", "run"):
        assert main([command, str(job(tmp_path)), *ARGS]) == 70
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err and "in broken" in err
        assert "internal error: RuntimeError: something impossible happened" in err
        assert "please report it" in err
    assert not (tmp_path / "out").exists()


def test_debug_shows_the_traceback_of_a_user_error(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "no_job_here"
    assert main(["status", str(missing)]) == 2
    err = capsys.readouterr().err
    assert (
        "Traceback" not in err
        and err.strip() == f"error: {missing}: not a stylebatch output directory (no .stylebatch/)"
    )
    assert main(["status", str(missing), "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "StylebatchError" in err
    assert err.strip().splitlines()[-1].startswith(f"error: {missing}: not a stylebatch output directory")


def test_a_pair_that_fails_unexpectedly_is_isolated_and_its_traceback_logged(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    original = StyleTransferModule.training_step

    def bug(self, batch, batch_idx):
        if target(self):
            raise ZeroDivisionError("a bug in one pair")
        return original(self, batch, batch_idx)

    monkeypatch.setattr(StyleTransferModule, "training_step", bug)
    code, stdout, stderr = run(job(tmp_path), capsys)
    assert code == 1 and "Traceback" not in stdout + stderr
    out = tmp_path / "out"
    recs = records(out)
    assert recs["a__s1"]["error"] == "internal error: ZeroDivisionError: a bug in one pair"
    assert recs["b__s2"]["status"] == "done"
    logs = "".join(p.read_text() for p in (out / ".stylebatch" / "logs").glob("*.log"))
    assert "Traceback" in logs and "ZeroDivisionError: a bug in one pair" in logs
    with Image.open(out / "b__s2.png") as img:
        assert img.size == (24, 32)
