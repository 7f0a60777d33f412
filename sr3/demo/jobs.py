"""The demo's job queue: one worker thread, one job at a time, one active job per browser.

A job upscales one uploaded image with one method of the demo (an
:class:`sr3.methods.Upscaler`) and the sampler, steps and temperature the user chose.
While it runs, the sampling callback (:func:`sr3.sampling.sample`) keeps the latest
clean-image estimate x̂₀ as a JPEG (a downscaled view, :func:`sr3.frames.bounded_view`)
for the page to poll, and raises :class:`JobCancelled` between steps once the user
has cancelled, which unwinds the sampler and frees the worker for the next job.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import secrets
import threading
import time
from dataclasses import dataclass, field

import torch
from PIL import Image

from ..errors import UserError
from ..frames import MAX_FRAME_SIDE, bounded_view
from ..imageio import pil_to_tensor, tensor_to_pil
from ..methods import CascadeUpscaler, ModelUpscaler, Upscaler

QUEUED, RUNNING, DONE, CANCELLED, FAILED = "queued", "running", "done", "cancelled", "failed"
ACTIVE = (QUEUED, RUNNING)
FRAME_JPEG_QUALITY = 85


class JobCancelled(Exception):
    """Raised from the sampling callback when the user cancelled the running job."""


class Refused(Exception):
    """A job the queue will not take now; ``status`` is the HTTP status that says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class JobRequest:
    """What the user chose; None keeps the method's own setting."""

    method: str
    sampler: str | None = None
    steps: int | None = None
    temperature: float | None = None
    seed: int = 0


@dataclass
class Job:
    id: str
    client: str
    request: JobRequest
    name: str
    """The uploaded file's stem, for the download's file name."""
    lr: Image.Image
    scale: int
    status: str = QUEUED
    evaluations_done: int = 0
    evaluations_total: int = 0
    stage: int = 0
    step: int = 0
    frame_jpeg: bytes | None = None
    frame_seq: int = 0
    """Increases with every new frame, so the page asks only for frames it has not shown."""
    result_png: bytes | None = None
    error: str | None = None
    cancel_requested: bool = False
    finished_at: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def with_choices(upscaler: Upscaler, request: JobRequest) -> Upscaler:
    """``upscaler`` sampled with the request's sampler/steps/temperature (range-checked: UserError)."""
    changes = {k: v for k, v in (("sampler", request.sampler), ("steps", request.steps),
                                 ("temperature", request.temperature)) if v is not None}
    if not changes:
        return upscaler
    if isinstance(upscaler, ModelUpscaler):
        return upscaler.with_sampling(upscaler.name, **changes)
    if isinstance(upscaler, CascadeUpscaler):
        cascade = upscaler.cascade
        stages = tuple(dataclasses.replace(s, sampling=dataclasses.replace(s.sampling, **changes))
                       for s in cascade.config.stages)
        return CascadeUpscaler(cascade.with_config(dataclasses.replace(cascade.config, stages=stages)))
    return upscaler  # bicubic and other step-less methods have nothing to choose


class JobQueue:
    """Jobs of all browsers in arrival order, run one at a time on a worker thread.

    methods: name -> upscaler offered by the demo.
    max_queued: jobs waiting (not counting the running one) before new ones are refused (503).
    keep_finished: finished jobs whose results stay downloadable (oldest dropped first).
    """

    def __init__(self, methods: dict[str, Upscaler], max_queued: int = 8, keep_finished: int = 16,
                 frame_side: int = MAX_FRAME_SIDE):
        self.methods, self.max_queued = methods, max_queued
        self.keep_finished, self.frame_side = keep_finished, frame_side
        self.jobs: dict[str, Job] = {}
        self.waiting: collections.deque[Job] = collections.deque()
        self.condition = threading.Condition()
        self.stopping = False
        self.worker = threading.Thread(target=self._work, name="sr3-demo-worker", daemon=True)

    def start(self) -> None:
        self.worker.start()

    def stop(self) -> None:
        with self.condition:
            self.stopping = True
            for job in self.jobs.values():
                job.cancel_requested = True
            self.condition.notify_all()
        if self.worker.is_alive():
            self.worker.join(timeout=30)

    # ------------------------------------------------------------ requests
    def submit(self, client: str, request: JobRequest, lr: Image.Image, name: str) -> Job:
        if request.method not in self.methods:
            raise Refused(400, f"unknown method {request.method!r}; choose from {', '.join(self.methods)}")
        upscaler = self.methods[request.method]
        try:
            with_choices(upscaler, request)  # range checks now, so a bad choice is refused at once
        except UserError as e:
            raise Refused(400, str(e)) from None
        with self.condition:
            if any(j.client == client and j.status in ACTIVE for j in self.jobs.values()):
                raise Refused(409, "this browser already has a job queued or running; wait for it or cancel it")
            if len(self.waiting) >= self.max_queued:
                raise Refused(503, f"the queue is full ({self.max_queued} jobs waiting); try again later")
            job = Job(secrets.token_urlsafe(12), client, request, name, lr, upscaler.scale)
            self.jobs[job.id] = job
            self.waiting.append(job)
            self.condition.notify_all()
        return job

    def get(self, job_id: str, client: str) -> Job | None:
        """The job if it exists and belongs to ``client`` (others' jobs are not found)."""
        job = self.jobs.get(job_id)
        return job if job is not None and job.client == client else None

    def cancel(self, job: Job) -> None:
        with self.condition:
            if job.status == QUEUED:
                self.waiting.remove(job)
                self._finish(job, CANCELLED)
            elif job.status == RUNNING:
                job.cancel_requested = True  # the sampling callback raises JobCancelled at the next step

    def position(self, job: Job) -> int:
        """Jobs ahead of a queued job (the running one included); 0 when it runs or ran."""
        with self.condition:
            if job.status != QUEUED:
                return 0
            running = any(j.status == RUNNING for j in self.jobs.values())
            return self.waiting.index(job) + int(running)

    # ------------------------------------------------------------ worker
    def _work(self) -> None:
        while True:
            with self.condition:
                while not self.waiting and not self.stopping:
                    self.condition.wait()
                if self.stopping:
                    return
                job = self.waiting.popleft()
                job.status = RUNNING
            self._run(job)

    def _run(self, job: Job) -> None:
        def check_cancel() -> None:
            if job.cancel_requested:
                raise JobCancelled

        def progress() -> None:
            job.evaluations_done += 1
            check_cancel()

        def callback(info: dict) -> None:
            buf = io.BytesIO()
            bounded_view(info["image"][0], self.frame_side).save(buf, format="JPEG", quality=FRAME_JPEG_QUALITY)
            with job.lock:
                job.frame_jpeg, job.frame_seq = buf.getvalue(), job.frame_seq + 1
                job.stage, job.step = int(info.get("stage", 0)), int(info["i"]) + 1
            check_cancel()

        try:
            upscaler = with_choices(self.methods[job.request.method], job.request)
            lr = pil_to_tensor(job.lr)[None]
            job.evaluations_total = upscaler.count_evaluations(lr.shape[-2], lr.shape[-1])
            with torch.inference_mode():
                sr = upscaler(lr, [job.request.seed], [job.name], progress=progress, callback=callback)
            buf = io.BytesIO()
            tensor_to_pil(sr[0]).save(buf, format="PNG")
            job.result_png = buf.getvalue()
            status = DONE
        except JobCancelled:
            status = CANCELLED
        except Exception as e:  # noqa: BLE001 - whatever one job hits, the worker must go on to the next
            job.error = f"{type(e).__name__}: {e}" if not isinstance(e, UserError) else str(e)
            status = FAILED
        with self.condition:
            self._finish(job, status)

    def _finish(self, job: Job, status: str) -> None:
        """Mark ``job`` finished; forget the oldest finished jobs beyond ``keep_finished`` (caller holds the lock)."""
        job.status, job.finished_at, job.lr = status, time.monotonic(), None
        finished = sorted((j for j in self.jobs.values() if j.finished_at is not None), key=lambda j: j.finished_at)
        for old in finished[:max(0, len(finished) - self.keep_finished)]:
            del self.jobs[old.id]
