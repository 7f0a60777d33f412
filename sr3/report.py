"""The evaluation report: one self-contained HTML file.

Everything is inside ``report.html`` (images and plots as base64 ``data:`` URIs, CSS
inline, no script), so it opens from disk in any browser with no server and can be
mailed as one file.  It holds the methods x metrics table with 95% confidence
intervals, image grids (LR | methods | HR, each with a zoomed crop) and the
metric-vs-sampling-steps plots drawn with matplotlib.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
from PIL import Image

from .atomic import atomic_write_text

# (key in metrics.json, column title, format, higher is better?)
TABLE_COLUMNS = [
    ("psnr_rgb", "PSNR RGB (dB)", "{:.2f}", True),
    ("psnr_y", "PSNR Y (dB)", "{:.2f}", True),
    ("ssim_rgb", "SSIM RGB", "{:.4f}", True),
    ("ssim_y", "SSIM Y", "{:.4f}", True),
    ("ms_ssim", "MS-SSIM", "{:.4f}", True),
    ("consistency", "Consistency MSE", "{:.3f}", False),
    ("seconds", "s / image", "{:.2f}", False),
]
DISTRIBUTION_COLUMNS = [("fid", "FID", "{:.2f}"), ("kid_mean", "KID", "{:.4f}"), ("is_mean", "IS", "{:.2f}")]
CURVE_METRICS = [("psnr_y", "PSNR Y (dB)"), ("ssim_y", "SSIM Y"), ("consistency", "Consistency MSE"),
                 ("fid", "FID")]

VIEW_WIDTH = 240   # px of each full-image thumbnail in the grid
ZOOM_WIDTH = 240   # px of each zoomed crop (nearest-neighbour, so pixels stay visible)

CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1800px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.best{font-weight:bold}
.ci{color:#777;font-size:85%}.grid td{text-align:center;vertical-align:top;border:none;padding:2px}
.grid img{display:block;image-rendering:pixelated}.note{color:#555;font-size:90%}
figure{display:inline-block;margin:0 1em 1em 0}code{background:#f5f5f5;padding:1px 3px}
"""


def data_uri(img: Image.Image, fmt: str = "PNG") -> str:
    """Encode a PIL image as a ``data:`` URI (PNG lossless, or JPEG for large thumbnails)."""
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.convert("RGB").save(buf, format="JPEG", quality=90)
    else:
        img.save(buf, format="PNG", optimize=True)
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def zoom_box(hr: Image.Image, scale: int) -> tuple[int, int, int, int]:
    """The most detailed square of the HR image (largest gradient energy), aligned to ``scale``.

    Side: a quarter of the shorter image side (at least 8 LR pixels), so fine detail
    that distinguishes the methods is what gets magnified.
    """
    y = np.asarray(hr.convert("L"), dtype=np.float32)
    side = max(8 * scale, min(y.shape) // 4 // scale * scale)
    side = min(side, min(y.shape) // scale * scale)
    energy = np.abs(np.diff(y, axis=0))[:, :-1] + np.abs(np.diff(y, axis=1))[:-1, :]
    integral = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    best, best_xy = -1.0, (0, 0)
    step = max(scale, side // 4 // scale * scale)
    for top in range(0, max(1, energy.shape[0] - side + 1), step):
        for left in range(0, max(1, energy.shape[1] - side + 1), step):
            b, r = min(top + side, energy.shape[0]), min(left + side, energy.shape[1])
            s = integral[b, r] - integral[top, r] - integral[b, left] + integral[top, left]
            if s > best:
                best, best_xy = s, (left, top)
    left, top = best_xy
    return left, top, left + side, top + side


def grid_html(items: list[tuple[str, list[tuple[str, Image.Image]]]], scale: int) -> str:
    """Rows of images: each row is (image key, [(label, image), ...]) with the LR first and HR last.

    Every cell shows a thumbnail and, below it, the same zoomed crop (chosen on the HR).
    LR crops use the box divided by ``scale``.
    """
    parts = []
    for key, columns in items:
        hr = columns[-1][1]
        box = zoom_box(hr, scale)
        head = "".join(f"<th>{html.escape(label)}</th>" for label, _ in columns)
        views, zooms = [], []
        for label, img in columns:
            is_lr = img.size != hr.size
            b = tuple(v // scale for v in box) if is_lr else box
            full = img.resize((hr.size[0], hr.size[1]), Image.NEAREST) if is_lr else img
            thumb_h = max(1, round(VIEW_WIDTH * hr.size[1] / hr.size[0]))
            thumb = full.resize((VIEW_WIDTH, thumb_h), Image.LANCZOS)
            crop = img.crop(b).resize((ZOOM_WIDTH, ZOOM_WIDTH), Image.NEAREST)
            views.append(f'<td><img src="{data_uri(thumb, "JPEG")}" width="{VIEW_WIDTH}" alt="{html.escape(label)}"></td>')
            zooms.append(f'<td><img src="{data_uri(crop)}" width="{ZOOM_WIDTH}" alt="zoom {html.escape(label)}"></td>')
        parts.append(f"<h3>{html.escape(key)}</h3><p class=note>zoom: HR box {box} (LR box /{scale}), "
                     f"nearest-neighbour magnification</p><table class=grid><tr>{head}</tr>"
                     f"<tr>{''.join(views)}</tr><tr>{''.join(zooms)}</tr></table>")
    return "\n".join(parts)


def _cell(entry: dict | None, fmt: str) -> str:
    if not entry or entry.get("mean") is None:
        return "<td>–</td>"
    ci = ""
    if entry.get("ci_low") is not None and entry.get("ci_high") is not None:
        ci = f'<br><span class=ci>[{fmt.format(entry["ci_low"])}, {fmt.format(entry["ci_high"])}]</span>'
    return f"<td>{fmt.format(entry['mean'])}{ci}</td>"


def metrics_table(methods: dict) -> str:
    """Methods x metrics table, mean with [95% CI] below; the best mean per column in bold."""
    has_dist = any("distribution" in e for e in methods.values())
    head = "<th>method</th><th>n</th>" + "".join(f"<th>{t}</th>" for _, t, _, _ in TABLE_COLUMNS)
    if has_dist:
        head += "".join(f"<th>{t}</th>" for _, t, _ in DISTRIBUTION_COLUMNS)
    best = {}
    for key, _, _, higher in TABLE_COLUMNS:
        vals = {n: e["metrics"][key]["mean"] for n, e in methods.items() if e["metrics"][key]["mean"] is not None}
        if len(vals) > 1 and key != "seconds":
            best[key] = (max if higher else min)(vals, key=vals.get)
    rows = []
    for name, e in methods.items():
        cells = []
        for key, _, fmt, _ in TABLE_COLUMNS:
            c = _cell(e["metrics"][key], fmt)
            cells.append(c.replace("<td>", "<td class=best>", 1) if best.get(key) == name else c)
        if has_dist:
            d = e.get("distribution") or {}
            for key, _, fmt in DISTRIBUTION_COLUMNS:
                v = d.get(key)
                cells.append(f"<td>{fmt.format(v)}</td>" if v is not None else "<td>–</td>")
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{e['n_images']}</td>{''.join(cells)}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


PERCEPTUAL_COLUMNS = [("stlpips_alex", "ST-LPIPS alex ↓", "{:.3f}"), ("stlpips_vgg", "ST-LPIPS vgg ↓", "{:.3f}"),
                      ("niqe", "NIQE ↓", "{:.2f}"), ("imagenet_top1_agree", "ImageNet top-1 agreement ↑", "{:.2f}")]


def perceptual_table(summary: dict) -> str:
    """Perceptual metrics (``sr3 evaluate --metrics``): per-image means with CIs, patch FID/KID, machine confusion."""
    info = summary.get("perceptual")
    if not info:
        return ""
    methods = {n: e.get("perceptual") for n, e in summary["methods"].items() if e.get("perceptual")}
    cols = [c for c in PERCEPTUAL_COLUMNS if any(c[0] in m["metrics"] for m in methods.values())]
    fid = any("fid_patches" in m for m in methods.values())
    conf = any("machine_confusion" in m for m in methods.values())
    head = "<th>method</th>" + "".join(f"<th>{html.escape(t)}</th>" for _, t, _ in cols)
    head += "<th>FID (patches) ↓</th><th>KID ↓</th>" if fid else ""
    head += "<th>machine confusion ↑ (50% = indistinguishable)</th>" if conf else ""
    rows = []
    for name, m in methods.items():
        cells = "".join(_cell(m["metrics"].get(k), fmt) for k, _, fmt in cols)
        if fid:
            d = m.get("fid_patches") or {}
            cells += "".join(f"<td>{fmt.format(d[k])}</td>" if d.get(k) is not None else "<td>–</td>"
                             for k, fmt in (("fid", "{:.2f}"), ("kid", "{:.4f}")))
        if conf:
            c = m.get("machine_confusion")
            cells += _cell({"mean": c["machine_confusion"] * 100, "ci_low": c["ci_low"] * 100,
                            "ci_high": c["ci_high"] * 100}, "{:.1f}%") if c else "<td>–</td>"
        rows.append(f"<tr><td>{html.escape(name)}</td>{cells}</tr>")
    ref = info.get("reference", {}).get("niqe")
    if ref and any(k == "niqe" for k, _, _ in cols):
        rows.append("<tr><td>HR images</td>" + "".join(_cell(ref, fmt) if k == "niqe" else "<td>–</td>"
                                                     for k, _, fmt in cols) + "</tr>")
    notes = [html.escape(n) for n in info.get("notes", [])]
    if info.get("inception"):
        notes.append(f"FID/KID network: <code>{html.escape(info['inception'])}</code>; "
                     + html.escape(next((m["fid_patches"]["note"] for m in methods.values() if "fid_patches" in m), "")))
    if conf:
        notes.append(html.escape(next(m["machine_confusion"]["definition"] for m in methods.values()
                                      if "machine_confusion" in m)))
    return ("<h2>Perceptual and distribution metrics</h2>"
            f"<table><tr>{head}</tr>{''.join(rows)}</table>" + "".join(f"<p class=note>{n}</p>" for n in notes))


def curve_plots(curves: dict) -> list[tuple[str, str]]:
    """One matplotlib plot per metric of metric vs sampling steps, a line (with CI band) per sampler.

    Returns ``[(title, data URI of a PNG)]``; empty when there are no curves.
    """
    if not curves:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = []
    for key, title in CURVE_METRICS:
        fig, ax = plt.subplots(figsize=(4.2, 3.0), dpi=110)
        drawn = False
        for sampler, points in sorted(curves.items()):
            pts = sorted(points, key=lambda p: p["steps"])
            xs, ys, lo, hi = [], [], [], []
            for p in pts:
                if key == "fid":
                    v = (p.get("distribution") or {}).get("fid")
                    low = high = v
                else:
                    m = p["metrics"][key]
                    v, low, high = m["mean"], m["ci_low"], m["ci_high"]
                if v is None:
                    continue
                xs.append(p["steps"])
                ys.append(v)
                lo.append(low if low is not None else v)
                hi.append(high if high is not None else v)
            if xs:
                ax.plot(xs, ys, marker="o", label=sampler)
                ax.fill_between(xs, lo, hi, alpha=0.2)
                drawn = True
        if drawn:
            ax.set_xscale("log")
            ax.set_xlabel("sampling steps")
            ax.set_ylabel(title)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            fig.tight_layout()
            buf = io.BytesIO()
            fig.savefig(buf, format="png")
            plots.append((title, "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")))
        plt.close(fig)
    return plots


def strips_html(key: str, strips: dict[str, list[tuple[str, Image.Image]]]) -> str:
    """One row per diffusion method: a few x̂₀ estimates of image ``key`` from first step to last."""
    rows = []
    for method, frames in strips.items():
        cells = "".join(f'<td><img src="{data_uri(img)}" width="{img.size[0]}" alt="{html.escape(method)} '
                        f'{html.escape(label)}"><br>{html.escape(label)}</td>' for label, img in frames)
        rows.append(f"<tr><th>{html.escape(method)}</th>{cells}</tr>")
    return (f"<h2>Refinement</h2><p class=note>The current estimate of the clean image during sampling, "
            f"image {html.escape(key)}, same seed as the results above.</p>"
            f"<table class=grid>{''.join(rows)}</table>")


def render(summary: dict, grid: list[tuple[str, list[tuple[str, Image.Image]]]],
           strips: tuple[str, dict[str, list[tuple[str, Image.Image]]]] | None = None) -> str:
    """The whole report as an HTML string (see module docstring)."""
    conv = summary.get("conventions", {})
    conv_items = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>" for k, v in conv.items())
    extractor = summary.get("extractor")
    if extractor:
        ext = f"<p>FID/KID/IS feature extractor: <code>{html.escape(extractor)}</code>.</p>"
        if not extractor.startswith("inception-v3-compat"):
            ext += "<p class=note>These are <b>not</b> standard FID numbers (no standard Inception weights given); " \
                   "compare them only with runs that use the same extractor.</p>"
    else:
        ext = "<p class=note>FID/KID/IS not computed (pass --fid-weights or --feature-extractor).</p>"
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>sr3 evaluation</title>"
        f"<style>{CSS}</style></head><body>",
        f"<h1>sr3 evaluation: {summary['scale']}x super-resolution, {summary['n_images']} images</h1>",
        "<h2>Results</h2><p class=note>Mean over images with the 95% bootstrap confidence interval below; "
        "best mean per column in bold. Consistency: MSE of the downsampled output against the LR input "
        "on [0, 255] (lower is better).</p>",
        metrics_table(summary["methods"]),
        ext,
        perceptual_table(summary),
    ]
    if summary.get("curves"):
        parts.append("<h2>Quality vs sampling steps</h2>")
        parts.append(metrics_table({f"{p['sampler']} {p['steps']} steps": p
                                    for s in sorted(summary["curves"]) for p in summary["curves"][s]}))
        for title, uri in curve_plots(summary["curves"]):
            parts.append(f'<figure><img src="{uri}" alt="{html.escape(title)} vs steps"></figure>')
    if grid:
        parts.append("<h2>Images</h2>")
        parts.append(grid_html(grid, summary["scale"]))
    if strips and strips[1]:
        parts.append(strips_html(*strips))
    parts.append(f"<h2>Conventions</h2><ul>{conv_items}</ul>")
    if summary.get("skipped"):
        items = "".join(f"<li><code>{html.escape(k)}</code>: {html.escape(v)}</li>"
                        for k, v in summary["skipped"].items())
        parts.append(f"<h2>Skipped</h2><ul>{items}</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(out: str | Path, summary: dict, grid: list[tuple[str, list[tuple[str, Image.Image]]]],
                 strips: tuple[str, dict[str, list[tuple[str, Image.Image]]]] | None = None) -> Path:
    """Write ``out/report.html`` atomically and return its path.

    strips: (image key, {method: [(label, frame)]}): refinement strips (:func:`sr3.frames.refinement_strip`).
    """
    path = Path(out) / "report.html"
    atomic_write_text(path, render(summary, grid, strips))
    return path

