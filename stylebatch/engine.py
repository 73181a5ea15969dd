"""One pair, start to finish: images → StyleTransferModule → Lightning Trainer fit (resuming from
the pair's checkpoint if there is one) → the output image, written atomically."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import platform
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import lightning as L
import PIL
import torch
import torchvision
from lightning.pytorch.utilities.exceptions import SIGTERMException

from stylebatch import __version__, controls
from stylebatch.atomic import fault_point
from stylebatch.batching import MemberCheckpointIO, stack
from stylebatch.config import Config
from stylebatch.curves import CURVE_FILE, CurveWriter
from stylebatch.images import save_image
from stylebatch.module import LBFGS_MAX_ITER, StyleTransferModule
from stylebatch.vgg import VGGFeatures

log = logging.getLogger(__name__)

# Lightning is chatty for a process that runs hundreds of one-device fits; keep its warnings only.
for _name in ("lightning.pytorch", "lightning.fabric"):
    logging.getLogger(_name).setLevel(logging.WARNING)
for _pattern in (
    ".*does not have many workers.*",
    ".*module\\(s\\) in eval mode.*",
    ".*resuming from a checkpoint that ended before the epoch ended.*",
    ".*`training_step` returned.*",
    ".*LeafSpec.*",
):
    warnings.filterwarnings("ignore", _pattern)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the pair fails and no NaN state is ever checkpointed."""


@dataclass
class PairHooks:
    """How the runner watches and steers one fit."""

    should_stop: Callable[[], bool] = lambda: False  # a signal arrived: checkpoint and stop
    on_progress: Callable[[int, dict[str, float]], None] = lambda n, losses: None  # at each log interval
    on_checkpoint: Callable[[int], None] = lambda n: None  # after each checkpoint is safely on disk


class _BudgetCallback(L.Callback):
    """Counts the budget in loss evaluations, checkpoints every `checkpoint_every` evaluations (at
    the first optimizer-step boundary past it), watches for NaN, logs the losses (to `curve` and
    the hooks) each time the count passes a multiple of `log_every`, and stops on request.

    Logging at multiples, not every `log_every` since the last log, keeps the log points of a
    resumed fit where the uninterrupted one had them, so the two loss curves are the same."""

    def __init__(self, cfg: Config, ckpt_path: Path, hooks: PairHooks, curve: CurveWriter | None = None):
        self.cfg, self.ckpt_path, self.hooks, self.curve = cfg, ckpt_path, hooks, curve
        self.last_saved = 0
        self.last_logged = 0
        self.interrupted = False

    def on_train_start(self, trainer: L.Trainer, module: StyleTransferModule) -> None:
        self.last_saved = self.last_logged = module.evaluations

    def on_train_batch_start(self, trainer: L.Trainer, module: StyleTransferModule, batch: Any, batch_idx: int) -> None:
        if self.cfg.optimizer == "lbfgs":
            # Never plan more evaluations than the budget has left (the line search may still
            # finish its bracket, so the run can end a few evaluations past it; the count is exact).
            remaining = module.scale_end - module.evaluations  # the pass's end (cfg.steps with one pass)
            group = trainer.optimizers[0].param_groups[0]
            group["max_eval"] = max(1, min(LBFGS_MAX_ITER * 5 // 4, remaining))

    def _check_finite(self, module: StyleTransferModule) -> dict[str, float]:
        losses = {k: float(v.sum()) for k, v in module.last_losses.items()}
        if not all(math.isfinite(v) for v in losses.values()) or not torch.isfinite(module.target).all():
            lbfgs = "" if self.cfg.optimizer == "lbfgs" else ", or optimizer: lbfgs"  # issue 14: not to an L-BFGS pair
            raise NonFiniteLossError(
                f"loss became non-finite after {module.evaluations} evaluations ({losses}); try a lower lr{lbfgs}"
            )
        return losses

    def _save(self, trainer: L.Trainer, module: StyleTransferModule) -> None:
        self._check_finite(module)  # a NaN state is never saved
        if self.curve is not None:
            self.curve.sync()  # a checkpoint on disk always has its curve rows on disk
        trainer.save_checkpoint(self.ckpt_path)
        fault_point("after_checkpoint")
        self.last_saved = module.evaluations
        self.hooks.on_checkpoint(module.evaluations)

    def on_train_batch_end(self, trainer: L.Trainer, module: StyleTransferModule, *args: Any) -> None:
        n, every = module.evaluations, self.cfg.log_every
        if n // every > self.last_logged // every or n >= module.scale_end:
            losses = self._check_finite(module)
            if self.curve is not None:
                self.curve.append(n, losses)
            self.hooks.on_progress(n, losses)
            self.last_logged = n
        if n >= module.scale_end:
            trainer.should_stop = True
        elif self.hooks.should_stop():
            self._save(trainer, module)
            self.interrupted = True
            trainer.should_stop = True
        elif n - self.last_saved >= self.cfg.checkpoint_every:
            self._save(trainer, module)


@dataclass
class PairResult:
    evaluations: int
    losses: dict[str, float]
    seconds: float
    interrupted: bool
    output_sha256: str | None = None


def prepare_inputs(content_path: Path, style_path: Path | list[Path], cfg: Config) -> tuple[torch.Tensor, Any, Any]:
    """The final pass's inputs: content at `size` (longer side, aspect kept), style(s) at `style_size` or
    `style_scale` x `size`, colour-controlled (controls.pass_inputs); a blend's styles as a list; alpha."""
    inputs = controls.pass_inputs(controls.load_images(content_path, style_path, cfg), cfg)
    styles = inputs.styles if isinstance(style_path, (list, tuple)) else inputs.styles[0]
    return inputs.content, styles, inputs.alpha


def read_checkpoint(path: Path) -> dict[str, Any] | None:
    """The pair's checkpoint if it loads; an unreadable one is removed (the pair then starts over)."""
    if not path.exists():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        int(ckpt["stylebatch"]["evaluations"])
        return ckpt
    except Exception as e:  # noqa: BLE001 (corrupt file: any unpickling error)
        log.warning("%s: unreadable checkpoint (%s); starting the pair over", path, e)
        path.unlink(missing_ok=True)
        return None


def _trainer(device: torch.device, cfg: Config, callbacks: list[L.Callback], ckpt_paths: list[Path]) -> L.Trainer:
    """One-device Trainer for a pair (or a batch): checkpoints written atomically, one file per
    member, in the checkpoint's own directory (MemberCheckpointIO, see batching.py)."""
    on_gpu = device.type == "cuda"
    return L.Trainer(
        accelerator="gpu" if on_gpu else "cpu",
        devices=[device.index or 0] if on_gpu else 1,
        precision="bf16-mixed" if cfg.precision == "bf16" else "32-true",
        max_epochs=-1,
        max_steps=cfg.steps,  # a safety net: every optimizer step evaluates at least once
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        plugins=[MemberCheckpointIO(ckpt_paths)],
    )


def stylize_pair(
    *,
    content: Path,
    style: Path | list[Path],
    cfg: Config,
    vgg: VGGFeatures,
    device: torch.device,
    ckpt_path: Path,
    output: Path,
    metadata: dict[str, Any],
    hooks: PairHooks | None = None,
) -> PairResult:
    """Optimise one pair to its evaluation budget (resuming from `ckpt_path` if valid), then write
    `output` atomically. On a stop request it checkpoints and returns `interrupted=True`.

    With `scales`, one fit per pass, each starting from the previous pass's result upsampled, with the
    targets recomputed at its size; evaluations count on across passes, and the checkpoint records
    the pass (`scale`), so a resumed pair continues inside the pass it was in."""
    hooks = hooks or PairHooks()
    start = time.perf_counter()
    images = controls.load_images(content, style, cfg)
    ckpt = read_checkpoint(ckpt_path)
    done = int(ckpt["stylebatch"]["evaluations"]) if ckpt is not None else 0
    first = int(ckpt["stylebatch"].get("scale", 0)) if ckpt is not None else 0
    if ckpt is None and cfg.save_every:
        controls.clear_snapshots(ckpt_path.parent)
    curve = CurveWriter(ckpt_path.with_name(CURVE_FILE))  # follows the checkpoint: see curves.py
    if done < cfg.steps:
        curve.restart(at=done)
    interrupted, previous = False, None
    try:
        for k in range(first, len(cfg.scale_sizes)):
            inputs = controls.pass_inputs(images, cfg, k)
            resume = ckpt is not None and k == first
            init = None if resume else controls.initial_image(images, cfg, inputs, previous)
            module = StyleTransferModule(vgg, inputs.content.to(device), [s.to(device) for s in inputs.styles],
                                         cfg, init=init)
            module.scale, module.scale_end, module.evaluations = k, cfg.scale_ends[k], done
            if resume and done >= module.scale_end:
                # A finished pass (a finished pair's kept checkpoint): its image is final, nothing to optimise.
                module.on_load_checkpoint(ckpt)
                module.load_state_dict(ckpt["state_dict"], strict=False)
            else:
                callback = _BudgetCallback(cfg, ckpt_path, hooks, curve)
                extra = [controls.SnapshotCallback(cfg.save_every, ckpt_path.parent, inputs, cfg)] if cfg.save_every else []
                trainer = _trainer(device, cfg, [callback, *extra], [ckpt_path])
                try:
                    trainer.fit(module, ckpt_path=str(ckpt_path) if resume else None)
                except SIGTERMException:
                    # Lightning raises this after our callback has checkpointed on the same SIGTERM.
                    callback.interrupted = True
                if callback.interrupted or module.evaluations < module.scale_end:
                    interrupted = True
                    break
                if cfg.keep_checkpoints and module.evaluations >= cfg.steps:
                    trainer.save_checkpoint(ckpt_path)  # the final float image and optimizer state
            done, previous = module.evaluations, module.result()
    finally:
        curve.close()
    losses = {k: float(v.sum()) for k, v in module.last_losses.items()} or module.restored_losses
    if interrupted or module.evaluations < cfg.steps:
        return PairResult(module.evaluations, losses, time.perf_counter() - start, interrupted=True)

    image = controls.render(module.result(), inputs, cfg)  # post-hoc colour, 8 bits, the content's alpha
    digest = _write_output(image, output, cfg, device, {**metadata, "evaluations": module.evaluations, "losses": losses})
    return PairResult(module.evaluations, losses, time.perf_counter() - start, False, digest)


def _write_output(image: Any, output: Path, cfg: Config, device: torch.device, meta: dict[str, Any]) -> str:
    """Save a finished pair's image atomically with its settings, inputs and versions embedded;
    returns the file's sha256."""
    meta = {**meta, "device": device.type, "output_size": list(image.size), "encoding": cfg.encoding(),
            "versions": versions()}
    if device.type == "cpu":
        meta["cpu_threads"] = torch.get_num_threads()  # CPU float results depend on it (`run --from` uses it)
    text = {"stylebatch": json.dumps(meta, sort_keys=True, default=str)}  # ASCII: json escapes the rest
    data = save_image(image, output, text=text, format=cfg.format, quality=cfg.quality)
    return hashlib.sha256(data).hexdigest()


@dataclass
class Member:
    """One pair of a batch: what stylize_pair takes for it."""

    content: Path
    style: Path | list[Path]
    cfg: Config
    ckpt_path: Path
    output: Path
    metadata: dict[str, Any]
    hooks: PairHooks


class _FanOut:
    """Curve writer and hooks of a batch: hands each member its own image's losses (the callback
    sees the batch's sums)."""

    def __init__(self, members: list[Member], module: StyleTransferModule):
        self.members, self.module = members, module
        self.curves = [CurveWriter(m.ckpt_path.with_name(CURVE_FILE)) for m in members]

    def _mine(self, i: int) -> dict[str, float]:
        return {k: float(v[i]) for k, v in self.module.last_losses.items()}

    def append(self, n: int, losses: dict[str, float]) -> None:
        for i, curve in enumerate(self.curves):
            curve.append(n, self._mine(i))

    def sync(self) -> None:
        for curve in self.curves:
            curve.sync()

    def close(self) -> None:
        for curve in self.curves:
            curve.close()

    def hooks(self) -> PairHooks:
        return PairHooks(
            should_stop=lambda: any(m.hooks.should_stop() for m in self.members),
            on_progress=lambda n, _: [m.hooks.on_progress(n, self._mine(i)) for i, m in enumerate(self.members)],
            on_checkpoint=lambda n: [m.hooks.on_checkpoint(n) for m in self.members],
        )


def stylize_batch(members: list[Member], vgg: VGGFeatures, device: torch.device) -> list[PairResult]:
    """Optimise same-size Adam pairs together (see batching.py): one module, one VGG pass per
    step, per-pair losses summed, per-pair checkpoints; then each output written as stylize_pair
    would. Members resume together from their checkpoints (all at the same count) or start over."""
    start = time.perf_counter()
    cfg = members[0].cfg
    ckpts = [read_checkpoint(m.ckpt_path) for m in members]
    counts = {int(c["stylebatch"]["evaluations"]) if c is not None else -1 for c in ckpts}
    resume = len(counts) == 1 and -1 not in counts
    if not resume:  # a partial or mixed set of checkpoints cannot be joined: the batch starts over
        for m in members:
            m.ckpt_path.unlink(missing_ok=True)
    parts, modules = [], []
    for m in members:
        images = controls.load_images(m.content, m.style, m.cfg)
        inputs = controls.pass_inputs(images, m.cfg, 0)
        init = controls.initial_image(images, m.cfg, inputs, None)
        modules.append(StyleTransferModule(vgg, inputs.content.to(device), [s.to(device) for s in inputs.styles],
                                           m.cfg, init=init))
        parts.append(inputs)
    module = stack(modules)
    fan = _FanOut(members, module)
    done = counts.pop() if resume else 0
    for curve in fan.curves:
        curve.restart(at=done)
    callback = _BudgetCallback(cfg, members[0].ckpt_path, fan.hooks(), fan)
    trainer = _trainer(device, cfg, [callback], [m.ckpt_path for m in members])
    try:
        trainer.fit(module, ckpt_path=str(members[0].ckpt_path) if resume else None)
    except SIGTERMException:
        callback.interrupted = True
    finally:
        fan.close()
    seconds = time.perf_counter() - start
    if callback.interrupted or module.evaluations < cfg.steps:
        return [PairResult(module.evaluations, fan._mine(i), seconds, interrupted=True) for i in range(len(members))]
    if cfg.keep_checkpoints:
        trainer.save_checkpoint(members[0].ckpt_path)  # one final file per member
    results = []
    batch = [Path(m.output).stem for m in members]
    images = module.result()
    for i, (m, inputs) in enumerate(zip(members, parts)):
        losses = fan._mine(i)
        image = controls.render(images[i : i + 1], inputs, m.cfg)
        meta = {**m.metadata, "evaluations": module.evaluations, "losses": losses, "batch": batch}
        results.append(PairResult(module.evaluations, losses, seconds, False,
                                  _write_output(image, m.output, m.cfg, device, meta)))
    return results


def versions() -> dict[str, str]:
    return {
        "stylebatch": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "lightning": L.__version__,
        "pillow": PIL.__version__,
        "python": platform.python_version(),
    }
