"""Centre crops of the validation photos, so that diffusion evaluation fits a CPU budget.

    python benchmarks/make_val_crops.py --data ../shared/data/photos/val --size 256 --out runs/val-crops256

Each image's central SIZE x SIZE square (all 26 photos/val images are at least 342 px)
is written as PNG with the same file name.  The crops are made, never committed.
"""

import argparse
from pathlib import Path

from sr3.imageio import list_images, load_image, save_image


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    for path in list_images(args.data):
        img = load_image(path)
        left, top = (img.width - args.size) // 2, (img.height - args.size) // 2
        save_image(img.crop((left, top, left + args.size, top + args.size)), args.out / f"{path.stem}.png")


if __name__ == "__main__":
    main()
