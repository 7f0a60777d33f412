"""Inference: turn a model directory into images (``sr3.load``, ``sr3 upscale``).

:func:`sample_images` is the whole sampling procedure in one short function:
start from per-image seeded noise, walk a noise schedule with a sampler, map the
result out of diffusion space.  :class:`SRPipeline` wraps it for PIL images of any
size (padding to what the U-Net accepts, cropping back), and the ``upscale``
sub-command runs it over files and folders, one bad file never stopping the rest.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from .checkpoint import load_model_dir
from .config import Config
from .degradation import upsample
from .diffusion import Conditioning, Denoiser, from_diffusion_space
from .errors import UserError
from .imageio import list_images, load_image, pil_to_tensor, save_image, tensor_to_pil
from .samplers import SAMPLERS, PerSampleNoise
from .schedules import INFERENCE_SCHEDULES, inference_gammas
from .tiling import TiledDenoiser

DEFAULT_SAMPLER, DEFAULT_STEPS, DEFAULT_TEMPERATURE = "ddim", 20, 1.0
DEFAULT_SCHEDULE = {"ddpm": "sr3", "ddim": "logsnr", "dpmpp": "logsnr"}
DEFAULT_MODEL_DIR = Path(__file__).parent / "weights" / "sr3-4x"
DEFAULT_REGRESSION_DIR = Path(__file__).parent / "weights" / "regression-4x"
# Tiles (output pixels) for whole-image inference on CPU: big enough that the
# overlap costs little, small enough that activations stay in a few hundred MB.
DEFAULT_TILE, DEFAULT_OVERLAP = 256, 32


def check_temperature(temperature: float) -> float:
    """A user's --temperature must lie in [0, 1]; returns it, or raises a one-line UserError."""
    if not 0 <= temperature <= 1:
        raise UserError(f"--temperature {temperature:g} is outside [0, 1]")
    return temperature


def sample_images(model: torch.nn.Module, config: Config, cond: Conditioning, shape, *, sampler: str = DEFAULT_SAMPLER,
                  steps: int = DEFAULT_STEPS, seeds: list[int], device="cpu", schedule: str | None = None,
                  eta: float = 0.0, temperature: float = DEFAULT_TEMPERATURE, bf16: bool = True,
                  tile: int | None = None, overlap: int = DEFAULT_OVERLAP, progress=None) -> torch.Tensor:
    """Generate a batch of images [B, C, H, W] in [-1, 1] from conditioning ``cond``.

    ``seeds[k]`` seeds image k's own generator (initial noise and every sampler step),
    so image k does not depend on the batch it is in.  ``temperature`` in [0, 1] scales
    that noise (1 = the model's distribution; lower = closer to its mean prediction,
    see :class:`sr3.samplers.PerSampleNoise`).  ``tile``: run the network on
    overlapping tiles of this many output pixels (None = whole image).  Regression
    models ignore the sampler and return their single prediction.  ``progress(n)``
    is called once per network evaluation on a tile.
    """
    if len(seeds) != shape[0]:
        raise ValueError("need one seed per image")
    cond = cond.to(device)
    denoise = Denoiser(model, config.diffusion, cond, bf16=bf16)
    tick = (lambda: progress(1)) if progress else None
    if tile:
        denoise = TiledDenoiser(denoise, tile, overlap, on_tile=tick)
    if config.diffusion.objective == "regression":
        x = denoise(torch.zeros(shape, device=device), 1.0)
    else:
        if sampler not in SAMPLERS:
            raise UserError(f"unknown sampler {sampler!r}; choose from {sorted(SAMPLERS)}")
        gammas = inference_gammas(steps, schedule or DEFAULT_SCHEDULE[sampler], config.diffusion)
        noise = PerSampleNoise(seeds, temperature)
        x = noise(torch.empty(shape, device=device))
        kwargs = {"eta": eta} if sampler == "ddim" else {}
        x = SAMPLERS[sampler](denoise, x, gammas, noise, **kwargs)
    return from_diffusion_space(x, cond, config.diffusion).clamp(-1, 1)


class SRPipeline:
    """A loaded super-resolution model.  ``pipe.upscale(img, steps=20, seed=0)``."""

    def __init__(self, model: torch.nn.Module, config: Config, device: str | torch.device = "cpu",
                 bf16: bool = True):
        if config.data.task != "sr":
            raise UserError("this model generates images from class labels; use sr3 generate, not upscale")
        self.model, self.config, self.device, self.bf16 = model.to(device), config, torch.device(device), bf16
        self.scale = config.data.scale

    def upscale_tensor(self, lr: torch.Tensor, *, sampler: str = DEFAULT_SAMPLER, steps: int = DEFAULT_STEPS,
                       seed: int | list[int] = 0, schedule: str | None = None, eta: float = 0.0,
                       temperature: float = DEFAULT_TEMPERATURE, tile: int | None = DEFAULT_TILE,
                       overlap: int = DEFAULT_OVERLAP,
                       progress=None) -> torch.Tensor:
        """[B, 3, h, w] in [-1, 1] -> [B, 3, h*scale, w*scale]; seed may be one int (image k gets seed + k)
        or a list with one seed per image.  ``tile``/``overlap`` in output pixels (tile None = untiled)."""
        seeds = [seed + k for k in range(lr.shape[0])] if isinstance(seed, int) else list(seed)
        h, w = lr.shape[-2:]
        padded = pad_to_multiple(lr, self.lr_multiple)
        cond = Conditioning(lr_upsampled=upsample(padded, self.scale))
        with torch.inference_mode():
            sr = sample_images(self.model, self.config, cond, cond.lr_upsampled.shape, sampler=sampler, steps=steps,
                               seeds=seeds, device=self.device, schedule=schedule, eta=eta, temperature=temperature,
                               bf16=self.bf16,
                               tile=self.valid_tile(tile), overlap=overlap, progress=progress)
        return sr[..., :h * self.scale, :w * self.scale].cpu()

    def valid_tile(self, tile: int | None) -> int | None:
        m = 2 ** (len(self.config.model.channel_mult) - 1)
        if tile is not None and (tile < 2 * DEFAULT_OVERLAP or tile % m):
            raise UserError(f"--tile {tile} must be a multiple of {m} and at least {2 * DEFAULT_OVERLAP}")
        return tile

    def count_tiles(self, lr_height: int, lr_width: int, tile: int | None) -> int:
        """Network evaluations per sampling step for an LR image of this size."""
        if not tile:
            return 1
        h, w = (-(-n // self.lr_multiple) * self.lr_multiple * self.scale for n in (lr_height, lr_width))
        return len(TiledDenoiser(None, tile, DEFAULT_OVERLAP).tiles(h, w))

    @property
    def lr_multiple(self) -> int:
        """LR sizes are padded to a multiple of this so the HR size suits the U-Net."""
        m = 2 ** (len(self.config.model.channel_mult) - 1)
        return m // math.gcd(m, self.scale)

    def upscale(self, image: Image.Image, **kwargs) -> Image.Image:
        """Upscale one PIL image by ``self.scale`` (keyword arguments as in upscale_tensor)."""
        lr = pil_to_tensor(image.convert("RGB"))[None]
        return tensor_to_pil(self.upscale_tensor(lr, **kwargs)[0])


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad the bottom/right of [B, C, H, W] up to multiples of ``multiple``."""
    ph, pw = -x.shape[-2] % multiple, -x.shape[-1] % multiple
    if not (ph or pw):
        return x
    mode = "reflect" if ph < x.shape[-2] and pw < x.shape[-1] else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def load(path: str | Path | None = None, device: str | torch.device = "cpu", bf16: bool = True) -> SRPipeline:
    """Load a model directory (default: the 4x model shipped in the package) as a pipeline."""
    if path is None:
        if not (DEFAULT_MODEL_DIR / "config.json").exists():
            raise UserError("no default model is installed; pass --model DIR (train one with sr3 train)")
        path = DEFAULT_MODEL_DIR
    model, config = load_model_dir(path, device)
    return SRPipeline(model, config, device=device, bf16=bf16)


# ------------------------------------------------------------------ CLI
def add_parser(subparsers) -> None:
    p = subparsers.add_parser("upscale", help="upscale images with SR3 or a baseline")
    p.add_argument("inputs", nargs="+", type=Path, help="image files and/or folders")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: next to each input, *_x4)")
    p.add_argument("--model", type=Path, help="model directory (default: the shipped 4x model)")
    p.add_argument("--cascade", type=Path, help="cascade directory (sr3/cascade.py): chain its SR stages, "
                   "e.g. two 4x stages for 16x; each stage uses the sampler settings of cascade.json")
    p.add_argument("--method", choices=["sr3", "regression", "bicubic", "raisr"], default="sr3",
                   help="sr3/regression use --model; bicubic and raisr are the classic baselines")
    p.add_argument("--scale", type=int, default=4, help="scale for bicubic/raisr (models know their own)")
    p.add_argument("--sampler", choices=sorted(SAMPLERS), default=DEFAULT_SAMPLER)
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="sampling steps (network evaluations)")
    p.add_argument("--schedule", choices=INFERENCE_SCHEDULES, help="inference noise schedule "
                   "(default: sr3 for ddpm, logsnr for ddim/dpmpp)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM stochasticity in [0, 1]")
    p.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE,
                   help="scale of the sampling noise in [0, 1]: 1 = full generated detail, lower = closer to the "
                   f"model's mean prediction (higher PSNR, less texture); default {DEFAULT_TEMPERATURE}; "
                   "--cascade stages use their cascade.json settings instead")
    p.add_argument("--seed", type=int, default=0, help="image k of the run uses seed + k")
    p.add_argument("--batch-size", type=int, default=1, help="images per forward pass (same-size images)")
    p.add_argument("--tile", type=int, default=DEFAULT_TILE, help="run the network on overlapping tiles of this "
                   f"many output pixels (memory bounded by the tile; 0 = whole image; default {DEFAULT_TILE})")
    p.add_argument("--preview", action="store_true", help="write the bicubic upscale at once, replaced by the "
                   "result when it is ready")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def output_path(src: Path, out: Path | None, scale: int) -> Path:
    if out is None:
        return src.with_name(f"{src.stem}_x{scale}{src.suffix}")
    return out / src.name


def run(args: argparse.Namespace) -> int:
    paths = list_images(args.inputs)
    if not paths:
        raise UserError(f"{', '.join(map(str, args.inputs))}: no images found (png, jpg, webp, tiff)")
    if args.steps < 1:
        raise UserError("--steps must be >= 1")
    if args.batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    check_temperature(args.temperature)
    upscale_batch = make_upscaler(args)
    failures = 0
    bar = tqdm(total=len(paths), unit="img", disable=args.no_progress, file=sys.stderr, position=0)
    pending: list[tuple[int, Path, torch.Tensor]] = []

    def flush():
        nonlocal failures
        if not pending:
            return
        lr = torch.stack([t for _, _, t in pending])
        if args.preview:
            for _, src, t in pending:
                save_image(tensor_to_pil(upsample(t[None], args.scale)[0].clamp(-1, 1)),
                           output_path(src, args.out, args.scale))
        sr, scale = upscale_batch(lr, [args.seed + k for k, _, _ in pending])
        for (k, src, _), img in zip(pending, sr):
            try:
                save_image(tensor_to_pil(img), output_path(src, args.out, scale))
            except UserError as e:
                print(f"sr3: error: {e}", file=sys.stderr)
                failures += 1
        bar.update(len(pending))
        pending.clear()

    for k, src in enumerate(paths):
        try:
            lr = pil_to_tensor(load_image(src))
        except UserError as e:
            print(f"sr3: error: {e}", file=sys.stderr)
            failures += 1
            bar.update(1)
            continue
        if pending and (pending[0][2].shape != lr.shape or len(pending) >= args.batch_size):
            flush()
        pending.append((k, src, lr))
    flush()
    bar.close()
    if failures:
        print(f"sr3: {failures} of {len(paths)} images failed", file=sys.stderr)
        return 1
    return 0


def make_upscaler(args: argparse.Namespace):
    """A function (lr batch, seeds) -> (sr batch, scale) for the chosen --method."""
    if args.method in ("bicubic", "raisr"):
        from .evaluate import make_method
        method = make_method(args.method, args)

        def classic(lr, seeds):
            return torch.stack([pil_to_tensor(method(tensor_to_pil(x))) for x in lr]), args.scale
        return classic
    if args.cascade is not None:
        from .cascade import load_cascade  # cascade imports this module
        cascade = load_cascade(args.cascade, device=args.device)
        if not cascade.sr_stages:
            raise UserError(f"{args.cascade}: this cascade has no SR stages to upscale with")
        return lambda lr, seeds: (cascade.upscale(lr, seeds), cascade.total_scale)
    model = args.model if args.model or args.method != "regression" else DEFAULT_REGRESSION_DIR
    pipe = load(model, device=args.device)
    if args.method == "regression" and pipe.config.diffusion.objective != "regression":
        raise UserError(f"{args.model}: --method regression needs a model trained with --objective regression")

    if args.preview and args.scale != pipe.scale:
        args.scale = pipe.scale  # the bicubic preview must have the model's output size
    tile = args.tile or None

    def learned(lr, seeds):
        tiles = pipe.count_tiles(lr.shape[-2], lr.shape[-1], pipe.valid_tile(tile))
        evaluations = 1 if pipe.config.diffusion.objective == "regression" else args.steps
        with tqdm(total=evaluations * tiles, desc=f"{tiles} tile(s) x {evaluations} step(s)", unit="tile-step",
                  disable=args.no_progress, file=sys.stderr, leave=False, position=1) as steps_bar:
            sr = pipe.upscale_tensor(lr, sampler=args.sampler, steps=args.steps, seed=seeds, schedule=args.schedule,
                                     eta=args.eta, temperature=args.temperature, tile=tile,
                                     progress=steps_bar.update)
        return sr, pipe.scale
    return learned
