"""Make the images of docs/study.md: the rater page and an example report chart.

    python docs/make_study_screenshots.py            # writes docs/img/study-rater.png, study-report.png

The rater screenshot uses a few photos from ../shared/data/photos/val when that
folder exists (else synthetic pictures); the "methods" are plain resamplers,
not models.  The report chart comes from *simulated* raters answered through the
real API with scripted fool probabilities, so it shows what a report looks
like, not a result.  Needs /usr/bin/chromium and the playwright package.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sr3.study.create import create_study  # noqa: E402
from sr3.study.report import write_report  # noqa: E402
from sr3.study.testing import ServerProcess  # noqa: E402

OUT = ROOT / "docs" / "img"
PHOTOS = ROOT.parent / "shared" / "data" / "photos" / "val"
CHROMIUM = "/usr/bin/chromium"
SIZE, SCALE = 192, 4


def references(folder: Path, n: int) -> list[Image.Image]:
    """Centre crops of real photos if available, else synthetic pictures."""
    images = []
    for path in sorted(PHOTOS.glob("*.png"))[:n] if PHOTOS.is_dir() else []:
        img = Image.open(path).convert("RGB")
        side = min(img.size)
        left, top = (img.width - side) // 2, (img.height - side) // 2
        images.append(img.crop((left, top, left + side, top + side)).resize((SIZE, SIZE), Image.Resampling.LANCZOS))
    rng = np.random.default_rng(0)
    while len(images) < n:
        img = Image.new("RGB", (SIZE, SIZE), tuple(int(v) for v in rng.integers(40, 200, 3)))
        draw = ImageDraw.Draw(img)
        for _ in range(12):
            x, y, r = (int(v) for v in rng.integers(0, SIZE, 3) // (1, 1, 3))
            draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        images.append(img)
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        img.save(folder / f"photo{i}.png")
    return images


def method_outputs(refs: list[Image.Image], root: Path) -> dict[str, Path]:
    """Two stand-in 'methods': bicubic and a sharpened bicubic upsampling of the 4x LR."""
    dirs = {"bicubic": root / "bicubic", "sharpened": root / "sharpened"}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    for i, ref in enumerate(refs):
        lr = ref.resize((SIZE // SCALE, SIZE // SCALE), Image.Resampling.BICUBIC)
        up = lr.resize((SIZE, SIZE), Image.Resampling.BICUBIC)
        up.save(dirs["bicubic"] / f"photo{i}.png")
        up.filter(ImageFilter.UnsharpMask(radius=2, percent=160)).save(dirs["sharpened"] / f"photo{i}.png")
    return dirs


def rater_screenshot(work: Path) -> None:
    from playwright.sync_api import sync_playwright
    refs = references(work / "reference", 4)
    dirs = method_outputs(refs, work)
    db = work / "rater.db"
    create_study(work / "reference", dirs, db, tasks=("reference",), scale=SCALE, trials_per_rater=3,
                 catch_rate=0.25, display_seconds=0)  # 0: the images stay for the screenshot
    with ServerProcess(db) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 900, "height": 520})
        page.goto(server.url + "/")
        page.wait_for_selector('body[data-screen="consent"]')
        page.keyboard.press("Enter")
        page.wait_for_selector('body[data-screen="instructions"]')
        page.keyboard.press("Enter")
        page.wait_for_selector('body[data-ready="1"]')
        page.keyboard.press("ArrowLeft")  # one answer so the progress bar shows
        page.wait_for_selector('body[data-ready="1"][data-answered="1"]')
        page.mouse.move(0, 0)
        page.screenshot(path=str(OUT / "study-rater.png"))
        browser.close()


def report_chart(work: Path, n_raters: int = 30, seed: int = 0) -> dict:
    """Simulated raters: each method fools an attentive rater with a fixed probability."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    from sr3.study.server import create_app
    fool = {"model-1": 0.45, "model-2": 0.30, "bicubic": 0.08}
    rng = np.random.default_rng(seed)
    refs = rng.integers(0, 256, (20, 16, 16, 3), dtype=np.uint8)
    folders = {name: work / "sim" / name for name in ["reference", *fool]}
    for d in folders.values():
        d.mkdir(parents=True, exist_ok=True)
    for i, ref in enumerate(refs):
        for d in folders.values():
            Image.fromarray(ref).save(d / f"{i}.png")
    db = work / "simulated.db"
    create_study(folders["reference"], {m: folders[m] for m in fool}, db, tasks=("camera", "reference"), scale=4,
                 trials_per_rater=17, catch_rate=0.15, seed=seed,
                 raters_per_client=0)  # all simulated raters come from one client: no per-client limit
    # The reference task is easier for raters (the input gives them a hint), as in the paper.
    harder = {"camera": 1.0, "reference": 0.8}
    app = create_app(db, None)
    con = sqlite3.connect(db)
    for k in range(n_raters):
        inattentive = k % 10 == 9  # answers at random: the catch trials should catch them
        client = TestClient(app)
        state = client.post("/api/consent", json={"consent": True}).json()
        while not state["done"]:
            real, kind, method, task = con.execute(
                "SELECT t.real_side, t.kind, t.method, t.task FROM assignments a JOIN trials t ON t.id = a.trial_id "
                "WHERE a.id = ?", (state["trial"]["id"],)).fetchone()
            p_fake = 0.5 if inattentive else (0.02 if kind == "catch" else fool[method] * harder[task])
            fake = "right" if real == "left" else "left"
            choice = fake if rng.random() < p_fake else real
            state = client.post("/api/answer", json={"trial": state["trial"]["id"], "choice": choice,
                                                     "rt_ms": int(rng.integers(700, 3000))}).json()["state"]
    con.close()
    result = write_report(db, work / "report", n_boot=2000, seed=0,
                          title="Example report from SIMULATED raters (scripted fool rates, not a result)")
    shutil.copyfile(work / "report" / "confusion.png", OUT / "study-report.png")
    return result


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rater_screenshot(work)
        result = report_chart(work)
    from sr3.study.report import summary_lines
    print("\n".join(summary_lines(result)))
    print(f"wrote {OUT / 'study-rater.png'} and {OUT / 'study-report.png'}")


if __name__ == "__main__":
    main()
