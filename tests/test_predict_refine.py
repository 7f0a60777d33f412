"""Low-resolution U-Net (model.pixel_unshuffle) and predict-and-refine (sr3/predict_refine.py)."""

import json
import pytest
import torch

import sr3
from sr3.cascade import Cascade, CascadeConfig, StageSettings, stage_seeds, write_cascade
from sr3.checkpoint import load_model_dir
from sr3.cli import main
from sr3.config import SamplingConfig, UNetConfig
from sr3.data import ImageFolderDataset
from sr3.errors import UserError
from sr3.predict_refine import PREDICTOR_DIR, Predictor, load_predictor
from sr3.train import train
from sr3.unet import UNet

from conftest import lowres_config


def test_pixel_unshuffle_runs_every_block_at_low_resolution_and_round_trips_shapes():
    config = UNetConfig(base_channels=16, channel_mult=(1, 2), num_res_blocks=1, mid_attention=False,
                        groupnorm_groups=8, pixel_unshuffle=4)
    assert config.size_multiple == 8  # 4 (unshuffle) x 2 (one halving)
    model = UNet(config)
    seen = []
    model.down[0].blocks[0].register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    x = torch.randn(2, 3, 40, 24)
    out = model(x, torch.rand(2), torch.randn(2, 3, 40, 24))
    assert out.shape == x.shape
    assert seen == [(2, 16, 10, 6)]  # the first block works at 1/4 of the output's sides


def test_pixel_unshuffle_is_validated():
    with pytest.raises(UserError, match="pixel_unshuffle = 3"):
        UNetConfig(pixel_unshuffle=3)


def test_a_config_without_the_new_fields_loads_as_before(tiny_model_dir, tmp_path):
    """Model directories written before pixel_unshuffle / anchor existed load unchanged (defaults 1 / bicubic)."""
    raw = json.loads((tiny_model_dir / "config.json").read_text())
    del raw["model"]["pixel_unshuffle"], raw["diffusion"]["anchor"]
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_text(json.dumps(raw))
    (old / "model.safetensors").write_bytes((tiny_model_dir / "model.safetensors").read_bytes())
    model, config = load_model_dir(old)
    assert config.model.pixel_unshuffle == 1 and config.diffusion.anchor == "bicubic"
    new_model, _ = load_model_dir(tiny_model_dir)
    x, cond = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x, torch.tensor([0.5]), cond), new_model(x, torch.tensor([0.5]), cond))


def test_the_refiner_is_conditioned_on_the_predictor_output(refiner_dir):
    model_dir, predictor_dir = refiner_dir
    assert (model_dir / PREDICTOR_DIR / "model.safetensors").read_bytes() == \
        (predictor_dir / "model.safetensors").read_bytes()
    pipe = sr3.load(model_dir, bf16=False)
    predictor = sr3.load(predictor_dir, bf16=False)
    lr = torch.rand(1, 3, 8, 12) * 2 - 1
    seen = []
    pipe.model.register_forward_hook(lambda m, args, out: seen.append(args[2].clone()))
    sr = pipe.upscale_tensor(lr, seed=0, steps=2, tile=0)
    assert sr.shape == (1, 3, 32, 48)
    expected = predictor.upscale_tensor(lr, tile=0)
    assert len(seen) == 2  # two refiner steps, each conditioned on the predictor's output
    assert torch.allclose(seen[0], expected, atol=1e-6)
    assert pipe.count_evaluations(8, 12, pipe.settings(steps=2, tile=0)) == 3  # 1 prediction + 2 refinements


def test_a_refiner_without_its_predictor_is_refused(refiner_dir, tmp_path):
    model_dir, _ = refiner_dir
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "model.safetensors"):
        (broken / name).write_bytes((model_dir / name).read_bytes())
    with pytest.raises(UserError, match="predictor"):
        sr3.load(broken)


def test_training_a_refiner_needs_a_regression_predictor(refiner_dir, image_folder, tmp_path):
    model_dir, predictor_dir = refiner_dir
    refiner_config = lowres_config("diffusion", anchor="predictor")
    with pytest.raises(UserError, match="must be a regression model"):
        load_predictor(model_dir, refiner_config)  # a diffusion model is no predictor
    dataset = ImageFolderDataset(image_folder, refiner_config.data.crop_size)
    with pytest.raises(UserError, match="--predictor"):
        train(refiner_config, dataset, tmp_path / "run", progress=False)


def test_cli_trains_a_refiner_with_predictor_flag(refiner_dir, image_folder, tmp_path, capsys):
    _, predictor_dir = refiner_dir
    out = tmp_path / "cli_refiner"
    args = ["train", "--preset", "tiny", "--data", str(image_folder), "--out", str(out), "--steps", "2",
            "--model.pixel-unshuffle", "4", "--diffusion.target", "residual", "--no-progress",
            "--train.sample-every", "0", "--diffusion.anchor", "predictor"]
    assert main(args) == 2 and "--predictor" in capsys.readouterr().err  # a refiner needs its predictor
    assert main(args + ["--predictor", str(predictor_dir)]) == 0
    assert (out / "model" / PREDICTOR_DIR / "config.json").exists()


def test_training_conditions_the_refiner_on_the_predictor(refiner_dir, image_folder, tmp_path):
    """Every training step's conditioning is the predictor's output, not the bicubic upsampling."""
    _, predictor_dir = refiner_dir
    refiner_config = lowres_config("diffusion", anchor="predictor", steps=2)
    loaded = load_predictor(predictor_dir, refiner_config)
    calls = []

    class Spy(Predictor):
        def to(self, device):
            return self

        def __call__(self, cond, sampling, device, bf16):
            out = super().__call__(cond, sampling, device, bf16)
            calls.append(not torch.equal(out.lr_upsampled, cond.lr_upsampled))
            return out

    dataset = ImageFolderDataset(image_folder, refiner_config.data.crop_size)
    train(refiner_config, dataset, tmp_path / "run", progress=False, predictor=Spy(loaded.model, loaded.config))
    assert calls == [True, True]


def test_a_refiner_runs_as_a_cascade_stage_with_its_predictor(refiner_dir, tmp_path):
    """The shipped photo cascades start with the default (predict-and-refine) model: as a cascade stage it
    must give exactly what the pipeline gives, predictor included, with the cascade's per-stage seeds."""
    model_dir, _ = refiner_dir
    sampling = SamplingConfig(steps=2, tile=0)
    write_cascade(tmp_path / "c", CascadeConfig(stages=(StageSettings(str(model_dir), sampling=sampling, scale=4),)))
    cascade = Cascade(tmp_path / "c")
    lr = torch.rand(2, 3, 8, 12) * 2 - 1
    got = cascade.upscale(lr, seeds=[3, 4])
    pipe = sr3.load(model_dir, bf16=False)
    expected = pipe.upscale_tensor(lr, seed=stage_seeds([3, 4], 0), steps=2, tile=0)
    assert torch.equal(got, expected)
    assert cascade.count_upscale_evaluations(8, 12) == pipe.count_evaluations(8, 12, pipe.settings(steps=2, tile=0)) == 3
