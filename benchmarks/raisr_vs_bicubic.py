"""RAISR vs bicubic on real photos, with the filter banks shipped in sr3/weights/.

    python benchmarks/raisr_vs_bicubic.py            # photos/val, scales 2, 3, 4

Runs ``sr3 evaluate --methods bicubic,raisr`` (the very code users run) on
``../shared/data/photos/val`` (26 photos never used for training; the banks were
trained on photos/train) for each scale and writes the means, 95% bootstrap
confidence intervals and per-image PSNR gains to
``benchmarks/results/raisr_vs_bicubic.json``.  The full evaluation folders (CSV, JSON,
HTML report) go to ``--work`` (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sr3 import evaluate  # noqa: E402
from sr3.metrics import bootstrap_ci  # noqa: E402
from sr3.raisr import _hardware  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "photos" / "val")
    parser.add_argument("--scales", default="2,3,4")
    parser.add_argument("--work", type=Path, help="folder for the evaluation outputs (default: temporary)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "raisr_vs_bicubic.json")
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"{args.data}: not found; this benchmark needs the shared photos (see ../shared/data/README.md)")
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="raisr_bench_"))
    results = {
        "command": "python benchmarks/raisr_vs_bicubic.py " + " ".join(sys.argv[1:]),
        "data": str(args.data.relative_to(ROOT.parent)) if args.data.is_relative_to(ROOT.parent) else str(args.data),
        "filters": "shipped sr3/weights/raisr-{scale}x (trained on photos/train)",
        "hardware": f"{_hardware()} (shared machine: timings are indicative)",
        "software": f"python {platform.python_version()}, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
        "scales": {},
    }
    for scale in (int(s) for s in args.scales.split(",")):
        ns = argparse.Namespace(data=args.data, lr_data=None, methods="bicubic,raisr", scale=scale,
                                out=work / f"{scale}x", model=None, regression_model=None, raisr_model=None,
                                sampler="ddim", steps=50, seed=0, steps_curve=None, curve_samplers=None,
                                fid_weights=None, feature_extractor=None, limit=None, report_images=4, quiet=True)
        summary = evaluate.evaluate(ns)
        rows = evaluate.read_rows(ns.out / "metrics.csv")
        by = {m: {r["image"]: r for r in rows if r["method"] == m} for m in ("bicubic", "raisr")}
        gains = [by["raisr"][k]["psnr_y"] - by["bicubic"][k]["psnr_y"] for k in by["bicubic"] if k in by["raisr"]]
        mean, lo, hi = bootstrap_ci(gains, seed=0)
        entry = {name: {k: {kk: (round(vv, 4) if isinstance(vv, float) else vv) for kk, vv in v.items()}
                        for k, v in summary["methods"][name]["metrics"].items()}
                 for name in ("bicubic", "raisr")}
        entry["psnr_y_gain_db"] = {"mean": round(mean, 4), "ci_low": round(lo, 4), "ci_high": round(hi, 4),
                                   "images_improved": int(np.sum(np.array(gains) > 0)), "n": len(gains)}
        entry["n_images"] = summary["n_images"]
        results["scales"][f"{scale}x"] = entry
        print(f"{scale}x: bicubic PSNR-Y {entry['bicubic']['psnr_y']['mean']:.2f} dB, "
              f"RAISR {entry['raisr']['psnr_y']['mean']:.2f} dB, gain {mean:+.2f} dB [{lo:+.2f}, {hi:+.2f}] "
              f"({entry['psnr_y_gain_db']['images_improved']}/{len(gains)} images improved)  report: "
              f"{ns.out / 'report.html'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
