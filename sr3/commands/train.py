"""``sr3 train``: train an SR3, regression, class-conditional base or RAISR model."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from ..checkpoint import load_model_dir, resolve_model_dir, sampling_files
from ..config import Config, DataConfig, DiffusionConfig, TrainConfig, UNetConfig, add_dataclass_arguments, \
    apply_flags, apply_overrides
from ..errors import UserError
from ..outputs import folder_problem
from ..predict_refine import PREDICTOR_DIR, load_predictor
from ..presets import PRESETS
from ..raisr import RAISRTrainConfig, train_raisr
from ..train import open_dataset, pick_device, train
from .common import check_device

CONFIG_SECTIONS = (("model", UNetConfig), ("diffusion", DiffusionConfig), ("data", DataConfig), ("train", TrainConfig))


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train an SR3, regression, base or RAISR model",
                              description="Train a model. Start from --preset or --config; any config field "
                                          "can be overridden with --SECTION.FIELD (e.g. --train.lr 1e-4).")
    p.add_argument("--preset", choices=sorted(PRESETS), help="named configuration (see sr3/presets.py)")
    p.add_argument("--config", type=Path, help="JSON config file (a config.json of an earlier run works)")
    p.add_argument("--data", required=True, type=Path, help="folder of training images (HR), or labelled data "
                                                              "(IDX files / class sub-folders, see sr3/labelled_data.py)")
    p.add_argument("--lr-data", type=Path, help="folder of matching LR images (paired data); default: "
                                                  "make LR by bicubic downsampling")
    p.add_argument("--out", required=True, type=Path, help="output folder (model/, checkpoint/, samples/, log.jsonl)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--init", type=Path, help="fine-tune: start from this model directory's weights (a shipped "
                                              "model such as sr3/weights/sr3-refine-4x, or a run's model/) with "
                                              "its config.json as the config (--SECTION.FIELD flags still apply, "
                                              "model.* ones must keep the architecture) and, for a refiner, its "
                                              "predictor/; the optimizer starts fresh")
    p.add_argument("--predictor", type=Path, help="a refiner's frozen predictor (model folder of a regression "
                                                   "run, e.g. --preset cpu-4x-predictor); needed by and only "
                                                   "by configs with diffusion.anchor = predictor")
    p.add_argument("--method", choices=["sr3", "raisr"], default="sr3",
                   help="raisr learns RAISR filters by least squares instead of a U-Net (--data.scale, "
                        "--train.seed and the --raisr.* flags apply)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    # Short aliases of config fields (same destination as the generated --section.field flag).
    p.add_argument("--task", dest="data__task", choices=["sr", "generate"],
                   help="same as --data.task: generate trains a class-conditional base model (CDM)")
    p.add_argument("--steps", dest="train__steps", type=int, help="same as --train.steps")
    p.add_argument("--objective", dest="diffusion__objective", choices=["diffusion", "regression"],
                   help="same as --diffusion.objective: regression trains the same U-Net to predict HR directly")
    for section, cls in CONFIG_SECTIONS:
        add_dataclass_arguments(p, cls, section, skip=("task",) if section == "data" else
                                ("steps",) if section == "train" else ("objective",) if section == "diffusion" else ())
    add_dataclass_arguments(p, RAISRTrainConfig, "raisr", title="RAISR (--method raisr)", skip=("seed",))
    p.set_defaults(func=run)


def resolve_config(args: argparse.Namespace, init_config: Config | None = None) -> Config:
    """Preset, JSON config or the --init model's config, then the --section.field overrides (validated by
    the config classes)."""
    if sum(x is not None for x in (args.preset, args.config, init_config)) > 1:
        raise UserError("give one of --preset, --config and --init (--init uses the model's own config.json)")
    if init_config is not None:
        config = apply_overrides(init_config, args)
        changed = [f.name for f in dataclasses.fields(config.model)
                   if getattr(config.model, f.name) != getattr(init_config.model, f.name)]
        if changed:
            raise UserError(f"{args.init}: --init keeps the model's architecture; drop --model.{changed[0]} "
                            "(to change it, train from --preset or --config instead)")
        return config
    if args.config:
        config = Config.from_json_file(args.config)
    elif args.preset:
        config = PRESETS[args.preset]
    else:
        raise UserError("choose a model: --preset NAME (" + ", ".join(PRESETS) + ") or --config FILE")
    return apply_overrides(config, args)


def run_raisr(args: argparse.Namespace) -> int:
    options = apply_flags(RAISRTrainConfig(), args, "raisr")
    scale = args.data__scale or DataConfig().scale
    seed = args.train__seed or 0
    command = "sr3 " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("sr3") else None
    settings = {k: v for k, v in dataclasses.asdict(options).items() if k not in ("seed", "threshold_quantiles")}
    train_raisr([args.data], scale, seed=seed, out_dir=args.out, command=command, progress=not args.no_progress,
                **settings)
    print(f"RAISR {scale}x filter bank written to {args.out}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.method == "raisr":
        return run_raisr(args)
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"{args.out}: is a file; --out must be a folder")
    init_model, init_config = load_model_dir(args.init) if args.init else (None, None)
    config = resolve_config(args, init_config)
    device = pick_device(check_device(args.device) if args.device else None)
    problem = folder_problem(args.out)  # before the data is read, not at the first checkpoint
    if problem:
        raise UserError(problem)
    dataset = open_dataset(config, args.data, args.out, args.lr_data)
    command = "sr3 " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("sr3") else ""
    init_dir = resolve_model_dir(args.init) if args.init else None
    predictor_dir = args.predictor
    if predictor_dir is None and init_dir and config.diffusion.anchor == "predictor":
        predictor_dir = init_dir / PREDICTOR_DIR  # a shipped refiner holds its predictor
    predictor = load_predictor(predictor_dir, config, device) if predictor_dir else None
    model_files = sampling_files(init_dir) if init_dir else None  # a fine-tuned model samples as it did
    model_dir = train(config, dataset, args.out, resume=args.resume, device=device,
                      progress=not args.no_progress, command=command, predictor=predictor,
                      predictor_dir=predictor_dir, init=init_model, model_files=model_files)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"model written to {model_dir}")
    return 0
