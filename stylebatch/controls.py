"""Style and colour controls of one pair: what each coarse-to-fine pass optimises against.

    load_images     the files, decoded once: content (+ alpha), one or more styles, an init image
    pass_inputs     one pass's tensors: content and styles at that pass's size, colour-controlled
    initial_image   where a pass starts: the previous pass's result upsampled, style_stats noise,
                    an init image, or None (the module's own `content` / `noise`)
    blended_grams   the style targets: Gram matrices of each style, blended with `style_blend`
    render          the output image of a result: post-hoc colour, 8 bits, the content's alpha
    SnapshotCallback  `save_every`: iter_<n>.png next to the pair's checkpoint

Sizes: pass k has the longer side `cfg.scale_sizes[k]` (the last is `size`), the content's aspect
kept; each style's longer side is `style_size`, or `style_scale` times the pass's longer side.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from PIL import Image

from stylebatch import color
from stylebatch.config import INIT_MODES, Config
from stylebatch.images import fit_size, load_image, resize, save_image, to_pil, to_tensor
from stylebatch.losses import gram_matrix

SNAPSHOT_GLOB = "iter_*.png"


def style_list(style: Any) -> list:
    """A pair's style (one path or tensor) or blend (a list of them) as a list."""
    return list(style) if isinstance(style, (list, tuple)) else [style]


def blend_weights(cfg: Config, n: int) -> list[float]:
    if cfg.style_blend is None:
        return [1.0 / n] * n
    if len(cfg.style_blend) != n:
        raise ValueError(f"style_blend has {len(cfg.style_blend)} weights for {n} style(s)")
    return list(cfg.style_blend)


@torch.no_grad()
def blended_grams(vgg: Any, style: torch.Tensor | list[torch.Tensor], cfg: Config) -> dict[str, torch.Tensor]:
    """{layer: sum_j w_j G_j}: each style's Gram matrices (one VGG pass per style), blended with the
    normalised `style_blend` weights (JJ, NSPT and crowsonkb blend the targets the same way). A
    single style's Grams are returned unscaled, so weights [1, 0] give exactly the first style's."""
    styles = style_list(style)
    weights = blend_weights(cfg, len(styles))
    out: dict[str, torch.Tensor] = {}
    for w, s in zip(weights, styles):
        feats = vgg(s, list(cfg.style_layers), pooling=cfg.pooling)
        for name in cfg.style_layers:
            g = gram_matrix(feats[name])
            if len(styles) > 1:
                g = g * w
            out[name] = g if name not in out else out[name] + g
    return out


@dataclass
class PairImages:
    content: Image.Image  # RGB
    alpha: Image.Image | None
    styles: list[Image.Image]
    init: Image.Image | None  # `init: <path>`


def load_images(content: Path, style: Path | list[Path], cfg: Config) -> PairImages:
    loaded = load_image(content, cfg.max_pixels)
    styles = [load_image(p, cfg.max_pixels).rgb for p in style_list(style)]
    init = load_image(Path(cfg.init), cfg.max_pixels).rgb if cfg.init not in INIT_MODES else None
    return PairImages(loaded.rgb, loaded.alpha, styles, init)


@dataclass
class PassInputs:
    content: torch.Tensor  # what the network sees (grey in `luminance` mode), (1, 3, H, W)
    styles: list[torch.Tensor]  # idem, each (1, 3, h, w)
    colour: torch.Tensor  # the content in colour at this pass's size: where Cb/Cr come from
    alpha: Image.Image | None  # the content's alpha at this pass's size
    wh: tuple[int, int]


def pass_inputs(images: PairImages, cfg: Config, k: int = -1) -> PassInputs:
    """The tensors of pass k (default: the final pass at `size`), colour-controlled."""
    side = cfg.scale_sizes[k]
    wh = fit_size(*images.content.size, side)
    c = to_tensor(resize(images.content, wh))
    s_side = cfg.style_side(side)
    styles = [to_tensor(resize(s, fit_size(*s.size, s_side))) for s in images.styles]
    seen = c
    if cfg.preserve_color == "histogram":  # Gatys 2017 §5.2: the style in the content's colours
        styles = [color.match_color(s, c) for s in styles]
    elif cfg.preserve_color == "luminance":  # §5.1: luminance only, style luminance matched to content's
        cy = color.luminance(c)
        seen = color.grey(cy)
        styles = [color.grey(color.match_luminance(color.luminance(s), cy)) for s in styles]
    alpha = resize(images.alpha, wh) if images.alpha is not None else None
    return PassInputs(seen, styles, c, alpha, wh)


def style_stats_noise(styles: list[torch.Tensor], cfg: Config, shape: torch.Size) -> torch.Tensor:
    """Gaussian noise with the (blended) styles' per-channel mean and std, seeded, clamped to [0, 1]
    (crowsonkb's `--init style_stats`). A blend's moments are the mixture's."""
    weights = blend_weights(cfg, len(styles))
    mean = sum(w * s.mean((0, 2, 3)) for w, s in zip(weights, styles))
    second = sum(w * s.pow(2).mean((0, 2, 3)) for w, s in zip(weights, styles))
    std = (second - mean.pow(2)).clamp_min(0).sqrt()
    gen = torch.Generator().manual_seed(cfg.seed)
    noise = torch.randn(shape, generator=gen)
    return (noise * std.view(1, 3, 1, 1) + mean.view(1, 3, 1, 1)).clamp(0, 1)


def upsample(image: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """A pass's result to the next pass's size (bicubic), clamped to [0, 1]."""
    return torch.nn.functional.interpolate(image, size=hw, mode="bicubic", align_corners=False).clamp(0, 1)


def initial_image(images: PairImages, cfg: Config, inputs: PassInputs,
                  previous: torch.Tensor | None = None) -> torch.Tensor | None:
    """Where a pass starts; None leaves it to the module (`content` or `noise`)."""
    hw = tuple(inputs.content.shape[-2:])
    if previous is not None:
        return upsample(previous.detach().to("cpu", torch.float32), hw)
    if cfg.init == "style_stats":
        return style_stats_noise(inputs.styles, cfg, inputs.content.shape)
    if images.init is not None:
        x = to_tensor(resize(images.init, inputs.wh))
        return color.grey(color.luminance(x)) if cfg.preserve_color == "luminance" else x
    return None


def finish(image: torch.Tensor, inputs: PassInputs, cfg: Config) -> torch.Tensor:
    """The output's pixels from a result: the content's Cb/Cr put back for `luminance` and `post`."""
    if cfg.preserve_color in ("luminance", "post"):
        return color.merge_chroma(image.detach(), inputs.colour.to(image.device))
    return image


def render(image: torch.Tensor, inputs: PassInputs, cfg: Config) -> Image.Image:
    out = to_pil(finish(image, inputs, cfg))
    if inputs.alpha is not None:
        out.putalpha(inputs.alpha)  # a content image with transparency keeps it
    return out


class SnapshotCallback(L.Callback):
    """`save_every`: the pass's current result, rendered as the output would be, to
    `<directory>/iter_<n>.png` at the first optimizer step at or past each multiple of N evaluations
    (n is the evaluation count then). Never the final output: that lives in output_dir."""

    def __init__(self, every: int, directory: Path, inputs: PassInputs, cfg: Config):
        self.every, self.directory, self.inputs, self.cfg = every, directory, inputs, cfg
        self.last = 0

    def on_train_start(self, trainer: L.Trainer, module: Any) -> None:
        self.last = module.evaluations

    def on_train_batch_end(self, trainer: L.Trainer, module: Any, *args: Any) -> None:
        n = module.evaluations
        if n // self.every > self.last // self.every:
            self.directory.mkdir(parents=True, exist_ok=True)
            save_image(render(module.result(), self.inputs, self.cfg), self.directory / f"iter_{n}.png")
        self.last = n


def clear_snapshots(directory: Path) -> None:
    """A pair starting over drops the snapshots of its previous attempt."""
    for old in directory.glob(SNAPSHOT_GLOB) if directory.is_dir() else []:
        old.unlink(missing_ok=True)
