"""Peak memory of ``sr3 evaluate`` with distribution metrics as the number of images grows.

    python benchmarks/evaluate_memory.py                         # -> benchmarks/results/evaluate_memory.json
    python benchmarks/evaluate_memory.py --sizes 100 400 --repo /tmp/old-checkout --out /tmp/old.json

A synthetic folder of --sizes HR images (--px square JPEGs, quality 90, contents cycling
through 50 smooth patterns; written under /tmp and deleted afterwards) is evaluated by
``python -m sr3 evaluate --methods bicubic --feature-extractor random`` (per-image PSNR/SSIM/
consistency, then FID/KID/IS in the features of the seeded random CNN: the extractor's cost is
small, so the figure is the evaluation's own memory) in a fresh process per size, run from
--repo (default: this checkout; another checkout, e.g. an older commit, gives the "before"
figure).  Reported per size: the process's peak resident memory (``ru_maxrss`` from
``os.wait4``), seconds, and the FID it wrote; then the growth of peak memory per 1,000 images
between the two largest sizes (below 1,000 images KID's subsets, capped at 1,000 features,
still grow with the count).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the synthetic images of the loader benchmark

from data_loader import cpu_name, jpeg_pool  # noqa: E402

from sr3.atomic import atomic_write_text  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def peak_rss_of(command: list[str], cwd: Path) -> tuple[float, float]:
    """Run ``command`` in ``cwd``; its peak resident memory (MiB) and wall seconds.  Fails loudly."""
    t = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024, seconds  # ru_maxrss is in KiB on Linux


def measure(size: int, px: int, repo: Path, pool: list[bytes]) -> dict:
    with tempfile.TemporaryDirectory(prefix="sr3_eval_mem_") as tmp:
        data, out = Path(tmp) / "hr", Path(tmp) / "out"
        data.mkdir()
        for i in range(size):
            (data / f"{i:06d}.jpg").write_bytes(pool[i % len(pool)])
        command = [sys.executable, "-m", "sr3", "evaluate", "--data", str(data), "--out", str(out),
                   "--methods", "bicubic", "--scale", "4", "--feature-extractor", "random", "--quiet"]
        peak, seconds = peak_rss_of(command, repo)
        scores = json.loads((out / "metrics.json").read_text())["methods"]["bicubic"]["distribution"]
    return {"images": size, "peak_rss_mib": round(peak, 1), "seconds": round(seconds, 1),
            "fid_random_cnn": scores["fid"], "n_real": scores["n_real"], "n_fake": scores["n_fake"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[250, 1000, 4000], help="images per folder (>= 2)")
    p.add_argument("--px", type=int, default=128, help="side of each synthetic HR image in pixels (>= 12)")
    p.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1],
                   help="checkout whose sr3 runs the evaluation")
    p.add_argument("--out", type=Path, default=RESULTS / "evaluate_memory.json")
    args = p.parse_args(argv)
    if min(args.sizes) < 2 or args.px < 12:
        raise SystemExit("--sizes must be >= 2 and --px >= 12")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=args.repo, capture_output=True,
                            text=True).stdout.strip()
    pool = jpeg_pool(50, args.px)
    runs = []
    for size in sorted(args.sizes):
        runs.append(measure(size, args.px, args.repo, pool))
        print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    first, last = runs[-2] if len(runs) > 1 else runs[0], runs[-1]
    growth = (last["peak_rss_mib"] - first["peak_rss_mib"]) / max(1, last["images"] - first["images"]) * 1000
    result = {"command": "python benchmarks/evaluate_memory.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "cpu": cpu_name(), "python": platform.python_version(), "repo_commit": commit, "px": args.px,
              "runs": runs, "peak_rss_growth_mib_per_1000_images": round(growth, 1)}
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
