"""``sr3 sweep``: try conditioning-augmentation levels of a cascade on validation data (CDM Sec. 4.3).

A cascade with a base stage generates per class and is scored by distribution metrics
against labelled data (``--metric fd|kid|is``).  An SR-only cascade (the photo cascades)
upscales central crops of a photo folder (sr3/photo_protocol.py) and is scored per image
against the crops (``--metric stlpips|psnr_rgb|psnr_y|niqe|consistency``); each level's
row gives the means.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from ..atomic import write_json
from ..augment import level_is_valid
from ..cascade import load_cascade
from ..errors import UserError
from ..fmnist_classifier import load_classifier_extractor
from ..labelled_data import LabelledDataset
from ..metrics import RandomConvExtractor, distribution_scores, extract_features
from ..photo_protocol import SCORE_DIRECTIONS, photo_pairs, photo_scores, to_unit
from ..stlpips import load_stlpips
from .common import add_device_argument, add_sampling_arguments, check_device, check_seed, sampling_flags, say


def add_parser(subparsers) -> None:
    s = subparsers.add_parser("sweep", help="try conditioning-augmentation levels of a cascade on validation data")
    s.add_argument("--cascade", required=True, type=Path)
    s.add_argument("--data", required=True, type=Path, help="labelled validation data (IDX folder or class folders) "
                   "for a cascade with a base stage; a folder of photos for an SR-only cascade")
    s.add_argument("--split", default="test", choices=["train", "test"], help="IDX split used as validation set")
    s.add_argument("--levels", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.5],
                   help="augmentation levels s in [0, 1) to try on the last SR stage")
    s.add_argument("--modes", nargs="+", choices=["non-truncated", "truncated"], default=["non-truncated"])
    s.add_argument("--n-per-class", type=int, default=10, help="generated images per class and setting, >= 1")
    s.add_argument("--metric", choices=["fd", "kid", "is", *SCORE_DIRECTIONS],
                   help="generation: fd = Frechet distance (lower is better, the default), kid (lower), is = "
                   "Inception-style score (higher); SR-only cascades: stlpips_alex (lower, the default), psnr_rgb, "
                   "psnr_y (higher), niqe, consistency (lower)")
    s.add_argument("--crop", type=int, default=512, help="SR-only cascades: HR side of the central photo crops, "
                   "a multiple of the cascade's scale (photos smaller than this are left out)")
    s.add_argument("--limit", type=int, default=8, help="SR-only cascades: use the first N eligible photos, >= 1")
    s.add_argument("--classifier", type=Path, help="feature network: a Fashion-MNIST classifier directory "
                   "(sr3/fmnist_classifier.py); default: a seeded random conv net (uncalibrated)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", type=Path, help="write the results as JSON here (a new file unless --overwrite)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    # many small images: batch the network over images unless --network-batching says otherwise
    add_sampling_arguments(s)
    add_device_argument(s)
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for level in args.levels:
        if not level_is_valid(level):
            raise UserError(f"--levels: {level} must lie in [0, 1)")
    check_seed(args.seed)
    if args.out and args.out.exists() and not args.overwrite:
        raise UserError(f"{args.out}: already exists; choose another --out or pass --overwrite")
    sampling = {"network_batching": "batched", **sampling_flags(args)}
    cascade = load_cascade(args.cascade, check_device(args.device), sampling_overrides=sampling)
    if cascade.stages[-1].is_base:
        raise UserError(f"{args.cascade}: sweep needs at least one SR stage")
    sweep = sweep_generation if cascade.base is not None else sweep_photos
    rows, metric, features = sweep(args, cascade)
    sign = SCORE_DIRECTIONS.get(metric, 1 if metric == "is" else -1)
    best = max(rows, key=lambda r: sign * r[metric])
    print(f"best by {metric}: {best['mode']} s={best['level']} ({metric} = {best[metric]:.4f}); features: {features}")
    if args.out:
        write_json(args.out, {"features": features, "metric": metric, "rows": rows, "best": best})
    return 0


def _trials(args, cascade):
    """(mode, level, cascade with that setting on its last stage) for every mode and level asked for."""
    last = len(cascade.stages) - 1
    for mode in args.modes:
        for level in args.levels:
            yield mode, level, cascade.with_config(cascade.config.with_stage(last, aug_level=level,
                                                                             truncated=(mode == "truncated")))


def sweep_generation(args, cascade):
    """Class-conditional samples of every setting, scored against labelled data by distribution metrics."""
    metric = args.metric or "fd"
    if metric not in ("fd", "kid", "is"):
        raise UserError(f"--metric {metric} scores upscaled photos; a cascade with a base stage uses fd, kid or is")
    if args.n_per_class < 1:
        raise UserError("--n-per-class must be >= 1")
    real = LabelledDataset(args.data, cascade.stages[-1].resolution,
                           channels=cascade.stages[-1].config.model.image_channels, split=args.split)
    extractor = load_classifier_extractor(args.classifier) if args.classifier else RandomConvExtractor()
    n_classes = max(1, cascade.base.config.model.num_classes)
    labels = torch.arange(n_classes).repeat_interleave(args.n_per_class)
    seeds = [args.seed + k for k in range(len(labels))]
    real_feats, _ = extract_features(extractor, real.images_at(torch.arange(min(len(real), 2000))).add(1).div(2))
    progress = tqdm(unit="eval", disable=args.no_progress, file=sys.stderr)
    cc = cascade.base.config.model.num_classes > 0
    bases = {}  # base outputs by stop level: every setting with the same level shares them
    rows = []
    for mode, level, trial in _trials(args, cascade):
        outs = trial.generate(labels if cc else None, seeds, progress=lambda: progress.update(1),
                              base_images=bases.get(trial.base_stop_level))
        bases[trial.base_stop_level] = outs[0]
        feats, logits = extract_features(extractor, outs[-1].add(1).div(2))
        sc = distribution_scores(real_feats, feats, extractor=extractor.name, fake_logits=logits,
                                 kid_subset_size=min(100, len(feats)), kid_subsets=20)
        rows.append({"mode": mode, "level": level, "fd": sc.fid, "kid": sc.kid_mean, "is": sc.is_mean})
        print(f"{mode:>13}  s={level:<5}  fd={sc.fid:8.3f}  kid={sc.kid_mean:.4f}  is={sc.is_mean:.3f}")
    progress.close()
    return rows, metric, extractor.name


def sweep_photos(args, cascade):
    """Every setting upscales the same photo crops (image k seeded seed + k); means of the per-image scores."""
    metric = args.metric or "stlpips_alex"
    if metric not in SCORE_DIRECTIONS:
        raise UserError(f"--metric {metric} needs generated classes; an SR-only cascade uses one of "
                        f"{', '.join(SCORE_DIRECTIONS)}")
    if args.limit < 1:
        raise UserError("--limit must be >= 1")
    scale = cascade.total_scale
    pairs, too_small = photo_pairs(args.data, args.crop, scale, args.limit)
    say(f"{len(pairs)} photos (central {args.crop} px crops, {args.crop // scale} px LR); "
        f"{too_small} smaller photos left out")
    stlpips = load_stlpips("alex")
    progress = tqdm(unit="eval", disable=args.no_progress, file=sys.stderr)
    rows = []
    for mode, level, trial in _trials(args, cascade):
        scores = []
        for k, pair in enumerate(pairs):
            sr = trial.upscale(pair.lr * 2 - 1, [args.seed + k], progress=lambda: progress.update(1))
            scores.append(photo_scores(to_unit(sr), pair, scale, stlpips))
        row = {"mode": mode, "level": level, **{m: sum(s[m] for s in scores) / len(scores) for m in SCORE_DIRECTIONS}}
        rows.append(row)
        print(f"{mode:>13}  s={level:<5}  " + "  ".join(f"{m}={row[m]:.4f}" for m in SCORE_DIRECTIONS))
    progress.close()
    return rows, metric, f"{len(pairs)} photo crops of {args.data}"
