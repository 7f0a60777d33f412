"""Flags and helpers shared by several commands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ..config import SamplingConfig, add_dataclass_arguments, flag_values
from ..errors import UserError


def add_sampling_arguments(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """--sampler, --steps, --schedule, --eta, --temperature, --tile, --overlap, --network-batching,
    generated from :class:`SamplingConfig`; a flag not given keeps the model's (or cascade stage's) setting."""
    add_dataclass_arguments(parser, SamplingConfig, title="sampling (default: the model's own settings)", skip=skip)


def sampling_flags(args: argparse.Namespace) -> dict:
    """The SamplingConfig fields given on the command line, validated (out-of-range -> one-line error)."""
    values = flag_values(SamplingConfig, args)
    SamplingConfig(**values)  # range checks now, before any model is loaded
    return values


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default: cpu)")


def check_device(name: str) -> str:
    """A device the installed torch can use, or a one-line UserError."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"--device {name}: not a device name; use cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: this PyTorch build has no usable CUDA device; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name}: only cpu and cuda are supported")
    return name


def check_seed(seed: int) -> int:
    if not 0 <= seed < 2 ** 63:
        raise UserError(f"--seed {seed} must lie in [0, 2**63)")
    return seed


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is PyTorch running out of memory (CUDA's OutOfMemoryError, or the CPU allocator's
    RuntimeError), which a user fixes with smaller tiles or batches rather than a bug report."""
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and ("out of memory" in str(error) or "can't allocate memory" in str(error)))


def add_save_steps_arguments(p: argparse.ArgumentParser) -> None:
    """--save-steps DIR and --save-noisy (shared with generate)."""
    p.add_argument("--save-steps", type=Path, default=None, metavar="DIR",
                   help="write the current estimate at every step and stage as PNG frames plus refinement.gif, "
                   "one folder per image in DIR (frames downscaled to a longest side <= 512 px)")
    p.add_argument("--save-noisy", action="store_true", help="with --save-steps: also write the noisy state x_t")
