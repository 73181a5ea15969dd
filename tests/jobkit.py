"""Tiny jobs for runner tests: deterministic images, manifests, in-process and real CLI runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from PIL import Image

from stylebatch.fit.engine import module_for  # noqa: F401 (re-exported for tests: the module for tensors)

REPO = Path(__file__).resolve().parent.parent

# Small but real: conv5_1 needs 16 px, so 32 px leaves two pools of room. Adam and L-BFGS pairs,
# checkpoints every 10 evaluations of 30, so a run has several checkpoints to be killed between.
# The Gram loss: the default Wasserstein loss's eigendecompositions do not shrink with the image
# and cost ~5x a 32 px step; the runner tests are about processes and files, not the loss. Tests
# where the default loss is the point say so (DEFAULT_LOSS), as test_resume does end to end.
TINY = {
    "size": 32,
    "steps": 30,
    "checkpoint_every": 10,
    "log_every": 5,
    "keep_checkpoints": True,
    "style_loss": "gram",
}
DEFAULT_LOSS = {"style_loss": "wasserstein"}


def make_image(path: Path, seed: int, size: tuple[int, int] = (40, 30), mode: str = "RGB") -> Path:
    """A smooth random image (low-frequency pattern plus noise), the same for the same seed."""
    g = torch.Generator().manual_seed(seed)
    w, h = size
    low = torch.rand(3, max(2, h // 8), max(2, w // 8), generator=g)
    img = torch.nn.functional.interpolate(low[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    img = (0.8 * img + 0.2 * torch.rand(3, h, w, generator=g)).clamp(0, 1)
    arr = (img.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).convert(mode).save(path)
    return path


def write_manifest(path: Path, data: dict[str, Any] | None = None, text: str | None = None) -> Path:
    """Write a manifest at `path`: `data` as YAML, in its key order and with non-ASCII text as is, or
    `text` as given. `data` must not share objects: safe_dump would write them as YAML aliases,
    which are refused."""
    path.write_text(
        text if text is not None else yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8"
    )
    return path


def edit_manifest(path: Path, edit: Callable[[dict[str, Any]], Any]) -> Path:
    """Rewrite the manifest at `path` with `edit` applied to its data (in place)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    edit(data)
    return write_manifest(path, data)


def tiny_job(
    root: Path, pairs: list[dict[str, Any]] | None = None, defaults: dict[str, Any] | None = None, **top: Any
) -> Path:
    """Write images and a manifest under `root`; returns the manifest path."""
    images = root / "images"
    for i, name in enumerate(["a.png", "b.png", "s1.png", "s2.png"]):
        if not (images / name).exists():
            make_image(images / name, seed=i, size=(40, 30) if i % 2 == 0 else (30, 40))
    if pairs is None:
        pairs = [
            {"content": "images/a.png", "style": "images/s1.png", "optimizer": "adam", "lr": 0.05},
            {"content": "images/b.png", "style": "images/s2.png", "optimizer": "lbfgs", "lbfgs_history": 5},
        ]
    manifest = {"output_dir": "out", "defaults": {**TINY, **(defaults or {})}, "pairs": pairs, **top}
    return write_manifest(root / "job.yaml", manifest)


def records(out_dir: Path) -> dict[str, dict[str, Any]]:
    pairs = out_dir / ".stylebatch" / "pairs"
    found = {}
    for d in sorted(pairs.iterdir()) if pairs.is_dir() else []:
        f = d / "state.json"
        if f.exists():
            found[d.name] = json.loads(f.read_text())
    return found


def final_target(out_dir: Path, name: str) -> torch.Tensor:
    """The float image of a finished pair (kept with keep_checkpoints)."""
    ckpt = torch.load(out_dir / ".stylebatch" / "pairs" / name / "last.ckpt", weights_only=True)
    return ckpt["state_dict"]["target"]


def temp_files(out_dir: Path) -> list[Path]:
    from stylebatch.atomic import TMP_MARK

    return [p for p in out_dir.rglob("*") if TMP_MARK in p.name]


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STYLEBATCH_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def run_subprocess(args: list[str], cwd: Path, timeout: float = 240, **env: str) -> subprocess.CompletedProcess:
    """The real console entry point, in a fresh process (`python -m stylebatch`)."""
    return subprocess.run(
        [sys.executable, "-m", "stylebatch", *args],
        cwd=cwd,
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_with_sigterm_at(manifest: Path, evaluation: int, *args: str) -> tuple[int, bool]:
    """`stylebatch run` in process, sending itself SIGTERM once a fit reaches `evaluation` loss
    evaluations (as a scheduler's pre-emption would). Returns (exit code, whether it fired)."""
    import signal

    import pytest

    from stylebatch.cli.main import main
    from stylebatch.fit import engine

    original = engine._BudgetCallback.on_train_batch_end
    fired: list[bool] = []

    def send_sigterm_once(self, trainer, module, *rest):
        if module.evaluations == evaluation and not fired:
            fired.append(True)
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, trainer, module, *rest)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine._BudgetCallback, "on_train_batch_end", send_sigterm_once)
        code = main(["run", str(manifest), *args])
    return code, bool(fired)


def fit_one(
    vgg,
    content: Path,
    style: Any,
    cfg: Any,
    ckpt_path: Path,
    output: Path,
    hooks: Any = None,
    metadata: dict | None = None,
):
    """One pair through the product's one fit path (`engine.stylize`, a batch of one)."""
    from stylebatch.fit.engine import Member, PairHooks, stylize

    styles = list(style) if isinstance(style, (list, tuple)) else [style]
    member = Member(content, styles, cfg, ckpt_path, output, metadata or {}, hooks or PairHooks())
    return stylize([member], vgg, torch.device("cpu"))[0]


class ForwardCounter:
    """Counts the network's forward passes while installed (a forward pre-hook): tests check that
    targets are computed once per pair, not per step. `with ForwardCounter(vgg) as calls: ...; calls.n`."""

    def __init__(self, vgg: Any):
        self.vgg, self.n = vgg, 0

    def __enter__(self) -> ForwardCounter:
        self._hook = self.vgg.register_forward_pre_hook(lambda module, args, kwargs: self._count(), with_kwargs=True)
        return self

    def _count(self) -> None:
        self.n += 1

    def __exit__(self, *exc: Any) -> None:
        self._hook.remove()
