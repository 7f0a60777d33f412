"""A real server over loopback: 50 concurrent raters lose nothing; a kill -9 loses nothing."""

from __future__ import annotations

import sqlite3
import threading

import httpx
import pytest

from sr3.study.create import create_study
from sr3.study.testing import ServerProcess, make_folders


def counts(db) -> tuple[int, int, int]:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT COUNT(*), COUNT(DISTINCT assignment_id), COUNT(DISTINCT rater_id) "
                           "FROM responses").fetchone()
    finally:
        con.close()


@pytest.fixture
def study(tmp_path):
    dirs = make_folders(tmp_path, ["A", "B"], n_images=6, size=16)
    db = tmp_path / "study.db"
    # 3 method trials + 1 catch trial per rater
    create_study(dirs["reference"], {"A": dirs["A"], "B": dirs["B"]}, db, trials_per_rater=3, catch_rate=0.25)
    return db


def test_fifty_concurrent_raters_lose_nothing(study):
    n_raters, per_rater = 50, 4
    barrier = threading.Barrier(n_raters)
    problems: list[str] = []
    acknowledged = [0] * n_raters

    def rater(i: int, url: str) -> None:
        try:
            # Each rater as if behind a reverse proxy on this machine (uvicorn trusts X-Forwarded-For
            # from 127.0.0.1): 50 clients, so the study's default limit of 5 per client lets all in.
            with httpx.Client(base_url=url, timeout=60, headers={"X-Forwarded-For": f"198.18.{i}.1"}) as c:
                barrier.wait()  # everyone starts at once
                state = c.post("/api/consent", json={"consent": True}).json()
                while not state["done"]:
                    body = {"trial": state["trial"]["id"], "choice": "left" if (i + state["answered"]) % 2 else "right",
                            "rt_ms": i}
                    r = c.post("/api/answer", json=body)
                    if r.status_code != 200 or r.json()["status"] != "recorded":
                        problems.append(f"rater {i}: {r.status_code} {r.text}")
                        return
                    acknowledged[i] += 1
                    # Re-send as a client whose reply got lost would: must not count twice.
                    again = c.post("/api/answer", json=body)
                    if again.json().get("status") != "duplicate":
                        problems.append(f"rater {i}: re-send {again.status_code} {again.text}")
                    state = r.json()["state"]
        except Exception as e:  # noqa: BLE001 - reported below with the rater number
            problems.append(f"rater {i}: {type(e).__name__}: {e}")

    with ServerProcess(study) as server:
        threads = [threading.Thread(target=rater, args=(i, server.url)) for i in range(n_raters)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        status = httpx.get(server.url + "/admin/status",
                           headers={"Authorization": f"Bearer {server.admin_token}"}).json()
    assert problems == []
    assert acknowledged == [per_rater] * n_raters
    assert counts(study) == (n_raters * per_rater, n_raters * per_rater, n_raters)
    assert status["raters"] == status["raters_done"] == n_raters
    assert status["answers"] == n_raters * per_rater
    con = sqlite3.connect(study)
    # Arrival indices are 0..49 with no gaps or duplicates, so every rater got its own seeded sequence.
    assert [r[0] for r in con.execute("SELECT idx FROM raters ORDER BY idx")] == list(range(n_raters))
    con.close()


def test_answers_survive_kill_and_restart(study):
    server = ServerProcess(study).start()
    try:
        c = httpx.Client(base_url=server.url, timeout=30)
        state = c.post("/api/consent", json={"consent": True}).json()
        # Over a real uvicorn too, both images of a pair carry identical headers (no Date, no Server).
        left, right = c.get(state["trial"]["left"]), c.get(state["trial"]["right"])
        assert dict(left.headers) == dict(right.headers) and len(left.content) == len(right.content)
        assert "date" not in left.headers and "server" not in left.headers
        sent = []
        for _ in range(3):
            body = {"trial": state["trial"]["id"], "choice": "left", "rt_ms": 100}
            r = c.post("/api/answer", json=body)
            assert r.json()["status"] == "recorded"
            sent.append(body)
            state = r.json()["state"]
        server.kill()  # SIGKILL right after the acknowledgements: no clean shutdown
        assert counts(study) == (3, 3, 1)
        server = ServerProcess(study, port=server.port).start()
        state = c.get("/api/state").json()  # same cookie: the rater resumes where it stopped
        assert state["answered"] == 3 and state["total"] == 4
        assert c.post("/api/answer", json=sent[-1]).json()["status"] == "duplicate"  # a retry across the restart
        while not state["done"]:
            r = c.post("/api/answer", json={"trial": state["trial"]["id"], "choice": "right", "rt_ms": 100})
            assert r.status_code == 200
            state = r.json()["state"]
        c.close()
    finally:
        server.stop()
    assert counts(study) == (4, 4, 1)
