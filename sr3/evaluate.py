"""``sr3 evaluate``: compare super-resolution methods the way the SR3/CDM papers do.

For every high-resolution (HR) reference image the low-resolution (LR) input is made
with the training degradation (crop to a multiple of the scale, then
:func:`sr3.degradation.downsample`, then 8-bit rounding like any saved image), or read
from a paired ``--lr-data`` folder.  Each method upscales it; the per-image metrics of
:mod:`sr3.metrics` are appended to ``metrics.csv`` as soon as they exist, so an
interrupted run loses nothing and a re-run skips the (method, image) pairs already
there.  At the end ``metrics.json`` holds each method's means with 95% bootstrap
confidence intervals (plus FID/KID/IS when a feature extractor is given) and
``report.html`` shows the table, image grids and step curves (:mod:`sr3.report`).

Methods are :class:`sr3.methods.Upscaler` objects from the one registry in
:mod:`sr3.methods`; the ``sr3 evaluate`` command (sr3/commands/evaluate.py) builds them.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib
import math
import sys
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from . import metrics as M
from . import perceptual, report
from .atomic import json_safe, write_json
from .config import read_json, require
from .degradation import crop_to_multiple, downsample
from .errors import UserError
from .frames import refinement_strip
from .imageio import ImageConversionWarning, list_images, load_image, pil_to_tensor, save_image, tensor_to_pil
from .incremental_scores import IncrementalDistributionScores
from .methods import METHODS, Upscaler

CSV_FIELDS = ["method", "image", "sampler", "steps", "height", "width", *M.FIDELITY_METRICS, "seconds"]
MIN_LR_SIDE = 3
"""Smallest LR side (px) we evaluate; anything smaller is reported and skipped.  3 LR pixels
leave at least ``scale`` HR pixels after the ``scale``-pixel border crop on each side."""


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    """One evaluation image: its key in metrics.csv and where its HR (and LR) files are."""

    key: str
    hr_path: Path
    lr_path: Path | None = None


def _key(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def collect_samples(data: Path, lr_data: Path | None = None, limit: int | None = None) -> list[Sample]:
    """List HR images (and pair them with LR images by relative path without extension)."""
    if not data.exists():
        raise UserError(f"{data}: no such folder; check --data")
    hr = list_images(data)
    root = data if data.is_dir() else data.parent
    if not hr:
        raise UserError(f"{data}: no images found (png, jpg, webp, tiff, bmp); check --data")
    samples = [Sample(_key(p, root), p) for p in hr]
    if lr_data is not None:
        if not lr_data.exists():
            raise UserError(f"{lr_data}: no such folder; check --lr-data")
        lr_root = lr_data if lr_data.is_dir() else lr_data.parent
        lr = {str(Path(_key(p, lr_root)).with_suffix("")): p for p in list_images(lr_data)}
        missing = [s.key for s in samples if str(Path(s.key).with_suffix("")) not in lr]
        if missing:
            raise UserError(f"{lr_data}: {len(missing)} of {len(samples)} HR images have no LR image of the same name "
                            f"(first: {missing[0]}); pair the folders by file name")
        samples = [Sample(s.key, s.hr_path, lr[str(Path(s.key).with_suffix(""))]) for s in samples]
    return samples[:limit] if limit else samples


def prepare_pair(sample: Sample, scale: int) -> tuple[Image.Image, Image.Image]:
    """(HR, LR) PIL images for one sample, HR cropped so that HR = scale x LR exactly.

    Made LR: crop HR to a multiple of ``scale`` (bottom/right), ``downsample``, round to
    8 bits.  Paired LR: HR must be ``scale`` x LR (an HR up to ``scale - 1`` px larger is
    cropped).  Raises UserError (the image is then skipped) for unusable inputs.
    """
    hr = load_image(sample.hr_path)
    if sample.lr_path is None:
        w, h = hr.size
        if min(w, h) // scale < MIN_LR_SIDE:
            raise UserError(f"{sample.hr_path}: {w}x{h} px is too small for {scale}x (needs at least "
                            f"{MIN_LR_SIDE * scale} px per side)")
        x = crop_to_multiple(pil_to_tensor(hr), scale)
        return tensor_to_pil(x), tensor_to_pil(downsample(x[None], scale)[0])
    lr = load_image(sample.lr_path)
    (lw, lh), (hw, hh) = lr.size, hr.size
    if not (lw * scale <= hw < (lw + 1) * scale and lh * scale <= hh < (lh + 1) * scale):
        raise UserError(f"{sample.lr_path}: LR {lw}x{lh} x {scale} does not match HR {hw}x{hh} "
                        f"({sample.hr_path.name}); wrong --scale or mismatched pair")
    if min(lw, lh) < MIN_LR_SIDE:
        raise UserError(f"{sample.lr_path}: LR {lw}x{lh} px is too small (needs {MIN_LR_SIDE} px per side)")
    return hr.crop((0, 0, lw * scale, lh * scale)), lr


def _unit(img: Image.Image) -> torch.Tensor:
    return pil_to_tensor(img).add(1).div(2)


class References(Mapping):
    """Image key -> HR reference [3, H, W] in [0, 1], read from disk when asked for: scoring
    thousands of images holds one reference at a time, not all of them."""

    def __init__(self, samples: list[Sample], scale: int):
        self._samples, self._scale = {s.key: s for s in samples}, scale

    def __getitem__(self, key: str) -> torch.Tensor:
        return _unit(prepare_pair(self._samples[key], self._scale)[0])

    def __iter__(self):
        return iter(self._samples)

    def __len__(self) -> int:
        return len(self._samples)


# ----------------------------------------------------------------------------------------------
# Results on disk: metrics.csv (append-only), images/, metrics.json
# ----------------------------------------------------------------------------------------------

def read_rows(csv_path: Path) -> list[dict]:
    """Rows of metrics.csv with numbers parsed; torn or malformed lines are dropped."""
    if not csv_path.exists():
        return []
    rows = []
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            if None in row or any(row.get(k) is None for k in CSV_FIELDS):
                continue  # a line cut short by an interrupted write
            try:
                for k in (*M.FIDELITY_METRICS, "seconds"):
                    row[k] = float(row[k])
                row["height"], row["width"] = int(row["height"]), int(row["width"])
                row["steps"] = int(row["steps"]) if row["steps"] else None
            except ValueError:
                continue
            rows.append(row)
    return rows


def _drop_torn_last_line(path: Path) -> None:
    """Cut a last line that an interrupted run left without its newline (it is incomplete)."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


class CsvLog:
    """Appends one row per (method, image) and flushes, so partial results survive a crash."""

    def __init__(self, path: Path):
        self.path = path
        new = not path.exists() or path.stat().st_size == 0
        if not new:
            with open(path, newline="") as f:
                header = next(csv.reader(f), None)
            if header != CSV_FIELDS:
                raise UserError(f"{path}: written by another version or tool (columns differ); use a new --out")
            _drop_torn_last_line(path)
        self.file = open(path, "a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=CSV_FIELDS)
        if new:
            self.writer.writeheader()
            self.file.flush()

    def write(self, row: dict) -> None:
        self.writer.writerow(row)
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def image_file(out: Path, method: str, key: str) -> Path:
    """Where the output of ``method`` for image ``key`` is saved (PNG, lossless)."""
    safe = method.replace("@", "_at_").replace("/", "_")
    return out / "images" / safe / (key.replace("/", "__").rsplit(".", 1)[0] + ".png")


def summarise(rows: list[dict], method: str, seed: int) -> dict:
    """Per-metric mean and 95% bootstrap CI of one method's rows."""
    mine = [r for r in rows if r["method"] == method]
    out = {"n_images": len(mine), "metrics": {}}
    for m in (*M.FIDELITY_METRICS, "seconds"):
        vals = [r[m] for r in mine]
        mean, lo, hi = M.bootstrap_ci(vals, seed=seed)
        n = sum(1 for v in vals if math.isfinite(v))
        out["metrics"][m] = {"mean": mean, "ci_low": lo, "ci_high": hi, "n": n}
    return out


# ----------------------------------------------------------------------------------------------
# Feature extractors for FID/KID/IS
# ----------------------------------------------------------------------------------------------

def make_extractor(fid_weights: str | None, feature_extractor: str | None) -> M.FeatureExtractor | None:
    """``--fid-weights PATH`` (standard Inception) or ``--feature-extractor random|module:callable``."""
    if fid_weights and feature_extractor:
        raise UserError("--fid-weights and --feature-extractor are alternatives; pass one")
    if fid_weights:
        return M.InceptionExtractor(fid_weights)
    if not feature_extractor:
        return None
    if feature_extractor == "random":
        return M.RandomConvExtractor()
    mod_name, _, attr = feature_extractor.partition(":")
    if not attr:
        raise UserError(f"--feature-extractor {feature_extractor}: expected 'random' or 'package.module:factory'")
    try:
        factory = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as e:
        raise UserError(f"--feature-extractor {feature_extractor}: cannot import ({e}); check the name") from None
    module = factory() if not isinstance(factory, torch.nn.Module) else factory
    if isinstance(module, M.FeatureExtractor):
        return module
    return M.ModuleExtractor(module, getattr(module, "name", None) or feature_extractor)


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------

def _check_run_file(out: Path, settings: dict) -> None:
    """A resumed run must use the same data, scale and sampling, or its CSV rows would mix up."""
    path = out / "run.json"
    if path.exists():
        old = read_json(path, "evaluation run file")
        for k in ("data", "lr_data", "scale"):
            if k in old and old[k] != settings[k]:
                raise UserError(f"{out}: holds a run with {k} = {old[k]}, not {settings[k]}; use a new --out")
        for name, then in old.get("sampling", {}).items():  # [sampler, steps, temperature] per diffusion row
            now = settings["sampling"].get(name)
            if now is not None and now != then:
                raise UserError(f"{out}: its {name} rows were sampled with {then}, not {now}; use a new --out")
    write_json(path, settings)


@dataclass(frozen=True)
class EvaluationConfig:
    """What ``sr3 evaluate`` compares on, and where it writes (its flags are generated from these fields)."""

    data: Path
    """Folder of high-resolution reference images."""
    out: Path
    """Output folder: metrics.csv, metrics.json, images/, report.html."""
    lr_data: Path | None = None
    """Folder of matching LR inputs (same file names); default: made from --data with the training degradation."""
    scale: int = 4
    """Upscaling factor (>= 1); models must match."""
    seed: int = 0
    """Sampling seed (each image uses it) and bootstrap seed, >= 0."""
    limit: int = 0
    """Evaluate only the first N images (0 = all)."""
    report_images: int = 4
    """Images shown in the report grid (>= 0)."""
    fid_weights: str | None = None
    """Local Inception weights (weights-inception-2015-12-05-6726825d.pth) for standard FID/KID/IS; needs torch-fidelity."""
    feature_extractor: str | None = None
    """'random' (a seeded random CNN, NOT standard FID) or 'package.module:factory' returning an nn.Module."""
    metrics: str | None = None
    """Perceptual and distribution metrics: 'all' or a comma list of stlpips, niqe, classifier, fid, confusion
    (sr3/perceptual.py; weights from installed packages; default none)."""
    quiet: bool = False
    """No progress lines."""

    def __post_init__(self):
        require(self.scale >= 1, f"--scale must be a positive integer, got {self.scale}")
        require(self.seed >= 0 and self.limit >= 0 and self.report_images >= 0,
                "--seed, --limit and --report-images must be >= 0")
        perceptual.parse_metrics(self.metrics)  # a one-line error for an unknown metric, before any work


def evaluate(args: EvaluationConfig, methods: list[Upscaler], curve: list[Upscaler] = ()) -> dict:
    """Run ``methods`` (report rows) and ``curve`` (step-curve points) on ``args.data``; returns metrics.json's content."""
    curve = list(curve)
    scale = int(args.scale)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{out}: cannot create output folder ({e.strerror}); choose another --out") from None
    samples = collect_samples(Path(args.data), Path(args.lr_data) if args.lr_data else None, args.limit)
    extractor = make_extractor(args.fid_weights, args.feature_extractor)
    metric_groups = perceptual.parse_metrics(args.metrics)
    _check_run_file(out, {"data": str(Path(args.data).resolve()),
                          "lr_data": str(Path(args.lr_data).resolve()) if args.lr_data else None,
                          "scale": scale, "seed": args.seed, "methods": [m.name for m in methods + curve],
                          "sampling": {m.name: dataclasses.asdict(m.sampling) for m in methods + curve
                                       if m.sampling is not None}})
    csv_path = out / "metrics.csv"
    done = {(r["method"], r["image"]) for r in read_rows(csv_path)}
    log = CsvLog(csv_path)
    skipped: dict[str, str] = {}
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if not args.quiet else (lambda msg: None)
    all_methods = methods + curve
    try:
        for i, sample in enumerate(samples):
            todo = [m for m in all_methods if (m.name, sample.key) not in done]
            if not todo:
                continue
            try:
                hr, lr = prepare_pair(sample, scale)
            except UserError as e:
                skipped[sample.key] = str(e)
                warnings.warn(f"{e} (image skipped)")
                continue
            hr_t, lr_t = _unit(hr), _unit(lr)
            save_image(lr, image_file(out, "lr", sample.key))
            for m in todo:
                t0 = time.perf_counter()
                try:
                    sr = m.upscale_pil(lr, seed=args.seed, key=sample.key)
                    seconds = time.perf_counter() - t0
                    if sr.size != hr.size:
                        raise UserError(f"output is {sr.size[0]}x{sr.size[1]}, expected {hr.size[0]}x{hr.size[1]}")
                    values = M.fidelity_metrics(_unit(sr), hr_t, lr_t, scale)
                except (UserError, ValueError, RuntimeError, OSError) as e:
                    skipped[f"{m.name}:{sample.key}"] = f"{type(e).__name__}: {e}"
                    warnings.warn(f"{m.name} failed on {sample.key} ({e}); skipped")
                    continue
                save_image(sr, image_file(out, m.name, sample.key))
                log.write({"method": m.name, "image": sample.key,
                           "sampler": m.sampling.sampler if m.sampling else "",
                           "steps": m.sampling.steps if m.sampling else "", "height": hr.size[1], "width": hr.size[0],
                           **{k: f"{v:.6g}" for k, v in values.items()}, "seconds": f"{seconds:.4g}"})
            say(f"[{i + 1}/{len(samples)}] {sample.key}")
    finally:
        log.close()

    keys = {s.key for s in samples}
    rows = [r for r in read_rows(csv_path) if r["image"] in keys]
    if not rows:
        reasons = "; ".join(list(skipped.values())[:3])
        raise UserError(f"{args.data}: no image could be evaluated ({reasons})")
    summary = {
        "scale": scale,
        "n_images": len({r["image"] for r in rows}),
        "conventions": {**M.CONVENTIONS, "border_crop_px": scale,
                        "lr_inputs": "paired --lr-data" if args.lr_data else
                        "HR cropped to a multiple of scale, sr3.degradation.downsample, rounded to 8 bits",
                        "confidence_intervals": "95% percentile bootstrap over images, 2000 resamples, "
                                                f"seed {args.seed}"},
        "extractor": extractor.name if extractor else None,
        "methods": {},
        "curves": {},
        "skipped": skipped,
    }
    # Images are read again below (FID references, report grid): their conversion warnings were shown once already.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImageConversionWarning)
        evaluated = [s for s in samples if s.key in {r["image"] for r in rows}]
        distribution = None
        if extractor is not None:
            # fed one image at a time: memory does not grow with the number of images (FID from running sums)
            distribution = IncrementalDistributionScores(extractor, seed=args.seed)
            for s in evaluated:
                distribution.update(pil_to_tensor(prepare_pair(s, scale)[0])[None], real=True)
        for m in all_methods:
            entry = summarise(rows, m.name, args.seed)
            entry.update({"kind": m.kind, "sampling": dataclasses.asdict(m.sampling) if m.sampling else None,
                          "sampler": m.sampling.sampler if m.sampling else None,
                          "steps": m.sampling.steps if m.sampling else None,
                          "temperature": m.sampling.temperature if m.sampling else None})
            if distribution is not None:
                distribution.reset_generated()
                for f in (image_file(out, m.name, s.key) for s in evaluated):
                    if f.exists():
                        distribution.update(pil_to_tensor(Image.open(f).convert("RGB"))[None], real=False)
                entry["distribution"] = distribution.compute().to_dict()
            if m in curve:
                summary["curves"].setdefault(m.sampling.sampler, []).append(entry)
            else:
                summary["methods"][m.name] = entry
        if metric_groups:  # ST-LPIPS, NIQE, classifier agreement, patch FID/KID, machine confusion
            refs = References(evaluated, scale)
            scored = perceptual.score_outputs(
                perceptual.load_suite(metric_groups, lambda msg: print(msg, file=sys.stderr), args.seed), refs,
                {m.name: {k: image_file(out, m.name, k) for k in refs} for m in methods},
                out / "perceptual.csv", seed=args.seed, say=say)
            for name, entry in scored.pop("methods").items():
                summary["methods"][name]["perceptual"] = entry
            summary["perceptual"] = scored
    summary = json_safe(summary)
    write_json(out / "metrics.json", summary)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImageConversionWarning)
        grid = _grid(out, samples, rows, methods, scale, args.report_images)
    report.write_report(out, summary, grid, _strips(grid, methods, args.seed))
    return summary


def _grid(out: Path, samples: list[Sample], rows: list[dict], methods: list[Upscaler], scale: int, n: int):
    """The first ``n`` images that every method finished: [(key, [("LR", img), (method, img)..., ("HR", img)])]."""
    order = {name: i for i, name in enumerate(METHODS)}
    shown = sorted(methods, key=lambda m: order.get(m.kind, 99))
    finished = {(r["method"], r["image"]) for r in rows}
    grid = []
    for s in samples:
        if len(grid) >= n:
            break
        files = [image_file(out, "lr", s.key)] + [image_file(out, m.name, s.key) for m in shown]
        if not all((m.name, s.key) in finished for m in shown) or not all(f.exists() for f in files):
            continue
        try:
            hr, _ = prepare_pair(s, scale)
        except UserError:
            continue
        imgs = [Image.open(f).convert("RGB") for f in files]
        grid.append((s.key, [("LR", imgs[0])] + [(m.name, im) for m, im in zip(shown, imgs[1:])] + [("HR", hr)]))
    return grid


def _strips(grid, methods: list[Upscaler], seed: int):
    """Refinement strips of the first grid image (its LR is the first column), one per diffusion method."""
    if not grid:
        return None
    key, columns = grid[0]
    strips = {m.name: refinement_strip(m, columns[0][1], seed) for m in methods}
    return key, {name: frames for name, frames in strips.items() if frames}
