import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import sr3
from sr3.checkpoint import load_model_dir
from sr3.data import ImageFolderDataset, make_sr_pair
from sr3.diffusion import Conditioning, make_denoiser
from sr3.errors import UserError
from sr3.schedules import training_gammas
from sr3.train import step_generator, train
from sr3.unet import UNet

from conftest import tiny_config


def test_training_lowers_the_loss_on_a_fixed_batch(image_folder):
    config = tiny_config()
    dataset = ImageFolderDataset(image_folder, config.data.crop_size)
    batch = dataset.sample(4, torch.Generator().manual_seed(0))
    _, lr_up = make_sr_pair(batch, config.data.scale)
    cond = Conditioning(lr_upsampled=lr_up)
    torch.manual_seed(0)
    model = UNet(config.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    gammas = training_gammas(config.diffusion)

    def loss_at(seed):
        denoiser = make_denoiser(model, config.diffusion, cond, batched=True)
        return denoiser.loss(batch.hr, gammas, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        before = sum(loss_at(s).item() for s in range(8)) / 8
    for step in range(60):
        optimizer.zero_grad()
        loss_at(100 + step).backward()
        optimizer.step()
    with torch.no_grad():
        after = sum(loss_at(s).item() for s in range(8)) / 8
    assert after < 0.8 * before, (before, after)


def test_resume_equals_an_uninterrupted_run(image_folder, tmp_path):
    config = tiny_config(steps=8)
    dataset = ImageFolderDataset(image_folder, config.data.crop_size)
    train(config, dataset, tmp_path / "full", progress=False)
    # "killed" after the checkpoint at step 4, then resumed
    short = config.replace(train=dataclasses.replace(config.train, steps=4))
    train(short, dataset, tmp_path / "split", progress=False)
    train(config, dataset, tmp_path / "split", resume=True, progress=False)
    for name in ("raw", "ema", "optimizer"):
        a = load_file(str(tmp_path / "full" / "checkpoint" / f"{name}.safetensors"))
        b = load_file(str(tmp_path / "split" / "checkpoint" / f"{name}.safetensors"))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)


def test_keep_every_keeps_the_ema_of_those_steps_as_model_directories(image_folder, tmp_path):
    config = tiny_config(steps=6)
    config = config.replace(train=dataclasses.replace(config.train, keep_every=2))
    dataset = ImageFolderDataset(image_folder, config.data.crop_size)
    train(config, dataset, tmp_path / "run", progress=False)
    snapshots = tmp_path / "run" / "snapshots"
    assert sorted(p.name for p in snapshots.iterdir()) == ["step_0000002", "step_0000004", "step_0000006"]
    four = config.replace(train=dataclasses.replace(config.train, steps=4, keep_every=0))
    train(four, dataset, tmp_path / "four", progress=False)
    for snapshot, model_dir in (("step_0000004", tmp_path / "four" / "model"),
                                ("step_0000006", tmp_path / "run" / "model")):
        kept = load_file(str(snapshots / snapshot / "model.safetensors"))
        final = load_file(str(model_dir / "model.safetensors"))
        assert kept.keys() == final.keys()
        assert all(torch.equal(kept[k], final[k]) for k in kept), snapshot
    assert load_model_dir(snapshots / "step_0000002")[1] == config


def test_step_generators_differ_by_step_and_rank():
    draws = {(s, r): torch.rand(1, generator=step_generator(0, s, r)).item() for s in range(3) for r in range(2)}
    assert len(set(draws.values())) == 6
    assert torch.rand(1, generator=step_generator(0, 1, 1)).item() == draws[(1, 1)]


def test_regression_objective_lowers_its_loss(image_folder):
    """The regression baseline trains through the same denoiser contract: optimising loss() brings its
    prediction closer to the HR image (measured directly, not by loss() itself)."""
    config = tiny_config()
    config = config.replace(diffusion=dataclasses.replace(config.diffusion, objective="regression"))
    dataset = ImageFolderDataset(image_folder, config.data.crop_size)
    batch = dataset.sample(4, torch.Generator().manual_seed(0))
    _, lr_up = make_sr_pair(batch, config.data.scale)
    torch.manual_seed(0)
    model = UNet(config.model)
    cond = Conditioning(lr_upsampled=lr_up)
    denoiser = make_denoiser(model, config.diffusion, cond, batched=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    gammas = training_gammas(config.diffusion)

    def error():
        with torch.no_grad():
            return float((denoiser(torch.zeros_like(batch.hr), 0.0) - batch.hr).abs().mean())
    before = error()
    for _ in range(40):
        optimizer.zero_grad()
        denoiser.loss(batch.hr, gammas, torch.Generator()).backward()
        optimizer.step()
    assert error() < 0.7 * before, (before, error())


def test_a_trained_regression_model_samples_in_one_evaluation(image_folder, tmp_path):
    config = tiny_config(steps=4)
    config = config.replace(diffusion=dataclasses.replace(config.diffusion, objective="regression"))
    dataset = ImageFolderDataset(image_folder, config.data.crop_size)
    pipe = sr3.load(train(config, dataset, tmp_path, progress=False))
    lr = torch.rand(1, 3, 8, 8) * 2 - 1
    ticks = []
    out = pipe.upscale_tensor(lr, seed=0, progress=lambda: ticks.append(1))
    assert len(ticks) == 1  # whatever --steps says
    assert torch.equal(out, pipe.upscale_tensor(lr, sampler="ddpm", steps=3, seed=5))


def test_downscaled_crops_show_the_photo_at_smaller_scales(tmp_path):
    """data.downscale_max: a horizontal ramp of 1 grey level per pixel, cropped after shrinking by f in [1, 4],
    rises f levels per pixel; f = 1 crops keep the native slope."""
    ramp = np.tile(np.arange(256, dtype=np.uint8), (256, 1))
    Image.fromarray(np.stack([ramp] * 3, axis=-1)).save(tmp_path / "ramp.png")

    def slopes(downscale_max):
        batch = ImageFolderDataset(tmp_path, 32, hflip=False, downscale_max=downscale_max).sample(
            64, torch.Generator().manual_seed(0))
        pixels = (batch.hr[:, 0, 16, 4:28] + 1) * 127.5  # a middle row, away from the resize borders
        return (pixels[:, -1] - pixels[:, 0]) / 23
    native, shrunk = slopes(1.0), slopes(4.0)
    assert torch.allclose(native, torch.ones(64), atol=1e-4)
    assert shrunk.min() >= 0.95 and shrunk.max() <= 4.05
    assert (shrunk > 2).float().mean() > 0.3  # log-uniform on [1, 4]: half the crops are shrunk more than 2x
    with pytest.raises(UserError, match="downscale_max"):
        ImageFolderDataset(tmp_path, 32, downscale_max=0.5)
