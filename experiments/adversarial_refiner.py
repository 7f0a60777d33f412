"""Fine-tune a predict-and-refine model's refiner with an adversarial term on its clean-image estimate.

Experiment (README, "An adversarial term for the refiner"): does a discriminator on
x0_hat(x_t, gamma) (sr3/adversarial.py; Denoising Diffusion GANs, Xiao et al. 2022;
Adversarial Diffusion Distillation, Sauer et al. 2023) make the few-step refiner add
realistic texture where more L1 training did not?  Each step draws its batch, noise levels
and noise from (seed, step) as ``sr3 train`` does, computes the refiner's own objective
(L1 on its v target) plus ``adv_weight`` times the hinge generator loss of the
discriminator on the estimated HR image, then steps the discriminator on real HR crops
against the (detached) estimates.  The EMA refiner is written every ``--keep-every`` steps
as a complete model directory (predictor and sampling.json copied in), ready for
``sr3 evaluate --model``.

    OMP_NUM_THREADS=2 python experiments/adversarial_refiner.py --init sr3/weights/sr3-refine-4x \
        --data ../shared/data/photos/train --out runs/adv-refine --steps 2000 --adv-weight 0.05
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

from sr3.adversarial import PatchDiscriminator, discriminator_loss, generator_loss
from sr3.atomic import json_line
from sr3.checkpoint import load_model_dir, resolve_model_dir, sampling_files
from sr3.diffusion import autocast, distance, make_denoiser
from sr3.predict_refine import PREDICTOR_DIR, load_anchor
from sr3.schedules import training_gammas
from sr3.step_loader import draw_part
from sr3.train import ANCHOR_SAMPLING, make_conditioning, open_dataset, save_trained_model


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--init", required=True, help="model directory of a predict-and-refine model (sr3-refine-4x)")
    p.add_argument("--data", required=True, help="folder of training photos")
    p.add_argument("--out", required=True, help="new folder for log.jsonl and snapshots/step_NNNNNNN")
    p.add_argument("--steps", type=int, default=2000, help="training steps (>= 1)")
    p.add_argument("--batch-size", type=int, default=16, help="crops per step")
    p.add_argument("--lr", type=float, default=1e-4, help="refiner learning rate (AdamW, 100 warm-up steps)")
    p.add_argument("--d-lr", type=float, default=2e-4, help="discriminator learning rate (Adam, betas 0.5, 0.999)")
    p.add_argument("--adv-weight", type=float, default=0.05, help="weight of the adversarial term (0 = L1 only)")
    p.add_argument("--d-width", type=int, default=32, help="discriminator's first-layer channels")
    p.add_argument("--min-gamma", type=float, default=0.0,
                   help="apply the adversarial term only where gamma >= this (0 = at every noise level)")
    p.add_argument("--seed", type=int, default=2, help="seed of the batches, noise levels and noise")
    p.add_argument("--keep-every", type=int, default=250, help="write the EMA refiner every N steps")
    p.add_argument("--ema-decay", type=float, default=0.999)
    args = p.parse_args(argv)

    out = Path(args.out)
    if out.exists():
        sys.exit(f"{out}: exists; choose a new --out")
    init_dir = resolve_model_dir(args.init)
    model, config = load_model_dir(init_dir)
    anchor = load_anchor(init_dir, config)
    dc, bf16 = config.diffusion, config.train.bf16
    dataset = open_dataset(config, Path(args.data), out)
    gammas = training_gammas(dc)
    model_files = sampling_files(init_dir)  # the snapshots sample as the initial model does

    torch.manual_seed(args.seed)
    model.train().requires_grad_(True)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    disc = PatchDiscriminator(width=args.d_width)
    opt_g = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0, foreach=True)
    opt_d = torch.optim.Adam(disc.parameters(), lr=args.d_lr, betas=(0.5, 0.999), foreach=True)
    out.mkdir(parents=True)
    (out / "args.json").write_text(json.dumps(vars(args), indent=1))
    log = open(out / "log.jsonl", "a")
    ema_params, params = list(ema.parameters()), list(model.parameters())
    t0 = time.perf_counter()
    sums = {"l1": 0.0, "adv_g": 0.0, "d": 0.0, "d_real": 0.0, "d_fake": 0.0}
    for step in range(args.steps):
        for group in opt_g.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / 100)
        draw = draw_part(dataset, args.seed, step, 0, args.batch_size)
        torch.manual_seed(draw.dropout_seed)
        generator = draw.generator()
        hr, cond = make_conditioning(draw.batch, config)
        cond = anchor(cond, ANCHOR_SAMPLING, "cpu", bf16)
        # the refiner: its own objective (SR3 Eq. 6, L1 on the v target) + the adversarial term on x0_hat
        denoiser = make_denoiser(model, dc, cond, bf16=bf16, batched=True)
        prediction = denoiser.training_prediction(hr, gammas, generator)
        l1 = distance(prediction.output, prediction.target, dc.loss)
        fake = denoiser.estimate(prediction)
        judged = prediction.gamma >= args.min_gamma
        adversarial = args.adv_weight > 0 and bool(judged.any())
        adv_g = torch.zeros(())
        if adversarial:
            disc.requires_grad_(False)
            with autocast("cpu", bf16):
                adv_g = generator_loss(disc(fake[judged], cond.lr_upsampled[judged]).float())
            disc.requires_grad_(True)
        opt_g.zero_grad(set_to_none=True)
        (l1 + args.adv_weight * adv_g).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt_g.step()
        decay = min(args.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, params, 1 - decay)

        # the discriminator: real HR crops against the refiner's (detached) estimates, same anchors
        d_loss = torch.zeros(())
        if adversarial:
            with autocast("cpu", bf16):
                real_logits = disc(hr[judged], cond.lr_upsampled[judged]).float()
                fake_logits = disc(fake[judged].detach(), cond.lr_upsampled[judged]).float()
            d_loss = discriminator_loss(real_logits, fake_logits)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            sums["d_real"] += float(real_logits.detach().mean())
            sums["d_fake"] += float(fake_logits.detach().mean())
        sums["l1"] += float(l1.detach())
        sums["adv_g"] += float(adv_g.detach())
        sums["d"] += float(d_loss.detach())
        done = step + 1
        if done % 25 == 0:
            line = {"step": done, **{k: round(v / 25, 5) for k, v in sums.items()},
                    "elapsed_s": round(time.perf_counter() - t0, 1)}
            if any(v != v for v in line.values()):
                sys.exit(f"{out}: diverged by step {done} (NaN loss)")
            log.write(json_line(line) + "\n")
            log.flush()
            sums = dict.fromkeys(sums, 0.0)
        if done % args.keep_every == 0 or done == args.steps:
            save_trained_model(out / "snapshots" / f"step_{done:07d}", ema, config, init_dir / PREDICTOR_DIR, model_files)
    log.close()


if __name__ == "__main__":
    main()
