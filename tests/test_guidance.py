"""Classifier-free guidance (Ho & Salimans 2022): class dropout in training, the guided
estimate at sampling, ``sr3 generate --guidance W``."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from sr3.cascade import CascadeConfig, StageSettings, load_cascade, write_cascade
from sr3.checkpoint import save_model_dir
from sr3.cli import main
from sr3.config import Config, DataConfig, DiffusionConfig, SamplingConfig, TrainConfig, UNetConfig
from sr3.data import Batch
from sr3.diffusion import Conditioning, Denoiser
from sr3.errors import UserError
from sr3.sampling import sample
from sr3.train import make_conditioning
from sr3.unet import UNet

CLASSES = 3
DIFF = DiffusionConfig(schedule="cosine", timesteps=100, prediction="v")


def _base_config(null_class=True, class_dropout=0.2) -> Config:
    return Config(model=UNetConfig(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, mid_attention=False,
                                   groupnorm_groups=4, cond_channels=0, num_classes=CLASSES, null_class=null_class),
                  diffusion=DIFF, data=DataConfig(task="generate", crop_size=8),
                  train=TrainConfig(class_dropout=class_dropout if null_class else 0.0))


def _model(config: Config, seed=0) -> UNet:
    torch.manual_seed(seed)
    model = UNet(config.model)
    with torch.no_grad():  # the zero-initialised output conv would ignore the class entirely
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def test_guided_estimate_is_the_eq6_mix_of_conditional_and_unconditional():
    config = _base_config()
    model = _model(config)
    labels = torch.tensor([0, 2])
    x, gamma, w = torch.randn(2, 3, 8, 8), torch.tensor([0.3, 0.7]), 1.5
    plain = Denoiser(model, DIFF, Conditioning(class_label=labels), clip=False, batched=True)
    null = Denoiser(model, DIFF, Conditioning(class_label=torch.full_like(labels, CLASSES)), clip=False, batched=True)
    guided = Denoiser(model, DIFF, Conditioning(class_label=labels), clip=False, batched=True, guidance=w,
                      null_class=CLASSES)
    x_c, x_u = plain(x, gamma), null(x, gamma)
    torch.testing.assert_close(guided(x, gamma), (1 + w) * x_c - w * x_u)
    assert (x_c - x_u).abs().mean() > 1e-3  # the null label really is a different conditioning


def test_guidance_zero_is_unguided_and_guidance_changes_samples():
    config = _base_config()
    model = _model(config)
    cond, shape, seeds = Conditioning(class_label=torch.tensor([1, 2])), (2, 3, 8, 8), [5, 6]
    unguided = sample(model, config, cond, shape, SamplingConfig(steps=4), seeds)
    zero = sample(model, config, cond, shape, SamplingConfig(steps=4, guidance=0.0), seeds)
    guided = sample(model, config, cond, shape, SamplingConfig(steps=4, guidance=3.0), seeds)
    assert torch.equal(unguided, zero)
    assert (guided - unguided).abs().mean() > 1e-3


def test_guidance_needs_a_model_trained_with_class_dropout():
    config = _base_config(null_class=False)
    model = _model(config)
    with pytest.raises(UserError, match="class dropout"):
        sample(model, config, Conditioning(class_label=torch.tensor([0])), (1, 3, 8, 8),
               SamplingConfig(steps=2, guidance=1.0), [0])
    with pytest.raises(UserError, match="null_class"):
        Config(model=config.model, diffusion=DIFF, data=config.data, train=TrainConfig(class_dropout=0.1))
    with pytest.raises(UserError, match="guidance"):
        SamplingConfig(guidance=-1.0)


def test_class_dropout_replaces_the_drawn_share_of_labels_by_the_null_class():
    labels = torch.arange(4000) % CLASSES
    batch = Batch(hr=torch.zeros(4000, 3, 8, 8), label=labels)
    _, cond = make_conditioning(batch, _base_config(class_dropout=0.25), torch.Generator().manual_seed(0))
    dropped = cond.class_label == CLASSES
    assert 0.22 < dropped.float().mean() < 0.28
    assert torch.equal(cond.class_label[~dropped], labels[~dropped])  # the rest keep their class
    _, kept = make_conditioning(batch, _base_config(class_dropout=0.0), torch.Generator().manual_seed(0))
    assert torch.equal(kept.class_label, labels)


@pytest.fixture(scope="module")
def guided_cascade(tmp_path_factory):
    """A class-conditional base (with a null class) -> an unconditional 2x SR stage."""
    root = tmp_path_factory.mktemp("cfg-cascade")
    base = _base_config()
    sr = Config(model=UNetConfig(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, mid_attention=False,
                                 groupnorm_groups=4), diffusion=DIFF, data=DataConfig(scale=2, crop_size=16))
    save_model_dir(root / "base", _model(base, 0), base)
    save_model_dir(root / "sr", _model(sr, 1), sr)
    write_cascade(root, CascadeConfig(stages=(StageSettings("base", sampling=SamplingConfig(steps=3)),
                                              StageSettings("sr", sampling=SamplingConfig(steps=2), scale=2))))
    return root


def test_generate_guidance_zero_writes_the_unguided_images(guided_cascade, tmp_path):
    common = ["generate", "--cascade", str(guided_cascade), "--class", "1", "--n", "2", "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "plain")]) == 0
    assert main([*common, "--out", str(tmp_path / "w0"), "--guidance", "0"]) == 0
    assert main([*common, "--out", str(tmp_path / "w2"), "--guidance", "2"]) == 0
    plain, w0, w2 = ((tmp_path / d / "1_0001.png").read_bytes() for d in ("plain", "w0", "w2"))
    assert plain == w0 and plain != w2
    assert Image.open(tmp_path / "w2" / "1_0001.png").size == (16, 16)
    # the unconditional SR stage is not guided: only the class-conditional base gets the weight
    cascade = load_cascade(guided_cascade, sampling_overrides={"guidance": 2.0})
    assert [st.settings.sampling.guidance for st in cascade.stages] == [2.0, 0.0]


def test_upscale_refuses_guidance_before_any_image(tiny_model_dir, tmp_path, capsys):
    Image.new("RGB", (16, 16), (90, 120, 150)).save(tmp_path / "a.png")
    code = main(["upscale", str(tmp_path / "a.png"), "--model", str(tiny_model_dir), "--guidance", "1",
                 "--out", str(tmp_path / "out"), "--no-progress"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("sr3: error")]
    assert code == 2 and len(errors) == 1 and "needs a class-conditional model" in errors[0]
    assert not (tmp_path / "out").exists()
