"""What a hostile rater can learn from the bytes it is served: a scripted rater that compares
every image it received (raw bytes and decoded pixels) within one session and across two
sessions must do no better than a blind guess, and no rater sees a reference photo twice."""

from __future__ import annotations

import hashlib
import io
import sqlite3
import warnings

import numpy as np
import pytest
from PIL import Image

with warnings.catch_warnings():  # starlette's note about httpx2 is not ours to fix
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from sr3.study.create import create_study
from sr3.study.server import create_app
from sr3.study.testing import make_folders


def rows(db, sql, params=()):
    con = sqlite3.connect(db)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


@pytest.fixture
def small_study(tmp_path):
    """6 photos, 2 methods, 6 method + 2 catch trials asked for per rater: too small to show
    every rater 8 different photos, so the design has to give up trials, not repeat photos."""
    dirs = make_folders(tmp_path, ["A", "B"], n_images=6, size=16)
    db = tmp_path / "study.db"
    with pytest.warns(UserWarning, match="too few"):
        create_study(dirs["reference"], {"A": dirs["A"], "B": dirs["B"]}, db, trials_per_rater=6,
                     catch_rate=0.34, seed=1)
    return db


def fingerprints(png: bytes) -> set[tuple[str, str]]:
    """What a scripted rater can compare exactly: the file and the decoded pixels."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    return {("bytes", hashlib.sha256(png).hexdigest()), ("pixels", hashlib.sha256(pixels.tobytes()).hexdigest())}


def byte_comparing_rater(c: TestClient, known: set) -> list[tuple[str, str, bool]]:
    """Answer a whole session; pick the image seen before (the real photo repeats), else guess left.

    ``known`` holds the fingerprints of every image seen earlier (other sessions included) and
    is extended in place.  Returns ``(assignment id, choice, informative)`` per trial, where
    informative means exactly one of the two images matched something seen before.
    """
    state = c.post("/api/consent", json={"consent": True}).json()
    answers = []
    while not state["done"]:
        trial = state["trial"]
        prints = {side: fingerprints(c.get(trial[side]).content) for side in ("left", "right")}
        repeated = [side for side in ("left", "right") if prints[side] & known]
        choice = repeated[0] if len(repeated) == 1 else "left"
        answers.append((trial["id"], choice, len(repeated) == 1))
        known |= prints["left"] | prints["right"]
        r = c.post("/api/answer", json={"trial": trial["id"], "choice": choice, "rt_ms": 500})
        assert r.status_code == 200
        state = r.json()["state"]
    return answers


def test_byte_comparison_gains_nothing_within_or_across_sessions(small_study):
    app = create_app(small_study, None)
    known: set = set()
    first = byte_comparing_rater(TestClient(app), known)    # within one session
    second = byte_comparing_rater(TestClient(app), known)   # a second session, remembering the first
    truth = dict(rows(small_study, "SELECT a.id, t.real_side FROM assignments a JOIN trials t ON t.id = a.trial_id"))
    assert len(first) == len(second) == 4 + 2  # capped to 6 photos: 4 method + 2 catch trials
    # The two sessions share photos (so a leak would show): the second one's method trials
    # re-use photos the first one saw, with the other method.
    names = {aid: name for aid, name in rows(small_study, "SELECT a.id, t.image_name FROM assignments a "
                                                          "JOIN trials t ON t.id = a.trial_id")}
    assert {names[a] for a, _, _ in first} & {names[a] for a, _, _ in second}
    for session in (first, second):
        # No image ever matched an earlier one, so every answer is the blind guess and the
        # attacker's score is exactly that of always answering "left".
        assert [informative for _, _, informative in session] == [False] * len(session)
        assert [choice for _, choice, _ in session] == ["left"] * len(session)
    correct = sum(truth[a] == choice for a, choice, _ in first + second)
    assert correct == sum(truth[a] == "left" for a, _, _ in first + second)


def test_served_copies_differ_by_at_most_one_level(small_study):
    """The per-session copy is the stored image with +-1 noise: invisible, but never the same bytes."""
    app = create_app(small_study, None)
    a, b = TestClient(app), TestClient(app)
    trial = a.post("/api/consent", json={"consent": True})
    b.post("/api/consent", json={"consent": True})
    trial = trial.json()["trial"]
    image_id = trial["left"].rsplit("/", 1)[1]
    stored = rows(small_study, "SELECT b.data FROM images i JOIN blobs b ON b.id = i.blob_id WHERE i.id = ?",
                  (image_id,))[0][0]
    served = a.get(trial["left"]).content
    assert a.get(trial["left"]).content == served  # stable within a session (a reload shows the same image)
    diff = np.abs(np.asarray(Image.open(io.BytesIO(served)), dtype=int)
                  - np.asarray(Image.open(io.BytesIO(stored)), dtype=int))
    assert diff.max() == 1 and 0.5 < (diff > 0).mean() < 0.8  # +-1 on about two thirds of the values
    assert served != stored and len(served) == len(stored)
    # The same stored image served to another session (give rater b this trial's image) differs.
    rater_b = rows(small_study, "SELECT id FROM raters WHERE idx = 1")[0][0]
    trial_id = rows(small_study, "SELECT id FROM trials WHERE left_image = ?", (image_id,))[0][0]
    con = sqlite3.connect(small_study)
    con.execute("INSERT INTO assignments (id, rater_id, position, trial_id) VALUES (?, ?, ?, ?)",
                ("X" * 22, rater_b, 99, trial_id))
    con.commit()
    con.close()
    assert b.get(trial["left"]).content not in (served, stored)


@pytest.mark.parametrize("tasks, n_images, per_rater, catch_rate, n_method, n_catch", [
    (("camera",), 6, 6, 0.34, 4, 2),             # 6 + 2 asked, 6 photos: capped, catch share kept
    (("camera", "reference"), 5, 3, 0.5, 3, 2),  # both tasks, exactly enough photos
    (("camera",), 4, 50, 0.1, 3, 1),             # default-like settings on a tiny study
])
def test_no_rater_sees_a_photo_twice(tmp_path, tasks, n_images, per_rater, catch_rate, n_method, n_catch):
    dirs = make_folders(tmp_path, ["A", "B", "C"], n_images=n_images, size=8)
    db = tmp_path / "study.db"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "too few images" is tested above
        create_study(dirs["reference"], {m: dirs[m] for m in "ABC"}, db, tasks=tasks, scale=2,
                     trials_per_rater=per_rater, catch_rate=catch_rate)
    app = create_app(db, None)
    for k in range(12):  # each from its own address: the per-client limit is not what is tested here
        rater = TestClient(app, client=(f"192.0.2.{k}", 1000))
        assert rater.post("/api/consent", json={"consent": True}).status_code == 200
    per_rater_rows = rows(db, "SELECT r.idx, t.image_name, t.kind FROM assignments a "
                              "JOIN raters r ON r.id = a.rater_id JOIN trials t ON t.id = a.trial_id")
    for k in range(12):
        names = [name for idx, name, _ in per_rater_rows if idx == k]
        kinds = [kind for idx, _, kind in per_rater_rows if idx == k]
        assert len(names) == len(set(names)) == n_method + n_catch, k
        assert kinds.count("catch") == n_catch


def near_duplicate_rater(c: TestClient, seen: list[np.ndarray]) -> list[tuple[str, str, bool]]:
    """Like :func:`byte_comparing_rater`, but an image "was seen" if it is within 2 grey levels of one."""
    state = c.post("/api/consent", json={"consent": True}).json()
    answers = []
    while not state["done"]:
        trial = state["trial"]
        pixels = {side: np.asarray(Image.open(io.BytesIO(c.get(trial[side]).content)), dtype=int)
                  for side in ("left", "right")}
        repeated = [side for side in ("left", "right")
                    if any(p.shape == pixels[side].shape and np.abs(p - pixels[side]).max() <= 2 for p in seen)]
        choice = repeated[0] if len(repeated) == 1 else "left"
        answers.append((trial["id"], choice, len(repeated) == 1))
        seen += [pixels["left"], pixels["right"]]
        state = c.post("/api/answer", json={"trial": trial["id"], "choice": choice, "rt_ms": 500}).json()["state"]
    return answers


def test_approximate_comparison_gains_nothing_within_a_session_but_does_across(small_study):
    """The documented limit: no photo repeats within a session, so even a pixel-distance
    comparison finds nothing there; across two sessions it recognises the real photo."""
    app = create_app(small_study, None)
    seen: list = []
    first = near_duplicate_rater(TestClient(app), seen)
    second = near_duplicate_rater(TestClient(app), seen)
    truth = dict(rows(small_study, "SELECT a.id, t.real_side FROM assignments a JOIN trials t ON t.id = a.trial_id"))
    assert [informative for _, _, informative in first] == [False] * 6
    informed = [truth[a] == choice for a, choice, informative in second if informative]
    # The first session saw all 6 photos (4 method + 2 catch trials), so every trial of the second
    # shows a photo seen before, next to another image: the near-copy is the real one, each time.
    assert len(informed) == len(second) == 6 and all(informed)
