"""Seconds per training step of the CDM Fashion-MNIST presets on this machine (JSON), and what the
whole ablation recipe of experiments/cdm_ablation.py would cost here.

    OMP_NUM_THREADS=1 python benchmarks/cdm_step_time.py                 # the GPU recipe, one core
    OMP_NUM_THREADS=1 python benchmarks/cdm_step_time.py --recipe cpu    # the CPU recipe (fmnist-cpu-*)

One core, as the ablation's parallel runs use.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sr3.diffusion import Conditioning, network_output  # noqa: E402
from sr3.presets import FMNIST_RECIPES, PRESETS  # noqa: E402
from sr3.unet import UNet  # noqa: E402
from unet_speed import timed_runs  # noqa: E402  (this folder)

RUNS = {"base16": 1, "base32": 1, "sr16-32": 9}  # runs of each preset in the ablation (after the recipe's prefix)


def step_seconds(name: str, repeats: int = 3) -> float:
    config = PRESETS[name]
    mc, batch, size = config.model, config.train.batch_size, config.data.crop_size
    torch.manual_seed(0)
    model = UNet(mc)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-4)
    x = torch.randn(batch, mc.image_channels, size, size)
    cond = Conditioning(class_label=torch.zeros(batch, dtype=torch.long) if mc.num_classes else None,
                        lr_upsampled=torch.randn(batch, mc.cond_channels, size, size) if mc.cond_channels else None,
                        aug_level=torch.zeros(batch) if mc.aug_level_conditioning else None)
    def step():
        out = network_output(model, x, torch.rand(batch), cond, config.train.bf16)
        out.square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    return timed_runs(step, repeats)[0]  # after one untimed step that pays for kernel selection


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", choices=tuple(FMNIST_RECIPES), default="gpu")
    runs = {FMNIST_RECIPES[p.parse_args().recipe] + name: n for name, n in RUNS.items()}
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    seconds = {name: step_seconds(name) for name in runs}
    total = sum(seconds[name] * PRESETS[name].train.steps * n for name, n in runs.items())
    print(json.dumps({"cpu": cpu, "threads": torch.get_num_threads(), "bf16": True,
                      "seconds_per_step": {k: round(v, 3) for k, v in seconds.items()},
                      "batch": {k: PRESETS[k].train.batch_size for k in runs},
                      "ablation_training_hours_one_run_at_a_time": round(total / 3600, 1)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
