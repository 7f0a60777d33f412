"""Streaming training data: file index, tar shards, bad files, workers, resume after kill -9, many processes."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import sr3.file_index
from sr3.cli import main
from sr3.data import ImageFolderDataset
from sr3.errors import UserError
from sr3.file_index import FileIndex, write_index
from sr3.labelled_data import LabelledDataset
from sr3.step_loader import draw_part, step_generator, step_loader
from sr3.streaming import StreamingImageDataset, StreamingLabelledDataset, open_index, open_training_data
from sr3.presets import PRESETS
from sr3.train import train
from sr3.unet import UNet

from conftest import make_photo, tiny_config


def _python_env():
    keep = ("HOME", "PYTHONPATH", "VIRTUAL_ENV", "PATH")
    return {"OMP_NUM_THREADS": "1", **{k: v for k, v in os.environ.items() if k in keep}}


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write_shards(folder: Path, out: Path, per_shard: int = 2, labels: dict[str, int] | None = None) -> Path:
    """WebDataset-style shards of the images in ``folder`` (sorted), ``per_shard`` samples each."""
    out.mkdir(parents=True, exist_ok=True)
    files = sorted(folder.glob("*.png"))
    for s in range(0, len(files), per_shard):
        with tarfile.open(out / f"shard-{s // per_shard:06d}.tar", "w") as tar:
            for path in files[s:s + per_shard]:
                members = [(path.stem + ".png", path.read_bytes())]
                if labels is not None:
                    members.append((path.stem + ".cls", str(labels[path.stem]).encode()))
                for name, data in members:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return out


def same_batches(a, b, draws: int = 6, batch: int = 5):
    for k in range(draws):
        x, y = a.sample(batch, step_generator(0, k, 0)), b.sample(batch, step_generator(0, k, 0))
        assert torch.equal(x.hr, y.hr), k
        assert (x.label is None and y.label is None) or torch.equal(x.label, y.label)


def test_streamed_crops_equal_the_in_memory_crops(image_folder, tmp_path):
    """Same images, same generator -> the same batch: streaming changes memory, not training."""
    memory = ImageFolderDataset(image_folder, 32, downscale_max=2.0)
    streamed = StreamingImageDataset(FileIndex(write_index(image_folder, tmp_path / "idx")), 32, downscale_max=2.0)
    same_batches(memory, streamed)
    shards = write_shards(image_folder, tmp_path / "shards", per_shard=3)
    from_tar = StreamingImageDataset(FileIndex(write_index(shards, tmp_path / "tar_idx")), 32, downscale_max=2.0)
    assert len(from_tar) == 4 and from_tar.index.info.kind == "shards"
    same_batches(memory, from_tar)


def test_labelled_class_folders_and_labelled_shards_stream_like_the_in_memory_dataset(tmp_path):
    rng = np.random.default_rng(1)
    labels = {}
    (tmp_path / "flat").mkdir()
    for c, name in enumerate(["bag", "coat", "shoe"]):
        (tmp_path / "classes" / name).mkdir(parents=True)
        for i in range(3):
            img = make_photo(rng, 28, 28)
            img.save(tmp_path / "classes" / name / f"{name}{i}.png")
            img.save(tmp_path / "flat" / f"{name}{i}.png")
            labels[f"{name}{i}"] = c
    memory = LabelledDataset(tmp_path / "classes", 16, hflip=True)
    streamed = StreamingLabelledDataset(FileIndex(write_index(tmp_path / "classes", tmp_path / "i1", labelled=True)),
                                        16, hflip=True)
    assert streamed.pad_to == memory.pad_to == 32 and streamed.class_names == ("bag", "coat", "shoe")
    same_batches(memory, streamed)
    # shards hold the same files in the same order, labels from .cls members
    shards = write_shards(tmp_path / "flat", tmp_path / "shards", per_shard=4, labels=labels)
    from_tar = StreamingLabelledDataset(FileIndex(write_index(shards, tmp_path / "i2", labelled=True)), 16,
                                        hflip=True)
    assert from_tar.num_classes == 3
    same_batches(memory, from_tar)


def test_folder_index_is_written_once_and_reused(tmp_path, monkeypatch):
    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(100):
        (folder / f"sub{i % 4}").mkdir(exist_ok=True)
        make_photo(rng, 40, 40).save(folder / f"sub{i % 4}" / f"{i:03d}.png")
    out = tmp_path / "run"
    index = open_index(folder, out)
    assert len(index) == 100
    assert index.path(0) == folder / "sub0" / "000.png"
    records = out / "data_index" / "records.npy"
    stamp = records.stat().st_mtime_ns
    make_photo(rng, 40, 40).save(folder / "late.png")  # added after the run started

    def no_walk(*_):
        raise AssertionError("the folder was listed again")
    monkeypatch.setattr(sr3.file_index, "_walk", no_walk)
    again = open_index(folder, out)
    assert len(again) == 100 and records.stat().st_mtime_ns == stamp
    assert isinstance(again.records, np.memmap)  # memory-mapped, not read into every worker
    with pytest.raises(UserError, match="not --data"):
        open_index(tmp_path, out)


def test_bad_files_are_skipped_counted_and_logged_not_fatal(image_folder, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for p in image_folder.glob("*.png"):
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "empty.jpg").write_bytes(b"")
    Image.new("RGB", (8, 8)).save(folder / "tiny.png")  # smaller than the crop
    index = FileIndex(write_index(folder, tmp_path / "idx"))
    dataset = StreamingImageDataset(index, 32)
    names = [index.name(i) for i in range(len(index))]
    bad = {i for i, n in enumerate(names) if Path(n).name in ("broken.png", "empty.jpg", "tiny.png")}
    assert len(bad) == 3
    skipped = 0
    for k in range(20):
        batch = dataset.sample(4, step_generator(0, k, 0))
        assert batch.hr.shape == (4, 3, 32, 32) and torch.isfinite(batch.hr).all()
        skipped += len(batch.skipped)
        assert all(any(b in r for b in ("broken.png", "empty.jpg", "8x8")) for r in batch.skipped)
    # replay the index draws: a batch's skips are exactly its draws that hit a bad file
    expected = 0
    for k in range(20):
        g = step_generator(0, k, 0)
        for _ in range(4):
            while True:
                i = int(torch.randint(len(index), (1,), generator=g))
                if i not in bad:
                    break
                expected += 1
            img_h, img_w = Image.open(index.path(i)).size[::-1]
            torch.randint(img_h - 32 + 1, (1,), generator=g), torch.randint(img_w - 32 + 1, (1,), generator=g)
            torch.rand(1, generator=g)  # hflip
    assert skipped == expected > 0
    # through the training loop: counted in log.jsonl, warned, and the run finishes
    config = tiny_config(steps=6)
    config = config.replace(data=dataclasses.replace(config.data, source="stream"))
    data = open_training_data(config, folder, tmp_path / "run")
    with pytest.warns(UserWarning, match="skipped training file"):
        train(config, data, tmp_path / "run", progress=False)
    lines = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    counted = sum(len(draw_part(data, 0, k, 0, 4).batch.skipped) for k in range(6))
    assert lines[-1]["step"] == 6 and lines[-1]["skipped_files"] == counted > 0
    # nothing usable at all is a user error, not an endless loop
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.png").write_bytes(b"nope")
    with pytest.raises(UserError, match="no usable image"):
        StreamingImageDataset(FileIndex(write_index(only_bad, tmp_path / "i3")), 32).sample(1, torch.Generator())


def test_workers_give_the_same_draws_as_the_training_thread(image_folder, tmp_path):
    dataset = StreamingImageDataset(FileIndex(write_index(image_folder, tmp_path / "idx")), 32)
    inline = list(step_loader(dataset, 3, [0, 1], 2, start=5, steps=9, num_workers=0))
    ahead = list(step_loader(dataset, 3, [0, 1], 2, start=5, steps=9, num_workers=2))
    assert len(inline) == len(ahead) == 4
    for a, b in zip(inline, ahead):
        for pa, pb in zip(a, b):
            assert torch.equal(pa.batch.hr, pb.batch.hr) and pa.dropout_seed == pb.dropout_seed
            assert torch.equal(pa.generator_state, pb.generator_state)
    # the training process continues the very stream that drew the batch (gamma and eps come next)
    g = step_generator(3, 5, 1)
    torch.randint(2**62, (1,), generator=g)  # the dropout seed
    dataset.sample(2, g)
    assert torch.equal(torch.rand(8, generator=g), torch.rand(8, generator=inline[0][1].generator()))


def test_ema_moves_towards_the_weights_by_the_warm_up_decay(image_folder, tmp_path):
    config = tiny_config(steps=1)
    train(config, ImageFolderDataset(image_folder, 32), tmp_path, progress=False)
    torch.manual_seed(0)
    start = UNet(config.model).state_dict()
    raw, ema = (load_file(str(tmp_path / "checkpoint" / f"{n}.safetensors")) for n in ("raw", "ema"))
    decay = min(config.train.ema_decay, 1 / 10)  # step 0 of the (1 + step) / (10 + step) warm-up
    for k in start:
        assert torch.allclose(ema[k], start[k] + (1 - decay) * (raw[k] - start[k]), atol=1e-6), k
    assert any(not torch.equal(raw[k], start[k]) for k in start)


def test_tar_shards_train_through_the_sr3_train_command(image_folder, tmp_path, capsys):
    shards = write_shards(image_folder, tmp_path / "shards", per_shard=2)
    out = tmp_path / "run"
    code = main(["train", "--preset", "tiny", "--data", str(shards), "--out", str(out), "--steps", "3",
                 "--no-progress", "--train.sample-every", "0", "--train.log-every", "1", "--data.num-workers", "1"])
    assert code == 0 and "model written to" in capsys.readouterr().out
    info = json.loads((out / "data_index" / "index.json").read_text())
    assert info["kind"] == "shards" and info["count"] == 4 and len(info["shards"]) == 2
    assert [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert all(torch.isfinite(t).all() for t in load_file(str(out / "model" / "model.safetensors")).values())


def _train_cmd(data, out, steps, *extra):
    return [sys.executable, "-m", "sr3", "train", "--preset", "tiny", "--data", str(data), "--out", str(out),
            "--steps", str(steps), "--no-progress", "--data.source", "stream", "--data.num-workers", "2",
            "--train.sample-every", "0", *extra]


def _cli_config(steps, **train_changes):
    """The config _train_cmd gives ``sr3 train``."""
    config = PRESETS["tiny"]
    return config.replace(data=dataclasses.replace(config.data, source="stream", num_workers=2),
                          train=dataclasses.replace(config.train, steps=steps, sample_every=0, **train_changes))


def test_resume_after_kill_9_is_bit_exact_with_workers(image_folder, tmp_path):
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(image_folder, killed, 100000, "--train.checkpoint-every", "3"),
                            env=_python_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    state = killed / "checkpoint" / "state.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if state.exists():
            break
        time.sleep(0.05)
    time.sleep(0.3)  # kill somewhere in the middle of later steps
    os.killpg(proc.pid, signal.SIGKILL)  # the trainer and its loader workers, as a crash would
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-2000:]
    reached = json.loads(state.read_text())["step"]
    print("killed after checkpoint", reached, "log", (killed / "log.jsonl").read_text().count("step"))
    total = reached + 4
    resumed = subprocess.run(_train_cmd(image_folder, killed, total, "--resume", "--train.checkpoint-every", "3"),
                             env=_python_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    full = tmp_path / "full"  # the uninterrupted run, in this process (saves a start-up), same config as the CLI's
    train(_cli_config(total, checkpoint_every=3), open_training_data(_cli_config(total), image_folder, full), full,
          progress=False)
    for name in ("raw", "ema", "optimizer"):
        a = load_file(str(full / "checkpoint" / f"{name}.safetensors"))
        b = load_file(str(killed / "checkpoint" / f"{name}.safetensors"))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)


def test_two_processes_take_the_steps_of_one_process_with_the_whole_batch(image_folder, tmp_path):
    """torchrun x2 (batch 4 = 2 parts of 2) vs one process accumulating the same 2 parts."""
    two = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           *_train_cmd(image_folder, two, 4)[1:]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_python_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    one = tmp_path / "one"
    train(_cli_config(4, grad_accum=2), open_training_data(_cli_config(4), image_folder, one), one, progress=False)
    torch.manual_seed(0)
    start = UNet(PRESETS["tiny"].model).state_dict()
    a, b = load_file(str(two / "checkpoint" / "raw.safetensors")), load_file(str(one / "checkpoint" / "raw.safetensors"))
    assert a.keys() == b.keys()
    moved = 0.0
    for k in a:
        # sums of the two parts' gradients in another order: equal up to float rounding
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6), k
        moved = max(moved, float((b[k] - start[k]).abs().max()))
    assert moved > 1e-4  # the weights did train
    # ... and the comparison can tell: one process drawing the batch as a single part trains differently
    config = tiny_config(steps=4)
    config = config.replace(data=dataclasses.replace(config.data, source="stream"))
    train(config, open_training_data(config, image_folder, tmp_path / "single"), tmp_path / "single", progress=False)
    c = load_file(str(tmp_path / "single" / "checkpoint" / "raw.safetensors"))
    assert any(not torch.allclose(a[k], c[k], rtol=1e-4, atol=1e-6) for k in a)


def test_unusable_shards_are_one_line_user_errors(image_folder, tmp_path):
    gz = tmp_path / "gz"
    gz.mkdir()
    with tarfile.open(gz / "shard-000000.tar", "w:gz") as tar:  # compressed: cannot seek to members
        tar.add(sorted(image_folder.glob("*.png"))[0], arcname="000000.png")
    with pytest.raises(UserError, match="not an uncompressed tar"):
        write_index(gz, tmp_path / "i1")
    unlabelled = write_shards(image_folder, tmp_path / "plain")
    with pytest.raises(UserError, match="no .cls label"):
        write_index(unlabelled, tmp_path / "i2", labelled=True)
    code = main(["train", "--preset", "tiny", "--data", str(image_folder), "--out", str(tmp_path / "run"),
                 "--steps", "1", "--no-progress", "--train.grad-accum", "3"])
    assert code == 2  # batch 4 cannot be cut into 3 parts: a one-line error, no traceback
