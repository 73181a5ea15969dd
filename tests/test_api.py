"""The Python API (stylebatch/api.py): the CLI's path, its bytes, its resume and its errors, silently."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import stylebatch
from stylebatch.cli.main import main
from stylebatch.errors import ConfigError, ManifestError, StylebatchError
from stylebatch.job.config import Config
from tests.jobkit import REPO, cli_env, make_image, records, run_with_sigterm_at, write_manifest

# One pass, few evaluations: the CLI and the API must agree to the byte, not paint well.
SETTINGS = {"size": 32, "steps": 12, "scales": None, "checkpoint_every": 4, "log_every": 4, "report_every": 0}


def _pair(tmp_path: Path) -> tuple[Path, Path]:
    return make_image(tmp_path / "img" / "photo.png", 3), make_image(tmp_path / "img" / "paint.png", 4, (30, 40))


def _manifest(tmp_path: Path, content: Path, style: Path, **extra) -> Path:
    pair = {"content": str(content), "style": str(style)}
    return write_manifest(
        tmp_path / "job.yaml", {"output_dir": "out", "defaults": {**SETTINGS, **extra}, "pairs": [pair]}
    )


def test_import_is_quick_and_torch_free() -> None:
    code = "import sys, stylebatch; print('torch' in sys.modules, callable(stylebatch.run))"
    out = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


@pytest.mark.slow
def test_stylize_gives_the_cli_pixels_and_prints_nothing(tmp_path: Path, capfd) -> None:
    content, style = _pair(tmp_path)
    assert main(["run", str(_manifest(tmp_path, content, style)), "--weights", "random"]) == 0
    cli = np.asarray(Image.open(tmp_path / "out" / "photo__paint.png"))
    capfd.readouterr()

    from_paths = stylebatch.stylize(content, style, weights="random", device="cpu", **SETTINGS)
    from_images = stylebatch.stylize(Image.open(content), Image.open(style), weights="random", **SETTINGS)
    assert capfd.readouterr() == ("", "")  # progress=False: silent
    assert from_paths.size == (32, 24)
    assert np.array_equal(np.asarray(from_paths), cli)
    assert np.array_equal(np.asarray(from_images), cli)
    assert '"steps": 12' in from_paths.info["stylebatch"]  # the settings travel with the picture


@pytest.mark.slow
def test_run_writes_the_cli_bytes_and_summarises(tmp_path: Path, capfd) -> None:
    content, style = _pair(tmp_path)
    manifest = _manifest(tmp_path, content, style)
    assert main(["run", str(manifest), "--weights", "random", "--out", str(tmp_path / "cli")]) == 0
    capfd.readouterr()
    summary = stylebatch.run(manifest, out=tmp_path / "api", weights="random")
    assert capfd.readouterr() == ("", "")
    assert summary.exit_code == 0 and summary.counts == {"done": 1}
    pair = summary.pairs["photo__paint"]
    assert pair.status == "done" and pair.evaluations == 12 and set(pair.losses) >= {"content", "style"}
    assert pair.output == tmp_path / "api" / "photo__paint.png"
    first = pair.output.read_bytes()
    assert first == (tmp_path / "cli" / "photo__paint.png").read_bytes()
    # a settings keyword is `--set`: a changed pixel setting redoes the pair, as the CLI would
    again = stylebatch.run(manifest, out=tmp_path / "api", weights="random", style_weight=0.5, progress=True)
    assert again.exit_code == 0 and again.outputs["photo__paint"].read_bytes() != first
    shown = capfd.readouterr()
    assert (
        f"redoing photo__paint: style_weight {Config().style_weight:g} → 0.5" in shown.err
        and "done photo__paint" in shown.err
    )


@pytest.mark.slow
def test_run_resumes_an_interrupted_job(tmp_path: Path, monkeypatch) -> None:
    content, style = _pair(tmp_path)
    manifest = _manifest(tmp_path, content, style)
    whole = stylebatch.run(manifest, out=tmp_path / "whole", weights="random").outputs["photo__paint"].read_bytes()

    # SIGTERM at evaluation 6 (as a scheduler would send it): checkpointed at 4, exit 3
    code, fired = run_with_sigterm_at(manifest, 6, "--weights", "random", "--out", str(tmp_path / "cut"))
    assert fired and code == 3
    assert records(tmp_path / "cut")["photo__paint"]["status"] == "interrupted"
    summary = stylebatch.run(manifest, out=tmp_path / "cut", weights="random")
    assert summary.exit_code == 0 and summary.pairs["photo__paint"].status == "done"
    assert summary.outputs["photo__paint"].read_bytes() == whole


@pytest.mark.slow
def test_run_through_the_api_is_interrupted_and_resumed_through_it(tmp_path: Path) -> None:
    import os
    import signal

    from stylebatch.fit import engine

    content, style = _pair(tmp_path)
    manifest = _manifest(tmp_path, content, style)
    original = engine._BudgetCallback.on_train_batch_end

    def sigterm_at_6(self, trainer, module, *rest):
        if module.evaluations == 6:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, trainer, module, *rest)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine._BudgetCallback, "on_train_batch_end", sigterm_at_6)
        cut = stylebatch.run(manifest, weights="random")
    assert cut.exit_code == 3 and cut.pairs["photo__paint"].status == "interrupted" and cut.outputs == {}
    assert cut.pairs["photo__paint"].evaluations in (4, 6)  # the checkpoint at the stop
    done = stylebatch.run(manifest, weights="random")
    assert done.exit_code == 0 and done.pairs["photo__paint"].evaluations == 12
    assert main(["run", str(manifest), "--weights", "random", "--out", str(tmp_path / "cli")]) == 0
    assert done.outputs["photo__paint"].read_bytes() == (tmp_path / "cli" / "photo__paint.png").read_bytes()


def test_errors_are_the_projects_exceptions_with_the_cli_lines(tmp_path: Path, capsys) -> None:
    content, style = _pair(tmp_path)
    missing = tmp_path / "img" / "nope.png"
    with pytest.raises(ManifestError, match=re.escape(f"content: {missing}: file not found")):
        stylebatch.stylize(missing, style, weights="random", size=32)
    with pytest.raises(ConfigError) as bad:
        stylebatch.stylize(content, style, weights="random", steps=0)
    assert main(["run", str(_manifest(tmp_path, content, style)), "--weights", "random", "--set", "steps=0"]) == 2
    assert f"error: {bad.value}" in capsys.readouterr().err  # the same line as the CLI's
    with pytest.raises(ManifestError, match="^stylize: preset 'nope' not found; known presets: fast"):
        stylebatch.stylize(content, style, preset="nope", weights="random")

    broken = _manifest(tmp_path, missing, style)
    with pytest.raises(ManifestError) as refused:
        stylebatch.run(broken, weights="random")
    assert main(["run", str(broken), "--weights", "random"]) == 2
    printed = [line.removeprefix("error: ") for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert refused.value.problems == printed
    assert not (tmp_path / "out").exists()  # refused before any work
    with pytest.raises(StylebatchError, match="device 'tpu'"):
        stylebatch.stylize(content, style, weights="random", device="tpu")


@pytest.mark.slow
def test_readme_example_runs(tmp_path: Path, monkeypatch) -> None:
    """The README's Python example, with tiny sizes and random weights, as written otherwise."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Python API.*?```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    small = block.replace('weights="imagenet"', 'weights="random"').replace('"manifests/', f'"{REPO}/manifests/')
    small = small.replace("size=256", "size=32").replace("steps=100", "steps=4").replace("size=128", "size=32, steps=4")
    assert small.count('"random"') == 2 and small.count("size=32") == 2 and small.count("steps=4") == 2
    namespace: dict = {}
    exec(compile(small, "README.md", "exec"), namespace)  # the documented example itself
    assert namespace["summary"].exit_code == 0 and len(namespace["summary"].outputs) == 3
    assert max(namespace["picture"].size) == 32 and (tmp_path / "chelsea_wave.png").is_file()
    assert all(p.parent == tmp_path / "runs" / "example-api" for p in namespace["summary"].outputs.values())
