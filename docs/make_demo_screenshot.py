"""Make docs/img/demo.png: the sr3 demo page after upscaling examples/example.png with the shipped 4x model.

    python docs/make_demo_screenshot.py        (needs Chromium at /usr/bin/chromium and Playwright)

The page runs the real app (sr3/demo/) on a background thread with the methods ``sr3 demo``
offers by default (its own ``build_methods``): the shipped sr3 4x model, the shipped 8x and 16x
cascades, the regression 4x model and bicubic; the screenshot upscales with the 4x default.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from playwright.sync_api import sync_playwright

from sr3.commands.demo import build_methods
from sr3.demo.app import create_app
from sr3.demo.testing import DemoServer

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def main() -> None:
    methods = build_methods(argparse.Namespace(model=None, regression_model=None, cascade=None, device="cpu"))
    out = ROOT / "docs" / "img" / "demo.png"
    with DemoServer(create_app(methods)) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 760})
            page.goto(server.url + "/")
            page.wait_for_selector("#method option[value=bicubic]", state="attached")
            page.set_input_files("#file", str(ROOT / "examples" / "example.png"))
            page.click("#run")
            page.wait_for_selector('body[data-state="done"]', timeout=600_000)
            page.eval_on_selector("#slider", "s => { s.value = 45; s.dispatchEvent(new Event('input')); }")
            page.wait_for_timeout(300)
            page.screenshot(path=str(out), full_page=True)
            print(f"{out} written ({page.inner_text('#status')}; frames shown: "
                  f"{page.get_attribute('body', 'data-frames-seen')})")
        finally:
            browser.close()


if __name__ == "__main__":
    main()
