"""Nothing of the user's is ever touched.

Temp files have one name of stylebatch's own and are cleaned only where stylebatch owns the files:
an output's directory (only temps of that job's outputs) and `.stylebatch/`. The root and system
directories are refused as output_dir. Nothing in the job's state is reached through a symbolic
link: a planted one is refused with one line naming it, and its target is left as it was.

Each case checks the exit code, the one line naming the culprit, no traceback, and that every
file outside stylebatch's own (its outputs and `.stylebatch/`) is byte-identical afterwards.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from stylebatch import atomic
from stylebatch.atomic import atomic_write, remove_stale_temps, temp_path
from stylebatch.cli.main import main
from tests.jobkit import tiny_job

ARGS = ["--weights", "random"]
PAIRS = [{"content": "images/a.png", "style": "images/s1.png", "optimizer": "adam", "lr": 0.05}]
DEAD_PID = 4_194_999  # above Linux's largest pid_max: never a live process
OUTPUTS = {"a__s1.png"}


def snapshot(root: Path, skip_outputs: bool = True) -> dict[str, tuple]:
    """Every path under `root` (links not followed) with its bytes or link target, except
    stylebatch's own files: `.stylebatch/` and the job's outputs."""
    found = {}
    for directory, dirs, files in os.walk(root):
        rel_dir = Path(directory).relative_to(root)
        if rel_dir.parts[:1] == (".stylebatch",) or ".stylebatch" in rel_dir.parts:
            continue
        for name in dirs + files:
            path = Path(directory) / name
            rel = str(rel_dir / name)
            if name == ".stylebatch" or (skip_outputs and name in OUTPUTS):
                continue
            st = path.lstat()
            if path.is_symlink():
                found[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                found[rel] = ("dir",)
            elif path.is_file():
                found[rel] = ("file", path.read_bytes())
            else:  # a FIFO or a device: never opened
                found[rel] = ("special", st.st_mode, st.st_ino)
    return found


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str, out: str, *fragments: str) -> str:
    assert "Traceback" not in out + err, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, err
    assert all(f in errors[0] for f in fragments), (fragments, errors[0])
    return errors[0]


# --- temp files: one pattern, cleaned only in product-owned places -------------------------------


def test_users_temp_like_files_survive_a_run_in_their_project_folder(tmp_path: Path, capsys) -> None:
    """`output_dir: .` in a project folder: the start-up sweep deleted every `.*.tmp.*` under it."""
    manifest = tiny_job(
        tmp_path, pairs=[dict(p) for p in PAIRS], defaults={"steps": 3, "checkpoint_every": 2}, output_dir="."
    )
    users = {
        "docs/.notes.tmp.keep": b"my notes",
        ".config.yaml.tmp.123": b"half-edited config",
        f"docs/.a__s1.png.stylebatch-tmp.{DEAD_PID}": b"looks like ours, but not in an output's directory",
        f".todo.txt.stylebatch-tmp.{DEAD_PID}": b"our pattern, but not for an output of this job",
        "src/.stylebatch-tmp.1": b"x",
    }
    for rel, data in users.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    (tmp_path / "docs" / "link-to-notes").symlink_to(".notes.tmp.keep")
    before = snapshot(tmp_path)
    # Left by a killed run of this job: these two are stylebatch's own and go.
    ours = [
        tmp_path / f".a__s1.png.stylebatch-tmp.{DEAD_PID}",
        tmp_path / ".stylebatch" / "pairs" / "a__s1" / f".last.ckpt.stylebatch-tmp.{DEAD_PID}",
    ]
    for path in ours:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"stale")

    code, out, err = cli(["run", str(manifest), *ARGS], capsys)
    assert code == 0, out + err
    assert (tmp_path / "a__s1.png").is_file()
    assert not any(path.exists() for path in ours)
    after = snapshot(tmp_path)
    assert after == before  # every file of the user's, byte for byte; nothing added next to them


def test_remove_stale_temps_takes_only_our_pattern_dead_writers_and_regular_files(tmp_path: Path) -> None:
    mine = tmp_path / f".a.png{atomic.TMP_MARK}{DEAD_PID}"
    other_output = tmp_path / f".b.png{atomic.TMP_MARK}{DEAD_PID}"
    live = tmp_path / f".a.png{atomic.TMP_MARK}{os.getppid()}"  # its writer is alive
    users = [tmp_path / ".a.png.tmp.123", tmp_path / f"a.png{atomic.TMP_MARK}{DEAD_PID}"]
    for path in [mine, other_output, live, *users]:
        path.write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / mine.name).write_bytes(b"below: not this directory")
    link = tmp_path / f".c.png{atomic.TMP_MARK}{DEAD_PID}"
    link.symlink_to(users[0])
    assert remove_stale_temps(tmp_path, {"a.png"}) == 1
    assert not mine.exists()
    assert all(p.exists() for p in [other_output, live, *users, tmp_path / "sub" / mine.name]) and link.is_symlink()


@pytest.mark.parametrize("where", ["/", "/etc", "/usr/local/share/out", "/proc/self", "link-to-etc"])
def test_root_and_system_directories_are_refused_as_output_dir(where: str, tmp_path: Path, capsys) -> None:
    """Checked with `validate` only: on code without the refusal, `run` would write into them."""
    (tmp_path / "link-to-etc").symlink_to("/etc")
    for how in ("manifest", "--out"):
        manifest = tiny_job(tmp_path, pairs=[dict(p) for p in PAIRS], output_dir=where if how == "manifest" else "out")
        extra = ["--out", where if where.startswith("/") else str(tmp_path / where)] if how == "--out" else []
        code, out, err = cli(["validate", str(manifest), *ARGS, *extra], capsys)
        assert code == 2, (how, out, err)
        line = one_error_line(err, out, "system directory")
        assert where in line or "link-to-etc" in line
    assert not Path("/etc/.stylebatch").exists() and not Path("/.stylebatch").exists()


@pytest.fixture
def fake_system_tree(tmp_path: Path, monkeypatch) -> Path:
    """A directory under tmp_path that counts as a system tree, for the commands that would write."""
    from stylebatch.job import checks as pair_checks

    system = tmp_path / "sys-tree"
    (system / "conf").mkdir(parents=True)
    (system / "conf" / ".settings.tmp.1").write_bytes(b"the system's")
    monkeypatch.setattr(pair_checks, "SYSTEM_TREES", (*pair_checks.SYSTEM_TREES, str(system)))
    return system


@pytest.mark.parametrize("how", ["manifest", "--out", "--from"])
def test_run_refuses_a_system_tree_before_writing_anything(
    how: str, tmp_path: Path, capsys, fake_system_tree: Path
) -> None:
    manifest = tiny_job(
        tmp_path,
        pairs=[dict(p) for p in PAIRS],
        defaults={"steps": 2},
        output_dir=str(fake_system_tree / "conf") if how == "manifest" else "out",
    )
    if how == "--from":
        assert main(["run", str(manifest), *ARGS]) == 0
        argv = ["run", "--from", str(tmp_path / "out" / "a__s1.png"), *ARGS, "--out", str(fake_system_tree / "conf")]
    else:
        argv = ["run", str(manifest), *ARGS] + (["--out", str(fake_system_tree / "conf")] if how == "--out" else [])
    capsys.readouterr()
    before = snapshot(fake_system_tree, skip_outputs=False)
    code, out, err = cli(argv, capsys)
    assert code == 2, out + err
    one_error_line(err, out, str(fake_system_tree / "conf"), "system directory")
    assert snapshot(fake_system_tree, skip_outputs=False) == before


# --- links planted in the job's state are refused, never followed -------------------------------

LINKS = {  # planted at (relative to the output directory) -> what it points to
    ".stylebatch/lock": "file",
    ".stylebatch": "dir",
    ".stylebatch/pairs": "dir",
    ".stylebatch/pairs/a__s1": "dir",
    ".stylebatch/pairs/a__s1/state.json": "file",
    ".stylebatch/pairs/a__s1/last.ckpt": "file",
    ".stylebatch/pairs/a__s1/claim": "file",
    ".stylebatch/pairs/a__s1/losses.csv": "file",
    ".stylebatch/logs": "dir",
}


@pytest.mark.parametrize("planted", sorted(LINKS))
def test_a_planted_link_is_refused_with_one_line_and_its_target_untouched(planted: str, tmp_path: Path, capsys) -> None:
    manifest = tiny_job(tmp_path, pairs=[dict(p) for p in PAIRS], defaults={"steps": 2})
    out = tmp_path / "out"
    victim = tmp_path / "victim"
    if LINKS[planted] == "file":
        victim.write_bytes(b"the user's file: must stay as it is")
    else:
        victim.mkdir()
        (victim / "keep.txt").write_bytes(b"the user's directory")
    link = out / planted
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(victim)
    before = snapshot(tmp_path)

    for argv in (["run", str(manifest), *ARGS], ["status", str(out)]):
        code, stdout, err = cli(argv, capsys)
        if argv[0] == "status" and planted in (
            ".stylebatch/lock",
            ".stylebatch/logs",
            ".stylebatch/pairs/a__s1/claim",
            ".stylebatch/pairs/a__s1/last.ckpt",
            ".stylebatch/pairs/a__s1/losses.csv",
        ):
            continue  # status reads only the records
        assert code == 2, (argv[0], stdout, err)
        one_error_line(err, stdout, str(link), "symbolic link", "remove it")
    assert snapshot(tmp_path) == before
    assert not (out / "a__s1.png").exists()


def test_atomic_write_never_writes_through_a_link_at_its_temp_name(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    target = tmp_path / "state.json"
    temp_path(target).symlink_to(victim)  # planted where the writer will create its temp file
    atomic_write(target, b"new state")
    assert target.read_bytes() == b"new state" and not target.is_symlink()
    assert victim.read_bytes() == b"precious"
    assert not temp_path(target).exists() and not temp_path(target).is_symlink()


def test_a_stale_pair_temp_is_removed_only_by_the_pairs_claimer(tmp_path: Path, capsys, monkeypatch) -> None:
    """A live process's temp in a pair it holds is never swept away by another run's start-up."""
    from stylebatch.jobdir import claims
    from stylebatch.jobdir.state import JobState

    monkeypatch.setattr(claims, "WAIT_S", 0.5)

    manifest = tiny_job(tmp_path, pairs=[dict(p) for p in PAIRS], defaults={"steps": 2})
    state = JobState(tmp_path / "out")
    fd = claims.try_claim(state, "a__s1", rank=7, purpose="work")  # this test process holds a__s1
    try:
        writing = state.pair_dir("a__s1") / f".last.ckpt{atomic.TMP_MARK}{DEAD_PID}"
        writing.write_bytes(b"being written by the holder")
        code, out, err = cli(["run", str(manifest), *ARGS], capsys)
        assert code == 3, out + err  # the pair is left to its holder: not done yet
        assert writing.read_bytes() == b"being written by the holder"
        assert not (tmp_path / "out" / "a__s1.png").exists()
    finally:
        claims.release(state, "a__s1", fd)
    assert cli(["run", str(manifest), *ARGS], capsys)[0] == 0  # free now: run, and its stale temp gone
    assert not writing.exists()


# --- report: never through a link, never deleting what it did not write ------------------------


@pytest.fixture
def done_job(tmp_path: Path) -> Path:
    manifest = tiny_job(tmp_path, pairs=[dict(p) for p in PAIRS], defaults={"steps": 2})
    assert main(["run", str(manifest), *ARGS]) == 0
    return tmp_path / "out"


@pytest.mark.parametrize("planted", [".stylebatch", ".stylebatch/report", ".stylebatch/report/thumbs"])
def test_report_refuses_a_planted_link_and_leaves_its_target(planted: str, done_job: Path, capsys) -> None:
    victim = done_job.parent / "victim"
    victim.mkdir()
    files = {"page-notes.txt": b"notes", "sheet-music.pdf": b"%PDF", "report.html": b"<p>mine</p>"}
    files |= {"pages.json": b"{}", "contact_sheet.jpg": b"mine", "thumbs/ab/holiday_800x600.jpg": b"photo"}
    for rel, data in files.items():
        (victim / rel).parent.mkdir(parents=True, exist_ok=True)
        (victim / rel).write_bytes(data)
    link = done_job / planted
    if link.exists():
        real = link.with_name(link.name + ".real")
        link.rename(real)
    link.symlink_to(victim)
    before = snapshot(victim, skip_outputs=False)
    code, out, err = cli(["report", str(done_job)], capsys)
    assert code == 2, out + err
    one_error_line(err, out, str(link), "symbolic link")
    assert snapshot(victim, skip_outputs=False) == before


def test_a_link_inside_a_finished_pairs_directory_is_never_followed(done_job: Path, capsys) -> None:
    """A run's start lists the pairs' directories but not their insides (a process that claims a pair
    for work checks its inside): a finished pair's curve replaced by a link is refused by `report`,
    which reads it, and a rerun that has nothing to write there finishes without touching it."""
    victim = done_job.parent / "victim.csv"
    victim.write_bytes(b"evaluations,total\n1,2\n")
    curve = done_job / ".stylebatch" / "pairs" / "a__s1" / "losses.csv"
    curve.unlink()
    curve.symlink_to(victim)
    shutil.rmtree(done_job / ".stylebatch" / "report")  # so that the report is made again, curves read
    code, out, err = cli(["report", str(done_job)], capsys)
    assert code == 2, out + err
    one_error_line(err, out, str(curve), "symbolic link")
    manifest = done_job.parent / "job.yaml"
    assert cli(["run", str(manifest), *ARGS], capsys)[0] == 0
    assert curve.is_symlink() and victim.read_bytes() == b"evaluations,total\n1,2\n"


def test_report_deletes_only_files_it_wrote(done_job: Path, capsys) -> None:
    assert cli(["report", str(done_job)], capsys)[0] == 0
    report = done_job / ".stylebatch" / "report"
    theirs = {
        "page-notes.txt": b"notes",
        "sheet-music.pdf": b"%PDF",
        "thumbs/ab/holiday_800x600.jpg": b"photo",
        "thumbs/notes.txt": b"x",
    }
    for rel, data in theirs.items():
        (report / rel).parent.mkdir(parents=True, exist_ok=True)
        (report / rel).write_bytes(data)
    stale = [
        report / "page-0007.html",
        report / "sheet-0007.jpg",
        report / "thumbs" / "ab" / ("ab" + "0" * 18 + "_8x8.jpg"),
    ]
    for path in stale:  # named as the report names its own: an earlier, larger report's
        path.write_bytes(b"old")
    assert cli(["report", str(done_job)], capsys)[0] == 0
    assert all((report / rel).read_bytes() == data for rel, data in theirs.items())
    assert not any(path.exists() for path in stale)
