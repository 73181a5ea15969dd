"""What the command line says: URLs and non-tensor weights get one clear line, `validate` prints no
plan above a refusal, every flag has help, a second Ctrl-C exits 3 as it says, and the demo's
follow-up commands name the directory it wrote."""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from stylebatch.cli import main as cli  # noqa: E402
from stylebatch.cli.main import main
from tests.jobkit import REPO, cli_env, make_image, records, tiny_job, write_manifest

URL_LINE = "URLs are not supported; download the file first"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    tiny_job(tmp_path)  # the images
    return tmp_path


def _manifest(root: Path, **top) -> Path:
    return write_manifest(root / "m.yaml", {"output_dir": "out", **top})


def _error_lines(capsys: pytest.CaptureFixture) -> tuple[str, list[str]]:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.out, [line for line in captured.err.splitlines() if line.startswith("error: ")]


@pytest.mark.parametrize(
    "where, top",
    [
        ("pairs[0]", {"pairs": [{"content": "https://example.org/cat.jpg", "style": "images/s1.png"}]}),
        ("pairs[0]", {"pairs": [{"content": "images/a.png", "style": ["images/s1.png", "s3://bucket/s.png"]}]}),
        ("grid.style", {"grid": {"content": ["images/a.png"], "style": ["http://example.org/wave.jpg"]}}),
        (
            "grid.style[0]",
            {"grid": {"content": ["images/a.png"], "style": [{"blend": ["images/s1.png", "ftp://h/s.png"]}]}},
        ),
        ("pairs[0]", {"pairs": [{"content": "images/a.png", "style": "images/s1.png", "init": "https://e.org/i.png"}]}),
    ],
)
def test_a_url_as_an_image_path_is_one_clear_line(root: Path, capsys, where: str, top: dict) -> None:
    assert main(["validate", str(_manifest(root, **top))]) == 2
    out, errors = _error_lines(capsys)
    assert len(errors) == 1 and URL_LINE in errors[0] and where in errors[0], errors
    assert "not found" not in " ".join(errors)


def test_weights_that_are_a_url_or_not_a_tensor_file(root: Path, capsys) -> None:
    manifest = tiny_job(root)
    assert main(["validate", str(manifest), "--weights", "https://download.pytorch.org/vgg19.pth"]) == 2
    _, errors = _error_lines(capsys)
    assert len(errors) == 1 and URL_LINE in errors[0]
    png = make_image(root / "weights.png", seed=3)
    for command in ("validate", "run"):
        assert main([command, str(manifest), "--weights", str(png)]) == 2
        _, errors = _error_lines(capsys)
        assert len(errors) == 1 and "not a PyTorch weights file (a PNG image)" in errors[0] and str(png) in errors[0]
        assert "weights_only" not in errors[0]  # torch's hint about weights_only=False is wrong here
    assert not (root / "out").exists()


def test_validate_prints_no_plan_above_a_refusal(root: Path, capsys) -> None:
    bad = tiny_job(
        root,
        pairs=[
            {"content": "images/missing.png", "style": "images/s1.png"},
            {"content": "images/a.png", "style": "images/s1.png"},
        ],
    )
    assert main(["validate", str(bad)]) == 2
    out, errors = _error_lines(capsys)
    assert "valid pair(s)" not in out and "Mpx" not in out and errors
    good = tiny_job(root)
    assert main(["validate", str(good)]) == 0
    assert "2 valid pair(s) of 2" in capsys.readouterr().out


def test_every_argument_and_flag_has_help() -> None:
    parser = cli._parser()
    missing = []
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            if not isinstance(action, argparse._HelpAction) and not action.help:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


@pytest.mark.slow
def test_a_second_ctrl_c_exits_3_as_it_says(tmp_path: Path, capsys) -> None:
    """Two SIGINTs inside a fit: Lightning turns a KeyboardInterrupt into exit 1; the second Ctrl-C
    must stop at once and exit 3 (resumable), saying so."""
    from stylebatch.fit import engine

    manifest = tiny_job(tmp_path, defaults={"steps": 12, "checkpoint_every": 4, "batch_size": 1})
    original = engine._BudgetCallback.on_train_batch_end
    fired: list[int] = []

    def ctrl_c_twice(self, trainer, module, *rest):
        if module.evaluations == 6 and not fired:
            fired.append(1)
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, trainer, module, *rest)

    before = signal.getsignal(signal.SIGINT)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine._BudgetCallback, "on_train_batch_end", ctrl_c_twice)
        code = main(["run", str(manifest), "--weights", "random"])
    assert fired and code == 3
    assert "stopped at once (second Ctrl-C); exit 3" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is before  # the run put Ctrl-C's handler back as it found it
    assert records(tmp_path / "out")["a__s1"]["steps_done"] == 4  # resumes from its last checkpoint
    assert main(["run", str(manifest), "--weights", "random"]) == 0


def test_the_demo_points_at_the_directory_it_wrote() -> None:
    demo = (REPO / "scripts" / "demo.sh").read_text()
    fallback = re.search(r"^\s*out=(\S+)\s*$", demo.split("--weights random instead")[1], re.M).group(1)
    assert fallback == "runs/example-random" and '--out "$out"' in demo
    assert "stylebatch status $out" in demo and "stylebatch report $out" in demo  # printed for either directory
    readme = (REPO / "README.md").read_text()
    assert "runs/example-random" in readme


@pytest.mark.slow
def test_a_ctrl_c_after_the_exit_line_keeps_the_exit_code(tmp_path: Path) -> None:
    """The job is over once `exit N: ...` is printed: a Ctrl-C then (while torch and Lightning shut
    down) must not turn the printed 0 into Python's 130."""
    manifest = tiny_job(tmp_path, defaults={"steps": 2, "batch_size": 1})
    proc = subprocess.Popen(
        [sys.executable, "-m", "stylebatch", "run", str(manifest), "--weights", "random"],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("exit 0:"):
            try:
                proc.send_signal(signal.SIGINT)
            except ProcessLookupError:
                pass
    assert proc.wait(timeout=120) == 0, "".join(seen)


def test_weights_that_cannot_be_had_leave_no_job_directory(tmp_path: Path, monkeypatch, capsys) -> None:
    """Offline, the demo's ImageNet attempt must not leave a job where the README's next command looks."""
    from stylebatch.errors import WeightsError
    from stylebatch.fit import vgg

    def offline() -> dict:
        raise WeightsError("cannot obtain the ImageNet VGG19 weights (URLError: offline)")

    monkeypatch.setattr(vgg, "_load_imagenet", offline)
    manifest = tiny_job(tmp_path, defaults={"steps": 2})
    assert main(["run", str(manifest)]) == 2
    assert "cannot obtain the ImageNet VGG19 weights" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_demo_names_the_venv_cli_and_the_readme_says_how_to_call_it() -> None:
    demo = (REPO / "scripts" / "demo.sh").read_text()
    assert ".venv/bin/stylebatch status $out" in demo and "source .venv/bin/activate" in demo
    readme = (REPO / "README.md").read_text()
    assert "`.venv/bin/stylebatch`" in readme and "source .venv/bin/activate" in readme
