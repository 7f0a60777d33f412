"""Speed and memory of ``sr3 upscale`` at its defaults (the shipped default model), with SPAN x4 timed in the same run.

Prints JSON and writes it to --out:
* seconds per output megapixel at the default model's default sampling settings (its
  sampling.json), median of --repeats upscales of a 256x256 input to 1024x1024, in fp32
  and, where the CPU has fast bf16 kernels, with bf16 autocast (what ``sr3 upscale`` uses);
* the same for the model's deterministic predictor alone (its ``predictor/`` folder), if it has one;
* SPAN x4 (benchmarks/peers.py; ncnn on the CPU) on the same 256x256 input, same repeats;
* peak resident memory (ru_maxrss of a child process) to upscale 1024x1024 to 4096x4096 at
  the default settings.

``ONEDNN_MAX_CPU_ISA=AVX2`` makes PyTorch's oneDNN kernels run as on an AVX2-only CPU; an
AVX2-only CPU has no fast bf16, so sr3 would run fp32 there, and only fp32 is timed in
that mode (bf16 would fall back to slow reference kernels).  The CPU is named in the
JSON, and so is the load average at the start (the benchmark machine is shared).

    python benchmarks/default_speed.py --out benchmarks/results/default_speed.json
    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/default_speed.py --out benchmarks/results/default_speed_avx2.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

import sr3
from sr3.atomic import atomic_write_text
from sr3.diffusion import bf16_is_fast
from sr3.imageio import tensor_to_pil
from sr3.pipeline import DEFAULT_MODEL_DIR
from sr3.predict_refine import PREDICTOR_DIR
from peers import cpu_name, load_peer  # this folder
from unet_speed import timed_runs  # this folder

MEMORY_CHILD = """
import resource, sys, torch, sr3
pipe = sr3.load(sys.argv[1], bf16=sys.argv[2] == "1")
lr = torch.rand(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0)) * 2 - 1
out = pipe.upscale_tensor(lr, seed=0)
assert out.shape == (1, 3, 4096, 4096)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def time_model(path: Path, lr: torch.Tensor, bf16: bool, repeats: int) -> dict:
    pipe = sr3.load(path, bf16=bf16)
    seconds, runs = timed_runs(lambda: pipe.upscale_tensor(lr, seed=0), repeats)
    megapixels = lr.shape[-2] * lr.shape[-1] * pipe.scale ** 2 / 1e6
    return {"seconds": seconds, "runs": runs, "seconds_per_output_megapixel": seconds / megapixels,
            "network_evaluations": pipe.count_evaluations(*lr.shape[-2:])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR, help="model directory (default: the default model)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--size", type=int, default=256, help="LR side of the timed input (output is 4x)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for SPAN (PyTorch uses its default)")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    avx2_only = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() == "AVX2"
    fast_bf16 = bf16_is_fast("cpu") and not avx2_only
    lr = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    pipe = sr3.load(args.model)
    result = {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
              "load_average_at_start": os.getloadavg()[0],
              "oneDNN_isa": "AVX2 (ONEDNN_MAX_CPU_ISA=AVX2)" if avx2_only else "native",
              "model": str(args.model), "sampling": pipe.sampling.__dict__,
              "input": f"{args.size}x{args.size} -> {4 * args.size}x{4 * args.size}", "sr3": {}}
    for bf16 in ([True] if fast_bf16 else []) + [False]:
        key = "bf16" if bf16 else "fp32"
        result["sr3"][key] = time_model(args.model, lr, bf16, args.repeats)
        if (args.model / PREDICTOR_DIR).exists():
            result["sr3"][key + "_predictor_only"] = time_model(args.model / PREDICTOR_DIR, lr, bf16, args.repeats)
        print(f"sr3 {key}: {result['sr3'][key]['seconds_per_output_megapixel']:.2f} s/MP", file=sys.stderr)
    span = load_peer("span", args.threads)
    image = tensor_to_pil(lr[0])
    seconds, runs = timed_runs(lambda: span(image), args.repeats)
    result["span"] = {"seconds": seconds, "runs": runs,
                      "seconds_per_output_megapixel": seconds / (16 * args.size ** 2 / 1e6)}
    best = result["sr3"]["bf16" if fast_bf16 else "fp32"]["seconds_per_output_megapixel"]
    result["default_seconds_per_output_megapixel"] = best
    result["speed_target_20_s_per_mp_met"] = best <= 20
    result["faster_than_span"] = best < result["span"]["seconds_per_output_megapixel"]
    if not args.skip_memory:
        proc = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(args.model), "1" if fast_bf16 else "0"],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-2000:])
        peak = int(proc.stdout.strip().splitlines()[-1]) / 2**20
        result["peak_rss_gib_1024_to_4096"] = peak
        result["memory_target_2_gib_met"] = peak < 2
    text = json.dumps(result, indent=2)
    atomic_write_text(args.out, text + "\n")
    print(text)


if __name__ == "__main__":
    main()
