"""Peak resident memory of ``sr3 upscale --scale 16`` (the shipped 16x cascade) taking 256x256 to 4096x4096.

Runs ``python -m sr3 upscale IMAGE --scale 16 --steps N`` as a child process, samples its
resident set (``/proc/PID/status`` VmRSS) every 50 ms, and also reports the kernel's peak
for the finished child (``ru_maxrss`` from ``wait4``), which no sampling interval can miss.
The input is a seeded random-noise 256x256 PNG (content does not change memory).

Memory does not depend on the step count: every step runs the same tiles through the same
network and keeps only the current state, so ``--steps 1`` measures the same peak as the
default in a fraction of the time.  Tiling comes from the cascade's cascade.json
(sr3/weights/cascade-16x: tiles of 1024 output px on both stages) unless ``--tile`` is given.

    python benchmarks/cascade16x_memory.py --steps 1 --out benchmarks/results/cascade16x_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from peers import cpu_name  # noqa: E402  (benchmarks/ is not a package)

from sr3.atomic import atomic_write_text  # noqa: E402

SIDE, SCALE, LIMIT_GIB = 256, 16, 4.0


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1, help="sampling steps per stage (memory does not depend on it)")
    p.add_argument("--tile", type=int, default=None, help="override the cascade's tile (output px)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random input image")
    p.add_argument("--out", type=Path, required=True, help="JSON result file (written atomically)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.png"
        noise = np.random.default_rng(args.seed).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
        Image.fromarray(noise).save(src)
        command = [sys.executable, "-m", "sr3", "upscale", str(src), "--scale", str(SCALE), "--steps", str(args.steps),
                   "--out", str(Path(tmp) / "out"), "--no-progress"]
        if args.tile is not None:
            command += ["--tile", str(args.tile)]
        t0 = time.perf_counter()
        child = subprocess.Popen(command)
        peak_sampled = 0
        while True:
            peak_sampled = max(peak_sampled, rss_bytes(child.pid))
            finished, status, usage = os.wait4(child.pid, os.WNOHANG)
            if finished:
                break
            time.sleep(0.05)
        seconds = time.perf_counter() - t0
        code = os.waitstatus_to_exitcode(status)
        size = Image.open(Path(tmp) / "out" / "in.png").size if code == 0 else None
    peak = max(peak_sampled, usage.ru_maxrss * 1024)  # ru_maxrss is in KiB on Linux
    result = {
        "cpu": cpu_name(), "cpu_count": os.cpu_count(), "command": " ".join(command[1:]).replace(str(src), "in.png"),
        "input": f"{SIDE}x{SIDE} seeded noise", "output_size": size, "exit_code": code, "steps": args.steps,
        "peak_rss_gib_sampled_50ms": peak_sampled / 2 ** 30, "peak_rss_gib_ru_maxrss": usage.ru_maxrss / 2 ** 20,
        "peak_rss_gib": peak / 2 ** 30, "limit_gib": LIMIT_GIB, "under_limit": peak / 2 ** 30 < LIMIT_GIB,
        "seconds": seconds,
        "note": "memory does not depend on --steps (same tiles, same network per step); the process includes "
                "the Python interpreter, torch and both stage models",
    }
    text = json.dumps(result, indent=2)
    atomic_write_text(args.out, text + "\n")
    print(text)
    if code != 0 or size != (SIDE * SCALE, SIDE * SCALE):
        sys.exit(f"cascade16x_memory: the upscale failed (exit {code}, output {size})")


if __name__ == "__main__":
    main()
