"""``sr3 upscale``: upscale files and folders with any registered method, one bad file never stopping the rest."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from ..degradation import upsample
from ..errors import UserError
from ..frames import FrameRecorder, frame_folders
from ..imageio import list_images, load_image, pil_to_tensor, save_image, tensor_to_pil
from ..methods import METHODS, MethodOptions, Upscaler, build_method
from .common import (add_device_argument, add_sampling_arguments, add_save_steps_arguments, check_device, check_seed,
                     sampling_flags)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("upscale", help="upscale images with SR3 or a baseline")
    p.add_argument("inputs", nargs="+", type=Path, help="image files and/or folders")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: next to each input, *_xS)")
    p.add_argument("--method", choices=list(METHODS), default=None,
                   help="sr3 (default), regression, bicubic, raisr, or cascade (with --cascade)")
    p.add_argument("--model", type=Path, help="model folder of the method (default: the shipped one)")
    p.add_argument("--cascade", type=Path, help="cascade directory (sr3/cascade.py): chain its SR stages, "
                   "e.g. two 4x stages for 16x (same as --method cascade --model DIR)")
    p.add_argument("--scale", type=int, default=None, help="upscaling factor for bicubic/raisr (default 4); "
                   "learned methods know their own and refuse another")
    add_sampling_arguments(p)
    p.add_argument("--seed", type=int, default=0, help="image k of the run uses seed + k")
    p.add_argument("--batch-size", type=int, default=1, help="images per batch (same-size images), >= 1")
    p.add_argument("--preview", action="store_true", help="write the bicubic upscale at once, replaced by the "
                   "result when it is ready")
    add_device_argument(p)
    p.add_argument("--no-progress", action="store_true")
    add_save_steps_arguments(p)
    p.set_defaults(func=run)


def method_from_args(args: argparse.Namespace) -> Upscaler:
    """The one upscaler of this run, built from the registry."""
    name = args.method or ("cascade" if args.cascade else "sr3")
    if args.cascade and args.model:
        raise UserError("give either --cascade DIR or --model DIR, not both")
    model_dir = args.cascade or args.model
    options = MethodOptions(scale=args.scale, model_dirs={name: model_dir} if model_dir else {},
                            sampling=sampling_flags(args), device=check_device(args.device))
    return build_method(name, options)


def output_path(src: Path, out: Path | None, scale: int) -> Path:
    if out is None:
        return src.with_name(f"{src.stem}_x{scale}{src.suffix}")
    return out / src.name


def run(args: argparse.Namespace) -> int:
    if args.scale is not None and args.scale < 1:
        raise UserError(f"--scale {args.scale} must be a positive integer")
    if args.batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    check_seed(args.seed)
    paths = list_images(args.inputs)
    if not paths:
        raise UserError(f"{', '.join(map(str, args.inputs))}: no images found (png, jpg, webp, tiff)")
    upscaler = method_from_args(args)
    frames = frame_folders(args.save_steps, paths) if args.save_steps else None
    if frames and not upscaler.count_evaluations(16, 16):
        raise UserError(f"--save-steps: --method {upscaler.name} takes no sampling steps; use sr3 or a cascade")
    scale = upscaler.scale  # known before any work: previews and results get the same names
    failures = 0
    bar = tqdm(total=len(paths), unit="img", disable=args.no_progress, file=sys.stderr, position=0)
    pending: list[tuple[int, Path, torch.Tensor]] = []

    def flush():
        nonlocal failures
        if not pending:
            return
        lr = torch.stack([t for _, _, t in pending])
        if args.preview:
            for _, src, t in pending:
                save_image(tensor_to_pil(upsample(t[None], scale)[0].clamp(-1, 1)), output_path(src, args.out, scale))
        evaluations = upscaler.count_evaluations(lr.shape[-2], lr.shape[-1])
        with tqdm(total=evaluations, desc=f"{evaluations} network evaluation(s)", unit="eval",
                  disable=args.no_progress or not evaluations, file=sys.stderr, leave=False, position=1) as steps:
            recorder = FrameRecorder([frames[src] for _, src, _ in pending], noisy=args.save_noisy) if frames else None
            sr = upscaler(lr, [args.seed + k for k, _, _ in pending], [src.name for _, src, _ in pending],
                          progress=lambda: steps.update(1), callback=recorder)
        if recorder:
            recorder.finish()
        for (k, src, _), img in zip(pending, sr):
            try:
                save_image(tensor_to_pil(img), output_path(src, args.out, scale))
            except UserError as e:
                print(f"sr3: error: {e}", file=sys.stderr)
                failures += 1
        bar.update(len(pending))
        pending.clear()

    for k, src in enumerate(paths):
        try:
            lr = pil_to_tensor(load_image(src))
        except UserError as e:
            print(f"sr3: error: {e}", file=sys.stderr)
            failures += 1
            bar.update(1)
            continue
        if pending and (pending[0][2].shape != lr.shape or len(pending) >= args.batch_size):
            flush()
        pending.append((k, src, lr))
    flush()
    bar.close()
    if failures:
        print(f"sr3: {failures} of {len(paths)} images failed", file=sys.stderr)
        return 1
    return 0
