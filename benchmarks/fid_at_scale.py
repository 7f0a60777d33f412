"""FD/KID over 5,000 Fashion-MNIST-sized samples, streamed to disk in batches: memory stays flat.

    python benchmarks/fid_at_scale.py      # -> benchmarks/results/fid_at_scale.json

The feature network is the project's Fashion-MNIST classifier (sr3/fmnist_classifier.py;
FD-FMNIST-CNN, *not* FID), trained here for one seeded epoch on 10,000 training
images.  The real side streams --samples test-set images; the "generated" side is a
stand-in generator, so that the run measures the evaluation and not a model: training
image i (class-balanced, seed = i) brought down to 16x16 and back up to 32x32 with the
project's degradation operator (what a cascade's base stage would hand its SR stage),
so FD/KID are clearly above zero.  Each sample is written as a PNG and scored by
:func:`sr3.incremental_scores.generate_and_score`, exactly as a real cascade would be
(``generate = lambda seeds, labels: cascade.generate(labels, seeds)[-1]``).

Resident memory (RSS, from /proc) is recorded after every --batch samples.  A second
row scores the same stream again from the PNGs already on disk (the resume path).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing sr3

from sr3.degradation import downsample, upsample  # noqa: E402
from sr3.fmnist_classifier import ClassifierExtractor, train_classifier  # noqa: E402
from sr3.incremental_scores import IncrementalDistributionScores, generate_and_score  # noqa: E402
from sr3.labelled_data import LabelledDataset  # noqa: E402

RESULTS = Path(__file__).parent / "results"
DATA = Path("/work/shared/data/fashion-mnist")


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(float(line.split()[1]) / 1024, 1)
    return float("nan")


def cpu_name() -> str:
    return next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")), "unknown CPU")


def score_stream(extractor, real: LabelledDataset, train: LabelledDataset, n: int, batch: int, out: Path) -> dict:
    trace = []
    t = time.perf_counter()
    scores = IncrementalDistributionScores(extractor)
    for start in range(0, n, batch):
        scores.update(real.images_at(torch.arange(start, min(n, start + batch))), real=True)
    by_class = [torch.nonzero(train.labels == c).flatten() for c in range(10)]
    labels = torch.arange(n) % 10

    def generate(seeds, batch_labels):
        index = torch.stack([by_class[int(y)][s // 10] for s, y in zip(seeds, batch_labels)])
        return upsample(downsample(train.images_at(index), 2), 2).clamp(-1, 1)

    def progress(_count):
        trace.append({"samples": scores.count["fake"], "rss_mib": rss_mib()})

    result = generate_and_score(generate, labels, scores, batch_size=batch, out_dir=out, progress=progress)
    return {"seconds": round(time.perf_counter() - t, 2), "fd": result.fid, "kid_mean": result.kid_mean,
            "kid_std": result.kid_std, "is_mean": result.is_mean, "n_real": result.n_real, "n_fake": result.n_fake,
            "notes": result.notes, "rss_trace": trace}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=5000)
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--data", type=Path, default=DATA, help="Fashion-MNIST IDX folder")
    p.add_argument("--out", type=Path, default=RESULTS / "fid_at_scale.json")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    rss_start = rss_mib()
    train = LabelledDataset(args.data, 32, channels=1, split="train")
    real = LabelledDataset(args.data, 32, channels=1, split="test")
    t = time.perf_counter()
    index = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:10000]
    classifier = train_classifier(train.images_at(index), train.labels[index], epochs=1, seed=0)
    classifier_s = time.perf_counter() - t
    extractor = ClassifierExtractor(classifier)
    rss_ready = rss_mib()
    with tempfile.TemporaryDirectory(prefix="sr3_fid_scale_") as tmp:
        first = score_stream(extractor, real, train, args.samples, args.batch, Path(tmp))
        again = score_stream(extractor, real, train, args.samples, args.batch, Path(tmp))  # from the PNGs on disk
    trace = first["rss_trace"]
    at = {row["samples"]: row["rss_mib"] for row in trace}
    report = {"cpu": cpu_name(), "command": "python benchmarks/fid_at_scale.py " + " ".join(
        argv if argv is not None else sys.argv[1:]), "samples": args.samples, "batch": args.batch,
        "extractor": extractor.name, "classifier_train_s": round(classifier_s, 1),
        "rss_at_start_mib": rss_start, "rss_with_datasets_and_classifier_mib": rss_ready,
        "rss_growth_from_first_batch_to_last_mib": round(trace[-1]["rss_mib"] - trace[0]["rss_mib"], 1),
        "rss_at_1000_and_5000_mib": [at.get(1000), at.get(5000)],
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "generate_and_write": first, "resume_from_disk": again,
        "resume_gives_the_same_scores": first["fd"] == again["fd"] and first["kid_mean"] == again["kid_mean"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k not in ("generate_and_write", "resume_from_disk")},
                     indent=2))
    print(json.dumps({k: {kk: vv for kk, vv in report[k].items() if kk != "rss_trace"}
                      for k in ("generate_and_write", "resume_from_disk")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
