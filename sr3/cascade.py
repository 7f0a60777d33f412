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

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_write_text
from .augment import level_is_valid, noise_augment
from .checkpoint import load_model_dir, resolve_model_dir
from .config import Config, SamplingConfig, from_dict, read_json, require
from .degradation import upsample
from .diffusion import Conditioning
from .errors import UserError
from .pipeline import lr_multiple, pad_to_multiple
from .predict_refine import BicubicAnchor, load_anchor
from .samplers import PerSampleNoise
from .sampling import check_tile, count_evaluations, sample

CASCADE_FILE = "cascade.json"
CASCADE_VERSION = 2
_V1_SAMPLING_KEYS = ("sampler", "steps", "schedule", "eta")


def _upgrade(d):
    """Read a version-1 cascade.json (sampling keys at the stage's top level) as version 2."""
    if not isinstance(d, dict) or d.get("version") != 1 or not isinstance(d.get("stages"), list):
        return d
    stages = []
    for stage in d["stages"]:
        if isinstance(stage, dict):
            stage = dict(stage)
            sampling = {k: stage.pop(k) for k in _V1_SAMPLING_KEYS if k in stage}
            if sampling.get("schedule") == "":
                sampling["schedule"] = "auto"
            stage["sampling"] = sampling
        stages.append(stage)
    return {**d, "stages": stages, "version": CASCADE_VERSION}


@dataclass(frozen=True)
class StageSettings:
    """How one stage is run; the model's own config.json says what it is."""

    model: str
    """Stage model directory (or training output folder), relative to the cascade directory."""
    sampling: SamplingConfig = SamplingConfig()
    """Sampler, steps, schedule, eta, temperature, tiling of this stage (sr3.config.SamplingConfig)."""
    scale: int = 0
    """Expected upscaling factor of an SR stage (checked against its config); 0 = base stage / unchecked."""
    aug_level: float = 0.0
    """Conditioning-augmentation level s in [0, 1) of this SR stage's input (sr3/augment.py: noise std,
    gamma = 1 - s^2); the model is told s.  0 = clean conditioning.  Ignored for a base stage."""
    truncated: bool = False
    """True: stop the previous stage's reverse process at level s and pass its x_s (CDM Eq. 4);
    False: sample the previous stage fully, then noise it to s (CDM Eq. 5)."""

    def __post_init__(self):
        require(self.scale >= 0, f"stage '{self.model}': scale = {self.scale} must be >= 0")
        require(level_is_valid(self.aug_level), f"stage '{self.model}': aug_level {self.aug_level} must lie in [0, 1)")


@dataclass(frozen=True)
class CascadeConfig:
    stages: tuple[StageSettings, ...]
    class_names: tuple[str, ...] = ()
    """Names for --class (index i = class i); empty = numeric labels only."""
    version: int = CASCADE_VERSION

    def __post_init__(self):
        require(self.version == CASCADE_VERSION, f"cascade version {self.version} is not supported; "
                f"this sr3 reads version {CASCADE_VERSION}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json_file(cls, path: Path) -> "CascadeConfig":
        d = read_json(path, f"{CASCADE_FILE} (a cascade directory names its stages there)")
        return from_dict(cls, _upgrade(d), str(path))

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
    anchor: BicubicAnchor = dataclasses.field(default_factory=BicubicAnchor)
    """What turns the bicubic conditioning into the stage's own (sr3/predict_refine.py): unchanged, or the
    output of the predictor of a predict-and-refine stage (such as the default 4x model)."""

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
                 bf16: bool = False):
        self.root = Path(root)
        self.config = config or CascadeConfig.from_json_file(self.root / CASCADE_FILE)
        self.device, self.bf16 = torch.device(device), bf16
        if not self.config.stages:
            raise UserError(f"{self.root / CASCADE_FILE}: a cascade needs at least one stage")
        self.stages = []
        for s in self.config.stages:
            folder = resolve_model_dir(self.root / s.model)
            model, cfg = load_model_dir(folder, self.device)
            self.stages.append(Stage(s.model, model, cfg, s, load_anchor(folder, cfg, self.device)))
        self._validate()

    def with_config(self, config: CascadeConfig) -> "Cascade":
        """The same loaded models with other sampling settings (for sweeps); re-validated."""
        if [s.model for s in config.stages] != [st.name for st in self.stages]:
            raise ValueError("with_config changes sampling settings only; load another cascade for other stages")
        other = object.__new__(Cascade)
        other.root, other.config, other.device, other.bf16 = self.root, config, self.device, self.bf16
        other.stages = [dataclasses.replace(st, settings=s) for st, s in zip(self.stages, config.stages)]
        other._validate()
        return other

    # ------------------------------------------------------------ checks
    def _validate(self) -> None:
        where = self.root / CASCADE_FILE
        for i, st in enumerate(self.stages):
            s, cfg = st.settings, st.config
            try:
                check_tile(s.sampling, cfg)
            except UserError as e:
                raise UserError(f"{where}: stage '{st.name}': {e}") from None
            if s.sampling.guidance and not cfg.model.null_class:
                raise UserError(f"{where}: stage '{st.name}' was trained without class dropout "
                                "(model.null_class); set its guidance to 0")
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
            # Training crop sizes must chain only when a base stage fixes every stage's resolution
            # (generation, CDM Fig. 1).  An SR-only cascade runs fully convolutional stages on
            # photos of any size (SR3 Sec. 4: 16x = two 4x stages), so there they need not.
            chained = takes == prev.resolution and cfg.data.crop_size % cfg.data.scale == 0
            if self.stages[0].is_base and not chained:
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
                 base_images: torch.Tensor | None = None, callback=None) -> list[torch.Tensor]:
        """Base -> SR stages; returns every stage's output [B, C, R_i, R_i] in [-1, 1].

        labels: [B] class indices (None for an unconditional base); seeds: one per image.
        base_images: the base stage's outputs from an earlier call with the same base settings,
        labels, seeds and :attr:`base_stop_level`: full samples when stage 2 is not truncated
        (its input does not depend on the level, so sweeps sample the base once), the noisy x_s
        when it is truncated at s (the same for every SR stage truncated at s).
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
        stop = self.base_stop_level
        if base_images is not None:
            x = base_images
        else:
            x = self._sample(0, cond, shape, stage_seeds(seeds, 0), stop, progress, callback)
        return [x] + self._refine(x, 1, labels, seeds, progress, callback)

    def upscale(self, lr: torch.Tensor, seeds: list[int], progress=None, callback=None) -> torch.Tensor:
        """Run the SR stages on real images [B, C, h, w] in [-1, 1] (any size): [B, C, h*S, w*S].

        The first SR stage's input is a real image, so it is not truncated; a nonzero
        aug_level on it noises the input (non-truncated) as at generation time.
        ``callback`` gets each step's info with ``"stage"`` (its index) added.
        """
        return self.upscale_stages(lr, seeds, progress, callback)[-1]

    def upscale_stages(self, lr: torch.Tensor, seeds: list[int], progress=None, callback=None) -> list[torch.Tensor]:
        """As :meth:`upscale`, returning every SR stage's output (the refinement chain), in order."""
        if not self.sr_stages:
            raise UserError(f"{self.root}: this cascade has no SR stages to upscale with")
        start = 1 if self.base else 0
        return self._refine(lr, start, None, seeds, progress, callback, first_is_real=True)

    def count_upscale_evaluations(self, lr_height: int, lr_width: int) -> int:
        """Network evaluations (steps x tiles, all SR stages) to upscale a batch of this LR size."""
        total, h, w = 0, lr_height, lr_width
        for i, st in enumerate(self.sr_stages):
            m = lr_multiple(st.config)
            scale = st.config.data.scale
            hp, wp = (-(-n // m) * m * scale for n in (h, w))
            total += count_evaluations(st.config, st.settings.sampling, hp, wp, self._stop_level(self.stages.index(st)))
            total += st.anchor.count_evaluations(hp, wp, st.settings.sampling)
            h, w = h * scale, w * scale
        return total

    @property
    def total_scale(self) -> int:
        return math.prod(st.config.data.scale for st in self.sr_stages)

    @property
    def base_stop_level(self) -> float:
        """Where the base stage's reverse process stops: stage 2's level s when it is truncated, else 0.
        Two cascades with the same base settings and this level produce the same base outputs."""
        return self._stop_level(0)

    def _stop_level(self, i: int) -> float:
        """Level at which stage i stops: the next stage's s if it is truncated, else 0 (full sample)."""
        if i + 1 < len(self.stages):
            nxt = self.stages[i + 1].settings
            if nxt.truncated:
                return nxt.aug_level
        return 0.0

    def _refine(self, x: torch.Tensor, start: int, labels, seeds, progress, callback=None, first_is_real=False):
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
            padded = pad_to_multiple(x, lr_multiple(st.config))
            cond = Conditioning(
                lr_upsampled=upsample(padded, scale),
                class_label=labels if st.config.model.num_classes else None,
                aug_level=torch.full((x.shape[0],), float(s)) if st.config.model.aug_level_conditioning else None)
            with torch.inference_mode():  # a predict-and-refine stage conditions on its predictor's output
                cond = st.anchor(cond, st.settings.sampling, self.device, self.bf16)
            x = self._sample(i, cond, cond.lr_upsampled.shape, stage_seeds(seeds, i), self._stop_level(i),
                             progress, callback)[..., :h * scale, :w * scale]
            outputs.append(x)
        return outputs

    def _sample(self, i: int, cond: Conditioning, shape, seeds: list[int], stop_level: float, progress,
                callback=None) -> torch.Tensor:
        """Stage i: a full sample, or its reverse process stopped at ``stop_level`` (truncated
        conditioning, CDM Eq. 4), returning the noisy x_s unclipped."""
        st = self.stages[i]
        stage_callback = None if callback is None else (lambda info: callback({**info, "stage": i}))
        with torch.inference_mode():
            return sample(st.model, st.config, cond, shape, st.settings.sampling, seeds, stop_level=stop_level,
                          device=self.device, bf16=self.bf16, progress=progress, callback=stage_callback).cpu()


def image_grid(images: torch.Tensor, columns: int, pad: int = 1) -> torch.Tensor:
    """Tile [N, C, H, W] in [-1, 1] into one [C, rows*(H+pad), columns*(W+pad)] image (white gaps)."""
    n, c, h, w = images.shape
    rows = -(-n // columns)
    grid = torch.ones(c, rows * (h + pad) - pad, columns * (w + pad) - pad)
    for k, img in enumerate(images):
        r, col = divmod(k, columns)
        grid[:, r * (h + pad): r * (h + pad) + h, col * (w + pad): col * (w + pad) + w] = img
    return grid


def load_cascade(root: str | Path, device="cpu", overrides: dict | None = None,
                 sampling_overrides: dict | None = None, bf16: bool = False) -> Cascade:
    """Load a cascade directory.

    overrides: aug_level / truncated for every SR stage (None values are ignored);
    sampling_overrides: SamplingConfig fields for every stage (e.g. the flags a user gave), except
        ``guidance``, which goes to the class-conditional stages only;
    bf16: run the stages under bf16 autocast (as sr3.pipeline does for one model).
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: cascade directory not found")
    config = CascadeConfig.from_json_file(root / CASCADE_FILE)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    sampling_overrides = dict(sampling_overrides or {})
    guidance = sampling_overrides.pop("guidance", None)
    if overrides or sampling_overrides:  # a base stage ignores aug_level/truncated, so they can go to every stage
        config = dataclasses.replace(config, stages=tuple(
            dataclasses.replace(s, sampling=dataclasses.replace(s.sampling, **sampling_overrides), **overrides)
            for s in config.stages))
    cascade = Cascade(root, config, device=device, bf16=bf16)
    if guidance is None:
        return cascade
    # classifier-free guidance steers the class-conditional stages (the base); unconditional SR stages have no
    # class to steer towards
    return cascade.with_config(dataclasses.replace(config, stages=tuple(
        dataclasses.replace(s, sampling=dataclasses.replace(s.sampling, guidance=guidance))
        if st.config.model.num_classes else s for s, st in zip(config.stages, cascade.stages))))
