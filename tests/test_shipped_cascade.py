"""The shipped 8x and 16x photo cascades (sr3/weights/cascade-8x, cascade-16x) and --scale routing."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from PIL import Image

from sr3.cascade import Cascade, CascadeConfig, StageSettings, load_cascade, stage_seeds, write_cascade
from sr3.checkpoint import resolve_model_dir
from sr3.cli import main
from sr3.commands import demo as demo_command
from sr3.errors import UserError
from sr3.imageio import pil_to_tensor, tensor_to_pil
from sr3.config import SamplingConfig
from sr3.methods import SHIPPED_CASCADES, MethodOptions, build_method
from sr3.pipeline import DEFAULT_MODEL_DIR, SR3_4X_DIR, load


@pytest.fixture(scope="module")
def small_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("in") / "small.png"
    pixels = np.random.default_rng(11).integers(0, 256, (10, 12, 3), dtype=np.uint8)  # 12 x 10 px
    Image.fromarray(pixels).save(path)
    return path


@pytest.mark.parametrize("scale", [16, 8])
def test_shipped_cascades_are_the_default_model_then_an_augmented_stage(scale):
    cascade = load_cascade(SHIPPED_CASCADES[scale])
    assert cascade.base is None and len(cascade.sr_stages) == 2 and cascade.total_scale == scale
    first, second = cascade.stages
    assert resolve_model_dir(cascade.root / first.name).resolve() == DEFAULT_MODEL_DIR.resolve()
    # the setting the cascades were measured with (the default model's first default, README), pinned in
    # cascade.json so that the default model's own sampling.json can change without changing them
    assert first.settings.sampling == SamplingConfig(sampler="ddpm", steps=3, schedule="train", tile=1024)
    assert second.config.data.scale == scale // 4
    # trained with CDM's conditioning augmentation, sampled at the level sr3 sweep chose (its card says so)
    assert second.config.data.aug_noise_max > 0 and second.config.model.aug_level_conditioning
    card = json.loads((cascade.root / "model_card.json").read_text())
    assert card["aug_level"]["value"] == second.settings.aug_level and "sr3 sweep" in card["aug_level"]["chosen_by"]
    assert not second.settings.truncated


def test_shipped_cascade_chains_stage_one_into_stage_two():
    cascade = load_cascade(SHIPPED_CASCADES[16], sampling_overrides={"steps": 1}, bf16=False)
    cascade = cascade.with_config(cascade.config.with_stage(1, aug_level=0.0))  # the pipeline has no augmentation
    lr = torch.rand(1, 3, 5, 6, generator=torch.Generator().manual_seed(0)) * 2 - 1
    stage1, stage2 = cascade.upscale_stages(lr, [7])
    assert stage1.shape == (1, 3, 20, 24) and stage2.shape == (1, 3, 80, 96)
    # stage 1 is the default model, stage 2 its second stage run on stage 1's output, each with its seed stream
    first = load(DEFAULT_MODEL_DIR, bf16=False)
    assert torch.equal(stage1, first.upscale_tensor(lr, seed=stage_seeds([7], 0), steps=1))
    second = load(cascade.root / cascade.stages[1].name, bf16=False)
    assert torch.equal(stage2, second.upscale_tensor(stage1, seed=stage_seeds([7], 1),
                                                     sampling=cascade.stages[1].settings.sampling))


def test_sr_only_cascade_need_not_chain_training_crops(tmp_path):
    # two 4x stages trained on 64 px crops: 64 // 4 = 16 != 64, fine without a base stage
    write_cascade(tmp_path, CascadeConfig(stages=(StageSettings(str(SR3_4X_DIR), scale=4),
                                                  StageSettings(str(SR3_4X_DIR), scale=4))))
    assert Cascade(tmp_path).total_scale == 16


@pytest.mark.parametrize("scale", [16, 8])
def test_upscale_scale_16_and_8_write_the_shipped_cascades_result(small_png, tmp_path, scale):
    out = tmp_path / "out"
    assert main(["upscale", str(small_png), "--scale", str(scale), "--steps", "2", "--out", str(out),
                 "--no-progress"]) == 0
    written = Image.open(out / "small.png")
    assert written.size == (12 * scale, 10 * scale)
    # the shipped cascade's own result for seed 0 (not, say, bicubic of the input)
    cascade = load_cascade(SHIPPED_CASCADES[scale], sampling_overrides={"steps": 2}, bf16=True)
    expected = tensor_to_pil(cascade.upscale(pil_to_tensor(Image.open(small_png))[None], [0])[0])
    assert np.array_equal(np.asarray(written), np.asarray(expected))


def test_cascade_method_and_other_scales(small_png, tmp_path, capsys):
    assert build_method("cascade", MethodOptions()).scale == 16  # --method cascade without --cascade: the 16x one
    assert main(["upscale", str(small_png), "--scale", "3", "--out", str(tmp_path / "never"), "--no-progress"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "upscales 4x, not 3x" in lines[0]
    assert not (tmp_path / "never").exists()
    with pytest.raises(UserError, match="upscales 4x, not 16x"):  # only sr3's shipped model is routed to 16x
        build_method("regression", MethodOptions(scale=16))


def test_demo_offers_the_shipped_cascades_beside_the_4x_model():
    args = argparse.Namespace(model=None, regression_model=None, cascade=None, device="cpu")
    methods = demo_command.build_methods(args)
    assert {name: m.scale for name, m in methods.items()} == {"sr3": 4, "sr3-8x": 8, "sr3-16x": 16,
                                                              "regression": 4, "bicubic": 4}


def test_save_steps_on_the_shipped_16x_cascade_frames_every_step_of_both_stages(small_png, tmp_path):
    steps = tmp_path / "steps"
    assert main(["upscale", str(small_png), "--scale", "16", "--out", str(tmp_path / "out"), "--save-steps",
                 str(steps), "--no-progress"]) == 0
    cascade = load_cascade(SHIPPED_CASCADES[16])
    frames = sorted(p.name for p in (steps / "small").glob("stage*_step*.png"))
    per_stage = [st.settings.sampling.steps for st in cascade.stages]  # 3 (default model) and 4 (stage 2)
    assert frames == [f"stage{s}_step{i:03d}.png" for s, n in enumerate(per_stage) for i in range(n)]
    assert Image.open(steps / "small" / frames[-1]).size == (192, 160)  # under 512 px: full size
    assert (steps / "small" / "refinement.gif").stat().st_size > 0
