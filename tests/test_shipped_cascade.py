"""The shipped 16x cascade (sr3/weights/cascade-16x: the shipped 4x model twice) and --scale routing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from sr3.cascade import Cascade, CascadeConfig, StageSettings, load_cascade, stage_seeds, write_cascade
from sr3.checkpoint import resolve_model_dir
from sr3.cli import main
from sr3.config import SamplingConfig
from sr3.errors import UserError
from sr3.imageio import pil_to_tensor, tensor_to_pil
from sr3.methods import DEFAULT_CASCADE_DIR, MethodOptions, build_method
from sr3.pipeline import SR3_4X_DIR, load


@pytest.fixture(scope="module")
def small_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("in") / "small.png"
    pixels = np.random.default_rng(11).integers(0, 256, (10, 12, 3), dtype=np.uint8)  # 12 x 10 px
    Image.fromarray(pixels).save(path)
    return path


def test_shipped_cascade_is_the_4x_model_twice_and_says_so():
    cascade = load_cascade(DEFAULT_CASCADE_DIR)
    assert cascade.base is None and len(cascade.sr_stages) == 2 and cascade.total_scale == 16
    for stage in cascade.stages:
        assert resolve_model_dir(cascade.root / stage.name).resolve() == SR3_4X_DIR.resolve()
        assert stage.config.data.scale == 4 and stage.settings.aug_level == 0.0
    assert cascade.stages[1].settings.sampling.tile == 256
    card = json.loads((DEFAULT_CASCADE_DIR / "model_card.json").read_text())
    assert "NO-AUGMENTATION BASELINE" in card["status"] and "pending" in card["status"]


def test_shipped_cascade_chains_stage_one_into_stage_two():
    cascade = load_cascade(DEFAULT_CASCADE_DIR, sampling_overrides={"steps": 1}, bf16=False)
    lr = torch.rand(1, 3, 5, 6, generator=torch.Generator().manual_seed(0)) * 2 - 1
    stage1, stage2 = cascade.upscale_stages(lr, [7])
    assert stage1.shape == (1, 3, 20, 24) and stage2.shape == (1, 3, 80, 96)
    # stage 2 is the 4x model run on stage 1's output with stage 2's seed stream, nothing else
    pipe = load(SR3_4X_DIR, bf16=False)
    sampling = SamplingConfig(steps=1)
    assert torch.equal(stage1, pipe.upscale_tensor(lr, seed=stage_seeds([7], 0), sampling=sampling))
    assert torch.equal(stage2, pipe.upscale_tensor(stage1, seed=stage_seeds([7], 1), sampling=sampling))


def test_sr_only_cascade_need_not_chain_training_crops(tmp_path):
    # two 4x stages trained on 64 px crops: 64 // 4 = 16 != 64, fine without a base stage
    write_cascade(tmp_path, CascadeConfig(stages=(StageSettings(str(SR3_4X_DIR), scale=4),
                                                  StageSettings(str(SR3_4X_DIR), scale=4))))
    assert Cascade(tmp_path).total_scale == 16


def test_upscale_scale_16_writes_the_cascade_result(small_png, tmp_path):
    out = tmp_path / "out"
    assert main(["upscale", str(small_png), "--scale", "16", "--steps", "2", "--out", str(out), "--no-progress"]) == 0
    written = Image.open(out / "small.png")
    assert written.size == (12 * 16, 10 * 16)
    # the shipped cascade's own result for seed 0 (not, say, bicubic 16x of the input)
    cascade = load_cascade(DEFAULT_CASCADE_DIR, sampling_overrides={"steps": 2}, bf16=True)
    expected = tensor_to_pil(cascade.upscale(pil_to_tensor(Image.open(small_png))[None], [0])[0])
    assert np.array_equal(np.asarray(written), np.asarray(expected))
    assert build_method("cascade", MethodOptions()).scale == 16  # --method cascade without --cascade: the same


def test_scale_8_is_refused_with_what_is_missing(small_png, tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["upscale", str(small_png), "--scale", "8", "--out", str(out), "--no-progress"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "upscales 4x, not 8x" in lines[0] and "no 2x diffusion stage ships" in lines[0]
    assert not out.exists()
    with pytest.raises(UserError, match="upscales 4x, not 16x"):  # only sr3's shipped model is routed to 16x
        build_method("regression", MethodOptions(scale=16))
