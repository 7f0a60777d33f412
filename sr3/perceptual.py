"""The perceptual side of ``sr3 evaluate --metrics``: what SR3 is for, measured offline.

SR3 loses to regression in PSNR and wins where people and FID look (Saharia et al.
2021, Tables 1-3).  This module scores a run's saved outputs with the measures that can
tell a realistic output from a blurry one, each from weights an installed package ships:

* ``stlpips``: ST-LPIPS, AlexNet and VGG (:mod:`sr3.stlpips`), per image against the HR image;
* ``niqe``: NIQE, no reference (:mod:`sr3.niqe`), per image; the HR images are scored too;
* ``classifier``: does an ImageNet MobileNetV2 give the output the HR image's top-1 class
  (:mod:`sr3.imagenet_classifier`), per image;
* ``fid``: FID and KID over patches (:mod:`sr3.inception`), per method against the HR patches;
* ``confusion``: the machine confusion rate (:mod:`sr3.confusion`), per method.

A group whose package is missing is dropped with a one-line message naming the
``pip install``; the others still run.  Per-image values are cached in
``perceptual.csv`` (method, image, metric, value), so a resumed run scores only what is new.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from . import confusion as C
from . import imagenet_classifier, inception, niqe, stlpips
from .errors import UserError
from .imageio import pil_to_tensor
from .metrics import bootstrap_ci

GROUPS = ("stlpips", "niqe", "classifier", "fid", "confusion")
PER_IMAGE = {"stlpips": ("stlpips_alex", "stlpips_vgg"), "niqe": ("niqe",),
             "classifier": ("imagenet_top1_agree", "imagenet_top5_agree")}
LOWER_IS_BETTER = {"stlpips_alex": True, "stlpips_vgg": True, "niqe": True, "imagenet_top1_agree": False,
                   "imagenet_top5_agree": False}
FID_PATCH = 128
FID_STRIDE = 64
"""FID/KID use every 128x128 patch on a 64 px grid of each image (9 per 256 px crop): SR
papers' patch-based FID for small test sets.  The patch count is written beside each number.
(Each patch costs one 299 px Inception pass, ~0.1-0.5 s on 2 CPU cores, hence not more.)"""
INCEPTION_BATCH = 16
CSV_FIELDS = ["method", "image", "metric", "value"]


def parse_metrics(text: str | None) -> tuple[str, ...]:
    """``--metrics`` text -> groups: ``all``, a comma list of :data:`GROUPS`, or empty/``none`` for none."""
    if not text or text.strip() in ("", "none"):
        return ()
    names = [t.strip() for t in text.split(",") if t.strip()]
    if "all" in names:
        return GROUPS
    bad = [n for n in names if n not in GROUPS]
    if bad:
        raise UserError(f"--metrics: unknown metric {bad[0]!r}; choose from all, {', '.join(GROUPS)}")
    return tuple(g for g in GROUPS if g in names)


@dataclass
class PerceptualSuite:
    """The loaded networks of the requested groups; ``notes`` says which groups were dropped and why."""

    groups: tuple[str, ...]
    notes: list[str]
    stlpips_nets: dict
    classifier: object | None
    inception: object | None
    confusion: C.ConfusionConfig

    def per_image(self, sr: torch.Tensor, hr: torch.Tensor) -> dict[str, float]:
        """Per-image metrics of one output ``sr`` against its HR image (both ``[3, H, W]`` in [0, 1])."""
        values: dict[str, float] = {}
        for net, model in self.stlpips_nets.items():
            small = min(sr.shape[-2:]) < stlpips.MIN_SIDE[net]  # undefined for tiny images: NaN, like NIQE
            values[f"stlpips_{net}"] = float("nan") if small else float(model(sr, hr)[0])
        if "niqe" in self.groups:
            values["niqe"] = niqe.niqe(sr)
        if self.classifier is not None:
            values.update(imagenet_classifier.top1_agreement(self.classifier, sr, hr))
        return values

    def per_image_names(self) -> list[str]:
        return [m for g in self.groups for m in PER_IMAGE.get(g, ())]


def load_suite(groups: tuple[str, ...], say: Callable[[str], None] = print, seed: int = 0) -> PerceptualSuite:
    """Load each group's network; a group whose package is missing is dropped with ``say(message)``."""
    notes: list[str] = []
    kept: list[str] = []
    nets, classifier, extractor = {}, None, None
    for g in groups:
        try:
            if g == "stlpips":
                nets = {net: stlpips.load_stlpips(net) for net in stlpips.NETS}
            elif g == "classifier":
                classifier = imagenet_classifier.load_mobilenet_v2()
            elif g == "fid":
                extractor = inception.PackagedInception()
            kept.append(g)
        except UserError as e:
            notes.append(f"{g} skipped: {e}")
            say(f"sr3: {g} skipped: {e}")
    return PerceptualSuite(tuple(kept), notes, nets, classifier, extractor, C.ConfusionConfig(seed=seed))


def _read_cache(path: Path) -> dict[tuple[str, str, str], float]:
    if not path.exists():
        return {}
    cache = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                cache[(row["method"], row["image"], row["metric"])] = float(row["value"])
            except (KeyError, TypeError, ValueError):
                continue  # a line cut short by an interrupted write
    return cache


def _load(path: Path) -> torch.Tensor:
    return pil_to_tensor(Image.open(path).convert("RGB")).add(1).div(2)


def _features(extractor, patches: torch.Tensor) -> torch.Tensor:
    """Inception features of patches in [0, 1], quantised to 8 bits, in batches of :data:`INCEPTION_BATCH`."""
    u8 = (patches.clamp(0, 1) * 255).round().to(torch.uint8)
    return torch.cat([extractor(u8[i:i + INCEPTION_BATCH])[0].float() for i in range(0, len(u8), INCEPTION_BATCH)])


def _patch_features(extractor, images) -> torch.Tensor:
    """Features [N, D] of every FID patch of ``images`` (an iterable of [3, H, W] in [0, 1]), taken one
    image at a time, so only features (8 KB per patch), never all patches, are held."""
    feats = [_features(extractor, patches) for patches in
             (inception.image_patches(x, FID_PATCH, FID_STRIDE) for x in images) if len(patches)]
    return torch.cat(feats) if feats else torch.zeros(0, 0)


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID's Fréchet distance between Gaussians fitted to two feature sets ``[N, D]``, ``[M, D]`` (N, M >= 2).

    ``|mu1 - mu2|^2 + Tr S1 + Tr S2 - 2 Tr sqrt(S1 S2)`` (Heusel et al. 2017), computed exactly
    in the sample space: with centred features A1, A2, ``Tr sqrt(S1 S2)`` is the sum of the
    singular values of ``A1 A2^T / sqrt((N-1)(M-1))``, so a few hundred patches against
    2048-d features need an N x M SVD instead of a 2048 x 2048 matrix square root (the value
    equals torchmetrics' FrechetInceptionDistance on the same features; tested).
    """
    a, b = real.double(), fake.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = a - mu_a, b - mu_b
    na, nb = len(a) - 1, len(b) - 1
    trace_sqrt = torch.linalg.svdvals(ca @ cb.T).sum() / math.sqrt(na * nb)
    return float((mu_a - mu_b).pow(2).sum() + ca.pow(2).sum() / na + cb.pow(2).sum() / nb - 2 * trace_sqrt)


def kernel_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """KID (Bińkowski et al. 2018): unbiased MMD² with the kernel ``(x.y / D + 1)^3`` over the full sets.

    Unbiased even for small sets (its advantage over FID at a few hundred samples); no
    random subsets are drawn (torchmetrics' subset average equals this when one subset is the whole set).
    """
    a, b = real.double(), fake.double()
    d = a.shape[1]
    kaa, kbb, kab = (a @ a.T / d + 1) ** 3, (b @ b.T / d + 1) ** 3, (a @ b.T / d + 1) ** 3
    n, m = len(a), len(b)
    return float((kaa.sum() - kaa.diagonal().sum()) / (n * (n - 1)) + (kbb.sum() - kbb.diagonal().sum()) / (m * (m - 1))
                 - 2 * kab.mean())


def _summary(values: list[float], seed: int) -> dict:
    mean, lo, hi = bootstrap_ci(values, seed=seed)
    return {"mean": mean, "ci_low": lo, "ci_high": hi, "n": sum(1 for v in values if math.isfinite(v))}


def score_outputs(suite: PerceptualSuite, references: Mapping[str, torch.Tensor], outputs: dict[str, dict[str, Path]],
                  cache_path: Path, seed: int = 0, say: Callable[[str], None] = print) -> dict:
    """Score every method's saved outputs; returns ``{"methods": {name: {...}}, "reference": {...}, ...}``.

    ``references``: image key -> HR image ``[3, H, W]`` in [0, 1] (a mapping that may read each
    from disk when asked, as :class:`sr3.evaluate.References` does; only machine confusion holds
    every image).  ``outputs``: method -> image key -> saved output file (keys without a file
    are ignored).  Per-image values come from / go to ``cache_path``; per-method entries hold
    each per-image metric's mean and 95% bootstrap CI, ``fid_patches`` (FID/KID with patch
    counts) and ``machine_confusion``.  ``reference`` holds the HR images' own NIQE (what real photos score).
    """
    cache = _read_cache(cache_path)
    new = not cache_path.exists() or cache_path.stat().st_size == 0
    names = suite.per_image_names()
    result: dict = {"groups": list(suite.groups), "notes": list(suite.notes), "methods": {}, "reference": {}}
    use_fid = suite.inception is not None
    if use_fid:
        real_feats = _patch_features(suite.inception, references.values())
        if len(real_feats) < 2:
            use_fid = False
            result["notes"].append(f"FID/KID skipped: the HR images hold {len(real_feats)} patches of {FID_PATCH} px "
                                   "(need 2 or more)")
        else:
            result["inception"] = suite.inception.name
    with open(cache_path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        if new:
            writer.writeheader()
        if "niqe" in suite.groups:
            hr_niqe = []
            for key, hr in references.items():
                if ("HR", key, "niqe") not in cache:
                    cache[("HR", key, "niqe")] = niqe.niqe(hr)
                    writer.writerow({"method": "HR", "image": key, "metric": "niqe",
                                     "value": f"{cache[('HR', key, 'niqe')]:.6g}"})
                hr_niqe.append(cache[("HR", key, "niqe")])
            result["reference"]["niqe"] = _summary(hr_niqe, seed)
        for method, files in outputs.items():
            present = {k: p for k, p in files.items() if k in references and Path(p).is_file()}
            if not present:
                continue
            say(f"perceptual metrics: {method} ({len(present)} images)")
            entry: dict = {"metrics": {}}
            for key, path in present.items():
                if names and any((method, key, n) not in cache for n in names):
                    for n, v in suite.per_image(_load(path), references[key]).items():
                        cache[(method, key, n)] = v
                        writer.writerow({"method": method, "image": key, "metric": n, "value": f"{v:.6g}"})
                    f.flush()
            for n in names:
                entry["metrics"][n] = _summary([cache[(method, key, n)] for key in present], seed)
            if use_fid:
                feats = _patch_features(suite.inception, (_load(p) for p in present.values()))
                scores = {"extractor": suite.inception.name, "n_real": len(real_feats), "n_fake": len(feats),
                          "fid": frechet_distance(real_feats, feats), "kid": kernel_distance(real_feats, feats),
                          "patch": FID_PATCH, "stride": FID_STRIDE,
                          "note": f"{len(real_feats)} real and {len(feats)} output patches of {FID_PATCH} px "
                                  f"(stride {FID_STRIDE}); not comparable with published 50k-image FIDs"}
                entry["fid_patches"] = scores
            if "confusion" in suite.groups:  # trains a discriminator on every pair, so holds them all
                fakes = {k: _load(p) for k, p in present.items()}
                keys = list(fakes)
                try:
                    entry["machine_confusion"] = C.machine_confusion([references[k] for k in keys],
                                                                     [fakes[k] for k in keys], suite.confusion).to_dict()
                except ValueError as e:  # too few or too small images for the two-sample test
                    result["notes"].append(f"machine confusion of {method} skipped: {e}")
            result["methods"][method] = entry
    return result
