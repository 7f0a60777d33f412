"""The demo's web app (FastAPI): the page, uploads, job status, live frames and results.

A browser is known by a random cookie set when it loads the page; it sees only its
own jobs.  Uploads are the raw image bytes (``POST /api/jobs?method=...``, no
multipart), refused above ``max_upload_bytes`` while they are read and above
``max_pixels`` from the image header, before any pixel is decoded; decoding goes
through :func:`sr3.imageio.load_image_bytes` (the checks of every image sr3 reads).
The page polls ``GET /api/jobs/{id}`` and fetches ``/frame`` whenever a new x̂₀
frame exists, so the estimate is seen refining step by step.
"""

from __future__ import annotations

import re
import secrets
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ..config import SamplingConfig
from ..errors import UserError
from ..imageio import TooManyPixels, load_image_bytes
from ..methods import CascadeUpscaler, Upscaler
from ..samplers import SAMPLERS
from ..web import security_headers
from .jobs import ACTIVE, JobQueue, JobRequest, Refused

COOKIE = "sr3_demo"
STATIC_FILES = {"demo.js": "text/javascript; charset=utf-8", "demo.css": "text/css; charset=utf-8"}
SECURITY_HEADERS = security_headers(img_src="'self' blob:")  # the upload and the result are blob: URLs
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class DemoLimits:
    """What one upload may be."""

    max_upload_bytes: int = 10 * 2 ** 20
    """Largest upload in bytes (> 0)."""
    max_pixels: int = 512 * 512
    """Largest input image in pixels, width x height (> 0); the output has scale^2 times as many."""

    def __post_init__(self):
        if self.max_upload_bytes <= 0 or self.max_pixels <= 0:
            raise UserError("--max-upload-mb and --max-pixels must be positive")


def _static(name: str) -> bytes:
    return resources.files("sr3.demo").joinpath("static", name).read_bytes()


def method_options(methods: dict[str, Upscaler]) -> list[dict]:
    """What the page offers per method: its scale and, for a method that refines step by step,
    the sampling settings it starts from (a cascade: those of its last stage)."""
    out = []
    for name, m in methods.items():
        sampling: SamplingConfig | None = m.sampling
        if isinstance(m, CascadeUpscaler):
            sampling = m.cascade.config.stages[-1].sampling
        if m.count_evaluations(16, 16) <= 1:  # bicubic, regression: nothing to choose
            sampling = None
        out.append({"name": name, "scale": m.scale,
                    "sampling": None if sampling is None else {"sampler": sampling.sampler, "steps": sampling.steps,
                                                               "temperature": sampling.temperature}})
    return out


def create_app(methods: dict[str, Upscaler], limits: DemoLimits = DemoLimits(), max_queued: int = 8) -> FastAPI:
    """The demo app over ``methods`` (name -> upscaler; the first is preselected on the page)."""
    queue = JobQueue(methods, max_queued=max_queued)

    @asynccontextmanager
    async def lifespan(app):
        queue.start()
        yield
        queue.stop()

    app = FastAPI(title="sr3 demo", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.queue = queue

    @app.middleware("http")
    async def headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    def client_of(request: Request) -> str:
        client = request.cookies.get(COOKIE)
        if not client or len(client) > 64:
            raise HTTPException(400, "no demo session; reload the page")
        return client

    def job_of(job_id: str, request: Request):
        job = queue.get(job_id, client_of(request))
        if job is None:
            raise HTTPException(404, "no such job (finished jobs are kept for a while only)")
        return job

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request):
        response = HTMLResponse(_static("index.html").decode("utf-8"))
        if not request.cookies.get(COOKIE):
            response.set_cookie(COOKIE, secrets.token_urlsafe(16), httponly=True, samesite="strict")
        return response

    @app.get("/static/{name}")
    def static(name: str):
        if name not in STATIC_FILES:
            raise HTTPException(404, "not found")
        return Response(_static(name), media_type=STATIC_FILES[name])

    @app.get("/healthz")
    def healthz():
        return {"ok": True}

    @app.get("/api/options")
    def options():
        return {"methods": method_options(methods), "samplers": list(SAMPLERS),
                "limits": {"max_upload_bytes": limits.max_upload_bytes, "max_pixels": limits.max_pixels}}

    @app.post("/api/jobs")
    async def submit(request: Request, method: str, name: str = "image", sampler: str | None = None,
                     steps: int | None = None, temperature: float | None = None, seed: int = 0):
        client = client_of(request)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limits.max_upload_bytes:
            raise HTTPException(413, f"the image is {int(declared)} bytes; at most {limits.max_upload_bytes} "
                                "bytes are accepted")
        data = bytearray()
        async for chunk in request.stream():  # counted as it arrives: a missing or false length cannot pass
            data += chunk
            if len(data) > limits.max_upload_bytes:
                raise HTTPException(413, f"the image is larger than {limits.max_upload_bytes} bytes")
        stem = _SAFE_NAME.sub("_", Path(name).stem)[:64] or "image"
        try:
            image = await run_in_threadpool(load_image_bytes, bytes(data), stem, limits.max_pixels)
        except UserError as e:
            raise HTTPException(413 if isinstance(e, TooManyPixels) else 400, str(e)) from None
        if not 0 <= seed < 2 ** 63:
            raise HTTPException(400, f"seed {seed} must lie in [0, 2**63)")
        try:
            job = queue.submit(client, JobRequest(method, sampler, steps, temperature, seed), image, stem)
        except Refused as e:
            raise HTTPException(e.status, str(e)) from None
        return JSONResponse({"id": job.id, "width": image.size[0] * job.scale, "height": image.size[1] * job.scale},
                            status_code=202)

    @app.get("/api/jobs/{job_id}")
    def status(job_id: str, request: Request):
        job = job_of(job_id, request)
        return {"id": job.id, "status": job.status, "position": queue.position(job),
                "evaluations_done": job.evaluations_done, "evaluations_total": job.evaluations_total,
                "stage": job.stage, "step": job.step, "frame_seq": job.frame_seq, "error": job.error,
                "filename": f"{job.name}_x{job.scale}.png"}

    @app.get("/api/jobs/{job_id}/frame")
    def frame(job_id: str, request: Request):
        job = job_of(job_id, request)
        with job.lock:
            jpeg, seq = job.frame_jpeg, job.frame_seq
        if jpeg is None:
            raise HTTPException(404, "no frame yet")
        return Response(jpeg, media_type="image/jpeg", headers={"X-Frame-Seq": str(seq)})

    @app.get("/api/jobs/{job_id}/result")
    def result(job_id: str, request: Request):
        job = job_of(job_id, request)
        if job.result_png is None:
            raise HTTPException(409 if job.status in ACTIVE else 404, f"the job is {job.status}; no result")
        return Response(job.result_png, media_type="image/png",
                        headers={"Content-Disposition": f'attachment; filename="{job.name}_x{job.scale}.png"'})

    @app.post("/api/jobs/{job_id}/cancel")
    def cancel(job_id: str, request: Request):
        job = job_of(job_id, request)
        queue.cancel(job)
        return {"id": job.id, "status": job.status}

    return app


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 7860, log_level: str = "warning") -> None:
    """Run ``app`` with uvicorn until interrupted."""
    import uvicorn
    uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False, date_header=False)
