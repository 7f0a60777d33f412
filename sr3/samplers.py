"""Samplers: plain functions of ``(denoise, x, gammas, ...)``.

``denoise(x, gamma) -> x0_hat`` is a :class:`sr3.diffusion.Denoiser` (conditioning
already bound); ``gammas`` is a decreasing-noise sequence from
:func:`sr3.schedules.inference_gammas`, ending at 1.0 (no noise); ``x`` starts as
unit Gaussian noise.  Any sampler works with any step count on any trained model,
because the network was trained on a continuum of noise levels.

Randomness comes from ``noise(like)``, which draws each example's noise from that
example's own generator (:class:`PerSampleNoise`), so image k is the same whatever
the batch size.
"""

from __future__ import annotations

from typing import Callable

import torch

from .schedules import gamma_to_lambda

Denoise = Callable[[torch.Tensor, float], torch.Tensor]


class PerSampleNoise:
    """Gaussian noise with one ``torch.Generator`` per example.

    ``temperature`` (>= 0, default 1 = standard normal) scales every draw: the starting
    noise and any noise a sampler injects.  Below 1 the sample moves towards the
    denoiser's mean prediction: less invented detail, higher PSNR (the temperature of
    SRFlow, Lugmayr et al. 2020, applied to a diffusion sampler's noise).
    """

    def __init__(self, seeds: list[int], temperature: float = 1.0):
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.temperature = temperature

    def __call__(self, like: torch.Tensor) -> torch.Tensor:
        noise = torch.stack([torch.randn(like.shape[1:], generator=g) for g in self.generators])
        if self.temperature != 1.0:
            noise = noise * self.temperature
        return noise.to(like.device, like.dtype)


def sample_ddpm(denoise: Denoise, x: torch.Tensor, gammas: torch.Tensor, noise: Callable, progress=None):
    """Ancestral sampling (SR3 Algorithm 2 / DDPM): draw from q(y_t | y_s, y0_hat) at each step.

    From level gamma_s to the less noisy gamma_t, with alpha = gamma_s / gamma_t:
        mean = sqrt(gamma_t) (1 - alpha) / (1 - gamma_s) * y0_hat
             + sqrt(alpha) (1 - gamma_t) / (1 - gamma_s) * y_s
        var  = (1 - gamma_t) / (1 - gamma_s) * (1 - alpha)
    """
    for s, t in _steps(gammas, progress):
        x0 = denoise(x, s)
        alpha = s / t
        mean = (t ** 0.5 * (1 - alpha) / (1 - s)) * x0 + (alpha ** 0.5 * (1 - t) / (1 - s)) * x
        var = (1 - t) / (1 - s) * (1 - alpha)
        x = mean + var ** 0.5 * noise(x) if var > 0 else mean
    return x


def sample_ddim(denoise: Denoise, x: torch.Tensor, gammas: torch.Tensor, noise: Callable, eta: float = 0.0,
                progress=None):
    """DDIM (Song et al. 2021, Eq. 12); eta = 0 is deterministic, eta = 1 matches DDPM's variance."""
    for s, t in _steps(gammas, progress):
        x0 = denoise(x, s)
        eps = (x - s ** 0.5 * x0) / (1 - s) ** 0.5
        sigma = eta * ((1 - t) / (1 - s) * (1 - s / t)) ** 0.5
        x = t ** 0.5 * x0 + max(1 - t - sigma ** 2, 0.0) ** 0.5 * eps
        if sigma > 0:
            x = x + sigma * noise(x)
    return x


def sample_dpmpp_2m(denoise: Denoise, x: torch.Tensor, gammas: torch.Tensor, noise: Callable = None,
                    progress=None):
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): second-order multistep in log-SNR.

    With alpha = sqrt(gamma), sigma = sqrt(1 - gamma), lambda = log(alpha / sigma) and
    h = lambda_t - lambda_s:
        x_t = (sigma_t / sigma_s) x_s - alpha_t (exp(-h) - 1) D,
    where D = (1 + 1/(2r)) x0_s - 1/(2r) x0_prev and r = h_prev / h (D = x0_s on the
    first step).  The final step to gamma = 1 returns the denoised estimate.
    """
    lambdas = gamma_to_lambda(gammas.clamp(max=1 - 1e-12).double())
    x0_prev, h_prev = None, None
    for i, (s, t) in enumerate(_steps(gammas, progress)):
        x0 = denoise(x, s)
        if t >= 1.0:
            x = x0
            break
        h = float(lambdas[i + 1] - lambdas[i])
        if x0_prev is None:
            d = x0
        else:
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
        x = ((1 - t) / (1 - s)) ** 0.5 * x - t ** 0.5 * torch.expm1(torch.tensor(-h)).item() * d
        x0_prev, h_prev = x0, h
    return x


SAMPLERS = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "dpmpp": sample_dpmpp_2m,
}


def _steps(gammas: torch.Tensor, progress):
    """Yield consecutive (gamma_s, gamma_t) pairs as Python floats, ticking a progress bar."""
    g = gammas.double().tolist()
    for s, t in zip(g[:-1], g[1:]):
        yield s, t
        if progress is not None:
            progress(1)
