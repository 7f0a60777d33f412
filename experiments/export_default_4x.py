"""Export a trained predict-and-refine pair as the shipped default 4x model (sr3/weights/sr3-refine-4x).

    python experiments/export_default_4x.py --predictor-run runs/cpu-4x-predictor --refiner-run runs/cpu-4x-refine \\
        --sampler ddpm --steps 3 --schedule train --tile 1024 --out sr3/weights/sr3-refine-4x

Writes, in --out: the refiner (config.json, model.safetensors: EMA weights cast to bf16), its
predictor in predictor/ (the same), sampling.json (the default sampling settings), and
model_card.json for both, with the exact training commands, steps, minutes and speed read from
each run's log.jsonl.  Refuses to write into a folder that already holds a model.

A continued predictor (sr3 train --init of a shipped model's predictor) replaces the predictor of
a shipped model, keeping its refiner and sampling settings; the predictor's card lists the shipped
card's history, then the continuation's commands, steps and minutes:

    python experiments/export_default_4x.py --continues sr3/weights/sr3-refine-4x \
        --predictor-run runs/pred-cont --out runs/sr3-refine-4x-next
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import torch

from sr3.atomic import write_json
from sr3.checkpoint import CONFIG_FILE, SAMPLING_FILE, WEIGHTS_FILE, copy_model_files, load_model_dir, save_model_dir
from sr3.config import SamplingConfig, read_json
from sr3.predict_refine import PREDICTOR_DIR
from sr3.unet import count_parameters

DATA = "/work/shared/data/photos/train"
RUN = "python -m sr3 train"
COMMANDS = {  # the sessions as they ran (2026-11-27, wall clock 15:50-17:40 UTC, one shared 2-core machine)
    "predictor": [
        f"{RUN} --preset cpu-4x-predictor --data {DATA} --out runs/cpu-4x-predictor   "
        "# 2 threads; stopped by hand at step 150 (another job took a core: 6 s/step)",
        f"OMP_NUM_THREADS=1 {RUN} --preset cpu-4x-predictor --data {DATA} --out runs/cpu-4x-predictor --resume   "
        "# from checkpoint 100; stopped after checkpoint 2300 to leave the refiner time",
        f"OMP_NUM_THREADS=1 {RUN} --preset cpu-4x-predictor --data {DATA} --out runs/cpu-4x-predictor --resume "
        "--steps 2300   # writes model/ from checkpoint 2300",
    ],
    "refiner": [
        "sr3.checkpoint.save_model_dir('runs/predictor-snapshot', <predictor EMA of checkpoint 300>, config)",
        f"OMP_NUM_THREADS=1 {RUN} --preset cpu-4x-refine --predictor runs/predictor-snapshot --data {DATA} "
        "--out runs/cpu-4x-refine --steps 6000   # steps 0-1500 against the step-300 predictor, while the predictor "
        "trained on the other core; stopped after checkpoint 1500",
        f"OMP_NUM_THREADS=1 {RUN} --preset cpu-4x-refine --predictor runs/cpu-4x-predictor/model --data {DATA} "
        "--out runs/cpu-4x-refine --resume --steps 6000   # steps 1500-STEPS against the final predictor; stopped "
        "after checkpoint STEPS",
        f"OMP_NUM_THREADS=1 {RUN} --preset cpu-4x-refine --predictor runs/cpu-4x-predictor/model --data {DATA} "
        "--out runs/cpu-4x-refine --resume --steps STEPS   # writes model/ and copies the predictor into model/predictor/",
    ],
}
CONTINUATION_COMMANDS = [  # 2026-11-29 (seventh session, 23:12 UTC on), the predictor continued from the shipped one
    f"OMP_NUM_THREADS=1 {RUN} --init sr3/weights/sr3-refine-4x/predictor --data {DATA} --out runs/pred-cont "
    "--steps 4000 --train.seed 1 --train.lr 3e-4 --train.checkpoint-every 250 --train.keep-every 500 --no-progress   "
    "# stopped after checkpoint 1000 to continue on both cores",
    f"OMP_NUM_THREADS=2 {RUN} --init sr3/weights/sr3-refine-4x/predictor --data {DATA} --out runs/pred-cont "
    "--resume --steps STEPS --train.seed 1 --train.lr 3e-4 --train.checkpoint-every 250 --train.keep-every 500 "
    "--no-progress",
]


HARDWARE = "{cpu} (AVX-512 bf16), 2 cores shared with other jobs, bf16 autocast, no GPU"


def cpu_name() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "?")


def run_summary(run: Path) -> dict:
    """Steps, last logged loss, training minutes and images per second from a run's log.jsonl."""
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    last = lines[-1]
    # elapsed_s restarts at each --resume; sum the last line of every session
    sessions = [a for a, b in zip(lines, lines[1:] + [None]) if b is None or b["elapsed_s"] < a["elapsed_s"]]
    return {"steps": last["step"], "final_logged_loss": round(last["loss"], 4),
            # the training loop's own clock to its last logged step, summed over sessions (no data loading,
            # no steps redone after a kill)
            "train_minutes_logged": round(sum(s["elapsed_s"] for s in sessions) / 60, 1),
            "sessions": len(sessions), "images_per_second_last_session": round(last["images_per_s"], 1)}


def export_continued(shipped: Path, predictor_run: Path, out: Path) -> None:
    """``shipped`` with its predictor replaced by the one ``predictor_run`` continued from it.

    The refiner's files and sampling settings are copied unchanged; both cards say that the refiner
    was trained against the earlier predictor.  The predictor's card is the shipped one's history
    followed by the continuation's commands, with steps, minutes and sessions added up.
    """
    old = read_json(shipped / PREDICTOR_DIR / "model_card.json", "model card")
    run = run_summary(predictor_run)
    predictor, predictor_config = load_model_dir(predictor_run / "model")
    recipe = predictor_config.train
    predictor_card = {**old, "training_commands": old["training_commands"] + [
                          c.replace("STEPS", str(run["steps"])) for c in CONTINUATION_COMMANDS],
                      "steps": old["steps"] + run["steps"], "final_logged_loss": run["final_logged_loss"],
                      "train_minutes_logged": round(old["train_minutes_logged"] + run["train_minutes_logged"], 1),
                      "sessions": old["sessions"] + run["sessions"],
                      "images_per_second_last_session": run["images_per_second_last_session"],
                      "hardware": HARDWARE.format(cpu=cpu_name()), "torch": torch.__version__,
                      "continued": f"{old['steps']} steps as first shipped, then {run['steps']} more from its "
                                   f"weights (sr3 train --init, data seed {recipe.seed}, constant learning rate "
                                   f"{recipe.lr:g} after {recipe.warmup_steps} warm-up steps)"}
    copy_model_files(shipped, out, (CONFIG_FILE, WEIGHTS_FILE, SAMPLING_FILE))  # the refiner, unchanged
    card = read_json(shipped / "model_card.json", "model card")
    card["predictor"] = (f"{PREDICTOR_DIR}/ (see its model_card.json): continued for {run['steps']} steps after "
                         "this refiner was trained; the refiner was trained against the predictor's first "
                         f"{old['steps']} steps and is unchanged")
    card["export"] = (f"python experiments/export_default_4x.py --continues {shipped} --predictor-run "
                      f"{predictor_run} --out {out}")
    save_model_dir(out / PREDICTOR_DIR, predictor, predictor_config, dtype=torch.bfloat16,
                   extra_files={"model_card.json": predictor_card})
    copy_model_files(shipped / PREDICTOR_DIR, out / PREDICTOR_DIR, (SAMPLING_FILE,))
    write_json(out / "model_card.json", card)
    print(json.dumps(predictor_card, indent=2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--predictor-run", type=Path, required=True)
    p.add_argument("--refiner-run", type=Path, help="the refiner's training run (a new pair; not with --continues)")
    p.add_argument("--continues", type=Path, help="a shipped model whose refiner, sampling settings and card "
                                                  "history stay; --predictor-run continued its predictor")
    p.add_argument("--sampler", default="ddpm")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--schedule", default="train")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--tile", type=int, default=1024, help="output pixels per tile: the network sees tile/4 px, "
                                                          "so large tiles keep per-tile overhead low")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    if (args.out / "config.json").exists():
        raise SystemExit(f"{args.out} already holds a model; remove it first")
    if (args.refiner_run is None) == (args.continues is None):
        raise SystemExit("give either --refiner-run (a new pair) or --continues (a continued predictor)")
    if args.continues is not None:
        export_continued(args.continues, args.predictor_run, args.out)
        return
    sampling = SamplingConfig(sampler=args.sampler, steps=args.steps, schedule=args.schedule,
                              temperature=args.temperature, tile=args.tile)
    hardware = HARDWARE.format(cpu=cpu_name())
    common = {"training_data": f"{DATA} (43 photos; random 128 px HR crops cut from the photo shrunk by a "
                               "log-uniform factor in [1, 4]; horizontal flips; LR by sr3.degradation)",
              "batch_size": 16, "hardware": hardware, "torch": torch.__version__,
              "weights": "EMA (decay 0.999) weights cast to bfloat16 for shipping (inference runs under bf16 "
                         "autocast where the CPU has bf16 kernels, else fp32)"}
    refiner, refiner_config = load_model_dir(args.refiner_run / "model")
    predictor, predictor_config = load_model_dir(args.predictor_run / "model")
    refiner_summary = run_summary(args.refiner_run)
    predictor_card = {"what": "4x regression predictor of the default model (every U-Net block at LR resolution: "
                              "model.pixel_unshuffle = 4); usable alone as the deterministic upscaler "
                              "(sr3 upscale --model sr3/weights/sr3-refine-4x/predictor)",
                      "training_commands": COMMANDS["predictor"], **run_summary(args.predictor_run), **common,
                      "parameters": count_parameters(predictor)}
    card = {"what": "default 4x model: a diffusion refiner of the residual HR - predictor(LR), conditioned on the "
                    "predictor's output (predict and refine, Whang et al. 2022), every U-Net block at LR resolution",
            "predictor": f"{PREDICTOR_DIR}/ (see its model_card.json)",
            "training_commands": [c.replace("STEPS", str(refiner_summary["steps"])) for c in COMMANDS["refiner"]],
            **refiner_summary, **common, "parameters": count_parameters(refiner),
            "sampling": f"{SAMPLING_FILE}: chosen with benchmarks/few_steps.py on crops of the training photos",
            "export": "python experiments/export_default_4x.py " + " ".join(
                f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items())}
    save_model_dir(args.out / PREDICTOR_DIR, predictor, predictor_config, dtype=torch.bfloat16,
                   extra_files={"model_card.json": predictor_card, SAMPLING_FILE: {"tile": sampling.tile}})
    save_model_dir(args.out, refiner, refiner_config, dtype=torch.bfloat16,
                   extra_files={"model_card.json": card, SAMPLING_FILE: {
                       "sampler": sampling.sampler, "steps": sampling.steps, "schedule": sampling.schedule,
                       "temperature": sampling.temperature, "tile": sampling.tile}})
    print(json.dumps(card, indent=2))


if __name__ == "__main__":
    main()
