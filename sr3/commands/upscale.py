"""``sr3 upscale``: upscale files and folders with any registered method, one bad file never stopping the rest.

Outputs are planned before any work (sr3/outputs.py): an input is never overwritten, two
inputs never share an output, an existing output is skipped unless ``--overwrite``.
"""

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
from ..outputs import plan_outputs, preview_path
from .common import add_device_argument, add_sampling_arguments, add_save_steps_arguments, check_device, check_seed, \
    is_out_of_memory, sampling_flags, say

MAX_CLASSIC_SCALE = 16


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("upscale", help="upscale images with SR3 or a baseline")
    p.add_argument("inputs", nargs="+", type=Path, help="image files and/or folders")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: next to each input, *_xS)")
    p.add_argument("--method", choices=list(METHODS), default=None,
                   help="sr3 (default), regression, bicubic, raisr, or cascade (--cascade DIR; default: the shipped 16x cascade)")
    p.add_argument("--model", type=Path, help="model folder of the method (default: the shipped one)")
    p.add_argument("--cascade", type=Path, help="cascade directory (sr3/cascade.py): chain its SR stages, "
                   "e.g. two 4x stages for 16x (same as --method cascade --model DIR)")
    p.add_argument("--scale", type=int, default=None, help=f"upscaling factor for bicubic/raisr, 1-{MAX_CLASSIC_SCALE} "
                   "(default 4); learned methods know their own and refuse another, except that sr3 with its "
                   "shipped model also takes 8 and 16 (the shipped cascades: the 4x model, then a 2x or 4x stage "
                   "trained with conditioning augmentation)")
    add_sampling_arguments(p)
    p.add_argument("--seed", type=int, default=0, help="image k of the run uses seed + k")
    p.add_argument("--batch-size", type=int, default=1, help="images per batch (same-size images), >= 1")
    p.add_argument("--preview", action="store_true", help="write the bicubic upscale at once as NAME.preview.EXT "
                   "beside the output; removed when the result is written (or the run stops)")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that already exist (default: skip "
                   "those images with one line each); inputs are never overwritten")
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
    if args.scale is not None and not 1 <= args.scale <= MAX_CLASSIC_SCALE:
        raise UserError(f"--scale {args.scale} must be an integer in [1, {MAX_CLASSIC_SCALE}]")
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
    scale = upscaler.scale  # known before any work: outputs are planned and checked before sampling
    plan = plan_outputs(paths, lambda src: output_path(src, args.out, scale), args.overwrite, args.preview)
    for line in plan.problems:
        say(f"sr3: error: {line}")
    for line in plan.skipped:
        say(f"sr3: {line}")
    failures = plan.blocked
    bar = tqdm(total=len(plan.jobs), unit="img", disable=args.no_progress, file=sys.stderr, position=0)
    pending: list[tuple[int, Path, Path, torch.Tensor]] = []
    previews: set[Path] = set()  # written and not yet replaced by their result
    profiles: dict[Path, dict] = {}  # input -> its ICC profile, kept in the output (PNG, JPEG, WebP, TIFF)

    def fail(src: Path, message: str) -> None:
        nonlocal failures
        say(f"sr3: error: {message}" if message.startswith(str(src)) else f"sr3: error: {src}: {message}")
        failures += 1

    def flush():
        if not pending:
            return
        lr = torch.stack([t for _, _, _, t in pending])
        if args.preview:
            for _, src, out, t in pending:
                if preview_path(out).exists() and not args.overwrite:
                    continue  # not ours to replace (a preview left by a killed run is, with --overwrite)
                try:
                    save_image(tensor_to_pil(upsample(t[None], scale)[0].clamp(-1, 1)), preview_path(out))
                    previews.add(preview_path(out))
                except UserError as e:
                    say(f"sr3: warning: {e}")
        evaluations = upscaler.count_evaluations(lr.shape[-2], lr.shape[-1])
        try:
            with tqdm(total=evaluations, desc=f"{evaluations} network evaluation(s)", unit="eval",
                      disable=args.no_progress or not evaluations, file=sys.stderr, leave=False, position=1) as steps:
                recorder = FrameRecorder([frames[src] for _, src, _, _ in pending], noisy=args.save_noisy) \
                    if frames else None
                sr = upscaler(lr, [args.seed + k for k, _, _, _ in pending], [src.name for _, src, _, _ in pending],
                              progress=lambda: steps.update(1), callback=recorder)
            if recorder:
                recorder.finish()
        except (UserError, RuntimeError) as e:  # a non-finite result, or out of memory: this batch only
            if not isinstance(e, UserError) and not is_out_of_memory(e):
                raise
            h, w = lr.shape[-2:]
            reason = str(e) if isinstance(e, UserError) else \
                f"out of memory upscaling {w}x{h} to {w * scale}x{h * scale}; use --tile 256 and --batch-size 1, " \
                "or a smaller image"
            sr = [None] * len(pending)
            for _, src, _, _ in pending:
                fail(src, reason)
        for (_, src, out, _), img in zip(pending, sr):
            if img is not None:
                try:
                    save_image(tensor_to_pil(img), out, **profiles.pop(src, {}))
                except UserError as e:
                    fail(src, str(e))
            if preview_path(out) in previews:
                preview_path(out).unlink(missing_ok=True)
                previews.discard(preview_path(out))
        bar.update(len(pending))
        pending.clear()

    try:
        for k, src, out in plan.jobs:
            try:
                image = load_image(src)
                lr = pil_to_tensor(image)
                if image.info.get("icc_profile"):
                    profiles[src] = {"icc_profile": image.info["icc_profile"]}
            except UserError as e:
                fail(src, str(e))
                bar.update(1)
                continue
            if pending and (pending[0][3].shape != lr.shape or len(pending) >= args.batch_size):
                flush()
            pending.append((k, src, out, lr))
        flush()
    finally:  # Ctrl-C or a crash: no preview is left to pass for a result
        for path in previews:
            path.unlink(missing_ok=True)
    bar.close()
    if failures:
        say(f"sr3: {failures} of {plan.inputs} images failed")
        return 1
    return 0
