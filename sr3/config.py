"""Configuration: frozen dataclasses that travel with the weights as JSON.

A model directory holds ``config.json`` (a :class:`Config`) and
``model.safetensors``; :func:`Config.from_json_file` rebuilds everything needed to
run the model, so no flag is ever re-supplied at inference.  A cascade directory's
``cascade.json`` carries one :class:`SamplingConfig` per stage.

One rule for every config, wherever it comes from:

* every field is range-checked in ``__post_init__`` (so a preset, a JSON file, a
  CLI flag and ``dataclasses.replace`` are all validated the same way, and loading a
  model directory validates it);
* JSON is read by :func:`from_dict` only: unknown keys and wrong types are errors;
* CLI flags are generated from the fields (:func:`add_dataclass_arguments`), never
  declared by hand, and applied with :func:`apply_flags`.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import math
import textwrap
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

from .errors import UserError

CONFIG_VERSION = 1
SUPPORTED_SCALES = (2, 3, 4, 8)
SAMPLER_NAMES = ("ddpm", "ddim", "dpmpp")
"""Keys of :data:`sr3.samplers.SAMPLERS` (a test checks they agree)."""


def require(ok: bool, message: str) -> None:
    """Raise a one-line :class:`UserError` unless ``ok`` (config validation)."""
    if not ok:
        raise UserError(message)


def _finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _in_range(name: str, value, low, high, *, low_open=False, high_open=False) -> None:
    """``value`` must be a finite number within [low, high] (bounds optionally open; None = unbounded)."""
    ok = _finite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    interval = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
    require(ok, f"{name} = {value!r} is outside {interval}")


@dataclass(frozen=True)
class UNetConfig:
    """The SR3 U-Net (Saharia et al. 2021, Sec. 3 and App. A; BigGAN residual blocks)."""

    base_channels: int = 64
    """Channels at the first level (>= 1); level i has base_channels * channel_mult[i]."""
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    """Per-level channel multipliers (each >= 1); len = number of resolutions (each level halves H, W)."""
    num_res_blocks: int = 2
    """Residual blocks per level in the encoder (>= 1; the decoder has one more)."""
    attention_levels: tuple[int, ...] = ()
    """Level indices (0 = full resolution, < len(channel_mult)) that get self-attention after each block."""
    mid_attention: bool = True
    """Self-attention in the middle block (the paper's U-Net has it).  Attention memory grows with
    the square of the pixel count, so whole-image (untiled) inference of large photos needs it off."""
    attention_heads: int = 4
    """Heads of every self-attention layer (>= 1, dividing the channels where attention runs)."""
    dropout: float = 0.0
    """Dropout probability inside residual blocks, in [0, 1)."""
    image_channels: int = 3
    """Channels of the image being denoised (RGB = 3), >= 1."""
    cond_channels: int = 3
    """Channels of the upsampled low-resolution image concatenated to the input; 0 for a base (unconditional/class) model."""
    num_classes: int = 0
    """Size of the class embedding table (>= 0); 0 = no class conditioning."""
    aug_level_conditioning: bool = False
    """Also embed the conditioning-augmentation noise level (CDM Sec. 4.1); used by cascade SR stages."""
    null_class: bool = False
    """Reserve one more class embedding, index num_classes, meaning "no class": the unconditional model
    of classifier-free guidance (Ho & Salimans 2022), learnt by training with train.class_dropout > 0."""
    groupnorm_groups: int = 32
    """GroupNorm groups (>= 1); must divide every level's channel count (base_channels * mult)."""
    pixel_unshuffle: int = 1
    """Space-to-depth factor (1, 2 or 4) applied to the noisy image and its conditioning before the first
    convolution, undone by a pixel shuffle after the last (Shi et al. 2016): with 4 every block runs at
    the LR resolution of a 4x model, about 16x fewer FLOPs per output pixel for the same width.
    1 = the SR3 U-Net at full output resolution."""

    def __post_init__(self):
        require(self.pixel_unshuffle in (1, 2, 4),
                f"model.pixel_unshuffle = {self.pixel_unshuffle} must be 1, 2 or 4")
        require(self.base_channels >= 1, f"model.base_channels = {self.base_channels} must be >= 1")
        require(len(self.channel_mult) >= 1 and all(m >= 1 for m in self.channel_mult),
                f"model.channel_mult = {list(self.channel_mult)} needs at least one level, each >= 1")
        require(self.num_res_blocks >= 1, f"model.num_res_blocks = {self.num_res_blocks} must be >= 1")
        require(all(0 <= a < len(self.channel_mult) for a in self.attention_levels),
                f"model.attention_levels = {list(self.attention_levels)} must index levels 0-{len(self.channel_mult) - 1}")
        require(self.attention_heads >= 1, f"model.attention_heads = {self.attention_heads} must be >= 1")
        _in_range("model.dropout", self.dropout, 0, 1, high_open=True)
        require(self.image_channels >= 1, f"model.image_channels = {self.image_channels} must be >= 1")
        require(self.cond_channels >= 0 and self.num_classes >= 0,
                "model.cond_channels and model.num_classes must be >= 0")
        require(not self.null_class or self.num_classes > 0, "model.null_class needs model.num_classes > 0")
        require(self.groupnorm_groups >= 1 and all(self.base_channels * m % self.groupnorm_groups == 0
                                                   for m in self.channel_mult),
                f"model.groupnorm_groups = {self.groupnorm_groups} must divide every level's channels "
                f"{[self.base_channels * m for m in self.channel_mult]}")

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this (the pixel unshuffle divides them by ``pixel_unshuffle``,
        then the U-Net halves them len(channel_mult) - 1 times)."""
        return self.pixel_unshuffle * 2 ** (len(self.channel_mult) - 1)


@dataclass(frozen=True)
class DiffusionConfig:
    """How the network is trained to denoise (SR3 Sec. 2) and what it predicts."""

    objective: Literal["diffusion", "regression"] = "diffusion"
    """diffusion = SR3; regression = same U-Net predicting the HR image directly (the paper's baseline).
    Each objective is one denoiser class in sr3/denoisers.py."""
    schedule: Literal["linear", "cosine"] = "linear"
    """Training noise schedule over ``timesteps`` steps (linear beta as in SR3, or cosine of Nichol & Dhariwal)."""
    timesteps: int = 2000
    """Steps T of the training schedule (>= 1)."""
    beta_start: float = 1e-6
    """First beta of the linear schedule, in (0, beta_end)."""
    beta_end: float = 1e-2
    """Last beta of the linear schedule, in (beta_start, 1)."""
    prediction: Literal["eps", "v", "x0"] = "eps"
    """What the network outputs: the noise eps (SR3), v = sqrt(g) eps - sqrt(1-g) x0 (Salimans & Ho 2022),
    or x0 itself."""
    loss: Literal["l1", "l2"] = "l1"
    """Distance between prediction and target; SR3 found L1 gives better sample diversity/quality."""
    target: Literal["image", "residual"] = "image"
    """What is diffused: the HR image (SR3) or the residual HR - bicubic(LR) (anchors low frequencies
    to the input; SRDiff, Li et al. 2022).  Ignored for base models without LR input."""
    residual_scale: float = 1.0
    """Multiplier (> 0) on the residual so that it has roughly unit variance; the sampler divides it back."""
    anchor: Literal["bicubic", "predictor"] = "bicubic"
    """The conditioning image (and, with target = residual, what the residual is taken around): the bicubic
    upsampling of the LR image (SR3), or the output of a deterministic regression predictor kept in the model
    directory's predictor/ folder (predict and refine, Whang et al. 2022; sr3/predict_refine.py)."""

    def __post_init__(self):
        require(self.timesteps >= 1, f"diffusion.timesteps = {self.timesteps} must be >= 1")
        _in_range("diffusion.beta_start", self.beta_start, 0, 1, low_open=True, high_open=True)
        _in_range("diffusion.beta_end", self.beta_end, self.beta_start, 1, high_open=True)
        _in_range("diffusion.residual_scale", self.residual_scale, 0, None, low_open=True)


@dataclass(frozen=True)
class DataConfig:
    task: Literal["sr", "generate"] = "sr"
    """sr = super-resolution (LR conditioning); generate = class-conditional base model."""
    scale: int = 4
    """Upscaling factor for sr: one of 2, 3, 4, 8."""
    crop_size: int = 128
    """High-resolution crop side in pixels (>= 1; must divide by scale and 2**(levels-1))."""
    hflip: bool = True
    """Random horizontal flips."""
    vflip: bool = False
    downscale_max: float = 1.0
    """Each HR crop is cut from the image shrunk by a random factor in [1, downscale_max] (log-uniform,
    anti-aliased), so that a few very large photos also teach the detail density of ordinary-sized
    ones; 1 = native resolution only."""
    # Conditioning augmentation (CDM Sec. 4.1) on the LR input of an SR stage.
    aug_noise_max: float = 0.0
    """Max Gaussian-noise augmentation level s in [0, 1) (see sr3/augment.py); 0 = off."""
    aug_blur_prob: float = 0.0
    """Fraction in [0, 1] of training examples whose LR input is Gaussian-blurred (CDM, high-resolution stages)."""
    aug_blur_sigma: tuple[float, float] = (0.4, 0.6)
    """Range (low <= high, both > 0) of the blur kernel's standard deviation (pixels of the upsampled input)."""
    source: Literal["auto", "memory", "stream"] = "auto"
    """memory = decode every image once and keep it in RAM; stream = decode per draw from a file index
    written once to OUT/data_index (memory independent of the dataset size, sr3/streaming.py);
    auto = stream tar shards and folders of 2,000 or more images.  Draws are identical either way."""
    num_workers: int = 0
    """Data-loader worker processes (>= 0) that build the next batches while the model trains;
    0 = build them on the training thread.  Batches do not depend on it."""

    def __post_init__(self):
        require(self.scale in SUPPORTED_SCALES, f"data.scale = {self.scale} is not supported; use one of "
                f"{', '.join(map(str, SUPPORTED_SCALES))}")
        require(self.crop_size >= 1, f"data.crop_size = {self.crop_size} must be >= 1")
        if self.task == "sr":
            require(self.crop_size % self.scale == 0,
                    f"data.crop_size {self.crop_size} must be divisible by data.scale {self.scale}")
        _in_range("data.downscale_max", self.downscale_max, 1, None)
        _in_range("data.aug_noise_max", self.aug_noise_max, 0, 1, high_open=True)
        _in_range("data.aug_blur_prob", self.aug_blur_prob, 0, 1)
        require(len(self.aug_blur_sigma) == 2 and all(_finite(s) and s > 0 for s in self.aug_blur_sigma)
                and self.aug_blur_sigma[0] <= self.aug_blur_sigma[1],
                f"data.aug_blur_sigma = {list(self.aug_blur_sigma)} must be two numbers 0 < low <= high")
        require(self.num_workers >= 0, f"data.num_workers = {self.num_workers} must be >= 0")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 10000
    """Total optimiser steps (>= 0)."""
    batch_size: int = 8
    """Images per optimiser step (>= 1), summed over all processes."""
    lr: float = 2e-4
    """Peak AdamW learning rate, > 0."""
    warmup_steps: int = 500
    """Linear learning-rate warm-up steps (>= 0)."""
    weight_decay: float = 0.0
    """AdamW weight decay (>= 0)."""
    ema_decay: float = 0.999
    """Decay of the exponential moving average of the weights, in [0, 1)."""
    grad_clip: float = 1.0
    """Gradient-norm clipping threshold, > 0."""
    bf16: bool = True
    """bf16 autocast (CPU and CUDA); 2.2x faster training steps on the project's AVX-512 CPUs."""
    seed: int = 0
    """Seed of every random draw (weights, data, noise), in [0, 2**63)."""
    log_every: int = 10
    """Write a log.jsonl line every N steps (>= 1)."""
    sample_every: int = 500
    """Write a LR | SR | HR grid every N steps (0 = never)."""
    checkpoint_every: int = 250
    """Write a resumable checkpoint every N steps (>= 1)."""
    keep_every: int = 0
    """Every N steps also keep the EMA weights as a model directory OUT/snapshots/step_NNNNNNN that
    upscale / evaluate load like OUT/model (0 = never): to choose the step by measurement afterwards,
    since a checkpoint is overwritten.  Each costs one model's size on disk."""
    sample_steps: int = 20
    """Sampling steps of the preview grids (>= 1)."""
    grad_accum: int = 1
    """Micro-batches per process and step (>= 1); gradients are summed before the optimiser step.  The
    batch is cut into (processes x grad_accum) parts, part p drawn from (seed, step, p): a run keeps
    its exact steps on fewer devices when processes x grad_accum stays the same."""
    compile: bool = False
    """torch.compile the U-Net for training (pays a compile of minutes once; for long GPU runs)."""
    channels_last: Literal["auto", "on", "off"] = "auto"
    """Weights in channels-last memory format (faster tensor-core convolutions); auto = on for CUDA."""
    class_dropout: float = 0.0
    """Probability in [0, 1) that a training image's class label is replaced by the null class, so one
    network learns the conditional and the unconditional model (classifier-free guidance, Ho & Salimans
    2022, Alg. 1; they use 0.1-0.2).  Needs model.null_class."""

    def __post_init__(self):
        require(self.steps >= 0, f"train.steps = {self.steps} must be >= 0")
        require(self.batch_size >= 1, f"train.batch_size = {self.batch_size} must be >= 1")
        _in_range("train.lr", self.lr, 0, None, low_open=True)
        require(self.warmup_steps >= 0, f"train.warmup_steps = {self.warmup_steps} must be >= 0")
        _in_range("train.weight_decay", self.weight_decay, 0, None)
        _in_range("train.ema_decay", self.ema_decay, 0, 1, high_open=True)
        _in_range("train.grad_clip", self.grad_clip, 0, None, low_open=True)
        _in_range("train.class_dropout", self.class_dropout, 0, 1, high_open=True)
        require(0 <= self.seed < 2 ** 63, f"train.seed = {self.seed} must lie in [0, 2**63)")
        require(self.log_every >= 1, f"train.log_every = {self.log_every} must be >= 1")
        require(self.sample_every >= 0, f"train.sample_every = {self.sample_every} must be >= 0 (0 = never)")
        require(self.checkpoint_every >= 1, f"train.checkpoint_every = {self.checkpoint_every} must be >= 1")
        require(self.keep_every >= 0, f"train.keep_every = {self.keep_every} must be >= 0 (0 = never)")
        require(self.sample_steps >= 1, f"train.sample_steps = {self.sample_steps} must be >= 1")
        require(self.grad_accum >= 1, f"train.grad_accum = {self.grad_accum} must be >= 1")


@dataclass(frozen=True)
class Config:
    model: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    version: int = CONFIG_VERSION

    def __post_init__(self):
        require(self.version == CONFIG_VERSION, f"config version {self.version} is not supported (this sr3 reads "
                f"version {CONFIG_VERSION}); retrain or upgrade sr3")
        m, d = self.model, self.data
        if d.task == "sr":
            require(m.cond_channels > 0, "an sr model needs model.cond_channels = 3 (the upsampled LR image)")
        require(d.crop_size % m.size_multiple == 0, f"data.crop_size {d.crop_size} must be divisible by "
                f"{m.size_multiple} (the U-Net halves the size {len(m.channel_mult) - 1} times)")
        require(self.train.class_dropout == 0 or m.null_class,
                "train.class_dropout > 0 needs model.null_class = true (the embedding of the dropped label)")

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "Config":
        return from_dict(cls, d, source)

    @classmethod
    def from_json_file(cls, path: str | Path) -> "Config":
        return cls.from_dict(read_json(path, "config file"), str(path))

    def replace(self, **sections) -> "Config":
        return dataclasses.replace(self, **sections)


@dataclass(frozen=True)
class SamplingConfig:
    """How a diffusion model is sampled; one per cascade stage in cascade.json, and the source
    of the sampling flags of ``sr3 upscale / evaluate / generate / sweep``."""

    sampler: Literal["ddpm", "ddim", "dpmpp"] = "ddim"
    """ddpm (ancestral, SR3 Alg. 2 with the posterior variance), ddim (Song et al. 2021) or dpmpp
    (DPM-Solver++(2M), Lu et al. 2022); see sr3/samplers.py."""
    steps: int = 20
    """Network evaluations per image (>= 1); a regression model always takes one."""
    schedule: Literal["auto", "sr3", "logsnr", "train"] = "auto"
    """Inference noise schedule (sr3/schedules.py); auto = sr3 for ddpm, logsnr for ddim and dpmpp."""
    eta: float = 0.0
    """DDIM stochasticity in [0, 1] (0 = deterministic, 1 = DDPM's variance); only ddim takes a nonzero eta."""
    temperature: float = 1.0
    """Scale in [0, 1] of every noise draw: 1 = the model's distribution, lower = closer to its mean
    prediction (less invented texture, higher PSNR; SRFlow's temperature)."""
    tile: int = 256
    """Run the network on overlapping tiles of this many output pixels (0 = whole image); bounds memory.
    A positive tile must be >= 2 * overlap and a multiple of the U-Net's size multiple."""
    overlap: int = 32
    """Overlap of neighbouring tiles in output pixels (>= 1), blended linearly."""
    network_batching: Literal["auto", "per-image", "batched"] = "auto"
    """per-image: run the network one image at a time, so image k is bit-identical whatever the batch
    size; batched: one forward pass per batch (fast on GPUs, last-bit differences between batch sizes);
    auto = per-image on the CPU, batched on CUDA."""
    guidance: float = 0.0
    """Classifier-free guidance weight w >= 0 (Ho & Salimans 2022, Eq. 6): each estimate becomes
    (1 + w) D(x | class) - w D(x | no class), two network evaluations per step; 0 = plain conditional
    sampling.  Only for class-conditional models trained with train.class_dropout > 0."""

    def __post_init__(self):
        require(self.steps >= 1, f"steps = {self.steps} must be >= 1")
        _in_range("eta", self.eta, 0, 1)
        require(self.eta == 0 or self.sampler == "ddim",
                f"eta = {self.eta:g} applies to the ddim sampler only (ddpm's noise is fixed, dpmpp is deterministic)")
        _in_range("temperature", self.temperature, 0, 1)
        _in_range("guidance", self.guidance, 0, None)
        require(self.overlap >= 1, f"overlap = {self.overlap} must be >= 1")
        require(self.tile == 0 or self.tile >= 2 * self.overlap,
                f"tile = {self.tile} must be 0 (whole image) or at least twice the overlap ({2 * self.overlap})")

    @property
    def inference_schedule(self) -> str:
        """The schedule name with ``auto`` resolved for this sampler."""
        if self.schedule != "auto":
            return self.schedule
        return "sr3" if self.sampler == "ddpm" else "logsnr"

    def batched(self, device) -> bool:
        """Whether the network sees the whole batch in one forward pass on ``device``."""
        if self.network_batching == "auto":
            return str(device).startswith("cuda")
        return self.network_batching == "batched"


# ------------------------------------------------------------------ JSON
def read_json(path: str | Path, what: str) -> dict:
    """Parse a JSON file, or raise a one-line UserError naming it (``what``: e.g. "config file")."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, expected a {what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e}); fix or regenerate the file") from None


def from_dict(cls, d, source: str):
    """Build a (nested) frozen dataclass from a dict: unknown keys, wrong types and out-of-range
    values are one-line UserErrors naming ``source`` (the file)."""
    if not isinstance(d, dict):
        raise UserError(f"{source}: expected a JSON object for {cls.__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise UserError(f"{source}: unknown {cls.__name__} field(s) {sorted(unknown)}; remove them")
    kwargs = {f.name: _coerce(hints[f.name], d[f.name], f"{source}: {cls.__name__}.{f.name}")
              for f in fields(cls) if f.name in d}
    try:
        return cls(**kwargs)
    except UserError as e:
        message = str(e)
        raise UserError(message if message.startswith(source) else f"{source}: {message}") from None


def _coerce(tp, value, where: str):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where.split(": ")[0])
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {value!r}")
        elem = typing.get_args(tp)[0]
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
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"{where}: expected a string, got {value!r}")
        return value
    return value


# ---------------------------------------------------------------- CLI flags
def field_docs(cls) -> dict[str, str]:
    """The docstring under each field of a dataclass (used as flag help), from its source."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body
    docs = {}
    for stmt, nxt in zip(body, body[1:]):
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(nxt, ast.Expr) \
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
            docs[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs


def flag_dest(prefix: str, name: str) -> str:
    return f"{prefix}__{name}" if prefix else name


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls, prefix: str = "", title: str | None = None,
                            skip: tuple[str, ...] = ()) -> None:
    """Add one optional flag per field of ``cls``: ``--prefix.field`` (or ``--field`` without a prefix).

    Every flag defaults to None, meaning "keep the value of the config it is applied to"
    (:func:`apply_flags`); the help text is the field's docstring and its default.
    """
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    group = parser.add_argument_group(title or (f"{prefix} overrides ({cls.__name__})" if prefix else cls.__name__))
    for f in fields(cls):
        if f.name in skip or (prefix == "" and f.name == "version"):
            continue
        tp = _strip_optional(hints[f.name])
        name = f.name.replace("_", "-")
        flag = f"--{prefix}.{name}" if prefix else f"--{name}"
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required or f.default is dataclasses.MISSING else f.default
        help_text = docs.get(f.name, "") + (f" (default: {default})" if default is not None and not prefix else "")
        kwargs = dict(dest=flag_dest(prefix, f.name), default=None, help=help_text.replace("%", "%%"))
        if required:
            kwargs["required"] = True
        origin = typing.get_origin(tp)
        if tp is bool:  # --flag alone means true; --flag false also works
            group.add_argument(flag, type=_parse_bool, nargs="?", const=True, metavar="BOOL", **kwargs)
        elif origin is tuple:
            group.add_argument(flag, type=typing.get_args(tp)[0], nargs="*", **kwargs)
        elif origin is Literal:
            group.add_argument(flag, choices=typing.get_args(tp), **kwargs)
        else:
            group.add_argument(flag, type=tp, **kwargs)


def _strip_optional(tp):
    """``X | None`` -> X (a flag that is not given already means None)."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0] if len(rest) == 1 else tp
    return tp


def flag_values(cls, args: argparse.Namespace, prefix: str = "") -> dict:
    """The fields of ``cls`` whose flags were given on the command line."""
    values = {}
    for f in fields(cls):
        value = getattr(args, flag_dest(prefix, f.name), None)
        if value is not None:
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return values


def apply_flags(instance, args: argparse.Namespace, prefix: str = ""):
    """``instance`` with every flag of :func:`add_dataclass_arguments` that was given applied (and validated)."""
    changes = flag_values(type(instance), args, prefix)
    return dataclasses.replace(instance, **changes) if changes else instance


def apply_overrides(config: Config, args: argparse.Namespace) -> Config:
    """Return ``config`` with every ``--section.field`` flag that was given applied."""
    sections = {s.name: apply_flags(getattr(config, s.name), args, s.name)
                for s in fields(Config) if s.name != "version"}
    return config.replace(**sections)


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")
