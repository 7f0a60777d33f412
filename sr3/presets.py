"""Named training configurations (``sr3 train --preset NAME``).

* ``tiny``: a 0.2 M-parameter model that trains in seconds; for tests and smoke runs.
* ``cpu-4x``: a 4x model sized for a 2-core CPU (see benchmarks/unet_speed.py); it
  diffuses the residual to the bicubic upsampling, which anchors low frequencies
  (colour, brightness) to the input — a plain image-space SR3 of this size,
  trained for half an hour on CPU, gave strong colour casts and 15-19 dB PSNR here.
* ``cpu-4x-predictor`` and ``cpu-4x-refine``: the default 4x model, a regression predictor and a
  diffusion refiner of its residual (sr3/predict_refine.py), both computing at LR resolution
  (``model.pixel_unshuffle = 4``).
* ``cpu-4x-stage2``, ``cpu-4x-stage2-noaug``, ``cpu-2x-stage2``: second stages of the shipped 16x and
  8x photo cascades, trained with (and, for comparison, without) CDM conditioning augmentation.
* ``faces-16-128`` and ``natural-64-256``: the SR3 paper's architectures (App. A,
  Table "Task / channel dim / multipliers / ResNet blocks": 128 channels, 3 blocks,
  multipliers (1,2,4,8,8) for 16->128 and (1,2,4,4,8,8) for 64->256, ~550-625 M
  parameters) for GPU users; batch sizes and learning rates as in the paper.
"""

from __future__ import annotations

from dataclasses import replace

from .config import Config, DataConfig, DiffusionConfig, TrainConfig, UNetConfig

CPU_4X_LOWRES_MODEL = UNetConfig(base_channels=64, channel_mult=(1, 1, 2), num_res_blocks=2, mid_attention=False,
                                 pixel_unshuffle=4)
"""The U-Net of the default 4x model's predictor and refiner: 5.2 M parameters, every block at LR resolution."""

_STAGE2_DIFFUSION = DiffusionConfig(target="residual", residual_scale=8.0, prediction="v", loss="l1")
_STAGE2_TRAIN = TrainConfig(steps=3000, batch_size=16, lr=5e-4, warmup_steps=100, ema_decay=0.999, log_every=25,
                            sample_every=0, checkpoint_every=100, sample_steps=20)

PRESETS: dict[str, Config] = {
    "tiny": Config(
        model=UNetConfig(base_channels=16, channel_mult=(1, 2), num_res_blocks=1, mid_attention=False,
                         groupnorm_groups=8),
        diffusion=DiffusionConfig(),
        data=DataConfig(scale=4, crop_size=32),
        train=TrainConfig(steps=40, batch_size=4, lr=1e-3, warmup_steps=5, ema_decay=0.9, bf16=False, log_every=5,
                          sample_every=20, checkpoint_every=20, sample_steps=5),
    ),
    "cpu-4x": Config(
        model=UNetConfig(base_channels=32, channel_mult=(1, 2, 4, 4), num_res_blocks=2, mid_attention=False),
        diffusion=DiffusionConfig(target="residual", residual_scale=4.0, prediction="v", loss="l1"),
        data=DataConfig(scale=4, crop_size=64, downscale_max=4.0),
        train=TrainConfig(steps=5000, batch_size=16, lr=3e-4, warmup_steps=200, ema_decay=0.999, log_every=50,
                          sample_every=1000, checkpoint_every=250, sample_steps=20),
    ),
    # The predictor of the default 4x model (sr3/predict_refine.py): a regression U-Net whose blocks all run
    # at the LR resolution (model.pixel_unshuffle = 4), about 16x cheaper per output pixel than cpu-4x,
    # so it is wider (64 channels) and trains on 4x larger crops for the same CPU time.
    "cpu-4x-predictor": Config(
        model=CPU_4X_LOWRES_MODEL,
        diffusion=DiffusionConfig(objective="regression", target="residual", residual_scale=4.0, loss="l1"),
        data=DataConfig(scale=4, crop_size=128, downscale_max=4.0),
        train=TrainConfig(steps=3000, batch_size=16, lr=5e-4, warmup_steps=100, ema_decay=0.999, log_every=25,
                          sample_every=0, checkpoint_every=100, sample_steps=1),
    ),
    # The refiner of the default 4x model: diffusion of the residual HR - predictor(LR), conditioned on the
    # predictor's output (predict and refine, Whang et al. 2022).  The residual left by the predictor has
    # std ~0.09 on training crops, hence residual_scale 8 (about unit variance).  Train with
    # --predictor DIR (a cpu-4x-predictor run); the predictor is copied into the model directory.
    "cpu-4x-refine": Config(
        model=CPU_4X_LOWRES_MODEL,
        diffusion=DiffusionConfig(target="residual", residual_scale=8.0, prediction="v", loss="l1",
                                  anchor="predictor"),
        data=DataConfig(scale=4, crop_size=128, downscale_max=4.0),
        train=TrainConfig(steps=4000, batch_size=16, lr=5e-4, warmup_steps=100, ema_decay=0.999, log_every=25,
                          sample_every=0, checkpoint_every=100, sample_steps=4),
    ),
    # Second stages of the shipped photo cascades (sr3/weights/cascade-16x, cascade-8x): SR3 stages that run
    # on the *output* of the default 4x model.  CDM's conditioning augmentation (sr3/augment.py) on their LR
    # input: amortised Gaussian noise, level s ~ U[0, 0.2] embedded in the U-Net (the level used at sampling
    # time is chosen afterwards with sr3 sweep), and Gaussian blur on half the examples (CDM Sec. 4.1 uses
    # blur at its high-resolution stage; these stages make 512-1024 px outputs).  The residual to the
    # (augmented) bicubic input has std ~0.075 at 4x and ~0.047 at 2x on the training crops, hence
    # residual_scale 8.  "-noaug" is the same stage without augmentation, for the on/off comparison.
    "cpu-4x-stage2": Config(
        model=replace(CPU_4X_LOWRES_MODEL, aug_level_conditioning=True),
        diffusion=_STAGE2_DIFFUSION,
        data=DataConfig(scale=4, crop_size=128, downscale_max=4.0, aug_noise_max=0.2, aug_blur_prob=0.5),
        train=_STAGE2_TRAIN,
    ),
    # 2x: pixel_unshuffle 2 keeps every block at the LR resolution; 64 px crops give the same 32 px LR
    # (and about the same FLOPs per step) as the 4x stages' 128 px crops.
    "cpu-2x-stage2": Config(
        model=replace(CPU_4X_LOWRES_MODEL, aug_level_conditioning=True, pixel_unshuffle=2),
        diffusion=_STAGE2_DIFFUSION,
        data=DataConfig(scale=2, crop_size=64, downscale_max=4.0, aug_noise_max=0.2, aug_blur_prob=0.5),
        train=_STAGE2_TRAIN,
    ),
    "faces-16-128": Config(
        model=UNetConfig(base_channels=128, channel_mult=(1, 2, 4, 8, 8), num_res_blocks=3, attention_levels=(3,),
                         dropout=0.2),
        diffusion=DiffusionConfig(),
        data=DataConfig(scale=8, crop_size=128),
        train=TrainConfig(steps=1_000_000, batch_size=256, lr=1e-4, warmup_steps=10000, ema_decay=0.9999,
                          sample_every=10000, checkpoint_every=5000, sample_steps=100),
    ),
    "natural-64-256": Config(
        model=UNetConfig(base_channels=128, channel_mult=(1, 2, 4, 4, 8, 8), num_res_blocks=3,
                         attention_levels=(4,), dropout=0.2),
        diffusion=DiffusionConfig(),
        data=DataConfig(scale=4, crop_size=256),
        train=TrainConfig(steps=1_000_000, batch_size=256, lr=1e-4, warmup_steps=10000, ema_decay=0.9999,
                          sample_every=10000, checkpoint_every=5000, sample_steps=100),
    ),
}

# The on/off comparison: the same stage (architecture, level embedding, steps) with augmentation off.
PRESETS["cpu-4x-stage2-noaug"] = PRESETS["cpu-4x-stage2"].replace(
    data=replace(PRESETS["cpu-4x-stage2"].data, aug_noise_max=0.0, aug_blur_prob=0.0))

# ---------------------------------------------------------------- CDM on Fashion-MNIST
# A two-stage cascade (CDM, Ho et al. 2021) for the ablation of experiments/cdm_ablation.py:
# a class-conditional 16x16 base model and a 16 -> 32 SR stage in three variants that differ
# only in conditioning augmentation (none / Gaussian noise with the level embedded / Gaussian
# blur), so the ablation compares like with like; and a 32x32 base model for the base-only
# comparison.  Both stages diffuse the image itself (not the residual): truncated
# conditioning hands the SR stage the base model's noisy x_s, which only makes sense in
# image space.  28x28 images are padded to 32x32.  The bases learn an unconditional model
# too (10% class dropout) for classifier-free guidance.  Sized for a GPU run of minutes
# (batch 256, a few thousand steps); on a 2-core CPU the same steps take days (the
# experiment's README section gives the measured seconds per step), so there a run is
# split across resumable sessions (--resume).
_FMNIST_TRAIN = TrainConfig(steps=8000, batch_size=256, lr=4e-4, warmup_steps=200, ema_decay=0.999, bf16=True,
                            log_every=100, sample_every=0, checkpoint_every=250, sample_steps=20)
_FMNIST_BASE_TRAIN = replace(_FMNIST_TRAIN, class_dropout=0.1)
_FMNIST_SR_TRAIN = replace(_FMNIST_TRAIN, steps=5000)
_FMNIST_DIFFUSION = DiffusionConfig(schedule="cosine", timesteps=1000, prediction="v", loss="l2")
_FMNIST_BASE_MODEL = UNetConfig(base_channels=48, channel_mult=(1, 2, 2), num_res_blocks=2, attention_levels=(1,),
                                mid_attention=True, dropout=0.1, groupnorm_groups=16, cond_channels=0, num_classes=10,
                                null_class=True)
_FMNIST_SR_MODEL = UNetConfig(base_channels=24, channel_mult=(1, 2, 2), num_res_blocks=2, mid_attention=False,
                              groupnorm_groups=8, aug_level_conditioning=True)
PRESETS.update({
    "fmnist-base16": Config(
        model=_FMNIST_BASE_MODEL, diffusion=_FMNIST_DIFFUSION,
        data=DataConfig(task="generate", crop_size=16, hflip=True),
        train=_FMNIST_BASE_TRAIN,
    ),
    "fmnist-base32": Config(  # base-only at the cascade's output size (attention at 8x8 as in the 16x16 base)
        model=replace(_FMNIST_BASE_MODEL, channel_mult=(1, 2, 2, 2), attention_levels=(2,)),
        diffusion=_FMNIST_DIFFUSION,
        data=DataConfig(task="generate", crop_size=32, hflip=True),
        train=_FMNIST_BASE_TRAIN,
    ),
    "fmnist-sr16-32": Config(
        model=_FMNIST_SR_MODEL, diffusion=_FMNIST_DIFFUSION,
        data=DataConfig(scale=2, crop_size=32, hflip=True),
        train=_FMNIST_SR_TRAIN,
    ),
    "fmnist-sr16-32-noise": Config(
        model=_FMNIST_SR_MODEL, diffusion=_FMNIST_DIFFUSION,
        data=DataConfig(scale=2, crop_size=32, hflip=True, aug_noise_max=0.6),
        train=_FMNIST_SR_TRAIN,
    ),
    "fmnist-sr16-32-blur": Config(
        model=_FMNIST_SR_MODEL, diffusion=_FMNIST_DIFFUSION,
        data=DataConfig(scale=2, crop_size=32, hflip=True, aug_blur_prob=0.5, aug_blur_sigma=(0.4, 0.6)),
        train=_FMNIST_SR_TRAIN,
    ),
})

# The same cascade sized for a 2-core CPU (experiments/cdm_ablation.py --recipe cpu): every run trains on
# one core, two at a time; with 3,000 SR steps the whole ablation trained in 283 core-minutes over two
# sessions (the runs' train_seconds in experiments/results/cdm_ablation_cpu_training.json).  One training
# step on one core of an AVX-512 AMD EPYC in bf16 (benchmarks/cdm_step_time.py, JSON in benchmarks/results/): the GPU recipe's base 4.3 s at batch
# 256, this 1.4 M base 0.70 s and this SR stage 0.40 s at batch 64 (these two measured beside a running
# 2-thread evaluation, so slower than on a quiet core).  The SR stage computes at 16x16 (pixel unshuffle
# 2, like the photo stages).  The 32x32 base is the 16x16 base behind a pixel unshuffle of 2: the same
# blocks at the same 16x16 size, so base-only vs cascade compares equal compute per step.  The SR stage's
# EMA decay is shorter than the base's because it trains for fewer steps (the average must forget its
# random start).
FMNIST_RECIPES = {"gpu": "fmnist-", "cpu": "fmnist-cpu-"}
"""Preset-name prefix of each Fashion-MNIST cascade recipe: ``prefix + "base16"``, ``"base32"``,
``"sr16-32"``, ``"sr16-32-noise"``, ``"sr16-32-blur"`` (experiments/cdm_ablation.py --recipe)."""
_FMNIST_CPU_BASE_MODEL = replace(_FMNIST_BASE_MODEL, base_channels=32, num_res_blocks=1, dropout=0.0)
_FMNIST_CPU_TRAIN = replace(_FMNIST_TRAIN, batch_size=64, lr=7e-4, log_every=50)
_FMNIST_CPU_SR_MODEL = replace(_FMNIST_SR_MODEL, base_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                               pixel_unshuffle=2)
# 3,000 SR steps, not the first run's 1,500: alone on real 16x16 test images the blur stage's FD (project
# CNN, 1,000 images, DDIM 10 steps) fell from 11.7 at 1,500 steps to 4.6 at 3,000 (experiments/results/
# cdm_sr_on_real_1500.json and cdm_sr_on_real.json).
_FMNIST_CPU_SR_TRAIN = replace(_FMNIST_CPU_TRAIN, steps=3000, lr=1e-3, ema_decay=0.998, checkpoint_every=100)
PRESETS.update({
    "fmnist-cpu-base16": PRESETS["fmnist-base16"].replace(
        model=_FMNIST_CPU_BASE_MODEL, train=replace(_FMNIST_CPU_TRAIN, steps=5000, class_dropout=0.1)),
    "fmnist-cpu-base32": PRESETS["fmnist-base32"].replace(
        model=replace(_FMNIST_CPU_BASE_MODEL, pixel_unshuffle=2), train=replace(_FMNIST_CPU_TRAIN, steps=3000, class_dropout=0.1)),
    **{f"fmnist-cpu-sr16-32{arm}": PRESETS[f"fmnist-sr16-32{arm}"].replace(
        model=_FMNIST_CPU_SR_MODEL, train=_FMNIST_CPU_SR_TRAIN) for arm in ("", "-noise", "-blur")},
})
