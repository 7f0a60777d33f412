"""Training data: random crops from image folders.

A dataset here is anything with ``sample(batch_size, generator) -> Batch``.  Batches
are drawn from a generator seeded by (seed, step, rank), not from an iterator, so a
resumed run sees exactly the batches the uninterrupted run would have seen.

Low-resolution inputs are *not* made here: :func:`make_sr_pair` applies the one
degradation operator of :mod:`sr3.degradation`, the same one evaluation uses.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import math

import numpy as np
import torch
import torch.nn.functional as F

from .degradation import downsample, upsample
from .errors import UserError
from .imageio import list_images, load_image


@dataclass
class Batch:
    """hr: [B, 3, H, W] in [-1, 1]; lr: [B, 3, H/s, W/s] or None (made from hr);
    label: [B] int64 class indices or None; skipped: see below."""

    hr: torch.Tensor
    lr: torch.Tensor | None = None
    label: torch.Tensor | None = None
    skipped: tuple[str, ...] = ()
    """Unreadable files passed over while drawing this batch (streaming data), as one-line reasons."""

    def to(self, device, non_blocking: bool = False) -> "Batch":
        move = (lambda t: None if t is None else t.to(device, non_blocking=non_blocking))
        return Batch(hr=move(self.hr), lr=move(self.lr), label=move(self.label), skipped=self.skipped)


def uint8_chw(img) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div(127.5).sub(1.0)


def _random_flip(x: torch.Tensor, generator: torch.Generator, hflip: bool, vflip: bool) -> torch.Tensor:
    if hflip and torch.rand(1, generator=generator).item() < 0.5:
        x = x.flip(-1)
    if vflip and torch.rand(1, generator=generator).item() < 0.5:
        x = x.flip(-2)
    return x


class ImageFolderDataset:
    """Random ``crop_size`` crops (with flips) of every readable image in a folder.

    ``downscale_max`` > 1: each crop is cut from the image shrunk by a factor drawn
    log-uniformly from [1, downscale_max] (a square of crop_size * factor pixels,
    resized with anti-aliasing and rounded to 8 bits like a saved photo).

    Images are decoded once and kept as uint8 (the 43 training photos take 0.6 GB); for
    folders that do not fit in memory, sr3/streaming.py decodes per draw instead.
    Unreadable files and images smaller than the crop are skipped with a warning; a
    folder with no usable image is a UserError.
    """

    def __init__(self, root: str | Path, crop_size: int, hflip: bool = True, vflip: bool = False,
                 downscale_max: float = 1.0):
        self.root, self.crop_size, self.hflip, self.vflip = Path(root), crop_size, hflip, vflip
        if downscale_max < 1.0:
            raise UserError(f"data.downscale_max is {downscale_max}; it must be >= 1 (1 = no downscaling)")
        self.downscale_max = downscale_max
        if not self.root.is_dir():
            raise UserError(f"{self.root}: training data folder not found; pass --data DIR with images")
        self.images: list[torch.Tensor] = []
        self.names: list[str] = []
        for path in list_images(self.root):
            try:
                img = load_image(path)
            except UserError as e:
                warnings.warn(f"skipping {e}")
                continue
            if min(img.size) < crop_size:
                warnings.warn(f"skipping {path}: {img.size[0]}x{img.size[1]} is smaller than the {crop_size} px crop")
                continue
            self.images.append(uint8_chw(img))
            self.names.append(path.name)
        if not self.images:
            raise UserError(f"{self.root}: no usable images (need png/jpg/webp/tiff at least {crop_size} px); "
                            "add images or lower --data.crop-size")

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        crops = []
        for _ in range(batch_size):
            img = self.images[int(torch.randint(len(self.images), (1,), generator=generator))]
            crops.append(random_crop(img, self.crop_size, generator, self.downscale_max, self.hflip, self.vflip))
        return Batch(hr=to_float(torch.stack(crops)))


def random_crop(img: torch.Tensor, crop_size: int, generator: torch.Generator, downscale_max: float = 1.0,
                hflip: bool = True, vflip: bool = False) -> torch.Tensor:
    """One random ``crop_size`` crop of a uint8 image [3, H, W] (H, W >= crop_size), drawn from ``generator``.

    Shared by the in-memory and the streaming datasets (sr3/streaming.py), so that
    both turn the same image and generator state into the same crop.
    """
    side = crop_size
    if downscale_max > 1:
        factor = math.exp(float(torch.rand(1, generator=generator)) * math.log(downscale_max))
        side = min(round(crop_size * factor), img.shape[1], img.shape[2])
    top = int(torch.randint(img.shape[1] - side + 1, (1,), generator=generator))
    left = int(torch.randint(img.shape[2] - side + 1, (1,), generator=generator))
    crop = img[:, top:top + side, left:left + side]
    if side != crop_size:
        crop = F.interpolate(crop[None].float(), size=(crop_size, crop_size), mode="bicubic",
                             align_corners=False, antialias=True)[0].round().clamp(0, 255).to(torch.uint8)
    return _random_flip(crop, generator, hflip, vflip)


class PairedFolderDataset:
    """Aligned random crops from an LR folder and an HR folder matched by file stem.

    The HR image must be exactly ``scale`` times the LR image in each dimension.
    """

    def __init__(self, lr_root: str | Path, hr_root: str | Path, scale: int, crop_size: int,
                 hflip: bool = True, vflip: bool = False):
        self.scale, self.crop_size, self.hflip, self.vflip = scale, crop_size, hflip, vflip
        if crop_size % scale:
            raise UserError(f"crop size {crop_size} is not divisible by scale {scale}")
        lr_paths = {p.stem: p for p in list_images(lr_root)}
        hr_paths = {p.stem: p for p in list_images(hr_root)}
        common = sorted(set(lr_paths) & set(hr_paths))
        if not common:
            raise UserError(f"{lr_root} and {hr_root}: no file names in common; LR/HR pairs are matched by name")
        self.pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        for stem in common:
            try:
                lr, hr = load_image(lr_paths[stem]), load_image(hr_paths[stem])
            except UserError as e:
                warnings.warn(f"skipping {e}")
                continue
            if (hr.size[0], hr.size[1]) != (lr.size[0] * scale, lr.size[1] * scale):
                warnings.warn(f"skipping {hr_paths[stem]}: {hr.size} is not {scale}x the LR size {lr.size}")
                continue
            if min(hr.size) < crop_size:
                warnings.warn(f"skipping {hr_paths[stem]}: smaller than the {crop_size} px crop")
                continue
            self.pairs.append((uint8_chw(lr), uint8_chw(hr)))
        if not self.pairs:
            raise UserError(f"{hr_root}: no usable LR/HR pairs; check sizes (HR = {scale} x LR) and names")

    def __len__(self) -> int:
        return len(self.pairs)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        s, c = self.scale, self.crop_size // self.scale
        lrs, hrs = [], []
        for _ in range(batch_size):
            lr, hr = self.pairs[int(torch.randint(len(self.pairs), (1,), generator=generator))]
            top = int(torch.randint(lr.shape[1] - c + 1, (1,), generator=generator))
            left = int(torch.randint(lr.shape[2] - c + 1, (1,), generator=generator))
            lr_crop = lr[:, top:top + c, left:left + c]
            hr_crop = hr[:, top * s:(top + c) * s, left * s:(left + c) * s]
            both = _random_flip(torch.cat([upsample_nearest(lr_crop, s), hr_crop]), generator, self.hflip, self.vflip)
            lrs.append(both[:3, ::s, ::s])
            hrs.append(both[3:])
        return Batch(hr=to_float(torch.stack(hrs)), lr=to_float(torch.stack(lrs)))


def upsample_nearest(x: torch.Tensor, s: int) -> torch.Tensor:
    """Repeat pixels so LR and HR crops can be flipped together and split back exactly."""
    return x.repeat_interleave(s, dim=-2).repeat_interleave(s, dim=-1)


def make_sr_pair(batch: Batch, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(lr, lr_upsampled) for a batch: LR from the degradation operator unless the data supplied it."""
    lr = batch.lr if batch.lr is not None else downsample(batch.hr, scale)
    return lr, upsample(lr, scale)
