"""Choose the default few-step sampling of a predict-and-refine model: quality per network evaluation.

For each sampling setting (sampler, steps, temperature) upscales the same crops and prints
JSON with, per setting: mean PSNR (RGB) to the HR crop, mean PSNR to the same model's
100-step DDIM output (how far the few-step sampler is from the many-step one; DDIM with
eta = 0 is deterministic given the seed, so this is a pixel-wise comparison), ST-LPIPS
(alex) to the HR crop, NIQE, and network evaluations per image.  The model's predictor
alone (its ``predictor/`` folder, the deterministic setting) is the first row.

Settings are chosen on crops of the *training* photos (shrunk 3x, as the README's
temperature was chosen), never on photos/val:

    python benchmarks/make_val_crops.py --data ../shared/data/photos/train --size 128 --shrink 3 --out runs/tune-crops128
    python benchmarks/few_steps.py --model sr3/weights/sr3-refine-4x --data runs/tune-crops128 --limit 12 --out benchmarks/results/few_steps.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

import sr3
from sr3.atomic import atomic_write_text
from sr3.evaluate import collect_samples, prepare_pair
from sr3.imageio import pil_to_tensor
from sr3.metrics import psnr
from sr3.niqe import niqe
from sr3.predict_refine import PREDICTOR_DIR
from sr3.stlpips import load_stlpips
from peers import cpu_name  # this folder

SETTINGS = [
    {"sampler": "ddim", "steps": 2}, {"sampler": "ddim", "steps": 4}, {"sampler": "dpmpp", "steps": 3},
    {"sampler": "ddpm", "steps": 4, "schedule": "logsnr"}, {"sampler": "ddpm", "steps": 2, "schedule": "sr3"},
    *({"sampler": "ddpm", "steps": n, "schedule": "train", "temperature": t} for n in (2, 3) for t in (1.0, 0.8)),
    {"sampler": "ddpm", "steps": 100}, {"sampler": "ddim", "steps": 100},
]
"""ddpm adds fresh noise at every step, so its few visited levels decide how much texture it commits to:
``logsnr`` puts the last levels near clean (little room for detail at 2-4 steps), ``train`` (the
training schedule respaced, DDIM's choice) and ``sr3`` stop at moderate noise before the last step."""
REFERENCE = {"sampler": "ddim", "steps": 100}


def name_of(setting: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in setting.items())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="HR crops (LR made by the evaluation degradation)")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    pipe = sr3.load(args.model, bf16=False)
    predictor = sr3.load(args.model / PREDICTOR_DIR, bf16=False)
    stlpips = load_stlpips("alex")
    pairs = [prepare_pair(s, 4) for s in collect_samples(args.data, None, args.limit or None)]
    hrs = [pil_to_tensor(hr)[None] for hr, _ in pairs]
    lrs = [pil_to_tensor(lr)[None] for _, lr in pairs]
    outputs: dict[str, list[torch.Tensor]] = {}
    seconds: dict[str, float] = {}
    evaluations: dict[str, int] = {}
    rows = [("predictor only", predictor, {})] + [(name_of(s), pipe, s) for s in SETTINGS]
    for name, model, setting in rows:
        t0 = time.perf_counter()
        outputs[name] = [model.upscale_tensor(lr, seed=0, tile=0, **setting) for lr in lrs]
        seconds[name] = time.perf_counter() - t0
        evaluations[name] = model.count_evaluations(*lrs[0].shape[-2:], model.settings(tile=0, **setting))
        print(f"{name}: {seconds[name]:.1f} s", file=sys.stderr)
    reference = outputs[name_of(REFERENCE)]

    def mean(values):
        values = [v for v in values if math.isfinite(v)]
        return sum(values) / len(values) if values else None

    result = {"cpu": cpu_name(), "load_average_at_end": os.getloadavg()[0], "model": str(args.model),
              "data": str(args.data), "n_images": len(pairs), "seed": 0, "reference": name_of(REFERENCE),
              "settings": {}}
    hr_unit = [(x + 1) / 2 for x in hrs]
    reference_unit = [(x + 1) / 2 for x in reference]
    with torch.no_grad():
        for name, images in outputs.items():
            unit = [(x + 1) / 2 for x in images]
            result["settings"][name] = {
                "network_evaluations": evaluations[name],
                "psnr_rgb": mean([float(psnr(u, h, border=4)) for u, h in zip(unit, hr_unit)]),
                "psnr_to_reference": mean([float(psnr(u, r, border=4)) for u, r in zip(unit, reference_unit)]),
                "stlpips_alex": mean([float(stlpips(u, h)) for u, h in zip(unit, hr_unit)]),
                "niqe": mean([niqe(u[0]) for u in unit]),
                "seconds": seconds[name]}
    text = json.dumps(result, indent=2)
    atomic_write_text(args.out, text + "\n")
    print(text)


if __name__ == "__main__":
    main()
