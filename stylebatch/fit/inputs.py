"""A pair's inputs, pass by pass, and its output picture: what each coarse-to-fine pass optimises
against, where it starts, and how a result becomes the saved image.

    load_images     the files, decoded once: content (+ alpha), one or more styles, an init image
    pass_inputs     one pass's tensors: content and styles at that pass's size, colour-controlled
    initial_image   where a pass starts: the previous pass's result upsampled, the content, seeded
                    noise, style_stats noise, or an init image
    render          the snapshot image of a result: post-hoc colour, 8 bits, the content's alpha
    output_pixels   the output's float pixels of a result (post-hoc colour), its alpha and ICC profile

Sizes: pass k has the longer side `cfg.scale_sizes[k]` (the last is `size`), the content's aspect
kept; each style's longer side is `style_size`, or `style_scale` times the pass's longer side.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stylebatch.fit import color
from stylebatch.fit.pixels import to_pil, to_tensor
from stylebatch.fit.targets import blend_weights
from stylebatch.images import fit_size, load_image, resize
from stylebatch.job.config import INIT_MODES, Config


@dataclass
class PairImages:
    content: Image.Image  # RGB
    alpha: Image.Image | None
    styles: list[Image.Image]
    init: Image.Image | None  # `init: <path>`
    icc: bytes | None = None  # the content's RGB ICC profile: the output is converted into it and carries it


def load_images(content: Path, styles: list[Path], cfg: Config) -> PairImages:
    loaded = load_image(content, cfg.max_pixels)
    images = [load_image(p, cfg.max_pixels).rgb for p in styles]
    init = load_image(Path(cfg.init), cfg.max_pixels).rgb if cfg.init not in INIT_MODES else None
    return PairImages(loaded.rgb, loaded.alpha, images, init, loaded.icc)


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


def start_image(content: torch.Tensor, styles: list[torch.Tensor], cfg: Config) -> torch.Tensor:
    """`init` content, noise or style_stats for a content tensor (1, 3, H, W): the content as the
    network sees it, seeded white noise (as in the paper), or style_stats noise."""
    if cfg.init == "noise":  # seeded, so a pair is reproducible
        return torch.rand(content.shape, generator=torch.Generator().manual_seed(cfg.seed)).to(content.device)
    if cfg.init == "style_stats":
        return style_stats_noise([s.cpu() for s in styles], cfg, content.shape).to(content.device)
    return content.clone()


def initial_image(
    images: PairImages, cfg: Config, inputs: PassInputs, previous: torch.Tensor | None = None
) -> torch.Tensor:
    """Where a pass starts, (1, 3, H, W) on the CPU: the previous pass's result upsampled, else an
    init image, else `start_image`."""
    if previous is not None:
        return upsample(previous.detach().to("cpu", torch.float32), tuple(inputs.content.shape[-2:]))
    if images.init is not None:
        x = to_tensor(resize(images.init, inputs.wh))
        return color.grey(color.luminance(x)) if cfg.preserve_color == "luminance" else x
    return start_image(inputs.content, inputs.styles, cfg)


def finish(image: torch.Tensor, inputs: PassInputs, cfg: Config) -> torch.Tensor:
    """The output's pixels from a result: the content's Cb/Cr put back for `luminance` and `post`."""
    if cfg.preserve_color in ("luminance", "post"):
        return color.merge_chroma(image.detach(), inputs.colour.to(image.device))
    return image


def output_pixels(image: torch.Tensor, inputs: PassInputs, cfg: Config) -> np.ndarray:
    """The output's sRGB pixels (H, W, 3), float32 in [0, 1], from a (1, 3, H, W) result: what
    `images.save_output` encodes at 8 or 16 bits (never rounded to 8 bits on the way)."""
    t = finish(image, inputs, cfg).detach().to("cpu", torch.float32).squeeze(0).clamp(0, 1)
    return t.permute(1, 2, 0).contiguous().numpy()


def render(image: torch.Tensor, inputs: PassInputs, cfg: Config) -> Image.Image:
    out = to_pil(finish(image, inputs, cfg))
    if inputs.alpha is not None:
        out.putalpha(inputs.alpha)  # a content image with transparency keeps it
    return out
