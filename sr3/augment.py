"""Conditioning augmentation for cascades (CDM, Ho et al. 2021, Sec. 3 and 4.1-4.3).

A super-resolution stage of a cascade is trained on low-resolution images made
from real data but, at sampling time, is fed the *samples* of the previous stage,
which carry that stage's artefacts.  CDM's central finding is that corrupting the
low-resolution conditioning during training stops these errors compounding:

* **Gaussian noise augmentation** (Sec. 4.1, used at low resolution): the LR
  input is noised to a level s and the SR model is told s (``aug_level``).  Training
  draws s per example uniformly in [0, ``aug_noise_max``] ("amortised", Sec. 4.3),
  so the level used at sampling time is chosen afterwards, e.g. by ``sr3 sweep``.
* **Gaussian blur augmentation** (Sec. 4.1, used at high resolution): a fraction
  ``aug_blur_prob`` of training examples have their upsampled LR input blurred with
  a 3x3 Gaussian kernel of standard deviation drawn from ``aug_blur_sigma``; nothing
  is blurred at sampling time and the model is not told about the blur.
* **Truncated vs non-truncated conditioning** (Sec. 4.2, Eqs. 4-5): with level s,
  *truncated* stops the previous stage's reverse process at s and passes its noisy
  x_s; *non-truncated* samples the previous stage fully and then noises the result
  to s with the forward process.  Both are chosen at sampling time.

**What "level" means.**  A level s in [0, 1) is the standard deviation of the
Gaussian noise mixed in, in the variance-preserving convention of
:func:`sr3.diffusion.add_noise` (SR3 Eq. 4):

    z_s = sqrt(1 - s^2) * x + s * eps,    i.e.  gamma = 1 - s^2,

with x the low-resolution image in [-1, 1] *at its own resolution* (noise is added
before bicubic upsampling, so at level s the truncated x_s of a base model and the
noised LR of training have exactly the same distribution).  s = 0 is the clean
image; s = 0.5 is noise with standard deviation 0.5 (a quarter of the [-1, 1]
range) on a signal scaled by 0.87.  This s, not gamma, is what the SR U-Net
embeds as ``aug_level``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .config import DataConfig
from .degradation import upsample
from .diffusion import add_noise

BLUR_KERNEL_SIZE = 3  # CDM Sec. 4.1 / App. B: 3x3 Gaussian blur at the 64 -> 256 stage


# ------------------------------------------------------------------ levels
def level_to_gamma(level: torch.Tensor | float) -> torch.Tensor:
    """gamma = 1 - s^2 for an augmentation level s in [0, 1) (see the module docstring)."""
    s = torch.as_tensor(level, dtype=torch.float32)
    if (s < 0).any() or (s >= 1).any():
        raise ValueError(f"augmentation levels must lie in [0, 1), got {s.tolist()}")
    return 1 - s * s


def noise_augment(lr: torch.Tensor, level: torch.Tensor | float, eps: torch.Tensor) -> torch.Tensor:
    """z_s = sqrt(1 - s^2) lr + s eps: the forward process of add_noise at gamma = 1 - s^2.

    lr: [B, C, h, w] in [-1, 1]; level: float or [B]; eps: unit Gaussian like lr.
    At s = 0 this returns ``lr`` exactly (sqrt(1) = 1, 0 * eps = 0).
    """
    gamma = level_to_gamma(level).to(lr.device).expand(lr.shape[0])
    return add_noise(lr, gamma, eps)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image of [B, C, H, W] with a normalised 3x3 Gaussian of its own ``sigma`` [B] (pixels).

    Reflect padding keeps the image size and does not darken the border.
    """
    b, c, h, w = x.shape
    r = BLUR_KERNEL_SIZE // 2
    offsets = torch.arange(-r, r + 1, dtype=torch.float32, device=x.device)
    k1 = torch.exp(-offsets[None] ** 2 / (2 * sigma.float().to(x.device)[:, None] ** 2))
    k1 = k1 / k1.sum(dim=1, keepdim=True)  # [B, K]
    kernel = (k1[:, :, None] * k1[:, None, :]).repeat_interleave(c, dim=0)[:, None]  # [B*C, 1, K, K]
    padded = F.pad(x.reshape(1, b * c, h, w), (r, r, r, r), mode="reflect")
    return F.conv2d(padded, kernel, groups=b * c).reshape(b, c, h, w)


# ------------------------------------------------------------------ training
def augment_for_training(lr: torch.Tensor, scale: int, data: DataConfig, generator: torch.Generator
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(augmented upsampled LR, levels [B]) for one training batch of an SR stage.

    lr: [B, C, h, w] in [-1, 1] (from the degradation operator); scale: SR factor.
    Noise (level s ~ U[0, aug_noise_max] per example) is added at low resolution, then
    the image is bicubic-upsampled; then a fraction ``aug_blur_prob`` of examples is
    blurred with sigma ~ U(aug_blur_sigma).  With both off this is exactly
    ``upsample(lr, scale)`` with levels 0, and ``generator`` is not advanced.
    Every draw comes from ``generator`` (seeded per step), so resumed runs repeat.
    """
    b = lr.shape[0]
    levels = torch.zeros(b)
    if data.aug_noise_max > 0:
        levels = torch.rand(b, generator=generator) * data.aug_noise_max
        eps = torch.randn(lr.shape, generator=generator)
        lr = noise_augment(lr, levels, eps.to(lr.device))
    lr_up = upsample(lr, scale)
    if data.aug_blur_prob > 0:
        lo, hi = data.aug_blur_sigma
        chosen = torch.rand(b, generator=generator) < data.aug_blur_prob
        sigma = lo + (hi - lo) * torch.rand(b, generator=generator)
        lr_up = torch.where(chosen[:, None, None, None].to(lr_up.device), gaussian_blur(lr_up, sigma), lr_up)
    return lr_up, levels.to(lr.device)


# ------------------------------------------------------------------ sampling
def truncated_gammas(gammas: torch.Tensor, level: float, tol: float = 1e-9) -> torch.Tensor:
    """The prefix of a sampler's gamma sequence that stops at gamma_s = 1 - s^2 (CDM Eq. 4).

    Keeps every level noisier than gamma_s and ends exactly at gamma_s, so the
    sampler returns the intermediate x_s instead of x_0.  When gamma_s coincides
    with a level of ``gammas`` (within ``tol``), the result is that prefix of
    ``gammas`` and x_s is exactly the full run's intermediate state at that level.
    Level 0 gives the full sequence (ending at gamma = 1, a clean sample).
    """
    gamma_s = float(level_to_gamma(level))
    if gamma_s >= 1.0:
        return gammas
    keep = gammas[gammas < gamma_s - tol]
    if len(keep) == 0:
        raise ValueError(f"level {level} is noisier than the sampler's first step; lower it or use more steps")
    return torch.cat([keep, torch.tensor([gamma_s], dtype=gammas.dtype)])


def level_is_valid(level: float) -> bool:
    return 0.0 <= level < 1.0 and math.isfinite(level)
