"""benchmarks/gpu_check.py --smoke: the GPU check's every phase, in tiny mode on the CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from sr3.presets import PRESETS
from sr3.unet import UNet

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_smoke_runs_every_phase_and_writes_json(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["smoke"] is True and "CPU" in report["device"]
    train = report["train"]
    assert train["preset"] == "tiny" and train["steps"] == 6 and train["images_per_s"] > 0
    # a training step (forward + backward) costs about 3 forward passes of the tiny U-Net at 32 px
    with FlopCounterMode(display=False) as counter:
        UNet(PRESETS["tiny"].model)(torch.zeros(1, 3, 32, 32), torch.rand(1), torch.zeros(1, 3, 32, 32))
    ratio = train["flops_per_image_train_step"] / counter.get_total_flops()
    assert 2.5 < ratio < 3.5, ratio
    achieved = train["flops_per_image_train_step"] * train["images_per_s"] / 1e12
    assert abs(train["achieved_tflops"] - achieved) < 0.002
    assert report["ddp"]["processes"] == 2 and report["ddp"]["images_per_s"] > 0, report["ddp"]
    assert report["sampling"]["images"] == 4 and report["sampling"]["images_per_s"] > 0
    fid = report["fid"]
    assert fid["samples"] == 16 and fid["fid"] > 0 and "NOT Inception" in fid["extractor"]
