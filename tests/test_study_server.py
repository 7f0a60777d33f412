"""The rater app in-process (TestClient): flow, no label leaks, identical images, validation, admin."""

from __future__ import annotations

import io
import sqlite3
import warnings

import pytest
from PIL import Image

with warnings.catch_warnings():  # starlette's note about httpx2 is not ours to fix
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from sr3.errors import UserError
from sr3.study.create import create_study
from sr3.study.ratelimit import ClientRateLimit, client_key
from sr3.study.server import create_app
from sr3.study.testing import make_folders

ADMIN = {"Authorization": "Bearer s3cret-admin"}
# Distinctive names so a leak anywhere in what the rater receives is found by substring search.
METHODS = ("zebraMethodX", "quokkaMethodY")
PREFIX = "walrusFile"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    dirs = make_folders(root, list(METHODS), n_images=4, size=16, prefix=PREFIX)
    db = root / "study.db"
    create_study(dirs["reference"], {m: dirs[m] for m in METHODS}, db, tasks=("camera", "reference"), scale=4,
                 trials_per_rater=3, catch_rate=0.34, seed=5)
    return db


@pytest.fixture
def app(study):
    return create_app(study, "s3cret-admin")


def client(app) -> TestClient:
    return TestClient(app)


def count(db, sql="SELECT COUNT(*) FROM responses"):
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchone()[0]
    finally:
        con.close()


def register(c: TestClient) -> dict:
    r = c.post("/api/consent", json={"consent": True})
    assert r.status_code == 200
    return r.json()


def test_full_session_and_nothing_leaks(study, app):
    c = client(app)
    bodies = []
    for path in ("/", "/static/app.js", "/static/style.css"):
        r = c.get(path)
        assert r.status_code == 200
        bodies.append(r.text)
    state = c.get("/api/state").json()
    assert state["registered"] is False and "voluntary" in state["consent"]
    state = register(c)
    bodies.append(str(state))
    assert state["total"] == 4 and state["answered"] == 0  # 3 method + 1 catch
    assert state["display_ms"] == 3000
    assert state["question"].startswith("Which image")
    assert set(state) == {"registered", "question", "display_ms", "answered", "total", "done", "trial", "resume"}
    first_task_middle = state["trial"]["middle"]
    assert first_task_middle is None  # rater 0 gets the camera task: no LR input
    answered = 0
    while not state["done"]:
        trial = state["trial"]
        assert set(trial) == {"id", "left", "right", "middle"}  # no side, kind, method or name
        left, right = c.get(trial["left"]), c.get(trial["right"])
        assert left.status_code == right.status_code == 200
        assert dict(left.headers) == dict(right.headers)  # same type, length, cache policy, no date
        assert left.headers["content-type"] == "image/png"
        assert left.headers["cache-control"] == "no-store"
        assert "etag" not in left.headers and "last-modified" not in left.headers
        assert "content-disposition" not in left.headers
        a, b = Image.open(io.BytesIO(left.content)), Image.open(io.BytesIO(right.content))
        assert (a.format, a.mode, a.size, a.info) == (b.format, b.mode, b.size, b.info) == ("PNG", "RGB", (16, 16), {})
        assert len(left.content) == len(right.content)
        r = c.post("/api/answer", json={"trial": trial["id"], "choice": "left", "rt_ms": 800})
        assert r.status_code == 200 and r.json()["status"] == "recorded"
        answered += 1
        state = r.json()["state"]
        bodies.append(str(state))
        assert state["answered"] == answered
    assert answered == 4 and count(study) == 4
    leaked = [s for s in (*METHODS, PREFIX, "real_side", "sr3_rater=") if any(s in b for b in bodies)]
    assert leaked == []
    # Rater 1 gets the reference task: an LR middle image at 4x4.
    c2 = client(app)
    trial = register(c2)["trial"]
    middle = c2.get(trial["middle"])
    assert middle.status_code == 200 and Image.open(io.BytesIO(middle.content)).size == (4, 4)


def test_validation_errors_are_clear_4xx(study, app):
    alice, bob = client(app), client(app)
    a, b = register(alice)["trial"], register(bob)["trial"]
    before = count(study)

    def answer(c, trial_id, choice="left", **extra):
        return c.post("/api/answer", json={"trial": trial_id, "choice": choice, "rt_ms": 10, **extra})

    assert client(app).post("/api/answer", json={"trial": a["id"], "choice": "left", "rt_ms": 1}).status_code == 401
    r = answer(alice, "A" * 22)
    assert (r.status_code, r.json()["detail"]) == (404, "unknown trial id")
    r = answer(alice, b["id"])
    assert (r.status_code, r.json()["detail"]) == (403, "this trial belongs to another rater")
    # Out of order: the rater's second trial before the first.
    con = sqlite3.connect(study)
    second = con.execute("SELECT a.id FROM assignments a JOIN raters r ON r.id = a.rater_id "
                         "WHERE a.position = 1 AND a.rater_id = (SELECT rater_id FROM assignments WHERE id = ?)",
                         (a["id"],)).fetchone()[0]
    con.close()
    assert answer(alice, second).status_code == 409
    # Recorded once; the identical re-send is acknowledged but not counted; a changed answer is refused.
    assert answer(alice, a["id"]).json()["status"] == "recorded"
    assert answer(alice, a["id"]).json()["status"] == "duplicate"
    r = answer(alice, a["id"], "right")
    assert r.status_code == 409 and "already answered" in r.json()["detail"]
    assert count(study) == before + 1
    # Malformed bodies.
    assert answer(alice, second, "middle").status_code == 422
    assert answer(alice, second, rt_ms_extra=1).status_code == 422
    assert alice.post("/api/answer", json={"trial": second, "choice": "left", "rt_ms": -5}).status_code == 422
    assert alice.post("/api/answer", json={"trial": "../../etc", "choice": "left", "rt_ms": 5}).status_code == 422
    assert alice.post("/api/answer", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
    assert alice.post("/api/answer", content="trial=x&choice=left",
                      headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 422
    assert alice.post("/api/consent", json={"consent": False}).status_code == 422
    # Oversized, declared and streamed without a length.
    big = b'{"trial": "' + b"x" * 10_000 + b'"}'
    r = alice.post("/api/answer", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "larger than 4096" in r.json()["detail"]
    r = alice.post("/api/answer", content=iter([big[:3000], big[3000:]]), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert count(study) == before + 1


@pytest.mark.parametrize("path", [
    "/img/../../etc/passwd", "/img/..%2F..%2Fetc%2Fpasswd", "/img/%2e%2e/%2e%2e/study.db", "/img/study.db",
    "/img/" + "A" * 22, "/img/", "/static/../server.py", "/static/..%2Fserver.py", "/static/index.html",
    "/resume/" + "B" * 32, "/docs", "/openapi.json",
])
def test_path_traversal_and_unknown_routes_are_404(app, path):
    c = client(app)
    register(c)
    assert c.get(path).status_code == 404


def test_images_only_for_the_raters_own_trials(app):
    alice, bob = client(app), client(app)
    a = register(alice)["trial"]
    register(bob)
    assert alice.get(a["left"]).status_code == 200
    assert bob.get(a["left"]).status_code == 404
    assert client(app).get(a["left"]).status_code == 401


def test_resume_link_restores_the_rater(study, app):
    c = client(app)
    state = register(c)
    assert c.post("/api/answer", json={"trial": state["trial"]["id"], "choice": "right", "rt_ms": 5}).status_code == 200
    other_device = client(app)
    r = other_device.get(state["resume"], follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert "httponly" in r.headers["set-cookie"].lower() and "samesite=strict" in r.headers["set-cookie"].lower()
    resumed = other_device.get("/api/state").json()
    assert resumed["answered"] == 1 and resumed["trial"]["id"] != state["trial"]["id"]
    # Consenting again in the same browser keeps the same rater, not a new one.
    assert register(other_device)["answered"] == 1


def test_admin_needs_the_token(study, app):
    c = client(app)
    assert c.get("/admin/status").status_code == 401
    assert c.get("/admin/status", headers={"Authorization": "Bearer wrong"}).status_code == 401
    status = c.get("/admin/status", headers=ADMIN).json()
    assert status["raters"] == count(study, "SELECT COUNT(*) FROM raters")
    assert status["answers"] == count(study)
    export = c.get("/admin/export", headers=ADMIN).json()
    assert len(export) == count(study) and {"method", "real_side", "chose_real"} <= set(export[0])
    csv_text = c.get("/admin/export?format=csv", headers=ADMIN).text
    assert csv_text.count("\n") == count(study) + 1
    assert c.get("/admin/export?format=xml", headers=ADMIN).status_code == 422
    disabled = client(create_app(study, None))
    assert disabled.get("/admin/status", headers=ADMIN).status_code == 404


def test_max_raters(study):
    c = client(create_app(study, None, max_raters=0))
    r = c.post("/api/consent", json={"consent": True})
    assert r.status_code == 403 and "all the raters it needs" in r.json()["detail"]


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400", "-5", "1.5", "true", "null", '"5"',
                                   str(24 * 3600 * 1000 + 1)])
def test_bad_response_times_are_422_not_500(study, app, value):
    c = client(app)
    trial = register(c)["trial"]
    before = count(study)
    r = c.post("/api/answer", content='{"trial": "%s", "choice": "left", "rt_ms": %s}' % (trial["id"], value),
               headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "rt_ms"]
    assert count(study) == before
    assert c.post("/api/answer", json={"trial": trial["id"], "choice": "left", "rt_ms": 0}).status_code == 200


def test_one_client_cannot_use_up_the_raters(study):
    """The study's default limit: 5 new raters per client address per hour, then 429."""
    app = create_app(study, None)
    burst = [TestClient(app, client=("203.0.113.9", 40000 + k)).post("/api/consent", json={"consent": True})
             for k in range(8)]
    assert [r.status_code for r in burst] == [200] * 5 + [429] * 3
    assert "too many new rater sessions" in burst[-1].json()["detail"]
    assert 3590 <= int(burst[-1].headers["retry-after"]) <= 3600
    # Another address still gets in; an IPv6 client is one client per /64.
    assert TestClient(app, client=("198.51.100.7", 1)).post("/api/consent", json={"consent": True}).status_code == 200
    v6 = [TestClient(app, client=(f"2001:db8:1:2::{k:x}", 1)).post("/api/consent", json={"consent": True}).status_code
          for k in range(1, 8)]
    assert v6 == [200] * 5 + [429] * 2
    other_v6 = TestClient(app, client=("2001:db8:1:3::1", 1))
    assert other_v6.post("/api/consent", json={"consent": True}).status_code == 200
    # A rater who already has a session is not a new one: consent again, state, answers all work.
    first = TestClient(app, client=("203.0.113.9", 1), cookies=burst[0].cookies)
    assert first.post("/api/consent", json={"consent": True}).json()["registered"] is True


def test_rate_limit_window_and_off_switch(tmp_path):
    clock = [0.0]
    limit = ClientRateLimit(2, 60.0, clock=lambda: clock[0])
    assert [limit.acquire("a") for _ in range(2)] == [None, None]
    clock[0] = 10.0
    assert limit.acquire("a") == pytest.approx(50.0) and limit.acquire("b") is None
    clock[0] = 60.0  # the first two fall out of the window
    assert limit.acquire("a") is None
    assert all(ClientRateLimit(0, 60.0).acquire("a") is None for _ in range(100))
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1" and client_key("2001:db8::5") == "2001:db8::/64"
    # Configured per study: 0 turns the limit off.
    dirs = make_folders(tmp_path, ["m"], n_images=2, size=8)
    create_study(dirs["reference"], {"m": dirs["m"]}, tmp_path / "s.db", trials_per_rater=1, raters_per_client=0)
    c = create_app(tmp_path / "s.db", None)
    assert all(TestClient(c).post("/api/consent", json={"consent": True}).status_code == 200 for _ in range(12))
    # ... and `serve --raters-per-client` replaces the study's setting for one run.
    c = create_app(tmp_path / "s.db", None, raters_per_client=2)
    assert [TestClient(c).post("/api/consent", json={"consent": True}).status_code for _ in range(3)] == [200, 200, 429]
    with pytest.raises(UserError, match="--raters-per-client -1"):
        create_app(tmp_path / "s.db", None, raters_per_client=-1)


def test_max_raters_must_not_be_negative(study):
    with pytest.raises(UserError, match="--max-raters -1: must be an integer >= 0"):
        create_app(study, None, max_raters=-1)
