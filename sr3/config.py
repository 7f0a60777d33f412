"""Configuration: frozen dataclasses that travel with the weights as JSON.

A model directory holds ``config.json`` (a :class:`Config`) and
``model.safetensors``; :func:`Config.from_json` rebuilds everything needed to
run the model, so no flag is ever re-supplied at inference.  CLI flags for
``sr3 train`` are generated from these fields (see :func:`add_dataclass_arguments`),
never the other way round.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

from .errors import UserError

CONFIG_VERSION = 1


@dataclass(frozen=True)
class UNetConfig:
    """The SR3 U-Net (Saharia et al. 2021, Sec. 3 and App. A; BigGAN residual blocks)."""

    base_channels: int = 64
    """Channels at the first level; level i has base_channels * channel_mult[i]."""
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    """Per-level channel multipliers; len = number of resolutions (each level halves H, W)."""
    num_res_blocks: int = 2
    """Residual blocks per level in the encoder (the decoder has one more)."""
    attention_levels: tuple[int, ...] = ()
    """Level indices (0 = full resolution) that get self-attention after each block."""
    mid_attention: bool = True
    """Self-attention in the middle block (the paper's U-Net has it).  Attention memory grows with
    the square of the pixel count, so whole-image (untiled) inference of large photos needs it off."""
    attention_heads: int = 4
    dropout: float = 0.0
    """Dropout probability inside residual blocks, in [0, 1)."""
    image_channels: int = 3
    """Channels of the image being denoised (RGB = 3)."""
    cond_channels: int = 3
    """Channels of the upsampled low-resolution image concatenated to the input; 0 for a base (unconditional/class) model."""
    num_classes: int = 0
    """Size of the class embedding table; 0 = no class conditioning."""
    aug_level_conditioning: bool = False
    """Also embed the conditioning-augmentation noise level (CDM Sec. 4.1); used by cascade SR stages."""
    groupnorm_groups: int = 32


@dataclass(frozen=True)
class DiffusionConfig:
    """How the network is trained to denoise (SR3 Sec. 2) and what it predicts."""

    objective: Literal["diffusion", "regression"] = "diffusion"
    """diffusion = SR3; regression = same U-Net predicting the HR image directly (the paper's baseline)."""
    schedule: Literal["linear", "cosine"] = "linear"
    """Training noise schedule over ``timesteps`` steps (linear beta as in SR3, or cosine of Nichol & Dhariwal)."""
    timesteps: int = 2000
    beta_start: float = 1e-6
    beta_end: float = 1e-2
    prediction: Literal["eps", "v"] = "eps"
    """What the network outputs: the noise eps (SR3) or v = sqrt(g) eps - sqrt(1-g) x0 (Salimans & Ho 2022)."""
    loss: Literal["l1", "l2"] = "l1"
    """Distance between prediction and target; SR3 found L1 gives better sample diversity/quality."""
    target: Literal["image", "residual"] = "image"
    """What is diffused: the HR image (SR3) or the residual HR - bicubic(LR) (anchors low frequencies
    to the input; SRDiff, Li et al. 2022).  Ignored for base models without LR input."""
    residual_scale: float = 1.0
    """Multiplier on the residual so that it has roughly unit variance; the sampler divides it back."""


@dataclass(frozen=True)
class DataConfig:
    task: Literal["sr", "generate"] = "sr"
    """sr = super-resolution (LR conditioning); generate = class-conditional base model."""
    scale: int = 4
    """Upscaling factor (2, 4 or 8) for sr."""
    crop_size: int = 128
    """High-resolution crop side in pixels (must divide by scale and 2**(levels-1))."""
    hflip: bool = True
    """Random horizontal flips."""
    vflip: bool = False
    downscale_max: float = 1.0
    """Each HR crop is cut from the image shrunk by a random factor in [1, downscale_max] (log-uniform,
    anti-aliased), so that a few very large photos also teach the detail density of ordinary-sized
    ones; 1 = native resolution only."""
    # Conditioning augmentation (CDM Sec. 4.1) on the LR input of an SR stage.
    aug_noise_max: float = 0.0
    """Max Gaussian-noise augmentation level s in [0, 1): LR is noised to sqrt(1-s^2)... see augment.py; 0 = off."""
    aug_blur_prob: float = 0.0
    """Fraction of training examples whose LR input is Gaussian-blurred (CDM, high-resolution stages)."""
    aug_blur_sigma: tuple[float, float] = (0.4, 0.6)
    """Range of the blur kernel's standard deviation (pixels of the upsampled input)."""
    source: Literal["auto", "memory", "stream"] = "auto"
    """memory = decode every image once and keep it in RAM; stream = decode per draw from a file index
    written once to OUT/data_index (memory independent of the dataset size, sr3/streaming.py);
    auto = stream tar shards and folders of 2,000 or more images.  Draws are identical either way."""
    num_workers: int = 0
    """Data-loader worker processes (>= 0) that build the next batches while the model trains;
    0 = build them on the training thread.  Batches do not depend on it."""


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 10000
    batch_size: int = 8
    """Images per optimiser step, summed over all processes."""
    lr: float = 2e-4
    warmup_steps: int = 500
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    bf16: bool = True
    """bf16 autocast (CPU and CUDA); 2.2x faster training steps on the project's AVX-512 CPUs."""
    seed: int = 0
    log_every: int = 10
    sample_every: int = 500
    """Write a LR | SR | HR grid every N steps (0 = never)."""
    checkpoint_every: int = 250
    sample_steps: int = 20
    grad_accum: int = 1
    """Micro-batches per process and step (>= 1); gradients are summed before the optimiser step.  The
    batch is cut into (processes x grad_accum) parts, part p drawn from (seed, step, p): a run keeps
    its exact steps on fewer devices when processes x grad_accum stays the same."""
    compile: bool = False
    """torch.compile the U-Net for training (pays a compile of minutes once; for long GPU runs)."""
    channels_last: Literal["auto", "on", "off"] = "auto"
    """Weights in channels-last memory format (faster tensor-core convolutions); auto = on for CUDA."""


@dataclass(frozen=True)
class Config:
    model: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    version: int = CONFIG_VERSION

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "Config":
        return _from_dict(cls, d, source)

    @classmethod
    def from_json_file(cls, path: str | Path) -> "Config":
        return cls.from_dict(read_json(path, "config file"), str(path))

    def replace(self, **sections) -> "Config":
        return dataclasses.replace(self, **sections)


def read_json(path: str | Path, what: str) -> dict:
    """Parse a JSON file, or raise a one-line UserError naming it (``what``: e.g. "config file")."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e}); fix or regenerate the file") from None


def _from_dict(cls, d, source: str):
    """Build a (nested) frozen dataclass from a dict, rejecting unknown keys and wrong types."""
    if not isinstance(d, dict):
        raise UserError(f"{source}: expected a JSON object for {cls.__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise UserError(f"{source}: unknown {cls.__name__} field(s) {sorted(unknown)}; remove them")
    kwargs = {}
    for f in fields(cls):
        if f.name not in d:
            continue
        kwargs[f.name] = _coerce(hints[f.name], d[f.name], f"{source}: {cls.__name__}.{f.name}")
    return cls(**kwargs)


def _coerce(tp, value, where: str):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {value!r}")
        (elem, *rest) = typing.get_args(tp)
        return tuple(_coerce(elem, v, where) for v in value)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise UserError(f"{where}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where}: expected a number, got {value!r}")
        return float(value)
    return value


# ---------------------------------------------------------------- CLI flags
def add_dataclass_arguments(parser: argparse.ArgumentParser, cls, prefix: str) -> None:
    """Add one optional ``--prefix.field`` flag per field of ``cls`` (default None = keep config value)."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(f"{prefix} overrides ({cls.__name__})")
    for f in fields(cls):
        tp = hints[f.name]
        flag = f"--{prefix}.{f.name.replace('_', '-')}"
        dest = f"{prefix}__{f.name}"
        origin = typing.get_origin(tp)
        if tp is bool:
            group.add_argument(flag, dest=dest, type=_parse_bool, default=None, metavar="BOOL")
        elif origin is tuple:
            elem = typing.get_args(tp)[0]
            group.add_argument(flag, dest=dest, type=elem, nargs="*", default=None)
        elif origin is Literal:
            group.add_argument(flag, dest=dest, choices=typing.get_args(tp), default=None)
        else:
            group.add_argument(flag, dest=dest, type=tp, default=None)


def apply_overrides(config: Config, args: argparse.Namespace) -> Config:
    """Return ``config`` with every ``--section.field`` flag that was given applied."""
    sections = {}
    for section in fields(Config):
        if section.name == "version":
            continue
        current = getattr(config, section.name)
        changes = {f.name: getattr(args, f"{section.name}__{f.name}") for f in fields(current)
                   if getattr(args, f"{section.name}__{f.name}", None) is not None}
        if changes:
            sections[section.name] = dataclasses.replace(current, **{
                k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()})
    return config.replace(**sections) if sections else config


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")
