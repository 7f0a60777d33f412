"""``sr3 train``: one loop for SR3, the regression baseline and class-conditional base models.

The loop is deliberately plain: draw a batch from a generator seeded by
(seed, step, part), compute the loss of :mod:`sr3.losses`, AdamW step with warm-up
and gradient clipping, EMA update.  Because every random draw of step k depends only
on (seed, k, part), ``--resume`` after a kill continues bit-for-bit where the last
checkpoint stopped, and data-loader workers can build the next batches ahead
(sr3/step_loader.py).  A part is one micro-batch: the batch is cut into
processes x ``train.grad_accum`` parts.  Nothing waits on the GPU between steps:
the loss is read back only at log steps, EMA and AdamW update all tensors at once.

Several processes: launch the same command with ``torchrun --nproc_per_node N``
(gloo on CPU, NCCL on GPU); gradients are averaged by DistributedDataParallel and
only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from .atomic import atomic_write_text, json_line
from .augment import augment_for_training
from .checkpoint import load_training_checkpoint, save_model_dir, save_training_checkpoint
from .config import Config, SamplingConfig, TrainConfig
from .data import make_sr_pair
from .diffusion import Conditioning, make_denoiser
from .errors import UserError
from .imageio import save_image, tensor_to_pil
from .predict_refine import BicubicAnchor, Predictor, copy_predictor
from .sampling import sample
from .schedules import training_gammas
from .step_loader import step_generator, step_loader
from .streaming import open_training_data
from .unet import UNet, count_parameters


PREVIEW_STREAM = 2**31  # a "step" index no training step uses, for the fixed preview crops
ANCHOR_SAMPLING = SamplingConfig(steps=1, tile=0, network_batching="batched")  # a predictor sees whole crops
SNAPSHOTS_DIR = "snapshots"  # OUT/snapshots/step_NNNNNNN: the EMA every train.keep_every steps


# ------------------------------------------------------------------ set-up
def open_dataset(config: Config, data: Path, out: Path, lr_data: Path | None = None):
    """In memory or streamed from a file index written once to OUT/data_index (sr3/streaming.py)."""
    return open_training_data(config, data, out, lr_data)


def make_conditioning(batch, config: Config, generator: torch.Generator | None = None
                      ) -> tuple[torch.Tensor, Conditioning]:
    """Split a batch into (hr target, conditioning) for the model being trained.

    SR stages get CDM's conditioning augmentation (sr3/augment.py) when
    ``data.aug_noise_max`` or ``data.aug_blur_prob`` is set, and class labels are dropped
    with probability ``train.class_dropout``.  Their draws come from
    ``generator``; by default one is seeded from torch's global RNG, which the
    training loop reseeds from (seed, step, rank) before every batch.
    """
    if generator is None and (config.data.task == "sr" or config.train.class_dropout > 0):
        generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,))))
    labels = batch.label
    if config.train.class_dropout > 0:  # classifier-free guidance training (Ho & Salimans 2022, Alg. 1)
        drop = torch.rand(labels.shape, generator=generator) < config.train.class_dropout
        labels = labels.masked_fill(drop.to(labels.device), config.model.num_classes)
    if config.data.task == "sr":
        lr, _ = make_sr_pair(batch, config.data.scale)
        lr_up, levels = augment_for_training(lr, config.data.scale, config.data, generator)
        aug_level = levels if config.model.aug_level_conditioning else None
        return batch.hr, Conditioning(lr_upsampled=lr_up, class_label=labels, aug_level=aug_level)
    return batch.hr, Conditioning(class_label=labels)


class Distributed:
    """Rank/world size from torchrun's environment; a no-op for one process."""

    def __init__(self, device: torch.device):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1:
            backend = "nccl" if device.type == "cuda" else "gloo"
            if device.type == "cuda":
                torch.cuda.set_device(device)  # NCCL binds each process to its own GPU
            dist.init_process_group(backend=backend)
        self.is_main = self.rank == 0

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        if self.world == 1:
            return model
        ids = [device] if device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

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
          progress: bool = True, command: str = "", predictor: Predictor | None = None,
          predictor_dir: Path | None = None, init: torch.nn.Module | None = None,
          model_files: dict[str, dict] | None = None) -> Path:
    """Train ``config`` on ``dataset`` writing everything under ``out``; returns the model directory.

    predictor, predictor_dir: the frozen predictor of a refiner (``diffusion.anchor = "predictor"``,
    sr3/predict_refine.py) and the model directory it was loaded from (copied into the model's).
    init: fine-tuning: a trained U-Net of ``config.model``'s architecture whose weights the raw and
    the EMA model start from instead of a random initialisation (the optimizer starts fresh).
    Only a new run uses it; ``resume`` continues from the run's own checkpoint.
    model_files: JSON files written into every model directory of the run (``model/`` and the
    snapshots), e.g. the fine-tuned model's ``sampling.json`` so the result samples as it did.
    """
    device = device or pick_device(None)
    tc, dc = config.train, config.diffusion
    if (dc.anchor == "predictor") != (predictor is not None):
        raise UserError("a refiner (diffusion.anchor = predictor) trains with --predictor DIR, and only a "
                        "refiner takes --predictor")
    anchor = predictor.to(device) if predictor is not None else BicubicAnchor()
    world = Distributed(device)
    accum = tc.grad_accum
    if accum < 1 or config.data.num_workers < 0:
        raise UserError("train.grad_accum must be >= 1 and data.num_workers >= 0")
    if tc.batch_size % (world.world * accum):
        raise UserError(f"train.batch_size {tc.batch_size} must be divisible by the {world.world} processes "
                        f"x train.grad_accum {accum}")
    part_size = tc.batch_size // (world.world * accum)
    if device.type == "cuda":
        # fixed shapes: let cuDNN time its kernels once (GPU runs are not bit-reproducible anyway:
        # cuDNN's backward passes sum with atomics)
        torch.backends.cudnn.benchmark = True

    torch.manual_seed(tc.seed)  # identical initial weights on every rank
    model = UNet(config.model)
    if init is not None and not resume:
        model.load_state_dict(init.state_dict())  # raises on another architecture: the caller checks first
    model = model.to(device)
    if tc.channels_last == "on" or (tc.channels_last == "auto" and device.type == "cuda"):
        model = model.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = make_optimizer(model, tc, device)
    start = 0
    if resume:
        start = load_training_checkpoint(out, model, ema, optimizer)
        if start > tc.steps:  # the weights of step `start` must never be saved as a `tc.steps`-step model
            raise UserError(f"{out / 'checkpoint'}: is at step {start}, past --steps {tc.steps}; a checkpoint cannot "
                            f"be rolled back: resume with --steps {start} or more")
    elif world.is_main and (out / "checkpoint").exists():
        raise UserError(f"{out}: already holds a training run; pass --resume to continue it or choose another --out")
    ddp = world.wrap(model, device)
    net = torch.compile(ddp) if tc.compile else ddp
    gammas = training_gammas(dc)
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", config.to_json())
    log = open_log(out / "log.jsonl", start) if world.is_main else None
    preview = dataset.sample(min(4, tc.batch_size), step_generator(tc.seed, PREVIEW_STREAM, 0))  # fixed images for grids
    # Process r trains on parts r*accum .. r*accum + accum-1 of every step's batch (sr3/step_loader.py).
    loader = step_loader(dataset, tc.seed, [world.rank * accum + m for m in range(accum)], part_size, start, tc.steps,
                         num_workers=config.data.num_workers, pin_memory=device.type == "cuda")
    bar = tqdm(total=tc.steps, initial=start, disable=not (progress and world.is_main), unit="step",
               dynamic_ncols=True, file=sys.stderr)
    ema_params, params = list(ema.parameters()), list(model.parameters())
    # The loss is summed on the device and read (a host sync) only at log steps.
    loss_sum, loss_terms = torch.zeros((), device=device), 0
    loss_value, skipped_total = float("nan"), 0
    t0, wall0 = time.perf_counter(), time.time()
    last_checkpoint = start
    for step, draws in zip(range(start, tc.steps), loader):
        for group in optimizer.param_groups:  # linear warm-up, then constant
            group["lr"] = tc.lr * min(1.0, (step + 1) / max(1, tc.warmup_steps))
        optimizer.zero_grad(set_to_none=True)
        for m, draw in enumerate(draws):
            torch.manual_seed(draw.dropout_seed)  # dropout and conditioning augmentation
            generator = draw.generator()  # continues the part's stream after its batch: gamma, eps
            # on a GPU the LR input is made there too: no CPU bicubic resizing between steps
            hr, cond = make_conditioning(draw.batch.to(device, non_blocking=True), config)
            cond = anchor(cond, ANCHOR_SAMPLING, device, tc.bf16)
            # DDP averages gradients over processes once per step: not after the first micro-batches.
            with ddp.no_sync() if world.world > 1 and m < accum - 1 else contextlib.nullcontext():
                loss = make_denoiser(net, dc, cond, bf16=tc.bf16, batched=True).loss(hr, gammas, generator)
                (loss / accum if accum > 1 else loss).backward()
            loss_sum += loss.detach()
            loss_terms += 1
            skipped_total += report_skipped(draw.batch.skipped, world.is_main)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
        optimizer.step()
        decay = min(tc.ema_decay, (1 + step) / (10 + step))  # short runs still get a useful EMA
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, params, 1 - decay)
        done = step + 1
        checkpoint_now = done % tc.checkpoint_every == 0 or done == tc.steps
        # A diverged run stops before a NaN reaches a checkpoint or the model.  The loss is read on the
        # host only at log and checkpoint steps (no per-step sync); loss_sum holds every step since the last log.
        log_now = done % tc.log_every == 0 or done == tc.steps
        loss_total = float(loss_sum) if log_now or checkpoint_now else 0.0  # the one host sync of these steps
        if not math.isfinite(loss_total):
            raise UserError(f"training diverged by step {done} (non-finite loss); {out / 'checkpoint'} keeps "
                            f"{'step ' + str(last_checkpoint) if last_checkpoint else 'no step yet'}: resume it "
                            "with a lower --train.lr (or a higher --train.warmup-steps)")
        bar.update(1)
        if log_now:
            loss_value = loss_total / loss_terms  # mean over the micro-batches since the last log line
            loss_sum.zero_()
            loss_terms = 0
            bar.set_postfix(loss=f"{loss_value:.4f}")
            if world.is_main:
                elapsed = time.perf_counter() - t0
                log.write(json_line({"step": done, "loss": loss_value, "grad_norm": float(grad_norm),
                                      "lr": optimizer.param_groups[0]["lr"],
                                      "images_per_s": (done - start) * tc.batch_size / elapsed,
                                      "elapsed_s": round(elapsed, 4),
                                      "skipped_files": skipped_total}) + "\n")
                log.flush()
        if not world.is_main:
            continue
        if checkpoint_now:
            save_training_checkpoint(out, model, ema, optimizer, done, config)
            last_checkpoint = done
        if tc.keep_every and done % tc.keep_every == 0:
            save_trained_model(out / SNAPSHOTS_DIR / f"step_{done:07d}", ema, config, predictor_dir, model_files)
        if tc.sample_every and (done % tc.sample_every == 0 or done == tc.steps):
            write_sample_grid(ema, config, preview, out / "samples" / f"step_{done:07d}.png", device, anchor)
    bar.close()
    model_dir = out / "model"
    if world.is_main:
        card = {"command": command, "steps": tc.steps, "final_loss": loss_value,
                "train_seconds_this_session": round(time.time() - wall0, 1),
                "parameters": count_parameters(model), "hardware": hardware_description(device),
                "torch": torch.__version__, "skipped_files_this_session": skipped_total}
        save_trained_model(model_dir, ema, config, predictor_dir, {**(model_files or {}), "training.json": card})
    if log:
        log.close()
    world.close()
    return model_dir


def save_trained_model(path: Path, ema: torch.nn.Module, config: Config, predictor_dir: Path | None,
                       extra_files: dict[str, dict] | None = None) -> None:
    """A loadable model directory of the EMA weights; a refiner gets its predictor copied in."""
    save_model_dir(path, ema, config, extra_files=extra_files)
    if predictor_dir is not None:
        copy_predictor(predictor_dir, path)


def make_optimizer(model: torch.nn.Module, tc: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW updating all tensors in one fused CUDA kernel, or with multi-tensor (foreach) ops on CPU."""
    fast = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, **fast)


def report_skipped(reasons: tuple[str, ...], is_main: bool) -> int:
    """Warn (rank 0) about files a streaming dataset passed over; returns how many."""
    if is_main:
        for reason in reasons:
            warnings.warn(f"skipped training file: {reason}", SkippedFileWarning, stacklevel=2)
    return len(reasons)


class SkippedFileWarning(UserWarning):
    """A training file could not be used and another was drawn in its place."""
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


def write_sample_grid(model: torch.nn.Module, config: Config, preview, path: Path, device,
                      anchor: BicubicAnchor | None = None) -> None:
    """LR (upsampled, or the predictor's output) | SR | HR rows for fixed training crops; class samples
    for base models."""
    hr, cond = make_conditioning(preview, config)
    cond = (anchor or BicubicAnchor())(cond, ANCHOR_SAMPLING, device, config.train.bf16)
    settings = SamplingConfig(sampler="ddim", steps=config.train.sample_steps, tile=0)
    with torch.inference_mode():
        sr = sample(model, config, cond, hr.shape, settings, seeds=list(range(hr.shape[0])), device=device,
                    bf16=config.train.bf16)
    columns = [cond.lr_upsampled, sr.cpu(), hr] if cond.lr_upsampled is not None else [sr.cpu()]
    grid = torch.cat([torch.cat(list(col), dim=-2) for col in columns], dim=-1)
    save_image(tensor_to_pil(grid), path)
