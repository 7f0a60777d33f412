"""Tiled denoising: any image size with memory bounded by the tile, and no seams.

Diffusion sampling keeps the *whole* image's state (x, its noise, the conditioning)
but runs the network on overlapping tiles only.  At every step, each tile's
clean-image estimate is blended into one full-image estimate with weights that
ramp linearly across the overlaps (MultiDiffusion, Bar-Tal et al. 2023).  The
sampler then takes its step on the full image with one global noise field, so
neighbouring tiles see the same noise and are pulled towards the same estimate in
their overlap at every step: seams cannot form, unlike stitching independently
sampled tiles.

Network activations scale with the tile; full-image state is a few float tensors
of the output size (4096x4096x3 float32 is 200 MB each).
"""

from __future__ import annotations

import torch

from .diffusion import Denoiser


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering [0, length), overlapping by at least ``overlap``."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride)) + [length - tile]
    return starts


def blend_ramp(length: int, overlap: int, at_start: bool, at_end: bool) -> torch.Tensor:
    """1-D weights: 1 inside, rising linearly over ``overlap`` pixels at tile edges that face
    another tile (image borders keep weight 1), strictly positive everywhere."""
    w = torch.ones(length)
    ramp = torch.arange(1, overlap + 1, dtype=torch.float32) / (overlap + 1)
    if not at_start:
        w[:overlap] = ramp
    if not at_end:
        w[-overlap:] = ramp.flip(0)
    return w


class TiledDenoiser:
    """Wrap a :class:`Denoiser` so D(x, gamma) runs on ``tile`` x ``tile`` windows.

    ``tile`` and ``overlap`` are in output pixels; ``tile`` must suit the U-Net
    (a multiple of 2**(levels-1)).  If the image fits in one tile this is exactly
    the wrapped denoiser.  Each tile is one call of the wrapped denoiser, so its
    ``on_evaluation`` ticks once per tile.
    """

    def __init__(self, denoiser: Denoiser, tile: int, overlap: int):
        if overlap * 2 > tile:
            raise ValueError("overlap must be at most half the tile")
        self.denoiser, self.tile, self.overlap = denoiser, tile, overlap

    def tiles(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        tops, lefts = tile_starts(height, self.tile, self.overlap), tile_starts(width, self.tile, self.overlap)
        return [(t, l, min(self.tile, height), min(self.tile, width)) for t in tops for l in lefts]

    def __call__(self, x: torch.Tensor, gamma) -> torch.Tensor:
        height, width = x.shape[-2:]
        tiles = self.tiles(height, width)
        if len(tiles) == 1:
            return self.denoiser(x, gamma)
        total = torch.zeros_like(x)
        weight = torch.zeros((1, 1, height, width), dtype=x.dtype, device=x.device)
        for top, left, h, w in tiles:
            window = (slice(None), slice(None), slice(top, top + h), slice(left, left + w))
            sub = self.denoiser.crop(window)
            wy = blend_ramp(h, self.overlap, top == 0, top + h == height)
            wx = blend_ramp(w, self.overlap, left == 0, left + w == width)
            wt = (wy[:, None] * wx[None, :]).to(x)
            total[window] += sub(x[window], gamma) * wt
            weight[window] += wt
        return total.div_(weight)
