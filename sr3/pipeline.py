"""A loaded super-resolution model for images of any size (``sr3.load``).

:class:`SRPipeline` pads an LR batch to what the U-Net accepts, conditions on its
bicubic upsampling and calls the one sampling function, :func:`sr3.sampling.sample`,
with the model's :class:`~sr3.config.SamplingConfig` (its ``sampling.json`` if the
model directory has one, else the defaults) and any per-call overrides.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from .checkpoint import load_model_dir, load_sampling_defaults
from .config import Config, SamplingConfig
from .degradation import upsample
from .diffusion import Conditioning
from .errors import UserError
from .imageio import pil_to_tensor, tensor_to_pil
from .predict_refine import BicubicAnchor, load_anchor
from .sampling import count_evaluations, sample

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_MODEL_DIR = WEIGHTS_DIR / "sr3-refine-4x"
"""The default 4x model: a diffusion refiner around a regression predictor, computing at LR resolution
(sr3/predict_refine.py; its model_card.json)."""
SR3_4X_DIR = WEIGHTS_DIR / "sr3-4x"
"""The previous default: SR3 at full output resolution (20 DDIM steps); the shipped 16x cascade uses it."""
DEFAULT_REGRESSION_DIR = WEIGHTS_DIR / "regression-4x"


def lr_multiple(config: Config) -> int:
    """LR sides are padded to a multiple of this so the HR side suits the U-Net."""
    m = config.model.size_multiple
    return m // math.gcd(m, config.data.scale)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad the bottom/right of [B, C, H, W] up to multiples of ``multiple``."""
    ph, pw = -x.shape[-2] % multiple, -x.shape[-1] % multiple
    if not (ph or pw):
        return x
    mode = "reflect" if ph < x.shape[-2] and pw < x.shape[-1] else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


class SRPipeline:
    """A loaded super-resolution model.  ``pipe.upscale(img, seed=0, steps=20)``.

    sampling: the default sampling settings of this model; keyword overrides of any
    SamplingConfig field (``sampler=``, ``steps=``, ``temperature=``, ``tile=`` ...) apply per call.
    """

    def __init__(self, model: torch.nn.Module, config: Config, device: str | torch.device = "cpu",
                 bf16: bool = True, sampling: SamplingConfig | None = None, anchor: BicubicAnchor | None = None):
        if config.data.task != "sr":
            raise UserError("this model generates images from class labels; use sr3 generate, not upscale")
        self.model, self.config, self.device, self.bf16 = model.to(device), config, torch.device(device), bf16
        self.sampling = sampling or SamplingConfig()
        self.scale = config.data.scale
        # what conditions the model: the bicubic upsampling, or a predictor's output (sr3/predict_refine.py)
        self.anchor = anchor.to(device) if anchor is not None else BicubicAnchor()

    def settings(self, sampling: SamplingConfig | None = None, **overrides) -> SamplingConfig:
        """The sampling settings of one call: ``sampling`` (default: the model's) with ``overrides``."""
        return dataclasses.replace(sampling or self.sampling, **overrides)

    def upscale_tensor(self, lr: torch.Tensor, *, seed: int | list[int] = 0, sampling: SamplingConfig | None = None,
                       progress=None, callback=None, **overrides) -> torch.Tensor:
        """[B, 3, h, w] in [-1, 1] -> [B, 3, h*scale, w*scale].

        seed: one int (image k gets seed + k) or a list with one seed per image.
        progress / callback: see :func:`sr3.sampling.sample`.
        """
        settings = self.settings(sampling, **overrides)
        seeds = [seed + k for k in range(lr.shape[0])] if isinstance(seed, int) else list(seed)
        h, w = lr.shape[-2:]
        padded = pad_to_multiple(lr, lr_multiple(self.config))
        with torch.inference_mode():
            cond = self.anchor(Conditioning(lr_upsampled=upsample(padded, self.scale)), settings, self.device,
                               self.bf16)
            sr = sample(self.model, self.config, cond, cond.lr_upsampled.shape, settings, seeds, device=self.device,
                        bf16=self.bf16, progress=progress, callback=callback)
        return sr[..., :h * self.scale, :w * self.scale].cpu()

    def count_evaluations(self, lr_height: int, lr_width: int, sampling: SamplingConfig | None = None) -> int:
        """Network evaluations (steps x tiles) for one batch of LR images of this size."""
        m = lr_multiple(self.config)
        h, w = (-(-n // m) * m * self.scale for n in (lr_height, lr_width))
        sampling = sampling or self.sampling
        return count_evaluations(self.config, sampling, h, w) + self.anchor.count_evaluations(h, w, sampling)

    def upscale(self, image: Image.Image, **kwargs) -> Image.Image:
        """Upscale one PIL image by ``self.scale`` (keyword arguments as in upscale_tensor)."""
        lr = pil_to_tensor(image.convert("RGB"))[None]
        return tensor_to_pil(self.upscale_tensor(lr, **kwargs)[0])


def load(path: str | Path | None = None, device: str | torch.device = "cpu", bf16: bool = True) -> SRPipeline:
    """Load a model directory (default: the 4x model shipped in the package) as a pipeline."""
    if path is None:
        if not (DEFAULT_MODEL_DIR / "config.json").exists():
            raise UserError("no default model is installed; pass --model DIR (train one with sr3 train)")
        path = DEFAULT_MODEL_DIR
    model, config = load_model_dir(path, device)
    return SRPipeline(model, config, device=device, bf16=bf16, sampling=load_sampling_defaults(path),
                      anchor=load_anchor(path, config, device))
