"""Streaming data loader on the CPU: start-up, images/s and memory for folders of 1,000 to 100,000 images.

    python benchmarks/data_loader.py                       # -> benchmarks/results/data_loader.json
    python benchmarks/data_loader.py --sizes 1000 --steps 20 --photos-steps 4   # quick look

Part 1 (``loader``): a synthetic folder of small JPEGs (64x64, quality 90, spread over
sub-folders of 1,000; written under /tmp and deleted afterwards) grows to each of
--sizes.  For each size and each of --workers, a fresh process opens the folder
the way ``sr3 train`` does (:func:`sr3.streaming.open_training_data`, data.source =
stream: the index is written to a fresh run folder) and iterates the step loader for
--steps steps of --batch 48x48 crops.  It reports the start-up seconds (index
written + dataset opened), images/s after the first 5 steps, and resident memory:
the trainer process's RSS and the proportional set size (PSS, shared pages split
between the processes that map them) summed over trainer and workers.  For
comparison the in-memory dataset (data.source = memory) is opened for --memory-sizes.

Part 2 (``training``): training images/s of ``sr3 train``'s loop on the 43 photos of
/work/shared/data/photos/train (``cpu-4x`` preset, 64 px crops, batch 16, bf16), in
memory vs streamed with 0 and 2 workers, --photos-steps steps each, in fresh processes.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing sr3

import torch  # noqa: E402

from sr3.presets import PRESETS  # noqa: E402
from sr3.step_loader import step_loader  # noqa: E402
from sr3.streaming import open_training_data  # noqa: E402
from sr3.train import train  # noqa: E402

RESULTS = Path(__file__).parent / "results"
PHOTOS = Path("/work/shared/data/photos/train")


def memory_mib(pids: list[int]) -> dict:
    """RSS of the first pid and PSS summed over all of them (MiB), from /proc."""
    def field(path: str, name: str) -> float:
        for line in Path(path).read_text().splitlines():
            if line.startswith(name + ":"):
                return float(line.split()[1]) / 1024
        return 0.0
    return {"rss_trainer_mib": round(field(f"/proc/{pids[0]}/status", "VmRSS"), 1),
            "pss_total_mib": round(sum(field(f"/proc/{p}/smaps_rollup", "Pss") for p in pids), 1),
            "processes": len(pids)}


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(c) for c in text]
    return found


def write_folder(root: Path, start: int, stop: int, pool: list[bytes]) -> None:
    """Files start .. stop-1 of the synthetic folder: 1,000 per sub-folder, contents cycling through ``pool``."""
    for i in range(start, stop):
        sub = root / f"{i // 1000:04d}"
        if i % 1000 == 0 or not sub.exists():
            sub.mkdir(exist_ok=True)
        (sub / f"{i:07d}.jpg").write_bytes(pool[i % len(pool)])


def jpeg_pool(count: int, size: int = 64) -> list[bytes]:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    pool = []
    for _ in range(count):
        f = rng.uniform(1, 6, 6)
        img = np.stack([np.sin(f[c] * 6 * x + f[c + 3]) * np.cos(f[(c + 1) % 3] * 4 * y) for c in range(3)], -1)
        arr = np.clip(127.5 + 90 * img + rng.normal(0, 8, (size, size, 3)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=90)
        pool.append(buf.getvalue())
    return pool


# ------------------------------------------------------------------ one measurement (fresh process)
def measure_loader(folder: Path, workers: int, steps: int, batch: int, source: str) -> dict:
    torch.set_num_threads(1)
    config = PRESETS["tiny"]
    config = config.replace(data=dataclasses.replace(config.data, crop_size=48, source=source, num_workers=workers))
    with tempfile.TemporaryDirectory(prefix="sr3_loader_run_") as run:
        before = memory_mib([os.getpid()])
        t = time.perf_counter()
        dataset = open_training_data(config, folder, Path(run))
        startup = time.perf_counter() - t
        opened = memory_mib([os.getpid()])
        loader = iter(step_loader(dataset, 0, [0], batch, 0, steps, num_workers=workers))
        for _ in range(5):
            next(loader)
        t = time.perf_counter()
        done, after = 0, None
        for draws in loader:
            done += 1
            if done == steps - 6:  # the workers exit with the last batch: measure one step before
                after = memory_mib([os.getpid()] + children(os.getpid()))
        seconds = time.perf_counter() - t
    return {"files": len(dataset), "source": source, "workers": workers, "startup_s": round(startup, 3),
            "images_per_s": round(done * batch / seconds, 1), "rss_before_open_mib": before["rss_trainer_mib"],
            "rss_after_open_mib": opened["rss_trainer_mib"], **after}


def measure_training(source: str, workers: int, steps: int) -> dict:
    config = PRESETS["cpu-4x"]
    config = config.replace(data=dataclasses.replace(config.data, source=source, num_workers=workers),
                            train=dataclasses.replace(config.train, steps=steps, log_every=steps - 2,
                                                      sample_every=0, checkpoint_every=10 ** 9))
    with tempfile.TemporaryDirectory(prefix="sr3_loader_train_") as run:
        dataset = open_training_data(config, PHOTOS, Path(run))
        train(config, dataset, Path(run), progress=False)
        lines = [json.loads(x) for x in (Path(run) / "log.jsonl").read_text().splitlines()]
    a, b = lines[0], lines[-1]  # steps-2 and steps: the rate over the last 2 steps excludes the first steps' warm-up
    rate = (b["step"] - a["step"]) * config.train.batch_size / (b["elapsed_s"] - a["elapsed_s"])
    return {"source": source, "workers": workers, "steps": steps, "batch": config.train.batch_size,
            "threads": torch.get_num_threads(), "images_per_s_over_last_steps": round(rate, 2),
            "images_per_s_whole_run": round(b["images_per_s"], 2)}


def in_subprocess(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cpu_name() -> str:
    return next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")), platform.processor())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="1000,10000,100000", help="folder sizes, comma-separated")
    p.add_argument("--workers", default="0,2", help="data-loader worker counts to compare")
    p.add_argument("--memory-sizes", default="1000,10000", help="sizes also opened with the in-memory dataset")
    p.add_argument("--steps", type=int, default=60, help="loader steps per measurement")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--photos-steps", type=int, default=6, help="training steps per configuration (0 = skip)")
    p.add_argument("--out", type=Path, default=RESULTS / "data_loader.json")
    p.add_argument("--one", nargs=4, metavar=("FOLDER", "WORKERS", "STEPS", "SOURCE"), help=argparse.SUPPRESS)
    p.add_argument("--train-one", nargs=3, metavar=("SOURCE", "WORKERS", "STEPS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        folder, workers, steps, source = args.one
        print(json.dumps(measure_loader(Path(folder), int(workers), int(steps), args.batch, source)))
        return 0
    if args.train_one:
        source, workers, steps = args.train_one
        print(json.dumps(measure_training(source, int(workers), int(steps))))
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    workers = [int(w) for w in args.workers.split(",")]
    memory_sizes = {int(s) for s in args.memory_sizes.split(",") if s}
    report = {"cpu": cpu_name(), "cores": os.cpu_count(),
              "command": "python benchmarks/data_loader.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "images": "synthetic 64x64 JPEG (quality 90), 48 px crops, batch " + str(args.batch),
              "loader": [], "training": []}
    root = Path(tempfile.mkdtemp(prefix="sr3_loader_folder_", dir="/tmp"))
    try:
        pool, written = jpeg_pool(200), 0
        for size in sorted(sizes):
            t = time.perf_counter()
            write_folder(root, written, size, pool)
            written = size
            print(f"{size} files written ({time.perf_counter() - t:.1f} s)", file=sys.stderr)
            runs = [("stream", w) for w in workers] + ([("memory", 0)] if size in memory_sizes else [])
            for source, w in runs:
                row = in_subprocess(["--one", str(root), str(w), str(args.steps), source, "--batch", str(args.batch)])
                print(json.dumps(row), file=sys.stderr)
                report["loader"].append(row)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.photos_steps and PHOTOS.is_dir():
        for source, w in (("memory", 0), ("stream", 0), ("stream", 2)):
            row = in_subprocess(["--train-one", source, str(w), str(args.photos_steps)])
            print(json.dumps(row), file=sys.stderr)
            report["training"].append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
