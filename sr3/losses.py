"""Training losses, one per objective, both built on the shared denoiser contract."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import DiffusionConfig
from .diffusion import Conditioning, Denoiser, add_noise, network_output, network_target, to_diffusion_space
from .schedules import sample_training_gammas


def distance(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean L1 or L2 distance (SR3 Eq. 6 with p = 1 or 2)."""
    return F.l1_loss(pred, target) if kind == "l1" else F.mse_loss(pred, target)


def diffusion_loss(model: torch.nn.Module, hr: torch.Tensor, cond: Conditioning, config: DiffusionConfig,
                   train_gammas: torch.Tensor, generator: torch.Generator, bf16: bool = False) -> torch.Tensor:
    """SR3 Algorithm 1: pick gamma ~ p(gamma), noise the target, predict the noise (or v).

    hr: [B, C, H, W] in [-1, 1]; train_gammas: the training schedule [T+1];
    generator: CPU generator for gamma and eps (seeded per step for exact resume).
    """
    x0 = to_diffusion_space(hr, cond, config)
    gamma = sample_training_gammas(train_gammas, x0.shape[0], generator).to(x0.device)
    eps = torch.randn(x0.shape, generator=generator).to(x0.device)
    output = network_output(model, add_noise(x0, gamma, eps), gamma, cond, bf16)
    return distance(output, network_target(x0, eps, gamma, config.prediction), config.loss)


def regression_loss(model: torch.nn.Module, hr: torch.Tensor, cond: Conditioning, config: DiffusionConfig,
                    bf16: bool = False) -> torch.Tensor:
    """The SR3 paper's regression baseline: same U-Net, predict the HR image directly."""
    target = to_diffusion_space(hr, cond, config)
    # The Denoiser owns how a regression model is called (zero noise input and level), for
    # training and inference alike; unclipped and batched so the loss sees the raw output.
    pred = Denoiser(model, config, cond, bf16=bf16, clip=False, batch_invariant=False)(torch.zeros_like(target), 0.0)
    return distance(pred, target, config.loss)
