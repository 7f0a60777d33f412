"""Image-quality metrics as the SR3 and CDM papers report them.

Conventions (every function states its own, these are the shared ones):

* **Range.** Per-image metrics take float tensors in **[0, 1]**, shaped
  ``[B, 3, H, W]`` (or ``[3, H, W]``, treated as a batch of one).  PSNR on [0, 1]
  with ``data_range=1`` is numerically identical to PSNR on [0, 255] with
  ``data_range=255``.  Feature extractors for FID/KID/IS take **uint8 [0, 255]**
  tensors ``[B, 3, H, W]``, the convention of the Inception network used for FID.
* **Border crop.** PSNR, SSIM and MS-SSIM ignore ``border`` pixels on every side
  (callers pass ``border=scale``, the usual convention of the SR literature, e.g.
  EDSR/RCAN: the outermost ``scale`` pixels depend on how the image edge was padded).
* **Y channel.** "Y" is ITU-R BT.601 luma in the studio range, as MATLAB's
  ``rgb2ycbcr`` computes it and as SR papers report it:
  ``Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255`` with R, G, B in [0, 1]
  (so Y lies in [16/255, 235/255]); PSNR/SSIM on Y use ``data_range=1``.
* **Consistency** (SR3 paper, Sec. 4.2): the MSE between the downsampled output
  and the low-resolution input, both on the **[0, 255]** scale, using the very
  degradation operator that made the input (:func:`sr3.degradation.downsample`).
* **Distribution metrics** (FID, KID, IS) go through torchmetrics; each result
  carries the feature extractor's name, so a number computed with anything other
  than the standard Inception-v3 weights is never mistaken for a standard FID.

SSIM and MS-SSIM are torchmetrics' implementations (Gaussian window 11 px,
sigma 1.5, K1 = 0.01, K2 = 0.03, Wang et al. 2004 / 2003); nothing here re-derives them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchmetrics.functional.image import (
    multiscale_structural_similarity_index_measure,
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from .degradation import downsample
from .errors import UserError

# ITU-R BT.601 studio-range luma (MATLAB rgb2ycbcr), for R, G, B in [0, 1]; result in [0, 255].
BT601_Y_WEIGHTS = (65.481, 128.553, 24.966)
BT601_Y_OFFSET = 16.0

SSIM_KERNEL = 11
"""Gaussian window of SSIM and MS-SSIM, in pixels (Wang et al. 2004)."""
MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
"""The five per-scale exponents of MS-SSIM (Wang et al. 2003, Sec. 3.2)."""
MS_SSIM_MIN_SIZE = SSIM_KERNEL * (len(MS_SSIM_BETAS) - 1) ** 2
"""Smallest side (176 px) torchmetrics accepts for 5-scale MS-SSIM (it requires
``side // 16 > kernel - 1``): the coarsest of the five dyadic scales must still hold an
11 px window, which strictly needs 161 px."""

CONVENTIONS = {
    "range": "per-image metrics on float images in [0, 1]; consistency MSE on the [0, 255] scale",
    "border_crop": "PSNR/SSIM/MS-SSIM ignore `scale` pixels on each side of the image",
    "y_channel": "ITU-R BT.601 studio-range luma, Y = 16 + 65.481 R + 128.553 G + 24.966 B (R,G,B in [0,1]), "
                 "as MATLAB rgb2ycbcr; metrics on Y compare Y/255 with data_range 1 (= Y with data_range 255)",
    "ssim": "torchmetrics SSIM, Gaussian window 11 px, sigma 1.5, K1 0.01, K2 0.03; RGB SSIM averages the channels",
    "ms_ssim": f"torchmetrics MS-SSIM, 5 scales, betas {MS_SSIM_BETAS}, ReLU on contrast terms; "
               f"NaN when the cropped image is smaller than {MS_SSIM_MIN_SIZE} px",
    "consistency": "MSE between sr3.degradation.downsample(output) and the LR input on [0, 255] "
                   "(SR3 paper Sec. 4.2)",
    "colour_shift": "largest |per-channel mean of downsample(output) - per-channel mean of LR| over R, G, B, "
                    "on [0, 255]: a global colour cast the output added to its input",
}


def _batch(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise ValueError(f"expected an image tensor [B, C, H, W] or [C, H, W], got shape {tuple(x.shape)}")
    return x.float()


def _pair(pred: torch.Tensor, target: torch.Tensor, border: int) -> tuple[torch.Tensor, torch.Tensor]:
    pred, target = _batch(pred), _batch(target)
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if border:
        if min(pred.shape[-2:]) <= 2 * border:
            raise ValueError(f"image {tuple(pred.shape[-2:])} is too small for a border crop of {border} px")
        pred = pred[..., border:-border, border:-border]
        target = target[..., border:-border, border:-border]
    return pred, target


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of RGB in [0, 1]: ``[B, 3, H, W] -> [B, 1, H, W]`` in [16/255, 235/255]."""
    x = _batch(x)
    w = torch.tensor(BT601_Y_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return ((x * w).sum(dim=1, keepdim=True) + BT601_Y_OFFSET) / 255.0


# ----------------------------------------------------------------------------------------------
# Per-image fidelity metrics.  Each returns a tensor [B] with one value per image.
# ----------------------------------------------------------------------------------------------

def psnr(pred: torch.Tensor, target: torch.Tensor, *, border: int = 0, y_channel: bool = False) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, per image: ``10 log10(1 / MSE)`` on [0, 1] images.

    ``border``: pixels cropped from each side first (pass the SR scale).
    ``y_channel``: compare BT.601 luma instead of all three RGB channels.
    Identical images give ``inf``.
    """
    pred, target = _pair(pred, target, border)
    if y_channel:
        pred, target = rgb_to_y(pred), rgb_to_y(target)
    return peak_signal_noise_ratio(pred, target, data_range=1.0, reduction="none", dim=(1, 2, 3))


def ssim(pred: torch.Tensor, target: torch.Tensor, *, border: int = 0, y_channel: bool = False) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per image, in [-1, 1] (1 = identical).

    Images in [0, 1].  RGB SSIM is the mean over channels (torchmetrics).  Returns NaN
    for images whose cropped side is smaller than the 11 px window.
    """
    pred, target = _pair(pred, target, border)
    if y_channel:
        pred, target = rgb_to_y(pred), rgb_to_y(target)
    if min(pred.shape[-2:]) < SSIM_KERNEL:
        return torch.full((pred.shape[0],), float("nan"))
    return structural_similarity_index_measure(
        pred, target, data_range=1.0, kernel_size=SSIM_KERNEL, sigma=1.5, reduction="none")


def ms_ssim(pred: torch.Tensor, target: torch.Tensor, *, border: int = 0) -> torch.Tensor:
    """Multi-scale SSIM (Wang et al. 2003) on RGB per image, 5 scales, in [0, 1].

    Images in [0, 1].  Five dyadic scales need the cropped image to be at least
    :data:`MS_SSIM_MIN_SIZE` (176) px on its shorter side; smaller images give NaN
    rather than a number from fewer scales that would not compare with the literature.
    Negative contrast terms are clipped to 0 (torchmetrics ``normalize="relu"``) so the
    product of powers stays real.
    """
    pred, target = _pair(pred, target, border)
    if min(pred.shape[-2:]) < MS_SSIM_MIN_SIZE:
        return torch.full((pred.shape[0],), float("nan"))
    return multiscale_structural_similarity_index_measure(
        pred, target, data_range=1.0, kernel_size=SSIM_KERNEL, sigma=1.5, betas=MS_SSIM_BETAS,
        normalize="relu", reduction="none")


def _downsampled_output_and_input(sr: torch.Tensor, lr: torch.Tensor, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(downsample(sr, scale), lr), both [B, 3, h, w] on [0, 255]; shapes must agree."""
    sr, lr = _batch(sr), _batch(lr)
    down = downsample(sr * 255.0, scale)
    if down.shape != lr.shape:
        raise ValueError(f"downsampled output {tuple(down.shape)} does not match LR input {tuple(lr.shape)}")
    return down, lr * 255.0


def consistency(sr: torch.Tensor, lr: torch.Tensor, scale: int) -> torch.Tensor:
    """SR3's consistency: per-image MSE between ``downsample(sr, scale)`` and ``lr`` on [0, 255].

    ``sr``: output, [B, 3, H, W] in [0, 1] with H, W divisible by ``scale``.
    ``lr``: the low-resolution input it was made from, [B, 3, H/scale, W/scale] in [0, 1].
    0 means the output explains its input exactly (Saharia et al. 2021, Sec. 4.2).
    """
    down, lr = _downsampled_output_and_input(sr, lr, scale)
    return ((down - lr) ** 2).mean(dim=(1, 2, 3))


def colour_shift(sr: torch.Tensor, lr: torch.Tensor, scale: int) -> torch.Tensor:
    """Per-image global colour cast, on [0, 255]: max over channels of the difference of channel means
    between ``downsample(sr, scale)`` and ``lr`` (shapes as in :func:`consistency`).

    Consistency already penalises every low-frequency error; this isolates the failure users
    report from diffusion SR (a tinted or brightened result), in units one can read: 2 means one
    channel's mean moved by 2 of 255 levels.
    """
    down, lr = _downsampled_output_and_input(sr, lr, scale)
    return (down.mean(dim=(2, 3)) - lr.mean(dim=(2, 3))).abs().amax(dim=1)


def fidelity_metrics(sr: torch.Tensor, hr: torch.Tensor, lr: torch.Tensor, scale: int) -> dict[str, float]:
    """All per-image metrics of one image pair, with the conventions above (border = scale).

    ``sr``, ``hr``: [3, H, W] in [0, 1]; ``lr``: [3, H/scale, W/scale] in [0, 1].
    Keys: psnr_rgb, psnr_y, ssim_rgb, ssim_y, ms_ssim, consistency, colour_shift.
    """
    return {
        "psnr_rgb": float(psnr(sr, hr, border=scale)[0]),
        "psnr_y": float(psnr(sr, hr, border=scale, y_channel=True)[0]),
        "ssim_rgb": float(ssim(sr, hr, border=scale)[0]),
        "ssim_y": float(ssim(sr, hr, border=scale, y_channel=True)[0]),
        "ms_ssim": float(ms_ssim(sr, hr, border=scale)[0]),
        "consistency": float(consistency(sr, lr, scale)[0]),
        "colour_shift": float(colour_shift(sr, lr, scale)[0]),
    }


FIDELITY_METRICS = ("psnr_rgb", "psnr_y", "ssim_rgb", "ssim_y", "ms_ssim", "consistency", "colour_shift")
"""Names of the per-image metrics, in report order."""


# ----------------------------------------------------------------------------------------------
# Confidence intervals
# ----------------------------------------------------------------------------------------------

def bootstrap_ci(values: Sequence[float], *, confidence: float = 0.95, n_resamples: int = 2000,
                 seed: int = 0) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap confidence interval: ``(mean, low, high)``.

    ``values``: per-image scores; NaN entries (metric undefined for that image) are
    dropped, inf entries too (PSNR of a perfect reconstruction).  ``confidence`` in
    (0, 1).  ``seed`` makes the resampling reproducible.  With fewer than two finite
    values the interval is undefined and returned as NaN.  Uses scipy.stats.bootstrap
    (percentile method: well defined even when all values are equal).
    """
    from scipy.stats import bootstrap

    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return (math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if x.size < 2:
        return (mean, math.nan, math.nan)
    if np.all(x == x[0]):
        return (mean, mean, mean)
    # resamples in batches of about 2 M values (16 MB): memory stays bounded for 50,000 images, and the
    # draws are the same stream as one big batch, so the interval does not change (checked, scipy 1.17)
    res = bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=n_resamples, method="percentile",
                    rng=np.random.default_rng(seed), batch=max(1, 2 ** 21 // x.size))
    return (mean, float(res.confidence_interval.low), float(res.confidence_interval.high))


# ----------------------------------------------------------------------------------------------
# Distribution metrics: FID, KID, IS
# ----------------------------------------------------------------------------------------------

class FeatureExtractor(nn.Module):
    """A named feature extractor for FID/KID (and IS when it has class logits).

    ``forward(images)`` takes uint8 images ``[B, 3, H, W]`` in [0, 255] (any H, W; the
    network resizes as it needs) and returns ``(features [B, D], logits [B, K] or None)``.
    ``name`` is written beside every number computed with it.
    """

    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:  # pragma: no cover
        raise NotImplementedError


class ModuleExtractor(FeatureExtractor):
    """Wraps any user ``nn.Module`` as a :class:`FeatureExtractor`.

    ``module(images_uint8)`` may return a feature tensor ``[B, D]`` (IS is then not
    computed), or a tuple ``(features, logits)``.  ``name`` should say what it is
    (e.g. ``"resnet18-imagenet"``); it defaults to the module's class name.
    """

    def __init__(self, module: nn.Module, name: str | None = None):
        super().__init__(name or type(module).__name__)
        self.module = module.eval()

    @torch.no_grad()
    def forward(self, images):
        out = self.module(images)
        if isinstance(out, (tuple, list)):
            return out[0].flatten(1), (out[1].flatten(1) if len(out) > 1 and out[1] is not None else None)
        return out.flatten(1), None


class InceptionExtractor(FeatureExtractor):
    """The standard FID network: Inception-v3 with the TF-ported weights (Heusel et al. 2017).

    ``weights_path``: a local file with torch-fidelity's
    ``weights-inception-2015-12-05-6726825d.pth`` (these machines cannot download it).
    Returns the 2048-d pool features for FID/KID and the 1008-way unbiased logits for
    IS, exactly as torchmetrics' default ``FrechetInceptionDistance(feature=2048)``.
    Needs the ``torch-fidelity`` package (which itself needs torchvision).
    """

    def __init__(self, weights_path: str):
        from pathlib import Path

        if not Path(weights_path).is_file():
            raise UserError(f"{weights_path}: no such Inception weights file; give the path to "
                            "weights-inception-2015-12-05-6726825d.pth (torch-fidelity's FID weights)")
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3

            net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048", "logits_unbiased"],
                                     feature_extractor_weights_path=str(weights_path))
        except (ModuleNotFoundError, ImportError) as e:
            raise UserError(f"{weights_path}: standard FID needs the torch-fidelity package ({e}); "
                            "pip install torch-fidelity torchvision, or pass --feature-extractor instead") from None
        super().__init__(f"inception-v3-compat (standard FID weights {Path(weights_path).name})")
        self.net = net

    @torch.no_grad()
    def forward(self, images):
        feats, logits = self.net._torch_fidelity_forward(images)
        return feats.reshape(images.shape[0], -1), logits.reshape(images.shape[0], -1)


class RandomConvExtractor(FeatureExtractor):
    """A small seeded random convolutional network: NOT Inception, numbers are not standard FID.

    Random-weight convolutional features still separate image distributions (their
    Fréchet distance is a valid, if uncalibrated, distance), so this lets the whole
    FID/KID/IS path run where no pretrained network is available, e.g. in tests.
    Three stride-2 3x3 convolutions with ReLU (He-initialised from ``seed``, zero
    bias); the features are the spatial mean and standard deviation of the last
    layer's ``dim / 2`` channels, so they see both colour and texture.
    ``dim``: feature size (even); ``classes``: size of the random linear "logits" used for IS.
    """

    def __init__(self, dim: int = 64, classes: int = 10, seed: int = 0):
        super().__init__(f"random-conv-{dim}d-seed{seed} (NOT Inception; not comparable to published FID)")
        g = torch.Generator().manual_seed(seed)
        widths = [3, 16, 32, dim // 2]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(widths, widths[1:]))
        self.head = nn.Linear(dim, classes)
        with torch.no_grad():
            for layer in [*self.convs, self.head]:
                fan_in = layer.weight[0].numel()
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * math.sqrt(2.0 / fan_in))
                layer.bias.zero_()
        self.eval()

    @torch.no_grad()
    def forward(self, images):
        x = images.float() / 127.5 - 1.0
        for conv in self.convs:
            x = F.relu(conv(x))
        feats = torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3), correction=0)], dim=1)
        return feats, self.head(feats)


class _Identity(nn.Module):
    """Hands precomputed features to a torchmetrics metric unchanged."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x):
        return x


@dataclass(frozen=True)
class DistributionScores:
    """FID, KID and IS of a set of generated images against a set of real ones.

    ``extractor`` names the feature network (only "inception-v3-compat ..." numbers are
    standard).  A value is NaN when it could not be computed; ``notes`` says why.
    KID is the unbiased MMD² estimate (Bińkowski et al. 2018) averaged over subsets.
    """

    extractor: str
    n_real: int
    n_fake: int
    fid: float
    kid_mean: float
    kid_std: float
    is_mean: float
    is_std: float
    notes: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def distribution_scores(real_features: torch.Tensor, fake_features: torch.Tensor, *, extractor: str,
                        fake_logits: torch.Tensor | None = None, kid_subset_size: int = 1000,
                        kid_subsets: int = 100, is_splits: int = 10, seed: int = 0) -> DistributionScores:
    """FID/KID/IS from precomputed features (torchmetrics does the statistics).

    ``real_features`` [N, D], ``fake_features`` [M, D]: extractor outputs for the real
    and generated images.  ``fake_logits`` [M, K]: class logits of the generated
    images for the Inception Score (None: IS is NaN).  ``kid_subset_size`` is capped
    at the smaller set size; ``is_splits`` at M.  ``seed`` fixes KID's subset draws and
    IS's shuffling.  Fewer than 2 images on either side gives NaN with a note.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.inception import InceptionScore
    from torchmetrics.image.kid import KernelInceptionDistance

    n, m = len(real_features), len(fake_features)
    # torchmetrics warns that KID/IS keep every feature in memory; we hand them all at once anyway.
    warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
    nan = float("nan")
    fid = kid_mean = kid_std = is_mean = is_std = nan
    notes = []
    if n < 2 or m < 2:
        notes.append(f"FID/KID need at least 2 real and 2 generated images (have {n} and {m})")
    else:
        dim = real_features.shape[1]
        if max(n, m) < dim:
            notes.append(f"only {min(n, m)} images for {dim}-d features: covariance is rank-deficient, "
                         "FID is biased upward; compare only runs with the same number of images")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fid_metric = FrechetInceptionDistance(feature=_Identity(dim))
            fid_metric.update(real_features.double(), real=True)
            fid_metric.update(fake_features.double(), real=False)
            fid = float(fid_metric.compute())
            subset = min(kid_subset_size, n, m)
            kid_metric = KernelInceptionDistance(feature=_Identity(dim), subsets=kid_subsets, subset_size=subset)
            kid_metric.update(real_features.double(), real=True)
            kid_metric.update(fake_features.double(), real=False)
            km, ks = kid_metric.compute()
            kid_mean, kid_std = float(km), float(ks)
    if fake_logits is None:
        notes.append("IS not computed: the feature extractor has no class logits")
    elif m >= 2:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            is_metric = InceptionScore(feature=_Identity(fake_logits.shape[1]), splits=min(is_splits, m))
            is_metric.update(fake_logits.double())
            im, istd = is_metric.compute()
            is_mean, is_std = float(im), float(istd)
    return DistributionScores(extractor=extractor, n_real=n, n_fake=m, fid=fid, kid_mean=kid_mean,
                              kid_std=kid_std, is_mean=is_mean, is_std=is_std, notes="; ".join(notes))


@torch.no_grad()
def extract_features(extractor: FeatureExtractor, images: Sequence[torch.Tensor] | torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run ``extractor`` over images in [0, 1] (each [3, H, W], sizes may differ).

    Images are quantised to uint8 first (the extractor's convention).  Returns
    ``(features [N, D], logits [N, K] or None)``.
    """
    feats, logits = [], []
    for img in images:
        u8 = (_batch(img).clamp(0, 1) * 255).round().to(torch.uint8)
        f, lg = extractor(u8)
        feats.append(f.float())
        if lg is not None:
            logits.append(lg.float())
    if not feats:
        return torch.zeros(0, 0), None
    return torch.cat(feats), (torch.cat(logits) if len(logits) == len(feats) else None)


# ----------------------------------------------------------------------------------------------
# Classification: accuracy of a classifier on outputs (SR3) and CAS (CDM)
# ----------------------------------------------------------------------------------------------

@torch.no_grad()
def classification_accuracy(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                            batch_size: int = 256, topk: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy (fraction in [0, 1]) of ``classifier`` on ``images``.

    ``images``: [N, ...] in whatever range and size the classifier expects (passed
    unchanged; SR3's protocol feeds the super-resolved images to an ImageNet
    classifier).  ``labels``: [N] int class indices.  Returns ``{"top1": ..., "top5": ...}``;
    k larger than the number of classes counts every image as correct.
    """
    classifier.eval()
    labels = torch.as_tensor(labels).long()
    if len(images) != len(labels) or len(labels) == 0:
        raise ValueError(f"need as many labels as images (have {len(images)} images, {len(labels)} labels)")
    correct = dict.fromkeys(topk, 0)
    for i in range(0, len(images), batch_size):
        logits = classifier(images[i:i + batch_size])
        y = labels[i:i + batch_size].to(logits.device)
        for k in topk:
            top = logits.topk(min(k, logits.shape[1]), dim=1).indices
            correct[k] += int((top == y[:, None]).any(dim=1).sum())
    return {f"top{k}": correct[k] / len(labels) for k in topk}


def fit_classifier(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, epochs: int, batch_size: int,
                   lr: float, weight_decay: float = 0.0, seed: int = 0,
                   device: str | torch.device = "cpu") -> nn.Module:
    """Train ``model`` with Adam and cross-entropy over ``epochs`` seeded shuffles; returns it in eval mode.

    The learning rate anneals from ``lr`` to 0 on a cosine over all steps: at a constant rate the
    final weights land anywhere on the last epoch's noisy path (a small CNN on 5,000 real
    Fashion-MNIST images tested at 51% or 70% depending on the draw of images; annealed, 82%),
    which would make CAS measure the classifier's luck rather than the data.
    """
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    labels = torch.as_tensor(labels).long()
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * -(-len(labels) // batch_size)))
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=g)
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            loss = F.cross_entropy(model(images[idx].to(device)), labels[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
    return model.eval()


def classification_accuracy_score(make_classifier: Callable[[], nn.Module],
                                  train_images: torch.Tensor, train_labels: torch.Tensor,
                                  test_images: torch.Tensor, test_labels: torch.Tensor, *,
                                  epochs: int = 10, batch_size: int = 128, lr: float = 1e-3,
                                  weight_decay: float = 0.0, seed: int = 0, device: str | torch.device = "cpu",
                                  topk: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Classification Accuracy Score (Ravuri & Vinyals 2019; used by CDM, Ho et al. 2021, Sec. 4.2).

    Trains a fresh classifier from ``make_classifier()`` on **generated** images and
    their conditioning labels, then reports its top-k accuracy on **real** test images.
    A generator whose samples carry the class information of real data scores close
    to a classifier trained on real data.

    ``train_images`` [N, ...] / ``train_labels`` [N]: generated images and the labels
    they were generated for; ``test_images`` / ``test_labels``: real held-out data.
    Images in whatever range the classifier expects (the same for both sets).
    ``epochs``, ``batch_size``, ``lr`` (Adam), ``weight_decay``: training schedule.
    ``seed`` fixes the classifier's initialisation and the batch order.
    Returns ``{"top1", "top5", "n_train", "n_test"}`` (accuracies in [0, 1]).
    """
    train_labels = torch.as_tensor(train_labels).long()
    if len(train_images) != len(train_labels) or len(train_labels) == 0:
        raise ValueError(f"need as many training labels as images (have {len(train_images)}, {len(train_labels)})")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_classifier().to(device)
    fit_classifier(model, train_images, train_labels, epochs=epochs, batch_size=batch_size, lr=lr,
                   weight_decay=weight_decay, seed=seed, device=device)
    acc = classification_accuracy(model, test_images.to(device), torch.as_tensor(test_labels).to(device),
                                  batch_size=max(batch_size, 256), topk=topk)
    return {**acc, "n_train": len(train_labels), "n_test": len(test_labels)}
