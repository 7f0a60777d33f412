"""The degradation operator: how a low-resolution image is made from a high one.

Training, evaluation, RAISR and the consistency metric all call these two
functions, so "LR" means the same thing everywhere: anti-aliased bicubic
downsampling by an integer factor (the SR3 paper's bicubic degradation; the
antialias kernel matches PIL/MATLAB ``imresize`` rather than plain interpolation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def crop_to_multiple(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop the bottom/right edge of [..., H, W] so H and W divide by ``scale``."""
    h, w = x.shape[-2] - x.shape[-2] % scale, x.shape[-1] - x.shape[-1] % scale
    return x[..., :h, :w]


def downsample(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Anti-aliased bicubic downsampling of [B, C, H, W] by ``scale`` (H, W divisible)."""
    if x.shape[-2] % scale or x.shape[-1] % scale:
        raise ValueError(f"size {tuple(x.shape[-2:])} is not divisible by scale {scale}; crop_to_multiple first")
    size = (x.shape[-2] // scale, x.shape[-1] // scale)
    return F.interpolate(x.float(), size=size, mode="bicubic", align_corners=False, antialias=True)


def upsample(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic upsampling of [B, C, h, w] by ``scale``: SR3's conditioning input."""
    size = (x.shape[-2] * scale, x.shape[-1] * scale)
    return F.interpolate(x.float(), size=size, mode="bicubic", align_corners=False)
