"""``sr3 train``: one loop for SR3, the regression baseline and class-conditional base models.

The loop is deliberately plain: draw a batch from a generator seeded by
(seed, step, rank), compute the loss of :mod:`sr3.losses`, AdamW step with warm-up
and gradient clipping, EMA update.  Because every random draw of step k depends only
on (seed, k, rank), ``--resume`` after a kill continues bit-for-bit where the last
checkpoint stopped.

Several processes: launch the same command with ``torchrun --nproc_per_node N``
(gloo on CPU, NCCL on GPU); gradients are averaged by DistributedDataParallel and
only rank 0 writes files.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from .checkpoint import load_training_checkpoint, save_model_dir, save_training_checkpoint
from .config import Config, DataConfig, DiffusionConfig, TrainConfig, UNetConfig, add_dataclass_arguments, \
    apply_overrides
from .augment import augment_for_training
from .data import ImageFolderDataset, PairedFolderDataset, make_sr_pair
from .diffusion import Conditioning
from .errors import UserError
from .imageio import save_image
from .labelled_data import LabelledDataset, is_class_folder, is_idx_folder
from .losses import diffusion_loss, regression_loss
from .presets import PRESETS
from .schedules import training_gammas
from .unet import UNet, count_parameters


PREVIEW_STREAM = 2**31  # a "step" index no training step uses, for the fixed preview crops


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The generator for everything random in one step of one process."""
    state = np.random.SeedSequence([seed, step, rank]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


# ------------------------------------------------------------------ set-up
def resolve_config(args: argparse.Namespace) -> Config:
    """Preset or JSON config, then --section.field overrides and the shortcut flags."""
    if args.preset and args.config:
        raise UserError("give either --preset or --config, not both")
    if args.config:
        config = Config.from_json_file(args.config)
    elif args.preset:
        config = PRESETS[args.preset]
    else:
        raise UserError("choose a model: --preset NAME (" + ", ".join(PRESETS) + ") or --config FILE")
    config = apply_overrides(config, args)
    if args.steps is not None:
        config = config.replace(train=replace(config.train, steps=args.steps))
    if args.objective is not None:
        config = config.replace(diffusion=replace(config.diffusion, objective=args.objective))
    validate_config(config)
    return config


def validate_config(config: Config) -> None:
    m, d = config.model, config.data
    multiple = 2 ** (len(m.channel_mult) - 1)
    if d.task == "sr":
        if d.scale not in (2, 3, 4, 8):
            raise UserError(f"data.scale {d.scale} is not supported; use 2, 4 or 8")
        if d.crop_size % d.scale:
            raise UserError(f"data.crop_size {d.crop_size} must be divisible by data.scale {d.scale}")
        if m.cond_channels == 0:
            raise UserError("an sr model needs model.cond_channels = 3 (the upsampled LR image)")
    if d.crop_size % multiple:
        raise UserError(f"data.crop_size {d.crop_size} must be divisible by {multiple} "
                        f"(the U-Net halves the size {len(m.channel_mult) - 1} times)")
    if config.train.batch_size < 1 or config.train.steps < 0:
        raise UserError("train.batch_size must be >= 1 and train.steps >= 0")


def open_dataset(config: Config, args: argparse.Namespace):
    d = config.data
    # Labelled data (IDX files, or class sub-folders for a class-conditional model) feeds
    # CDM's base model and its SR stages; see sr3/labelled_data.py.
    if d.task == "generate" or is_idx_folder(args.data) or (config.model.num_classes and is_class_folder(args.data)):
        dataset = LabelledDataset(args.data, d.crop_size, channels=config.model.image_channels, hflip=d.hflip)
        if config.model.num_classes and dataset.num_classes > config.model.num_classes:
            raise UserError(f"{args.data}: {dataset.num_classes} classes but model.num_classes is "
                            f"{config.model.num_classes}; raise --model.num-classes")
        return dataset
    if args.lr_data:
        return PairedFolderDataset(args.lr_data, args.data, d.scale, d.crop_size, d.hflip, d.vflip)
    return ImageFolderDataset(args.data, d.crop_size, d.hflip, d.vflip, d.downscale_max)


def make_conditioning(batch, config: Config, generator: torch.Generator | None = None
                      ) -> tuple[torch.Tensor, Conditioning]:
    """Split a batch into (hr target, conditioning) for the model being trained.

    SR stages get CDM's conditioning augmentation (sr3/augment.py) when
    ``data.aug_noise_max`` or ``data.aug_blur_prob`` is set.  Its draws come from
    ``generator``; by default one is seeded from torch's global RNG, which the
    training loop reseeds from (seed, step, rank) before every batch.
    """
    if config.data.task == "sr":
        lr, _ = make_sr_pair(batch, config.data.scale)
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,))))
        lr_up, levels = augment_for_training(lr, config.data.scale, config.data, generator)
        aug_level = levels if config.model.aug_level_conditioning else None
        return batch.hr, Conditioning(lr_upsampled=lr_up, class_label=batch.label, aug_level=aug_level)
    return batch.hr, Conditioning(class_label=batch.label)


class Distributed:
    """Rank/world size from torchrun's environment; a no-op for one process."""

    def __init__(self, device: torch.device):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1:
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend)
        self.is_main = self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.world == 1:
            return model
        return torch.nn.parallel.DistributedDataParallel(model)

    def close(self):
        if self.world > 1:
            dist.destroy_process_group()


def pick_device(name: str | None) -> torch.device:
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


# ------------------------------------------------------------------ the loop
def train(config: Config, dataset, out: Path, resume: bool = False, device: torch.device | None = None,
          progress: bool = True, command: str = "") -> Path:
    """Train ``config`` on ``dataset`` writing everything under ``out``; returns the model directory."""
    device = device or pick_device(None)
    tc, dc = config.train, config.diffusion
    world = Distributed(device)
    if tc.batch_size % world.world:
        raise UserError(f"train.batch_size {tc.batch_size} must be divisible by the {world.world} processes")
    per_rank = tc.batch_size // world.world

    torch.manual_seed(tc.seed)  # identical initial weights on every rank
    model = UNet(config.model).to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    start = 0
    if resume:
        start = load_training_checkpoint(out, model, ema, optimizer)
    elif world.is_main and (out / "checkpoint").exists():
        raise UserError(f"{out}: already holds a training run; pass --resume to continue it or choose another --out")
    net = world.wrap(model)
    gammas = training_gammas(dc)
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(config.to_json())
    log = open(out / "log.jsonl", "a") if world.is_main else None
    preview = dataset.sample(min(4, tc.batch_size), step_generator(tc.seed, PREVIEW_STREAM, 0))  # fixed images for grids
    bar = tqdm(total=tc.steps, initial=start, disable=not (progress and world.is_main), unit="step",
               dynamic_ncols=True, file=sys.stderr)
    t0, wall0 = time.perf_counter(), time.time()
    loss_value = float("nan")
    for step in range(start, tc.steps):
        generator = step_generator(tc.seed, step, world.rank)
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))  # dropout
        batch = dataset.sample(per_rank, generator)
        hr, cond = make_conditioning(batch, config)
        hr, cond = hr.to(device), cond.to(device)
        if dc.objective == "regression":
            loss = regression_loss(net, hr, cond, dc, tc.bf16)
        else:
            loss = diffusion_loss(net, hr, cond, dc, gammas, generator, tc.bf16)
        for group in optimizer.param_groups:  # linear warm-up, then constant
            group["lr"] = tc.lr * min(1.0, (step + 1) / max(1, tc.warmup_steps))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        optimizer.step()
        decay = min(tc.ema_decay, (1 + step) / (10 + step))  # short runs still get a useful EMA
        with torch.no_grad():
            for e, p in zip(ema.parameters(), model.parameters()):
                e.lerp_(p, 1 - decay)
        loss_value = loss.item()
        done = step + 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}")
        if not world.is_main:
            continue
        if done % tc.log_every == 0 or done == tc.steps:
            elapsed = time.perf_counter() - t0
            log.write(json.dumps({"step": done, "loss": loss_value, "grad_norm": float(grad_norm),
                                  "lr": optimizer.param_groups[0]["lr"],
                                  "images_per_s": (done - start) * tc.batch_size / elapsed}) + "\n")
            log.flush()
        if done % tc.checkpoint_every == 0 or done == tc.steps:
            save_training_checkpoint(out, model, ema, optimizer, done, config)
        if tc.sample_every and (done % tc.sample_every == 0 or done == tc.steps):
            write_sample_grid(ema, config, preview, out / "samples" / f"step_{done:07d}.png", device)
    bar.close()
    model_dir = out / "model"
    if world.is_main:
        card = {"command": command, "steps": tc.steps, "final_loss": loss_value,
                "train_seconds_this_session": round(time.time() - wall0, 1),
                "parameters": count_parameters(model), "hardware": hardware_description(device),
                "torch": torch.__version__}
        save_model_dir(model_dir, ema, config, extra_files={"training.json": card})
    if log:
        log.close()
    world.close()
    return model_dir


def hardware_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def write_sample_grid(model: torch.nn.Module, config: Config, preview, path: Path, device) -> None:
    """LR (upsampled) | SR | HR rows for fixed training crops; class samples for base models."""
    from .pipeline import sample_images  # pipeline imports train's neighbours; avoid a cycle at import time
    hr, cond = make_conditioning(preview, config)
    with torch.inference_mode():
        sr = sample_images(model, config, cond.to(device), hr.shape, sampler="ddim",
                           steps=config.train.sample_steps, seeds=list(range(hr.shape[0])), device=device)
    columns = [cond.lr_upsampled, sr.cpu(), hr] if cond.lr_upsampled is not None else [sr.cpu()]
    grid = torch.cat([torch.cat(list(col), dim=-2) for col in columns], dim=-1)
    from .imageio import tensor_to_pil
    save_image(tensor_to_pil(grid), path)


# ------------------------------------------------------------------ CLI
def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train an SR3, regression, base or RAISR model",
                              description="Train a model. Start from --preset or --config; any config field "
                                          "can be overridden with --SECTION.FIELD (e.g. --train.lr 1e-4).")
    p.add_argument("--preset", choices=sorted(PRESETS), help="named configuration (see sr3/presets.py)")
    p.add_argument("--config", type=Path, help="JSON config file (a config.json of an earlier run works)")
    p.add_argument("--data", required=True, type=Path, help="folder of training images (HR), or labelled data "
                                                              "(IDX files / class sub-folders, see sr3/labelled_data.py)")
    p.add_argument("--task", dest="data__task", choices=["sr", "generate"],
                   help="same as --data.task: generate trains a class-conditional base model (CDM)")
    p.add_argument("--lr-data", type=Path, help="folder of matching LR images (paired data); default: "
                                                  "make LR by bicubic downsampling")
    p.add_argument("--out", required=True, type=Path, help="output folder (model/, checkpoint/, samples/, log.jsonl)")
    p.add_argument("--steps", type=int, help="total optimiser steps (same as --train.steps)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--objective", choices=["diffusion", "regression"],
                   help="regression trains the same U-Net to predict HR directly (SR3's baseline)")
    p.add_argument("--method", choices=["sr3", "raisr"], default="sr3",
                   help="raisr learns RAISR filters by least squares instead of a U-Net")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    from .raisr import add_train_arguments as add_raisr_arguments
    add_raisr_arguments(p)  # --raisr-* options, used with --method raisr
    for section, cls in (("model", UNetConfig), ("diffusion", DiffusionConfig), ("data", DataConfig),
                         ("train", TrainConfig)):
        add_dataclass_arguments(p, cls, section)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.method == "raisr":
        from .raisr import run_train_raisr
        return run_train_raisr(args)
    config = resolve_config(args)
    dataset = open_dataset(config, args)
    device = pick_device(args.device)
    command = "sr3 " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("sr3") else ""
    model_dir = train(config, dataset, args.out, resume=args.resume, device=device,
                      progress=not args.no_progress, command=command)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"model written to {model_dir}")
    return 0
