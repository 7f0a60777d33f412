"""RAISR: Rapid and Accurate Image Super-Resolution (Romano, Isidoro & Milanfar 2016).

The prior Google technique SR3 is compared against.  RAISR upscales an image cheaply
(bicubic), then sharpens every pixel of the cheap result with one small linear filter
chosen by a hash of the local geometry (paper Sec. II-III):

* **angle** of the dominant gradient, **strength** and **coherence** from the
  eigen-analysis of the Gaussian-weighted structure tensor over a window around the
  pixel (paper Eq. 7-9): for eigenvalues l1 >= l2 and the eigenvector of l1,
  ``angle = atan2(v1)`` quantised into ``angle_bins`` over [0, pi), ``strength = sqrt(l1)``
  and ``coherence = (sqrt l1 - sqrt l2) / (sqrt l1 + sqrt l2)``, each quantised into 3
  levels;
* **pixel type**: the pixel's position modulo the scale (``scale**2`` types), because
  bicubic interpolation blurs each sub-pixel phase differently (paper Sec. III-A).

One ``filter_size x filter_size`` filter per bucket is learned by least squares from
(cheap-upscaled patch -> true high-resolution pixel) pairs, accumulated as normal
equations ``Q = sum p p^T``, ``V = sum p x`` over a folder of photos (paper Eq. 3-5).
Sparse buckets are regularised towards the identity filter (= plain bicubic), so a
bucket never seen in training falls back to bicubic instead of to black.

As in the paper, filtering acts on luma only; chroma stays bicubic.  Internally luma
is full-range ``Y = 0.299 R + 0.587 G + 0.114 B``, whose weights sum to one, so adding
the luma correction to R, G and B alike changes Y exactly and leaves Cb, Cr untouched.
The paper's optional census-transform blending is not implemented.

Low-resolution training inputs are made with :func:`sr3.degradation.downsample` and
quantised to 8 bits, exactly as ``sr3 evaluate`` makes them, so train and test match.
Filter banks are stored as ``filters.safetensors`` + ``config.json`` (never pickle).
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .atomic import atomic_write_bytes, atomic_write_text, write_json
from .config import from_dict, read_json, require
from .degradation import crop_to_multiple, downsample, upsample
from .errors import UserError
from .imageio import list_images, load_image, pil_to_tensor, tensor_to_pil

CONFIG_VERSION = 1
WEIGHTS_DIR = Path(__file__).parent / "weights"
SUPPORTED_SCALES = (2, 3, 4)
LUMA = (0.299, 0.587, 0.114)  # full-range (JPEG) luma; sums to 1, see module docstring


@dataclass(frozen=True)
class RAISRConfig:
    """Everything needed to apply a filter bank; saved as ``config.json`` beside it."""

    scale: int
    """Upscaling factor: 2, 3 or 4."""
    filter_size: int = 11
    """Side of each learned filter, odd (the paper uses 11 x 11)."""
    gradient_window: int = 9
    """Side of the window for the structure tensor, odd (the paper uses 9 x 9)."""
    gradient_sigma: float = 2.0
    """Std (px) of the Gaussian weighting inside that window (paper's W_k)."""
    angle_bins: int = 24
    """Quantisation levels of the gradient angle over [0, pi) (paper: 24)."""
    strength_thresholds: tuple[float, float] = (0.0, 0.0)
    """Two increasing cut points of sqrt(l1) giving 3 strength levels (learned: tertiles)."""
    coherence_thresholds: tuple[float, float] = (0.0, 0.0)
    """Two increasing cut points of coherence in [0, 1] giving 3 levels (learned: tertiles)."""
    version: int = CONFIG_VERSION

    @property
    def buckets(self) -> int:
        return self.angle_bins * 3 * 3 * self.scale ** 2

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def __post_init__(self):
        require(self.scale in SUPPORTED_SCALES, f"RAISR scale {self.scale} is not one of {SUPPORTED_SCALES}")
        require(self.filter_size % 2 == 1 and self.gradient_window % 2 == 1 and self.filter_size >= 1,
                "RAISR filter_size and gradient_window must be odd")
        require(self.version == CONFIG_VERSION, f"RAISR config version {self.version} is not supported "
                f"(this sr3 reads version {CONFIG_VERSION})")

    @classmethod
    def from_json_file(cls, path: Path) -> "RAISRConfig":
        return from_dict(cls, read_json(path, "RAISR config"), str(path))


@dataclass(frozen=True)
class RAISRTrainConfig:
    """How a filter bank was trained (saved in ``model_card.json``; not needed to apply it)."""

    seed: int = 0
    """Seeds the choice of training pixels."""
    max_patches_per_image: int = 200_000
    """Training pixels sampled per image (spread over the augmented copies)."""
    augment: bool = True
    """Also train on the 8 rotations/flips of each image (the paper's symmetry trick), so
    every angle bin sees data."""
    ridge: float = 10.0
    """Ridge weight, in pseudo-samples of average patch energy, pulling each filter
    towards the identity (bicubic) filter: matters only for buckets with few samples."""
    threshold_quantiles: tuple[float, float] = (1 / 3, 2 / 3)
    """Quantiles of strength and coherence over training pixels used as the cut points."""
    prescale: int = 1
    """Downscale each training photo by this integer factor (>= 1, antialiased bicubic) before
    making training pairs.  Large wallpaper-style photos are soft at full resolution;
    downscaling them gives sharper targets, closer to the detail of typical test images."""
    filter_size: int = 11
    """Side of each learned filter, odd (the paper uses 11 x 11); saved in the bank's RAISRConfig."""

    def __post_init__(self):
        require(self.max_patches_per_image >= 1, "raisr.max_patches_per_image must be >= 1")
        require(self.ridge >= 0 and self.prescale >= 1, "raisr.ridge must be >= 0 and raisr.prescale >= 1")
        require(self.filter_size >= 1 and self.filter_size % 2 == 1, "raisr.filter_size must be odd")


# ----------------------------------------------------------------------------------------------
# Colour and cheap upscaling
# ----------------------------------------------------------------------------------------------

def _luma(rgb: torch.Tensor) -> torch.Tensor:
    """[3, H, W] in [0, 1] -> [H, W] full-range luma."""
    w = torch.tensor(LUMA, dtype=rgb.dtype).view(3, 1, 1)
    return (rgb * w).sum(dim=0)


def _pil_to_unit(img: Image.Image) -> torch.Tensor:
    return pil_to_tensor(img).add(1.0).div(2.0)


def _cheap_upscale(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic upscaling of [3, h, w] in [0, 1] (the same operator as SR3's conditioning)."""
    return upsample(lr.unsqueeze(0), scale)[0]


# ----------------------------------------------------------------------------------------------
# Hashing (paper Sec. III-B)
# ----------------------------------------------------------------------------------------------

def _gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _eigen_features(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor):
    """Angle in [0, pi), strength sqrt(l1) and coherence in [0, 1] of the 2x2 matrices [[a, b], [b, c]].

    Closed-form eigen-analysis of the structure tensor G^T W G (paper Eq. 7-9).
    """
    half_trace = (a + c) / 2
    root = torch.sqrt(((a - c) / 2) ** 2 + b ** 2)
    l1 = half_trace + root
    l2 = (half_trace - root).clamp_min(0)
    angle = torch.remainder(0.5 * torch.atan2(2 * b, a - c), math.pi)  # direction of v1
    s1, s2 = l1.clamp_min(0).sqrt(), l2.sqrt()
    coherence = (s1 - s2) / (s1 + s2).clamp_min(1e-12)
    return angle, s1, coherence


def _gradient_products(y: torch.Tensor, cfg: RAISRConfig) -> torch.Tensor:
    """gx^2, gx gy, gy^2 of ``y`` [H, W], replicate-padded by half the gradient window: [3, H+2r, W+2r]."""
    gy, gx = torch.gradient(y)  # central differences, one-sided at the edges
    r = cfg.gradient_window // 2
    prods = torch.stack([gx * gx, gx * gy, gy * gy]).unsqueeze(0)
    return F.pad(prods, (r, r, r, r), mode="replicate")[0]


def _structure_features(y: torch.Tensor, cfg: RAISRConfig):
    """Angle, strength and coherence for every pixel of ``y`` [H, W] (each [H, W])."""
    prods = _gradient_products(y, cfg).unsqueeze(1)  # [3, 1, H+2r, W+2r]
    k = _gaussian_kernel(cfg.gradient_window, cfg.gradient_sigma)
    # Separable Gaussian-weighted window sums: the entries a, b, c of G^T W G.
    prods = F.conv2d(F.conv2d(prods, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))
    return _eigen_features(*prods[:, 0])


def _structure_features_at(y: torch.Tensor, pix: torch.Tensor, cfg: RAISRConfig):
    """The same as :func:`_structure_features` but only at flat pixel indices ``pix`` [N] (for training)."""
    prods = _gradient_products(y, cfg)
    w = y.shape[1]
    wp = w + 2 * (cfg.gradient_window // 2)
    k = _gaussian_kernel(cfg.gradient_window, cfg.gradient_sigma)
    weights = (k.view(-1, 1) * k.view(1, -1)).flatten()
    idx = ((pix // w) * wp + pix % w)[:, None] + _patch_offsets(wp, cfg.gradient_window)[None, :]
    a, b, c = ((p.flatten()[idx] * weights).sum(dim=1) for p in prods)
    return _eigen_features(a, b, c)


def _quantise(angle, strength, coherence, pixel_type, cfg: RAISRConfig) -> torch.Tensor:
    """Bucket id in [0, cfg.buckets): (angle, strength, coherence, pixel type), row-major."""
    a = (angle / math.pi * cfg.angle_bins).long().clamp(0, cfg.angle_bins - 1)
    s = torch.bucketize(strength, torch.tensor(cfg.strength_thresholds, dtype=strength.dtype))
    c = torch.bucketize(coherence, torch.tensor(cfg.coherence_thresholds, dtype=coherence.dtype))
    return ((a * 3 + s) * 3 + c) * cfg.scale ** 2 + pixel_type


def _pixel_type(rows: torch.Tensor, cols: torch.Tensor, scale: int) -> torch.Tensor:
    """Sub-pixel phase of a high-resolution pixel: (row mod scale, col mod scale) as one id."""
    return (rows % scale) * scale + cols % scale


def _bucket_index(y: torch.Tensor, cfg: RAISRConfig) -> torch.Tensor:
    """Bucket id [H, W] for every pixel of the cheap-upscaled luma ``y``."""
    h, w = y.shape
    ptype = _pixel_type(torch.arange(h).view(-1, 1), torch.arange(w).view(1, -1), cfg.scale)
    return _quantise(*_structure_features(y, cfg), ptype, cfg)


def _patch_offsets(width_padded: int, size: int) -> torch.Tensor:
    """Flat offsets of a size x size patch in a row-major image of the given padded width."""
    d = torch.arange(size)
    return (d.view(-1, 1) * width_padded + d.view(1, -1)).flatten()


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------

class RAISR:
    """A trained RAISR filter bank for one scale.

    ``filters``: float32 tensor [buckets, filter_size**2], bucket ids as in
    :func:`_bucket_index`.  Use :meth:`upscale` on PIL images.
    """

    name = "raisr"

    def __init__(self, config: RAISRConfig, filters: torch.Tensor, source: str = ""):
        k2 = config.filter_size ** 2
        if tuple(filters.shape) != (config.buckets, k2):
            raise UserError(f"{source or 'RAISR'}: filter bank has shape {tuple(filters.shape)}, "
                            f"config expects {(config.buckets, k2)}; the files do not belong together")
        self.config = config
        self.filters = filters.float().contiguous()
        self.source = source

    @property
    def scale(self) -> int:
        return self.config.scale

    def upscale_luma(self, y_up: torch.Tensor, chunk_pixels: int = 1 << 16) -> torch.Tensor:
        """Apply the filters to a cheap-upscaled luma image [H, W] in [0, 1]; returns [H, W].

        Vectorised: every pixel takes one dot product between its patch (im2col via
        ``unfold``, reflect-padded at the border) and its bucket's filter (one row
        gather).  Processed in row blocks of about ``chunk_pixels`` pixels to bound memory.
        """
        cfg = self.config
        r = cfg.filter_size // 2
        buckets = _bucket_index(y_up, cfg)
        h, w = y_up.shape
        pad_mode = "reflect" if min(h, w) > r else "replicate"
        padded = F.pad(y_up[None, None], (r, r, r, r), mode=pad_mode)
        out = torch.empty_like(y_up)
        rows = max(1, chunk_pixels // w)
        for y0 in range(0, h, rows):
            y1 = min(h, y0 + rows)
            patches = F.unfold(padded[:, :, y0:y1 + 2 * r], cfg.filter_size)[0]  # [k*k, n]
            filt = self.filters.index_select(0, buckets[y0:y1].flatten())  # [n, k*k]
            out[y0:y1] = torch.einsum("kn,nk->n", patches, filt).view(y1 - y0, w)
        return out

    def upscale_tensor(self, lr: torch.Tensor) -> torch.Tensor:
        """[3, h, w] RGB in [0, 1] -> [3, h*scale, w*scale] in [0, 1]."""
        up = _cheap_upscale(lr, self.scale)
        y_up = _luma(up)
        y_sr = self.upscale_luma(y_up)
        return (up + (y_sr - y_up)).clamp(0, 1)  # the same luma change on R, G, B; chroma kept

    def upscale(self, img: Image.Image) -> Image.Image:
        """Upscale a PIL image by :attr:`scale` (RGB out; grey/RGBA are converted to RGB)."""
        if img.mode != "RGB":
            img = img.convert("RGB")
        with torch.no_grad():
            out = self.upscale_tensor(_pil_to_unit(img))
        return tensor_to_pil(out * 2 - 1)

    __call__ = upscale

    def save(self, out_dir: str | Path, model_card: dict | None = None) -> Path:
        """Write ``filters.safetensors``, ``config.json`` (and ``model_card.json``) to ``out_dir``."""

        out_dir = Path(out_dir)
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"{out_dir}: cannot create output folder ({e.strerror}); choose another --out") from None
        atomic_write_bytes(out_dir / "filters.safetensors",
                           save({"filters": self.filters}, metadata={"format": "sr3-raisr", "scale": str(self.scale)}))
        atomic_write_text(out_dir / "config.json", self.config.to_json() + "\n")
        if model_card is not None:
            write_json(out_dir / "model_card.json", model_card)
        return out_dir


def default_path(scale: int) -> Path:
    """Folder of the filter bank shipped for ``scale`` (trained on photos/train)."""
    return WEIGHTS_DIR / f"raisr-{scale}x"


def load_raisr(path: str | Path | None = None, scale: int | None = None) -> RAISR:
    """Load a filter bank folder; ``path=None`` loads the shipped default for ``scale``.

    ``scale``: 2, 3 or 4; required when ``path`` is None, checked against the bank otherwise.
    Raises :class:`UserError` for a missing/corrupt folder or a scale mismatch.
    """
    if path is None:
        if scale not in SUPPORTED_SCALES:
            raise UserError(f"RAISR: no default filter bank for scale {scale}; "
                            f"use --scale {'/'.join(map(str, SUPPORTED_SCALES))} or train one with sr3 train --method raisr")
        path = default_path(scale)
    path = Path(path)
    cfg_file, filt_file = path / "config.json", path / "filters.safetensors"
    if not cfg_file.is_file() or not filt_file.is_file():
        raise UserError(f"{path}: not a RAISR filter bank (needs config.json and filters.safetensors); "
                        "train one with sr3 train --method raisr")
    cfg = RAISRConfig.from_json_file(cfg_file)
    if scale is not None and cfg.scale != scale:
        raise UserError(f"{path}: filter bank is for scale {cfg.scale}, not {scale}; "
                        f"pass --scale {cfg.scale} or a bank trained for {scale}x")
    try:
        filters = load_file(str(filt_file))["filters"]
    except (SafetensorError, KeyError, OSError) as e:
        raise UserError(f"{filt_file}: unreadable filter bank ({e}); retrain or re-copy it") from None
    return RAISR(cfg, filters, source=str(path))


# ----------------------------------------------------------------------------------------------
# Training (paper Sec. II-B: least squares via accumulated normal equations)
# ----------------------------------------------------------------------------------------------

def _dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 rotations/flips of [..., H, W] (k = 0 is the identity)."""
    x = torch.rot90(x, k % 4, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if k >= 4 else x


def make_training_pair(hr: torch.Tensor, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HR [3, H, W] in [0, 1] -> (cheap-upscaled luma, HR luma), both [H', W'] (cropped to a multiple).

    The LR image is ``downsample`` of the HR, rounded to 8 bits like any saved image,
    then bicubic-upscaled: the input RAISR will see at test time.
    """
    hr = crop_to_multiple(hr, scale)
    lr = downsample(hr.unsqueeze(0), scale)[0]
    lr = (lr.clamp(0, 1) * 255).round() / 255
    # Luma and bicubic upsampling are both linear, so upsampling the luma alone gives the
    # same cheap luma as RAISR.upscale_tensor computes from upsampled RGB, at a third of the cost.
    return upsample(_luma(lr)[None, None], scale)[0, 0], _luma(hr)


def _load_training_images(image_paths, scale: int, min_side: int, prescale: int):
    """Yield (path, HR [3, H, W] in [0, 1]); unreadable or too small images are reported and skipped."""
    for path in image_paths:
        try:
            img = load_image(path)
        except UserError as e:
            warnings.warn(f"skipping training image: {e}")
            continue
        if min(img.size) < min_side * scale * prescale:
            warnings.warn(f"{path}: skipping training image smaller than {min_side * scale * prescale} px")
            continue
        hr = _pil_to_unit(img)
        if prescale > 1:
            hr = downsample(crop_to_multiple(hr, prescale).unsqueeze(0), prescale)[0]
            hr = (hr.clamp(0, 1) * 255).round() / 255
        yield path, hr


@contextmanager
def _single_thread():
    """Run many tiny matrix products on one thread: thread start-up would dominate them."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _hardware() -> str:
    """CPU model, core count and torch threads, for the model card."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, {platform.system()}"


def train_raisr(image_paths, scale: int, *, seed: int = 0, max_patches_per_image: int = 200_000,
                augment: bool = True, ridge: float = 10.0, prescale: int = 1, filter_size: int = 11, gradient_window: int = 9,
                gradient_sigma: float = 2.0, angle_bins: int = 24, out_dir: str | Path | None = None,
                progress: bool = True, command: str | None = None) -> RAISR:
    """Learn a RAISR filter bank from high-resolution images.

    ``image_paths``: image files or folders (searched recursively).
    ``scale``: 2, 3 or 4.  ``seed``: seeds the sampling of training pixels.
    ``max_patches_per_image``: training pixels per image (split over the 8 rotations/
    flips when ``augment``).  ``ridge``: regularisation towards bicubic in
    pseudo-samples; ``prescale``: downscale factor applied to the photos first (see
    :class:`RAISRTrainConfig`).  ``filter_size``, ``gradient_window``,
    ``gradient_sigma``, ``angle_bins``: see :class:`RAISRConfig`.
    ``out_dir``: if given, the bank is saved there with a ``model_card.json`` recording
    ``command`` (the command line that produced it), timing and hardware.
    Two passes over the images: the first sets the strength/coherence cut points
    (tertiles over training pixels; invariant to rotation/flip, so computed on the
    originals), the second accumulates the normal equations.
    """
    if scale not in SUPPORTED_SCALES:
        raise UserError(f"RAISR: scale {scale} is not supported; use one of {SUPPORTED_SCALES}")
    if filter_size % 2 == 0 or gradient_window % 2 == 0:
        raise UserError("RAISR: filter_size and gradient_window must be odd")
    paths = list_images(image_paths)
    where = ", ".join(map(str, image_paths)) if isinstance(image_paths, (list, tuple)) else str(image_paths)
    if not paths:
        raise UserError(f"{where}: no images found (png, jpg, webp, tiff, bmp); check --data")
    tcfg = RAISRTrainConfig(seed=seed, max_patches_per_image=max_patches_per_image, augment=augment, ridge=ridge,
                            prescale=prescale, filter_size=filter_size)
    base = RAISRConfig(scale=scale, filter_size=filter_size, gradient_window=gradient_window,
                       gradient_sigma=gradient_sigma, angle_bins=angle_bins)
    min_side = filter_size + 1
    started = time.time()
    n_views = 8 if augment else 1
    per_view = max(1, max_patches_per_image // n_views)
    say = (lambda msg: print(f"raisr {scale}x: {msg}", file=sys.stderr, flush=True)) if progress else (lambda msg: None)

    r = filter_size // 2

    def samples(hr: torch.Tensor, view: int, gen: torch.Generator, with_patches: bool):
        """Sampled training pixels of one rotated/flipped view: (structure features, patches, targets, type)."""
        y_up, y_hr = make_training_pair(_dihedral(hr, view), scale)
        h, w = y_up.shape
        pix = torch.randint(0, h * w, (per_view,), generator=gen)  # with replacement: cheap, unbiased
        feats = _structure_features_at(y_up, pix, base)
        if not with_patches:
            return feats, None, None, None
        padded = F.pad(y_up[None, None], (r, r, r, r), mode="reflect")[0, 0].flatten()
        ys, xs = pix // w, pix % w
        patches = padded[(ys * (w + 2 * r) + xs)[:, None] + _patch_offsets(w + 2 * r, filter_size)[None, :]]
        return feats, patches, y_hr.flatten()[pix], _pixel_type(ys, xs, scale)

    # Pass 1: cut points for strength and coherence (tertiles of the training pixels).
    strengths, coherences = [], []
    gen = torch.Generator().manual_seed(seed)
    for _, hr in _load_training_images(paths, scale, min_side, prescale):
        (_, s, c), *_ = samples(hr, 0, gen, with_patches=False)
        strengths.append(s)
        coherences.append(c)
    if not strengths:
        raise UserError(f"{where}: no usable training images (all unreadable or smaller than "
                        f"{min_side * scale * prescale} px)")
    q = torch.tensor(tcfg.threshold_quantiles, dtype=torch.float64)
    s_cut = torch.quantile(torch.cat(strengths)[:1 << 24].double(), q).tolist()
    c_cut = torch.quantile(torch.cat(coherences)[:1 << 24].double(), q).tolist()
    cfg = RAISRConfig(**{**asdict(base), "strength_thresholds": tuple(s_cut), "coherence_thresholds": tuple(c_cut)})
    say(f"cut points strength {s_cut[0]:.4g}/{s_cut[1]:.4g}, coherence {c_cut[0]:.3f}/{c_cut[1]:.3f}")

    # Pass 2: accumulate Q = sum p p^T and V = sum p x per bucket (Eq. 4-5).
    k2 = filter_size ** 2
    Q = torch.zeros(cfg.buckets, k2, k2, dtype=torch.float64)
    V = torch.zeros(cfg.buckets, k2, dtype=torch.float64)
    counts = torch.zeros(cfg.buckets, dtype=torch.long)
    energy = 0.0
    gen = torch.Generator().manual_seed(seed + 1)
    n_images = 0
    for i, (path, hr) in enumerate(_load_training_images(paths, scale, min_side, prescale)):
        n_images += 1
        parts = [samples(hr, view, gen, with_patches=True) for view in range(n_views)]
        b = torch.cat([_quantise(*feats, ptype, cfg) for feats, _, _, ptype in parts])
        patches = torch.cat([p[1] for p in parts])
        targets = torch.cat([p[2] for p in parts])
        del parts
        energy += float((patches.double() ** 2).sum())
        order = torch.argsort(b)
        b, patches, targets = b[order], patches[order], targets[order]
        ids, per_bucket = torch.unique_consecutive(b, return_counts=True)
        start = 0
        with _single_thread():
            for bucket, cnt in zip(ids.tolist(), per_bucket.tolist()):
                p = patches[start:start + cnt].double()
                Q[bucket] += p.T @ p
                V[bucket] += p.T @ targets[start:start + cnt].double()
                start += cnt
        counts.index_add_(0, ids, per_bucket)
        say(f"[{i + 1}/{len(paths)}] {Path(path).name}: {counts.sum().item():,} pixels, "
            f"{(counts > 0).sum().item()}/{cfg.buckets} buckets filled ({time.time() - started:.0f}s)")

    # Solve (Q + lam I) h = V + lam e_center per bucket: ridge towards the identity filter.
    lam = ridge * energy / max(1, int(counts.sum())) / k2
    identity = torch.zeros(k2, dtype=torch.float64)
    identity[k2 // 2] = 1.0
    eye = torch.eye(k2, dtype=torch.float64)
    filters = torch.linalg.solve(Q + lam * eye, V + lam * identity).float()
    model = RAISR(cfg, filters)
    elapsed = time.time() - started
    say(f"done in {elapsed:.0f}s")
    if out_dir is not None:
        card = {
            "model": f"RAISR {scale}x (Romano, Isidoro, Milanfar 2016), luma filters, chroma bicubic",
            "command": command or f"train_raisr({[str(p) for p in image_paths]!r}, {scale}, seed={seed}, ...)",
            "training_images": [Path(p).name for p in paths],
            "training_images_used": n_images,
            "training_pixels": int(counts.sum()),
            "buckets_filled": int((counts > 0).sum()),
            "buckets_total": cfg.buckets,
            "train_config": asdict(tcfg),
            "train_seconds": round(elapsed, 1),
            "hardware": _hardware(),
            "software": f"python {platform.python_version()}, torch {torch.__version__}",
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        }
        model.save(out_dir, card)
        model.source = str(out_dir)
    return model
