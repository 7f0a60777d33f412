"""CDM conditioning-augmentation ablation on Fashion-MNIST (16x16 base -> 32x32 SR stage), on CPU.

Stage 1 (training, the exact commands; ~1 core each on the shared 2-core machine):

    D=../shared/data/fashion-mnist R=runs/cdm-fmnist
    OMP_NUM_THREADS=1 sr3 train --preset fmnist-base16        --data $D --out $R/base16
    OMP_NUM_THREADS=1 sr3 train --preset fmnist-sr16-32       --data $D --out $R/sr-none
    OMP_NUM_THREADS=1 sr3 train --preset fmnist-sr16-32-noise --data $D --out $R/sr-noise
    OMP_NUM_THREADS=1 sr3 train --preset fmnist-sr16-32-blur  --data $D --out $R/sr-blur

(a run stopped early is finalised at its last checkpoint with the same command plus
``--resume --steps N``).  Stage 2 (this script):

    OMP_NUM_THREADS=2 python experiments/cdm_fashion_mnist.py --runs runs/cdm-fmnist

trains the Fashion-MNIST feature classifier (sr3/fmnist_classifier.py) on real
training images, builds one cascade per SR variant, samples ``--n-per-class``
images per class for every ablation row with the same seeds, and reports
FD-FMNIST-CNN (Fréchet distance of the classifier's penultimate features against
real test images; NOT FID), IS-FMNIST-CNN and CAS (a fresh classifier trained on
the generated images, tested on real test images) beside the same classifier
trained on as many real images.  Writes experiments/results/cdm_fashion_mnist.json
and per-class grids docs/img/cdm-<row>.png.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from sr3.cascade import CascadeConfig, StageSettings, image_grid, load_cascade, write_cascade
from sr3.config import SamplingConfig
from sr3.fmnist_classifier import ClassifierExtractor, FashionCNN, save_classifier, train_classifier
from sr3.imageio import save_image, tensor_to_pil
from sr3.labelled_data import LabelledDataset
from sr3.metrics import classification_accuracy, classification_accuracy_score, distribution_scores, \
    extract_features

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "fashion-mnist"

# (row name, SR stage run, level s, truncated): the ablation of CDM Sec. 4.1-4.3.
ROWS = [
    ("none", "sr-none", 0.0, False),
    ("noise-s0", "sr-noise", 0.0, False),
    ("noise-s0.1-nontrunc", "sr-noise", 0.1, False),
    ("noise-s0.3-nontrunc", "sr-noise", 0.3, False),
    ("noise-s0.1-trunc", "sr-noise", 0.1, True),
    ("noise-s0.3-trunc", "sr-noise", 0.3, True),
    ("blur", "sr-blur", 0.0, False),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "cdm-fmnist", help="training output folders")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--n-per-class", type=int, default=20, help="generated images per class and row")
    p.add_argument("--base-steps", type=int, default=25, help="DDIM steps of the base stage")
    p.add_argument("--sr-steps", type=int, default=10, help="DDIM steps of the SR stage")
    p.add_argument("--classifier-images", type=int, default=20000, help="real training images for the feature CNN")
    p.add_argument("--rows", nargs="*", help="subset of row names")
    p.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "cdm_fashion_mnist.json")
    p.add_argument("--img", type=Path, default=ROOT / "docs" / "img")
    args = p.parse_args()
    t0 = time.time()
    torch.manual_seed(0)

    train32 = LabelledDataset(args.data, 32, split="train")
    test32 = LabelledDataset(args.data, 32, split="test")
    names = train32.class_names
    g = torch.Generator().manual_seed(0)
    test_idx = torch.randperm(len(test32), generator=g)[:2000]
    test_x, test_y = test32.images_at(test_idx), test32.labels[test_idx]

    # 1. The feature network: a small CNN trained on real Fashion-MNIST (never on samples).
    clf_idx = torch.randperm(len(train32), generator=g)[:args.classifier_images]
    classifier = train_classifier(train32.images_at(clf_idx), train32.labels[clf_idx], epochs=1, seed=0)
    clf_acc = classification_accuracy(classifier, test_x, test_y, topk=(1,))["top1"]
    save_classifier(classifier, args.runs / "classifier", {"test_top1": clf_acc, "train_images": len(clf_idx)})
    extractor = ClassifierExtractor(classifier)
    print(f"feature classifier: top-1 {clf_acc:.3f} on {len(test_y)} real test images ({time.time() - t0:.0f}s)")
    real_feats, _ = extract_features(extractor, test_x.add(1).div(2))

    n = args.n_per_class
    labels = torch.arange(len(names)).repeat_interleave(n)
    seeds = list(range(len(labels)))  # the same seeds for every row: rows differ only in the SR conditioning

    def measure(images: torch.Tensor, image_labels: torch.Tensor) -> dict:
        feats, logits = extract_features(extractor, images.add(1).div(2))
        sc = distribution_scores(real_feats, feats, extractor=extractor.name, fake_logits=logits,
                                 kid_subset_size=min(100, len(feats)), kid_subsets=50)
        cas = classification_accuracy_score(FashionCNN, images, image_labels, test_x, test_y, epochs=10,
                                            batch_size=64, seed=0, topk=(1,))
        return {"fd_fmnist_cnn": sc.fid, "kid": sc.kid_mean, "is_fmnist_cnn": sc.is_mean, "cas_top1": cas["top1"],
                "n": len(images)}

    # 2. References: real training images (the best a generator can do) at the same count.
    real_idx = torch.cat([torch.nonzero(train32.labels == c)[:n, 0] for c in range(len(names))])
    results = {"real-train-images": measure(train32.images_at(real_idx), train32.labels[real_idx])}
    print(f"{'real-train-images':>22}: {results['real-train-images']}")

    # 3. The ablation rows: one cascade per SR variant, sampling settings per row.
    base_cache: dict[str, torch.Tensor] = {}
    for name, sr_run, level, truncated in ROWS:
        if args.rows and name not in args.rows:
            continue
        t = time.time()
        root = args.runs / f"cascade-{sr_run}"
        write_cascade(root, CascadeConfig(
            stages=(StageSettings("../base16", sampling=SamplingConfig(steps=args.base_steps)),
                    StageSettings(f"../{sr_run}", sampling=SamplingConfig(steps=args.sr_steps), scale=2, aug_level=level,
                                  truncated=truncated)),
            class_names=names))
        cascade = load_cascade(root, sampling_overrides={"network_batching": "batched"})  # many small images
        outs = cascade.generate(labels, seeds, base_images=base_cache.get("full"))
        if not truncated or level == 0:
            base_cache["full"] = outs[0]
        row = measure(outs[-1], labels)
        row.update(sr_run=sr_run, level=level, truncated=truncated, seconds=round(time.time() - t, 1))
        results[name] = row
        print(f"{name:>22}: {row}")
        grid = image_grid(outs[-1].reshape(len(names), n, *outs[-1].shape[1:])[:, :8].flatten(0, 1), columns=8)
        save_image(tensor_to_pil(grid), args.img / f"cdm-{name}.png")
    if "full" in base_cache:  # the base model's own 16x16 samples, for reference
        base = base_cache["full"]
        grid = image_grid(base.reshape(len(names), n, *base.shape[1:])[:, :8].flatten(0, 1), columns=8)
        save_image(tensor_to_pil(grid), args.img / "cdm-base16.png")

    training = {}
    for run in ("base16", "sr-none", "sr-noise", "sr-blur"):
        card = args.runs / run / "model" / "training.json"
        cfg = args.runs / run / "model" / "config.json"
        if cfg.exists():
            training[run] = {"steps": json.loads(cfg.read_text())["train"]["steps"],
                             **({"parameters": json.loads(card.read_text())["parameters"]} if card.exists() else {})}
    summary = {
        "description": "CDM conditioning-augmentation ablation, Fashion-MNIST 16x16 base -> 32x32 SR (2x), CPU",
        "feature_network": extractor.name, "feature_classifier_test_top1": clf_acc,
        "n_per_class": n, "real_test_images": len(test_y), "base_steps": args.base_steps, "sr_steps": args.sr_steps,
        "sampler": "ddim (eta 0), logsnr schedule", "training": training, "rows": results,
        "hardware": f"{platform.machine()} CPU, {torch.get_num_threads()} threads (shared)",
        "seconds": round(time.time() - t0, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    print(f"wrote {args.out} ({summary['seconds']} s)")


if __name__ == "__main__":
    main()
