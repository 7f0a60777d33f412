"""``sr3 generate``: class-conditional samples from a cascade (base -> SR stages)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from ..atomic import write_json
from ..augment import level_is_valid
from ..cascade import image_grid, load_cascade
from ..errors import UserError
from ..fmnist_classifier import load_classifier_extractor
from ..frames import FrameRecorder, frame_folders
from ..imageio import save_image, tensor_to_pil
from ..incremental_scores import IncrementalDistributionScores, generate_and_score, stream_real
from ..labelled_data import LabelledDataset
from ..metrics import RandomConvExtractor
from .common import (add_device_argument, add_sampling_arguments, add_save_steps_arguments, check_device, check_seed,
                     sampling_flags)


def add_cascade_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared by generate and sweep: augmentation, sampling overrides, device."""
    p.add_argument("--cascade", required=True, type=Path, help="cascade directory (with cascade.json)")
    p.add_argument("--aug-level", type=float, help="override every SR stage's conditioning-augmentation level s")
    t = p.add_mutually_exclusive_group()
    t.add_argument("--truncated", dest="truncated", action="store_true", default=None,
                   help="stop the previous stage at level s (CDM truncated conditioning)")
    t.add_argument("--non-truncated", dest="truncated", action="store_false",
                   help="sample the previous stage fully, then noise it to s")
    add_sampling_arguments(p)
    add_device_argument(p)
    p.add_argument("--no-progress", action="store_true")


def add_parser(subparsers) -> None:
    g = subparsers.add_parser("generate", help="class-conditional samples from a cascade (base -> SR stages)")
    add_cascade_arguments(g)
    g.add_argument("--class", dest="label", default=None,
                   help="class name or index; 'all' = --n images of every class (one grid row per class)")
    g.add_argument("--n", type=int, default=8, help="images (per class with --class all), >= 1")
    g.add_argument("--out", required=True, type=Path, help="output folder (images and grid.png)")
    g.add_argument("--seed", type=int, default=0, help="image k uses seed + k (per-stage streams derive from it)")
    g.add_argument("--batch-size", type=int, default=16, help="images per batch, >= 1")
    g.add_argument("--overwrite", action="store_true", help="replace images and grid.png already in --out "
                   "(default: refuse before any work)")
    g.add_argument("--num-samples", type=int, help="generate this many images in total (classes in turn, or "
                   "--class), written as OUT/NNNNNN.png and scored as they come with bounded memory (FID from "
                   "running sums, KID/IS on a seeded sample); a rerun resumes from the files already written")
    g.add_argument("--score-data", type=Path, help="with --num-samples: labelled real data (IDX folder or class "
                   "folders) for FD/KID; its test split for IDX")
    g.add_argument("--classifier", type=Path, help="with --num-samples: feature network, a Fashion-MNIST classifier "
                   "directory (sr3/fmnist_classifier.py); default a seeded random conv net (uncalibrated)")
    add_save_steps_arguments(g)
    g.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.n < 1 or args.batch_size < 1:
        raise UserError("--n and --batch-size must be >= 1")
    check_seed(args.seed)
    if args.aug_level is not None and not level_is_valid(args.aug_level):
        raise UserError(f"--aug-level {args.aug_level} must lie in [0, 1)")
    cascade = load_cascade(args.cascade, check_device(args.device),
                           {"aug_level": args.aug_level, "truncated": args.truncated}, sampling_flags(args))
    if args.label is None:
        classes = [None] if cascade.base is None or not cascade.base.config.model.num_classes else None
        if classes is None:
            raise UserError(f"{args.cascade}: the base stage is class-conditional; pass --class NAME (or all)")
    elif args.label == "all":
        classes = list(range(len(cascade.class_names)))
    else:
        classes = [cascade.resolve_class(args.label)]
    if args.num_samples is not None:
        return run_scored(args, cascade, classes)
    names = cascade.class_names
    planned = [args.out / f"{names[c] if c is not None else 'sample'}_{k:04d}.png" for c in classes
               for k in range(args.n)] + [args.out / "grid.png"]
    existing = [p for p in planned if p.exists()]
    if existing and not args.overwrite:
        raise UserError(f"{existing[0]}: already exists ({len(existing)} of the {len(planned)} outputs do); "
                        "choose another --out or pass --overwrite")
    images = []
    bar = tqdm(total=len(classes) * args.n, unit="img", disable=args.no_progress, file=sys.stderr)
    for row, c in enumerate(classes):
        seeds = [args.seed + row * args.n + k for k in range(args.n)]
        for b in range(0, args.n, args.batch_size):
            chunk = seeds[b:b + args.batch_size]
            labels = None if c is None else torch.full((len(chunk),), c, dtype=torch.long)
            stems = [f"{names[c] if c is not None else 'sample'}_{k:04d}" for k in range(b, b + len(chunk))]
            recorder = None
            if args.save_steps:
                folders = frame_folders(args.save_steps, [Path(s) for s in stems])
                recorder = FrameRecorder(list(folders.values()), noisy=args.save_noisy)
            out = cascade.generate(labels, chunk, callback=recorder)[-1]
            if recorder:
                recorder.finish()
            for stem, img in zip(stems, out):
                save_image(tensor_to_pil(img), args.out / f"{stem}.png")
            images.append(out)
            bar.update(len(chunk))
    bar.close()
    grid = image_grid(torch.cat(images), columns=args.n)
    save_image(tensor_to_pil(grid), args.out / "grid.png")
    print(f"{len(classes) * args.n} images and grid.png written to {args.out}")
    return 0


def run_scored(args: argparse.Namespace, cascade, classes: list) -> int:
    """``--num-samples N``: N images in batches, written and scored incrementally (CDM-style FID at scale)."""
    if args.num_samples < 1:
        raise UserError("--num-samples must be >= 1")
    if args.score_data is None:
        raise UserError("--num-samples needs --score-data DIR (the real images to compare with)")
    last = cascade.stages[-1]
    real = LabelledDataset(args.score_data, last.resolution, channels=last.config.model.image_channels, split="test")
    extractor = load_classifier_extractor(args.classifier) if args.classifier else RandomConvExtractor()
    scores = IncrementalDistributionScores(extractor, seed=args.seed)
    stream_real(scores, (real.images_at(torch.arange(i, min(len(real), i + 500))) for i in range(0, len(real), 500)))
    labels = None if classes == [None] else torch.tensor(classes).repeat(-(-args.num_samples // len(classes)))
    labels = labels[:args.num_samples] if labels is not None else torch.zeros(args.num_samples, dtype=torch.long)
    bar = tqdm(total=args.num_samples, unit="img", disable=args.no_progress, file=sys.stderr)
    result = generate_and_score(lambda seeds, y: cascade.generate(None if classes == [None] else y, seeds)[-1],
                                labels, scores, batch_size=args.batch_size, out_dir=args.out, first_seed=args.seed,
                                progress=bar.update)
    bar.close()
    summary = {"num_samples": args.num_samples, "real_images": len(real), "features": extractor.name,
               **result.to_dict()}
    write_json(args.out / "scores.json", summary)
    print(f"{args.num_samples} images in {args.out}; FD {result.fid:.3f}, KID {result.kid_mean:.4f} "
          f"({extractor.name}); scores.json written")
    return 0
