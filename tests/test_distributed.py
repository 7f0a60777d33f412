"""One training run with 2 CPU processes (gloo), launched the way users launch it: torchrun."""

import subprocess
import sys

import torch
from safetensors.torch import load_file

from sr3.presets import PRESETS
from sr3.unet import UNet


def test_two_process_training_runs_and_writes_one_model(image_folder, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
           "-m", "sr3", "train", "--preset", "tiny", "--data", str(image_folder), "--out", str(out),
           "--steps", "2", "--no-progress", "--train.checkpoint-every", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", **_python_env()})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("model written to") == 1  # only rank 0 writes
    weights = load_file(str(out / "model" / "model.safetensors"))
    raw = load_file(str(out / "checkpoint" / "raw.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert (out / "log.jsonl").read_text().count('"step": 2') == 1
    torch.manual_seed(0)  # the tiny preset's seed: the weights training started from
    initial = UNet(PRESETS["tiny"].model).state_dict()
    changed = [k for k in raw if raw[k].is_floating_point() and not torch.equal(raw[k], initial[k])]
    assert changed  # the optimiser steps moved the weights (zero-initialised output convs first)


def _python_env():
    import os
    return {k: v for k, v in os.environ.items() if k in ("HOME", "PYTHONPATH", "VIRTUAL_ENV", "PATH")}
