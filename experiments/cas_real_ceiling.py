"""How many real Fashion-MNIST images the CAS classifier needs to reach its ceiling.

    python experiments/cas_real_ceiling.py --data ../shared/data/fashion-mnist \\
        --sizes 5000 20000 60000 --out experiments/results/cas_real_ceiling.json

CAS (Classification Accuracy Score; CDM Sec. 4.2) trains a classifier on generated images and
tests it on real ones; it says most when a classifier trained on as many *real* images is near
its ceiling, so that missing accuracy is the generator's fault, not the training set's size.
This trains the ablation's CAS classifier (sr3.fmnist_classifier.FashionCNN, Adam at 1e-3
annealed to 0, batch 128; experiments/cdm_ablation.py) on N random real training images for
each size, with ``--epochs`` epochs (scaled down for large N so every size sees at most
``--max-images`` training examples), and tests it on the 10,000 real test images.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing sr3

from sr3.atomic import atomic_write_text  # noqa: E402
from sr3.fmnist_classifier import FashionCNN  # noqa: E402
from sr3.labelled_data import LabelledDataset  # noqa: E402
from sr3.metrics import classification_accuracy_score  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="Fashion-MNIST IDX folder")
    p.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000, 60000], help="real training images per row")
    p.add_argument("--epochs", type=int, default=10, help="epochs at the smallest sizes (the ablation's CAS uses 10)")
    p.add_argument("--max-images", type=int, default=200_000, help="cap on epochs x size (CPU time)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="classifier seeds (initialisation, batch order)")
    p.add_argument("--out", type=Path, required=True, help="JSON file for the rows")
    args = p.parse_args(argv)
    train = LabelledDataset(args.data, 32, split="train")
    test = LabelledDataset(args.data, 32, split="test")
    test_x, test_y = test.images_at(torch.arange(len(test))), test.labels
    report = {"command": "python experiments/cas_real_ceiling.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "rows": []}
    for n in args.sizes:
        idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:n]
        epochs = max(1, min(args.epochs, args.max_images // n))
        for seed in args.seeds:
            t = time.perf_counter()
            acc = classification_accuracy_score(FashionCNN, train.images_at(idx), train.labels[idx], test_x, test_y,
                                                epochs=epochs, batch_size=128, seed=seed, topk=(1,))
            report["rows"].append({"n": n, "epochs": epochs, "seed": seed, "top1": acc["top1"],
                                   "seconds": round(time.perf_counter() - t, 1)})
            print(json.dumps(report["rows"][-1]), flush=True)
            atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
