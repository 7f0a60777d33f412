"""sr3 demo's HTTP API (in-process TestClient): upload limits, bad images, a real job, queue and cancel."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from sr3.demo.app import COOKIE, DemoLimits, create_app
from sr3.demo.jobs import JobQueue, JobRequest, Refused
from sr3.cli import main
from sr3.methods import MethodOptions, Upscaler, build_method

try:  # the tiny random-weight models are shared with test_frames
    from test_frames import save_random_model, tiny_sr_config, write_16x_cascade
except ImportError:  # tests/ collected as a package
    from tests.test_frames import save_random_model, tiny_sr_config, write_16x_cascade


class SlowUpscaler(Upscaler):
    """1000 'steps' of 5 ms, each reported to the callback: long enough to cancel in the middle."""

    kind, name, scale = "slow", "slow", 2

    def __init__(self):
        self.steps_run = 0

    def count_evaluations(self, h, w):
        return 1000

    def __call__(self, lr, seeds, keys=None, progress=None, callback=None):
        image = torch.zeros(lr.shape[0], 3, lr.shape[-2] * 2, lr.shape[-1] * 2)
        for i in range(1000):
            time.sleep(0.005)
            self.steps_run = i + 1
            callback({"i": i, "image": image, "x": image, "gamma": 0.5, "denoised": image})
        return image


def png_bytes(width, height, seed=0) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def who(client: str) -> dict:
    return {"Cookie": f"{COOKIE}={client}"}


def wait_for(c, job_id, client, done=lambda s: s["status"] not in ("queued", "running"), timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = c.get(f"/api/jobs/{job_id}", headers=who(client)).json()
        if done(s):
            return s
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} still {s}")


@pytest.fixture(scope="module")
def methods(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    model = save_random_model(root / "sr", tiny_sr_config(32), 1)
    cascade = write_16x_cascade(root / "cascade")
    return {"sr3": build_method("sr3", MethodOptions(model_dirs={"sr3": model}, sampling={"steps": 3})),
            "bicubic": build_method("bicubic", MethodOptions(scale=4)), "slow": SlowUpscaler(),
            "cascade": build_method("cascade", MethodOptions(model_dirs={"cascade": cascade}))}


def test_uploads_are_checked_before_any_job(methods):
    limits = DemoLimits(max_upload_bytes=3000, max_pixels=400)
    with TestClient(create_app(methods, limits)) as c:
        page = c.get("/")
        assert page.status_code == 200 and COOKIE in page.cookies
        assert "default-src 'none'" in page.headers["content-security-policy"]
        offered = {m["name"]: m for m in c.get("/api/options").json()["methods"]}
        assert offered["sr3"]["sampling"] == {"sampler": "ddim", "steps": 3, "temperature": 1.0}
        assert offered["bicubic"]["sampling"] is None and offered["bicubic"]["scale"] == 4
        assert offered["cascade"]["scale"] == 16 and offered["cascade"]["sampling"]["steps"] == 2
        c.cookies.clear()
        post = lambda body, client="a", **q: c.post("/api/jobs", params={"method": "bicubic", **q}, content=body,
                                                    headers=who(client))
        too_big = post(b"\0" * 3001)
        assert too_big.status_code == 413 and "3001 bytes" in too_big.json()["detail"]
        many_pixels = post(png_bytes(21, 20))  # 420 px > 400, a few hundred bytes
        assert many_pixels.status_code == 413 and "21x20 px" in many_pixels.json()["detail"]
        bad = post(b"not an image at all", name="holiday.jpg")
        assert bad.status_code == 400 and bad.json()["detail"].startswith("holiday: not a readable image")
        truncated = post(png_bytes(16, 16)[:200], name="cut.png")
        assert truncated.status_code == 400 and "corrupt or truncated" in truncated.json()["detail"]
        assert post(b"", name="e.png").status_code == 400
        assert post(png_bytes(8, 8), method="nope").status_code == 400
        assert post(png_bytes(8, 8), method="sr3", steps="0").json()["detail"] == "steps = 0 must be >= 1"
        assert post(png_bytes(8, 8), method="sr3", temperature="1.5").status_code == 400
        no_cookie = c.post("/api/jobs", params={"method": "bicubic"}, content=png_bytes(8, 8))
        assert no_cookie.status_code == 400 and "reload the page" in no_cookie.json()["detail"]
        assert not c.app.state.queue.jobs  # nothing refused became a job
        assert post(png_bytes(20, 20), method="bicubic").status_code == 202  # exactly at the pixel limit


def test_a_job_streams_frames_and_returns_a_result_of_the_right_size(methods):
    with TestClient(create_app(methods)) as c:
        r = c.post("/api/jobs", params={"method": "sr3", "name": "my photo.png", "steps": 3},
                   content=png_bytes(16, 12), headers=who("a"))
        assert r.status_code == 202 and (r.json()["width"], r.json()["height"]) == (64, 48)
        job = r.json()["id"]
        s = wait_for(c, job, "a")
        assert s["status"] == "done" and s["frame_seq"] == 3 and s["step"] == 3
        assert s["evaluations_done"] == s["evaluations_total"] == 3
        frame = c.get(f"/api/jobs/{job}/frame", headers=who("a"))
        assert frame.headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(frame.content)).size == (64, 48)
        result = c.get(f"/api/jobs/{job}/result", headers=who("a"))
        assert result.headers["content-disposition"] == 'attachment; filename="my_photo_x4.png"'
        assert Image.open(io.BytesIO(result.content)).size == (64, 48)
        assert c.get(f"/api/jobs/{job}/result", headers=who("b")).status_code == 404  # another browser's job


def test_one_job_per_browser_a_queue_and_cancel(methods):
    slow = methods["slow"]
    with TestClient(create_app(methods)) as c:
        a = c.post("/api/jobs", params={"method": "slow"}, content=png_bytes(8, 8), headers=who("a")).json()["id"]
        wait_for(c, a, "a", lambda s: s["frame_seq"] >= 1)
        again = c.post("/api/jobs", params={"method": "bicubic"}, content=png_bytes(8, 8), headers=who("a"))
        assert again.status_code == 409 and "already has a job" in again.json()["detail"]
        b = c.post("/api/jobs", params={"method": "bicubic"}, content=png_bytes(8, 8), headers=who("b")).json()["id"]
        queued = c.get(f"/api/jobs/{b}", headers=who("b")).json()
        assert (queued["status"], queued["position"]) == ("queued", 1)
        assert c.post(f"/api/jobs/{b}/cancel", headers=who("b")).json()["status"] == "cancelled"  # left the queue
        assert c.post(f"/api/jobs/{a}/cancel", headers=who("b")).status_code == 404  # not b's job
        c.post(f"/api/jobs/{a}/cancel", headers=who("a"))
        s = wait_for(c, a, "a", timeout=5)
        assert s["status"] == "cancelled" and slow.steps_run < 1000  # stopped between steps
        assert c.get(f"/api/jobs/{a}/result", headers=who("a")).status_code == 404
        # The worker is free again and a's next job runs.
        nxt = c.post("/api/jobs", params={"method": "bicubic"}, content=png_bytes(8, 8), headers=who("a")).json()
        assert wait_for(c, nxt["id"], "a")["status"] == "done"


def test_a_full_queue_refuses_new_jobs(methods):
    queue = JobQueue(methods, max_queued=1)  # not started: jobs stay queued
    image = Image.new("RGB", (4, 4))
    queue.submit("a", JobRequest("bicubic"), image, "x")
    with pytest.raises(Refused, match="queue is full") as e:
        queue.submit("b", JobRequest("bicubic"), image, "x")
    assert e.value.status == 503


def test_a_cascade_job_takes_the_chosen_steps_in_every_stage(methods):
    with TestClient(create_app(methods)) as c:
        r = c.post("/api/jobs", params={"method": "cascade", "steps": 2}, content=png_bytes(8, 8), headers=who("a"))
        assert (r.json()["width"], r.json()["height"]) == (128, 128)
        s = wait_for(c, r.json()["id"], "a")
        # cascade.json says 3 + 2 steps; the page's choice (2) applies to both stages: 4 frames, last in stage 1.
        assert (s["status"], s["frame_seq"], s["stage"], s["step"]) == ("done", 4, 1, 2)
        result = c.get(f"/api/jobs/{r.json()['id']}/result", headers=who("a"))
        assert Image.open(io.BytesIO(result.content)).size == (128, 128)


def test_demo_command_refuses_bad_limits_before_loading_models(capsys):
    assert main(["demo", "--max-upload-mb", "0"]) == 2
    assert "--max-upload-mb and --max-pixels must be positive" in capsys.readouterr().err
    assert main(["demo", "--port", "70000"]) == 2
    assert "--port 70000 must lie in 1..65535" in capsys.readouterr().err


def test_finished_jobs_beyond_the_kept_number_are_forgotten(methods):
    queue = JobQueue(methods, keep_finished=1)
    queue.start()
    try:
        first = queue.submit("a", JobRequest("bicubic"), Image.new("RGB", (4, 4)), "x")
        deadline = time.monotonic() + 10
        while first.status != "done" and time.monotonic() < deadline:
            time.sleep(0.01)
        second = queue.submit("a", JobRequest("bicubic"), Image.new("RGB", (4, 4)), "y")  # a's first is finished
        while second.status != "done" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert second.status == "done" and Image.open(io.BytesIO(second.result_png)).size == (16, 16)
        assert queue.get(first.id, "a") is None and queue.get(second.id, "a") is second
    finally:
        queue.stop()
