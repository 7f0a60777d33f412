"""sr3 demo end to end in headless Chromium: pick an image, watch intermediate frames arrive, slide, download."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from sr3.demo.app import create_app
from sr3.demo.testing import DemoServer
from sr3.methods import MethodOptions, build_method

try:  # the tiny random-weight model is shared with test_frames
    from test_frames import save_random_model, tiny_sr_config
except ImportError:  # tests/ collected as a package
    from tests.test_frames import save_random_model, tiny_sr_config

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason=f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
STEPS = 60  # ~40 ms each for this model at 160x120 here: the 200 ms polling sees several intermediate frames


def test_demo_page_in_chromium(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    model = save_random_model(tmp_path / "sr", tiny_sr_config(32), 1)
    methods = {"sr3": build_method("sr3", MethodOptions(model_dirs={"sr3": model}, sampling={"steps": 3})),
               "bicubic": build_method("bicubic", MethodOptions(scale=4))}
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(photo)
    with DemoServer(create_app(methods)) as server, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server.url + "/")
            page.wait_for_selector("#method option[value=bicubic]", state="attached")
            assert page.input_value("#steps") == "3"  # the model's own setting is preselected
            page.set_input_files("#file", str(photo))
            page.fill("#steps", str(STEPS))
            page.click("#run")
            page.wait_for_selector('body[data-state="done"]', timeout=60_000)
            shown = [int(s) for s in page.get_attribute("body", "data-frame-steps").split()]
            assert shown and min(shown) < STEPS  # at least one intermediate estimate reached the page
            assert shown == sorted(shown)
            assert int(page.get_attribute("body", "data-frames-seen")) >= 1
            assert page.inner_text("#status") == "Done: 160x120 px."
            page.eval_on_selector("#slider", "s => { s.value = 30; s.dispatchEvent(new Event('input')); }")
            assert page.eval_on_selector("#after-clip", "e => e.style.left") == "30%"
            with page.expect_download() as download:
                page.click("#download")
            saved = tmp_path / "download.png"
            download.value.save_as(saved)
            assert download.value.suggested_filename == "photo_x4.png"
            assert Image.open(saved).size == (160, 120)
            assert errors == []
        finally:
            browser.close()
