"""16x on photos: the shipped cascade (sr3-4x twice, no augmentation) vs bicubic 16x and SPAN x4 twice.

For each photo of ``--data`` whose shorter side is at least 512 px: HR = its central
512x512 crop, LR = ``sr3.degradation.downsample(HR, 16)`` rounded to 8 bits (32x32 px,
as ``sr3 evaluate`` makes LR inputs).  Methods:

* ``bicubic``: ``sr3.degradation.upsample(LR, 16)``;
* ``span2``: SPAN x4 (benchmarks/peers.py, ncnn CPU) applied twice, 8-bit between passes;
* ``sr3_cascade``: ``sr3 upscale --scale 16``'s method (sr3/weights/cascade-16x: sampling
  settings from its cascade.json unless --steps is given), seed = image index.

Per image: PSNR (RGB and Y, border 16), ST-LPIPS (alex; sr3/stlpips.py), NIQE of the
512 px output (sr3/niqe.py), seconds; for the cascade also consistency (SR3 Sec. 4.2,
MSE on [0, 255]) of stage 1 against LR (4x), of stage 2 against stage 1 (4x), and of
the result against LR (16x).  Also writes one chain figure (LR | stage 1 | stage 2 | HR).
Prints JSON (per-image rows and means), also written to ``--out``.

    python benchmarks/cascade16x.py --data ../shared/data/photos/val --limit 6 \\
        --out benchmarks/results/cascade16x.json --figure docs/img/cascade16x-chain.png
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).parent))
from peers import cpu_name, load_peer  # noqa: E402  (benchmarks/ is not a package)

from sr3.degradation import downsample, upsample  # noqa: E402
from sr3.atomic import atomic_write_text  # noqa: E402
from sr3.imageio import list_images, load_image, pil_to_tensor, save_image, tensor_to_pil  # noqa: E402
from sr3.methods import MethodOptions, build_method  # noqa: E402
from sr3.metrics import consistency, psnr  # noqa: E402
from sr3.niqe import niqe  # noqa: E402
from sr3.stlpips import load_stlpips  # noqa: E402

HR_SIDE, SCALE = 512, 16


def central_crop(img: Image.Image, side: int) -> Image.Image:
    left, top = (img.width - side) // 2, (img.height - side) // 2
    return img.crop((left, top, left + side, top + side))


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], rounded to 8 bits as a saved PNG would be."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round() / 255.0


def chain_figure(lr, stage1, stage2, hr, path: Path) -> None:
    """LR | stage 1 | stage 2 | HR, each shown at 512 px (nearest-neighbour enlargement, so pixels stay visible)."""
    panels = [tensor_to_pil(t * 2 - 1).resize((HR_SIDE, HR_SIDE), Image.NEAREST) for t in (lr, stage1, stage2, hr)]
    labels = ["LR 32 px", "stage 1: 4x (128 px)", "stage 2: 16x (512 px)", "HR 512 px"]
    gap, band = 8, 24
    canvas = Image.new("RGB", (4 * HR_SIDE + 3 * gap, HR_SIDE + band), "white")
    draw = ImageDraw.Draw(canvas)
    for k, (panel, label) in enumerate(zip(panels, labels)):
        x = k * (HR_SIDE + gap)
        canvas.paste(panel, (x, band))
        draw.text((x + 4, 5), label, fill="black")
    save_image(canvas, path)


def scores(sr: torch.Tensor, hr01: torch.Tensor, lr01: torch.Tensor, seconds: float, stlpips) -> dict:
    """Metrics of one 16x output [1, 3, 512, 512] in [0, 1] against its HR crop and LR input."""
    return {
        "psnr_rgb": float(psnr(sr, hr01, border=SCALE)[0]),
        "psnr_y": float(psnr(sr, hr01, border=SCALE, y_channel=True)[0]),
        "stlpips_alex": float(stlpips(sr, hr01)[0]),
        "niqe": niqe(sr[0]),
        "consistency_16x": float(consistency(sr, lr01, SCALE)[0]),
        "seconds": seconds,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="folder of photos (those >= 512 px on the short side are used)")
    p.add_argument("--limit", type=int, default=6, help="use the first N eligible photos (sorted by name), >= 1")
    p.add_argument("--steps", type=int, default=None, help="override every stage's steps (default: cascade.json)")
    p.add_argument("--no-span", action="store_true", help="skip SPAN x4 twice (its ncnn packages are optional)")
    p.add_argument("--out", type=Path, required=True, help="JSON result file (written atomically)")
    p.add_argument("--figure", type=Path, help="write the chain figure of the first image here")
    args = p.parse_args()
    threads = torch.get_num_threads()
    eligible = [f for f in list_images([args.data]) if min(Image.open(f).size) >= HR_SIDE]
    files = eligible[:args.limit]
    sampling = {"steps": args.steps} if args.steps else {}
    cascade = build_method("sr3", MethodOptions(scale=SCALE, sampling=sampling)).cascade
    stlpips = load_stlpips("alex")
    rows, lrs = [], []
    for index, path in enumerate(files):
        hr = pil_to_tensor(central_crop(load_image(path).convert("RGB"), HR_SIDE))[None]  # [-1, 1]
        hr01 = (hr + 1) / 2
        lr01 = to_unit(downsample(hr, SCALE))
        lr = lr01 * 2 - 1
        outputs, seconds = {}, {}
        t0 = time.perf_counter()
        outputs["bicubic"] = to_unit(upsample(lr, SCALE))
        seconds["bicubic"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        stage1, stage2 = cascade.upscale_stages(lr, [index])
        seconds["sr3_cascade"] = time.perf_counter() - t0
        stage1, outputs["sr3_cascade"] = to_unit(stage1), to_unit(stage2)
        row = {"image": path.name, "methods": {}}
        for name, sr in outputs.items():
            row["methods"][name] = scores(sr, hr01, lr01, seconds[name], stlpips)
        row["methods"]["sr3_cascade"].update({
            "consistency_stage1_vs_lr": float(consistency(stage1, lr01, 4)[0]),
            "consistency_stage2_vs_stage1": float(consistency(outputs["sr3_cascade"], stage1, 4)[0]),
        })
        rows.append(row)
        lrs.append((lr, lr01, hr01))
        print(json.dumps(row), file=sys.stderr, flush=True)
        if index == 0 and args.figure:
            chain_figure(lr01[0], stage1[0], outputs["sr3_cascade"][0], hr01[0], args.figure)
    if not args.no_span:  # after all torch work: ncnn's OpenMP threads slowed torch's when interleaved
        span = load_peer("span", threads)
        span(tensor_to_pil(lrs[0][0][0]))  # warm-up, untimed
        for row, (lr, lr01, hr01) in zip(rows, lrs):
            t0 = time.perf_counter()
            twice = span(span(tensor_to_pil(lr[0])).convert("RGB"))  # 8-bit between the passes
            seconds = time.perf_counter() - t0
            sr = pil_to_tensor(twice.convert("RGB"))[None].add(1).div(2)
            row["methods"]["span2"] = scores(sr, hr01, lr01, seconds, stlpips)
    names = list(rows[0]["methods"])
    reference = {"niqe_hr": float(np.mean([niqe(h[0]) for _, _, h in lrs]))}
    means = {n: {k: float(np.mean([r["methods"][n][k] for r in rows])) for k in rows[0]["methods"][n]} for n in names}
    result = {
        "cpu": cpu_name(), "cpu_count": os.cpu_count(), "torch_threads": threads,
        "data": str(args.data), "eligible_images": len(eligible), "n_images": len(rows),
        "protocol": f"HR = central {HR_SIDE} px crop; LR = sr3.degradation.downsample(HR, {SCALE}), 8-bit; "
                    f"metrics on 8-bit outputs, PSNR border {SCALE}",
        "cascade": "sr3/weights/cascade-16x (sr3-4x twice, no conditioning augmentation)",
        "cascade_sampling": [dict(vars(st.settings.sampling)) for st in cascade.stages],
        "mean": means, "reference": reference, "per_image": rows,
    }
    if any(not math.isfinite(v) for m in means.values() for v in m.values()):
        print("cascade16x: some mean is not finite (NIQE is NaN below 96 px)", file=sys.stderr)
    text = json.dumps(result, indent=2)
    atomic_write_text(args.out, text + "\n")
    print(text)


if __name__ == "__main__":
    main()
