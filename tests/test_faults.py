"""Issue 16: the bad-input and fault corpus.  Each test is a careless or hostile user's run; it
asserts the exit status, exactly one ``sr3: error`` line per problem (and no traceback: the
command returns instead of raising), no partial or overwritten file, and the rest of the batch.

The CLI runs in-process (``sr3.cli.main``): an exception that would reach the user as a
traceback escapes ``main`` and fails the test.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import shutil
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from safetensors.torch import load_file, save_file

import sr3.checkpoint
import sr3.imageio
import sr3.methods
import sr3.unet
from sr3.cli import main
from sr3.config import Config, SamplingConfig
from sr3.diffusion import Conditioning
from sr3.errors import UserError
from sr3.sampling import sample

from conftest import make_photo

RNG = np.random.default_rng(16)


def run(argv, capsys):
    """(exit status, sr3 error lines, whole stderr with the warnings the CLI prints) of one in-process run."""
    with warnings.catch_warnings(record=True) as caught:  # pytest records warnings; the CLI prints them
        warnings.simplefilter("always")
        code = main([*argv, "--no-progress"])
    err = capsys.readouterr().err + "".join(f"sr3: warning: {w.message}\n" for w in caught)
    assert "Traceback" not in err
    return code, [line for line in err.splitlines() if line.startswith("sr3: error")], err


def digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp") or ".preview." in p.name]


@pytest.fixture()
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    make_photo(RNG, 13, 11).save(folder / "a.png")
    make_photo(RNG, 9, 7).save(folder / "b.jpg", quality=90)
    return folder


BICUBIC = ["--method", "bicubic", "--scale", "2"]


# ------------------------------------------------------------------ 1, 4, 12: where outputs go
def test_out_equal_to_the_input_folder_is_refused_and_the_originals_kept(photos, capsys):
    before = digests(photos)
    for extra in ([], ["--overwrite"]):  # an input is never overwritten, --overwrite or not
        code, errors, _ = run(["upscale", str(photos), "--out", str(photos), *BICUBIC, *extra], capsys)
        assert code == 2 and len(errors) == 1 and "is an input and would be overwritten" in errors[0]
        assert digests(photos) == before
    # the default name of one input is another input: photo.png -> photo_x2.png
    shutil.copy(photos / "a.png", photos / "a_x2.png")
    before = digests(photos)
    code, errors, _ = run(["upscale", str(photos / "a.png"), str(photos / "a_x2.png"), *BICUBIC], capsys)
    assert code == 2 and len(errors) == 1 and "a_x2.png: is an input" in errors[0]
    assert digests(photos) == before


def test_a_real_process_refuses_out_equal_to_input_with_exit_2_and_no_traceback(photos):
    before = digests(photos)
    proc = subprocess.run([sys.executable, "-m", "sr3", "upscale", str(photos), "--out", str(photos), "--method",
                           "bicubic", "--no-progress"], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "is an input and would be overwritten" in proc.stderr
    assert digests(photos) == before


def test_two_inputs_with_one_output_name_are_refused_before_any_work(tmp_path, capsys):
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        make_photo(RNG, 8, 8).save(tmp_path / sub / "a.png")
    code, errors, _ = run(["upscale", str(tmp_path / "x"), str(tmp_path / "y"), "--out", str(tmp_path / "o"),
                           *BICUBIC], capsys)
    assert code == 2 and len(errors) == 1 and "would both be written to" in errors[0]
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())
    # one file given twice is upscaled once (a warning, not an error)
    code, errors, err = run(["upscale", str(tmp_path / "x" / "a.png"), str(tmp_path / "x" / "a.png"), "--out",
                             str(tmp_path / "o"), *BICUBIC], capsys)
    assert code == 0 and not errors and "given more than once" in err
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["a.png"]


def test_existing_outputs_are_skipped_unless_overwrite(photos, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "a.png").write_bytes(b"the user's own file")
    code, errors, err = run(["upscale", str(photos), "--out", str(out), *BICUBIC], capsys)
    assert code == 0 and not errors
    assert sum("skipped" in line for line in err.splitlines()) == 1 and "pass --overwrite" in err
    assert (out / "a.png").read_bytes() == b"the user's own file" and Image.open(out / "b.jpg").size == (18, 14)
    code, errors, _ = run(["upscale", str(photos), "--out", str(out), *BICUBIC, "--overwrite"], capsys)
    assert code == 0 and Image.open(out / "a.png").size == (26, 22)


class CountingBicubic(sr3.methods.BicubicUpscaler):
    calls = 0

    def __call__(self, lr, *args, **kwargs):
        CountingBicubic.calls += len(lr)
        return super().__call__(lr, *args, **kwargs)


def test_unusable_outputs_are_found_before_sampling(photos, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sr3.methods, "BicubicUpscaler", CountingBicubic)
    CountingBicubic.calls = 0
    a_file = tmp_path / "file"
    a_file.write_text("x")
    code, errors, _ = run(["upscale", str(photos), "--out", str(a_file), *BICUBIC], capsys)
    assert code == 2 and len(errors) == 1 and "is a file" in errors[0] and CountingBicubic.calls == 0
    out = tmp_path / "o"
    (out / "a.png").mkdir(parents=True)  # a folder where a.png's output should go
    code, errors, err = run(["upscale", str(photos), "--out", str(out), *BICUBIC, "--batch-size", "2"], capsys)
    assert code == 1 and len(errors) == 1 and "a.png: is a folder" in errors[0] and "1 of 2 images failed" in err
    assert CountingBicubic.calls == 1 and (out / "b.jpg").exists() and no_temp_files(out)


# ------------------------------------------------------------------ 6: --preview
def test_preview_survives_an_unusable_output_and_ctrl_c_leaves_no_preview(photos, tmp_path, capsys, monkeypatch):
    out = tmp_path / "o"
    (out / "a.png").mkdir(parents=True)
    code, errors, _ = run(["upscale", str(photos), "--out", str(out), *BICUBIC, "--preview"], capsys)
    assert code == 1 and len(errors) == 1 and "a.png: is a folder" in errors[0]
    assert (out / "b.jpg").exists() and no_temp_files(out)

    def interrupted(self, lr, *args, **kwargs):
        assert [p.name for p in (tmp_path / "o2").iterdir()] == ["a.preview.png"]  # the preview was written
        raise KeyboardInterrupt
    monkeypatch.setattr(sr3.methods.BicubicUpscaler, "__call__", interrupted)
    code, _, _ = run(["upscale", str(photos / "a.png"), "--out", str(tmp_path / "o2"), *BICUBIC, "--preview"], capsys)
    assert code == 130 and list((tmp_path / "o2").iterdir()) == []


# ------------------------------------------------------------------ 5, 8 and the awkward images
def png_header_only(path: Path, width: int, height: int, bit_depth: int = 8, colour: int = 2, rows=None) -> None:
    """A PNG written by hand: 48-bit RGB (Pillow cannot save it) or a bomb whose header is all there is."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    idat = zlib.compress(b"".join(b"\0" + r for r in rows)) if rows is not None else zlib.compress(b"\0" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def corrupt_jpeg(path: Path) -> None:
    """A valid JPEG header followed by garbage compressed data (issue 16, case 8)."""
    buf = io.BytesIO()
    make_photo(RNG, 64, 48).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    sos = data.index(b"\xff\xda")
    start = sos + 2 + int.from_bytes(data[sos + 2:sos + 4], "big")
    garbage = np.random.default_rng(1).integers(0, 256, len(data) - start - 2, dtype=np.uint8).tobytes()
    path.write_bytes(data[:start] + garbage + b"\xff\xd9")


def exif_rotated(path: Path) -> Image.Image:
    """A 16x8 photo stored sideways (left half red) with EXIF orientation 6 (turn 90 degrees clockwise)."""
    arr = np.zeros((8, 16, 3), np.uint8)
    arr[:, :8, 0] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(arr).save(path, exif=exif.tobytes())
    return ImageOps.exif_transpose(Image.open(path))


def test_awkward_images_each_give_one_line_and_the_rest_is_written(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    photo = make_photo(RNG, 12, 10)
    wide = np.asarray(photo, dtype=np.uint16) * 257
    png_header_only(src / "rgb48.png", 12, 10, 16, 2, [row.astype(">u2").tobytes() for row in wide])
    Image.fromarray((np.asarray(photo.convert("L"), np.uint16) * 257)).save(src / "grey16.png")
    photo.convert("CMYK").save(src / "cmyk.jpg")
    photo.convert("L").save(src / "grey.png")
    photo.convert("P").save(src / "palette.png", transparency=0)
    photo.convert("RGBA").save(src / "rgba.png")
    photo.save(src / "photo.tiff")
    photo.save(src / "photo.webp")
    photo.crop((0, 0, 1, 1)).save(src / "tiny.png")
    photo.crop((0, 0, 12, 1)).save(src / "one_row.png")
    upright = exif_rotated(src / "rotated.jpg")
    photo.save(src / "with_icc.png", icc_profile=b"not really a profile")
    photo.convert("CMYK").save(src / "cmyk_icc.jpg", icc_profile=b"a CMYK profile")
    good = src / "a.png"
    photo.save(good)
    (src / "zero.png").write_bytes(b"")
    (src / "text.png").write_text("hello, not an image")
    (src / "truncated.png").write_bytes(good.read_bytes()[:60])
    png_header_only(src / "bomb.png", 40000, 40000, 8, 0)
    corrupt_jpeg(src / "corrupt.jpg")
    out = tmp_path / "o"
    code, errors, err = run(["upscale", str(src), "--out", str(out), *BICUBIC], capsys)
    bad = {"zero.png": "empty (0 bytes)", "text.png": "not a readable image", "truncated.png": "corrupt or truncated",
           "bomb.png": "decompression bomb", "corrupt.jpg": "corrupt JPEG data"}
    assert code == 1
    assert len(errors) == len(bad) and f"sr3: {len(bad)} of 19 images failed" in err
    for name, message in bad.items():
        assert sum(name in line for line in errors) == 1 and message in next(e for e in errors if name in e)
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(p.name for p in src.iterdir() if p.name not in bad)
    for name in written:
        w, h = Image.open(src / name).size
        if name == "rotated.jpg":
            w, h = h, w
        assert Image.open(out / name).size == (2 * w, 2 * h), name
    warnings = [line for line in err.splitlines() if line.startswith("sr3: warning")]
    for name, dropped in {"rgb48.png": "16-bit", "grey16.png": "16-bit", "rgba.png": "transparency",
                          "palette.png": "transparency", "cmyk_icc.jpg": "CMYK image to 8-bit RGB; dropped: ICC",
                          "cmyk.jpg": "CMYK"}.items():
        lines = [w for w in warnings if f"{name}:" in w]
        assert len(lines) == 1 and dropped in lines[0], (name, warnings)
    # an RGB image's colour profile is kept in the output (no warning: nothing was dropped)
    assert Image.open(out / "with_icc.png").info["icc_profile"] == b"not really a profile"
    assert not [w for w in warnings if "with_icc.png" in w]
    # 5: the rotated photo comes out upright: red on top, as a viewer shows the input
    result = np.asarray(Image.open(out / "rotated.jpg"), dtype=float)
    assert np.asarray(upright)[0, 0, 0] > 200 and result[:12, :, 0].mean() > 200 and result[-12:, :, 0].mean() < 60


def test_corrupt_jpeg_detection_ignores_valid_variants(tmp_path):
    """Progressive, restart markers, optimised tables and bytes after the end marker are all fine."""
    photo = make_photo(RNG, 60, 40)
    for i, options in enumerate([{}, {"progressive": True}, {"restart_marker_blocks": 2}, {"optimize": True}]):
        buf = io.BytesIO()
        photo.save(buf, "JPEG", quality=80, **options)
        (tmp_path / f"{i}.jpg").write_bytes(buf.getvalue() + b"camera trailer \xff\x12")
        assert sr3.imageio.load_image(tmp_path / f"{i}.jpg").size == (60, 40)


# ------------------------------------------------------------------ 2: non-finite models and results
def test_a_model_with_nan_weights_is_refused_not_turned_into_black_images(tiny_model_dir, photos, tmp_path, capsys):
    broken = tmp_path / "nan-model"
    shutil.copytree(tiny_model_dir, broken)
    weights = load_file(str(broken / "model.safetensors"))
    name = sorted(weights)[0]
    weights[name] = weights[name] * float("nan")
    save_file(weights, str(broken / "model.safetensors"))
    code, errors, _ = run(["upscale", str(photos), "--model", str(broken), "--out", str(tmp_path / "o"),
                           "--steps", "2"], capsys)
    assert code == 2 and len(errors) == 1 and "NaN/inf" in errors[0]
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_sampling_that_yields_nan_is_an_error(tiny_model_dir):
    class Diverging(torch.nn.Module):
        def forward(self, x, *args, **kwargs):
            return torch.full_like(x, float("nan"))
    config = Config.from_json_file(tiny_model_dir / "config.json")
    cond = Conditioning(lr_upsampled=torch.zeros(1, 3, 16, 16))
    with pytest.raises(UserError, match="non-finite"):
        sample(Diverging(), config, cond, (1, 3, 16, 16), SamplingConfig(steps=2, tile=0), [0])


# ------------------------------------------------------------------ 9, 10, 13: one line, never a traceback
def test_out_of_range_and_wrong_values_give_one_line(tiny_model_dir, photos, tmp_path, capsys):
    a = str(photos / "a.png")
    model = str(tiny_model_dir)
    edited = {}
    for name, field, value in [("v99", "version", 99), ("gn7", ("model", "groupnorm_groups"), 7),
                               ("scale0", ("data", "scale"), 0), ("t0", ("diffusion", "timesteps"), 0)]:
        folder = tmp_path / name
        shutil.copytree(tiny_model_dir, folder)
        config = json.loads((folder / "config.json").read_text())
        if isinstance(field, tuple):
            config[field[0]][field[1]] = value
        else:
            config[field] = value
        (folder / "config.json").write_text(json.dumps(config))
        edited[name] = str(folder)
    cases = [
        (["--model", model, "--eta", "5", "--sampler", "ddim"], "eta = 5.0 is outside [0, 1]"),
        (["--model", model, "--eta", "nan"], "eta = nan is outside"),
        (["--model", model, "--scale", "8"], "upscales 4x, not 8x"),
        (["--model", model, "--scale", "16"], "upscales 4x, not 16x"),
        (["--scale", "3"], "upscales 4x, not 3x"),  # the shipped model (it and its cascades: 4x, 8x, 16x)
        (["--method", "bicubic", "--scale", "0"], "--scale 0 must be an integer in [1, 16]"),
        (["--method", "bicubic", "--scale", "-2"], "--scale -2 must be"),
        (["--method", "bicubic", "--scale", "100"], "--scale 100 must be"),
        (["--model", model, "--seed", str(2 ** 70)], "must lie in [0, 2**63)"),
        (["--model", model, "--device", "bogus"], "--device bogus: not a device name"),
        (["--model", a], "is a file; --model takes a model folder"),
        (["--model", edited["v99"]], "config version 99 is not supported"),
        (["--model", edited["gn7"]], "groupnorm_groups = 7 must divide"),
        (["--model", edited["scale0"]], "data.scale = 0 is not supported"),
        (["--model", edited["t0"]], "diffusion.timesteps = 0 must be >= 1"),
    ]
    if not torch.cuda.is_available():
        cases.append((["--model", model, "--device", "cuda"], "no usable CUDA device"))
    for extra, message in cases:
        code, errors, _ = run(["upscale", a, "--out", str(tmp_path / "never"), *extra], capsys)
        assert code == 2 and len(errors) == 1 and message in errors[0], (extra, errors)
    assert not (tmp_path / "never").exists()


def test_out_of_memory_is_one_line_and_the_batch_goes_on(photos, tmp_path, capsys, monkeypatch):
    real_call = sr3.methods.BicubicUpscaler.__call__

    def huge(self, lr, *args, **kwargs):
        if lr.shape[-1] == 13:  # a.png: a real allocator failure (more bytes than any address space)
            torch.empty(2 ** 62, dtype=torch.uint8)
        return real_call(self, lr, *args, **kwargs)
    monkeypatch.setattr(sr3.methods.BicubicUpscaler, "__call__", huge)
    code, errors, _ = run(["upscale", str(photos), "--out", str(tmp_path / "o"), *BICUBIC], capsys)
    assert code == 1 and len(errors) == 1 and "a.png: out of memory upscaling 13x11 to 26x22" in errors[0]
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["b.jpg"]


# ------------------------------------------------------------------ training faults
TRAIN = ["train", "--preset", "tiny", "--train.sample-every", "0", "--train.log-every", "1"]


def test_train_flags_out_of_range_give_one_line(image_folder, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for extra, message in [(["--out", str(tmp_path / "file")], "is a file; --out must be a folder"),
                           (["--train.lr", "nan"], "train.lr = nan is outside"),
                           (["--train.checkpoint-every", "0"], "train.checkpoint_every = 0 must be >= 1"),
                           (["--train.log-every", "0"], "train.log_every = 0 must be >= 1"),
                           (["--device", "bogus"], "--device bogus: not a device name"),
                           (["--out", str(tmp_path / "file" / "sub")], "cannot write output folder"),
                           *([(["--device", "cuda"], "no usable CUDA device")] if not torch.cuda.is_available()
                             else [])]:
        argv = [*TRAIN, "--data", str(image_folder), *(["--out", str(tmp_path / "r")] if "--out" not in extra else []),
                *extra]
        code, errors, _ = run(argv, capsys)
        assert code == 2 and len(errors) == 1 and message in errors[0], (extra, errors)
    assert not (tmp_path / "r").exists()


def test_diverging_training_stops_and_keeps_the_last_good_checkpoint(image_folder, tmp_path, capsys):
    out = tmp_path / "run"
    code, errors, _ = run([*TRAIN, "--data", str(image_folder), "--out", str(out), "--steps", "8",
                           "--train.lr", "1e4", "--train.warmup-steps", "0", "--train.checkpoint-every", "2"], capsys)
    assert code == 2 and len(errors) == 1 and "training diverged by step 3 (non-finite loss)" in errors[0]
    assert "keeps step 2" in errors[0] and not (out / "model").exists()
    assert json.loads((out / "checkpoint" / "state.json").read_text()) == {"step": 2}
    assert all(torch.isfinite(t).all() for t in load_file(str(out / "checkpoint" / "raw.safetensors")).values())
    # resuming from a checkpoint with NaN weights (written by an older sr3) is refused as well
    raw = load_file(str(out / "checkpoint" / "raw.safetensors"))
    raw[sorted(raw)[0]] *= float("nan")
    save_file(raw, str(out / "checkpoint" / "raw.safetensors"))
    code, errors, _ = run([*TRAIN, "--data", str(image_folder), "--out", str(out), "--steps", "8", "--resume"], capsys)
    assert code == 2 and len(errors) == 1 and "NaN/inf" in errors[0]


@pytest.fixture()
def checkpointed_run(tiny_model_dir, tmp_path):
    """A copy of the fixture's training folder (checkpoint at step 8, log.jsonl)."""
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_model_dir.parent, run_dir)
    return run_dir


def test_tampered_checkpoints_are_one_line_errors(checkpointed_run, image_folder, capsys):
    ckpt = checkpointed_run / "checkpoint"
    good_state, good_optimizer = (ckpt / "state.json").read_bytes(), (ckpt / "optimizer.safetensors").read_bytes()
    resume = [*TRAIN, "--data", str(image_folder), "--out", str(checkpointed_run), "--steps", "9", "--resume"]
    optimizer = load_file(str(ckpt / "optimizer.safetensors"))
    cut = dict(optimizer, **{"0.exp_avg": optimizer["0.exp_avg"][:1].clone()})
    nan = dict(optimizer, **{"0.exp_avg_sq": optimizer["0.exp_avg_sq"] * float("nan")})
    extra = dict(optimizer, **{"999.exp_avg": torch.zeros(1)})
    for tensors, message in [(cut, "0.exp_avg has shape"), (nan, "0.exp_avg_sq holds invalid values"),
                             (extra, "unexpected ['999.exp_avg']")]:
        save_file(tensors, str(ckpt / "optimizer.safetensors"))
        code, errors, _ = run(resume, capsys)
        assert code == 2 and len(errors) == 1 and "optimizer state does not match" in errors[0] \
            and message in errors[0], errors
    (ckpt / "optimizer.safetensors").write_bytes(good_optimizer)
    for state in ('{"step": -5}', '{"step": 2.5}', '{"step": true}'):
        (ckpt / "state.json").write_text(state)
        code, errors, _ = run(resume, capsys)
        assert code == 2 and len(errors) == 1 and "is not a step count" in errors[0], errors
    (ckpt / "state.json").write_bytes(good_state)


def test_resume_refuses_fewer_steps_than_the_checkpoint(checkpointed_run, image_folder, capsys):
    """A checkpoint cannot be rolled back: --resume --steps 5 on a step-8 checkpoint must not save the
    step-8 weights as a 5-step model (the CDM ablation once compared arms mislabelled that way)."""
    model = checkpointed_run / "model" / "model.safetensors"
    before = model.read_bytes()
    code, errors, _ = run([*TRAIN, "--data", str(image_folder), "--out", str(checkpointed_run), "--steps", "5",
                           "--resume"], capsys)
    assert code == 2 and len(errors) == 1 and "is at step 8, past --steps 5" in errors[0], errors
    assert model.read_bytes() == before
    code, _, _ = run([*TRAIN, "--data", str(image_folder), "--out", str(checkpointed_run), "--steps", "8",
                      "--resume"], capsys)  # finalising at the checkpoint's own step still works
    assert code == 0 and json.loads((checkpointed_run / "model" / "config.json").read_text())["train"]["steps"] == 8


def test_disk_full_during_a_checkpoint_keeps_the_previous_one(checkpointed_run, image_folder, capsys, monkeypatch):
    real_write = sr3.checkpoint.atomic_write_bytes

    def disk_full(path, data):
        if path.name == "ema.safetensors":  # raw.safetensors of the new checkpoint is already written
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)
    monkeypatch.setattr(sr3.checkpoint, "atomic_write_bytes", disk_full)
    before = digests(checkpointed_run / "checkpoint")
    code, errors, _ = run([*TRAIN, "--data", str(image_folder), "--out", str(checkpointed_run), "--steps", "9",
                           "--resume"], capsys)
    assert code == 2 and len(errors) == 1
    assert "cannot write the step-9 checkpoint (No space left on device)" in errors[0]
    assert digests(checkpointed_run / "checkpoint") == before
    assert not (checkpointed_run / ".checkpoint.tmp").exists() and not (checkpointed_run / ".checkpoint.old").exists()


# ------------------------------------------------------------------ 11: log.jsonl after kill + resume
def test_log_has_one_strict_json_line_per_step_after_kill_and_resume(checkpointed_run, image_folder, capsys):
    log = checkpointed_run / "log.jsonl"
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == list(range(1, 9))
    # killed after logging steps 9 and 10 (and half of 11) past the step-8 checkpoint
    with log.open("a") as f:
        f.write('{"step": 9, "loss": NaN}\n{"step": 10, "loss": 0.5}\n{"step": 11, "lo')
    code, errors, _ = run([*TRAIN, "--data", str(image_folder), "--out", str(checkpointed_run), "--steps", "10",
                           "--resume"], capsys)
    assert code == 0 and not errors

    def strict(token):
        raise ValueError(f"bare {token} in log.jsonl")
    steps = [json.loads(line, parse_constant=strict)["step"] for line in log.read_text().splitlines()]
    assert steps == list(range(1, 11))


def test_a_checkpoint_with_nan_weights_never_replaces_the_last_good_one(checkpointed_run):
    """Weights can turn NaN while the loss of that step was still finite (an inf gradient)."""
    config = Config.from_json_file(checkpointed_run / "checkpoint" / "config.json")
    model = sr3.unet.UNet(config.model)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    optimizer = torch.optim.AdamW(model.parameters())
    before = digests(checkpointed_run / "checkpoint")
    with pytest.raises(UserError, match="NaN/inf"):
        sr3.checkpoint.save_training_checkpoint(checkpointed_run, model, model, optimizer, 12, config)
    assert digests(checkpointed_run / "checkpoint") == before and not (checkpointed_run / ".checkpoint.tmp").exists()
