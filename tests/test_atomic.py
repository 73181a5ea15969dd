"""The atomic writer and the job lock, in process."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from stylebatch.atomic import atomic_write, remove_stale_temps
from stylebatch.errors import LockedError
from stylebatch.jobdir.state import JobState


def test_failing_replace_keeps_previous_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"good old content")

    def broken_replace(src, dst):
        raise OSError(errno.EIO, "replace failed")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write(target, b"new content")
    assert target.read_bytes() == b"good old content"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]  # no temp file left


def test_failing_write_keeps_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b'{"status": "done"}')

    def half_then_full_disk(fh):
        fh.write(b'{"sta')
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as err:
        atomic_write(target, half_then_full_disk)
    assert err.value.errno == errno.ENOSPC
    assert target.read_bytes() == b'{"status": "done"}'
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_write_replaces_and_stale_temps_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    atomic_write(target, b"one")
    atomic_write(target, lambda fh: fh.write(b"two"))
    assert target.read_bytes() == b"two"
    (tmp_path / ".a.txt.stylebatch-tmp.4194999").write_bytes(b"orphan of a killed writer")  # beyond pid_max
    assert remove_stale_temps(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_second_job_on_same_directory_is_refused(tmp_path: Path) -> None:
    state = JobState(tmp_path)
    with state.lock():
        with pytest.raises(LockedError) as err:
            with JobState(tmp_path).lock():
                pass
        assert "another stylebatch job is running" in str(err.value) and str(os.getpid()) in str(err.value)
    with state.lock():  # released on exit: a later run takes it
        pass
