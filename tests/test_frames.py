"""--save-steps: refinement frames and animations for a 4x model and a 16x (two-stage) cascade.

Tiny random-weight models are built here (as in test_cascade.py); nothing reads ../shared/data.
"""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from sr3.cascade import CascadeConfig, StageSettings, write_cascade
from sr3.checkpoint import save_model_dir
from sr3.cli import main
from sr3.methods import MethodOptions, build_method
from sr3.config import Config, DataConfig, DiffusionConfig, SamplingConfig, UNetConfig
from sr3.evaluate import EvaluationConfig, evaluate
from sr3.frames import ANIMATION_NAME, FrameRecorder, StepCollector, bounded_view
from sr3.unet import UNet

DIFF = DiffusionConfig(schedule="cosine", timesteps=100, prediction="v")


def tiny_sr_config(crop: int, scale: int = 4, aug: bool = False) -> Config:
    model = UNetConfig(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, mid_attention=False,
                       groupnorm_groups=4, aug_level_conditioning=aug)
    return Config(model=model, diffusion=DIFF, data=DataConfig(scale=scale, crop_size=crop))


def save_random_model(path, config: Config, seed: int):
    """Random weights; the zero-initialised output convs are perturbed so the output depends on the input."""
    torch.manual_seed(seed)
    model = UNet(config.model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_model_dir(path, model, config)
    return path


def write_png(path, width, height, seed=0):
    arr = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture(scope="module")
def sr_model(tmp_path_factory):
    return save_random_model(tmp_path_factory.mktemp("sr4x") / "model", tiny_sr_config(32), 1)


def write_16x_cascade(root):
    """Two random 4x stages, 8 -> 32 -> 128 px, 3 and 2 steps, the second with conditioning augmentation."""
    save_random_model(root / "sr1", tiny_sr_config(32, aug=True), 1)
    save_random_model(root / "sr2", tiny_sr_config(128, aug=True), 2)
    write_cascade(root, CascadeConfig(stages=(
        StageSettings("sr1", sampling=SamplingConfig(steps=3), scale=4),
        StageSettings("sr2", sampling=SamplingConfig(steps=2), scale=4, aug_level=0.2))))
    return root


@pytest.fixture(scope="module")
def cascade16(tmp_path_factory):
    return write_16x_cascade(tmp_path_factory.mktemp("cascade16"))


def gif_frames(path) -> list[Image.Image]:
    with Image.open(path) as im:
        return [f.convert("RGB").copy() for f in ImageSequence.Iterator(im)]


def test_upscale_4x_writes_one_frame_per_step_bounded_to_512(tmp_path, sr_model):
    # 136x40 -> 544x160: wider than 512, so frames are the whole image downscaled to 512x151.
    src = write_png(tmp_path / "wide.png", 136, 40)
    small = write_png(tmp_path / "small.png", 16, 12, seed=1)
    frames = tmp_path / "frames"
    assert main(["upscale", str(src), str(small), "--model", str(sr_model), "--out", str(tmp_path / "out"),
                 "--steps", "4", "--save-steps", str(frames), "--no-progress"]) == 0
    wide = {p.name for p in (frames / "wide").iterdir()}
    assert wide == {f"stage0_step{i:03d}.png" for i in range(4)} | {ANIMATION_NAME}
    for i in range(4):
        assert Image.open(frames / "wide" / f"stage0_step{i:03d}.png").size == (512, 151)
    anim = gif_frames(frames / "wide" / ANIMATION_NAME)
    assert [f.size for f in anim] == [(512, 151)] * 4
    # A small image keeps its own size (64x48), and its last frame is the saved result.
    assert Image.open(frames / "small" / "stage0_step003.png").size == (64, 48)
    result = np.asarray(Image.open(tmp_path / "out" / "small.png"), dtype=int)
    assert np.abs(np.asarray(Image.open(frames / "small" / "stage0_step003.png"), dtype=int) - result).max() <= 1
    assert len(gif_frames(frames / "small" / ANIMATION_NAME)) == 4


def test_cascade_16x_frames_every_stage_and_noisy_state(tmp_path, cascade16):
    src = write_png(tmp_path / "tiny.png", 8, 8)
    frames = tmp_path / "frames"
    assert main(["upscale", str(src), "--cascade", str(cascade16), "--out", str(tmp_path / "out"),
                 "--save-steps", str(frames), "--save-noisy", "--no-progress"]) == 0
    assert Image.open(tmp_path / "out" / "tiny.png").size == (128, 128)
    folder = frames / "tiny"
    expected = {f"stage0_step{i:03d}{n}.png" for i in range(3) for n in ("", "_noisy")}
    expected |= {f"stage1_step{i:03d}{n}.png" for i in range(2) for n in ("", "_noisy")}
    assert {p.name for p in folder.iterdir()} == expected | {ANIMATION_NAME}
    assert {Image.open(folder / f"stage0_step{i:03d}.png").size for i in range(3)} == {(32, 32)}
    assert {Image.open(folder / f"stage1_step{i:03d}_noisy.png").size for i in range(2)} == {(128, 128)}
    anim = gif_frames(folder / ANIMATION_NAME)
    assert [f.size for f in anim] == [(128, 128)] * 5  # 3 + 2 estimates, stage 0 enlarged to the last size


def test_save_steps_refuses_a_used_folder_and_stepless_methods(tmp_path, sr_model, capsys):
    src = write_png(tmp_path / "a.png", 8, 8)
    (tmp_path / "frames" / "a").mkdir(parents=True)
    (tmp_path / "frames" / "a" / "mine.txt").write_text("keep")
    assert main(["upscale", str(src), "--model", str(sr_model), "--out", str(tmp_path / "o"), "--save-steps",
                 str(tmp_path / "frames"), "--no-progress"]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert (tmp_path / "frames" / "a" / "mine.txt").read_text() == "keep"
    assert not (tmp_path / "o").exists()
    assert main(["upscale", str(src), "--method", "bicubic", "--out", str(tmp_path / "o"), "--save-steps",
                 str(tmp_path / "f2"), "--no-progress"]) == 2
    assert "takes no sampling steps" in capsys.readouterr().err


def test_recorder_and_collector_in_the_library():
    image = torch.zeros(1, 3, 40, 1000)
    assert bounded_view(image[0], 100).size == (100, 4)
    collector = StepCollector(max_side=50)
    for i in range(10):
        collector({"i": i, "image": image})
    strip = collector.strip(4)
    assert [label for label, _ in strip] == ["step 1", "step 4", "step 7", "step 10"]
    assert strip[0][1].size == (50, 2)
    with pytest.raises(ValueError):
        FrameRecorder(["x", "y"])({"i": 0, "image": image})


def test_evaluate_report_shows_one_refinement_strip_per_diffusion_method(tmp_path, sr_model):
    data = tmp_path / "hr"
    data.mkdir()
    write_png(data / "a.png", 32, 24)
    write_png(data / "b.png", 24, 24, seed=3)
    sr3 = build_method("sr3", MethodOptions(model_dirs={"sr3": sr_model}, sampling={"steps": 4}))
    bicubic = build_method("bicubic", MethodOptions(scale=4))
    evaluate(EvaluationConfig(data=data, out=tmp_path / "out", scale=4, report_images=1, quiet=True), [bicubic, sr3])
    html = (tmp_path / "out" / "report.html").read_text()
    assert html.count("<h2>Refinement</h2>") == 1 and "image a.png" in html
    assert [f"step {i}" for i in range(1, 5)] == re.findall(r'alt="sr3 (step \d+)"', html)
    assert 'alt="bicubic step' not in html  # no steps, no strip
    # The strip's last frame is the evaluated output itself (same seed): HR 32x24, LR 8x6, SR 32x24.
    last = re.findall(r'<img src="data:image/png;base64,([^"]+)" width="(\d+)" alt="sr3 step 4"', html)
    view = Image.open(io.BytesIO(base64.b64decode(last[0][0]))).convert("RGB")
    saved = Image.open(tmp_path / "out" / "images" / "sr3" / "a.png").convert("RGB")
    assert view.size == saved.size == (32, 24)
    assert np.abs(np.asarray(view, dtype=int) - np.asarray(saved, dtype=int)).max() <= 1


def test_generate_writes_frames_of_the_base_and_sr_stages(tmp_path):
    root = tmp_path / "cascade"
    base = Config(model=UNetConfig(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, mid_attention=False,
                                   groupnorm_groups=4, cond_channels=0, num_classes=2),
                  diffusion=DIFF, data=DataConfig(task="generate", crop_size=8))
    save_random_model(root / "base", base, 0)
    save_random_model(root / "sr", tiny_sr_config(32), 1)
    write_cascade(root, CascadeConfig(stages=(StageSettings("base", sampling=SamplingConfig(steps=3)),
                                              StageSettings("sr", sampling=SamplingConfig(steps=2), scale=4)),
                                      class_names=("cat", "dog")))
    frames = tmp_path / "frames"
    assert main(["generate", "--cascade", str(root), "--class", "dog", "--n", "2", "--out", str(tmp_path / "gen"),
                 "--save-steps", str(frames), "--no-progress"]) == 0
    assert sorted(p.name for p in frames.iterdir()) == ["dog_0000", "dog_0001"]
    for folder in frames.iterdir():
        assert {p.name for p in folder.iterdir()} == {"stage0_step000.png", "stage0_step001.png", "stage0_step002.png",
                                                      "stage1_step000.png", "stage1_step001.png", ANIMATION_NAME}
        assert Image.open(folder / "stage0_step002.png").size == (8, 8)
        assert Image.open(folder / "stage1_step001.png").size == (32, 32)
        assert [f.size for f in gif_frames(folder / ANIMATION_NAME)] == [(32, 32)] * 5
    # The two images are different samples, each recorded in its own folder.
    last = [np.asarray(Image.open(frames / f"dog_000{k}" / "stage1_step001.png")) for k in range(2)]
    assert not np.array_equal(*last)
    assert np.array_equal(last[1], np.asarray(Image.open(tmp_path / "gen" / "dog_0001.png")))
