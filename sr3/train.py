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

import copy
import json
import math
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

from .atomic import atomic_write_text, json_line
from .augment import augment_for_training
from .checkpoint import load_training_checkpoint, save_model_dir, save_training_checkpoint
from .config import Config, SamplingConfig
from .data import ImageFolderDataset, PairedFolderDataset, make_sr_pair
from .diffusion import Conditioning, make_denoiser
from .errors import UserError
from .imageio import save_image, tensor_to_pil
from .labelled_data import LabelledDataset, is_class_folder, is_idx_folder
from .sampling import sample
from .schedules import training_gammas
from .unet import UNet, count_parameters


PREVIEW_STREAM = 2**31  # a "step" index no training step uses, for the fixed preview crops


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The generator for everything random in one step of one process."""
    state = np.random.SeedSequence([seed, step, rank]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


# ------------------------------------------------------------------ set-up
def open_dataset(config: Config, data: Path, lr_data: Path | None = None):
    """The training set for ``config``: labelled data, paired LR/HR folders, or an image folder."""
    d = config.data
    # Labelled data (IDX files, or class sub-folders for a class-conditional model) feeds
    # CDM's base model and its SR stages; see sr3/labelled_data.py.
    if d.task == "generate" or is_idx_folder(data) or (config.model.num_classes and is_class_folder(data)):
        dataset = LabelledDataset(data, d.crop_size, channels=config.model.image_channels, hflip=d.hflip)
        if config.model.num_classes and dataset.num_classes > config.model.num_classes:
            raise UserError(f"{data}: {dataset.num_classes} classes but model.num_classes is "
                            f"{config.model.num_classes}; raise --model.num-classes")
        return dataset
    if lr_data:
        return PairedFolderDataset(lr_data, data, d.scale, d.crop_size, d.hflip, d.vflip)
    return ImageFolderDataset(data, d.crop_size, d.hflip, d.vflip, d.downscale_max)


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
    log = open_log(out / "log.jsonl", start) if world.is_main else None
    preview = dataset.sample(min(4, tc.batch_size), step_generator(tc.seed, PREVIEW_STREAM, 0))  # fixed images for grids
    bar = tqdm(total=tc.steps, initial=start, disable=not (progress and world.is_main), unit="step",
               dynamic_ncols=True, file=sys.stderr)
    t0, wall0 = time.perf_counter(), time.time()
    loss_value = float("nan")
    last_checkpoint = start
    for step in range(start, tc.steps):
        generator = step_generator(tc.seed, step, world.rank)
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))  # dropout
        batch = dataset.sample(per_rank, generator)
        hr, cond = make_conditioning(batch, config)
        hr, cond = hr.to(device), cond.to(device)
        loss = make_denoiser(net, dc, cond, bf16=tc.bf16, batched=True).loss(hr, gammas, generator)
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
        if not math.isfinite(loss_value):  # diverged: stop before a NaN reaches a checkpoint or the model
            raise UserError(f"training diverged at step {done} (loss {loss_value}); {out / 'checkpoint'} keeps "
                            f"{'step ' + str(last_checkpoint) if last_checkpoint else 'no step yet'}: resume it "
                            "with a lower --train.lr (or a higher --train.warmup-steps)")
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}")
        if not world.is_main:
            continue
        if done % tc.log_every == 0 or done == tc.steps:
            elapsed = time.perf_counter() - t0
            log.write(json_line({"step": done, "loss": loss_value, "grad_norm": float(grad_norm),
                                  "lr": optimizer.param_groups[0]["lr"],
                                  "images_per_s": (done - start) * tc.batch_size / elapsed}) + "\n")
            log.flush()
        if done % tc.checkpoint_every == 0 or done == tc.steps:
            save_training_checkpoint(out, model, ema, optimizer, done, config)
            last_checkpoint = done
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


def open_log(path: Path, start: int):
    """log.jsonl for appending, holding only the lines of steps <= ``start`` (the checkpoint resumed
    from; 0 for a new run): a run killed after logging past its last checkpoint logs those steps
    again when resumed, and must not list them twice.  A torn last line is dropped too."""
    kept = []
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and isinstance(entry.get("step"), int) and entry["step"] <= start:
                kept.append(line + "\n")
    atomic_write_text(path, "".join(kept))
    return open(path, "a")


def hardware_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def write_sample_grid(model: torch.nn.Module, config: Config, preview, path: Path, device) -> None:
    """LR (upsampled) | SR | HR rows for fixed training crops; class samples for base models."""
    hr, cond = make_conditioning(preview, config)
    settings = SamplingConfig(sampler="ddim", steps=config.train.sample_steps, tile=0)
    with torch.inference_mode():
        sr = sample(model, config, cond, hr.shape, settings, seeds=list(range(hr.shape[0])), device=device,
                    bf16=config.train.bf16)
    columns = [cond.lr_upsampled, sr.cpu(), hr] if cond.lr_upsampled is not None else [sr.cpu()]
    grid = torch.cat([torch.cat(list(col), dim=-2) for col in columns], dim=-1)
    save_image(tensor_to_pil(grid), path)
