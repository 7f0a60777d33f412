"""Centre crops of the validation photos, so that diffusion evaluation fits a CPU budget.

    python benchmarks/make_val_crops.py --data ../shared/data/photos/val --size 256 --out runs/val-crops256

Sampling settings (the default temperature) were chosen on crops of the *training* photos,
shrunk 3x first so their detail density resembles photos/val, never on photos/val itself:

    python benchmarks/make_val_crops.py --data ../shared/data/photos/train --size 128 --shrink 3 --out runs/tune-crops128

Each image's central SIZE x SIZE square (all 26 photos/val images are at least 342 px)
is written as PNG with the same file name.  The crops are made, never committed.
"""

import argparse
from pathlib import Path

from PIL import Image

from sr3.imageio import list_images, load_image, save_image


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--shrink", type=float, default=1.0, help="downscale each image by this factor first (Lanczos)")
    args = p.parse_args()
    for path in list_images(args.data):
        img = load_image(path)
        if args.shrink != 1.0:
            img = img.resize((round(img.width / args.shrink), round(img.height / args.shrink)), Image.LANCZOS)
        left, top = (img.width - args.size) // 2, (img.height - args.size) // 2
        save_image(img.crop((left, top, left + args.size, top + args.size)), args.out / f"{path.stem}.png")


if __name__ == "__main__":
    main()
