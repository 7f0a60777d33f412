"""Predict and refine (Whang et al., CVPR 2022, "Deblurring via Stochastic Refinement").

A deterministic *predictor* (a regression U-Net, SR3's regression baseline trained on
its own) estimates the conditional mean of the HR image; a diffusion *refiner* then
samples only the residual detail around that estimate, conditioned on it.  In this
toolkit's contract the anchor image is the conditioning: the predictor's output takes
the place of the bicubic upsampling in :class:`sr3.diffusion.Conditioning`
(``lr_upsampled``), and a refiner trained with ``diffusion.target = "residual"``
diffuses HR - predictor(LR) instead of HR - bicubic(LR).  Nothing else changes: the
samplers, the tiling and the training loss see an ordinary conditioned denoiser.

This module is the one place that knows about the predictor.  An :class:`Anchor`
turns bicubic conditioning into the model's conditioning: :class:`BicubicAnchor`
leaves it as it is (every model with ``diffusion.anchor = "bicubic"``), and
:class:`Predictor` replaces it by the predictor's output.  A refiner's model
directory holds its predictor in the sub-folder ``predictor/`` (an ordinary model
directory, usable alone as the deterministic upscaler).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint import CONFIG_FILE, WEIGHTS_FILE, copy_model_files, load_model_dir, resolve_model_dir
from .config import Config, SamplingConfig
from .diffusion import Conditioning
from .errors import UserError
from .sampling import count_evaluations, sample

PREDICTOR_DIR = "predictor"
"""Sub-folder of a refiner's model directory that holds its predictor."""


class BicubicAnchor:
    """SR3's conditioning: the bicubic upsampling of the LR image, unchanged."""

    def to(self, device) -> "BicubicAnchor":
        return self

    def __call__(self, cond: Conditioning, sampling: SamplingConfig, device, bf16: bool) -> Conditioning:
        return cond

    def count_evaluations(self, height: int, width: int, sampling: SamplingConfig) -> int:
        return 0


class Predictor(BicubicAnchor):
    """The deterministic first stage: its regression output replaces the bicubic conditioning.

    model, config: a regression model (``diffusion.objective = "regression"``) for the refiner's scale.
    It runs through :func:`sr3.sampling.sample` (one network evaluation per tile), with the tile,
    overlap and batching of the refiner's sampling settings, so memory stays bounded the same way.
    """

    def __init__(self, model: torch.nn.Module, config: Config):
        self.model, self.config = model, config

    def to(self, device) -> "Predictor":
        return Predictor(self.model.to(device), self.config)

    def settings(self, sampling: SamplingConfig) -> SamplingConfig:
        return SamplingConfig(steps=1, tile=sampling.tile, overlap=sampling.overlap,
                              network_batching=sampling.network_batching)

    def __call__(self, cond: Conditioning, sampling: SamplingConfig, device, bf16: bool) -> Conditioning:
        lr_upsampled = cond.lr_upsampled
        with torch.no_grad():
            predicted = sample(self.model, self.config, cond, lr_upsampled.shape, self.settings(sampling),
                               seeds=[0] * lr_upsampled.shape[0], device=device, bf16=bf16)
        return cond.with_lr(predicted.to(lr_upsampled.device))

    def count_evaluations(self, height: int, width: int, sampling: SamplingConfig) -> int:
        return count_evaluations(self.config, self.settings(sampling), height, width)


def check_predictor(predictor_config: Config, refiner_config: Config, where: str | Path) -> None:
    """A predictor must be a regression model of the refiner's scale (a UserError naming ``where`` otherwise)."""
    # Deterministic = its denoiser takes one evaluation whatever the step count (the denoiser registry,
    # sr3/diffusion.py, decides; a regression model is one).
    size = predictor_config.model.size_multiple
    if count_evaluations(predictor_config, SamplingConfig(steps=2, tile=0), size, size) != 1:
        raise UserError(f"{where}: the predictor must be a regression model (sr3 train --preset cpu-4x-predictor); "
                        "this one is a diffusion model")
    if predictor_config.data.scale != refiner_config.data.scale:
        raise UserError(f"{where}: the predictor upscales {predictor_config.data.scale}x but the refiner "
                        f"{refiner_config.data.scale}x; train both for the same --data.scale")


def load_predictor(path: str | Path, refiner_config: Config, device="cpu") -> Predictor:
    """The predictor in model directory ``path`` (or a training run's folder), checked against the refiner."""
    model, config = load_model_dir(path, device)
    check_predictor(config, refiner_config, path)
    return Predictor(model.requires_grad_(False), config)


def load_anchor(model_dir: str | Path, config: Config, device="cpu") -> BicubicAnchor:
    """The anchor of the model in ``model_dir``: its ``predictor/`` when ``diffusion.anchor = "predictor"``."""
    if config.diffusion.anchor == "bicubic":
        return BicubicAnchor()
    folder = resolve_model_dir(model_dir) / PREDICTOR_DIR
    if not (folder / CONFIG_FILE).exists():
        raise UserError(f"{folder}: missing; this refiner (diffusion.anchor = predictor) needs its predictor's "
                        f"{CONFIG_FILE} and {WEIGHTS_FILE} there (sr3 train --predictor DIR puts them there)")
    return load_predictor(folder, config, device)


def copy_predictor(source: str | Path, model_dir: Path) -> None:
    """Put the predictor's model directory into the refiner's as ``predictor/`` (config and weights)."""
    copy_model_files(source, model_dir / PREDICTOR_DIR)
