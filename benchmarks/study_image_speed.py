"""Time the study server's per-request image work: the canonical PNG encoder and a session copy.

    python benchmarks/study_image_speed.py [--sizes 256x256,1024x1024,2048x1536] [--repeats 5]

Prints JSON: per size, the median milliseconds of ``sr3.study.images.encode_png``,
of Pillow's ``compress_level=0`` PNG writer it replaced, and of ``session_copy``
(decode + keyed noise + encode, what ``GET /img/...`` does per image).  Random
pixels; single process.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import time

import numpy as np
from PIL import Image

from sr3.study.images import encode_png, new_serve_key, session_copy


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 2)


def pillow_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=0)
    return buf.getvalue()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="256x256,1024x1024,2048x1536", help="WxH,... (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)
    key = new_serve_key()
    rows = []
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        png = encode_png(img)
        rows.append({"size": size, "megapixels": round(w * h / 1e6, 2),
                     "encode_png_ms": median_ms(lambda: encode_png(img), args.repeats),
                     "pillow_level0_ms": median_ms(lambda: pillow_png(img), args.repeats),
                     "session_copy_ms": median_ms(lambda: session_copy(png, key, "session", "image"), args.repeats)})
    print(json.dumps({"processor": platform.processor() or platform.machine(), "repeats": args.repeats,
                      "results": rows}, indent=1))


if __name__ == "__main__":
    main()
