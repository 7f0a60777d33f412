"""CDM on Fashion-MNIST in one command: the conditioning-augmentation ablation (CDM, Ho et al.
2021, Sec. 4.1-4.3), classifier-free guidance (Ho & Salimans 2022) and base-only vs cascade.

    python experiments/cdm_ablation.py --data ../shared/data/fashion-mnist --out runs/cdm   # GPU: minutes
    python experiments/cdm_ablation.py --smoke --data DIR --out DIR                         # CPU: tiny (a test)

1. **Train** with ``sr3 train`` (one process per run, all at once on the one device): the
   class-conditional 16x16 base ``fmnist-base16`` (10% class dropout, so it also learns the
   unconditional model guidance needs), the 32x32 base ``fmnist-base32`` (base-only
   comparison), and the 16 -> 32 SR stage in three arms x ``--seeds`` training seeds:
   ``fmnist-sr16-32`` (no augmentation), ``-noise`` (Gaussian noise, level s ~ U[0, 0.6]
   embedded: amortised, CDM Sec. 4.3) and ``-blur``.  At ``--train-deadline-s`` the runs
   still going are stopped and finalised at their last checkpoint with ``sr3 train
   --resume --steps K``; the report says whether every SR run reached the same step (only
   then are the arms comparable).
2. **Measure** every row with the same ``--samples`` class-balanced labels and sampling
   seeds: FD and KID in the feature space of the project's Fashion-MNIST classifier
   (sr3/fmnist_classifier.py, trained here on real training images; NOT Inception, so
   not FID) against the 10,000 real test images, and CAS (a fresh classifier trained on
   the samples, tested on the real test set) beside the same classifier trained on as
   many real images.  Rows: each arm at s = 0; the noise arm at several s, non-truncated
   (CDM Eq. 5) and truncated (Eq. 4); the 16x16 base with guidance weights w; the 32x32
   base alone; real training images (the floor).  Means and 95% t-intervals over seeds.
3. **Write** to --out: ``cdm_ablation.json`` (everything, with loss curves), the samples
   of the first seed as uint8 (``samples.safetensors``, for Inception FD and grids made
   elsewhere) and the weights (fp16) in a few tar files.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing sr3

from sr3.atomic import atomic_write_bytes, atomic_write_text  # noqa: E402
from sr3.cascade import Cascade, CascadeConfig, StageSettings  # noqa: E402
from sr3.checkpoint import load_model_dir, save_model_dir  # noqa: E402
from sr3.commands import train as train_command_module  # noqa: E402
from sr3.config import SamplingConfig  # noqa: E402
from sr3.diffusion import Conditioning  # noqa: E402
from sr3.errors import UserError  # noqa: E402
from sr3.fmnist_classifier import (ClassifierExtractor, FashionCNN, load_classifier, save_classifier,  # noqa: E402
                                   train_classifier)
from sr3.labelled_data import LabelledDataset  # noqa: E402
from sr3.presets import FMNIST_RECIPES, PRESETS  # noqa: E402
from sr3.metrics import (classification_accuracy, classification_accuracy_score, distribution_scores,  # noqa: E402
                         extract_features)
from sr3.sampling import sample  # noqa: E402

ARMS = {"none": "sr16-32", "noise": "sr16-32-noise", "blur": "sr16-32-blur"}  # preset names after the prefix
# The recipes (sr3.presets.FMNIST_RECIPES): gpu = batch 256, minutes on an H200; cpu = batch 64, smaller
# U-Nets, 283 core-minutes of a 2-core CPU for the whole ablation (two sessions).
SAMPLING_STEPS = {"gpu": (50, 20), "cpu": (25, 10)}  # default DDIM steps (base, SR) of each recipe
LEVELS = (0.1, 0.2, 0.3, 0.5)  # sampling-time levels s of the noise arm (trained on s ~ U[0, 0.6])
# the SR stage behind the guidance rows: the best arm of the first CPU run (1,500 SR steps, blur), fixed
# before any result of the 3,000-step runs (the first run used the noise arm at s = 0.2, chosen before any result)
GUIDED_SR = ("blur", 0.0, False)
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306}  # Student t quantiles for 95% intervals

# --smoke: the same code path with tiny models and counts (CPU, seconds)
SMOKE_STEPS = 4
SMOKE_TRAIN = ["--steps", str(SMOKE_STEPS), "--train.batch-size", "8", "--train.checkpoint-every", "2", "--train.bf16", "false",
               "--model.base-channels", "8", "--model.groupnorm-groups", "4"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="Fashion-MNIST IDX folder")
    p.add_argument("--out", type=Path, required=True, help="results folder (JSON, samples, weight tars)")
    p.add_argument("--work", type=Path, help="training runs folder (default: OUT/runs)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seeds", type=int, default=3, help="training seeds per SR arm (>= 2 for intervals)")
    p.add_argument("--samples", type=int, default=5000, help="generated images per row (class-balanced)")
    p.add_argument("--recipe", choices=tuple(FMNIST_RECIPES), default="gpu",
                   help="gpu: the fmnist-* presets; cpu: the smaller fmnist-cpu-* presets (sr3/presets.py)")
    p.add_argument("--base-steps", type=int, help="DDIM steps of the base stages (default: 50 gpu, 25 cpu)")
    p.add_argument("--sr-steps", type=int, help="DDIM steps of the SR stage (default: 20 gpu, 10 cpu)")
    p.add_argument("--eta", type=float, default=0.0,
                   help="DDIM eta of every stage in [0, 1]: 0 deterministic, 1 the DDPM-like stochastic sampler")
    p.add_argument("--guidance", type=lambda v: tuple(float(w) for w in v.split(",")), default=(0.0, 0.5, 1.0, 2.0, 4.0),
                   help="comma-separated classifier-free guidance weights w >= 0 for the guidance rows")
    p.add_argument("--train-deadline-s", type=float, default=200.0, help="stop training after this many seconds")
    p.add_argument("--parallel", type=int, default=3, help="training processes at a time (>= 1)")
    p.add_argument("--calibrate-s", type=float, default=0.0,
                   help="first measure steps/s for this many seconds, then size the runs to end by the deadline")
    p.add_argument("--base-train-steps", type=int, help="training steps of the base models (default: the preset's)")
    p.add_argument("--sr-train-steps", type=int, help="training steps of every SR run (default: the preset's)")
    p.add_argument("--deadline-s", type=float, default=330.0, help="skip rows that would start after this")
    p.add_argument("--rows", type=lambda v: tuple(v.split(",")), default=("",),
                   help="comma-separated row-name prefixes to measure, e.g. 'noise-' for the noise arm's s-curve "
                        "(default: every row); the real-images reference is always measured")
    p.add_argument("--keep-samples", type=int, default=500, help="samples per row (first seed) written out")
    p.add_argument("--measure-only", action="store_true",
                   help="train nothing: measure the runs that have finished (others may still be training)")
    p.add_argument("--smoke", action="store_true", help="tiny models and counts, for the CPU test")
    return p.parse_args(argv)


# ------------------------------------------------------------------ 1. training
def training_runs(seeds: int, recipe: str) -> dict[str, tuple[str, int]]:
    """run name -> (preset, training seed), in the order they are started."""
    prefix = FMNIST_RECIPES[recipe]
    runs = {"base16": (prefix + "base16", 0)}
    runs.update({f"sr-{arm}-s{seed}": (prefix + name, seed) for seed in range(seeds) for arm, name in ARMS.items()})
    runs["base32"] = (prefix + "base32", 0)  # the side comparison last: it is the first left out at a deadline
    return runs


def train_command(preset: str, seed: int, args, run_dir: Path, extra=()) -> list[str]:
    """``sr3 train`` with these flags, run through :func:`sr3_train` (so the GPU machine needs none of
    the web packages the whole ``sr3`` CLI imports)."""
    return [sys.executable, str(Path(__file__).resolve()), "--sr3-train", "--preset", preset, "--data", str(args.data),
            "--out", str(run_dir), "--train.seed", str(seed), "--device", args.device, "--no-progress",
            *(SMOKE_TRAIN if args.smoke else []), *extra]


def sr3_train(argv: list[str]) -> int:
    """Exactly ``sr3 train ARGV`` (the command's own parser and run function)."""
    parser = argparse.ArgumentParser(prog="sr3")
    train_command_module.add_parser(parser.add_subparsers())
    args = parser.parse_args(["train", *argv])
    try:
        return args.func(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def training_seconds(log: list[dict]) -> float:
    """Seconds of training in a run's log.jsonl lines, over every session: ``elapsed_s`` restarts
    at each ``--resume``, so each session's last logged value is added."""
    total = last = 0.0
    for entry in log:
        if entry["elapsed_s"] < last:  # a resumed session began
            total += last
        last = entry["elapsed_s"]
    return total + last


def target_steps(name: str, preset: str, args) -> int:
    """Training steps run ``name`` is to reach: --base-train-steps / --sr-train-steps, else its preset's."""
    override = args.base_train_steps if name.startswith("base") else args.sr_train_steps
    return override or (SMOKE_STEPS if args.smoke else PRESETS[preset].train.steps)


def finished_steps(run_dir: Path) -> int:
    """Steps of the run's final model (0 when it has none yet)."""
    config = run_dir / "model" / "config.json"
    return json.loads(config.read_text())["train"]["steps"] if config.exists() else 0


def checkpoint_step(run_dir: Path) -> int:
    state = run_dir / "checkpoint" / "state.json"
    return json.loads(state.read_text())["step"] if state.exists() else 0


def plan_steps(rates: dict[str, float], startup_s: float, budget_s: float, parallel: int, seeds: int,
               sr_share: float, multiple: int, safety: float = 0.8) -> tuple[int, int]:
    """(base steps, SR steps) that let every run finish within ``budget_s``.

    rates: steps/s of ``base16``, ``sr`` and ``base32`` measured with ``parallel`` runs sharing
    the device; startup_s: seconds from launching a run to its first step; sr_share: SR steps as a
    fraction of base steps (the presets' ratio).  The runs fill ``parallel`` slots, so the slot
    time of all runs, sum(steps / rate) plus a start-up each, must fit ``parallel * budget_s``;
    ``safety`` leaves room for uneven queueing.  Steps are rounded down to ``multiple`` (the
    checkpoint interval), at least one multiple.
    """
    runs = 2 + 3 * seeds
    slot_time = safety * parallel * budget_s - runs * startup_s
    per_base_step = 1 / rates["base16"] + 1 / rates["base32"] + 3 * seeds * sr_share / rates["sr"]
    base = max(multiple, int(slot_time / per_base_step) // multiple * multiple)
    return base, max(multiple, int(base * sr_share) // multiple * multiple)


def calibrate(args, runs_dir: Path, env: dict) -> dict:
    """Steps/s of base16, an SR run and base32 trained side by side for ``--calibrate-s`` seconds
    (the way the real runs will share the device), and their start-up time; the runs are discarded."""
    prefix = FMNIST_RECIPES[args.recipe]
    kinds = {"base16": prefix + "base16", "sr": prefix + ARMS["noise"], "base32": prefix + "base32"}
    t = time.perf_counter()
    procs = {kind: subprocess.Popen(train_command(preset, 0, args, runs_dir / f"calibrate-{kind}",
                                                  ["--steps", "1000000", "--train.log-every", "10"]),
                                    stdout=open(runs_dir / f"calibrate-{kind}.log", "w"), stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True) for kind, preset in kinds.items()}
    time.sleep(args.calibrate_s)
    wall = time.perf_counter() - t
    for p in procs.values():
        os.killpg(p.pid, signal.SIGTERM)
        p.wait()
    rates, startups = {}, []
    for kind in kinds:
        log = runs_dir / f"calibrate-{kind}" / "log.jsonl"
        lines = [json.loads(line) for line in log.read_text().splitlines() if line] if log.exists() else []
        if len(lines) < 2:
            return {"error": f"{kind} logged {len(lines)} lines in {args.calibrate_s:g} s; calibrate longer"}
        first, last = lines[0], lines[-1]  # rate between log lines: start-up and the first step excluded
        rates[kind] = (last["step"] - first["step"]) / (last["elapsed_s"] - first["elapsed_s"])
        startups.append(wall - last["elapsed_s"])
        shutil.rmtree(runs_dir / f"calibrate-{kind}")
    return {"steps_per_s": rates, "startup_s": max(startups), "seconds": round(time.perf_counter() - t, 1),
            "parallel_during_calibration": len(kinds)}


def train_all(args, runs_dir: Path, t0: float) -> tuple[dict, dict | None]:
    """Run ``--parallel`` trainings at a time, stop the unfinished ones at the
    deadline, finalise them at their last checkpoint; returns per-run facts (steps,
    seconds, loss curve) and the calibration (None without ``--calibrate-s``).  Processes on one
    GPU time-slice it: on an H200, 11 at once ran ~4 steps/s each
    (experiments/results/cdm_ablation_gpu_attempt1.json)."""
    runs = training_runs(args.seeds, args.recipe)
    # Runs that finished earlier (an earlier session, or trained by hand with the same names) are kept, and
    # runs stopped after a checkpoint continue from it: a recipe longer than one session is split across
    # resumable invocations of this script.  A run finished at fewer steps than asked for now (a preset
    # made longer, or --sr-train-steps) continues from its last checkpoint to the new length.
    finished = {n for n in runs if finished_steps(runs_dir / n) >= target_steps(n, runs[n][0], args)}
    recipe_file = runs_dir / "recipe.txt"
    if recipe_file.exists() and recipe_file.read_text() != args.recipe:
        raise SystemExit(f"{runs_dir}: holds runs of the {recipe_file.read_text()} recipe; "
                         f"pass another --work for --recipe {args.recipe}")
    atomic_write_text(recipe_file, args.recipe)
    # one thread each: several runs share the machine, and oversubscribed OpenMP threads spin-wait
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    calibration = None
    if args.calibrate_s > 0 and not (args.base_train_steps and args.sr_train_steps) and not args.measure_only:
        calibration = calibrate(args, runs_dir, env)
        print(f"calibration: {calibration}", flush=True)
        if "error" not in calibration:
            base_preset = PRESETS[FMNIST_RECIPES[args.recipe] + "base16"]
            share = PRESETS[FMNIST_RECIPES[args.recipe] + ARMS["none"]].train.steps / base_preset.train.steps
            budget = args.train_deadline_s - (time.perf_counter() - t0)
            base, sr = plan_steps(calibration["steps_per_s"], calibration["startup_s"], budget, args.parallel,
                                  args.seeds, share, 2 if args.smoke else base_preset.train.checkpoint_every)
            args.base_train_steps = args.base_train_steps or base
            args.sr_train_steps = args.sr_train_steps or sr
            calibration["planned"] = {"base_steps": args.base_train_steps, "sr_steps": args.sr_train_steps}
    queue, procs = [] if args.measure_only else [n for n in runs if n not in finished], {}
    while time.perf_counter() - t0 < args.train_deadline_s:
        running = [n for n, p in procs.items() if p.poll() is None]
        while queue and len(running) < args.parallel:
            name = queue.pop(0)
            preset, seed = runs[name]
            extra = ["--steps", str(target_steps(name, preset, args))] + (["--resume"] if checkpoint_step(runs_dir / name) else [])
            procs[name] = subprocess.Popen(train_command(preset, seed, args, runs_dir / name, extra),
                                           stdout=open(runs_dir / f"{name}.log", "w"), stderr=subprocess.STDOUT,
                                           env=env, start_new_session=True)
            running.append(name)
        if not running and not queue:
            break
        time.sleep(1.0)
    if queue:
        print(f"never started (deadline): {queue}", flush=True)
    stopped = [n for n, p in procs.items() if p.poll() is None]
    for name in stopped:
        os.killpg(procs[name].pid, signal.SIGTERM)
    for name in stopped:
        procs[name].wait()
    failed = [n for n, p in procs.items() if n not in stopped and p.returncode != 0]
    if failed:
        tail = (runs_dir / f"{failed[0]}.log").read_text()[-2000:]
        raise SystemExit(f"training failed: {failed}\n{tail}")
    # Finalise stopped runs at their own last checkpoint (a checkpoint cannot be rolled back to a common
    # step); the report gives every run's steps, and the ablation says whether the SR runs are comparable.
    finals = []
    for name in stopped:
        k = checkpoint_step(runs_dir / name)
        if k == 0:
            print(f"{name}: stopped before its first checkpoint; left out", flush=True)
            continue
        preset, seed = runs[name]
        finals.append(subprocess.Popen(train_command(preset, seed, args, runs_dir / name, ["--resume", "--steps", str(k)]),
                                       stdout=open(runs_dir / f"{name}.final.log", "w"), stderr=subprocess.STDOUT,
                                       env=env))
    for p in finals:
        p.wait()
    facts = {}
    for name in runs:
        model = runs_dir / name / "model"
        if not (model / "config.json").exists():
            continue
        facts[name] = {"preset": runs[name][0], "seed": runs[name][1], "stopped_at_deadline": name in stopped,
                       **run_facts(runs_dir / name)}
    return facts, calibration


def run_facts(run_dir: Path) -> dict:
    """Steps, batch, parameters, training seconds and loss curve of one finished ``sr3 train`` folder."""
    model = run_dir / "model"
    curve = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line]
    cfg = json.loads((model / "config.json").read_text())
    return {"steps": cfg["train"]["steps"], "batch": cfg["train"]["batch_size"],
            "parameters": sum(t.numel() for t in load_file(str(model / "model.safetensors")).values()),
            "train_seconds": training_seconds(curve) if curve else None,
            "images_per_s": curve[-1]["images_per_s"] if curve else None,
            "loss_curve": [(e["step"], round(e["loss"], 5)) for e in curve]}


# ------------------------------------------------------------------ 2. measuring
SAMPLING = {"network_batching": "batched"}  # batch invariance is not needed: every row uses the same batches


def grey_uint8(images: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] images in [-1, 1] with equal channels -> [N, H, W] uint8, the kept-samples format."""
    return ((images.mean(dim=1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def write_kept(folder: Path, kept: dict[str, torch.Tensor]) -> None:
    """FOLDER/samples.safetensors: the kept rows (grey_uint8) and their labels, replaced whole (no torn file)."""
    atomic_write_bytes(folder / "samples.safetensors", save({k: v.contiguous() for k, v in kept.items()}))


def balanced_labels(n: int, classes: int) -> torch.Tensor:
    """0, 1, ..., classes-1, 0, 1, ...: every prefix is class-balanced, so kept samples cover all classes."""
    return torch.arange(classes).repeat(-(-n // classes))[:n]


def real_reference(train32: LabelledDataset, labels: torch.Tensor) -> torch.Tensor:
    """Real training images with the given labels (image k has label k): the FD floor and CAS reference."""
    per_class = {c: iter(torch.nonzero(train32.labels == c)[:, 0].tolist()) for c in range(train32.num_classes)}
    return train32.images_at(torch.tensor([next(per_class[c]) for c in labels.tolist()]))


def fmnist_cascade(runs_dir: Path, base: str, sr: str, base_steps: int, sr_steps: int, level: float = 0.0,
                   truncated: bool = False, guidance: float = 0.0, eta: float = 0.0,
                   device=torch.device("cpu"), base_sampler: str = "ddim") -> Cascade:
    """The 16x16 base run ``base`` then the 16 -> 32 SR run ``sr`` (run folders inside ``runs_dir``),
    sampled with ``base_steps`` / ``sr_steps``; the SR stage conditioned at level ``level``
    (truncated: CDM Eq. 4, else Eq. 5) and the base guided with weight ``guidance``.  The SR stage is
    DDIM with ``eta``; the base is ``base_sampler``: ddim (with the same ``eta``) or dpmpp
    (DPM-Solver++(2M), deterministic, so ``eta`` does not apply to it)."""
    base_eta = eta if base_sampler == "ddim" else 0.0
    config = CascadeConfig(stages=(
        StageSettings(base, sampling=SamplingConfig(sampler=base_sampler, steps=base_steps, eta=base_eta,
                                                    guidance=guidance, **SAMPLING)),
        StageSettings(sr, sampling=SamplingConfig(steps=sr_steps, eta=eta, **SAMPLING), scale=2,
                      aug_level=level, truncated=truncated)))
    return Cascade(runs_dir, config, device=device, bf16=device.type == "cuda")


class Judge:
    """FD/KID with the project's Fashion-MNIST classifier and CAS, against the real test set."""

    def __init__(self, args, train32: LabelledDataset, test32: LabelledDataset, device, saved: Path):
        """saved: the classifier's folder; trained there on the first call, loaded on later ones."""
        self.device, self.smoke = device, args.smoke
        if (saved / "model.safetensors").exists():
            self.classifier = load_classifier(saved).to(device)
        else:
            n_clf = min(512, len(train32)) if args.smoke else len(train32)
            idx = torch.randperm(len(train32), generator=torch.Generator().manual_seed(0))[:n_clf]
            self.classifier = train_classifier(train32.images_at(idx), train32.labels[idx],
                                               epochs=5 if args.smoke else 3, seed=0, device=device)
            save_classifier(self.classifier.cpu(), saved)
            self.classifier.to(device)
        n_test = min(256, len(test32)) if args.smoke else len(test32)
        self.test_x = test32.images_at(torch.arange(n_test)).to(device)
        self.test_y = test32.labels[:n_test]
        self.classifier_top1 = classification_accuracy(self.classifier, self.test_x, self.test_y.to(device),
                                                       topk=(1,))["top1"]
        self.extractor = ClassifierExtractor(self.classifier)
        self.real_features, _ = self.features(self.test_x)

    def features(self, images: torch.Tensor):
        feats, logits = extract_features(self.extractor, [b.to(self.device).add(1).div(2) for b in images.split(1000)])
        return feats.cpu(), logits.cpu()

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        feats, logits = self.features(images)
        sc = distribution_scores(self.real_features, feats, extractor=self.extractor.name, fake_logits=logits,
                                 kid_subset_size=1000, kid_subsets=50)
        cas = classification_accuracy_score(FashionCNN, images.to(self.device), labels, self.test_x, self.test_y,
                                            epochs=1 if self.smoke else 10, batch_size=128, seed=0,
                                            device=self.device, topk=(1,))
        return {"fd": sc.fid, "kid": sc.kid_mean, "is": sc.is_mean, "cas_top1": cas["top1"], "n": len(images)}


def interval(values: list[float]) -> dict:
    """Mean and 95% t-interval half-width over training seeds."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "ci95": None, "n": n, "values": values}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return {"mean": mean, "ci95": T_975.get(n - 1, 1.96) * sd / math.sqrt(n), "sd": sd, "n": n, "values": values}


def difference(a: dict, b: dict) -> dict | None:
    """Mean of a minus mean of b with a 95% pooled-variance t-interval (independent training seeds):
    the interval's half-width is the smallest difference this many seeds can resolve."""
    if a["n"] < 2 or b["n"] < 2:
        return None
    df = a["n"] + b["n"] - 2
    pooled = ((a["n"] - 1) * a["sd"] ** 2 + (b["n"] - 1) * b["sd"] ** 2) / df
    half = T_975.get(df, 1.96) * math.sqrt(pooled * (1 / a["n"] + 1 / b["n"]))
    diff = a["mean"] - b["mean"]
    return {"diff": diff, "ci95": half, "resolved": abs(diff) > half}


def summarise(rows: dict, plan: list) -> dict:
    """Each ablation row's mean and 95% interval over the training seeds measured so far."""
    ablation = {}
    for name, arm, level, truncated in plan:
        values = [rows[k] for k in rows if k.startswith(name + "/")]
        if values:
            ablation[name] = {"arm": arm, "level": level, "truncated": truncated,
                              **{m: interval([v[m] for v in values]) for m in ("fd", "kid", "cas_top1")}}
    reference = ablation.get("none-s0")
    for name, row in ablation.items():  # every row against no augmentation, the question CDM asks
        if reference is not None and name != "none-s0":
            row["vs_none"] = {m: difference(row[m], reference[m]) for m in ("fd", "cas_top1")}
    return ablation


def main(argv=None) -> int:
    args = parse_args(argv)
    base_steps, sr_steps = (3, 2) if args.smoke else SAMPLING_STEPS[args.recipe]
    args.base_steps, args.sr_steps = args.base_steps or base_steps, args.sr_steps or sr_steps
    if args.smoke:
        args.samples, args.keep_samples = 40, 10
    t0 = time.perf_counter()
    device = torch.device(args.device)
    out, runs_dir = args.out, args.work or args.out / "runs"
    out.mkdir(parents=True, exist_ok=True)
    runs_dir.mkdir(parents=True, exist_ok=True)
    # Rows measured by an earlier invocation with the same settings are kept (a recipe longer than one
    # session continues where it stopped); any other setting starts the rows afresh.
    settings = {"recipe": args.recipe, "samples_per_row": args.samples, "base_steps": args.base_steps,
                "sr_steps": args.sr_steps, "sampler": f"ddim (eta {args.eta:g}), logsnr schedule"}
    earlier = json.loads((out / "cdm_ablation.json").read_text()) if (out / "cdm_ablation.json").exists() else {}
    resumed = earlier.get("settings") == settings
    report = {"command": "python experiments/cdm_ablation.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
              "torch": torch.__version__, "settings": settings, **settings,
              "sessions": earlier.get("sessions", 0) + 1 if resumed else 1}
    if resumed:  # every report written before the rows are re-checked keeps them: a kill then loses nothing
        report.update({k: earlier[k] for k in ("rows", "ablation") if k in earlier})

    def save_report():
        atomic_write_text(out / "cdm_ablation.json", json.dumps(report, indent=1) + "\n")
        print(f"[{time.perf_counter() - t0:.0f}s] report written", flush=True)

    report["training"], report["calibration"] = train_all(args, runs_dir, t0)
    report["train_wall_s"] = round(time.perf_counter() - t0, 1)
    sr_steps = {name: run["steps"] for name, run in report["training"].items() if name.startswith("sr-")}
    report["sr_runs_comparable"] = len(set(sr_steps.values())) == 1 and len(sr_steps) == 3 * args.seeds
    if not report["sr_runs_comparable"]:
        print(f"WARNING: SR runs reached different steps or some are missing: {sr_steps}; the ablation rows "
              "compare training lengths, not augmentation", flush=True)
    save_report()

    train32 = LabelledDataset(args.data, 32, split="train")
    test32 = LabelledDataset(args.data, 32, split="test")
    judge = Judge(args, train32, test32, device, runs_dir / "classifier")
    report["feature_network"] = judge.extractor.name
    report["feature_classifier_test_top1"] = judge.classifier_top1

    labels = balanced_labels(args.samples, train32.num_classes)
    seeds = list(range(args.samples))  # the same seeds in every row: rows differ only in what is compared
    trained = report["training"]
    # a kept row must come from the same trained runs: one retrained for more steps is measured afresh
    rows = {name: row for name, row in earlier.get("rows", {}).items() if resumed and "runs" in row
            and all(trained.get(run, {}).get("steps") == steps for run, steps in row["runs"].items())}
    kept = {"labels": labels.to(torch.uint8)}
    if resumed and (out / "samples.safetensors").exists():
        kept.update(load_file(str(out / "samples.safetensors")))

    def record(name: str, images: torch.Tensor, t: float, runs: tuple[str, ...], **facts):
        """runs: the trained runs that made the images (their steps are kept with the row)."""
        rows[name] = {**judge(images, labels), **facts, "runs": {run: trained[run]["steps"] for run in runs},
                      "seconds": round(time.perf_counter() - t, 2)}
        if name not in kept:
            kept[name] = grey_uint8(images[:args.keep_samples])
        report["rows"] = rows
        save_report()
        write_kept(out, kept)
        print(f"[{time.perf_counter() - t0:.0f}s] {name}: fd {rows[name]['fd']:.2f} cas {rows[name]['cas_top1']:.3f}",
              flush=True)

    def due(name: str) -> bool:
        """Asked for (--rows), not measured yet, and time left to start it."""
        return (name not in rows and name.startswith(args.rows) and time.perf_counter() - t0 <= args.deadline_s)

    # references: real training images (same count and labels) = the floor of FD, the CAS ceiling at this count
    if "real-train-images" not in rows:
        t = time.perf_counter()
        record("real-train-images", real_reference(train32, labels), t, runs=())

    # The plan: (row name, arm, level, truncated).  Every arm at s = 0 first, then the two base-only rows,
    # then guidance, then the noise arm's levels (both conditionings at each level before the next level): a
    # deadline leaves out the least central rows.
    plan = [(f"{arm}-s0", arm, 0.0, False) for arm in ARMS]
    curve = [(f"noise-s{s:g}-{'trunc' if tr else 'nontrunc'}", "noise", s, tr) for s in LEVELS for tr in (False, True)]
    # base outputs by (stop level, guidance weight): every row with the same pair shares them (the
    # three seeds of a truncated row, every non-truncated row), so the base is sampled once for each
    bases: dict[tuple[float, float], torch.Tensor] = {}

    def generate(sr_run: str, level: float, truncated: bool, guidance: float = 0.0) -> list[torch.Tensor]:
        chain = fmnist_cascade(runs_dir, "base16", sr_run, args.base_steps, args.sr_steps, level, truncated, guidance,
                               args.eta, device)
        key = (chain.base_stop_level, guidance)
        outs = chain.generate(labels, seeds, base_images=bases.get(key))
        bases[key] = outs[0]
        return outs

    def measure(part: list) -> None:
        for name, arm, level, truncated in part:
            for seed in range(args.seeds):
                run = f"sr-{arm}-s{seed}"
                if not due(f"{name}/seed{seed}") or run not in trained or "base16" not in trained:
                    continue
                t = time.perf_counter()
                outs = generate(run, level, truncated)
                record(f"{name}/seed{seed}", outs[-1], t, runs=("base16", run), arm=arm, level=level,
                       truncated=truncated, train_seed=seed)
        report["ablation"] = summarise(rows, plan + curve)
        save_report()

    measure(plan)
    if due("base16-only") and "base16" in trained:
        t = time.perf_counter()
        base_full = bases.get((0.0, 0.0))  # the s = 0 rows' base samples (or the base sampled once more)
        if base_full is None:
            base_full = generate(next(n for n in trained if n.startswith("sr-")), 0.0, False)[0]
        record("base16-only", base_full, t, runs=("base16",))  # the base's own 16x16 samples (the classifier resizes to 32)
    # base-only at 32x32 (the cascade's output size), same labels and seeds
    if due("base32-only") and "base32" in trained:
        t = time.perf_counter()
        model, config = load_model_dir(runs_dir / "base32" / "model", device)
        with torch.inference_mode():
            images = sample(model, config, Conditioning(class_label=labels), (len(labels), 3, 32, 32),
                            SamplingConfig(steps=args.base_steps, eta=args.eta, **SAMPLING), seeds, device=device,
                            bf16=device.type == "cuda").cpu()
        record("base32-only", images, t, runs=("base32",))

    # classifier-free guidance: the base at weight w, then the fixed SR stage chosen in advance
    arm, level, truncated = GUIDED_SR
    for w in args.guidance:
        if not due(f"guidance-w{w:g}") or f"sr-{arm}-s0" not in trained:
            continue
        t = time.perf_counter()
        outs = generate(f"sr-{arm}-s0", level, truncated, guidance=w)
        record(f"guidance-w{w:g}", outs[-1], t, runs=("base16", f"sr-{arm}-s0"), guidance=w,
               sr=f"sr-{arm}-s0 at s={level:g}")
    measure(curve)

    report["rows"] = rows
    report["ablation"] = summarise(rows, plan + curve)
    report["total_s"] = round(time.perf_counter() - t0, 1)
    save_report()
    pack_weights(runs_dir, trained, out)
    print(f"done in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


def pack_weights(runs_dir: Path, trained: dict, out: Path) -> None:
    """fp16 model folders (config, weights, training card) + logs, a few tars of < 16 MB each."""
    groups = {"weights-base.tar": ["base16", "classifier"], "weights-base32.tar": ["base32"],
              **{f"weights-sr-{arm}.tar": [n for n in trained if n.startswith(f"sr-{arm}-")] for arm in ARMS}}
    for tar_name, names in groups.items():
        with tarfile.open(out / tar_name, "w") as tar:
            for name in names:
                if name == "classifier":
                    tar.add(runs_dir / name, arcname=name)
                    continue
                if name not in trained:
                    continue
                model, config = load_model_dir(runs_dir / name / "model")
                half = save_model_dir(runs_dir / f"{name}-fp16", model, config, dtype=torch.float16,
                                      extra_files={"training.json": json.loads(
                                          (runs_dir / name / "model" / "training.json").read_text())})
                tar.add(half, arcname=name)
                tar.add(runs_dir / name / "log.jsonl", arcname=f"{name}/log.jsonl")


if __name__ == "__main__":
    sys.exit(sr3_train(sys.argv[2:]) if sys.argv[1:2] == ["--sr3-train"] else main())
