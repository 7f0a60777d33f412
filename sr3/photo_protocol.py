"""The photo protocol of cascade sweeps and the 8x / 16x benchmarks.

HR = the central ``side`` x ``side`` crop of a photo; LR = ``sr3.degradation.downsample(HR,
scale)`` rounded to 8 bits, as ``sr3 evaluate`` makes LR inputs.  Photos whose shorter side
is below ``side`` are left out (and counted), so a folder gives the same pairs whatever
runs on it.  One output is scored by :func:`photo_scores`: PSNR (RGB and Y, border =
scale), ST-LPIPS (alex, lower = perceptually closer), NIQE (no reference, lower = more
natural) and SR3's consistency (Sec. 4.2: MSE of the downsampled output against the LR,
on [0, 255]).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from .degradation import downsample
from .errors import UserError
from .imageio import list_images, load_image, pil_to_tensor
from .metrics import consistency, psnr
from .niqe import niqe

SCORE_DIRECTIONS = {"psnr_rgb": 1, "psnr_y": 1, "stlpips_alex": -1, "niqe": -1, "consistency": -1}
"""Each score of :func:`photo_scores` and whether higher (1) or lower (-1) is better."""


@dataclass(frozen=True)
class PhotoPair:
    name: str
    hr: torch.Tensor
    """[1, 3, side, side] in [0, 1]."""
    lr: torch.Tensor
    """[1, 3, side / scale, side / scale] in [0, 1], rounded to 8 bits."""


def central_crop(img: Image.Image, side: int) -> Image.Image:
    left, top = (img.width - side) // 2, (img.height - side) // 2
    return img.crop((left, top, left + side, top + side))


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], rounded to 8 bits as a saved PNG would be."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round() / 255.0


def photo_pairs(folder: Path, side: int, scale: int, limit: int | None = None) -> tuple[list[PhotoPair], int]:
    """(pairs of the first ``limit`` eligible photos sorted by name, number of photos left out as too small
    before the limit was reached).  Unreadable files are skipped with a warning naming them.

    side: HR crop side in px, a positive multiple of ``scale``; limit: None = all.
    """
    if side < scale or side % scale:
        raise UserError(f"crop side {side} px must be a positive multiple of the scale {scale}")
    files = list_images([folder])
    if not files:
        raise UserError(f"{folder}: no images found; pass a folder of photos")
    pairs, too_small = [], 0
    for path in files:
        if limit is not None and len(pairs) >= limit:
            break
        try:
            img = load_image(path).convert("RGB")
        except UserError as e:  # one unreadable photo never stops a benchmark or a sweep
            warnings.warn(f"skipping {e}")
            continue
        if min(img.size) < side:
            too_small += 1
            continue
        hr = pil_to_tensor(central_crop(img, side))[None]
        pairs.append(PhotoPair(path.name, (hr + 1) / 2, to_unit(downsample(hr, scale))))
    if not pairs:
        raise UserError(f"{folder}: no photo has a shorter side of at least {side} px; pass a smaller crop side")
    return pairs, too_small


def photo_scores(sr: torch.Tensor, pair: PhotoPair, scale: int, stlpips) -> dict[str, float]:
    """Scores (see SCORE_DIRECTIONS) of one output [1, 3, side, side] in [0, 1] against ``pair``.

    stlpips: a loaded ST-LPIPS network (sr3.stlpips.load_stlpips).
    """
    return {
        "psnr_rgb": float(psnr(sr, pair.hr, border=scale)[0]),
        "psnr_y": float(psnr(sr, pair.hr, border=scale, y_channel=True)[0]),
        "stlpips_alex": float(stlpips(sr, pair.hr)[0]),
        "niqe": niqe(sr[0]),
        "consistency": float(consistency(sr, pair.lr, scale)[0]),
    }
