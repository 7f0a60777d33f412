"""Print the README's main Markdown table from an ``sr3 evaluate --metrics all`` metrics.json.

    python benchmarks/perceptual_table.py runs/eval-val256-perceptual/metrics.json \\
        --peer-timings runs/peers-val256.json

Per method: PSNR RGB, SSIM Y, ST-LPIPS (alex, vgg), NIQE, patch FID and KID, machine
confusion, ImageNet top-1 agreement with the HR image, consistency, and seconds per output
megapixel, means with 95% bootstrap CIs over images where they exist.  External methods
(``NAME=DIR``) were timed by ``benchmarks/peers.py``, not by ``sr3 evaluate`` (which only read
their files): ``--peer-timings`` supplies those seconds.  A last row gives the HR images' own NIQE.
"""

import argparse
import csv
import json
from pathlib import Path

from sr3.evaluate import read_rows
from sr3.metrics import bootstrap_ci


def cell(m: dict | None, digits: int, scale: float = 1.0, ci: bool = True) -> str:
    if not m or m.get("mean") is None:
        return "n/a"
    text = f"{m['mean'] * scale:.{digits}f}"
    if ci and m.get("ci_low") is not None:
        text += f" [{m['ci_low'] * scale:.{digits}f}, {m['ci_high'] * scale:.{digits}f}]"
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("metrics_json")
    p.add_argument("--peer-timings", help="JSON printed by benchmarks/peers.py")
    p.add_argument("--timings-from", default="",
                   help="NAME=RUN:METHOD,...: seconds of external method NAME from METHOD's rows in an earlier "
                        "sr3 evaluate run folder RUN (the run that made NAME's images)")
    p.add_argument("--paired", help="A,B: print per-image differences A - B of ST-LPIPS and NIQE (95%% bootstrap CI) "
                                    "from perceptual.csv instead")
    args = p.parse_args()
    if args.paired:
        return print_paired(Path(args.metrics_json).parent / "perceptual.csv", *args.paired.split(","))
    summary = json.load(open(args.metrics_json))
    peers = json.load(open(args.peer_timings))["peers"] if args.peer_timings else {}
    rows = read_rows(Path(args.metrics_json).parent / "metrics.csv")
    elsewhere = {}  # external method -> (rows of the run that made it, its method name there)
    for spec in filter(None, args.timings_from.split(",")):
        name, source = spec.split("=", 1)
        run, method = source.rsplit(":", 1)
        elsewhere[name] = (read_rows(Path(run) / "metrics.csv"), method)
    head = ["method", "n", "PSNR RGB (dB) ↑", "SSIM Y ↑", "ST-LPIPS alex ↓", "ST-LPIPS vgg ↓", "NIQE ↓",
            "FID patches ↓", "KID ×1000 ↓", "machine confusion ↑", "top-1 agreement ↑", "consistency ↓",
            "s / output MP"]
    print("| " + " | ".join(head) + " |")
    print("|---|" + "---:|" * (len(head) - 1))
    for name, e in summary["methods"].items():
        per = e.get("perceptual", {})
        pm = per.get("metrics", {})
        fid = per.get("fid_patches") or {}
        conf = per.get("machine_confusion")
        m = e["metrics"]
        if name in peers:
            seconds = f"{peers[name]['seconds_per_output_megapixel']:.1f} (peers.py)"
        elif name in elsewhere:
            seconds = f"{seconds_per_megapixel(*elsewhere[name]):.1f} (own run)"
        else:
            seconds = f"{seconds_per_megapixel(rows, name):.1f}"
        cells = [name, str(e["n_images"]), cell(m["psnr_rgb"], 2, ci=False), cell(m["ssim_y"], 3, ci=False),
                 cell(pm.get("stlpips_alex"), 3), cell(pm.get("stlpips_vgg"), 3), cell(pm.get("niqe"), 2),
                 f"{fid['fid']:.1f}" if fid.get("fid") is not None else "n/a",
                 f"{fid['kid'] * 1000:.1f}" if fid.get("kid") is not None else "n/a",
                 (f"{conf['machine_confusion']:.1%} [{conf['ci_low']:.1%}, {conf['ci_high']:.1%}]" if conf else "n/a"),
                 cell(pm.get("imagenet_top1_agree"), 2, ci=False), cell(m["consistency"], 2, ci=False), seconds]
        print("| " + " | ".join(cells) + " |")
    ref = summary.get("perceptual", {}).get("reference", {}).get("niqe")
    if ref:
        print("| HR images | " + str(ref["n"]) + " | | | 0 | 0 | " + cell(ref, 2) + " | | | | | | |")


def seconds_per_megapixel(rows: list[dict], method: str) -> float:
    mine = [r for r in rows if r["method"] == method]
    return sum(r["seconds"] for r in mine) / sum(r["height"] * r["width"] / 1e6 for r in mine)


def print_paired(csv_path: Path, a: str, b: str) -> None:
    values: dict[tuple[str, str], dict[str, float]] = {}
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            values.setdefault((row["method"], row["metric"]), {})[row["image"]] = float(row["value"])
    print(f"| metric | n | {a} minus {b} | images where {a} is lower |")
    print("|---|---:|---:|---:|")
    for metric in ("stlpips_alex", "stlpips_vgg", "niqe"):
        va, vb = values.get((a, metric), {}), values.get((b, metric), {})
        images = sorted(set(va) & set(vb))
        diffs = [va[i] - vb[i] for i in images]
        mean, lo, hi = bootstrap_ci(diffs, seed=0)
        print(f"| {metric} | {len(images)} | {mean:+.3f} [{lo:+.3f}, {hi:+.3f}] | {sum(d < 0 for d in diffs)} of {len(images)} |")


if __name__ == "__main__":
    main()
