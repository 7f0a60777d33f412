"""End-to-end upscaling speed and memory with a model directory (default: the shipped one).

Prints JSON and writes benchmarks/results/upscale_speed.json:
* seconds to upscale a 256x256 image to 1024x1024 at the default sampler/steps/tile
  (median of --repeats), with bf16 autocast (where the CPU has bf16 kernels) and in
  fp32, both in this run; seconds per output megapixel; the achieved GFLOP/s as a
  fraction of a matmul peak of the same dtype measured in the same run;
* the anchor of issue 4: the popular unofficial SR3's default of 2000 sampling steps
  for a 16->128 image, with its U-Net shape (64 channels, multipliers 1,2,4,8,8, 2 blocks,
  attention at 16x16) rebuilt from sr3.unet and timed here for a few steps, against our
  default model and steps on the same 128x128 output;
* peak resident memory (ru_maxrss of a child process) to upscale 1024x1024 to
  4096x4096 with tiling, at 1 step: memory does not grow with the step count,
  only time does, so one step measures the bound without an hour of CPU.

    python benchmarks/upscale_speed.py [--model DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import sr3
from sr3.config import UNetConfig
from sr3.diffusion import bf16_is_fast
from sr3.unet import UNet, count_parameters
from unet_speed import matmul_peak, timed_runs  # the same peak measurement as the U-Net benchmark (this folder)

MEMORY_CHILD = """
import resource, sys, torch, sr3
pipe = sr3.load(sys.argv[1] if sys.argv[1] != "-" else None)
lr = torch.rand(1, 3, 1024, 1024) * 2 - 1
out = pipe.upscale_tensor(lr, steps=1, seed=0)
assert out.shape == (1, 3, 4096, 4096)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


# The 16->128 U-Net of the popular unofficial SR3 implementation (its default config:
# inner channel 64, channel multipliers 1,2,4,8,8, 2 res blocks, attention at 16 px, dropout 0.2),
# whose default sampling runs 2000 steps.
ANCHOR_UNET = UNetConfig(base_channels=64, channel_mult=(1, 2, 4, 8, 8), num_res_blocks=2, attention_levels=(3,),
                         mid_attention=True, dropout=0.2)
ANCHOR_STEPS = 2000


def anchor_seconds_per_step(repeats: int) -> float:
    """fp32 seconds of one anchor U-Net evaluation on a 128x128 image (batch 1, inference mode)."""
    torch.manual_seed(0)
    model = UNet(ANCHOR_UNET).eval()
    x, lr_up = torch.randn(1, 3, 128, 128), torch.randn(1, 3, 128, 128)
    with torch.inference_mode():
        model(x, torch.rand(1), lr_up)  # warm-up
        return timed_runs(lambda: model(x, torch.rand(1), lr_up), repeats, warm_up=False)[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model directory (default: shipped model)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "upscale_speed.json")
    args = p.parse_args()
    pipe = sr3.load(args.model)
    bf16 = bf16_is_fast("cpu")
    lr = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0)) * 2 - 1

    defaults = pipe.sampling  # the model's own sampling.json (sr3/pipeline.py)

    def upscale(x, steps=defaults.steps):
        return pipe.upscale_tensor(x, steps=steps, seed=0)

    result = {"model": str(args.model or "shipped default"), "sampler": defaults.sampler, "steps": defaults.steps,
              "tile": defaults.tile, "threads": torch.get_num_threads(), "cpu_has_fast_bf16": bf16,
              "by_dtype": {}}
    for dtype in ([torch.bfloat16] if bf16 else []) + [torch.float32]:
        pipe.bf16 = dtype == torch.bfloat16
        upscale(lr[..., :64, :64], steps=2)  # warm-up (oneDNN primitive creation)
        seconds, times = timed_runs(lambda: upscale(lr), args.repeats, warm_up=False)
        small, _ = timed_runs(lambda: upscale(lr[..., :32, :32]), args.repeats, warm_up=False)
        with FlopCounterMode(display=False) as counter:  # one whole default run (a predictor runs once)
            upscale(lr)
        flops = counter.get_total_flops()
        peak = matmul_peak(dtype, args.repeats, n=2048)
        result["by_dtype"][str(dtype).replace("torch.", "")] = {
            "seconds_256_to_1024": seconds, "runs": times, "seconds_per_output_megapixel": seconds / (1024 * 1024 / 1e6),
            "seconds_32_to_128": small, "gflop": flops / 1e9, "achieved_gflop_per_s": flops / seconds / 1e9,
            "matmul_peak_gflop_per_s": peak, "fraction_of_peak": flops / seconds / 1e9 / peak}
    fast = result["by_dtype"]["bfloat16" if bf16 else "float32"]
    if bf16:
        result["bf16_speedup_256_to_1024"] = result["by_dtype"]["float32"]["seconds_256_to_1024"] / fast["seconds_256_to_1024"]
    anchor_step = anchor_seconds_per_step(args.repeats)
    result["anchor"] = {"unet": "64 ch, mult 1,2,4,8,8, 2 blocks, attention at 16 px (fp32)",
                        "parameters": count_parameters(UNet(ANCHOR_UNET)), "seconds_per_step_128": anchor_step,
                        "steps": ANCHOR_STEPS, "seconds_128x128": anchor_step * ANCHOR_STEPS,
                        "seconds_per_100_steps_128": anchor_step * 100,
                        "our_speedup_same_output": anchor_step * ANCHOR_STEPS / fast["seconds_32_to_128"]}
    if not args.skip_memory:
        proc = subprocess.run([sys.executable, "-c", MEMORY_CHILD, args.model or "-"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-2000:])
        result["peak_rss_gib_1024_to_4096"] = int(proc.stdout.strip().splitlines()[-1]) / 2**20
    result["cpu"] = platform.processor() or platform.machine()
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
