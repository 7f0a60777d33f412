"""RAISR: hashing, save/load, training, and that it beats bicubic on held-out images."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from sr3 import metrics, raisr
from sr3.cli import main
from sr3.degradation import downsample, upsample
from sr3.errors import UserError
from sr3.imageio import pil_to_tensor, tensor_to_pil

# A small, fast configuration for tests (the shipped banks use 11x11 filters and 24 angles).
SMALL = dict(filter_size=7, gradient_window=5, gradient_sigma=1.0, angle_bins=8)



def shapes_image(seed: int, size: int = 96) -> Image.Image:
    """A synthetic 'photo': random discs, triangles and thick lines, anti-aliased by 4x supersampling."""
    rng = np.random.default_rng(seed)
    big = size * 4
    img = Image.new("RGB", (big, big), tuple(int(v) for v in rng.integers(0, 256, 3)))
    d = ImageDraw.Draw(img)
    for _ in range(12):
        c = tuple(int(v) for v in rng.integers(0, 256, 3))
        x0, y0 = (int(v) for v in rng.integers(-big // 4, big, 2))
        w, h = (int(v) for v in rng.integers(big // 10, big // 2, 2))
        kind = rng.integers(0, 3)
        if kind == 0:
            d.ellipse([x0, y0, x0 + w, y0 + h], fill=c)
        elif kind == 1:
            d.polygon([tuple(int(v) for v in rng.integers(0, big, 2)) for _ in range(3)], fill=c)
        else:
            d.line([tuple(int(v) for v in rng.integers(0, big, 2)) for _ in range(2)], fill=c,
                   width=int(rng.integers(4, 16)))
    return img.resize((size, size), Image.LANCZOS)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("raisr_train")
    for i in range(6):
        shapes_image(i).save(folder / f"{i}.png")
    out = tmp_path_factory.mktemp("raisr_bank")
    with torch.random.fork_rng():
        torch.set_num_threads(1)
        model = raisr.train_raisr([folder], 2, seed=0, max_patches_per_image=8000, out_dir=out, progress=False,
                                  **SMALL)
    return model, out


def _psnr_y(img: Image.Image, hr: Image.Image, scale: int) -> float:
    return metrics.psnr(pil_to_tensor(img).add(1).div(2), pil_to_tensor(hr).add(1).div(2),
                        border=scale, y_channel=True).item()


def test_raisr_beats_bicubic_on_held_out_generated_images(trained):
    model, _ = trained
    gains = []
    for seed in range(100, 104):  # never seen in training (seeds 0-5)
        hr = shapes_image(seed)
        lr = tensor_to_pil(downsample(pil_to_tensor(hr)[None], 2)[0])
        bicubic = tensor_to_pil(upsample(pil_to_tensor(lr)[None], 2)[0])
        out = model.upscale(lr)
        assert out.size == hr.size
        gains.append(_psnr_y(out, hr, 2) - _psnr_y(bicubic, hr, 2))
    assert np.mean(gains) > 0.3, gains
    assert min(gains) > 0, gains


def test_identity_filters_reproduce_bicubic():
    cfg = raisr.RAISRConfig(scale=3, strength_thresholds=(0.01, 0.02), coherence_thresholds=(0.3, 0.6), **SMALL)
    filters = torch.zeros(cfg.buckets, cfg.filter_size ** 2)
    filters[:, cfg.filter_size ** 2 // 2] = 1.0  # centre tap only: output = cheap upscale
    lr = shapes_image(7, 30)
    bicubic = tensor_to_pil(upsample(pil_to_tensor(lr)[None], 3)[0])
    out = raisr.RAISR(cfg, filters).upscale(lr)
    diff = np.abs(np.asarray(out, dtype=int) - np.asarray(bicubic, dtype=int))
    assert diff.max() <= 1  # rounding only


def test_hash_sees_edge_direction_strength_and_coherence():
    cfg = raisr.RAISRConfig(scale=2, **SMALL)
    y = torch.zeros(32, 32)
    y[:, 16:] = 1.0  # vertical edge: gradient along x, angle 0
    angle, strength, coherence = (t[16, 14:18] for t in raisr._structure_features(y, cfg))
    assert torch.all((angle < 0.05) | (angle > math.pi - 0.05))
    assert torch.all(coherence > 0.99) and torch.all(strength > 0.1)
    angle_t = raisr._structure_features(y.T.contiguous(), cfg)[0][14:18, 16]  # horizontal edge: angle pi/2
    assert torch.allclose(angle_t, torch.full((4,), math.pi / 2), atol=0.05)
    flat = raisr._structure_features(torch.full((20, 20), 0.5), cfg)[1]
    assert flat.abs().max() == 0


def test_training_hash_matches_inference_hash():
    cfg = raisr.RAISRConfig(scale=2, **SMALL)
    y = torch.rand(40, 50, generator=torch.Generator().manual_seed(0))
    pix = torch.randperm(40 * 50, generator=torch.Generator().manual_seed(1))[:300]
    for full, sampled in zip(raisr._structure_features(y, cfg), raisr._structure_features_at(y, pix, cfg)):
        assert torch.allclose(full.flatten()[pix], sampled, atol=1e-5)


def test_save_load_round_trip_without_pickle(trained):
    model, out = trained
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "filters.safetensors", "model_card.json"]
    card = json.loads((out / "model_card.json").read_text())
    assert card["training_images_used"] == 6 and "command" in card and "hardware" in card
    loaded = raisr.load_raisr(out, 2)
    assert loaded.config == model.config
    lr = shapes_image(50, 40)
    assert np.array_equal(np.asarray(loaded.upscale(lr)), np.asarray(model.upscale(lr)))


def test_load_errors_are_one_line_user_errors(trained, tmp_path):
    _, out = trained
    with pytest.raises(UserError, match="not a RAISR filter bank"):
        raisr.load_raisr(tmp_path)
    with pytest.raises(UserError, match="for scale 2, not 4"):
        raisr.load_raisr(out, 4)
    with pytest.raises(UserError, match="no default filter bank for scale 5"):
        raisr.load_raisr(None, 5)
    (tmp_path / "config.json").write_text("{not json")
    (tmp_path / "filters.safetensors").write_bytes(b"")
    with pytest.raises(UserError, match="config.json: not valid JSON"):
        raisr.load_raisr(tmp_path)
    (tmp_path / "config.json").write_text('{"scale": 2, "colour": 1}')
    with pytest.raises(UserError, match=r"config.json: unknown RAISRConfig field\(s\) \['colour'\]"):
        raisr.load_raisr(tmp_path)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_shipped_default_banks_load_and_upscale(scale):
    model = raisr.load_raisr(None, scale)
    assert model.scale == scale and model.config.filter_size == 11
    lr = shapes_image(60, 20)
    out = model.upscale(lr.convert("L"))  # grey input is upscaled as RGB
    assert out.size == (20 * scale, 20 * scale) and out.mode == "RGB"
    assert (raisr.default_path(scale) / "model_card.json").is_file()


def test_cli_training_entry_point(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        shapes_image(i, 48).save(data / f"{i}.png")
    (data / "broken.jpg").write_bytes(b"not an image")  # reported and skipped, not fatal
    argv = ["train", "--method", "raisr", "--data", str(data), "--out", str(tmp_path / "bank"), "--data.scale", "3",
            "--raisr.max-patches-per-image", "2000", "--raisr.filter-size", "5", "--no-progress"]
    with pytest.warns(UserWarning, match="broken.jpg"):
        assert main(argv) == 0
    assert raisr.load_raisr(tmp_path / "bank", 3).config.filter_size == 5


def test_training_on_nothing_usable_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no images found"):
        raisr.train_raisr([tmp_path], 2, progress=False)
    Image.new("RGB", (10, 10)).save(tmp_path / "small.png")
    with pytest.raises(UserError, match="no usable training images"), pytest.warns(UserWarning):
        raisr.train_raisr([tmp_path], 2, progress=False)
