"""End-to-end upscaling speed and memory with a model directory (default: the shipped one).

Prints JSON and writes benchmarks/results/upscale_speed.json:
* seconds to upscale a 256x256 image to 1024x1024 at the default sampler/steps/tile
  (median of --repeats), seconds per output megapixel, and the achieved GFLOP/s as a
  fraction of an fp32 matmul peak measured in the same run;
* peak resident memory (ru_maxrss of a child process) to upscale 1024x1024 to
  4096x4096 with tiling, at 1 step: memory does not grow with the step count,
  only time does, so one step measures the bound without an hour of CPU.

    python benchmarks/upscale_speed.py [--model DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import sr3
from sr3.pipeline import DEFAULT_SAMPLER, DEFAULT_STEPS, DEFAULT_TILE

MEMORY_CHILD = """
import resource, sys, torch, sr3
pipe = sr3.load(sys.argv[1] if sys.argv[1] != "-" else None)
lr = torch.rand(1, 3, 1024, 1024) * 2 - 1
out = pipe.upscale_tensor(lr, steps=1, seed=0)
assert out.shape == (1, 3, 4096, 4096)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def matmul_peak(repeats: int, n: int = 2048) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model directory (default: shipped model)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "upscale_speed.json")
    args = p.parse_args()
    pipe = sr3.load(args.model)
    lr = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0)) * 2 - 1
    pipe.upscale_tensor(lr[..., :64, :64], steps=2, seed=0)  # warm-up
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        pipe.upscale_tensor(lr, sampler=DEFAULT_SAMPLER, steps=DEFAULT_STEPS, seed=0)
        times.append(time.perf_counter() - t)
    seconds = statistics.median(times)
    # Every step costs the same network evaluations: count one step's FLOPs, times the steps.
    with FlopCounterMode(display=False) as counter:
        pipe.upscale_tensor(lr, sampler=DEFAULT_SAMPLER, steps=1, seed=0)
    flops = counter.get_total_flops() * DEFAULT_STEPS
    peak = matmul_peak(args.repeats)
    result = {
        "model": str(args.model or "shipped sr3-4x"), "sampler": DEFAULT_SAMPLER, "steps": DEFAULT_STEPS,
        "tile": DEFAULT_TILE, "threads": torch.get_num_threads(),
        "seconds_256_to_1024": seconds, "runs": times, "seconds_per_output_megapixel": seconds / (1024 * 1024 / 1e6),
        "gflop": flops / 1e9, "achieved_gflop_per_s": flops / seconds / 1e9,
        "fp32_matmul_peak_gflop_per_s": peak, "fraction_of_peak": flops / seconds / 1e9 / peak,
    }
    if not args.skip_memory:
        proc = subprocess.run([sys.executable, "-c", MEMORY_CHILD, args.model or "-"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-2000:])
        result["peak_rss_gib_1024_to_4096"] = int(proc.stdout.strip().splitlines()[-1]) / 2**20
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
