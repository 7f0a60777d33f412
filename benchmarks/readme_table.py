"""Print a Markdown table (means and 95% bootstrap CIs) from an ``sr3 evaluate`` metrics.json.

    python benchmarks/readme_table.py runs/eval-val256/metrics.json [--metrics psnr_y,ssim_y,consistency]
"""

import argparse
import json

LABELS = {"psnr_rgb": "PSNR RGB (dB)", "psnr_y": "PSNR Y (dB)", "ssim_rgb": "SSIM RGB", "ssim_y": "SSIM Y",
          "ms_ssim": "MS-SSIM", "consistency": "consistency (MSE, 0-255)", "seconds": "s / image"}


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
    args = p.parse_args()
    summary = json.load(open(args.metrics_json))
    keys = args.metrics.split(",")
    digits = {k: (3 if k.startswith(("ssim", "ms_")) else 2) for k in keys}
    rows = ([(f"{e['sampler']} {e['steps']} steps", e) for entries in summary["curves"].values() for e in entries]
            if args.curves else list(summary["methods"].items()))
    print("| method | n | " + " | ".join(LABELS.get(k, k) for k in keys) + " |")
    print("|---|---:|" + "---:|" * len(keys))
    for name, entry in rows:
        print(f"| {name} | {entry['n_images']} | " + " | ".join(cell(entry["metrics"][k], digits[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
