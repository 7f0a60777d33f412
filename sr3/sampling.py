"""The one sampling procedure, for SR stages, base models and truncated cascade stages.

:func:`sample` is the whole of it: build the model's denoiser (the objective's
class, :func:`sr3.diffusion.make_denoiser`), wrap it in tiles if asked, start from
per-image seeded noise, walk the inference schedule with the chosen sampler, and map
the result out of diffusion space.  Everything it needs to know about *how* to sample
is one :class:`sr3.config.SamplingConfig`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .augment import truncated_gammas
from .config import Config, SamplingConfig
from .diffusion import Conditioning, Denoiser, make_denoiser
from .errors import UserError
from .samplers import SAMPLERS, PerSampleNoise, StepCallback
from .schedules import inference_gammas
from .tiling import TiledDenoiser


def check_tile(sampling: SamplingConfig, config: Config) -> None:
    """A positive tile must suit the U-Net (a multiple of its size multiple)."""
    m = config.model.size_multiple
    if sampling.tile and sampling.tile % m:
        raise UserError(f"--tile {sampling.tile} must be a multiple of {m} for this model (or 0 = whole image)")


def check_guidance(sampling: SamplingConfig, config: Config, has_labels: bool) -> None:
    """Classifier-free guidance needs class labels and a model that learnt the "no class" label."""
    if sampling.guidance and not (config.model.null_class and has_labels):
        raise UserError(f"--guidance {sampling.guidance:g} needs a class-conditional model trained with class "
                        "dropout (model.null_class, train.class_dropout > 0); use --guidance 0 for this model")


def noise_levels(denoiser: Denoiser, sampling: SamplingConfig, stop_level: float = 0.0) -> torch.Tensor:
    """The gammas the sampler visits: the schedule, as the denoiser needs it, cut at ``stop_level``."""
    gammas = denoiser.noise_levels(inference_gammas(sampling.steps, sampling.inference_schedule, denoiser.config))
    return truncated_gammas(gammas, stop_level) if stop_level > 0 else gammas


def count_evaluations(config: Config, sampling: SamplingConfig, height: int, width: int,
                      stop_level: float = 0.0) -> int:
    """Network evaluations (steps x tiles) to sample one batch of ``height`` x ``width`` images."""
    steps = len(noise_levels(make_denoiser(None, config.diffusion, Conditioning()), sampling, stop_level)) - 1
    tiles = len(TiledDenoiser(None, sampling.tile, sampling.overlap).tiles(height, width)) if sampling.tile else 1
    return steps * tiles


def sample(model: torch.nn.Module, config: Config, cond: Conditioning, shape: tuple[int, ...],
           sampling: SamplingConfig, seeds: list[int], *, stop_level: float = 0.0, device="cpu", bf16: bool = False,
           progress: Callable[[], None] | None = None, callback: StepCallback | None = None) -> torch.Tensor:
    """Sample a batch [B, C, H, W] from ``model`` given its conditioning.

    seeds: one per image; ``seeds[k]`` seeds image k's own generator (initial noise and
        every sampler step), so image k does not depend on the batch it is in (with
        per-image network evaluation, the CPU default: see SamplingConfig.network_batching).
    stop_level: 0 = a full sample, returned as an image in [-1, 1]; s in (0, 1) = stop the
        reverse process at gamma = 1 - s^2 and return the noisy x_s in diffusion space,
        unclipped (CDM's truncated conditioning, Eq. 4).
    bf16: bf16 autocast where the hardware runs it fast (sr3.diffusion.autocast).
    progress: called once per network evaluation (per tile when tiled).
    callback: called after every step with the sampler's info dict plus ``"image"``, the
        current clean-image estimate in [-1, 1] (for refinement frames).
    """
    if len(seeds) != shape[0]:
        raise ValueError("need one seed per image")
    check_tile(sampling, config)
    check_guidance(sampling, config, cond.class_label is not None)
    cond = cond.to(device)
    denoiser = make_denoiser(model, config.diffusion, cond, bf16=bf16, batched=sampling.batched(device),
                             on_evaluation=progress, guidance=sampling.guidance, null_class=config.model.num_classes)
    denoise = TiledDenoiser(denoiser, sampling.tile, sampling.overlap) if sampling.tile else denoiser
    gammas = noise_levels(denoiser, sampling, stop_level)
    noise = PerSampleNoise(seeds, sampling.temperature)
    def step_callback(info: dict) -> None:
        callback({**info, "image": denoiser.to_image(info["denoised"])})
    # the starting noise is passed without a name here, so the sampler holds the only reference and it is
    # freed after the first step (200 MB per 4096 px image)
    x = SAMPLERS[sampling.sampler](denoise, noise(torch.empty(shape, device=device)), gammas, noise,
                                   eta=sampling.eta, callback=step_callback if callback is not None else None)
    if not torch.isfinite(x).all():  # NaN would become a black image: an error, never a result
        raise UserError(f"sampling gave non-finite values (NaN/inf) with {sampling.sampler}, {sampling.steps} "
                        "steps; the model's weights or these sampling settings are broken (a diverged training run?)")
    return x if stop_level > 0 else denoiser.to_image(x)
