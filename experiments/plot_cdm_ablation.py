"""Figures and the Markdown table of a CDM ablation run (experiments/cdm_ablation.py output).

    python experiments/plot_cdm_ablation.py RESULTS_DIR [RESULTS_DIR ...] --img docs/img

RESULTS_DIR holds ``cdm_ablation.json`` and ``samples.safetensors``.  Several folders measured with the
same settings from the same runs (e.g. two processes given different ``--rows``, one per core) are merged
row by row.  Writes:

* ``cdm-fd-vs-s.png``: FD (project's Fashion-MNIST CNN) of the noise arm against the
  sampling-time augmentation level s, truncated and non-truncated, mean and 95% interval over
  training seeds, with the no-augmentation and blur arms as horizontal references (the plot
  CDM draws for its Sec. 4.2-4.3 ablation);
* ``cdm-guidance.png``: FD and CAS against the guidance weight w;
* ``cdm-loss-curves.png``: the training loss of every run;
* ``cdm-grid-<row>.png``: one row of 8 samples per class for the main rows;
* the ablation table in Markdown on stdout, then the noise arm's FD differences (each level s
  against s = 0, truncated against non-truncated) with 95% intervals over training seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib
import torch
from safetensors.torch import load_file

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the ablation's statistics, from the same folder
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cdm_ablation import difference  # noqa: E402

from sr3.cascade import image_grid  # noqa: E402
from sr3.imageio import save_image, tensor_to_pil  # noqa: E402

GRID_ROWS = ("none-s0/seed0", "noise-s0.2-nontrunc/seed0", "noise-s0.2-trunc/seed0", "blur-s0/seed0",
             "guidance-w1", "guidance-w3", "base32-only")


def _cell(stat: dict, scale: float = 1.0, digits: int = 1) -> str:
    if stat["ci95"] is None:
        return f"{stat['mean'] * scale:.{digits}f}"
    return f"{stat['mean'] * scale:.{digits}f} ± {stat['ci95'] * scale:.{digits}f}"


def table(report: dict) -> str:
    rows = report["rows"]
    real = rows["real-train-images"]
    lines = ["| row | FD (project CNN) ↓ | KID (same features) ↓ | CAS top-1 % ↑ |", "|---|---:|---:|---:|",
             f"| real training images ({real['n']}) | {real['fd']:.2f} | {real['kid']:.3f} | "
             f"{100 * real['cas_top1']:.1f} |"]
    for name, a in report["ablation"].items():
        lines.append(f"| {name} | {_cell(a['fd'])} | {_cell(a['kid'], 1, 3)} | {_cell(a['cas_top1'], 100)} |")
    for name in [k for k in rows if k.startswith(("guidance-", "base"))]:
        r = rows[name]
        lines.append(f"| {name} | {r['fd']:.1f} | {r['kid']:.3f} | {100 * r['cas_top1']:.1f} |")
    return "\n".join(lines)


def curve_differences(report: dict) -> str:
    """The noise arm's FD at each level s minus at s = 0, and truncated minus non-truncated at each s,
    with 95% pooled t-intervals over training seeds (CDM Sec. 4.3's two questions)."""
    ablation = report["ablation"]
    pairs = [(name, "noise-s0") for name in ablation if name.startswith("noise-s0.")]
    pairs += [(name, name.replace("-trunc", "-nontrunc")) for name in ablation if name.endswith("-trunc")]
    lines = ["| FD difference | mean ± 95% CI | resolved |", "|---|---:|:-:|"]
    for a, b in pairs:
        d = difference(ablation[a]["fd"], ablation[b]["fd"]) if b in ablation else None
        if d:
            lines.append(f"| {a} − {b} | {d['diff']:+.2f} ± {d['ci95']:.2f} | {'yes' if d['resolved'] else 'no'} |")
    return "\n".join(lines)


def plot_fd_vs_level(report: dict, path: Path) -> None:
    ablation = report["ablation"]
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    for truncated, style in ((False, "o-"), (True, "s--")):
        points = sorted((a["level"], a["fd"]) for a in ablation.values()
                        if a["arm"] == "noise" and (a["truncated"] == truncated or a["level"] == 0))
        if points:
            levels = [p[0] for p in points]
            ax.errorbar(levels, [p[1]["mean"] for p in points], yerr=[p[1]["ci95"] or 0 for p in points],
                        fmt=style, capsize=3, label=f"noise arm, {'truncated' if truncated else 'non-truncated'}")
    for arm, colour in (("none", "grey"), ("blur", "tab:green")):
        row = ablation.get(f"{arm}-s0")
        if row:
            ax.axhline(row["fd"]["mean"], color=colour, linestyle=":", label=f"{arm} arm (s = 0)")
    ax.set_xlabel("sampling-time augmentation level s")
    ax.set_ylabel("FD (Fashion-MNIST CNN) ↓")
    ax.legend(fontsize=7)
    seeds = max((a["fd"]["n"] for a in ablation.values()), default=0)
    ax.set_title(f"{report['samples_per_row']} samples per row, " + (
        f"mean ± 95% CI over {seeds} training seeds" if seeds > 1 else "one training seed, no interval"), fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_guidance(report: dict, path: Path) -> None:
    rows = sorted((r["guidance"], r) for name, r in report["rows"].items() if name.startswith("guidance-"))
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    w = [g for g, _ in rows]
    ax.plot(w, [r["fd"] for _, r in rows], "o-", label="FD ↓")
    ax.set_xlabel("guidance weight w")
    ax.set_ylabel("FD (Fashion-MNIST CNN) ↓")
    twin = ax.twinx()
    twin.plot(w, [100 * r["cas_top1"] for _, r in rows], "s--", color="tab:orange", label="CAS % ↑")
    twin.set_ylabel("CAS top-1 % ↑")
    fig.legend(fontsize=7, loc="upper center")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_loss_curves(report: dict, path: Path) -> None:
    """Training loss against step for every run (SR runs one colour per arm): are they converging?"""
    colours = {"base16": "black", "base32": "tab:purple", "sr-none": "grey", "sr-noise": "tab:blue",
               "sr-blur": "tab:green"}
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    for name, run in report["training"].items():
        kind = name.rsplit("-s", 1)[0] if name.startswith("sr-") else name
        steps, losses = zip(*run["loss_curve"]) if run["loss_curve"] else ((), ())
        ax.plot(steps, losses, color=colours.get(kind, "tab:red"), lw=0.8, alpha=0.8,
                label=kind if name.endswith(("-s0", "base16", "base32")) else None)
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("training loss (logged mean)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def class_grids(samples: dict[str, torch.Tensor], img: Path, per_class: int = 8) -> list[Path]:
    labels = samples["labels"].long()
    written = []
    for name in GRID_ROWS:
        if name not in samples:
            continue
        images = samples[name].float().div(127.5).sub(1)[:, None]  # grey uint8 -> [N, 1, H, W] in [-1, 1]
        chosen = torch.cat([images[labels[:len(images)] == c][:per_class] for c in range(int(labels.max()) + 1)])
        path = img / f"cdm-grid-{name.replace('/', '-')}.png"
        save_image(tensor_to_pil(image_grid(chosen.repeat(1, 3, 1, 1), columns=per_class)), path)
        written.append(path)
    return written


def merged_report(folders: list[Path]) -> dict:
    """One report from several result folders of the same settings and trained runs: rows and per-row
    summaries are united (a row measured in two folders must agree; it is kept once)."""
    reports = [json.loads((folder / "cdm_ablation.json").read_text()) for folder in folders]
    merged = dict(reports[0])
    for folder, report in zip(folders[1:], reports[1:]):
        for key in ("settings", "training"):
            if report[key] != merged[key]:
                raise ValueError(f"{folder}: its {key} differ from {folders[0]}'s; merge only folders measured "
                                 "with the same settings from the same trained runs")
        for key in ("rows", "ablation"):
            kept = merged.get(key, {})
            merged[key] = {**kept, **{name: row for name, row in report.get(key, {}).items() if name not in kept}}
    return merged


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("results", type=Path, nargs="+", help="folder(s) with cdm_ablation.json and samples.safetensors")
    p.add_argument("--img", type=Path, default=Path("docs/img"), help="folder for the figures")
    args = p.parse_args(argv)
    missing = [folder for folder in args.results if not (folder / "cdm_ablation.json").exists()]
    if missing:
        sys.exit(f"error: {missing[0]}/cdm_ablation.json not found; give the --out folder of experiments/cdm_ablation.py")
    try:
        report = merged_report(args.results)
    except ValueError as error:
        sys.exit(f"error: {error}")
    args.img.mkdir(parents=True, exist_ok=True)
    plot_fd_vs_level(report, args.img / "cdm-fd-vs-s.png")
    plot_guidance(report, args.img / "cdm-guidance.png")
    plot_loss_curves(report, args.img / "cdm-loss-curves.png")
    samples = {}
    for folder in reversed(args.results):  # the first folder wins where two kept the same row
        if (folder / "samples.safetensors").exists():
            samples.update(load_file(str(folder / "samples.safetensors")))
    if samples:
        class_grids(samples, args.img)
    print(table(report))
    print()
    print(curve_differences(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
