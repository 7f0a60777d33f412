"""Super-resolution methods in one place: one registry, typed options, one interface.

Every method is an :class:`Upscaler`: ``upscaler(lr, seeds, keys) -> sr`` on a batch
[B, 3, h, w] in [-1, 1], with its ``scale`` known before any work.  :data:`METHODS`
maps a method name to the function that builds it from :class:`MethodOptions`;
``sr3 upscale --method`` and ``sr3 evaluate --methods`` both go through it, so adding
a method is one builder and one entry here.  :func:`external_method` scores the
outputs another tool wrote to a folder (``sr3 evaluate --methods NAME=DIR``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from .cascade import Cascade, load_cascade
from .config import SamplingConfig
from .degradation import upsample
from .errors import UserError
from .external import ExternalOutputs, parse_spec
from .imageio import pil_to_tensor, tensor_to_pil
from .pipeline import DEFAULT_MODEL_DIR, DEFAULT_REGRESSION_DIR, WEIGHTS_DIR, SRPipeline, load
from .raisr import RAISR, load_raisr
from .sampling import check_guidance

DEFAULT_CLASSIC_SCALE = 4
SHIPPED_CASCADES = {16: WEIGHTS_DIR / "cascade-16x", 8: WEIGHTS_DIR / "cascade-8x"}
"""The shipped photo cascades by total scale: the default 4x model, then a second stage (4x for
16x, 2x for 8x) trained with CDM's conditioning augmentation (each directory's model_card.json).
``--scale 16`` / ``--scale 8`` with the default sr3 model use them."""
DEFAULT_CASCADE_DIR = SHIPPED_CASCADES[16]
"""What ``--method cascade`` without a directory runs."""


@dataclass(frozen=True)
class MethodOptions:
    """What a user can say about the methods of one run.

    scale: the requested upscaling factor; bicubic and RAISR use it (default 4), learned
        methods know their own and refuse a different one.
    model_dirs: method name -> its model folder (sr3 / regression model, RAISR bank,
        cascade directory); a method missing here uses its shipped default, if any.
    sampling: flags given for diffusion sampling (SamplingConfig field -> value); they
        override each model's own defaults.
    device, bf16: where and how learned models run.
    """

    scale: int | None = None
    model_dirs: dict[str, Path] = field(default_factory=dict)
    sampling: dict = field(default_factory=dict)
    device: str = "cpu"
    bf16: bool = True


class Upscaler:
    """A method ready to run.  ``name`` keys its results (``"sr3@t0.8"``), ``kind`` is its registry name."""

    name: str
    kind: str
    scale: int
    sampling: SamplingConfig | None = None  # set for diffusion methods

    def __call__(self, lr: torch.Tensor, seeds: list[int], keys: list[str] | None = None, progress=None,
                 callback=None) -> torch.Tensor:
        raise NotImplementedError

    def count_evaluations(self, lr_height: int, lr_width: int) -> int:
        """Progress ticks (network evaluations) one batch of this size will give; 0 = no progress ticks."""
        return 0

    def upscale_pil(self, img: Image.Image, seed: int = 0, key: str | None = None) -> Image.Image:
        lr = pil_to_tensor(img.convert("RGB"))[None]
        return tensor_to_pil(self(lr, [seed], [key] if key else None)[0])


class BicubicUpscaler(Upscaler):
    """Bicubic interpolation with :func:`sr3.degradation.upsample` (the operator SR3 conditions on)."""

    kind = "bicubic"

    def __init__(self, scale: int):
        self.name, self.scale = "bicubic", scale

    def __call__(self, lr, seeds, keys=None, progress=None, callback=None):
        return upsample(lr, self.scale).clamp(-1, 1)


class RaisrUpscaler(Upscaler):
    """RAISR (Romano et al. 2017): hashed least-squares filters on the cheap upscale."""

    kind = "raisr"

    def __init__(self, bank: RAISR):
        self.name, self.scale, self.bank = "raisr", bank.scale, bank

    def __call__(self, lr, seeds, keys=None, progress=None, callback=None):
        return torch.stack([pil_to_tensor(self.bank.upscale(tensor_to_pil(x))) for x in lr])


class ModelUpscaler(Upscaler):
    """A trained SR3 or regression model (sr3/pipeline.py) with its sampling settings."""

    def __init__(self, kind: str, pipe: SRPipeline, sampling: SamplingConfig, name: str | None = None):
        self.kind, self.pipe, self.sampling, self.scale = kind, pipe, sampling, pipe.scale
        self.name = name or kind

    def with_sampling(self, name: str, **changes) -> "ModelUpscaler":
        """The same loaded model sampled differently (evaluation rows such as ``sr3@t0.8``)."""
        return ModelUpscaler(self.kind, self.pipe, dataclasses.replace(self.sampling, **changes), name)

    def __call__(self, lr, seeds, keys=None, progress=None, callback=None):
        return self.pipe.upscale_tensor(lr, seed=seeds, sampling=self.sampling, progress=progress, callback=callback)

    def count_evaluations(self, lr_height, lr_width):
        return self.pipe.count_evaluations(lr_height, lr_width, self.sampling)


class CascadeUpscaler(Upscaler):
    """The SR stages of a cascade chained (SR3's 16x = two 4x stages), each with its cascade.json settings."""

    kind = "cascade"

    def __init__(self, cascade: Cascade, name: str = "cascade"):
        self.name, self.cascade, self.scale = name, cascade, cascade.total_scale

    def __call__(self, lr, seeds, keys=None, progress=None, callback=None):
        return self.cascade.upscale(lr, seeds, progress=progress, callback=callback)

    def count_evaluations(self, lr_height, lr_width):
        return self.cascade.count_upscale_evaluations(lr_height, lr_width)


class FolderUpscaler(Upscaler):
    """Outputs another tool already wrote, looked up by the input's file name (sr3/external.py)."""

    kind = "external"

    def __init__(self, outputs: ExternalOutputs, scale: int):
        self.name, self.outputs, self.scale = outputs.name, outputs, scale

    def __call__(self, lr, seeds, keys=None, progress=None, callback=None):
        if keys is None:
            raise UserError(f"method {self.name!r} reads finished outputs; it needs the input file names")
        return torch.stack([pil_to_tensor(self.outputs(k)) for k in keys])


# ------------------------------------------------------------------ builders
def _check_scale(name: str, requested: int | None, actual: int) -> None:
    if requested is not None and requested != actual:
        raise UserError(f"--method {name}: this model upscales {actual}x, not {requested}x; pass --scale {actual} "
                        "or a model trained for that scale")


def bicubic_method(options: MethodOptions) -> Upscaler:
    return BicubicUpscaler(options.scale or DEFAULT_CLASSIC_SCALE)


def raisr_method(options: MethodOptions) -> Upscaler:
    path = options.model_dirs.get("raisr")
    return RaisrUpscaler(load_raisr(path, options.scale if options.scale or path else DEFAULT_CLASSIC_SCALE))


def model_method(kind: str, objective: str, default_dir: Path) -> Callable[[MethodOptions], Upscaler]:
    """A builder for a method backed by a model directory trained with ``objective``."""
    def build(options: MethodOptions) -> Upscaler:
        if kind == "sr3" and kind not in options.model_dirs and options.scale is not None:
            shipped = shipped_sr3_at(options)
            if shipped is not None:
                return shipped
        path = options.model_dirs.get(kind) or default_dir
        pipe = load(path, device=options.device, bf16=options.bf16)
        trained = pipe.config.diffusion.objective
        if trained != objective:
            raise UserError(f"{path}: --method {kind} needs a model trained with --objective {objective}, "
                            f"this one was trained with {trained}")
        _check_scale(kind, options.scale, pipe.scale)
        sampling = pipe.settings(**options.sampling)
        check_guidance(sampling, pipe.config, has_labels=False)  # before any image, not once per image
        return ModelUpscaler(kind, pipe, sampling)
    return build


def shipped_sr3_at(options: MethodOptions) -> Upscaler | None:
    """The shipped diffusion models at ``options.scale``: 8x and 16x are the shipped cascades;
    None = the shipped 4x model handles (or refuses) it."""
    if options.scale in SHIPPED_CASCADES:
        return CascadeUpscaler(_load_shipped_cascade(options, SHIPPED_CASCADES[options.scale]), name="sr3")
    return None


def _load_shipped_cascade(options: MethodOptions, root: Path = DEFAULT_CASCADE_DIR) -> Cascade:
    return load_cascade(root, device=options.device, sampling_overrides=options.sampling, bf16=options.bf16)


def cascade_method(options: MethodOptions) -> Upscaler:
    root = options.model_dirs.get("cascade")
    if root is None:
        cascade = _load_shipped_cascade(options)
    else:
        cascade = load_cascade(root, device=options.device, sampling_overrides=options.sampling)
    if not cascade.sr_stages:
        raise UserError(f"{root}: this cascade has no SR stages to upscale with")
    _check_scale("cascade", options.scale, cascade.total_scale)
    return CascadeUpscaler(cascade)


METHODS: dict[str, Callable[[MethodOptions], Upscaler]] = {
    "bicubic": bicubic_method,
    "raisr": raisr_method,
    "regression": model_method("regression", "regression", DEFAULT_REGRESSION_DIR),
    "sr3": model_method("sr3", "diffusion", DEFAULT_MODEL_DIR),
    "cascade": cascade_method,
}
"""Method name -> builder.  The order is the order of report columns."""


def build_method(name: str, options: MethodOptions) -> Upscaler:
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; choose from {', '.join(METHODS)} (or NAME=DIR for a folder "
                        "of another tool's outputs)")
    return METHODS[name](options)


def external_method(spec: str, scale: int) -> Upscaler:
    """``NAME=DIR``: the outputs of any other upscaler, scored like a built-in method."""
    name, folder = parse_spec(spec, tuple(METHODS))
    return FolderUpscaler(ExternalOutputs(name, folder), scale)
