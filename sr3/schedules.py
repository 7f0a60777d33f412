"""Noise schedules, written in SR3's notation.

SR3 (Saharia et al. 2021, Eq. 4) corrupts an image y0 as

    y~ = sqrt(gamma) * y0 + sqrt(1 - gamma) * eps,   eps ~ N(0, I),

where gamma in (0, 1] is the cumulative product of (1 - beta_t) (gamma = 1 means no
noise).  The network is conditioned on the *continuous* noise level sqrt(gamma),
so a model trained on one schedule can be sampled on any other: training and
inference schedules are independent, which is why samplers here take a plain
sequence of gammas.

A few conversions appear everywhere:
    sigma  = sqrt((1 - gamma) / gamma)       (noise-to-signal ratio, k-diffusion's sigma)
    lambda = log(sqrt(gamma / (1 - gamma)))  (half log-SNR, DPM-Solver's lambda)
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from .config import DiffusionConfig
from .errors import UserError

InferenceSchedule = Literal["sr3", "logsnr", "train"]
INFERENCE_SCHEDULES = ("sr3", "logsnr", "train")

# SR3's inference schedule (Sec. 4, "Inference"): 100 refinement steps with beta
# linear from 1e-4 to 0.1.
SR3_INFERENCE_STEPS, SR3_INFERENCE_BETA = 100, (1e-4, 0.1)

# The finest noise level samplers visit: lambda = 6 is sigma ~ 0.0025, below
# half a grey level of an 8-bit image in [-1, 1].
LAMBDA_MAX = 6.0


def gammas_from_betas(betas: torch.Tensor) -> torch.Tensor:
    """gamma_t = prod_{i<=t} (1 - beta_i), with gamma_0 = 1 prepended (shape [T+1])."""
    gammas = torch.cumprod(1.0 - betas.double(), dim=0)
    return torch.cat([torch.ones(1, dtype=torch.float64), gammas])


def linear_gammas(timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """SR3/DDPM's linear-beta schedule as gammas [T+1]."""
    return gammas_from_betas(torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64))


def cosine_gammas(timesteps: int, offset: float = 0.008) -> torch.Tensor:
    """Cosine schedule (Nichol & Dhariwal 2021, Eq. 17), betas clipped at 0.999, as gammas [T+1]."""
    t = torch.linspace(0, 1, timesteps + 1, dtype=torch.float64)
    f = torch.cos((t + offset) / (1 + offset) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return gammas_from_betas(betas)


def training_gammas(config: DiffusionConfig) -> torch.Tensor:
    """The training schedule gamma_0 = 1 > gamma_1 > ... > gamma_T, shape [T+1]."""
    if config.schedule == "linear":
        return linear_gammas(config.timesteps, config.beta_start, config.beta_end)
    if config.schedule == "cosine":
        return cosine_gammas(config.timesteps)
    raise ValueError(f"unknown schedule {config.schedule!r}")


def sample_training_gammas(gammas: torch.Tensor, batch: int, generator: torch.Generator) -> torch.Tensor:
    """SR3's training noise (Sec. 2.4): t ~ U{1..T}, then gamma ~ U(gamma_t, gamma_{t-1}).

    Sampling gamma continuously between neighbouring steps is what lets the model be
    sampled later on any schedule and with any number of steps.
    """
    T = gammas.shape[0] - 1
    t = torch.randint(1, T + 1, (batch,), generator=generator)
    u = torch.rand(batch, generator=generator, dtype=torch.float64)
    return (gammas[t] + u * (gammas[t - 1] - gammas[t])).float()


def gamma_to_lambda(gamma: torch.Tensor) -> torch.Tensor:
    return 0.5 * (torch.log(gamma) - torch.log1p(-gamma))


def lambda_to_gamma(lam: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(2 * lam)


def inference_gammas(steps: int, kind: InferenceSchedule, train: DiffusionConfig) -> torch.Tensor:
    """Noise levels a sampler walks through: [steps + 1] gammas, noisiest first, ending at 1.0.

    kind:
      * ``"sr3"``: the paper's 100-step linear-beta (1e-4 -> 0.1) schedule; at 100 steps
        it is exactly the paper's, at other counts the same curve (log gamma linearly
        interpolated between its knots) sampled at evenly spaced times.
      * ``"logsnr"``: evenly spaced in log-SNR between the training schedule's noisiest
        level and LAMBDA_MAX; the usual choice for DDIM/DPM-Solver at few steps.
      * ``"train"``: the training schedule respaced to ``steps`` evenly spaced timesteps
        (DDIM's respacing, Song et al. 2021).
    """
    if steps < 1:
        raise ValueError("steps must be >= 1")
    if kind == "sr3":
        knots = linear_gammas(SR3_INFERENCE_STEPS, *SR3_INFERENCE_BETA).log()
        t = torch.linspace(SR3_INFERENCE_STEPS, 0, steps + 1, dtype=torch.float64)
        lo = t.floor().long().clamp(max=SR3_INFERENCE_STEPS - 1)
        frac = t - lo
        gammas = torch.exp(knots[lo] + frac * (knots[lo + 1] - knots[lo]))
    elif kind == "logsnr":
        train_gammas = training_gammas(train)
        lam_min = float(gamma_to_lambda(train_gammas[-1]))
        lam_max = min(LAMBDA_MAX, float(gamma_to_lambda(train_gammas[1])))
        lam = torch.linspace(lam_min, lam_max, steps, dtype=torch.float64)
        gammas = torch.cat([lambda_to_gamma(lam), torch.ones(1, dtype=torch.float64)])
    elif kind == "train":
        train_gammas = training_gammas(train)
        T = train_gammas.shape[0] - 1
        if steps > T:  # respacing would repeat timesteps (gamma_s = gamma_t = 1: a division by zero)
            raise UserError(f"the train schedule has only {T} steps; use --steps {T} or fewer, or --schedule logsnr")
        t = torch.linspace(T, 0, steps + 1, dtype=torch.float64).round().long()
        gammas = train_gammas[t]
    else:
        raise ValueError(f"unknown inference schedule {kind!r}; choose from {INFERENCE_SCHEDULES}")
    gammas[-1] = 1.0
    return gammas
