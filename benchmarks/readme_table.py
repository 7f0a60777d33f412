"""Print a Markdown table (means and 95% bootstrap CIs) from an ``sr3 evaluate`` metrics.json.

    python benchmarks/readme_table.py runs/eval-val256/metrics.json [--metrics psnr_y,ssim_y,consistency]
    python benchmarks/readme_table.py runs/eval-val256/metrics.json --gain-over bicubic --metrics psnr_rgb,psnr_y

``--gain-over M`` prints, per method, the mean per-image difference to method M (same images,
read from the metrics.csv beside metrics.json) with a 95% bootstrap CI over images: the
paired comparison, which is much tighter than comparing two unpaired CIs.
"""

import argparse
import json
from pathlib import Path

from sr3.evaluate import read_rows
from sr3.metrics import bootstrap_ci

LABELS = {"psnr_rgb": "PSNR RGB (dB)", "psnr_y": "PSNR Y (dB)", "ssim_rgb": "SSIM RGB", "ssim_y": "SSIM Y",
          "ms_ssim": "MS-SSIM", "consistency": "consistency (MSE, 0-255)",
          "colour_shift": "colour shift (0-255)", "seconds": "s / image"}


def cell(m: dict, digits: int) -> str:
    if m["mean"] is None:
        return "n/a"
    ci = "" if m["ci_low"] is None else f" [{m['ci_low']:.{digits}f}, {m['ci_high']:.{digits}f}]"
    return f"{m['mean']:.{digits}f}{ci}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("metrics_json")
    p.add_argument("--metrics", default="psnr_rgb,psnr_y,ssim_y,consistency,seconds")
    p.add_argument("--curves", action="store_true", help="print the step curves instead of the methods")
    p.add_argument("--gain-over", help="print paired per-image differences to this method instead")
    args = p.parse_args()
    if args.gain_over:
        return print_gains(Path(args.metrics_json), args.gain_over, args.metrics.split(","))
    summary = json.load(open(args.metrics_json))
    keys = args.metrics.split(",")
    digits = {k: (3 if k.startswith(("ssim", "ms_")) else 2) for k in keys}
    rows = ([(f"{e['sampler']} {e['steps']} steps", e) for entries in summary["curves"].values() for e in entries]
            if args.curves else list(summary["methods"].items()))
    print("| method | n | " + " | ".join(LABELS.get(k, k) for k in keys) + " |")
    print("|---|---:|" + "---:|" * len(keys))
    for name, entry in rows:
        print(f"| {name} | {entry['n_images']} | " + " | ".join(cell(entry["metrics"][k], digits[k]) for k in keys) + " |")


def print_gains(metrics_json: Path, reference: str, keys: list[str]) -> None:
    rows = read_rows(metrics_json.parent / "metrics.csv")
    by_method: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_method.setdefault(r["method"], {})[r["image"]] = r
    base = by_method[reference]
    print("| method | n | " + " | ".join(f"{LABELS.get(k, k)} minus {reference}" for k in keys)
          + f" | images where {keys[0]} is higher |")
    print("|---|---:|" + "---:|" * (len(keys) + 1))
    for name, mine in by_method.items():
        if name == reference:
            continue
        images = sorted(set(mine) & set(base))
        cells = []
        for k in keys:
            mean, lo, hi = bootstrap_ci([mine[i][k] - base[i][k] for i in images], seed=0)
            cells.append(f"{mean:+.2f} [{lo:+.2f}, {hi:+.2f}]")
        higher = sum(mine[i][keys[0]] > base[i][keys[0]] for i in images)
        print(f"| {name} | {len(images)} | " + " | ".join(cells) + f" | {higher} of {len(images)} |")


if __name__ == "__main__":
    main()
