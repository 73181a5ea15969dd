"""Exact tiling: the whole image's loss and gradient, computed tile by tile, so an output larger
than the device's memory keeps the real objective (global Gram matrices, not per-tile ones).

Every tiled tool we know of (Neural-Tile, albarji's docker, crowsonkb's Caffe tool) matches each
tile's own Grams to the style, which forces the full style statistics into every tile and lets
independent tiles drift apart. Here a tile only bounds memory:

    pass 1 (no grad)  per tile: the VGG features of the tile plus a halo; each style layer's Gram
                      summed over the tile interiors (divided by the whole layer's H*W), the
                      content error summed over the interiors → the exact losses and, per layer,
                      dL/dG = w·2(G − T)/C²
    pass 2 (backward) per tile again, with grad: a surrogate Σ_l <dL/dG_l, G_l(tile)> + content
                      (tile) whose gradient is exactly the untiled one's share from that tile;
                      the crops' gradients are added into the image's

Exact because (a) the halo is at least the receptive-field extent of the deepest layer, so every
interior feature sees only real pixels or the image's own zero padding (tiles at the border are
cropped at the border, not padded); (b) tile edges lie on multiples of `grid_unit` (16 for conv5_x)
so every pooling window of a tile is one of the whole image's. `TiledLoss` is an autograd Function:
the module's training step returns an ordinary loss tensor and its backward does pass 2, so L-BFGS
(closure re-evaluations) and Adam work unchanged.

The grid's origin moves by a seeded offset (a multiple of the unit) at every evaluation, so the
rounding pattern of tile edges never stays in one place (no seam can settle); the seed is the
pair's and the evaluation count's, so a resumed run sees the same offsets as an uninterrupted one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import random
from dataclasses import dataclass

import torch
from torch.autograd.function import FunctionCtx

from stylebatch.fit.losses import gram_matrix
from stylebatch.fit.vgg import VGGFeatures
from stylebatch.geometry import edges, halo, level


@dataclass(frozen=True)
class Tile:
    y0: int  # interior, in image pixels
    y1: int
    x0: int
    x1: int
    cy0: int  # the crop computed: the interior plus the halo, clipped at the image's border
    cy1: int
    cx0: int
    cx1: int

    def interior(self, lvl: int) -> tuple[slice, slice]:
        """The interior as positions of the crop's features at pooling level `lvl` (floors match
        the whole image's: edges are multiples of 2**lvl or the image's border)."""
        return (
            slice(self.y0 // 2**lvl - self.cy0 // 2**lvl, self.y1 // 2**lvl - self.cy0 // 2**lvl),
            slice(self.x0 // 2**lvl - self.cx0 // 2**lvl, self.x1 // 2**lvl - self.cx0 // 2**lvl),
        )

    def full(self, lvl: int) -> tuple[slice, slice]:
        """The interior as positions of the whole image's features at level `lvl`."""
        return slice(self.y0 // 2**lvl, self.y1 // 2**lvl), slice(self.x0 // 2**lvl, self.x1 // 2**lvl)


def grid(h: int, w: int, tile: int, margin: int, offset: tuple[int, int] = (0, 0)) -> list[Tile]:
    ys, xs = edges(h, tile, offset[0]), edges(w, tile, offset[1])
    return [
        Tile(y0, y1, x0, x1, max(0, y0 - margin), min(h, y1 + margin), max(0, x0 - margin), min(w, x1 + margin))
        for y0, y1 in zip(ys, ys[1:])
        for x0, x1 in zip(xs, xs[1:])
    ]


def offset_for(seed: int, evaluation: int, tile: int, unit: int) -> tuple[int, int]:
    """The grid's origin at one evaluation: a multiple of `unit` in [0, tile), the same for the same
    (pair seed, evaluation), whatever ran before (a string seed: Python's Random hashes it stably)."""
    rng = random.Random(f"stylebatch-tiles:{seed}:{evaluation}")
    steps = max(1, tile // unit)
    return rng.randrange(steps) * unit, rng.randrange(steps) * unit


def _load_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return None


_MALLOC_TRIM = _load_trim()


def release(device: torch.device) -> None:
    """Give the heap's free memory back to the system after a tile (CPU, glibc). Crops of varying
    sizes leave freed maps of a few MiB scattered in the heap, which glibc keeps: measured at
    1024 px with tiles of 512, the resident set then grew past the untiled run's although the
    allocator's own peak was a third lower."""
    if device.type == "cpu" and _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


@dataclass
class TiledObjective:
    """What TiledLoss needs besides the image: the network, the layers and the targets."""

    vgg: VGGFeatures
    content_layer: str
    style_layers: list[str]
    pooling: str
    content_target: torch.Tensor  # (B, C, h, w) at the content layer, the whole image's
    content_scale: torch.Tensor  # (B,)
    grams: dict[str, torch.Tensor]  # (B, C, C) targets
    weights: dict[str, torch.Tensor]  # (B,)
    tiles: list[Tile]

    @property
    def layers(self) -> list[str]:
        return [self.content_layer, *self.style_layers]


def _tile_features(obj: TiledObjective, crop: torch.Tensor) -> dict[str, torch.Tensor]:
    feats = obj.vgg(crop, obj.layers, pooling=obj.pooling)
    with torch.autocast(device_type=crop.device.type, enabled=False):  # Grams and losses in fp32
        return {k: v.float() for k, v in feats.items()}


def _layer_shapes(obj: TiledObjective, h: int, w: int) -> dict[str, tuple[int, int]]:
    return {name: (h // 2 ** level(name), w // 2 ** level(name)) for name in obj.layers}


def _interior(feats: torch.Tensor, t: Tile, lvl: int) -> torch.Tensor:
    ys, xs = t.interior(lvl)
    return feats[:, :, ys, xs]


def _partial_gram(x: torch.Tensor, whole: int) -> torch.Tensor:
    """Σ over this tile's positions of f·fᵀ, divided by the whole layer's positions (B, C, C)."""
    n = x.shape[-1] * x.shape[-2]
    return gram_matrix(x) * (n / whole)


def _content_error(obj: TiledObjective, x: torch.Tensor, t: Tile) -> torch.Tensor:
    """Σ over the interior of (F − T)², divided by the whole map's size, times the scale → (B,)."""
    lvl = level(obj.content_layer)
    ys, xs = t.full(lvl)
    n = obj.content_target[0].numel()
    return (x - obj.content_target[:, :, ys, xs]).pow(2).flatten(1).sum(1) * (obj.content_scale / n)


class TiledLoss(torch.autograd.Function):
    """(content (B,), style (B,)) of an image (B, 3, H, W), equal to the untiled losses (module.py),
    with a tiled backward. Inputs: the image and a TiledObjective (its tiles fixed for this call)."""

    @staticmethod
    def forward(ctx: FunctionCtx, image: torch.Tensor, obj: TiledObjective) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = image.shape[-2:]
        shapes = _layer_shapes(obj, h, w)
        b = image.shape[0]
        content = torch.zeros(b, device=image.device)
        grams = {name: 0 for name in obj.style_layers}
        with torch.no_grad():
            for t in obj.tiles:  # pass 1
                feats = _tile_features(obj, image[:, :, t.cy0 : t.cy1, t.cx0 : t.cx1])
                x = _interior(feats[obj.content_layer], t, level(obj.content_layer))
                if x.numel():
                    content += _content_error(obj, x, t)
                for name in obj.style_layers:
                    x = _interior(feats[name], t, level(name))
                    if x.numel():
                        grams[name] = grams[name] + _partial_gram(x, shapes[name][0] * shapes[name][1])
                del feats
                release(image.device)
            style = torch.zeros(b, device=image.device)
            slopes = {}
            for name in obj.style_layers:
                diff = grams[name] - obj.grams[name]  # (B, C, C)
                c2 = diff.shape[-1] * diff.shape[-2]
                style += obj.weights[name] * diff.pow(2).flatten(1).mean(1)
                slopes[name] = diff * (2 * obj.weights[name] / c2).view(-1, 1, 1)  # dstyle/dG
        ctx.save_for_backward(image)
        ctx.obj, ctx.slopes, ctx.shapes = obj, slopes, shapes
        # Autocast is a thread-local state that backward does not inherit: record it to recompute alike.
        kind = image.device.type
        ctx.autocast = (kind, torch.is_autocast_enabled(kind), torch.get_autocast_dtype(kind))
        return content, style

    @staticmethod
    def backward(ctx: FunctionCtx, g_content: torch.Tensor, g_style: torch.Tensor):
        (image,) = ctx.saved_tensors
        obj, shapes = ctx.obj, ctx.shapes
        slopes = {name: s * g_style.view(-1, 1, 1) for name, s in ctx.slopes.items()}
        grad = torch.zeros_like(image)
        kind, enabled, dtype = ctx.autocast
        for t in obj.tiles:  # pass 2
            with torch.enable_grad(), torch.autocast(device_type=kind, dtype=dtype, enabled=enabled):
                crop = image[:, :, t.cy0 : t.cy1, t.cx0 : t.cx1].detach().requires_grad_()
                feats = _tile_features(obj, crop)
                with torch.autocast(device_type=kind, enabled=False):
                    surrogate = torch.zeros((), device=image.device)
                    x = _interior(feats[obj.content_layer], t, level(obj.content_layer))
                    if x.numel():
                        surrogate = surrogate + (g_content * _content_error(obj, x, t)).sum()
                    for name in obj.style_layers:
                        x = _interior(feats[name], t, level(name))
                        if x.numel():
                            g = _partial_gram(x, shapes[name][0] * shapes[name][1])
                            surrogate = surrogate + (slopes[name] * g).sum()
                del feats
                if surrogate.requires_grad:
                    (g_crop,) = torch.autograd.grad(surrogate, crop)
                    grad[:, :, t.cy0 : t.cy1, t.cx0 : t.cx1] += g_crop
                del surrogate, crop
            release(image.device)
        return grad, None


@torch.no_grad()
def tiled_targets(
    vgg: VGGFeatures, image: torch.Tensor, content_layer: str | None, style_layers: list[str], pooling: str, tile: int
) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
    """(features at `content_layer` (B, C, h, w) or None, {style layer: Gram}) of a large image,
    computed tile by tile: the target side of pass 1 (a 4096 px content or style image's conv1
    maps alone would take 8 GiB)."""
    layers = [*([content_layer] if content_layer else []), *style_layers]
    h, w = image.shape[-2:]
    tiles = grid(h, w, tile, halo(layers))
    content = None
    grams: dict[str, torch.Tensor] = {}
    for t in tiles:
        feats = vgg(image[:, :, t.cy0 : t.cy1, t.cx0 : t.cx1], layers, pooling=pooling)
        if content_layer:
            x = _interior(feats[content_layer], t, level(content_layer))
            if content is None:
                lv = level(content_layer)
                content = torch.zeros(x.shape[0], x.shape[1], h // 2**lv, w // 2**lv, device=image.device)
            ys, xs = t.full(level(content_layer))
            content[:, :, ys, xs] = x.float()
        for name in style_layers:
            x = _interior(feats[name], t, level(name)).float()
            if x.numel():
                whole = (h // 2 ** level(name)) * (w // 2 ** level(name))
                g = _partial_gram(x, whole)
                grams[name] = g if name not in grams else grams[name] + g
        del feats
        release(image.device)
    return content, grams
