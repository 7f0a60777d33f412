"""The README's 16x table from benchmarks/cascade16x.py's JSON, plus paired differences with bootstrap CIs.

Prints the Markdown table, then JSON: for each metric, the mean per-image difference
``sr3_cascade - OTHER`` with a 95 % percentile-bootstrap interval (sr3.metrics.bootstrap_ci,
seed 0) and on how many images the cascade is better.

    python benchmarks/cascade16x_table.py benchmarks/results/cascade16x.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sr3.metrics import bootstrap_ci

LABELS = {"bicubic": "bicubic 16x", "span2": "SPAN x4 twice", "sr3_cascade": "sr3 shipped cascade (4x twice, no aug)"}
LOWER_IS_BETTER = {"psnr_rgb": False, "psnr_y": False, "stlpips_alex": True, "niqe": True, "consistency_16x": True}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("result", type=Path, help="JSON written by benchmarks/cascade16x.py")
    result = json.loads(p.parse_args().result.read_text())
    means, rows = result["mean"], result["per_image"]
    print("| method | PSNR RGB (dB) | PSNR Y (dB) | ST-LPIPS alex ↓ | NIQE ↓ | consistency ↓ | s / image |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, label in LABELS.items():
        if name in means:
            m = means[name]
            print(f"| {label} | {m['psnr_rgb']:.2f} | {m['psnr_y']:.2f} | {m['stlpips_alex']:.3f} | {m['niqe']:.2f} "
                  f"| {m['consistency_16x']:.2f} | {m['seconds']:.2f} |")
    paired = {}
    for other in ("bicubic", "span2"):
        if other not in means:
            continue
        paired[other] = {}
        for metric, lower in LOWER_IS_BETTER.items():
            diff = [r["methods"]["sr3_cascade"][metric] - r["methods"][other][metric] for r in rows]
            mean, low, high = bootstrap_ci(diff)
            better = sum((d < 0) if lower else (d > 0) for d in diff)
            paired[other][metric] = {"mean_difference": mean, "ci95": [low, high], "cascade_better_on": better,
                                     "n": len(diff)}
    print(json.dumps({"cpu": result["cpu"], "n_images": result["n_images"],
                      "cascade_minus_other": paired}, indent=2))


if __name__ == "__main__":
    main()
