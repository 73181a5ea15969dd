"""A full disk anywhere, checkpoints included, stops the job: exit 3, the usual one line ("free space
and run the same command again"), no attempt used up, nothing lost.

Before, a checkpoint on a full disk failed as "internal error: RuntimeError: [enforce fail at
inline_container.cc:672] unexpected pos …" (torch.save's report of the short write), and every
remaining pair failed that way and used up an attempt. The real thing is tested on a small tmpfs
(filled up just as stylebatch opens the file to write, leaving a few KiB: the write runs out
part-way, as it does in life); the same stop from any process through an injected ENOSPC.
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from stylebatch import atomic
from stylebatch.cli.main import main
from tests.jobkit import cli_env, records, temp_files, tiny_job
from tests.test_distributed import _cmd, _free_port
from tests.test_user_files import snapshot

ARGS = ["--weights", "random"]
PAIRS = [
    {"content": "images/a.png", "style": "images/s1.png", "optimizer": "adam", "lr": 0.05},
    {"content": "images/b.png", "style": "images/s2.png", "optimizer": "lbfgs", "lbfgs_history": 5},
]
LEFT_FREE = 8 << 10  # bytes left when the disk fills: less than any checkpoint or output here


class _RunsOut:
    """A temp file on a disk with LEFT_FREE bytes left: the write that would pass them goes to
    /dev/full (dup2 onto the file's descriptor), where the kernel fails it with ENOSPC."""

    def __init__(self, fh: Any):
        self.fh, self.written = fh, 0

    def write(self, data: Any) -> int:
        before, self.written = self.written, self.written + memoryview(data).nbytes
        if before <= LEFT_FREE < self.written:  # this write passes what is left
            self.fh.flush()  # what fitted is on the disk; from here on the kernel refuses
            full = os.open("/dev/full", os.O_WRONLY)
            os.dup2(full, self.fh.fileno())
            os.close(full)
        return self.fh.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fh, name)

    def __enter__(self) -> _RunsOut:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.fh.close()


class SmallDisk:
    """A disk that runs out of space on demand, for real. Where mounting is allowed (root), a 4 MiB
    tmpfs that `fill` fills up with ballast, leaving LEFT_FREE bytes; elsewhere a plain directory
    whose temp files, once full, take LEFT_FREE bytes each and then meet the kernel's ENOSPC from
    /dev/full (`_RunsOut`): the same product path, a real ENOSPC part-way through a write."""

    def __init__(self, root: Path, mounted: bool):
        self.root, self.mounted, self.full = root, mounted, False

    def fill_when_opening(self, monkeypatch, prefix: str | None) -> list[Path]:
        """When stylebatch opens a temp file whose name starts with `prefix`, fill the disk first
        (tmpfs: leaving LEFT_FREE bytes); `prefix` None: full at once. Returns the temps it fired for."""
        real_open_temp, fired = atomic._open_temp, []

        def open_temp(tmp: Path):
            if prefix is not None and tmp.name.startswith(prefix) and not fired:
                fired.append(tmp)
                self._fill()
            if self.full and not self.mounted and self.root in tmp.parents:
                return _RunsOut(real_open_temp(tmp))
            return real_open_temp(tmp)

        monkeypatch.setattr(atomic, "_open_temp", open_temp)
        if prefix is None:
            self._fill()
        return fired

    def _fill(self) -> None:
        self.full = True
        if self.mounted:
            st = os.statvfs(self.root)
            free = st.f_bavail * st.f_frsize
            with open(self.root / "ballast", "wb") as fh:
                fh.write(b"\0" * max(0, free - LEFT_FREE))

    def free(self) -> None:
        self.full = False
        (self.root / "ballast").unlink(missing_ok=True)

    def files(self) -> list[str]:
        return sorted(n for n in os.listdir(self.root) if n != "ballast")


@pytest.fixture
def small_disk(tmp_path: Path):
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = (
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True).returncode
        == 0
    )
    try:
        yield SmallDisk(mount, mounted)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(mount)], check=False)


def one_disk_full_line(code: int, out: str, err: str, file: str) -> None:
    assert code == 3, out + err
    assert "Traceback" not in out + err and "internal error" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: [Errno {errno.ENOSPC}] No space left on device") and file in lines[0], lines[0]
    assert "free space and run the same command again to resume" in lines[0]


@pytest.mark.parametrize("what", ["checkpoint", "output"])
@pytest.mark.slow
def test_a_really_full_disk_stops_the_job_and_uses_no_attempt(
    what: str, small_disk: SmallDisk, tmp_path: Path, capsys, monkeypatch
) -> None:
    manifest = tiny_job(
        tmp_path,
        pairs=[dict(p) for p in PAIRS],
        defaults={"size": 64, "steps": 4, "checkpoint_every": 2, "keep_checkpoints": False},
    )
    out = small_disk.root / "out"
    before = snapshot(tmp_path / "images")
    prefix = ".last.ckpt" if what == "checkpoint" else ".a__s1.png"
    fired = small_disk.fill_when_opening(monkeypatch, prefix + atomic.TMP_MARK)
    code = main(["run", str(manifest), *ARGS, "--out", str(out)])
    captured = capsys.readouterr()
    monkeypatch.undo()
    assert fired, "the disk never filled"
    one_disk_full_line(code, captured.out, captured.err, "last.ckpt" if what == "checkpoint" else "a__s1.png")
    recs = records(out)
    assert recs["a__s1"]["status"] == "interrupted" and recs["a__s1"]["attempts"] == 0, recs["a__s1"]
    assert "b__s2" not in recs or recs["b__s2"]["status"] != "failed"
    assert not any(r.get("status") == "failed" for r in recs.values())
    assert temp_files(out) == [] and not (out / "a__s1.png").exists()
    assert snapshot(tmp_path / "images") == before

    small_disk.free()  # space freed: the same command finishes the job
    assert main(["run", str(manifest), *ARGS, "--out", str(out)]) == 0
    recs = records(out)
    assert all(r["status"] == "done" and r["attempts"] == 1 for r in recs.values()), recs


def test_torch_saves_report_of_a_full_disk_is_translated_where_every_writer_meets_it(
    small_disk: SmallDisk, monkeypatch
) -> None:
    """atomic_write itself turns torch.save's RuntimeError into OSError(ENOSPC) naming the file."""
    import torch

    if not small_disk.mounted:
        small_disk.fill_when_opening(monkeypatch, None)
    target = small_disk.root / "big.ckpt"
    with pytest.raises(OSError) as info:
        atomic.atomic_write(target, lambda fh: torch.save({"t": torch.zeros(2_000_000)}, fh))  # 8 MB > 4 MiB
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert isinstance(info.value.__cause__, RuntimeError) and "inline_container" in str(info.value.__cause__)
    assert small_disk.files() == []  # the temp is gone, nothing else written


@pytest.mark.slow
@pytest.mark.parametrize("devices", ["1", "2"])
def test_an_injected_enospc_in_any_process_stops_the_job(devices: str, tmp_path: Path) -> None:
    """The real console script, each process failing its second checkpoint write with ENOSPC
    (a fault point): exit 3, no traceback, every stderr line an error line, the disk-full one
    saying to free space; no pair failed, none charged an attempt; the rerun finishes."""
    six = [
        {
            "content": "images/a.png",
            "style": "images/s1.png",
            "name": f"p{i}",
            "seed": i,
            "optimizer": "adam",
            "lr": 0.05,
        }
        for i in range(4)
    ]
    # The Gram loss and 15 steps: the fault fires at the second checkpoint (step 10) of each process's
    # first pair; the rest is the rerun's, where the default loss's ~5x dearer steps would test nothing more.
    manifest = tiny_job(
        tmp_path, pairs=six, defaults={"steps": 15, "checkpoint_every": 5, "batch_size": 1, "style_loss": "gram"}
    )
    env = cli_env(OMP_NUM_THREADS="1", MASTER_PORT=str(_free_port()), STYLEBATCH_FAULT="tmp:ckpt@2!enospc")
    proc = subprocess.run(
        _cmd(manifest, "--devices", devices), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    # every line an error, but for the note that two CPU workers on 2 cores may be slower than one
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("note: --devices")]
    assert lines and all(line.startswith("error: ") for line in lines), proc.stderr
    assert any("No space left on device" in line and "last.ckpt" in line and "free space" in line for line in lines)
    recs = records(tmp_path / "out")
    assert recs and not any(r["status"] in ("failed", "done") for r in recs.values()), recs
    assert all(r["attempts"] == 0 for r in recs.values() if r["status"] == "interrupted")

    env.pop("STYLEBATCH_FAULT")
    proc = subprocess.run(
        _cmd(manifest, "--devices", devices), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(r["status"] == "done" and r["attempts"] == 1 for r in records(tmp_path / "out").values())
