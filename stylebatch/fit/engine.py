"""The one fit path: `stylize(members)` optimises a batch of pairs (a single pair is a batch of one)
to their evaluation budget and writes each member's output atomically.

Per coarse-to-fine pass: each member's inputs, targets and starting image, joined along the batch
into one explicitly built `StyleTransferModule`; one one-device Lightning `Trainer.fit`, resumed
from the members' checkpoint slices when they stand at the same place. Per member: its curve,
snapshots, hooks, checkpoint file and output. Members must agree on the network pass (plan.py).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from stylebatch.atomic import fault_point
from stylebatch.errors import WeightsError
from stylebatch.fit import inputs as pair_inputs
from stylebatch.fit.checkpoint import MemberCheckpointIO, join_checkpoints, position, read_checkpoint
from stylebatch.fit.module import LBFGS_MAX_ITER, OptimizerSpec, StyleTransferModule
from stylebatch.fit.provenance import write_output
from stylebatch.fit.targets import LossTargets, compute_targets
from stylebatch.fit.vgg import VGGFeatures
from stylebatch.images import fit_size, save_image
from stylebatch.job.config import Config
from stylebatch.jobdir.curves import CURVE_FILE, CurveWriter

log = logging.getLogger(__name__)
SNAPSHOT_GLOB = "iter_*.png"
STOP_POLL_S = 0.1  # how often a fit asks whether to stop: well under any step a stop waits for anyway

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
    """How the runner watches and steers one member's fit."""

    should_stop: Callable[[], bool] = lambda: False  # a signal arrived: checkpoint and stop
    on_progress: Callable[[int, dict[str, float]], None] = lambda n, losses: None  # at each log interval
    on_checkpoint: Callable[[int], None] = lambda n: None  # after each checkpoint is safely on disk
    check_job: Callable[[], None] = lambda: None  # raises when the job is gone (--fresh): before every write


NOT_READ = "not read"  # a Member's checkpoint not read yet: the engine reads and checks it


@dataclass
class Member:
    """One pair of a batch: its files, settings, checkpoint, output, provenance and hooks."""

    content: Path
    styles: list[Path]  # one style, or a blend's several
    cfg: Config
    ckpt_path: Path
    output: Path
    metadata: dict[str, Any]
    hooks: PairHooks
    # Its checkpoint as the runner already read and checked it (vet_checkpoint), or NOT_READ.
    checkpoint: Any = NOT_READ

    @property
    def pair_id(self) -> str:
        return str(self.metadata.get("id", ""))


def shape_at(content_size: tuple[int, int], cfg: Config) -> Callable[[int], tuple[int, int] | None]:
    """(height, width) of a pair's image in pass k (as pass_inputs sizes it); no pass k: no size."""

    def at(k: int) -> tuple[int, int] | None:
        if not 0 <= k < len(cfg.scale_sizes):
            return (-1, -1)  # no such pass: matches no checkpoint
        w, h = fit_size(*content_size, cfg.scale_sizes[k])
        return h, w

    return at


@dataclass
class PairResult:
    evaluations: int
    losses: dict[str, float]  # this member's own
    seconds: float  # the batch's wall time (shared by its members)
    interrupted: bool
    output_sha256: str | None = None
    batch_size: int = 1


def optimizer_spec(cfg: Config) -> OptimizerSpec:
    line_search = None if cfg.lbfgs_line_search == "none" else cfg.lbfgs_line_search
    return OptimizerSpec(cfg.optimizer, cfg.learning_rate, cfg.lbfgs_history, line_search)


def build_module(
    vgg: VGGFeatures,
    parts: list[tuple[torch.Tensor, list[torch.Tensor], Config, torch.Tensor | None]],
    *,
    scale: int = 0,
    evaluations: int = 0,
    adam_state: dict[str, Any] | None = None,
) -> StyleTransferModule:
    """One module for a batch at pass `scale`. Each part is one member: its content (1, 3, H, W) and
    style images as the network sees them, its config, and its starting image (None: the content),
    all on the device. The first member's config gives what members share (plan.batch_key)."""
    cfg = parts[0][2]
    tile = cfg.tile if isinstance(cfg.tile, int) else None  # `auto` is resolved when the job is loaded (autosize.py)
    targets = LossTargets.cat([compute_targets(vgg, content, styles, c, tile) for content, styles, c, _ in parts])
    init = torch.cat([content if i is None else i for content, _, _, i in parts])
    return StyleTransferModule(
        vgg,
        init,
        targets,
        optimizer=optimizer_spec(cfg),
        pooling=cfg.pooling,
        ema_decay=cfg.ema_decay,
        evaluations=evaluations,
        scale=scale,
        scale_end=cfg.scale_ends[scale],
        tile=tile,
        tile_seed=cfg.seed,
        adam_state=adam_state,
    )


def module_for(
    vgg: VGGFeatures,
    content: torch.Tensor,
    style: torch.Tensor | list[torch.Tensor],
    cfg: Config,
    init: torch.Tensor | None = None,
) -> StyleTransferModule:
    """The module `stylize` would build for tensors (scripts, tests): content (B, 3, H, W) with one
    member per image and style (B, 3, h, w), one per member, or a list of (1, 3, h, w) tensors
    blended by a single member; `init` None: `inputs.start_image` (cfg.init)."""
    parts = []
    for i in range(content.shape[0]):
        c = content[i : i + 1]
        styles = list(style) if isinstance(style, (list, tuple)) else [style[i : i + 1]]
        start = init[i : i + 1] if init is not None else pair_inputs.start_image(c, styles, cfg)
        parts.append((c, styles, cfg, start))
    return build_module(vgg, parts)


class _BudgetCallback(L.Callback):
    """Counts the budget in loss evaluations, checkpoints every `checkpoint_every` evaluations (at
    the first optimizer-step boundary past it), watches for NaN, logs each member's own losses (to
    its curve and hooks) each time the count passes a multiple of `log_every`, and stops on request.

    Logging at multiples, not every `log_every` since the last log, keeps the log points of a
    resumed fit where the uninterrupted one had them, so the two loss curves are the same."""

    def __init__(self, cfg: Config, members: list[Member], curves: list[CurveWriter]) -> None:
        self.cfg, self.members, self.curves = cfg, members, curves
        self.last_saved = self.last_logged = 0
        self.last_poll = -math.inf
        self.interrupted = False

    def on_train_start(self, trainer: L.Trainer, module: StyleTransferModule) -> None:
        self.last_saved = self.last_logged = module.evaluations
        self.last_poll = -math.inf

    def _stop_requested(self, trainer: L.Trainer) -> bool:
        """The members' stop hooks (a signal flag and a stop file's stat each), asked at most every
        STOP_POLL_S seconds: per step the cost stays one clock read whatever the batch size.

        A SIGTERM is answered at once, never after the poll interval: Lightning raises
        SIGTERMException right after this step's callbacks, so a checkpoint not written now would
        lose every evaluation since the last periodic one."""
        if getattr(trainer, "received_sigterm", False):
            return True
        now = time.monotonic()
        if now - self.last_poll < STOP_POLL_S:
            return False
        self.last_poll = now
        return any(m.hooks.should_stop() for m in self.members)

    def on_train_batch_start(self, trainer: L.Trainer, module: StyleTransferModule, batch: Any, batch_idx: int) -> None:
        if self.cfg.optimizer == "lbfgs":
            # Never plan more evaluations than the pass has left (the line search may still finish
            # its bracket, so the run can end a few evaluations past it; the count is exact).
            group = trainer.optimizers[0].param_groups[0]
            group["max_eval"] = max(1, min(LBFGS_MAX_ITER * 5 // 4, module.scale_end - module.evaluations))

    def _check_finite(self, module: StyleTransferModule) -> list[dict[str, float]]:
        losses = [module.member_losses(i) for i in range(len(self.members))]
        if not all(math.isfinite(v) for m in losses for v in m.values()) or not torch.isfinite(module.target).all():
            hint = "try a lower lr" + ("" if self.cfg.optimizer == "lbfgs" else ", or optimizer: lbfgs")
            raise NonFiniteLossError(f"loss became non-finite after {module.evaluations} evaluations; {hint}")
        return losses

    def _save(self, trainer: L.Trainer, module: StyleTransferModule) -> None:
        self._check_finite(module)  # a NaN state is never saved
        for curve in self.curves:
            curve.sync()  # a checkpoint on disk always has its curve rows on disk
        trainer.save_checkpoint(self.members[0].ckpt_path)  # MemberCheckpointIO: one file per member
        fault_point("after_checkpoint")
        self.last_saved = module.evaluations
        for m in self.members:
            m.hooks.on_checkpoint(module.evaluations)

    def on_exception(self, trainer: L.Trainer, module: StyleTransferModule, exception: BaseException) -> None:
        # A SIGTERM that lands after this step's stop check: Lightning raises before the next
        # step, so checkpoint here (before its teardown) the step the record will report.
        if isinstance(exception, SIGTERMException) and module.evaluations > self.last_saved:
            self._save(trainer, module)
            self.interrupted = True

    def on_train_batch_end(self, trainer: L.Trainer, module: StyleTransferModule, *args: Any) -> None:
        for m in self.members:
            m.hooks.check_job()  # before any curve row or checkpoint is written
        n, every = module.evaluations, self.cfg.log_every
        if n // every > self.last_logged // every or n >= module.scale_end:
            for m, curve, losses in zip(self.members, self.curves, self._check_finite(module)):
                curve.append(n, losses)
                m.hooks.on_progress(n, losses)
            self.last_logged = n
        if n >= module.scale_end:
            trainer.should_stop = True
        elif self._stop_requested(trainer):
            self._save(trainer, module)
            self.interrupted = True
            trainer.should_stop = True
        elif n - self.last_saved >= self.cfg.checkpoint_every:
            self._save(trainer, module)


class _SnapshotCallback(L.Callback):
    """`save_every`: member i's current result, rendered as its output would be, to
    `<its checkpoint's directory>/iter_<n>.png` at the first optimizer step at or past each multiple
    of its N evaluations (n is the count then). Never the final output: that lives in output_dir."""

    def __init__(self, i: int, member: Member, inputs: pair_inputs.PassInputs) -> None:
        self.i, self.every, self.inputs, self.cfg = i, member.cfg.save_every, inputs, member.cfg
        self.directory = member.ckpt_path.parent
        self.last = 0

    def on_train_start(self, trainer: L.Trainer, module: StyleTransferModule) -> None:
        self.last = module.evaluations

    def on_train_batch_end(self, trainer: L.Trainer, module: StyleTransferModule, *args: Any) -> None:
        n = module.evaluations
        if n // self.every > self.last // self.every:
            self.directory.mkdir(parents=True, exist_ok=True)
            image = pair_inputs.render(module.result()[self.i : self.i + 1], self.inputs, self.cfg)
            save_image(image, self.directory / f"iter_{n}.png")
        self.last = n


def _trainer(
    device: torch.device,
    cfg: Config,
    callbacks: list[L.Callback],
    members: list[Member],
    resumed: dict[str, Any] | None = None,
) -> L.Trainer:
    """One-device Trainer for a batch: checkpoints written atomically, one file per member, each
    stamped with its pair's id; `resumed`: the joined checkpoint already read (Lightning restores
    from it instead of reading the files again)."""
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
        plugins=[MemberCheckpointIO([m.ckpt_path for m in members], [m.pair_id for m in members], resumed)],
    )


def _blame_start(vgg: VGGFeatures, module: StyleTransferModule, parts: list[tuple]) -> None:
    """A loss that became NaN or infinite is a divergence (a lower lr helps) only if the loss of the
    content images themselves (in [0, 1], where the optimisation starts by default) is finite. If it
    is not, the network overflows on any picture (weights scaled by 1e30: every pair fails alike)
    or the loss weights are too large for float32: say that once, without the lr hint."""
    with torch.no_grad():
        losses = module.losses(torch.cat([content for content, *_ in parts]))
    terms = [v for k, v in losses.items() if k != "total"]
    if not all(bool(torch.isfinite(v).all()) for v in terms):
        raise WeightsError(
            f"{getattr(vgg, 'source', 'the weights')}: the loss of the content image itself is not finite (the "
            "network's features or their statistics overflow float32): the weights are the problem (wrongly "
            "scaled?), not lr or the optimizer"
        ) from None
    if not bool(torch.isfinite(losses["total"]).all()):
        raise NonFiniteLossError(
            "the weighted loss of the content image itself overflows float32: lower content_weight, "
            "style_weight or tv_weight (only their ratios matter)"
        ) from None


def _resume_point(members: list[Member], images: list[Any]) -> tuple[dict[str, Any] | None, int, int]:
    """(joined checkpoint, pass, evaluations) the batch resumes from, or (None, 0, 0). Members
    resume together only when every one has a checkpoint of its own (its pair's id, its image's
    shape, its checksum) at the same pass and count; otherwise the batch starts over (its partial
    checkpoints and snapshots are dropped)."""
    ckpts = [
        m.checkpoint
        if m.checkpoint is not NOT_READ
        else read_checkpoint(m.ckpt_path, m.pair_id, shape_at(im.content.size, m.cfg))
        for m, im in zip(members, images)
    ]
    positions = {position(c) for c in ckpts}
    if len(positions) == 1 and None not in positions:
        ((scale, done),) = positions
        return join_checkpoints(ckpts), scale, done
    for m in members:
        m.ckpt_path.unlink(missing_ok=True)
        for old in m.ckpt_path.parent.glob(SNAPSHOT_GLOB) if m.ckpt_path.parent.is_dir() else []:
            old.unlink(missing_ok=True)
    return None, 0, 0


def stylize(members: list[Member], vgg: VGGFeatures, device: torch.device) -> list[PairResult]:
    """Optimise the batch to its budget (resuming where its checkpoints stand), then write each
    member's output. On a stop request it checkpoints and returns results with `interrupted=True`.

    With `scales`, one fit per pass, each starting from the previous pass's result upsampled, with
    the targets recomputed at its size; evaluations count on across passes, and the checkpoints
    record the pass, so a resumed batch continues inside the pass it was in."""
    start = time.perf_counter()
    cfg, n = members[0].cfg, len(members)
    images = [pair_inputs.load_images(m.content, m.styles, m.cfg) for m in members]
    ckpt, first, done = _resume_point(members, images)
    curves = [CurveWriter(m.ckpt_path.with_name(CURVE_FILE)) for m in members]  # follows the checkpoint
    if done < cfg.steps:
        for curve in curves:
            curve.restart(at=done)
    interrupted, previous, carried = False, None, None
    try:
        for k in range(first, len(cfg.scale_sizes)):
            passes = [pair_inputs.pass_inputs(im, m.cfg, k) for im, m in zip(images, members)]
            inits = [
                pair_inputs.initial_image(im, m.cfg, p, None if previous is None else previous[i : i + 1])
                for i, (im, m, p) in enumerate(zip(images, members, passes))
            ]
            parts = [
                (p.content.to(device), [s.to(device) for s in p.styles], m.cfg, init.to(device))
                for p, m, init in zip(passes, members, inits)
            ]
            module = build_module(vgg, parts, scale=k, evaluations=done, adam_state=carried)
            resume = ckpt is not None and k == first
            if resume and done >= module.scale_end:
                # A finished pass (finished pairs' kept checkpoints): its images are final, nothing to optimise.
                module.on_load_checkpoint(ckpt)
                module.load_state_dict(ckpt["state_dict"], strict=False)
                carried = ckpt["optimizer_states"][0] if cfg.carry_adam and cfg.optimizer == "adam" else None
            else:
                callback = _BudgetCallback(cfg, members, curves)
                snapshots = [
                    _SnapshotCallback(i, m, p) for i, (m, p) in enumerate(zip(members, passes)) if m.cfg.save_every
                ]
                trainer = _trainer(device, cfg, [callback, *snapshots], members, ckpt if resume else None)
                try:
                    trainer.fit(module, ckpt_path=str(members[0].ckpt_path) if resume else None)
                except NonFiniteLossError:
                    _blame_start(vgg, module, parts)  # raises when no learning rate could have helped
                    raise
                except SIGTERMException:
                    # Lightning raises this after our callback has checkpointed on the same SIGTERM.
                    callback.interrupted = True
                if callback.interrupted or module.evaluations < module.scale_end:
                    interrupted = True
                    break
                if module.evaluations >= cfg.steps and any(m.cfg.keep_checkpoints for m in members):
                    trainer.save_checkpoint(members[0].ckpt_path)  # the final float images and optimizer state
                if cfg.carry_adam and cfg.optimizer == "adam":
                    carried = trainer.optimizers[0].state_dict()
            done, previous = module.evaluations, module.result()
    finally:
        for curve in curves:
            curve.close()
    seconds = time.perf_counter() - start
    losses = [module.member_losses(i) for i in range(n)]
    if interrupted or module.evaluations < cfg.steps:
        return [PairResult(module.evaluations, losses[i], seconds, True, batch_size=n) for i in range(n)]
    for m in members:
        m.hooks.check_job()  # never an output into a job started afresh meanwhile
    results, names = [], [Path(m.output).stem for m in members]
    final = module.result()
    for i, (m, p) in enumerate(zip(members, passes)):
        pixels = pair_inputs.output_pixels(final[i : i + 1], p, m.cfg)  # post-hoc colour, float
        meta = {
            **m.metadata,
            "evaluations": module.evaluations,
            "losses": losses[i],
            **({"batch": names} if n > 1 else {}),
        }
        results.append(
            PairResult(
                module.evaluations,
                losses[i],
                seconds,
                False,
                write_output(pixels, p.alpha, images[i].icc, m.output, m.cfg, device, meta),
                batch_size=n,
            )
        )
    return results
