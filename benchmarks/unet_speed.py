"""U-Net speed: forward seconds per sampling step and training images/s, fp32 vs bf16.

Prints JSON (and writes benchmarks/results/unet_speed.json): for each preset and
size, the median over --repeats runs of one forward pass (batch 1, inference
mode) and one training step (forward + backward + AdamW), the FLOPs counted by
torch's FlopCounterMode, the achieved GFLOP/s, and the fraction of a matmul peak
measured in the same run with the same dtype and thread count.

    python benchmarks/unet_speed.py --presets tiny,cpu-4x --sizes 64,128,256 --repeats 3 --batch 2

``--compile 256`` adds, per preset and listed size, the forward pass of ``torch.compile(model)``
(inductor, default mode) in each dtype, with its compile time, to see whether compiling
pays off for sampling.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from sr3.diffusion import Conditioning, network_output
from sr3.presets import PRESETS
from sr3.unet import UNet, count_parameters


def timed_runs(fn, repeats: int, warm_up: bool = True) -> tuple[float, list[float]]:
    """(median, all) wall seconds of ``repeats`` calls of ``fn``, after one untimed call if ``warm_up``
    (oneDNN creates its kernels on first use).  The benchmarks of this folder share it."""
    if warm_up:
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def median_seconds(fn, repeats: int) -> float:
    return timed_runs(fn, repeats)[0]


def matmul_peak(dtype: torch.dtype, repeats: int, n: int) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return 2 * n ** 3 / median_seconds(lambda: a @ b, repeats) / 1e9


def autocast(dtype):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def bench(preset: str, size: int, dtype: torch.dtype, repeats: int, batch: int) -> dict:
    config = PRESETS[preset]
    torch.manual_seed(0)
    model = UNet(config.model)
    cond = Conditioning(lr_upsampled=torch.randn(1, 3, size, size))
    x = torch.randn(1, 3, size, size)

    def forward():
        with torch.inference_mode(), autocast(dtype):
            model(x.contiguous(memory_format=torch.channels_last), torch.rand(1), cond.lr_upsampled)

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    xb, cb = torch.randn(batch, 3, size, size), Conditioning(lr_upsampled=torch.randn(batch, 3, size, size))

    def train_step():
        out = network_output(model, xb, torch.rand(batch), cb, bf16=False) if dtype == torch.float32 else None
        if out is None:
            with autocast(dtype):
                out = model(xb.contiguous(memory_format=torch.channels_last), torch.rand(batch), cb.lr_upsampled).float()
        optimizer.zero_grad()
        out.abs().mean().backward()
        optimizer.step()

    fwd_s, fwd_flops = median_seconds(forward, repeats), count_flops(forward)
    train_s, train_flops = median_seconds(train_step, repeats), count_flops(train_step)
    return {"preset": preset, "size": size, "dtype": str(dtype).replace("torch.", ""),
            "parameters": count_parameters(model), "forward_seconds": fwd_s, "forward_gflops": fwd_flops / 1e9,
            "forward_gflop_per_s": fwd_flops / fwd_s / 1e9, "train_batch": batch,
            "train_images_per_s": batch / train_s, "train_gflop_per_s": train_flops / train_s / 1e9}


def bench_compiled(preset: str, size: int, dtype: torch.dtype, repeats: int) -> dict:
    """Forward seconds of the eager and the torch.compile'd model, same inputs, same run."""
    torch.manual_seed(0)
    model = UNet(PRESETS[preset].model).eval()
    x = torch.randn(1, 3, size, size).contiguous(memory_format=torch.channels_last)
    lr_up, gamma = torch.randn_like(x), torch.rand(1)
    compiled = torch.compile(model)

    def run(net):
        with torch.inference_mode(), autocast(dtype):
            net(x, gamma, lr_up)
    t = time.perf_counter()
    run(compiled)  # compiles
    compile_s = time.perf_counter() - t
    eager_s, compiled_s = median_seconds(lambda: run(model), repeats), median_seconds(lambda: run(compiled), repeats)
    return {"preset": preset, "size": size, "dtype": str(dtype).replace("torch.", ""), "compile_seconds": compile_s,
            "eager_forward_seconds": eager_s, "compiled_forward_seconds": compiled_s,
            "compiled_speedup": eager_s / compiled_s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="tiny,cpu-4x")
    p.add_argument("--sizes", default="64,128,256")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=4, help="training batch size")
    p.add_argument("--matmul-size", type=int, default=1024, help="n of the n x n matmul that measures the peak")
    p.add_argument("--bf16-max-size", type=int, default=64,
                   help="largest image size run in bf16 (bf16 is very slow on CPUs without bf16 kernels)")
    p.add_argument("--compile", default="", help="comma list of sizes at which to also time torch.compile'd "
                   "forward passes (compiling takes a minute per size and dtype)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "unet_speed.json")
    args = p.parse_args()
    dtypes = [getattr(torch, d) for d in args.dtypes.split(",")]
    peaks = {str(d).replace("torch.", ""): matmul_peak(d, args.repeats, args.matmul_size) for d in dtypes}
    rows = []
    for preset in args.presets.split(","):
        for size in map(int, args.sizes.split(",")):
            for dtype in dtypes:
                if dtype == torch.bfloat16 and size > args.bf16_max_size:
                    continue
                row = bench(preset, size, dtype, args.repeats, args.batch)
                row["forward_fraction_of_matmul_peak"] = row["forward_gflop_per_s"] / peaks[row["dtype"]]
                row["train_fraction_of_matmul_peak"] = row["train_gflop_per_s"] / peaks[row["dtype"]]
                rows.append(row)
                print(json.dumps(row), flush=True)
    compiled_rows = []
    if args.compile:
        for preset in args.presets.split(","):
            for size in map(int, args.compile.split(",")):
                for dtype in dtypes:
                    compiled_rows.append(bench_compiled(preset, size, dtype, args.repeats))
                    print(json.dumps(compiled_rows[-1]), flush=True)
    result = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
              "torch": torch.__version__, "onednn_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
              "matmul_peak_gflop_per_s": peaks, "repeats": args.repeats, "results": rows,
              "compiled": compiled_rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({"matmul_peak_gflop_per_s": peaks, "written": str(args.out)}))


if __name__ == "__main__":
    main()
