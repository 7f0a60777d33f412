"""``sr3 evaluate``: compare methods with PSNR/SSIM/consistency/FID and an HTML report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import SAMPLER_NAMES, add_dataclass_arguments, flag_values
from ..errors import UserError
from ..evaluate import EvaluationConfig, evaluate
from ..methods import METHODS, MethodOptions, ModelUpscaler, Upscaler, build_method, external_method
from .common import add_sampling_arguments, check_device, sampling_flags


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="compare methods with PSNR/SSIM/consistency/FID and an HTML report")
    add_dataclass_arguments(p, EvaluationConfig, title="evaluation")
    p.add_argument("--methods", default="bicubic,raisr",
                   help=f"comma list of {','.join(METHODS)} and NAME=DIR (a folder of another tool's outputs, "
                        "matched by file name); default bicubic,raisr")
    p.add_argument("--model", type=Path, help="diffusion model folder for sr3 (default: the shipped one)")
    p.add_argument("--regression-model", type=Path, help="model folder for regression (default: the shipped one)")
    p.add_argument("--raisr-model", type=Path, help="RAISR filter bank (default: the shipped one for --scale)")
    p.add_argument("--cascade", type=Path, help="cascade directory for the cascade method")
    add_sampling_arguments(p)
    p.add_argument("--temperatures", help="comma list of sampling temperatures in [0, 1] for sr3: one report row "
                   "each (sr3@t0.5, ...); curves use the first")
    p.add_argument("--steps-curve", help="comma list of step counts for metric-vs-steps curves, e.g. 5,10,20,50,100")
    p.add_argument("--curve-samplers", help="comma list of samplers for the curves (default: --sampler)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def _parse_list(text: str | None, kind=str) -> list:
    try:
        return [kind(t.strip()) for t in text.split(",") if t.strip()] if text else []
    except ValueError:
        raise UserError(f"{text!r}: expected a comma-separated list of {kind.__name__} values") from None


def build_methods(args: argparse.Namespace, config: EvaluationConfig) -> tuple[list[Upscaler], list[Upscaler]]:
    """Report rows from ``--methods`` (several for --temperatures) and step-curve points from ``--steps-curve``."""
    names = _parse_list(args.methods)
    if not names:
        raise UserError("--methods: give at least one of " + ", ".join(METHODS))
    options = MethodOptions(scale=config.scale, sampling=sampling_flags(args), device=check_device(args.device),
                            model_dirs={k: v for k, v in {"sr3": args.model, "regression": args.regression_model,
                                                          "raisr": args.raisr_model, "cascade": args.cascade}.items()
                                        if v is not None})
    temperatures = _parse_list(args.temperatures, float)
    methods: list[Upscaler] = []
    for name in dict.fromkeys(names):
        if "=" in name:
            methods.append(external_method(name, config.scale))
            continue
        upscaler = build_method(name, options)
        if temperatures and isinstance(upscaler, ModelUpscaler) and upscaler.kind == "sr3":
            for t in dict.fromkeys(temperatures):  # one row per temperature (validated by SamplingConfig)
                methods.append(upscaler.with_sampling("sr3" if len(temperatures) == 1 else f"sr3@t{t:g}",
                                                      temperature=t))
        else:
            methods.append(upscaler)
    curve = []
    steps = _parse_list(args.steps_curve, int)
    if steps:
        sr3_rows = [m for m in methods if isinstance(m, ModelUpscaler) and m.kind == "sr3"]
        if not sr3_rows:
            raise UserError("--steps-curve: needs --methods sr3 (curves are for the diffusion model)")
        base = sr3_rows[0]
        for sampler in _parse_list(args.curve_samplers) or [base.sampling.sampler]:
            if sampler not in SAMPLER_NAMES:
                raise UserError(f"--curve-samplers: unknown sampler {sampler!r}; choose from {', '.join(SAMPLER_NAMES)}")
            for s in steps:
                eta = base.sampling.eta if sampler == "ddim" else 0.0
                curve.append(base.with_sampling(f"sr3@{sampler}-{s}", sampler=sampler, steps=s, eta=eta))
    return methods, curve


def run(args: argparse.Namespace) -> int:
    config = EvaluationConfig(**flag_values(EvaluationConfig, args))
    methods, curve = build_methods(args, config)
    summary = evaluate(config, methods, curve)
    for name, entry in summary["methods"].items():
        psnr = entry["metrics"]["psnr_y"]["mean"]
        ssim = entry["metrics"]["ssim_y"]["mean"]
        print(f"{name:12s} PSNR-Y {psnr if psnr is not None else float('nan'):6.2f} dB   "
              f"SSIM-Y {ssim if ssim is not None else float('nan'):.4f}   ({entry['n_images']} images)")
    if summary["skipped"]:
        print(f"sr3: {len(summary['skipped'])} image(s) skipped; reasons in {config.out / 'metrics.json'}",
              file=sys.stderr)
    print(f"report: {config.out / 'report.html'}")
    return 0
