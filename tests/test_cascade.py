"""Cascades (CDM): labelled data, conditioning augmentation, truncation, generate/upscale, refusals.

Everything runs on tiny random or 2-step-trained stages and a fake IDX dataset
written to tmp_path; nothing reads ../shared/data.
"""

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_idx
from sr3 import cascade as cascade_mod
from sr3.augment import augment_for_training, gaussian_blur, noise_augment, truncated_gammas
from sr3.cascade import Cascade, CascadeConfig, StageSettings, stage_seeds, write_cascade
from sr3.checkpoint import save_model_dir
from sr3.cli import main
from sr3.config import Config, DataConfig, DiffusionConfig, SamplingConfig, UNetConfig
from sr3.degradation import downsample, upsample
from sr3.diffusion import Conditioning, Denoiser, add_noise
from sr3.errors import UserError
from sr3.labelled_data import LabelledDataset, read_idx
from sr3.photo_protocol import photo_pairs, photo_scores, to_unit
from sr3.sampling import sample
from sr3.samplers import SAMPLERS, PerSampleNoise
from sr3.schedules import inference_gammas
from sr3.stlpips import load_stlpips
from sr3.unet import UNet

DIFF = DiffusionConfig(schedule="cosine", timesteps=100, prediction="v")
CLASSES = 4



def _tiny(cond_channels=3, num_classes=0, aug=True):
    return UNetConfig(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, mid_attention=False,
                      groupnorm_groups=4, cond_channels=cond_channels, num_classes=num_classes,
                      aug_level_conditioning=aug)


def _stage(path, config: Config, seed: int):
    torch.manual_seed(seed)
    model = UNet(config.model)
    with torch.no_grad():  # the zero-initialised output convs would make every stage the identity
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_model_dir(path, model, config)


BASE = Config(model=_tiny(cond_channels=0, num_classes=CLASSES, aug=False), diffusion=DIFF,
              data=DataConfig(task="generate", crop_size=8))
SR_8_32 = Config(model=_tiny(), diffusion=DIFF, data=DataConfig(scale=4, crop_size=32))
SR_32_128 = Config(model=_tiny(), diffusion=DIFF, data=DataConfig(scale=4, crop_size=128))


@pytest.fixture(scope="module")
def cascade_dir(tmp_path_factory):
    """base 8x8 -> 4x (32x32) -> 4x (128x128), random weights, 2 sampling steps per stage."""
    root = tmp_path_factory.mktemp("cascade")
    _stage(root / "base", BASE, 0)
    _stage(root / "sr1", SR_8_32, 1)
    _stage(root / "sr2", SR_32_128, 2)
    write_cascade(root, CascadeConfig(
        stages=(StageSettings("base", sampling=SamplingConfig(steps=3)),
                StageSettings("sr1", sampling=SamplingConfig(steps=2), scale=4, aug_level=0.2),
                StageSettings("sr2", sampling=SamplingConfig(steps=2), scale=4)),
        class_names=("a", "b", "c", "d")))
    return root


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("fake-mnist")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 24), ("t10k", 8)):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", (np.arange(n) % CLASSES).astype(np.uint8))
    return root


# ------------------------------------------------------------------ labelled data
def test_idx_reader_and_padding(idx_dir):
    images = read_idx(idx_dir / "train-images-idx3-ubyte.gz")
    assert images.shape == (24, 28, 28) and images.dtype == np.uint8
    ds32 = LabelledDataset(idx_dir, 32)
    ds16 = LabelledDataset(idx_dir, 16, split="train")
    x32 = ds32.images_at(torch.arange(3))
    assert x32.shape == (3, 3, 32, 32)
    assert torch.equal(x32[:, :, 2:30, 2:30][:, 0], torch.from_numpy(images[:3].copy()).float() / 127.5 - 1)
    assert (x32[:, :, :2] == -1).all()  # 2 px black padding
    assert torch.allclose(ds16.images_at(torch.arange(3)), downsample(x32, 2))
    batch = ds16.sample(5, torch.Generator().manual_seed(0))
    assert batch.hr.shape == (5, 3, 16, 16) and batch.label.tolist() == [int(i) % CLASSES for i in batch.label]
    assert LabelledDataset(idx_dir, 32, split="test").labels.tolist() == [i % CLASSES for i in range(8)]


def test_class_folder_dataset(tmp_path):
    for name, value in (("cat", 10), ("dog", 200)):
        (tmp_path / name).mkdir()
        Image.fromarray(np.full((16, 16, 3), value, np.uint8)).save(tmp_path / name / "x.png")
    ds = LabelledDataset(tmp_path, 8)
    assert ds.class_names == ("cat", "dog") and ds.labels.tolist() == [0, 1] and ds.pad_to == 16


def test_train_base_and_augmented_sr_on_idx(idx_dir, tmp_path):
    """sr3 train --task generate reads IDX data; an SR stage trains with noise + blur augmentation."""
    common = ["--preset", "tiny", "--data", str(idx_dir), "--steps", "2", "--no-progress", "--train.sample-every", "0"]
    assert main(["train", *common, "--task", "generate", "--out", str(tmp_path / "base"),
                 "--model.cond-channels", "0", "--model.num-classes", "4", "--data.crop-size", "16"]) == 0
    assert main(["train", *common, "--out", str(tmp_path / "sr"), "--data.scale", "2", "--data.crop-size", "32",
                 "--data.aug-noise-max", "0.5", "--data.aug-blur-prob", "0.5",
                 "--model.aug-level-conditioning", "true"]) == 0
    assert (tmp_path / "base" / "model" / "model.safetensors").exists()
    assert (tmp_path / "sr" / "model" / "model.safetensors").exists()


# ------------------------------------------------------------------ augmentation
def test_level_zero_is_no_augmentation():
    g = torch.Generator().manual_seed(0)
    lr = torch.rand(3, 3, 8, 8, generator=g) * 2 - 1
    eps = torch.randn(lr.shape, generator=g)
    assert torch.equal(noise_augment(lr, 0.0, eps), lr)
    assert torch.equal(noise_augment(lr, torch.zeros(3), eps), lr)
    lr_up, levels = augment_for_training(lr, 4, DataConfig(), torch.Generator().manual_seed(1))
    assert torch.equal(lr_up, upsample(lr, 4)) and torch.equal(levels, torch.zeros(3))
    # a level is the noise std of the variance-preserving forward process: gamma = 1 - s^2
    assert torch.allclose(noise_augment(lr, 0.6, eps), add_noise(lr, torch.full((3,), 0.64), eps))


def test_training_augmentation_draws_levels_and_blurs():
    lr = torch.zeros(64, 3, 4, 4)
    data = DataConfig(aug_noise_max=0.3, aug_blur_prob=0.5)
    lr_up, levels = augment_for_training(lr, 2, data, torch.Generator().manual_seed(0))
    assert lr_up.shape == (64, 3, 8, 8) and levels.min() >= 0 and levels.max() <= 0.3 and levels.std() > 0
    again, levels2 = augment_for_training(lr, 2, data, torch.Generator().manual_seed(0))
    assert torch.equal(lr_up, again) and torch.equal(levels, levels2)  # seeded
    flat = torch.full((2, 1, 5, 5), 0.5)
    assert torch.allclose(gaussian_blur(flat, torch.tensor([0.4, 0.6])), flat)  # normalised kernel


def test_cascade_level_zero_equals_unaugmented(cascade_dir):
    cas = Cascade(cascade_dir)
    labels, seeds = torch.tensor([0, 3]), [5, 6]
    plain = cas.with_config(cas.config.with_stage(1, aug_level=0.0)).generate(labels, seeds)
    trunc = cas.with_config(cas.config.with_stage(1, aug_level=0.0, truncated=True)).generate(labels, seeds)
    for a, b in zip(plain, trunc):
        assert torch.equal(a, b)


# ------------------------------------------------------------------ truncation
def test_truncated_returns_the_intermediate_state():
    torch.manual_seed(0)
    model = UNet(BASE.model).eval()
    cond = Conditioning(class_label=torch.tensor([1, 2]))
    gammas = inference_gammas(6, SamplingConfig(sampler="ddim").inference_schedule, DIFF)
    k = 3
    level = float((1 - gammas[k]) ** 0.5)
    assert torch.allclose(truncated_gammas(gammas, level), gammas[:k + 1])
    seen = {}

    def recording(x, gamma):  # the full run's state at each level is the denoiser's input there
        seen[round(float(gamma), 9)] = x.clone()
        return denoise(x, gamma)

    denoise = Denoiser(model, DIFF, cond)
    noise = PerSampleNoise([3, 4])
    with torch.no_grad():
        SAMPLERS["ddim"](recording, noise(torch.empty(2, 3, 8, 8)), gammas, noise)
        x_s = sample(model, BASE, cond, (2, 3, 8, 8), SamplingConfig(steps=6), [3, 4], stop_level=level)
    assert torch.allclose(x_s, seen[round(float(gammas[k]), 9)], atol=1e-5)


def _sr_inputs(cas, monkeypatch, labels, seeds):
    """What the first SR stage is conditioned on (before upsampling)."""
    inputs = []

    def spy(x, scale):
        inputs.append(x.clone())
        return upsample(x, scale)
    monkeypatch.setattr(cascade_mod, "upsample", spy)
    outs = cas.generate(labels, seeds)
    return inputs[0], outs


def test_truncated_and_non_truncated_conditioning(cascade_dir, monkeypatch):
    cas = Cascade(cascade_dir)
    labels, seeds, s = torch.tensor([1, 2]), [7, 8], 0.3
    base = cas.stages[0]
    non = cas.with_config(cas.config.with_stage(1, aug_level=s, truncated=False))
    tru = cas.with_config(cas.config.with_stage(1, aug_level=s, truncated=True))
    fed_non, outs_non = _sr_inputs(non, monkeypatch, labels, seeds)
    fed_tru, outs_tru = _sr_inputs(tru, monkeypatch, labels, seeds)
    # non-truncated: the full base sample, then the forward process to s with the stage's own noise stream
    eps = PerSampleNoise(stage_seeds(seeds, 1, stream=1))(outs_non[0])
    assert torch.allclose(fed_non, add_noise(outs_non[0], torch.full((2,), 1 - s * s), eps), atol=1e-6)
    # truncated: the base model's reverse process stopped at s, passed on as is
    with torch.no_grad():
        x_s = sample(base.model, base.config, Conditioning(class_label=labels), (2, 3, 8, 8), SamplingConfig(steps=3),
                     stage_seeds(seeds, 0), stop_level=s)
    assert torch.allclose(fed_tru, x_s) and torch.equal(outs_tru[0], fed_tru)
    assert not torch.allclose(fed_tru, fed_non, atol=1e-3)
    # an earlier call's base outputs at the same stop level stand in for sampling the base again
    assert (non.base_stop_level, tru.base_stop_level) == (0.0, s)
    again = tru.generate(labels, seeds, base_images=outs_tru[0])
    assert all(torch.equal(a, b) for a, b in zip(again, outs_tru))
    assert tru.generate(labels, seeds, base_images=torch.zeros_like(x_s))[0].eq(0).all()  # used, not resampled


# ------------------------------------------------------------------ end to end
def test_generate_end_to_end(cascade_dir, tmp_path):
    assert main(["generate", "--cascade", str(cascade_dir), "--class", "b", "--n", "2", "--out", str(tmp_path),
                 "--no-progress"]) == 0
    assert Image.open(tmp_path / "b_0001.png").size == (128, 128)
    assert Image.open(tmp_path / "grid.png").size == (2 * 128 + 1, 128)
    out = tmp_path / "all"
    assert main(["generate", "--cascade", str(cascade_dir), "--class", "all", "--n", "1", "--out", str(out),
                 "--aug-level", "0.1", "--truncated", "--no-progress"]) == 0
    assert Image.open(out / "grid.png").size == (128, 4 * 128 + 3)


def test_upscale_16x_with_two_4x_stages(cascade_dir, tmp_path):
    lr = torch.rand(1, 3, 8, 8) * 2 - 1
    Image.fromarray((lr[0].permute(1, 2, 0).add(1).mul(127.5)).round().byte().numpy()).save(tmp_path / "in.png")
    assert main(["upscale", str(tmp_path / "in.png"), "--cascade", str(cascade_dir), "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 0
    assert Image.open(tmp_path / "o" / "in.png").size == (128, 128)
    # --preview beside the input: the bicubic preview and the result share the 16x name, nothing else is left
    assert main(["upscale", str(tmp_path / "in.png"), "--cascade", str(cascade_dir), "--preview", "--no-progress"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["in.png", "in_x16.png"]
    assert Image.open(tmp_path / "in_x16.png").size == (128, 128)


def test_sweep_reports_best(cascade_dir, idx_dir, tmp_path, capsys):
    # the cascade ends at 128 px; sweep its first SR stage alone via a two-stage cascade
    root = tmp_path / "two"
    write_cascade(root, CascadeConfig(stages=(StageSettings(str(cascade_dir / "base"), sampling=SamplingConfig(steps=2)),
                                              StageSettings(str(cascade_dir / "sr1"), sampling=SamplingConfig(steps=1)))))
    assert main(["sweep", "--cascade", str(root), "--data", str(idx_dir), "--levels", "0", "0.3",
                 "--modes", "non-truncated", "truncated", "--n-per-class", "2", "--no-progress",
                 "--out", str(tmp_path / "sweep.json")]) == 0
    assert "best by fd:" in capsys.readouterr().out


def test_sweep_samples_the_base_once_per_stop_level(cascade_dir, idx_dir, tmp_path, monkeypatch):
    """Non-truncated trials share one full base sample; a truncated trial gets the base stopped at its own s."""
    root = tmp_path / "two"
    write_cascade(root, CascadeConfig(stages=(StageSettings(str(cascade_dir / "base"), sampling=SamplingConfig(steps=2)),
                                              StageSettings(str(cascade_dir / "sr1"), sampling=SamplingConfig(steps=1)))))
    calls, generate = [], Cascade.generate

    def spy(self, labels, seeds, progress=None, base_images=None, callback=None):
        outs = generate(self, labels, seeds, progress, base_images, callback)
        calls.append((self.base_stop_level, base_images is not None))
        return outs
    monkeypatch.setattr(Cascade, "generate", spy)
    assert main(["sweep", "--cascade", str(root), "--data", str(idx_dir), "--levels", "0.2", "0.3",
                 "--modes", "non-truncated", "truncated", "--n-per-class", "1", "--no-progress",
                 "--out", str(tmp_path / "sweep.json")]) == 0
    # (base stop level, reused?) for non-truncated s = 0.2, 0.3, then truncated s = 0.2, 0.3
    assert calls == [(0.0, False), (0.0, True), (0.2, False), (0.3, False)]
    assert (tmp_path / "sweep.json").exists()


def test_sweep_of_a_photo_cascade_scores_levels_on_central_crops(cascade_dir, image_folder, tmp_path, capsys):
    """SR-only cascades are swept on photo crops: each level's row is the mean of photo_scores over the
    crops (recomputed here for one level), the best row is the metric's optimum, photos smaller than
    the crop are left out, and generation metrics are refused."""
    root = tmp_path / "sr-only"
    write_cascade(root, CascadeConfig(stages=(
        StageSettings(str(cascade_dir / "sr1"), sampling=SamplingConfig(steps=2), scale=4),
        StageSettings(str(cascade_dir / "sr2"), sampling=SamplingConfig(steps=2), scale=4))))
    out = tmp_path / "sweep.json"
    assert main(["sweep", "--cascade", str(root), "--data", str(image_folder), "--crop", "48", "--levels", "0", "0.4",
                 "--no-progress", "--seed", "5", "--out", str(out)]) == 0
    assert "3 photos (central 48 px crops, 3 px LR); 1 smaller photos left out" in capsys.readouterr().err
    result = json.loads(out.read_text())
    rows = {r["level"]: r for r in result["rows"]}
    assert result["metric"] == "stlpips_alex"
    assert result["best"] == min(result["rows"], key=lambda r: r["stlpips_alex"])
    pairs, _ = photo_pairs(image_folder, 48, 16)
    trial = Cascade(root)
    trial = trial.with_config(trial.config.with_stage(1, aug_level=0.4))
    stlpips = load_stlpips("alex")
    scores = [photo_scores(to_unit(trial.upscale(p.lr * 2 - 1, [5 + k])), p, 16, stlpips) for k, p in enumerate(pairs)]
    for name in ("psnr_rgb", "stlpips_alex", "consistency"):  # (NIQE needs larger images than these)
        assert rows[0.4][name] == pytest.approx(np.mean([s[name] for s in scores]), rel=1e-5)
    assert rows[0.4]["psnr_rgb"] != rows[0]["psnr_rgb"]  # the level reaches the last stage
    assert main(["sweep", "--cascade", str(root), "--data", str(image_folder), "--metric", "fd"]) == 2


def test_photo_pairs_skip_an_unreadable_photo(image_folder, tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(image_folder, folder)
    (folder / "0-broken.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning, match="0-broken.png"):
        pairs, too_small = photo_pairs(folder, 48, 16)
    expected, expected_small = photo_pairs(image_folder, 48, 16)
    assert [p.name for p in pairs] == [p.name for p in expected] and too_small == expected_small


# ------------------------------------------------------------------ refusals
def _error(fn) -> str:
    with pytest.raises(UserError) as e:
        fn()
    return str(e.value)


def test_bad_cascades_are_refused(cascade_dir, tmp_path):
    cas = Cascade(cascade_dir)
    where = cascade_dir / "cascade.json"
    assert _error(lambda: cas.resolve_class("zebra")) == "unknown class 'zebra'; choose one of a, b, c, d (or 0-3)"
    assert _error(lambda: cas.resolve_class(7)) == "unknown class '7'; choose one of a, b, c, d (or 0-3)"
    swapped = replace(cas.config, stages=(cas.config.stages[0], cas.config.stages[2], cas.config.stages[1]))
    assert _error(lambda: Cascade(cascade_dir, swapped)) == (
        f"{where}: stage resolutions do not chain: 'sr2' takes 32x32 but 'base' makes 8x8")
    wrong_scale = cas.config.with_stage(2, scale=2)
    assert _error(lambda: Cascade(cascade_dir, wrong_scale)) == (
        f"{where}: stage 'sr2' is declared 2x but was trained for 4x (sr2/config.json data.scale)")
    # a base model without class conditioning asked for a class
    root = tmp_path / "uncond"
    _stage(root / "base", replace(BASE, model=replace(BASE.model, num_classes=0)), 0)
    write_cascade(root, CascadeConfig(stages=(StageSettings("base", sampling=SamplingConfig(steps=1)),)))
    msg = f"{root}: base stage 'base' has no class conditioning (model.num_classes = 0); omit --class"
    assert _error(lambda: Cascade(root).resolve_class("1")) == msg
    assert main(["generate", "--cascade", str(root), "--class", "1", "--n", "1", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()  # refused before any sampling


def test_cascade_json_round_trips_and_reads_version_1(cascade_dir, tmp_path):
    config = CascadeConfig.from_json_file(cascade_dir / "cascade.json")
    assert config.stages[1].sampling == SamplingConfig(steps=2) and config.version == 2
    write_cascade(tmp_path / "again", config)
    assert CascadeConfig.from_json_file(tmp_path / "again" / "cascade.json") == config
    v1 = {"stages": [{"model": "base", "sampler": "ddpm", "steps": 3, "schedule": ""},
                     {"model": "sr1", "sampler": "ddim", "steps": 2, "eta": 0.5, "scale": 4, "aug_level": 0.2}],
          "version": 1}
    (tmp_path / "v1.json").write_text(json.dumps(v1))
    old = CascadeConfig.from_json_file(tmp_path / "v1.json")
    assert old.stages[0].sampling == SamplingConfig(sampler="ddpm", steps=3, schedule="auto")
    assert old.stages[1].sampling == SamplingConfig(sampler="ddim", steps=2, eta=0.5) and old.stages[1].aug_level == 0.2
    (tmp_path / "bad.json").write_text(json.dumps({"stages": [{"model": "b", "sampling": {"steps": 0}}]}))
    with pytest.raises(UserError, match="bad.json.*steps = 0 must be >= 1"):
        CascadeConfig.from_json_file(tmp_path / "bad.json")


def test_generate_num_samples_writes_scores_and_resumes(cascade_dir, idx_dir, tmp_path):
    """--num-samples: images written in batches and scored incrementally; a rerun reads them back."""
    root = tmp_path / "two"
    write_cascade(root, CascadeConfig(stages=(StageSettings(str(cascade_dir / "base"), sampling=SamplingConfig(steps=2)),
                                              StageSettings(str(cascade_dir / "sr1"), sampling=SamplingConfig(steps=1)))))
    out = tmp_path / "gen"
    argv = ["generate", "--cascade", str(root), "--class", "all", "--num-samples", "5", "--batch-size", "2",
            "--score-data", str(idx_dir), "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    assert sorted(p.name for p in out.glob("*.png")) == [f"{i:06d}.png" for i in range(5)]
    first = json.loads((out / "scores.json").read_text())
    assert first["num_samples"] == 5 and first["n_fake"] == 5 and first["fid"] >= 0
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert main(argv) == 0  # resumed: nothing regenerated, the same scores
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")} == stamps
    assert json.loads((out / "scores.json").read_text())["fid"] == first["fid"]


def test_generate_and_sweep_never_overwrite_unasked(cascade_dir, idx_dir, tmp_path, capsys):
    out = tmp_path / "g"
    argv = ["generate", "--cascade", str(cascade_dir), "--class", "b", "--n", "1", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    before = (out / "b_0000.png").read_bytes()
    (out / "b_0000.png").write_bytes(b"mine")
    assert main(argv) == 2 and "already exists" in capsys.readouterr().err
    assert (out / "b_0000.png").read_bytes() == b"mine"  # untouched
    assert main(argv + ["--overwrite"]) == 0 and (out / "b_0000.png").read_bytes() == before
    (tmp_path / "sweep.json").write_text("{}")
    assert main(["sweep", "--cascade", str(cascade_dir), "--data", str(idx_dir), "--out",
                 str(tmp_path / "sweep.json"), "--no-progress"]) == 2
    assert (tmp_path / "sweep.json").read_text() == "{}"
