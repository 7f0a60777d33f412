"""The prepared GPU check: one command, under 8 minutes on one H100/H200, JSON out.

    python benchmarks/gpu_check.py                 # on a GPU machine -> benchmarks/results/gpu_check.json
    python benchmarks/gpu_check.py --smoke         # tiny mode on the CPU (tests/test_gpu_check.py runs it)

Phases (each timed, each skipped with a note once --budget-s is spent):

1. **train**: ``sr3.train.train`` itself (the real loop: data-loader workers, bf16
   autocast, fused AdamW, foreach EMA, channels-last, no per-step sync) on the
   ``natural-64-256`` preset (SR3's 64->256 U-Net) with synthetic images, for
   --steps steps at --batch images per GPU.  Reports steady-state images/s (log lines
   after the first --warmup-steps), the FLOPs of one training step counted by torch's
   FlopCounterMode, achieved TFLOP/s, its share of the card's dense bf16 peak
   (spec sheet, by device name) and of a bf16 matmul measured in the same run, and
   peak GPU memory.  If the batch does not fit, it is halved (noted).
2. **ddp**: the same loop under ``torchrun --nproc_per_node <GPUs present>`` (NCCL; on
   the CPU 2 gloo processes), images/s.
3. **sampling**: 64 images at 100 DDPM steps in one batch (batched, not batch-invariant).
4. **fid**: FID/KID on 1,000 generated samples (20 DDIM steps) against the synthetic HR
   images, accumulated batch by batch (sr3/incremental_scores.py).  The feature network
   is a seeded random CNN unless --fid-weights names torch-fidelity's Inception weights;
   with a model trained for a few hundred steps on synthetic data the number checks the
   pipeline and its speed, not image quality.

Synthetic images (smooth random colour waves plus noise) need no data on the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing sr3

from sr3.atomic import write_json
from sr3.checkpoint import load_model_dir, save_model_dir
from sr3.data import Batch, make_sr_pair
from sr3.config import SamplingConfig
from sr3.diffusion import Conditioning, make_denoiser
from sr3.incremental_scores import IncrementalDistributionScores, generate_and_score
from sr3.sampling import sample
from sr3.metrics import InceptionExtractor, RandomConvExtractor
from sr3.presets import PRESETS
from sr3.schedules import training_gammas
from sr3.step_loader import step_generator
from sr3.train import make_conditioning, train
from sr3.unet import UNet

RESULTS = Path(__file__).parent / "results"
# Dense bf16 tensor-core peaks from NVIDIA's spec sheets (TFLOP/s, without sparsity).
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.0, "A100": 312.0}


class SyntheticImages:
    """Random smooth colour waves with noise, [B, 3, S, S] in [-1, 1], drawn from the generator
    like every sr3 dataset (so the training loop's determinism holds here too)."""

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return 1 << 30

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        s = self.size
        grid = torch.linspace(0, 1, s)
        y, x = grid[:, None], grid[None, :]
        f = torch.rand(batch_size, 3, 4, generator=generator)
        waves = torch.sin(2 * math.pi * (1 + 5 * f[..., 0, None, None]) * x + 6 * f[..., 1, None, None]) * \
            torch.cos(2 * math.pi * (1 + 5 * f[..., 2, None, None]) * y + 6 * f[..., 3, None, None])
        noise = 0.1 * torch.randn(batch_size, 3, s, s, generator=generator)
        return Batch(hr=(0.8 * waves + noise).clamp(-1, 1))


def settings(smoke: bool) -> dict:
    if smoke:
        return {"preset": "tiny", "steps": 6, "warmup_steps": 2, "batch": 4, "ddp_steps": 2, "sample_images": 4,
                "sample_steps": 3, "fid_samples": 16, "fid_steps": 2, "fid_batch": 8, "workers": 1}
    # Sized from the first H200 run (benchmarks/results/gpu_check*.json): ~70 s of start-up and cuDNN
    # autotuning per training phase, 0.35 s per step, 0.69 s per sampling step of 64 images.
    return {"preset": "natural-64-256", "steps": 100, "warmup_steps": 40, "batch": 8, "ddp_steps": 30,
            "sample_images": 64, "sample_steps": 100, "fid_samples": 1000, "fid_steps": 20, "fid_batch": 64,
            "workers": 4}


def train_config(preset: str, steps: int, batch: int, workers: int, log_every: int, compile_model: bool):
    config = PRESETS[preset]
    return config.replace(
        data=dataclasses.replace(config.data, num_workers=workers),
        train=dataclasses.replace(config.train, steps=steps, batch_size=batch, log_every=log_every, sample_every=0,
                                  checkpoint_every=10 ** 9, warmup_steps=10, compile=compile_model))


def steady_rate(log_path: Path, batch: int, after_step: int) -> float:
    """Images/s between the first log line at or after ``after_step`` and the last one."""
    lines = [json.loads(x) for x in log_path.read_text().splitlines()]
    first = next(x for x in lines if x["step"] >= after_step)
    last = lines[-1]
    if last["step"] == first["step"]:
        return last["images_per_s"]
    return (last["step"] - first["step"]) * batch / (last["elapsed_s"] - first["elapsed_s"])


def training_step_flops(config, device: torch.device, batch: int) -> int:
    """FLOPs (multiply-add = 2) of one forward + backward on ``batch`` images, as FlopCounterMode counts."""
    torch.manual_seed(0)
    model = UNet(config.model).to(device)
    hr, cond = make_conditioning(SyntheticImages(config.data.crop_size).sample(batch, torch.Generator()), config)
    gammas = training_gammas(config.diffusion)
    with FlopCounterMode(display=False) as counter:
        denoiser = make_denoiser(model, config.diffusion, cond.to(device), bf16=True, batched=True)
        loss = denoiser.loss(hr.to(device), gammas, torch.Generator().manual_seed(0))
        loss.backward()
    return counter.get_total_flops()


def matmul_tflops(device: torch.device, n: int) -> float:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t, reps = time.perf_counter(), 10
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e12


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def spec_peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in BF16_PEAK_TFLOPS.items():
        if key in name:
            return value
    return None


def phase_train(s: dict, device: torch.device, work: Path, compile_model: bool) -> dict:
    batch, notes = s["batch"], []
    while True:
        config = train_config(s["preset"], s["steps"], batch, s["workers"], max(1, s["steps"] // 20), compile_model)
        out = work / f"train_b{batch}"
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        try:
            t = time.perf_counter()
            train(config, SyntheticImages(config.data.crop_size), out, device=device, progress=False)
            seconds = time.perf_counter() - t
            break
        except torch.cuda.OutOfMemoryError:
            if batch == 1:
                raise
            notes.append(f"batch {batch} ran out of memory; halved")
            batch //= 2
            torch.cuda.empty_cache()
    rate = steady_rate(out / "log.jsonl", batch, s["warmup_steps"])
    flops = training_step_flops(config, device, 1) * batch  # per step; counted on one image, times the batch
    achieved = flops / batch * rate / 1e12
    peak = spec_peak(device)
    measured = matmul_tflops(device, 8192 if device.type == "cuda" else 512)
    card = json.loads((out / "model" / "training.json").read_text())
    result = {"preset": s["preset"], "parameters": card["parameters"],
              "crop": config.data.crop_size, "batch_per_gpu": batch, "steps": s["steps"], "wall_s": round(seconds, 2),
              "images_per_s": round(rate, 3), "flops_per_image_train_step": flops // batch,
              "achieved_tflops": round(achieved, 3), "bf16_spec_peak_tflops": peak,
              "share_of_bf16_spec_peak": None if peak is None else round(achieved / peak, 4),
              "matmul_tflops_measured": round(measured, 2), "share_of_measured_matmul": round(achieved / measured, 4),
              "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
              if device.type == "cuda" else None, "notes": notes, "model_dir": str(out / "model")}
    return result


def phase_ddp(s: dict, device: torch.device, work: Path, batch: int, compile_model: bool) -> dict:
    n = torch.cuda.device_count() if device.type == "cuda" else 2
    out = work / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
           str(Path(__file__).resolve()), "--ddp-worker", str(out), "--preset", s["preset"],
           "--steps", str(s["ddp_steps"]), "--batch", str(batch * n), "--workers", str(s["workers"])]
    if compile_model:
        cmd.append("--compile")
    root = str(Path(__file__).resolve().parents[1])  # sr3 importable without an install, as in this process
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    if device.type == "cpu":
        env["OMP_NUM_THREADS"] = "1"
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        return {"processes": n, "error": proc.stderr[-3000:]}
    rate = steady_rate(out / "log.jsonl", batch * n, min(s["warmup_steps"], s["ddp_steps"]))
    return {"processes": n, "backend": "nccl" if device.type == "cuda" else "gloo", "batch_total": batch * n,
            "steps": s["ddp_steps"], "wall_s_with_startup": round(seconds, 2), "images_per_s": round(rate, 3)}


def batched_sample(model, config, lr_up: torch.Tensor, seeds: list[int], steps: int, sampler: str,
                   schedule: str, device: torch.device) -> torch.Tensor:
    """One batch through the sampler without batch invariance (the fast path for GPUs)."""
    cond = Conditioning(lr_upsampled=lr_up.to(device))
    settings = SamplingConfig(sampler=sampler, steps=steps, schedule=schedule, tile=0, network_batching="batched")
    with torch.inference_mode():
        return sample(model, config, cond, lr_up.shape, settings, seeds, device=device, bf16=True)


def low_res_inputs(config, count: int, stream: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(hr, lr upsampled) of ``count`` synthetic images."""
    batch = SyntheticImages(config.data.crop_size).sample(count, step_generator(0, stream, 0))
    _, lr_up = make_sr_pair(batch, config.data.scale)
    return batch.hr, lr_up


def phase_sampling(s: dict, device: torch.device, model_dir: str) -> dict:
    model, config = load_model_dir(model_dir, device)
    _, lr_up = low_res_inputs(config, s["sample_images"], 1)
    batched_sample(model, config, lr_up[:2], [0, 1], 2, "ddpm", "sr3", device)  # warm-up (kernel selection)
    sync(device)
    t = time.perf_counter()
    batched_sample(model, config, lr_up, list(range(len(lr_up))), s["sample_steps"], "ddpm", "sr3", device)
    sync(device)
    seconds = time.perf_counter() - t
    return {"images": len(lr_up), "steps": s["sample_steps"], "sampler": "ddpm", "seconds": round(seconds, 3),
            "images_per_s": round(len(lr_up) / seconds, 3),
            "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            if device.type == "cuda" else None}


def phase_fid(s: dict, device: torch.device, model_dir: str, fid_weights: str | None) -> dict:
    model, config = load_model_dir(model_dir, device)
    extractor = InceptionExtractor(fid_weights) if fid_weights else RandomConvExtractor(dim=64)
    scores = IncrementalDistributionScores(extractor, device=device)
    n, b = s["fid_samples"], s["fid_batch"]
    t = time.perf_counter()
    for start in range(0, n, b):  # the real side: synthetic HR images, streamed too
        scores.update(low_res_inputs(config, min(b, n - start), 100 + start)[0], real=True)

    def generate(seeds, _labels):
        _, lr_up = low_res_inputs(config, len(seeds), 100 + seeds[0])
        return batched_sample(model, config, lr_up, seeds, s["fid_steps"], "ddim", "logsnr", device)
    result = generate_and_score(generate, torch.zeros(n, dtype=torch.long), scores, batch_size=b)
    sync(device)
    seconds = time.perf_counter() - t
    return {"samples": n, "sampling_steps": s["fid_steps"], "sampler": "ddim", "batch": b,
            "seconds": round(seconds, 2), "fid": result.fid, "kid_mean": result.kid_mean,
            "extractor": result.extractor, "notes": result.notes}


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(device)}"
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return f"{model} (CPU, {torch.get_num_threads()} threads)"


def ddp_worker(args) -> None:
    """One torchrun process of the ddp phase: the same training loop, rank and world from torchrun."""
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if torch.cuda.is_available() \
        else torch.device("cpu")
    config = train_config(args.preset, args.steps, args.batch, args.workers, max(1, args.steps // 10), args.compile)
    train(config, SyntheticImages(config.data.crop_size), Path(args.ddp_worker), device=device, progress=False)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny preset and sizes, runs on the CPU in seconds")
    p.add_argument("--out", type=Path, help="JSON path (default: benchmarks/results/gpu_check[_smoke].json)")
    p.add_argument("--batch", type=int, help="training images per GPU (default 8; 4 with --smoke)")
    p.add_argument("--steps", type=int, help="training steps (default 100; 6 with --smoke)")
    p.add_argument("--compile", action="store_true", help="torch.compile the U-Net for training (adds minutes)")
    p.add_argument("--fid-weights", help="torch-fidelity's Inception weights file for standard FID features")
    p.add_argument("--budget-s", type=float, default=450.0, help="skip the phases that start after this many s")
    p.add_argument("--phases", default="train,ddp,sampling,fid",
                   help="comma-separated phases to run, in this order (without train, sampling and fid use an "
                        "untrained model of the preset: their timings hold, the FID value means nothing)")
    # internal: one process of the ddp phase
    p.add_argument("--ddp-worker", help=argparse.SUPPRESS)
    p.add_argument("--preset", help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.ddp_worker:
        ddp_worker(args)
        return 0
    s = settings(args.smoke)
    s.update({k: v for k, v in (("batch", args.batch), ("steps", args.steps)) if v is not None})
    device = torch.device("cuda") if torch.cuda.is_available() and not args.smoke else torch.device("cpu")
    if device.type == "cpu" and not args.smoke:
        print("no CUDA device: run with --smoke for the CPU check", file=sys.stderr)
        return 2
    out = args.out or RESULTS / ("gpu_check_smoke.json" if args.smoke else "gpu_check.json")
    report = {"device": device_description(device), "torch": torch.__version__, "smoke": args.smoke,
              "command": "python benchmarks/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sr3_gpu_check_") as tmp:
        work = Path(tmp)
        def model_dir() -> str:
            if "train" in report:
                return report["train"]["model_dir"]
            report["untrained_model"] = "sampling and fid ran an untrained (randomly initialised) model"
            if not (work / "untrained").exists():
                config = PRESETS[s["preset"]]
                torch.manual_seed(0)
                save_model_dir(work / "untrained", UNet(config.model), config)
            return str(work / "untrained")

        phases = {"train": lambda: phase_train(s, device, work, args.compile),
                  "ddp": lambda: phase_ddp(s, device, work, report.get("train", {}).get("batch_per_gpu", s["batch"]),
                                           args.compile),
                  "sampling": lambda: phase_sampling(s, device, model_dir()),
                  "fid": lambda: phase_fid(s, device, model_dir(), args.fid_weights)}
        chosen = args.phases.split(",")
        unknown = set(chosen) - set(phases)
        if unknown:
            print(f"--phases: unknown {sorted(unknown)}; choose from {','.join(phases)}", file=sys.stderr)
            return 2
        for name, run in ((n, phases[n]) for n in chosen):
            if time.perf_counter() - t0 > args.budget_s:
                report[name] = {"skipped": f"time budget of {args.budget_s:g} s spent"}
                continue
            t = time.perf_counter()
            report[name] = run()
            report[name]["phase_s"] = round(time.perf_counter() - t, 2)
            print(json.dumps({name: report[name]}), flush=True)
            # after every phase, so a run stopped by an outer time limit keeps what it measured
            write_json(out, {k: ({n: x for n, x in v.items() if n != "model_dir"} if k == "train" else v)
                             for k, v in report.items()})
            if device.type == "cuda":
                torch.cuda.empty_cache()
        report.get("train", {}).pop("model_dir", None)
    report["total_s"] = round(time.perf_counter() - t0, 2)
    write_json(out, report)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
