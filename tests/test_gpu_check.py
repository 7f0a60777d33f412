"""benchmarks/gpu_check.py --smoke: the GPU check's every phase, in tiny mode on the CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

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
    # FlopCounterMode's count for the tiny U-Net at 32 px: forward + backward is ~3x the forward
    assert 1e8 < train["flops_per_image_train_step"] < 1e10 and train["achieved_tflops"] > 0
    assert report["ddp"]["processes"] == 2 and report["ddp"]["images_per_s"] > 0, report["ddp"]
    assert report["sampling"]["images"] == 4 and report["sampling"]["images_per_s"] > 0
    fid = report["fid"]
    assert fid["samples"] == 16 and fid["fid"] > 0 and "NOT Inception" in fid["extractor"]
