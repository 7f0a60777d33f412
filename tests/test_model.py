import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import sr3
from sr3.checkpoint import load_model_dir, save_model_dir
from sr3.config import Config, UNetConfig
from sr3.errors import UserError
from sr3.unet import UNet


def test_unet_shapes_with_attention_classes_and_aug_level():
    config = UNetConfig(base_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_levels=(1,),
                        attention_heads=2, num_classes=5, aug_level_conditioning=True, groupnorm_groups=8)
    model = UNet(config)
    x = torch.randn(2, 3, 16, 24)
    out = model(x, torch.rand(2), torch.randn(2, 3, 16, 24), torch.tensor([0, 4]), torch.rand(2))
    assert out.shape == (2, 3, 16, 24)


def test_residual_blocks_scale_the_sum_by_inverse_sqrt2():
    from sr3.unet import ResBlock
    block = ResBlock(8, 8, 16, 4, 0.0)
    x = torch.randn(1, 8, 4, 4)
    # conv2 starts at zero, so the block is exactly skip / sqrt(2)
    assert torch.allclose(block(x, torch.randn(1, 16)), x / 2 ** 0.5)


def test_model_directory_round_trip(tmp_path):
    config = Config(model=UNetConfig(base_channels=16, channel_mult=(1, 2), num_res_blocks=1, groupnorm_groups=8))
    torch.manual_seed(0)
    model = UNet(config.model)
    save_model_dir(tmp_path, model, config)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded, loaded_config = load_model_dir(tmp_path)
    assert loaded_config == config
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k


def test_deleted_tensor_is_a_clear_error(tiny_model_dir, tmp_path):
    weights = load_file(str(tiny_model_dir / "model.safetensors"))
    name = sorted(weights)[3]
    del weights[name]
    save_file(weights, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    with pytest.raises(UserError, match=r"weights do not match .*config.json \(missing \['" + name.replace(".", r"\.")):
        sr3.load(tmp_path)


def test_edited_config_is_a_clear_error(tiny_model_dir, tmp_path):
    d = json.loads((tiny_model_dir / "config.json").read_text())
    d["model"]["base_channels"] = 24
    (tmp_path / "config.json").write_text(json.dumps(d))
    (tmp_path / "model.safetensors").write_bytes((tiny_model_dir / "model.safetensors").read_bytes())
    with pytest.raises(UserError, match="does not match the weights|weights do not match"):
        sr3.load(tmp_path)


def test_unknown_config_field_and_corrupt_weights(tiny_model_dir, tmp_path):
    d = json.loads((tiny_model_dir / "config.json").read_text())
    d["model"]["channels"] = 3
    (tmp_path / "config.json").write_text(json.dumps(d))
    with pytest.raises(UserError, match=r"unknown UNetConfig field\(s\) \['channels'\]"):
        sr3.load(tmp_path)
    (tmp_path / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(UserError, match="corrupt safetensors file"):
        sr3.load(tmp_path)


def test_upscale_is_identical_whatever_the_batch_size(tiny_model_dir):
    pipe = sr3.load(tiny_model_dir)
    lr = torch.rand(3, 3, 12, 10) * 2 - 1
    for sampler in ("ddpm", "ddim", "dpmpp"):
        together = pipe.upscale_tensor(lr, sampler=sampler, steps=4, seed=10)
        one_by_one = torch.cat([pipe.upscale_tensor(lr[k:k + 1], sampler=sampler, steps=4, seed=10 + k)
                                for k in range(3)])
        assert together.shape == (3, 3, 48, 40)
        assert torch.equal(together, one_by_one), sampler
        assert not torch.equal(together[0], together[1])
