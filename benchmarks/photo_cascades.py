"""8x and 16x on photos: photo cascades vs bicubic and SPAN x4 twice (sr3/photo_protocol.py).

For each photo of ``--data`` whose shorter side is at least ``--hr-side``: HR = its central
crop, LR = ``sr3.degradation.downsample(HR, scale)`` rounded to 8 bits.  Methods:

* ``bicubic``: ``sr3.degradation.upsample(LR, scale)``;
* ``span2``: SPAN x4 (benchmarks/peers.py, ncnn CPU) applied twice, 8-bit between passes; at
  ``--scale 8`` its 16x result is brought to 8x with ``sr3.degradation.downsample(., 2)``
  (SPAN ships x4 only);
* every ``--cascade NAME=DIR``: the cascade's SR stages with its cascade.json settings
  (``--steps`` overrides every stage), seed = image index.

Per image: PSNR (RGB and Y, border = scale), ST-LPIPS (alex), NIQE, consistency against the
LR, seconds; for cascades also each stage's consistency against its own input.  Writes
the chain figure (LR | stage 1 | ... | HR) of the first image for the first cascade.
Prints JSON (per-image rows and means), also written to ``--out``; the table and paired
bootstrap intervals come from benchmarks/photo_cascades_table.py.

    python benchmarks/photo_cascades.py --data ../shared/data/photos/val --scale 16 --hr-side 512 --limit 8 \\
        --cascade sr3=sr3/weights/cascade-16x --out benchmarks/results/cascade16x.json \\
        --figure docs/img/cascade16x-chain.png
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

from sr3.atomic import atomic_write_text  # noqa: E402
from sr3.cascade import load_cascade  # noqa: E402
from sr3.degradation import downsample, upsample  # noqa: E402
from sr3.imageio import pil_to_tensor, save_image, tensor_to_pil  # noqa: E402
from sr3.metrics import consistency  # noqa: E402
from sr3.niqe import niqe  # noqa: E402
from sr3.photo_protocol import photo_pairs, photo_scores, to_unit  # noqa: E402
from sr3.stlpips import load_stlpips  # noqa: E402

FIGURE_SIDE = 512


def chain_figure(panels: list[torch.Tensor], labels: list[str], path: Path) -> None:
    """Images [3, h, w] in [0, 1] side by side, each shown at FIGURE_SIDE px (nearest-neighbour enlargement,
    so pixels stay visible), with a label above each."""
    shown = [tensor_to_pil(t * 2 - 1).resize((FIGURE_SIDE, FIGURE_SIDE), Image.NEAREST) for t in panels]
    gap, band = 8, 24
    canvas = Image.new("RGB", (len(shown) * (FIGURE_SIDE + gap) - gap, FIGURE_SIDE + band), "white")
    draw = ImageDraw.Draw(canvas)
    for k, (panel, label) in enumerate(zip(shown, labels)):
        x = k * (FIGURE_SIDE + gap)
        canvas.paste(panel, (x, band))
        draw.text((x + 4, 5), label, fill="black")
    save_image(canvas, path)


def parse_cascades(specs: list[str]) -> dict[str, Path]:
    cascades = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or not name or name in ("bicubic", "span2") or name in cascades:
            raise SystemExit(f"--cascade {spec!r}: give NAME=DIR with a new name other than bicubic / span2")
        cascades[name] = Path(folder)
    return cascades


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="folder of photos")
    p.add_argument("--scale", type=int, choices=[8, 16], default=16)
    p.add_argument("--hr-side", type=int, default=512, help="HR crop side (photos smaller than it are left out)")
    p.add_argument("--limit", type=int, default=8, help="use the first N eligible photos (sorted by name), >= 1")
    p.add_argument("--cascade", action="append", default=[], help="NAME=DIR of a cascade to run (repeatable)")
    p.add_argument("--steps", type=int, default=None, help="override every stage's steps (default: cascade.json)")
    p.add_argument("--no-span", action="store_true", help="skip SPAN x4 twice (its ncnn packages are optional)")
    p.add_argument("--out", type=Path, required=True, help="JSON result file (written atomically)")
    p.add_argument("--figure", type=Path, help="write the first cascade's chain figure of the first image here")
    args = p.parse_args()
    threads = torch.get_num_threads()
    scale = args.scale
    pairs, too_small = photo_pairs(args.data, args.hr_side, scale, args.limit)
    sampling = {"steps": args.steps} if args.steps else {}
    folders = parse_cascades(args.cascade)
    cascades = {name: load_cascade(folder, sampling_overrides=sampling, bf16=True) for name, folder in folders.items()}
    for name, cascade in cascades.items():
        if cascade.total_scale != scale:
            raise SystemExit(f"--cascade {name}: it upscales {cascade.total_scale}x, not {scale}x")
    stlpips = load_stlpips("alex")
    warm = pairs[0].lr[..., :8, :8] * 2 - 1  # first calls pay for kernel set-up; keep that out of the timings
    upsample(warm, scale)
    for cascade in cascades.values():
        cascade.upscale(warm, [0])
    rows = []
    for index, pair in enumerate(pairs):
        lr = pair.lr * 2 - 1
        row = {"image": pair.name, "methods": {}}
        t0 = time.perf_counter()
        sr = to_unit(upsample(lr, scale))
        seconds = time.perf_counter() - t0
        row["methods"]["bicubic"] = {**photo_scores(sr, pair, scale, stlpips), "seconds": seconds}
        for name, cascade in cascades.items():
            t0 = time.perf_counter()
            stages = [to_unit(x) for x in cascade.upscale_stages(lr, [index])]
            seconds = time.perf_counter() - t0
            inputs = [pair.lr] + stages[:-1]
            row["methods"][name] = {
                **photo_scores(stages[-1], pair, scale, stlpips), "seconds": seconds,
                **{f"consistency_stage{k + 1}": float(consistency(out, inp, st.config.data.scale)[0])
                   for k, (out, inp, st) in enumerate(zip(stages, inputs, cascade.sr_stages))}}
            if index == 0 and args.figure and name == next(iter(cascades)):
                sides = [s.shape[-1] for s in stages]
                labels = [f"LR {pair.lr.shape[-1]} px"] + [f"stage {k + 1}: {side} px" for k, side in enumerate(sides)]
                chain_figure([pair.lr[0]] + [s[0] for s in stages] + [pair.hr[0]],
                             labels + [f"HR {pair.hr.shape[-1]} px"], args.figure)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    if not args.no_span:  # after all torch work: ncnn's OpenMP threads slowed torch's when interleaved
        span = load_peer("span", threads)
        span(tensor_to_pil(pairs[0].lr[0] * 2 - 1))  # warm-up, untimed
        for row, pair in zip(rows, pairs):
            t0 = time.perf_counter()
            twice = span(span(tensor_to_pil(pair.lr[0] * 2 - 1)).convert("RGB"))  # 8-bit between the passes
            sr = pil_to_tensor(twice.convert("RGB"))[None]
            if scale == 8:
                sr = downsample(sr, 2)
            seconds = time.perf_counter() - t0
            row["methods"]["span2"] = {**photo_scores(to_unit(sr), pair, scale, stlpips), "seconds": seconds}
    names = list(rows[0]["methods"])
    means = {n: {k: float(np.mean([r["methods"][n][k] for r in rows])) for k in rows[0]["methods"][n]} for n in names}
    result = {
        "cpu": cpu_name(), "cpu_count": os.cpu_count(), "torch_threads": threads,
        "data": str(args.data), "n_images": len(rows), "photos_too_small": too_small, "scale": scale,
        "protocol": f"HR = central {args.hr_side} px crop; LR = sr3.degradation.downsample(HR, {scale}), 8-bit; "
                    f"metrics on 8-bit outputs, PSNR border {scale}" + ("; span2 at 8x = SPAN x4 twice, then "
                                                                        "downsample 2" if scale == 8 else ""),
        "cascades": {name: {"dir": str(folders[name]), "sampling": [dict(vars(st.settings.sampling)) for st in c.stages],
                            "aug_levels": [st.settings.aug_level for st in c.stages]}
                     for name, c in cascades.items()},
        "reference": {"niqe_hr": float(np.mean([niqe(pair.hr[0]) for pair in pairs]))},
        "mean": means, "per_image": rows,
    }
    if any(not math.isfinite(v) for m in means.values() for v in m.values()):
        print("photo_cascades: some mean is not finite (NIQE is NaN below 96 px)", file=sys.stderr)
    text = json.dumps(result, indent=2)
    atomic_write_text(args.out, text + "\n")
    print(text)


if __name__ == "__main__":
    main()
