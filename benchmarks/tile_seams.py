"""Do tiles leave seams?  The default model's tiled output against its whole-image output, on real photos.

For each photo (LR made as ``sr3 evaluate`` makes it), the shipped default model upscales the
LR image twice with the same seed: with ``--tile`` output pixels per tile (small tiles put many
tile borders in each image) and with ``tile=0`` (one network pass over the whole image).  A
seam is an edge the tiling adds, so the measure is the mean absolute neighbour difference
(horizontal across vertical tile borders, vertical across horizontal ones) inside the
blended overlap bands and on the two lines where a tile border can cut, tiled over untiled:
1.0 means the tiling adds no edge energy there.
The same ratio over the whole image, and the PSNR of tiled against untiled, are printed too.

    python benchmarks/tile_seams.py --data ../shared/data/photos/val --limit 8 --tile 256 --out benchmarks/results/tile_seams.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

import sr3
from sr3.atomic import atomic_write_text
from sr3.evaluate import collect_samples, prepare_pair
from sr3.imageio import pil_to_tensor
from sr3.metrics import psnr
from sr3.tiling import tile_starts


def band_mask(starts: list[int], overlap: int, length: int) -> torch.Tensor:
    """Positions (between pixel i and i+1) inside the overlap band that begins at each tile start > 0."""
    mask = torch.zeros(length - 1, dtype=torch.bool)
    for start in starts:
        if start > 0:
            mask[start:min(start + overlap, length - 1)] = True
    return mask


def line_mask(starts: list[int], overlap: int, length: int) -> torch.Tensor:
    """The two lines where a tile border can cut: entering the later tile (start - 1 | start) and
    leaving the earlier one (start + overlap - 1 | start + overlap)."""
    mask = torch.zeros(length - 1, dtype=torch.bool)
    for start in starts:
        if start > 0:
            mask[start - 1] = True
            mask[min(start + overlap - 1, length - 2)] = True
    return mask


def edge_energy(y: torch.Tensor, cols: torch.Tensor, rows: torch.Tensor) -> float:
    dx = (y[..., :, 1:] - y[..., :, :-1]).abs()[..., cols]
    dy = (y[..., 1:, :] - y[..., :-1, :]).abs()[..., rows, :]
    return float(torch.cat([dx.flatten(), dy.flatten()]).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--limit", type=int, default=8)
    p.add_argument("--tile", type=int, default=256, help="output pixels per tile for the tiled run")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    pipe = sr3.load()
    overlap = pipe.sampling.overlap
    rows = []
    for sample in collect_samples(args.data, limit=args.limit):
        _, lr_image = prepare_pair(sample, pipe.scale)
        lr = pil_to_tensor(lr_image)[None]
        tiled = pipe.upscale_tensor(lr, seed=0, tile=args.tile)
        whole = pipe.upscale_tensor(lr, seed=0, tile=0)
        height, width = tiled.shape[-2:]
        tops, lefts = tile_starts(height, args.tile, overlap), tile_starts(width, args.tile, overlap)
        cols, rws = band_mask(lefts, overlap, width), band_mask(tops, overlap, height)
        line_c, line_r = line_mask(lefts, overlap, width), line_mask(tops, overlap, height)
        everywhere_c, everywhere_r = torch.ones(width - 1, dtype=torch.bool), torch.ones(height - 1, dtype=torch.bool)
        rows.append({"image": sample.key, "output": [width, height], "tiles": len(tops) * len(lefts),
                     "band_edge_ratio": edge_energy(tiled, cols, rws) / edge_energy(whole, cols, rws),
                     "line_edge_ratio": edge_energy(tiled, line_c, line_r) / edge_energy(whole, line_c, line_r),
                     "image_edge_ratio": edge_energy(tiled, everywhere_c, everywhere_r)
                     / edge_energy(whole, everywhere_c, everywhere_r),
                     "psnr_tiled_vs_whole": float(psnr((tiled + 1) / 2, (whole + 1) / 2))})
        print(json.dumps(rows[-1]))
    result = {"model": "default (sr3/weights/sr3-refine-4x)", "sampling": pipe.sampling.__dict__, "tile": args.tile,
              "overlap": overlap, "data": str(args.data), "images": rows,
              "median_band_edge_ratio": statistics.median(r["band_edge_ratio"] for r in rows),
              "max_band_edge_ratio": max(r["band_edge_ratio"] for r in rows),
              "median_line_edge_ratio": statistics.median(r["line_edge_ratio"] for r in rows),
              "max_line_edge_ratio": max(r["line_edge_ratio"] for r in rows),
              "median_psnr_tiled_vs_whole": statistics.median(r["psnr_tiled_vs_whole"] for r in rows)}
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "images"}, indent=2))


if __name__ == "__main__":
    main()
