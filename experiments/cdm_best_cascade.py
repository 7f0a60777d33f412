"""One Fashion-MNIST cascade scored the way the CDM ablation scores its rows: FD, KID, CAS, per-class grids.

    python experiments/cdm_best_cascade.py --runs runs/cdm-cpu-long --base base16 --sr sr-blur-s0 \\
        --classifier runs/cdm-cpu/classifier --data ../shared/data/fashion-mnist --guidance 0 1 \\
        --out experiments/results/cdm_best_cascade_cpu.json --img docs/img

The ablation (experiments/cdm_ablation.py) compares augmentation arms at a training length
that fits its many runs; this script scores one cascade, typically the ablation's best arm
and base trained for longer (``sr3 train --resume --steps N`` on copies of the ablation's run
folders), with the same class-balanced labels, sampling seeds, DDIM steps, classifier
(``--classifier``: the ablation's ``WORK/classifier``; not Inception) and CAS protocol, so its
numbers sit beside the ablation table.  One row per guidance weight w, plus real training
images (the same labels: the FD floor and the CAS ceiling at this count).  Writes the JSON
(with each run's steps and loss curve) and, per w, a grid of 8 samples per class
(``cdm-best-grid-w<w>.png``).  ``--keep DIR`` also writes every row's images (uint8, the
ablation's ``samples.safetensors`` format) for ``experiments/cdm_inception_fd.py DIR``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the ablation's scoring, from the same folder
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing sr3

from cdm_ablation import (SAMPLING_STEPS, Judge, balanced_labels, fmnist_cascade, grey_uint8, real_reference,  # noqa: E402
                          run_facts, write_kept)

from sr3.atomic import atomic_write_text  # noqa: E402
from sr3.cascade import image_grid  # noqa: E402
from sr3.imageio import save_image, tensor_to_pil  # noqa: E402
from sr3.labelled_data import LabelledDataset  # noqa: E402


def class_grid(images: torch.Tensor, labels: torch.Tensor, per_class: int = 8) -> torch.Tensor:
    """One row of ``per_class`` samples for each class, in class order."""
    chosen = torch.cat([images[labels == c][:per_class] for c in range(int(labels.max()) + 1)])
    return image_grid(chosen, columns=per_class)


def command_line(script: str, argv) -> str:
    """How this experiment was run, for its report."""
    return f"python experiments/{script} " + " ".join(argv if argv is not None else sys.argv[1:])


def add_cascade_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments every scored Fashion-MNIST cascade takes (also experiments/cdm_arms.py's)."""
    p.add_argument("--runs", type=Path, required=True, help="folder holding the base and SR run folders")
    p.add_argument("--base", default="base16", help="16x16 base run folder inside --runs")
    p.add_argument("--classifier", type=Path, required=True, help="the ablation's classifier folder (WORK/classifier)")
    p.add_argument("--data", type=Path, required=True, help="Fashion-MNIST IDX folder")
    p.add_argument("--samples", type=int, default=5000, help="generated images per row (class-balanced)")
    p.add_argument("--recipe", choices=tuple(SAMPLING_STEPS), default="cpu", help="DDIM steps of this ablation recipe")
    p.add_argument("--base-steps", type=int, help="DDIM steps of the base (default: the recipe's)")
    p.add_argument("--sr-steps", type=int, help="DDIM steps of the SR stage (default: the recipe's)")
    p.add_argument("--base-sampler", choices=("ddim", "dpmpp"), default="ddim",
                   help="sampler of the base: ddim, or dpmpp (DPM-Solver++(2M), deterministic: --eta then "
                        "applies to the SR stage only)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta of the DDIM stages in [0, 1] (1: stochastic)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, required=True, help="JSON file for the rows")


class Scoring:
    """What every row of one scored cascade shares: the sampling steps, the judge (classifier FD/KID,
    CAS), the class-balanced labels and seeds, and the report's header with the real-image floor row."""

    def __init__(self, args: argparse.Namespace, command: str, sr_runs: list[str]):
        """command: the command line, for the report; sr_runs: the SR run folders the rows use."""
        self.args = args
        if not (args.classifier / "model.safetensors").exists():
            raise SystemExit(f"{args.classifier}: no classifier; pass the ablation's WORK/classifier folder")
        self.device = torch.device(args.device)
        self.base_steps = args.base_steps or SAMPLING_STEPS[args.recipe][0]
        self.sr_steps = args.sr_steps or SAMPLING_STEPS[args.recipe][1]
        train32 = LabelledDataset(args.data, 32, split="train")
        self.judge = Judge(argparse.Namespace(smoke=False), train32, LabelledDataset(args.data, 32, split="test"),
                           self.device, args.classifier)
        self.labels = balanced_labels(args.samples, train32.num_classes)
        self.seeds = list(range(args.samples))  # the ablation's seeds
        self.report = {
            "command": command, "feature_network": self.judge.extractor.name, "samples": args.samples,
            "base_steps": self.base_steps, "sr_steps": self.sr_steps,
            "sampler": {"base": args.base_sampler if args.base_sampler != "ddim" else f"ddim (eta {args.eta:g})",
                        "sr": f"ddim (eta {args.eta:g})", "schedule": "logsnr"},
            "training": {name: run_facts(args.runs / name) for name in (args.base, *sr_runs)}, "rows": {}}
        t = time.perf_counter()
        self.real = real_reference(train32, self.labels)
        self.report["rows"]["real-train-images"] = {**self.judge(self.real, self.labels),
                                                    "seconds": round(time.perf_counter() - t, 1)}

    def cascade(self, sr_run: str, level: float, truncated: bool, guidance: float):
        """The base run, then SR run ``sr_run`` at augmentation level ``level``, base guided with ``guidance``."""
        args = self.args
        return fmnist_cascade(args.runs, args.base, sr_run, self.base_steps, self.sr_steps, level, truncated, guidance,
                              args.eta, self.device, base_sampler=args.base_sampler)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_cascade_arguments(p)
    p.add_argument("--sr", default="sr-blur-s0", help="16 -> 32 SR run folder inside --runs")
    p.add_argument("--level", type=float, default=0.0, help="SR stage's augmentation level s in [0, 1)")
    p.add_argument("--truncated", action="store_true", help="truncated conditioning (CDM Eq. 4) at --level")
    p.add_argument("--guidance", type=float, nargs="+", default=[0.0], help="guidance weights w >= 0 of the base")
    p.add_argument("--img", type=Path, help="folder for the per-class grids (none if omitted)")
    p.add_argument("--keep", type=Path, help="folder for every row's images (samples.safetensors; none if omitted)")
    args = p.parse_args(argv)
    scoring = Scoring(args, command_line("cdm_best_cascade.py", argv), [args.sr])
    report, labels, seeds = scoring.report, scoring.labels, scoring.seeds
    report["sr"] = {"run": args.sr, "level": args.level, "truncated": args.truncated}
    atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")
    kept = {"labels": labels.to(torch.uint8), "real-train-images": grey_uint8(scoring.real)}
    for w in args.guidance:
        t = time.perf_counter()
        images = scoring.cascade(args.sr, args.level, args.truncated, w).generate(labels, seeds)[-1]
        row = report["rows"][f"w{w:g}"] = {**scoring.judge(images, labels), "guidance": w,
                                           "seconds": round(time.perf_counter() - t, 1)}
        print(f"w={w:g}: fd {row['fd']:.2f} kid {row['kid']:.3f} cas {row['cas_top1']:.3f}", flush=True)
        if args.img:
            args.img.mkdir(parents=True, exist_ok=True)
            save_image(tensor_to_pil(class_grid(images, labels)), args.img / f"cdm-best-grid-w{w:g}.png")
        if args.keep:
            kept[f"w{w:g}"] = grey_uint8(images)
            args.keep.mkdir(parents=True, exist_ok=True)
            write_kept(args.keep, kept)
        atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
