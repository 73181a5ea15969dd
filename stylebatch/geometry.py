"""The pure facts of VGG19's feature stack: its layer names and indices, how far each layer sees,
and the tile unit that keeps pooling windows whole. Numbers only, no torch: the job's checks, the
memory model and the tiler all read them from here.

May import: nothing of stylebatch (the bottom of the import order, beside errors).
"""

from __future__ import annotations

# torchvision's VGG19 "E" configuration: channels per conv, "M" = max pool.
VGG19_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M"]
VGG19_CFG += [512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]


def _layer_names() -> list[str]:
    """Names of the 37 modules of torchvision's vgg19().features, in order."""
    names, block, conv = [], 1, 1
    for item in VGG19_CFG:
        if item == "M":
            names.append(f"pool{block}")
            block, conv = block + 1, 1
        else:
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
            conv += 1
    return names


LAYER_NAMES: list[str] = _layer_names()
LAYER_INDEX: dict[str, int] = {name: i for i, name in enumerate(LAYER_NAMES)}


# Pools up to and including each layer, computed once: the estimates ask for it per layer per pass.
_LEVELS = {name: sum(1 for n in LAYER_NAMES[: i + 1] if n.startswith("pool")) for i, name in enumerate(LAYER_NAMES)}


def level(layer: str) -> int:
    """How many 2x2 pools come before (and including) `layer`: its features are 2**level smaller."""
    return _LEVELS[layer]


def min_input_size(layers: list[str]) -> int:
    """Smallest image side for which every named layer still has at least one position:
    each pool up to and including the deepest layer halves (floors) the side."""
    return 2 ** level(max(layers, key=LAYER_INDEX.__getitem__))


def extent(layers: list[str]) -> int:
    """Pixels each side of an aligned block that the deepest layer's features depend on: every
    3x3 convolution up to it widens the view by one position of its level (2**level pixels); a
    pool, whose windows lie inside blocks, widens nothing. conv5_1: 2*1 + 2*2 + 4*4 + 4*8 + 1*16 = 70."""
    deepest = max(LAYER_INDEX[name] for name in layers)
    return sum(2 ** level(name) for name in LAYER_NAMES[: deepest + 1] if name.startswith("conv"))


def receptive_field(layer: str) -> int:
    """Side in pixels of the region one feature of `layer` sees (relu5_1: 156)."""
    return 2 ** level(layer) + 2 * extent([layer])


def grid_unit(layers: list[str]) -> int:
    """Tile edges and offsets are multiples of this: one position of the deepest layer's level
    (so pooling windows never straddle an edge), and at least 16."""
    return max(16, 2 ** level(max(layers, key=LAYER_INDEX.__getitem__)))


def halo(layers: list[str]) -> int:
    """The margin computed around each tile: the extent rounded up to the grid unit (conv5_1: 80)."""
    unit = grid_unit(layers)
    return -(-extent(layers) // unit) * unit


def needs_tiling(h: int, w: int, tile: int | None) -> bool:
    """Tiles only where a pass (or an input image) is larger than the tile."""
    return bool(tile) and max(h, w) > tile


def edges(length: int, tile: int, offset: int) -> list[int]:
    """Tile edges along one side: 0, offset, offset + tile, ... , length."""
    cuts = [c for c in range(offset, length, tile) if c > 0]
    return [0, *cuts, length]
