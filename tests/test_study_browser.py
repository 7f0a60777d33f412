"""End to end in headless Chromium: consent, keyboard answers, hiding after the display time,
resume, phone layout; then the report counts what was pressed."""

from __future__ import annotations

import os
import sqlite3

import httpx
import pytest

from sr3.study.create import create_study
from sr3.study.report import write_report
from sr3.study.testing import ServerProcess, make_folders

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason=f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
VISIBILITY = """() => {
  const img = (id) => document.getElementById(id);
  const vis = (id) => getComputedStyle(img(id)).visibility;
  return {expired: document.body.dataset.expired, left: vis("img-left"), right: vis("img-right"),
          loaded: [img("img-left").naturalWidth, img("img-right").naturalWidth]};
}"""


def truth(db) -> dict[str, tuple[str, str, str | None]]:
    con = sqlite3.connect(db)
    try:
        return {aid: (side, kind, method) for aid, side, kind, method in con.execute(
            "SELECT a.id, t.real_side, t.kind, t.method FROM assignments a JOIN trials t ON t.id = a.trial_id")}
    finally:
        con.close()


def test_rater_page_in_chromium(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    dirs = make_folders(tmp_path, ["A", "B"], n_images=5, size=240)  # a pair is wider than a phone
    db = tmp_path / "study.db"
    # 4 method trials + 1 catch; a short display time so the hiding is observed quickly.
    create_study(dirs["reference"], {"A": dirs["A"], "B": dirs["B"]}, db, trials_per_rater=4, catch_rate=0.25,
                 display_seconds=0.4, seed=2)
    keys = ["ArrowLeft", "ArrowRight", "ArrowRight", "ArrowLeft", "ArrowLeft"]
    with ServerProcess(db, cli=True) as server, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 700})
            page.goto(server.url + "/")
            page.wait_for_selector('body[data-screen="consent"]')
            assert "voluntary" in page.inner_text("#consent-text")
            page.keyboard.press("Enter")
            page.wait_for_selector('body[data-screen="instructions"]')
            assert page.inner_text("#instructions-question") == "Which image, would you guess, is from a camera?"
            assert "0.4 seconds" in page.inner_text("#display-note")
            page.keyboard.press("Enter")
            for i, key in enumerate(keys):
                page.wait_for_selector(f'body[data-ready="1"][data-answered="{i}"]')
                assert page.inner_text("#progress-text") == f"{i + 1} / 5"
                # Both images loaded, and shown or hidden together (read in one go: the timer may fire any time).
                seen = page.evaluate(VISIBILITY)
                assert seen["loaded"] == [240, 240]
                assert seen["left"] == seen["right"] == ("hidden" if seen["expired"] == "1" else "visible")
                if i == 0:
                    # After the display time both images are hidden, but an answer is still taken.
                    page.wait_for_selector('body[data-expired="1"]')
                    seen = page.evaluate(VISIBILITY)
                    assert seen["left"] == seen["right"] == "hidden"
                page.keyboard.press(key)
            page.wait_for_selector('body[data-screen="done"]')
            resume = page.get_attribute("#resume-link", "href")
            page.reload()  # stop and come back: the cookie finds the finished rater
            page.wait_for_selector('body[data-screen="done"]')

            # A phone: the pair fits side by side in 375 px, answered by tapping.
            phone = browser.new_context(viewport={"width": 375, "height": 667}, device_scale_factor=2,
                                        is_mobile=True, has_touch=True)
            mobile = phone.new_page()
            mobile.goto(server.url + "/")
            mobile.wait_for_selector('body[data-screen="consent"]')
            mobile.tap("#agree")
            mobile.tap("#begin")
            mobile.wait_for_selector('body[data-ready="1"][data-answered="0"]')
            left, right = mobile.locator("#choice-left").bounding_box(), mobile.locator("#choice-right").bounding_box()
            assert 0 <= left["x"] and left["x"] + left["width"] <= right["x"] and right["x"] + right["width"] <= 375
            assert mobile.evaluate("document.documentElement.scrollWidth") <= 375  # no sideways scrolling
            shown = mobile.evaluate("[document.getElementById('img-left').getBoundingClientRect().width,"
                                    " document.getElementById('img-right').getBoundingClientRect().width]")
            assert shown[0] == shown[1] < 240  # both scaled down alike
            mobile.tap("#choice-right")
            mobile.wait_for_selector('body[data-answered="1"]')
            # The resume link from the desktop opens the same (finished) rater on the phone.
            mobile.goto(resume)
            mobile.wait_for_selector('body[data-screen="done"]')
            phone.close()

            # Past the study's default limit of 5 new raters per client (2 so far, 3 more here),
            # a new browser is refused and the page says why (and claims no saved answers).
            for _ in range(3):
                assert httpx.post(server.url + "/api/consent", json={"consent": True}).status_code == 200
            late = browser.new_page()
            late.goto(server.url + "/")
            late.wait_for_selector('body[data-screen="consent"]')
            late.click("#agree")
            late.wait_for_selector('body[data-screen="error"]')
            refused = late.inner_text("#error-text")
            assert refused.startswith("too many new rater sessions from your network") and "saved" not in refused
        finally:
            browser.close()

    con = sqlite3.connect(db)
    answers = con.execute("SELECT s.assignment_id, s.choice, s.rt_ms, r.idx FROM responses s "
                          "JOIN assignments a ON a.id = s.assignment_id JOIN raters r ON r.id = s.rater_id "
                          "ORDER BY r.idx, a.position").fetchall()
    con.close()
    desktop = [a for a in answers if a[3] == 0]
    assert [c for _, c, _, _ in desktop] == ["left" if k == "ArrowLeft" else "right" for k in keys]
    assert desktop[0][2] >= 400  # the first answer came after the images were hidden
    assert [(c, idx) for _, c, _, idx in answers if idx == 1] == [("right", 1)]

    # The report counts exactly what was pressed.
    t = truth(db)
    expected = {"A": [0, 0], "B": [0, 0]}
    for aid, choice, _, _ in answers:
        side, kind, method = t[aid]
        if kind == "method":
            expected[method][0] += choice != side
            expected[method][1] += 1
    desktop_catch = [choice == t[aid][0] for aid, choice, _, _ in desktop if t[aid][1] == "catch"]
    result = write_report(db, tmp_path / "report", n_boot=100, min_catch_pass=0.0)
    got = {r["method"]: [r["n_fooled"], r["n_answers"]] for r in result["confusion"]}
    assert got == expected and sum(n for _, n in got.values()) == len(answers) - len(desktop_catch)
    assert result["catch"]["answers"] == len(desktop_catch) == 1
    assert result["catch"]["passed"] == sum(desktop_catch)
