"""The command line end to end on generated images, and every bad input of issue 2."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from sr3.checkpoint import load_sampling_defaults
from sr3.cli import main

from conftest import make_photo


@pytest.fixture(scope="module")
def cli_model(image_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_run")
    assert main(["train", "--preset", "tiny", "--data", str(image_folder), "--out", str(out), "--steps", "6",
                 "--no-progress", "--train.sample-every", "3"]) == 0
    assert (out / "samples" / "step_0000006.png").exists()
    assert sorted(p.name for p in (out / "model").iterdir()) == ["config.json", "model.safetensors", "training.json"]
    return out


@pytest.fixture()
def inputs(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(1)
    make_photo(rng, 13, 11).save(folder / "a.png")
    make_photo(rng, 9, 7).save(folder / "b.jpg", quality=90)
    return folder


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_sampler_and_step_count_gives_4x_images_reproducibly(cli_model, inputs, tmp_path):
    for sampler in ("ddpm", "ddim", "dpmpp"):
        for steps in (5, 20, 100):
            out = tmp_path / f"{sampler}{steps}"
            assert main(["upscale", str(inputs), "--model", str(cli_model), "--out", str(out), "--sampler", sampler,
                         "--steps", str(steps), "--seed", "3", "--no-progress"]) == 0
            assert Image.open(out / "a.png").size == (52, 44)
            assert Image.open(out / "b.jpg").format == "JPEG"  # output in the input's format
            assert Image.open(out / "b.jpg").size == (36, 28)
    again = tmp_path / "again"
    main(["upscale", str(inputs), "--model", str(cli_model), "--out", str(again), "--sampler", "dpmpp",
          "--steps", "20", "--seed", "3", "--no-progress"])
    assert digest(again / "a.png") == digest(tmp_path / "dpmpp20" / "a.png")
    other = tmp_path / "other"
    main(["upscale", str(inputs), "--model", str(cli_model), "--out", str(other), "--sampler", "dpmpp",
          "--steps", "20", "--seed", "4", "--no-progress"])
    assert digest(other / "a.png") != digest(tmp_path / "dpmpp20" / "a.png")
    cooler = tmp_path / "cooler"
    main(["upscale", str(inputs), "--model", str(cli_model), "--out", str(cooler), "--sampler", "dpmpp",
          "--steps", "20", "--seed", "3", "--temperature", "0.5", "--no-progress"])
    assert digest(cooler / "a.png") != digest(tmp_path / "dpmpp20" / "a.png")


def test_batch_size_does_not_change_the_bytes(cli_model, tmp_path):
    folder = tmp_path / "same_size"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i in range(3):
        make_photo(rng, 10, 8).save(folder / f"{i}.png")
    for b in (1, 3):
        main(["upscale", str(folder), "--model", str(cli_model), "--out", str(tmp_path / f"b{b}"), "--steps", "5",
              "--sampler", "ddpm", "--batch-size", str(b), "--no-progress"])
    for i in range(3):
        assert digest(tmp_path / "b1" / f"{i}.png") == digest(tmp_path / "b3" / f"{i}.png")


def test_bad_files_are_reported_and_the_rest_of_the_batch_is_written(cli_model, inputs, tmp_path, capsys):
    (inputs / "empty.png").write_bytes(b"")
    (inputs / "text.png").write_text("not an image")
    good = (inputs / "a.png").read_bytes()
    (inputs / "truncated.png").write_bytes(good[: len(good) // 2])
    Image.new("L", (20000, 20000)).save(inputs / "bomb.png")  # 400 M pixels, compresses to a few hundred KB
    code = main(["upscale", str(inputs), "--model", str(cli_model), "--out", str(tmp_path / "o"), "--steps", "2",
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert "empty.png: file is empty (0 bytes)" in err
    assert "text.png: not a readable image" in err
    assert "truncated.png: corrupt or truncated image" in err
    assert "bomb.png: image is larger than" in err
    assert "5 of 7 images failed" not in err and "4 of 6 images failed" in err
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.png", "b.jpg"]  # no partial files


def test_user_errors_are_one_line_without_traceback(cli_model, inputs, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    cases = {
        "missing model": (["upscale", str(inputs / "a.png"), "--model", str(tmp_path / "nope")], "model directory not found"),
        "missing input": (["upscale", str(tmp_path / "nope.png"), "--model", str(cli_model)], "no such file or folder"),
        "empty folder": (["train", "--preset", "tiny", "--data", str(tmp_path / "locked"), "--out", str(tmp_path / "t")],
                         "no usable images"),
        "no preset": (["train", "--data", str(inputs), "--out", str(tmp_path / "t")], "choose a model"),
        "init and preset": (["train", "--init", str(cli_model), "--preset", "tiny", "--data", str(inputs), "--out",
                             str(tmp_path / "t")], "give one of --preset, --config and --init"),
        "init, other architecture": (["train", "--init", str(cli_model), "--model.base-channels", "32", "--data",
                                      str(inputs), "--out", str(tmp_path / "t")],
                                     "--init keeps the model's architecture; drop --model.base_channels"),
        "train schedule, too many steps": (["upscale", str(inputs / "a.png"), "--model", str(cli_model),
                                            "--schedule", "train", "--steps", "5000"],
                                           "the train schedule has only 2000 steps"),
        "eta with ddpm": (["upscale", str(inputs / "a.png"), "--model", str(cli_model), "--sampler", "ddpm",
                           "--eta", "0.5"], "applies to the ddim sampler only"),
        "bad temperature": (["upscale", str(inputs / "a.png"), "--model", str(cli_model), "--temperature", "1.5"],
                            "temperature = 1.5 is outside [0, 1]"),
    }
    if os.geteuid() != 0:  # root can write anywhere
        cases["unwritable out"] = (["upscale", str(inputs / "a.png"), "--model", str(cli_model), "--out",
                                    str(locked / "sub")], "cannot write output folder")
    for name, (argv, message) in cases.items():
        proc = subprocess.run([sys.executable, "-m", "sr3", *argv, "--no-progress"], capture_output=True, text=True)
        assert proc.returncode != 0, name
        assert "Traceback" not in proc.stderr, name
        lines = [line for line in proc.stderr.splitlines() if line.startswith("sr3: error")]
        assert len(lines) == 1 and message in lines[0], (name, proc.stderr)


def test_unwritable_output_file_is_reported(cli_model, inputs, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "a.png").mkdir()  # a folder where the output file should go: the rename fails
    code = main(["upscale", str(inputs), "--model", str(cli_model), "--out", str(out), "--steps", "2", "--no-progress"])
    assert code == 1
    assert (out / "b.jpg").exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_shipped_model_upscales_an_odd_sized_photo_with_no_flags(tmp_path):
    """Issue 4: `sr3 upscale photo.jpg` alone writes photo_x4.jpg, 4x the size, for odd sizes."""
    make_photo(np.random.default_rng(5), 33, 17).save(tmp_path / "photo.jpg", quality=92)
    assert main(["upscale", str(tmp_path / "photo.jpg"), "--no-progress"]) == 0
    out = Image.open(tmp_path / "photo_x4.jpg")
    assert out.size == (132, 68) and out.format == "JPEG"


def test_init_keeps_the_models_sampling_defaults_in_every_model_it_writes(cli_model, image_folder, tmp_path):
    shipped = tmp_path / "shipped"
    shutil.copytree(cli_model / "model", shipped)
    (shipped / "sampling.json").write_text(json.dumps({"sampler": "ddim", "steps": 2, "schedule": "logsnr"}))
    assert main(["train", "--init", str(shipped), "--out", str(tmp_path / "ft"), "--data", str(image_folder),
                 "--steps", "2", "--train.keep-every", "1", "--no-progress"]) == 0
    expected = load_sampling_defaults(shipped)
    for model_dir in ("model", "snapshots/step_0000001", "snapshots/step_0000002"):
        assert load_sampling_defaults(tmp_path / "ft" / model_dir) == expected, model_dir


def test_init_fine_tunes_from_the_given_weights(cli_model, image_folder, tmp_path):
    """--init starts the raw and EMA weights from a trained model (here: one step at a negligible learning
    rate keeps them), with that model's config; without it the same run starts from random weights."""
    trained = load_file(str(cli_model / "model" / "model.safetensors"))
    common = ["--data", str(image_folder), "--steps", "1", "--train.lr", "1e-9", "--no-progress"]
    assert main(["train", "--init", str(cli_model), "--out", str(tmp_path / "ft"), *common]) == 0
    assert main(["train", "--preset", "tiny", "--out", str(tmp_path / "fresh"), *common]) == 0
    tuned = load_file(str(tmp_path / "ft" / "model" / "model.safetensors"))
    fresh = load_file(str(tmp_path / "fresh" / "model" / "model.safetensors"))
    assert tuned.keys() == trained.keys()
    # both runs seed the same random initialisation, which cli_model's 6 training steps moved by ~3e-3
    assert max((tuned[k].float() - trained[k].float()).abs().max().item() for k in trained) < 1e-6
    assert max((fresh[k].float() - trained[k].float()).abs().max().item() for k in trained) > 1e-3
    # the config is the model's own (cli_model trained with --train.sample-every 3), with the flags applied
    config = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert (config["train"]["sample_every"], config["train"]["steps"], config["train"]["lr"]) == (3, 1, 1e-9)
