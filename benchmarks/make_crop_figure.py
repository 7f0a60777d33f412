"""Side-by-side zoomed crops from an ``sr3 evaluate`` output folder (README figure).

    python benchmarks/make_crop_figure.py --eval runs/eval-val256 --hr runs/val-crops256 \
        --images ocv_baboon.png,ocv_building.png --out docs/img/sr-crops.png

Columns: LR (nearest-neighbour, to show the input pixels) | bicubic | RAISR | regression | SR3 | HR,
each the central 96x96 region of the 256x256 output shown at 2x.  ``--columns`` names the method
folders of the evaluation (e.g. sr3@t1 when it ran several temperatures).
"""

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

from sr3.evaluate import image_file

COLUMNS = "lr,bicubic,raisr,regression,sr3,hr"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--eval", type=Path, required=True)
    p.add_argument("--hr", type=Path, required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--crop", type=int, default=96)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--columns", default=COLUMNS, help=f"method folders left to right (default {COLUMNS})")
    args = p.parse_args()
    columns = args.columns.split(",")
    names = args.images.split(",")
    c, zoom, label_h = args.crop, 2, 18
    sheet = Image.new("RGB", (len(columns) * c * zoom, len(names) * c * zoom + label_h), "white")
    draw = ImageDraw.Draw(sheet)
    for j, col in enumerate(columns):
        draw.text((j * c * zoom + 4, 3), col if col != "lr" else "LR input", fill="black")
    for i, name in enumerate(names):
        hr = Image.open(args.hr / name).convert("RGB")
        for j, col in enumerate(columns):
            img = hr if col == "hr" else Image.open(image_file(args.eval, col, name)).convert("RGB")
            if col == "lr":
                img = img.resize(hr.size, Image.NEAREST)
            left, top = (img.width - c) // 2, (img.height - c) // 2
            tile = img.crop((left, top, left + c, top + c)).resize((c * zoom, c * zoom), Image.NEAREST)
            sheet.paste(tile, (j * c * zoom, label_h + i * c * zoom))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)


if __name__ == "__main__":
    main()
