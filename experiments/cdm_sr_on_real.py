"""Where a cascade's Fréchet distance comes from: the SR stage alone, on real low-resolution images.

    python experiments/cdm_sr_on_real.py --runs runs/cdm-cpu --data ../shared/data/fashion-mnist \\
        --sr sr-none-s0 --n 1000 --steps 10 30 --out experiments/results/cdm_sr_on_real.json

Takes the last N real test images, downsamples them to 16x16 (the cascade's base resolution) and
upscales them back to 32x32 with one trained SR run of experiments/cdm_ablation.py (DDIM, --steps, --eta),
then measures FD with the ablation's Fashion-MNIST classifier (``RUNS/classifier``; not Inception)
against all 10,000 real test images at 32x32.  Rows: the same N real images (the floor at this N),
bicubic upsampling (no SR stage), and the SR stage.  A cascade cannot beat its SR stage on real
inputs, so this row bounds what a better base model alone would buy.  "agree" is the share of
images the classifier assigns to their true class.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing sr3

from sr3.atomic import atomic_write_text  # noqa: E402
from sr3.cascade import Cascade, CascadeConfig, StageSettings  # noqa: E402
from sr3.config import SamplingConfig  # noqa: E402
from sr3.fmnist_classifier import ClassifierExtractor, load_classifier  # noqa: E402
from sr3.labelled_data import LabelledDataset  # noqa: E402
from sr3.metrics import distribution_scores, extract_features  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=Path, required=True, help="the ablation's training folder (--work)")
    p.add_argument("--data", type=Path, required=True, help="Fashion-MNIST IDX folder")
    p.add_argument("--sr", nargs="+", default=["sr-none-s0"], help="SR run names inside --runs")
    p.add_argument("--n", type=int, default=1000, help="real test images to upscale (<= 10000)")
    p.add_argument("--steps", type=int, nargs="+", default=[10], help="DDIM steps of the SR stage")
    p.add_argument("--eta", type=float, nargs="+", default=[0.0],
                   help="DDIM eta values in [0, 1] to try (0 deterministic, 1 stochastic)")
    p.add_argument("--out", type=Path, help="JSON file for the rows")
    args = p.parse_args(argv)
    extractor = ClassifierExtractor(load_classifier(args.runs / "classifier"))
    test32 = LabelledDataset(args.data, 32, split="test")
    test16 = LabelledDataset(args.data, 16, split="test")

    def features(images):
        return extract_features(extractor, [b.add(1).div(2) for b in images.split(1000)])

    real, _ = features(test32.images_at(torch.arange(len(test32))))
    idx = torch.arange(len(test32) - args.n, len(test32))
    lr, labels = test16.images_at(idx), test16.labels[idx]
    rows = []

    def score(name: str, images: torch.Tensor, **facts) -> None:
        feats, logits = features(images)
        sc = distribution_scores(real, feats, extractor=extractor.name, fake_logits=logits,
                                 kid_subset_size=min(1000, args.n), kid_subsets=20)
        rows.append({"row": name, "fd": sc.fid, "kid": sc.kid_mean,
                     "agree": (logits.argmax(1) == labels).float().mean().item(), **facts})
        print(json.dumps(rows[-1]), flush=True)

    score("real 32x32 (same images)", test32.images_at(idx))
    score("bicubic 16 -> 32", F.interpolate(lr, scale_factor=2, mode="bicubic", align_corners=False).clamp(-1, 1))
    for run in args.sr:
        trained = json.loads((args.runs / run / "model" / "config.json").read_text())["train"]["steps"]
        for steps in args.steps:
            for eta in args.eta:
                sampling = SamplingConfig(steps=steps, eta=eta, network_batching="batched")
                stage = StageSettings(run, sampling=sampling, scale=2)
                upscaled = Cascade(args.runs, CascadeConfig(stages=(stage,))).upscale(lr, list(range(args.n)))
                score(f"{run}, {steps} DDIM steps" + (f", eta {eta:g}" if eta else ""), upscaled,
                      training_steps=trained, eta=eta)
    if args.out:
        atomic_write_text(args.out, json.dumps({"command": "python experiments/cdm_sr_on_real.py " + " ".join(
            argv if argv is not None else sys.argv[1:]), "n": args.n, "feature_network": extractor.name,
            "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
