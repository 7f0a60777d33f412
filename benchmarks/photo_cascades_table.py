"""The README's 8x / 16x tables from benchmarks/photo_cascades.py's JSON, plus paired differences.

Prints the Markdown table (one row per method, in the file's order), then JSON: for each
pair ``--compare A B``, each metric's mean per-image difference ``A - B`` with a 95 %
percentile-bootstrap interval (sr3.metrics.bootstrap_ci, seed 0) and on how many images A
is better.

    python benchmarks/photo_cascades_table.py benchmarks/results/cascade16x.json \\
        --compare sr3 span2 --compare sr3 noaug
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sr3.metrics import bootstrap_ci
from sr3.photo_protocol import SCORE_DIRECTIONS

LABELS = {"bicubic": "bicubic", "span2": "SPAN x4 twice"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("result", type=Path, help="JSON written by benchmarks/photo_cascades.py")
    p.add_argument("--compare", nargs=2, action="append", default=[], metavar=("A", "B"),
                   help="methods to compare image by image (repeatable)")
    args = p.parse_args()
    result = json.loads(args.result.read_text())
    means, rows = result["mean"], result["per_image"]
    print("| method | PSNR RGB (dB) | PSNR Y (dB) | ST-LPIPS alex ↓ | NIQE ↓ | consistency ↓ | s / image |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, m in means.items():
        print(f"| {LABELS.get(name, name)} | {m['psnr_rgb']:.2f} | {m['psnr_y']:.2f} | {m['stlpips_alex']:.3f} "
              f"| {m['niqe']:.2f} | {m['consistency']:.2f} | {m['seconds']:.2f} |")
    paired = {}
    for a, b in args.compare:
        if a not in means or b not in means:
            raise SystemExit(f"--compare {a} {b}: the file has {', '.join(means)}")
        paired[f"{a} - {b}"] = {}
        for metric, direction in SCORE_DIRECTIONS.items():
            diff = [r["methods"][a][metric] - r["methods"][b][metric] for r in rows]
            mean, low, high = bootstrap_ci(diff)
            paired[f"{a} - {b}"][metric] = {"mean_difference": mean, "ci95": [low, high], "n": len(diff),
                                            "a_better_on": sum(d * direction > 0 for d in diff)}
    print(json.dumps({"cpu": result["cpu"], "n_images": result["n_images"], "paired": paired}, indent=2))


if __name__ == "__main__":
    main()
