"""Export the trained second stages as the shipped 8x and 16x photo cascades.

    python experiments/export_photo_cascades.py --stage2-4x-run runs/stage2-4x-aug --stage2-2x-run runs/stage2-2x-aug \\
        --level-16x 0.1 --level-8x 0.1 --sweep-16x benchmarks/results/sweep16x.json \\
        --sweep-8x benchmarks/results/sweep8x.json --weights sr3/weights \\
        --noaug-run runs/stage2-4x-noaug --noaug-cascade runs/cascade-16x-noaug

Writes, under --weights: ``sr3-stage2-4x`` and ``sr3-stage2-2x`` (config.json, EMA weights cast to
bf16, model_card.json with the training commands and the figures of each run's log.jsonl), and
the cascades ``cascade-16x`` (default 4x model -> sr3-stage2-4x) and ``cascade-8x`` (default 4x
model -> sr3-stage2-2x), each a cascade.json (stage paths relative to it) and a model_card.json.
The level s of each second stage's conditioning augmentation is the one ``sr3 sweep`` chose
(its JSON is cited in the card).  With --noaug-run, also a cascade of the same stage 1 and the
stage trained without augmentation (for the on/off comparison; not shipped).  Refuses to
write into folders that already hold a model or a cascade.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from export_default_4x import DATA, RUN, cpu_name, run_summary  # noqa: E402  (experiments/ is not a package)

from sr3.atomic import write_json  # noqa: E402
from sr3.cascade import CASCADE_FILE, CascadeConfig, StageSettings, write_cascade  # noqa: E402
from sr3.checkpoint import CONFIG_FILE, SAMPLING_FILE, load_model_dir, save_model_dir  # noqa: E402
from sr3.config import SamplingConfig, from_dict, read_json  # noqa: E402
from sr3.pipeline import DEFAULT_MODEL_DIR  # noqa: E402
from sr3.unet import count_parameters  # noqa: E402

STAGE_PRESETS = {"sr3-stage2-4x": "cpu-4x-stage2", "sr3-stage2-2x": "cpu-2x-stage2"}
"""The preset each shipped second stage was trained with (cited in its model card)."""


def stage_card(run: Path, preset: str, what: str) -> dict:
    summary = run_summary(run)
    return {
        "what": what,
        "training_commands": [
            f"OMP_NUM_THREADS=1 {RUN} --preset {preset} --data {DATA} --out {run}   # three such runs side by side "
            f"on one 2-core machine; stopped after checkpoint {summary['steps']}",
            f"OMP_NUM_THREADS=1 {RUN} --preset {preset} --data {DATA} --out {run} --resume --steps {summary['steps']}"
            "   # writes model/ from that checkpoint"],
        **summary,
        "conditioning_augmentation": "CDM (Ho et al. 2021) Sec. 4.1-4.3, sr3/augment.py: Gaussian noise on the LR "
                                     "input at a level s ~ U[0, data.aug_noise_max] told to the U-Net (amortised), and "
                                     "a 3x3 Gaussian blur on a data.aug_blur_prob fraction of examples (config.json)",
        "training_data": f"{DATA} (43 photos; random HR crops of config.json data.crop_size cut from the photo shrunk "
                         "by a log-uniform factor in [1, 4]; horizontal flips; LR by sr3.degradation)",
        "hardware": f"{cpu_name()} (AVX-512 bf16), 2 cores shared by the three runs, bf16 autocast, no GPU",
        "torch": torch.__version__,
        "weights": "EMA (decay 0.999) weights cast to bfloat16 for shipping",
        "known_weaknesses": "trained on bicubic-degraded real photos with augmentation, never on the first stage's "
                            "actual outputs; a 5 M-parameter model trained for about an hour of one CPU core",
    }


def relative(target: Path, cascade_dir: Path) -> str:
    return os.path.relpath(target.resolve(), cascade_dir.resolve())


def cascade_config(cascade_dir: Path, stage2_dir: Path, stage2_sampling: SamplingConfig, level: float,
                   scale: int) -> CascadeConfig:
    stage1_sampling = from_dict(SamplingConfig, read_json(DEFAULT_MODEL_DIR / SAMPLING_FILE, SAMPLING_FILE),
                                str(DEFAULT_MODEL_DIR / SAMPLING_FILE))
    return CascadeConfig(stages=(
        StageSettings(relative(DEFAULT_MODEL_DIR, cascade_dir), sampling=stage1_sampling, scale=4),
        StageSettings(relative(stage2_dir, cascade_dir), sampling=stage2_sampling, scale=scale, aug_level=level)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage2-4x-run", type=Path, required=True)
    p.add_argument("--stage2-2x-run", type=Path, required=True)
    p.add_argument("--level-16x", type=float, required=True, help="aug level of the 16x cascade's second stage")
    p.add_argument("--level-8x", type=float, required=True, help="aug level of the 8x cascade's second stage")
    p.add_argument("--sweep-16x", type=Path, required=True, help="sr3 sweep's JSON that chose --level-16x")
    p.add_argument("--sweep-8x", type=Path, required=True, help="sr3 sweep's JSON that chose --level-8x")
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--schedule", default="auto")
    p.add_argument("--tile", type=int, default=1024)
    p.add_argument("--weights", type=Path, required=True, help="the package's weights folder")
    p.add_argument("--noaug-run", type=Path, help="the same second stage trained without augmentation")
    p.add_argument("--noaug-cascade", type=Path, help="where to write the comparison cascade (with --noaug-run)")
    args = p.parse_args()
    targets = [args.weights / n for n in ("sr3-stage2-4x", "sr3-stage2-2x", "cascade-16x", "cascade-8x")]
    for folder in targets + ([args.noaug_cascade] if args.noaug_cascade else []):
        if (folder / CONFIG_FILE).exists() or (folder / CASCADE_FILE).exists():
            raise SystemExit(f"{folder} already holds a model or cascade; remove it first")
    sampling = SamplingConfig(sampler=args.sampler, steps=args.steps, schedule=args.schedule, tile=args.tile)
    stage2 = {"sr3-stage2-4x": (args.stage2_4x_run, 4), "sr3-stage2-2x": (args.stage2_2x_run, 2)}
    for name, (run, scale) in stage2.items():
        model, config = load_model_dir(run / "model")
        card = stage_card(run, STAGE_PRESETS[name], f"second stage ({scale}x) of the shipped {4 * scale}x photo cascade "
                          f"(../cascade-{4 * scale}x): SR3 of the residual to the bicubic upsampling of its input, "
                          "every U-Net block at LR resolution, trained with CDM conditioning augmentation")
        save_model_dir(args.weights / name, model, config, dtype=torch.bfloat16,
                       extra_files={"model_card.json": {**card, "parameters": count_parameters(model)}})
    export = "python experiments/export_photo_cascades.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None)
    for scale, level, sweep in ((16, args.level_16x, args.sweep_16x), (8, args.level_8x, args.sweep_8x)):
        root = args.weights / f"cascade-{scale}x"
        stage2_dir = args.weights / f"sr3-stage2-{scale // 4}x"
        write_cascade(root, cascade_config(root, stage2_dir, sampling, level, scale // 4))
        chosen = json.loads(sweep.read_text())
        card = {
            "what": f"{scale}x photo upscaling: the default 4x model (../sr3-refine-4x, predict and refine), then "
                    f"../{stage2_dir.name} ({scale // 4}x), trained with CDM conditioning augmentation (SR3's 16x = "
                    "two 4x stages, Saharia et al. 2021 Sec. 4; CDM, Ho et al. 2021 Sec. 4)",
            "stages": ["../sr3-refine-4x (4x; sampling from its sampling.json)",
                       f"../{stage2_dir.name} ({scale // 4}x; {args.sampler}, {args.steps} steps, schedule "
                       f"{args.schedule}, tile {args.tile}; non-truncated conditioning augmentation at s = {level})"],
            "aug_level": {"value": level, "chosen_by": f"sr3 sweep ({sweep}: best by {chosen['metric']} on "
                                                       f"{chosen['features']})"},
            "truncated": "no: stage 1 diffuses a residual, whose intermediate x_s is not a noisy image",
            "measurements": "benchmarks/photo_cascades.py (README section '8x and 16x')",
            "export": export,
        }
        write_json(root / "model_card.json", card)
    if args.noaug_run and args.noaug_cascade:
        write_cascade(args.noaug_cascade, cascade_config(args.noaug_cascade, args.noaug_run / "model", sampling, 0.0, 4))
    print(export)


if __name__ == "__main__":
    main()
