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

A *method* is a named callable ``PIL image -> PIL image`` (:class:`Method`), built by
:func:`make_method`; ``sr3 upscale --method bicubic|raisr`` uses the same factory.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from . import metrics as M
from . import perceptual
from .external import ExternalOutputs, parse_spec
from .degradation import crop_to_multiple, downsample, upsample
from .errors import UserError
from .imageio import (ImageConversionWarning, atomic_write_text, list_images, load_image, pil_to_tensor, save_image,
                      tensor_to_pil)
from .pipeline import DEFAULT_SAMPLER, DEFAULT_STEPS, DEFAULT_TEMPERATURE, check_temperature
from .samplers import SAMPLERS as _SAMPLER_FUNCTIONS

METHOD_NAMES = ("bicubic", "raisr", "regression", "sr3")
SAMPLERS = tuple(sorted(_SAMPLER_FUNCTIONS))
CSV_FIELDS = ["method", "image", "sampler", "steps", "height", "width", *M.FIDELITY_METRICS, "seconds"]
MIN_LR_SIDE = 3
"""Smallest LR side (px) we evaluate; anything smaller is reported and skipped.  3 LR pixels
leave at least ``scale`` HR pixels after the ``scale``-pixel border crop on each side."""


# ----------------------------------------------------------------------------------------------
# Methods
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Method:
    """A super-resolution method: ``method(lr_pil) -> sr_pil`` of size ``scale`` times the input.

    ``name`` keys its rows in metrics.csv (``"sr3@ddim-20"`` for a step-curve point);
    ``kind`` is one of :data:`METHOD_NAMES` or ``"external"``; ``sampler``/``steps``/``temperature``
    are set for diffusion.  ``outputs``: for an external method (``--methods NAME=DIR``), the
    image key -> output lookup used instead of ``upscale``.
    """

    name: str
    kind: str
    scale: int
    upscale: Callable[[Image.Image], Image.Image]
    sampler: str | None = None
    steps: int | None = None
    temperature: float | None = None
    outputs: Callable[[str], Image.Image] | None = None

    def __call__(self, img: Image.Image) -> Image.Image:
        return self.upscale(img)


def bicubic_upscale(img: Image.Image, scale: int) -> Image.Image:
    """Bicubic upscaling with :func:`sr3.degradation.upsample` (the operator SR3 conditions on)."""
    x = pil_to_tensor(img.convert("RGB"))[None]
    return tensor_to_pil(upsample(x, scale)[0])


def _objective(pipe) -> str:
    cfg = pipe.config
    return getattr(getattr(cfg, "diffusion", None), "objective", None) or getattr(cfg, "objective", "diffusion")


def make_method(name: str, args: argparse.Namespace | None = None, *, scale: int | None = None,
                model: str | Path | None = None, raisr_model: str | Path | None = None, sampler: str | None = None,
                steps: int | None = None, seed: int | None = None, temperature: float = DEFAULT_TEMPERATURE,
                pipe=None) -> Method:
    """Build a :class:`Method` by name: ``bicubic``, ``raisr``, ``regression`` or ``sr3``.

    Settings come from keyword arguments, else from ``args`` (an argparse namespace with
    any of ``scale``, ``model``, ``raisr_model``, ``sampler``, ``steps``, ``seed``):

    * ``scale``: 2, 3 or 4 for bicubic/raisr (models know their own; a mismatch is an error);
    * ``raisr_model``: a RAISR filter-bank folder, default the shipped bank for ``scale``
      (``model`` is used too when it holds a filter bank, for ``sr3 upscale --method raisr --model DIR``);
    * ``model``: the model folder for ``sr3``/``regression`` (``pipe``: an already loaded pipeline);
    * ``sampler``, ``steps``, ``seed``, ``temperature``: diffusion sampling (ignored by regression);
      ``temperature`` comes only from the keyword (see :class:`sr3.samplers.PerSampleNoise`).
    """
    def pick(value, attr, default=None):
        if value is not None:
            return value
        got = getattr(args, attr, None) if args is not None else None
        return default if got is None else got

    scale = pick(scale, "scale")
    if name == "bicubic":
        scale = int(scale or 4)
        return Method("bicubic", "bicubic", scale, lambda img: bicubic_upscale(img, scale))
    if name == "raisr":
        from .raisr import load_raisr

        path = pick(raisr_model, "raisr_model")
        maybe = pick(model, "model")
        if path is None and maybe is not None and (Path(maybe) / "filters.safetensors").is_file():
            path = maybe
        bank = load_raisr(path, int(scale) if scale is not None else (None if path else 4))
        return Method("raisr", "raisr", bank.scale, bank.upscale)
    if name in ("sr3", "regression"):
        if pipe is None:
            import sr3

            path = pick(model, "regression_model" if name == "regression" else "model")
            if path is None and name == "regression":
                path = pick(None, "model")
            if path is None:
                flag = "--regression-model" if name == "regression" else "--model"
                raise UserError(f"--methods {name}: needs a trained model; pass {flag} DIR")
            pipe = sr3.load(path)
        objective = _objective(pipe)
        if name == "regression" and objective != "regression":
            raise UserError(f"{pick(model, 'regression_model')}: --methods regression needs a model trained with "
                            "--objective regression")
        if name == "sr3" and objective == "regression":
            raise UserError(f"{pick(model, 'model')}: this is a regression model; list it as --methods regression "
                            "with --regression-model")
        if scale is not None and int(scale) != pipe.scale:
            raise UserError(f"--methods {name}: the model upscales {pipe.scale}x but --scale is {scale}; "
                            f"pass --scale {pipe.scale}")
        if name == "regression":
            seed_ = int(pick(seed, "seed", 0))
            return Method("regression", "regression", pipe.scale,
                          lambda img: pipe.upscale(img, sampler="ddim", steps=1, seed=seed_))
        sampler_ = pick(sampler, "sampler", DEFAULT_SAMPLER)
        steps_ = int(pick(steps, "steps", DEFAULT_STEPS))
        seed_ = int(pick(seed, "seed", 0))
        def sample(img):
            return pipe.upscale(img, sampler=sampler_, steps=steps_, seed=seed_, temperature=temperature)
        return Method("sr3", "sr3", pipe.scale, sample, sampler=sampler_, steps=steps_, temperature=temperature)
    raise UserError(f"unknown method {name!r}; choose from {', '.join(METHOD_NAMES)}")


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


def _json_safe(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


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

def _parse_list(text: str | None, kind=str) -> list:
    return [kind(t.strip()) for t in text.split(",") if t.strip()] if text else []


def build_methods(args: argparse.Namespace) -> tuple[list[Method], list[Method]]:
    """Main methods from ``--methods`` and step-curve points from ``--steps-curve``."""
    names = _parse_list(args.methods)
    if not names:
        raise UserError("--methods: give at least one of " + ", ".join(METHOD_NAMES))
    external = [parse_spec(n, METHOD_NAMES) for n in names if "=" in n]  # NAME=DIR: outputs made by another tool
    names = [n for n in names if "=" not in n]
    for n in names:
        if n not in METHOD_NAMES:
            raise UserError(f"--methods: unknown method {n!r}; choose from {', '.join(METHOD_NAMES)} or NAME=DIR")
    temperatures = [check_temperature(t) for t in _parse_list(getattr(args, "temperature", None), float)]
    temperatures = temperatures or [DEFAULT_TEMPERATURE]
    pipe = None
    methods = []
    for n in dict.fromkeys(names):
        if n != "sr3":
            methods.append(make_method(n, args))
            continue
        import sr3

        if args.model is None:
            raise UserError("--methods sr3: needs a trained diffusion model; pass --model DIR")
        pipe = sr3.load(args.model)
        for t in dict.fromkeys(temperatures):
            m = make_method("sr3", args, pipe=pipe, temperature=t)
            name = "sr3" if len(temperatures) == 1 else f"sr3@t{t:g}"  # one row per temperature
            methods.append(Method(name, "sr3", m.scale, m.upscale, m.sampler, m.steps, t))
    for name, folder in external:
        methods.append(Method(name, "external", int(args.scale), None, outputs=ExternalOutputs(name, folder)))
    curve = []
    steps = _parse_list(args.steps_curve, int)
    if steps:
        if pipe is None:
            raise UserError("--steps-curve: needs --methods sr3 and --model (curves are for the diffusion model)")
        for sampler in _parse_list(args.curve_samplers) or [args.sampler]:
            if sampler not in SAMPLERS:
                raise UserError(f"--curve-samplers: unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
            for s in steps:
                if s < 1:
                    raise UserError(f"--steps-curve: steps must be >= 1, got {s}")
                m = make_method("sr3", args, pipe=pipe, sampler=sampler, steps=s, temperature=temperatures[0])
                curve.append(Method(f"sr3@{sampler}-{s}", "sr3", m.scale, m.upscale, sampler, s, temperatures[0]))
    return methods, curve


def _check_run_file(out: Path, settings: dict) -> None:
    """A resumed run must use the same data, scale and sampling, or its CSV rows would mix up."""
    path = out / "run.json"
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = {}
        for k in ("data", "lr_data", "scale"):
            if k in old and old[k] != settings[k]:
                raise UserError(f"{out}: holds a run with {k} = {old[k]}, not {settings[k]}; use a new --out")
        for name, then in old.get("sampling", {}).items():  # [sampler, steps, temperature] per diffusion row
            now = settings["sampling"].get(name)
            if now is not None and now != then:
                raise UserError(f"{out}: its {name} rows were sampled with {then} (sampler, steps, temperature), "
                                f"not {now}; use a new --out")
    atomic_write_text(path, json.dumps(settings, indent=2) + "\n")


def evaluate(args: argparse.Namespace) -> dict:
    """Run the evaluation described by parsed ``sr3 evaluate`` arguments; returns metrics.json's content."""
    from . import report

    scale = int(args.scale)
    if scale < 1:
        raise UserError(f"--scale must be a positive integer, got {scale}")
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{out}: cannot create output folder ({e.strerror}); choose another --out") from None
    samples = collect_samples(Path(args.data), Path(args.lr_data) if args.lr_data else None, args.limit)
    methods, curve = build_methods(args)
    extractor = make_extractor(args.fid_weights, args.feature_extractor)
    metric_groups = perceptual.parse_metrics(getattr(args, "metrics", None))
    _check_run_file(out, {"data": str(Path(args.data).resolve()),
                          "lr_data": str(Path(args.lr_data).resolve()) if args.lr_data else None,
                          "scale": scale, "seed": args.seed, "methods": [m.name for m in methods + curve],
                          "sampling": {m.name: [m.sampler, m.steps, m.temperature] for m in methods + curve
                                       if m.kind == "sr3"}})
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
                    sr = m.outputs(sample.key) if m.outputs is not None else m(lr)
                    seconds = time.perf_counter() - t0
                    if sr.size != hr.size:
                        raise UserError(f"output is {sr.size[0]}x{sr.size[1]}, expected {hr.size[0]}x{hr.size[1]}")
                    values = M.fidelity_metrics(_unit(sr), hr_t, lr_t, scale)
                except (UserError, ValueError, RuntimeError, OSError) as e:
                    skipped[f"{m.name}:{sample.key}"] = f"{type(e).__name__}: {e}"
                    warnings.warn(f"{m.name} failed on {sample.key} ({e}); skipped")
                    continue
                save_image(sr, image_file(out, m.name, sample.key))
                log.write({"method": m.name, "image": sample.key, "sampler": m.sampler or "",
                           "steps": m.steps or "", "height": hr.size[1], "width": hr.size[0],
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
        real_feats = None
        if extractor is not None:
            evaluated = {r["image"] for r in rows}
            real_imgs = [_unit(prepare_pair(s, scale)[0]) for s in samples if s.key in evaluated]
            real_feats, _ = M.extract_features(extractor, real_imgs)
        for m in all_methods:
            entry = summarise(rows, m.name, args.seed)
            entry.update({"kind": m.kind, "sampler": m.sampler, "steps": m.steps, "temperature": m.temperature})
            if extractor is not None:
                files = [image_file(out, m.name, s.key) for s in samples if s.key in evaluated]
                fakes = [_unit(Image.open(f).convert("RGB")) for f in files if f.exists()]
                feats, logits = M.extract_features(extractor, fakes)
                entry["distribution"] = M.distribution_scores(real_feats, feats, extractor=extractor.name,
                                                              fake_logits=logits, seed=args.seed).to_dict()
            if m in curve:
                summary["curves"].setdefault(m.sampler, []).append(entry)
            else:
                summary["methods"][m.name] = entry
        if metric_groups:  # ST-LPIPS, NIQE, classifier agreement, patch FID/KID, machine confusion
            evaluated = {r["image"] for r in rows}
            refs = {s.key: _unit(prepare_pair(s, scale)[0]) for s in samples if s.key in evaluated}
            scored = perceptual.score_outputs(
                perceptual.load_suite(metric_groups, lambda msg: print(msg, file=sys.stderr), args.seed), refs,
                {m.name: {k: image_file(out, m.name, k) for k in refs} for m in methods},
                out / "perceptual.csv", seed=args.seed, say=say)
            for name, entry in scored.pop("methods").items():
                summary["methods"][name]["perceptual"] = entry
            summary["perceptual"] = scored
    summary = _json_safe(summary)
    atomic_write_text(out / "metrics.json", json.dumps(summary, indent=2) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImageConversionWarning)
        grid = _grid(out, samples, rows, methods, scale, args.report_images)
    report.write_report(out, summary, grid)
    return summary


def _grid(out: Path, samples: list[Sample], rows: list[dict], methods: list[Method], scale: int, n: int):
    """The first ``n`` images that every method finished: [(key, [("LR", img), (method, img)..., ("HR", img)])]."""
    order = {name: i for i, name in enumerate(METHOD_NAMES)}
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


def run(args: argparse.Namespace) -> int:
    summary = evaluate(args)
    out = Path(args.out)
    for name, entry in summary["methods"].items():
        psnr = entry["metrics"]["psnr_y"]["mean"]
        ssim = entry["metrics"]["ssim_y"]["mean"]
        print(f"{name:12s} PSNR-Y {psnr if psnr is not None else float('nan'):6.2f} dB   "
              f"SSIM-Y {ssim if ssim is not None else float('nan'):.4f}   ({entry['n_images']} images)")
    if summary["skipped"]:
        print(f"sr3: {len(summary['skipped'])} image(s) skipped; reasons in {out / 'metrics.json'}", file=sys.stderr)
    print(f"report: {out / 'report.html'}")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="compare methods with PSNR/SSIM/consistency/FID and an HTML report",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, type=Path, help="folder of high-resolution reference images")
    p.add_argument("--lr-data", type=Path, help="folder of matching LR inputs (same file names); default: "
                                                 "made from --data with the training degradation")
    p.add_argument("--methods", default="bicubic,raisr", help="comma list of bicubic,raisr,regression,sr3 "
                                                              "(default bicubic,raisr), and NAME=DIR for a folder "
                                                              "of another tool's outputs named like the HR files")
    p.add_argument("--scale", type=int, default=4, help="upscaling factor (default 4); models must match")
    p.add_argument("--out", required=True, type=Path, help="output folder: metrics.csv, metrics.json, report.html")
    p.add_argument("--model", type=Path, help="diffusion model folder for --methods sr3")
    p.add_argument("--regression-model", type=Path, help="regression model folder for --methods regression")
    p.add_argument("--raisr-model", type=Path, help="RAISR filter bank (default: the shipped one for --scale)")
    p.add_argument("--sampler", choices=SAMPLERS, default=DEFAULT_SAMPLER,
                   help=f"sampler for sr3 (default {DEFAULT_SAMPLER})")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"sampling steps for sr3 (default {DEFAULT_STEPS})")
    p.add_argument("--temperature", default=None, help="sampling-noise temperature(s) in [0, 1] for sr3, comma list "
                   f"(default {DEFAULT_TEMPERATURE}); several give one row each (sr3@t0.5, ...); curves use the first")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (each image uses it) and bootstrap seed")
    p.add_argument("--steps-curve", help="comma list of step counts for metric-vs-steps curves, e.g. 5,10,20,50,100")
    p.add_argument("--curve-samplers", help="comma list of samplers for the curves (default: --sampler)")
    p.add_argument("--fid-weights", help="local Inception weights (weights-inception-2015-12-05-6726825d.pth) "
                                         "for standard FID/KID/IS; needs torch-fidelity")
    p.add_argument("--feature-extractor", help="'random' (a seeded random CNN, NOT standard FID) or "
                                               "'package.module:factory' returning an nn.Module")
    p.add_argument("--metrics", help="perceptual metrics: 'all' or a comma list of "
                   f"{','.join(perceptual.GROUPS)} (weights from installed packages; default none)")
    p.add_argument("--limit", type=int, help="evaluate only the first N images")
    p.add_argument("--report-images", type=int, default=4, help="images shown in the report grid (default 4)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)
