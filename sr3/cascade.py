"""Cascaded diffusion (CDM, Ho et al. 2021): a base model followed by SR stages.

A *cascade* is a directory holding ``cascade.json`` (a :class:`CascadeConfig`)
that names stage model directories (paths relative to the cascade directory) in
order, each with its own sampler settings and conditioning augmentation:

    cascade/
      cascade.json      {"stages": [{"model": "base16", "steps": 50},
                                    {"model": "sr16-32", "aug_level": 0.2, "truncated": false}],
                         "class_names": ["t-shirt", ...]}
      base16/           config.json + model.safetensors (sr3 train --task generate)
      sr16-32/          an SR stage (sr3 train, ideally with --data.aug-noise-max)

``sr3 generate`` runs base -> SR stages for a class label (CDM Sec. 3, Fig. 1);
``sr3 upscale --cascade`` runs only the SR stages on a user image (SR3's 16x =
two 4x stages, Sec. 4); ``sr3 sweep`` tries a grid of augmentation levels on a
validation set (CDM Sec. 4.3, Fig. 5).  Every check that can fail (classes,
resolutions, scales) runs when the cascade is loaded, before any sampling.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .augment import level_is_valid, noise_augment, truncated_gammas
from .checkpoint import load_model_dir, resolve_model_dir
from .config import Config, _from_dict, read_json
from .degradation import upsample
from .diffusion import Conditioning, Denoiser, from_diffusion_space
from .errors import UserError
from .imageio import atomic_write_text, save_image, tensor_to_pil
from .pipeline import DEFAULT_SCHEDULE, pad_to_multiple, sample_images
from .samplers import SAMPLERS, PerSampleNoise
from .schedules import INFERENCE_SCHEDULES, inference_gammas

CASCADE_FILE = "cascade.json"
CASCADE_VERSION = 1


@dataclass(frozen=True)
class StageSettings:
    """How one stage is sampled; the model's own config.json says what it is."""

    model: str
    """Stage model directory (or training output folder), relative to the cascade directory."""
    sampler: str = "ddim"
    """ddpm, ddim or dpmpp (sr3.samplers)."""
    steps: int = 20
    """Sampling steps (network evaluations) of this stage, >= 1."""
    schedule: str = ""
    """Inference noise schedule (sr3, logsnr, train); "" = the sampler's default."""
    eta: float = 0.0
    """DDIM stochasticity in [0, 1]."""
    scale: int = 0
    """Expected upscaling factor of an SR stage (checked against its config); 0 = base stage / unchecked."""
    aug_level: float = 0.0
    """Conditioning-augmentation level s in [0, 1) of this SR stage's input (sr3/augment.py: noise std,
    gamma = 1 - s^2); the model is told s.  0 = clean conditioning.  Ignored for a base stage."""
    truncated: bool = False
    """True: stop the previous stage's reverse process at level s and pass its x_s (CDM Eq. 4);
    False: sample the previous stage fully, then noise it to s (CDM Eq. 5)."""


@dataclass(frozen=True)
class CascadeConfig:
    stages: tuple[StageSettings, ...]
    class_names: tuple[str, ...] = ()
    """Names for --class (index i = class i); empty = numeric labels only."""
    version: int = CASCADE_VERSION

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json_file(cls, path: Path) -> "CascadeConfig":
        d = read_json(path, f"{CASCADE_FILE} (a cascade directory names its stages there)")
        return _from_dict(cls, d, str(path))

    def with_stage(self, index: int, **changes) -> "CascadeConfig":
        stages = list(self.stages)
        stages[index] = dataclasses.replace(stages[index], **changes)
        return dataclasses.replace(self, stages=tuple(stages))


@dataclass
class Stage:
    name: str
    model: torch.nn.Module
    config: Config
    settings: StageSettings

    @property
    def is_base(self) -> bool:
        return self.config.data.task == "generate"

    @property
    def resolution(self) -> int:
        """Side of the images this stage produces (its training crop)."""
        return self.config.data.crop_size


def write_cascade(root: str | Path, config: CascadeConfig) -> Path:
    """Write ``root/cascade.json`` (stage directories are expected beside it)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / CASCADE_FILE, config.to_json())
    return root


def stage_seeds(seeds: list[int], stage: int, stream: int = 0) -> list[int]:
    """Seeds of stage ``stage`` for images seeded ``seeds``: one independent stream per
    (image seed, stage, purpose); stream 0 = the sampler, 1 = augmentation noise."""
    return [int(np.random.SeedSequence([int(s), stage, stream]).generate_state(1, dtype=np.uint32)[0])
            for s in seeds]


class Cascade:
    """A loaded cascade; all checks run here, before any sampling."""

    def __init__(self, root: str | Path, config: CascadeConfig | None = None, device: str | torch.device = "cpu",
                 bf16: bool = False, batch_invariant: bool = True):
        # batch_invariant=False batches the network over images: faster for many small
        # images (evaluation), but image k then depends on the batch in its last bits.
        self.batch_invariant = batch_invariant
        self.root = Path(root)
        self.config = config or CascadeConfig.from_json_file(self.root / CASCADE_FILE)
        self.device, self.bf16 = torch.device(device), bf16
        if not self.config.stages:
            raise UserError(f"{self.root / CASCADE_FILE}: a cascade needs at least one stage")
        self.stages = []
        for s in self.config.stages:
            model, cfg = load_model_dir(resolve_model_dir(self.root / s.model), self.device)
            self.stages.append(Stage(s.model, model, cfg, s))
        self._validate()

    def with_config(self, config: CascadeConfig) -> "Cascade":
        """The same loaded models with other sampling settings (for sweeps); re-validated."""
        if [s.model for s in config.stages] != [st.name for st in self.stages]:
            raise ValueError("with_config changes sampling settings only; load another cascade for other stages")
        other = object.__new__(Cascade)
        other.root, other.config, other.device, other.bf16 = self.root, config, self.device, self.bf16
        other.batch_invariant = self.batch_invariant
        other.stages = [dataclasses.replace(st, settings=s) for st, s in zip(self.stages, config.stages)]
        other._validate()
        return other

    # ------------------------------------------------------------ checks
    def _validate(self) -> None:
        where = self.root / CASCADE_FILE
        for i, st in enumerate(self.stages):
            s, cfg = st.settings, st.config
            if s.sampler not in SAMPLERS:
                raise UserError(f"{where}: stage '{st.name}' sampler {s.sampler!r} is not one of {sorted(SAMPLERS)}")
            if s.schedule and s.schedule not in INFERENCE_SCHEDULES:
                raise UserError(f"{where}: stage '{st.name}' schedule {s.schedule!r} is not one of "
                                f"{list(INFERENCE_SCHEDULES)}")
            if s.steps < 1:
                raise UserError(f"{where}: stage '{st.name}' needs steps >= 1")
            if not level_is_valid(s.aug_level):
                raise UserError(f"{where}: stage '{st.name}' aug_level {s.aug_level} must lie in [0, 1)")
            if st.is_base:
                if i > 0:
                    raise UserError(f"{where}: stage '{st.name}' is a base (generate) model; only the first "
                                    "stage can be one")
                continue
            if s.scale and s.scale != cfg.data.scale:
                raise UserError(f"{where}: stage '{st.name}' is declared {s.scale}x but was trained for "
                                f"{cfg.data.scale}x ({st.name}/config.json data.scale)")
            if s.aug_level > 0 and not cfg.model.aug_level_conditioning:
                raise UserError(f"{where}: stage '{st.name}' was trained without aug_level conditioning; "
                                "set its aug_level to 0")
            if i == 0:
                continue
            prev = self.stages[i - 1]
            takes = cfg.data.crop_size // cfg.data.scale
            if takes != prev.resolution or cfg.data.crop_size % cfg.data.scale:
                raise UserError(f"{where}: stage resolutions do not chain: '{st.name}' takes {takes}x{takes} "
                                f"but '{prev.name}' makes {prev.resolution}x{prev.resolution}")
            if cfg.model.cond_channels != prev.config.model.image_channels:
                raise UserError(f"{where}: '{st.name}' expects {cfg.model.cond_channels}-channel input but "
                                f"'{prev.name}' makes {prev.config.model.image_channels} channels")
            if s.truncated and s.aug_level > 0 and not prev.is_base and prev.config.diffusion.target == "residual":
                raise UserError(f"{where}: '{st.name}' asks for truncated conditioning but '{prev.name}' diffuses "
                                "a residual, whose x_s is not a noisy image; use truncated: false")

    @property
    def base(self) -> Stage | None:
        return self.stages[0] if self.stages[0].is_base else None

    @property
    def sr_stages(self) -> list[Stage]:
        return [st for st in self.stages if not st.is_base]

    @property
    def class_names(self) -> tuple[str, ...]:
        base = self.base
        n = base.config.model.num_classes if base else 0
        names = self.config.class_names
        return tuple(names[:n]) + tuple(str(i) for i in range(len(names), n))

    def resolve_class(self, label: str | int) -> int:
        """Class index of a name or number, or a UserError naming the valid choices."""
        base = self.base
        if base is None:
            raise UserError(f"{self.root}: this cascade has no base (generate) stage; use sr3 upscale --cascade")
        n = base.config.model.num_classes
        if n == 0:
            raise UserError(f"{self.root}: base stage '{base.name}' has no class conditioning "
                            "(model.num_classes = 0); omit --class")
        names = self.class_names
        text = str(label)
        if text in names:
            return names.index(text)
        if text.lstrip("-").isdigit() and 0 <= int(text) < n:
            return int(text)
        raise UserError(f"unknown class {text!r}; choose one of {', '.join(names)} (or 0-{n - 1})")

    # ------------------------------------------------------------ sampling
    def generate(self, labels: torch.Tensor | None, seeds: list[int], progress=None,
                 base_images: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Base -> SR stages; returns every stage's output [B, C, R_i, R_i] in [-1, 1].

        labels: [B] class indices (None for an unconditional base); seeds: one per image.
        base_images: reuse already-sampled full base outputs (the stage-2 input of a
        non-truncated run does not depend on the level, so sweeps sample the base once).
        """
        base = self.base
        if base is None:
            raise UserError(f"{self.root}: this cascade has no base (generate) stage; use sr3 upscale --cascade")
        if base.config.model.num_classes and labels is None:
            raise UserError(f"{self.root}: the base stage is class-conditional; pass --class")
        if labels is not None and not base.config.model.num_classes:
            raise UserError(f"{self.root}: base stage '{base.name}' has no class conditioning "
                            "(model.num_classes = 0); omit --class")
        res = base.resolution
        shape = (len(seeds), base.config.model.image_channels, res, res)
        cond = Conditioning(class_label=labels)
        stop = self._stop_level(0)
        if base_images is not None and stop == 0:
            x = base_images
        else:
            x = self._sample(base, cond, shape, stage_seeds(seeds, 0), stop, progress)
        return [x] + self._refine(x, 1, labels, seeds, progress)

    def upscale(self, lr: torch.Tensor, seeds: list[int], progress=None) -> torch.Tensor:
        """Run the SR stages on real images [B, C, h, w] in [-1, 1] (any size): [B, C, h*S, w*S].

        The first SR stage's input is a real image, so it is not truncated; a nonzero
        aug_level on it noises the input (non-truncated) as at generation time.
        """
        if not self.sr_stages:
            raise UserError(f"{self.root}: this cascade has no SR stages to upscale with")
        start = 1 if self.base else 0
        return self._refine(lr, start, None, seeds, progress, first_is_real=True)[-1]

    @property
    def total_scale(self) -> int:
        return math.prod(st.config.data.scale for st in self.sr_stages)

    def _stop_level(self, i: int) -> float:
        """Level at which stage i stops: the next stage's s if it is truncated, else 0 (full sample)."""
        if i + 1 < len(self.stages):
            nxt = self.stages[i + 1].settings
            if nxt.truncated:
                return nxt.aug_level
        return 0.0

    def _refine(self, x: torch.Tensor, start: int, labels, seeds, progress, first_is_real=False):
        outputs = []
        for i in range(start, len(self.stages)):
            st = self.stages[i]
            s = st.settings.aug_level
            truncated_input = st.settings.truncated and not (first_is_real and i == start)
            if s > 0 and not truncated_input:  # non-truncated: forward-noise the full sample (CDM Eq. 5)
                eps = PerSampleNoise(stage_seeds(seeds, i, stream=1))(x)
                x = noise_augment(x, s, eps)
            scale = st.config.data.scale
            h, w = x.shape[-2:]
            padded = pad_to_multiple(x, _lr_multiple(st.config))
            cond = Conditioning(
                lr_upsampled=upsample(padded, scale),
                class_label=labels if st.config.model.num_classes else None,
                aug_level=torch.full((x.shape[0],), float(s)) if st.config.model.aug_level_conditioning else None)
            x = self._sample(st, cond, cond.lr_upsampled.shape, stage_seeds(seeds, i), self._stop_level(i),
                             progress)[..., :h * scale, :w * scale]
            outputs.append(x)
        return outputs

    def _sample(self, st: Stage, cond: Conditioning, shape, seeds: list[int], stop_level: float, progress):
        """One stage: a full sample via sample_images, or its reverse process stopped at
        ``stop_level`` (truncated conditioning, CDM Eq. 4), returning the noisy x_s unclipped."""
        s = st.settings
        kwargs = dict(sampler=s.sampler, steps=s.steps, seeds=seeds, device=self.device, eta=s.eta,
                      schedule=s.schedule or None, bf16=self.bf16, progress=progress)
        with torch.inference_mode():
            if stop_level == 0 and self.batch_invariant:
                return sample_images(st.model, st.config, cond, shape, **kwargs).cpu()
            x = sample_to_level(st.model, st.config, cond, shape, level=stop_level,
                                batch_invariant=self.batch_invariant, **kwargs).cpu()
            return x if stop_level > 0 else from_diffusion_space(x, cond, st.config.diffusion).clamp(-1, 1)


def sample_to_level(model, config: Config, cond: Conditioning, shape, *, level: float, sampler: str, steps: int,
                    seeds: list[int], device="cpu", schedule: str | None = None, eta: float = 0.0, bf16=False,
                    progress=None, batch_invariant: bool = True) -> torch.Tensor:
    """Run a sampler over the prefix of its schedule that ends at gamma = 1 - level^2 and return x_s.

    Same seeds, noise and denoiser as :func:`sr3.pipeline.sample_images`, so with DDIM
    (eta = 0) and a level on the schedule, x_s is exactly the full run's intermediate state.
    """
    gammas = truncated_gammas(inference_gammas(steps, schedule or DEFAULT_SCHEDULE[sampler], config.diffusion), level)
    noise = PerSampleNoise(seeds)
    x = noise(torch.empty(shape, device=device))
    denoise = Denoiser(model, config.diffusion, cond.to(device), bf16=bf16, batch_invariant=batch_invariant)
    kwargs = {"eta": eta} if sampler == "ddim" else {}
    return SAMPLERS[sampler](denoise, x, gammas, noise, progress=progress, **kwargs)


def _lr_multiple(config: Config) -> int:
    """LR sides are padded to a multiple of this so the HR side suits the U-Net (as SRPipeline)."""
    m = 2 ** (len(config.model.channel_mult) - 1)
    return m // math.gcd(m, config.data.scale)


def image_grid(images: torch.Tensor, columns: int, pad: int = 1) -> torch.Tensor:
    """Tile [N, C, H, W] in [-1, 1] into one [C, rows*(H+pad), columns*(W+pad)] image (white gaps)."""
    n, c, h, w = images.shape
    rows = -(-n // columns)
    grid = torch.ones(c, rows * (h + pad) - pad, columns * (w + pad) - pad)
    for k, img in enumerate(images):
        r, col = divmod(k, columns)
        grid[:, r * (h + pad): r * (h + pad) + h, col * (w + pad): col * (w + pad) + w] = img
    return grid


def load_cascade(root: str | Path, device="cpu", overrides: dict | None = None, batch_invariant: bool = True
                 ) -> Cascade:
    """Load a cascade directory; ``overrides`` (aug_level, truncated, ...) apply to every SR stage."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: cascade directory not found")
    config = CascadeConfig.from_json_file(root / CASCADE_FILE)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if overrides:  # a base stage ignores aug_level/truncated, so they can go to every stage
        config = dataclasses.replace(config, stages=tuple(dataclasses.replace(s, **overrides) for s in config.stages))
    return Cascade(root, config, device=device, batch_invariant=batch_invariant)


# ------------------------------------------------------------------ CLI
def add_parser(subparsers) -> None:
    g = subparsers.add_parser("generate", help="class-conditional samples from a cascade (base -> SR stages)")
    g.add_argument("--cascade", required=True, type=Path, help="cascade directory (with cascade.json)")
    g.add_argument("--class", dest="label", default=None,
                   help="class name or index; 'all' = --n images of every class (one grid row per class)")
    g.add_argument("--n", type=int, default=8, help="images (per class with --class all), >= 1")
    g.add_argument("--out", required=True, type=Path, help="output folder (images and grid.png)")
    g.add_argument("--seed", type=int, default=0, help="image k uses seed + k (per-stage streams derive from it)")
    _add_sampling_overrides(g)
    g.set_defaults(func=run_generate)

    s = subparsers.add_parser("sweep", help="try conditioning-augmentation levels of a cascade on validation data")
    s.add_argument("--cascade", required=True, type=Path)
    s.add_argument("--data", required=True, type=Path, help="labelled validation data (IDX folder or class folders)")
    s.add_argument("--split", default="test", choices=["train", "test"], help="IDX split used as validation set")
    s.add_argument("--levels", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.5],
                   help="augmentation levels s in [0, 1) to try on the last SR stage")
    s.add_argument("--modes", nargs="+", choices=["non-truncated", "truncated"], default=["non-truncated"])
    s.add_argument("--n-per-class", type=int, default=10, help="generated images per class and setting")
    s.add_argument("--metric", choices=["fd", "kid", "is"], default="fd",
                   help="fd = Frechet distance (lower is better), kid (lower), is = Inception-style score (higher)")
    s.add_argument("--classifier", type=Path, help="feature network: a Fashion-MNIST classifier directory "
                   "(sr3/fmnist_classifier.py); default: a seeded random conv net (uncalibrated)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", type=Path, help="write the results as JSON here")
    s.add_argument("--device", default="cpu")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=run_sweep)


def _add_sampling_overrides(p) -> None:
    p.add_argument("--aug-level", type=float, help="override every SR stage's conditioning-augmentation level s")
    t = p.add_mutually_exclusive_group()
    t.add_argument("--truncated", dest="truncated", action="store_true", default=None,
                   help="stop the previous stage at level s (CDM truncated conditioning)")
    t.add_argument("--non-truncated", dest="truncated", action="store_false",
                   help="sample the previous stage fully, then noise it to s")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")


def run_generate(args: argparse.Namespace) -> int:
    if args.n < 1 or args.batch_size < 1:
        raise UserError("--n and --batch-size must be >= 1")
    if args.aug_level is not None and not level_is_valid(args.aug_level):
        raise UserError(f"--aug-level {args.aug_level} must lie in [0, 1)")
    cascade = load_cascade(args.cascade, args.device, {"aug_level": args.aug_level, "truncated": args.truncated})
    if args.label is None:
        classes = [None] if cascade.base is None or not cascade.base.config.model.num_classes else None
        if classes is None:
            raise UserError(f"{args.cascade}: the base stage is class-conditional; pass --class NAME (or all)")
    elif args.label == "all":
        classes = list(range(len(cascade.class_names)))
    else:
        classes = [cascade.resolve_class(args.label)]
    names = cascade.class_names
    images = []
    bar = tqdm(total=len(classes) * args.n, unit="img", disable=args.no_progress, file=sys.stderr)
    for row, c in enumerate(classes):
        seeds = [args.seed + row * args.n + k for k in range(args.n)]
        for b in range(0, args.n, args.batch_size):
            chunk = seeds[b:b + args.batch_size]
            labels = None if c is None else torch.full((len(chunk),), c, dtype=torch.long)
            out = cascade.generate(labels, chunk)[-1]
            for k, img in zip(range(b, b + len(chunk)), out):
                stem = f"{names[c] if c is not None else 'sample'}_{k:04d}"
                save_image(tensor_to_pil(img), args.out / f"{stem}.png")
            images.append(out)
            bar.update(len(chunk))
    bar.close()
    grid = image_grid(torch.cat(images), columns=args.n)
    save_image(tensor_to_pil(grid), args.out / "grid.png")
    print(f"{len(classes) * args.n} images and grid.png written to {args.out}")
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    from .labelled_data import LabelledDataset
    from .metrics import RandomConvExtractor, distribution_scores, extract_features

    for level in args.levels:
        if not level_is_valid(level):
            raise UserError(f"--levels: {level} must lie in [0, 1)")
    cascade = load_cascade(args.cascade, args.device, batch_invariant=False)  # batched: many small images
    if cascade.base is None:
        raise UserError(f"{args.cascade}: sweep needs a cascade with a base stage")
    last = len(cascade.stages) - 1
    if cascade.stages[last].is_base:
        raise UserError(f"{args.cascade}: sweep needs at least one SR stage after the base")
    real = LabelledDataset(args.data, cascade.stages[-1].resolution,
                           channels=cascade.stages[-1].config.model.image_channels, split=args.split)
    if args.classifier:
        from .fmnist_classifier import load_classifier_extractor
        extractor = load_classifier_extractor(args.classifier)
    else:
        extractor = RandomConvExtractor()
    n_classes = max(1, cascade.base.config.model.num_classes)
    labels = torch.arange(n_classes).repeat_interleave(args.n_per_class)
    seeds = [args.seed + k for k in range(len(labels))]
    real_feats, _ = extract_features(extractor, real.images_at(torch.arange(min(len(real), 2000))).add(1).div(2))
    progress = tqdm(unit="step", disable=args.no_progress, file=sys.stderr)
    cc = cascade.base.config.model.num_classes > 0
    base_images = None
    rows = []
    for mode in args.modes:
        for level in args.levels:
            trial = cascade.with_config(cascade.config.with_stage(last, aug_level=level,
                                                                  truncated=(mode == "truncated")))
            outs = trial.generate(labels if cc else None, seeds, progress=progress.update,
                                  base_images=base_images if last == 1 else None)
            if mode == "non-truncated":
                base_images = outs[0]
            feats, logits = extract_features(extractor, outs[-1].add(1).div(2))
            sc = distribution_scores(real_feats, feats, extractor=extractor.name, fake_logits=logits,
                                     kid_subset_size=min(100, len(feats)), kid_subsets=20)
            rows.append({"mode": mode, "level": level, "fd": sc.fid, "kid": sc.kid_mean, "is": sc.is_mean})
            print(f"{mode:>13}  s={level:<5}  fd={sc.fid:8.3f}  kid={sc.kid_mean:.4f}  is={sc.is_mean:.3f}")
    progress.close()
    sign = -1 if args.metric == "is" else 1
    best = min(rows, key=lambda r: sign * r[args.metric])
    print(f"best by {args.metric}: {best['mode']} s={best['level']} ({args.metric} = {best[args.metric]:.4f}); "
          f"features: {extractor.name}")
    if args.out:
        atomic_write_text(args.out, json.dumps({"features": extractor.name, "metric": args.metric, "rows": rows,
                                                "best": best}, indent=2))
    return 0
