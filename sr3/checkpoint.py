"""Model directories and training checkpoints: JSON + safetensors, never pickle.

A *model directory* is ``config.json`` (a :class:`sr3.config.Config`) beside
``model.safetensors`` (EMA weights).  It alone rebuilds the model.

A *training checkpoint* (``OUT/checkpoint``) adds the raw weights, the optimiser
moments and ``state.json`` (the step); it is written to a temporary folder and
swapped in with renames, so a kill at any moment leaves the previous checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .config import Config, SamplingConfig, from_dict, read_json
from .errors import UserError
from .atomic import atomic_write_bytes, atomic_write_text, write_json
from .unet import UNet

CONFIG_FILE, WEIGHTS_FILE, SAMPLING_FILE = "config.json", "model.safetensors", "sampling.json"


def resolve_model_dir(path: str | Path) -> Path:
    """Accept a model directory or a training output folder (which holds ``model/``)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: model directory not found; pass --model DIR (a folder with {CONFIG_FILE} "
                        f"and {WEIGHTS_FILE})")
    if not path.is_dir():
        raise UserError(f"{path}: is a file; --model takes a model folder (with {CONFIG_FILE} and {WEIGHTS_FILE})")
    if not (path / WEIGHTS_FILE).exists() and (path / "model" / WEIGHTS_FILE).exists():
        return path / "model"
    return path


def copy_model_files(source: str | Path, target: Path,
                     names: tuple[str, ...] = (CONFIG_FILE, WEIGHTS_FILE)) -> None:
    """Copy the files ``names`` of the model directory ``source`` into ``target`` (created), each atomically."""
    source = resolve_model_dir(source)
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        atomic_write_bytes(target / name, (source / name).read_bytes())


def save_model_dir(path: str | Path, model: torch.nn.Module, config: Config, dtype: torch.dtype | None = None,
                   extra_files: dict[str, dict] | None = None) -> Path:
    """Write config.json and model.safetensors (optionally cast to ``dtype``, e.g. bf16 to ship)."""
    path = Path(path)
    tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
               for k, v in model.state_dict().items()}
    check_finite(tensors, path / WEIGHTS_FILE)
    try:
        path.mkdir(parents=True, exist_ok=True)
        _atomic_save_tensors(tensors, path / WEIGHTS_FILE, {"format": "pt"})
        atomic_write_text(path / CONFIG_FILE, config.to_json())
        for name, content in (extra_files or {}).items():
            write_json(path / name, content)
    except OSError as e:
        raise UserError(f"{path}: cannot write the model ({e.strerror or e}); free disk space or choose "
                        "another folder") from None
    return path


def load_model_dir(path: str | Path, device: str | torch.device = "cpu") -> tuple[UNet, Config]:
    """Rebuild a model from its directory, or raise a one-line UserError saying what is wrong."""
    path = resolve_model_dir(path)
    config = Config.from_json_file(path / CONFIG_FILE)
    weights = path / WEIGHTS_FILE
    state = read_tensors(weights)
    model = UNet(config.model)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise UserError(f"{weights}: weights do not match {path / CONFIG_FILE} ({detail}); "
                        "the config was edited or the weights are incomplete — retrain or restore the files")
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise UserError(f"{weights}: tensor {name} has shape {tuple(tensor.shape)} but {CONFIG_FILE} implies "
                            f"{tuple(expected[name].shape)}; the config does not match the weights")
    check_finite(state, weights)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.to(device).eval(), config


def check_finite(tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Weights with NaN/inf (a diverged run) would only ever give black images: refuse them."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise UserError(f"{source}: tensor {name} holds NaN/inf values (training diverged); retrain from an "
                            "earlier checkpoint with a lower --train.lr")


def load_sampling_defaults(path: str | Path) -> SamplingConfig:
    """The model's default sampling settings: ``sampling.json`` in its directory, else SamplingConfig()."""
    file = resolve_model_dir(path) / SAMPLING_FILE
    if not file.exists():
        return SamplingConfig()
    return from_dict(SamplingConfig, read_json(file, SAMPLING_FILE), str(file))


def sampling_files(path: str | Path) -> dict[str, dict]:
    """``{"sampling.json": settings}`` of the model in ``path`` (validated), or {} when it has none: for
    models derived from it (fine-tuned, snapshots) to keep sampling as it does."""
    if not (resolve_model_dir(path) / SAMPLING_FILE).exists():
        return {}
    return {SAMPLING_FILE: dataclasses.asdict(load_sampling_defaults(path))}


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise UserError(f"{path}: weights file missing; the model directory is incomplete")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path}: corrupt safetensors file ({e}); restore or retrain it") from None


def _atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict | None = None) -> None:
    # the shared atomic writer: no torn file, and the usual umask mode (safetensors' own writer makes 0600 files)
    atomic_write_bytes(path, save(tensors, metadata=metadata))


# ------------------------------------------------------------ training state
def save_training_checkpoint(out: Path, model: torch.nn.Module, ema: torch.nn.Module,
                             optimizer: torch.optim.Optimizer, step: int, config: Config) -> None:
    """Write OUT/checkpoint atomically (temporary folder, then rename over the old one)."""
    final, tmp, old = out / "checkpoint", out / ".checkpoint.tmp", out / ".checkpoint.old"
    raw = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    check_finite(raw, final / "raw.safetensors")  # never replace the last good checkpoint by a diverged one
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        _atomic_save_tensors(raw, tmp / "raw.safetensors")
        _atomic_save_tensors({k: v.detach().cpu().contiguous() for k, v in ema.state_dict().items()},
                             tmp / "ema.safetensors")
        _atomic_save_tensors(_flatten_optimizer(optimizer), tmp / "optimizer.safetensors")
        atomic_write_text(tmp / CONFIG_FILE, config.to_json())
        write_json(tmp / "state.json", {"step": step})
    except OSError as e:  # disk full, quota: keep the previous checkpoint, leave no half-written one
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"{out}: cannot write the step-{step} checkpoint ({e.strerror or e}); the previous "
                        "checkpoint is kept: free disk space and continue with --resume") from None
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def load_training_checkpoint(out: Path, model: torch.nn.Module, ema: torch.nn.Module,
                             optimizer: torch.optim.Optimizer) -> int:
    """Restore weights, EMA and optimiser from OUT/checkpoint; return the step to continue from."""
    ckpt = out / "checkpoint"
    if not (ckpt / "state.json").exists() and (out / ".checkpoint.old" / "state.json").exists():
        ckpt = out / ".checkpoint.old"  # killed between the two renames
    if not (ckpt / "state.json").exists():
        raise UserError(f"{out}: no checkpoint to resume from; run without --resume to start training")
    try:
        step = json.loads((ckpt / "state.json").read_text())["step"]
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{ckpt / 'state.json'}: corrupt checkpoint state ({e})") from None
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise UserError(f"{ckpt / 'state.json'}: step {step!r} is not a step count (an integer >= 0); the file "
                        "was edited or damaged: restore it or start a new run")
    try:
        for name, module in (("raw", model), ("ema", ema)):
            tensors = read_tensors(ckpt / f"{name}.safetensors")
            check_finite(tensors, ckpt / f"{name}.safetensors")
            module.load_state_dict(tensors)
    except RuntimeError as e:
        raise UserError(f"{ckpt}: checkpoint does not match the configured model ({str(e).splitlines()[0]}); "
                        "resume with the same config") from None
    _unflatten_optimizer(optimizer, read_tensors(ckpt / "optimizer.safetensors"), ckpt / "optimizer.safetensors")
    return step


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    flat = {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            flat[f"{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    return flat


def _unflatten_optimizer(optimizer: torch.optim.Optimizer, flat: dict[str, torch.Tensor], source: Path) -> None:
    """Restore the moments, checking each against its parameter: a tampered or foreign file would
    otherwise fail deep inside the first optimiser step (or silently train with wrong moments)."""
    state_dict = optimizer.state_dict()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    expected = {f"{i}.{key}": (() if key == "step" else tuple(p.shape))
                for i, p in enumerate(params) for key in ("step", "exp_avg", "exp_avg_sq")}
    def refuse(detail: str) -> UserError:
        return UserError(f"{source}: optimizer state does not match the model ({detail}); restore the checkpoint "
                         "or start a new run")
    extra = sorted(set(flat) - set(expected))
    if extra:
        raise refuse(f"unexpected {extra[:3]}")
    indices = {name.split(".", 1)[0] for name in flat}  # a parameter that never had a gradient has no state
    missing = sorted(f"{i}.{key}" for i in indices for key in ("step", "exp_avg", "exp_avg_sq")
                     if f"{i}.{key}" not in flat)
    if missing:
        raise refuse(f"missing {missing[:3]}")
    state: dict[int, dict] = {}
    for name, value in flat.items():
        if tuple(value.shape) != expected[name]:
            raise refuse(f"{name} has shape {tuple(value.shape)}, expected {expected[name]}")
        if not value.is_floating_point() or not torch.isfinite(value).all() or (name.endswith("step") and value < 0):
            raise refuse(f"{name} holds invalid values")
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    state_dict["state"] = state
    optimizer.load_state_dict(state_dict)