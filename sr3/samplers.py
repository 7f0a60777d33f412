"""Samplers: plain functions of ``(denoise, x, gammas, noise, eta, callback)``.

``denoise(x, gamma) -> x0_hat`` is a :class:`sr3.diffusion.Denoiser` (conditioning
already bound); ``gammas`` is a decreasing-noise sequence from
:func:`sr3.schedules.inference_gammas`, ending at 1.0 (no noise) — or at a level
below 1 for a truncated cascade stage (CDM Eq. 4), in which case the noisy x at that
level is returned; ``x`` starts as unit Gaussian noise.  Any sampler works with any
step count on any trained model, because the network was trained on a continuum of
noise levels.

Every sampler takes the same arguments: ``eta`` (stochasticity; only DDIM has a free
one, the others reject a nonzero value) and ``callback(info)``, called after every
step with ``{"i": step index, "gamma": level reached, "x": new state, "denoised": x0_hat}``
(both in diffusion space), e.g. to save refinement frames.

Randomness comes from ``noise(like)``, which draws each example's noise from that
example's own generator (:class:`PerSampleNoise`), so image k is the same whatever
the batch size.  It must return a fresh tensor: the samplers scale it in place.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .schedules import gamma_to_lambda

Denoise = Callable[[torch.Tensor, float], torch.Tensor]
StepCallback = Callable[[dict], None]


class PerSampleNoise:
    """Gaussian noise with one ``torch.Generator`` per example.

    ``temperature`` (in [0, 1], default 1 = standard normal) scales every draw: the
    starting noise and any noise a sampler injects.  Below 1 the sample moves towards
    the denoiser's mean prediction: less invented detail, higher PSNR (the temperature
    of SRFlow, Lugmayr et al. 2020, applied to a diffusion sampler's noise).
    """

    def __init__(self, seeds: list[int], temperature: float = 1.0):
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.temperature = temperature

    def __call__(self, like: torch.Tensor) -> torch.Tensor:
        # drawn straight into one batch tensor (no per-image copies: at 4096 px one image's noise is 200 MB)
        noise = torch.empty((len(self.generators), *like.shape[1:]))
        for k, g in enumerate(self.generators):
            torch.randn(like.shape[1:], generator=g, out=noise[k])
        if self.temperature != 1.0:
            noise.mul_(self.temperature)
        return noise.to(like.device, like.dtype)


def sample_ddpm(denoise: Denoise, x: torch.Tensor, gammas: torch.Tensor, noise: Callable, eta: float = 0.0,
                callback: StepCallback | None = None) -> torch.Tensor:
    """Ancestral sampling: draw from the posterior q(y_t | y_s, y0_hat) at each step.

    From level gamma_s to the less noisy gamma_t, with alpha = gamma_s / gamma_t:
        mean = sqrt(gamma_t) (1 - alpha) / (1 - gamma_s) * y0_hat
             + sqrt(alpha) (1 - gamma_t) / (1 - gamma_s) * y_s
        var  = (1 - gamma_t) / (1 - gamma_s) * (1 - alpha)
    This is DDPM's posterior variance beta~ (Ho et al. 2020, Eq. 7), not the beta_t of
    SR3's Algorithm 2 (which writes the same mean through eps).  Why: with y0_hat clipped
    to the image range, the posterior is the exact reverse step given y0_hat, and beta~
    adds no noise at the final step (var = 0 when gamma_t = 1), where beta_t would leave
    noise of std sqrt(beta_1) in the output; on the few-step schedules used here beta_t
    also gives visibly noisier images.  The two coincide as the step count grows.
    """
    if eta:
        raise ValueError("ddpm has no eta (its noise is fixed by the posterior); use ddim for eta")
    for i, (s, t) in enumerate(_steps(gammas)):
        x0 = denoise(x, s)
        alpha = s / t
        # the mean and the noise are summed in place: full-image temporaries bound the memory of large upscales
        mean = (t ** 0.5 * (1 - alpha) / (1 - s)) * x0
        mean += (alpha ** 0.5 * (1 - t) / (1 - s)) * x
        var = (1 - t) / (1 - s) * (1 - alpha)
        if var > 0:
            mean += noise(x).mul_(var ** 0.5)
        x = mean
        _report(callback, i, t, x, x0)
    return x


def sample_ddim(denoise: Denoise, x: torch.Tensor, gammas: torch.Tensor, noise: Callable, eta: float = 0.0,
                callback: StepCallback | None = None) -> torch.Tensor:
    """DDIM (Song et al. 2021, Eq. 12); eta = 0 is deterministic, eta = 1 matches DDPM's variance."""
    for i, (s, t) in enumerate(_steps(gammas)):
        x0 = denoise(x, s)
        eps = torch.mul(x0, -(s ** 0.5)).add_(x)  # = x - sqrt(s) x0 exactly, with no temporary
        del x  # not needed past here: one full-size tensor fewer while the next one is made
        eps /= (1 - s) ** 0.5
        sigma = eta * ((1 - t) / (1 - s) * (1 - s / t)) ** 0.5
        x = t ** 0.5 * x0
        x += eps.mul_(max(1 - t - sigma ** 2, 0.0) ** 0.5)  # in place, as in sample_ddpm
        if sigma > 0:
            x += noise(x).mul_(sigma)
        _report(callback, i, t, x, x0)
    return x


def sample_dpmpp_2m(denoise: Denoise, x: torch.Tensor, gammas: torch.Tensor, noise: Callable = None,
                    eta: float = 0.0, callback: StepCallback | None = None) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): second-order multistep in log-SNR.

    With alpha = sqrt(gamma), sigma = sqrt(1 - gamma), lambda = log(alpha / sigma) and
    h = lambda_t - lambda_s:
        x_t = (sigma_t / sigma_s) x_s - alpha_t (exp(-h) - 1) D,
    where D = (1 + 1/(2r)) x0_s - 1/(2r) x0_prev and r = h_prev / h (D = x0_s on the
    first step).  The final step to gamma = 1 returns the denoised estimate.
    """
    if eta:
        raise ValueError("dpmpp is deterministic and has no eta; use ddim for eta")
    lambdas = gamma_to_lambda(gammas.clamp(max=1 - 1e-12).double())
    x0_prev, h_prev = None, None
    for i, (s, t) in enumerate(_steps(gammas)):
        x0 = denoise(x, s)
        if t >= 1.0:
            x = x0
            _report(callback, i, t, x, x0)
            break
        h = float(lambdas[i + 1] - lambdas[i])
        if x0_prev is None:
            d = x0
        else:
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * x0
            d -= (1 / (2 * r)) * x0_prev  # in place, as in sample_ddpm
        x = ((1 - t) / (1 - s)) ** 0.5 * x
        x -= (t ** 0.5 * torch.expm1(torch.tensor(-h)).item()) * d
        x0_prev, h_prev = x0, h
        _report(callback, i, t, x, x0)
    return x


SAMPLERS = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "dpmpp": sample_dpmpp_2m,
}
"""SamplingConfig.sampler -> sampler function (sr3.config.SAMPLER_NAMES lists the same keys)."""


def _steps(gammas: torch.Tensor):
    """Consecutive (gamma_s, gamma_t) pairs as Python floats."""
    g = gammas.double().tolist()
    return list(zip(g[:-1], g[1:]))


def _report(callback: StepCallback | None, i: int, gamma: float, x: torch.Tensor, denoised: torch.Tensor) -> None:
    if callback is not None:
        callback({"i": i, "gamma": gamma, "x": x, "denoised": denoised})
