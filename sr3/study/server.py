"""``sr3 study serve``: the rater web app (FastAPI) and its admin endpoints.

What the browser can learn is deliberately nothing about the answer: the page
and script are static files with no labels; a trial is an opaque random id and
three opaque image URLs; both images of a pair are byte-for-byte the same length
with the same headers, and every image is a per-session copy that shares no
bytes with anything served before (see :mod:`.images`).  Method names, file
names and which side is real never leave the server except through the
token-protected admin export.  New anonymous raters are limited per client
(:mod:`.ratelimit`).

Reliability: each answer is one short write transaction (SQLite WAL,
``synchronous=FULL``), acknowledged only after commit, keyed by its trial id so
a re-sent answer is recognised and not counted twice.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import secrets
import time
import warnings
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from ..web import check_bindable, is_loopback, security_headers
from . import design
from .config import MAX_RATERS_PER_CLIENT, QUESTIONS, check_integer
from .db import RESPONSE_COLUMNS, StudyDB, load_raters, load_responses
from .images import new_serve_key, session_copy
from .ratelimit import ClientRateLimit, client_key

COOKIE = "sr3_rater"
COOKIE_MAX_AGE = 60 * 24 * 3600  # a rater may come back within two months
ID_PATTERN = r"[A-Za-z0-9_-]{16,64}"
_ID = re.compile(ID_PATTERN)
MAX_BODY_BYTES = 4096  # an answer is ~100 bytes

STATIC_FILES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}

SECURITY_HEADERS = security_headers()


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    trial: str = Field(pattern=f"^{ID_PATTERN}$")
    choice: Literal["left", "right"]
    # strict: a JSON integer only (no true, 1.5, NaN or Infinity coerced into one)
    rt_ms: int = Field(ge=0, le=24 * 3600 * 1000, strict=True)


class Consent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    consent: Literal[True]


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class BodyLimit:
    """Pure ASGI middleware: refuse request bodies over ``limit`` bytes with 413.

    Reads the (small) body itself, so a client that lies in Content-Length or
    streams chunks without one cannot make the app buffer megabytes.
    """

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self._too_large(send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await self._too_large(send)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _too_large(self, send):
        payload = json.dumps({"detail": f"request body larger than {self.limit} bytes"}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def _static_text(name: str) -> str:
    return resources.files("sr3.study").joinpath("static", name).read_text(encoding="utf-8")


def create_app(db_path: str | Path, admin_token: str | None = None, *,
               max_body_bytes: int = MAX_BODY_BYTES, max_raters: int | None = None,
               raters_per_client: int | None = None, secure_cookie: bool = False) -> FastAPI:
    """The rater app for the study at ``db_path``; admin endpoints need ``admin_token``.

    ``max_raters``: None (no cap) or an integer >= 0 (0 admits no new rater,
    e.g. to let the current ones finish).  ``raters_per_client``: None (the
    study's setting) or an integer in [0, 1e6] that replaces it for this run
    (0 = no limit), e.g. when raters turn out to share one address.
    """
    if max_raters is not None:
        check_integer("--max-raters", max_raters, 0, None, "0 = admit no new rater")
    if raters_per_client is not None:
        check_integer("--raters-per-client", raters_per_client, 0, MAX_RATERS_PER_CLIENT, "0 = no limit")
    db = StudyDB(db_path)
    db.enable_wal()
    config = db.config()
    # Studies made before session copies have no stored key: one per server run is as good.
    serve_key = db.serve_key() or new_serve_key()
    new_raters = ClientRateLimit(config.raters_per_client if raters_per_client is None else raters_per_client,
                                 config.rater_window_seconds)
    display_ms = int(round(config.display_seconds * 1000))
    index_html = _static_text("index.html")
    static = {name: _static_text(name) for name in STATIC_FILES}

    # Trials and image aliases never change after create: load the small index once.
    with db.read() as tx:
        trial_rows = tx.all("SELECT id, task, kind, image_name, pool_index, left_image, right_image, "
                            "middle_image FROM trials ORDER BY pool_index")
    pools: dict[tuple[str, str], list[tuple[str, str]]] = {}
    image_trial: dict[str, str] = {}
    for tid, task, kind, name, _, left, right, middle in trial_rows:
        pools.setdefault((task, kind), []).append((tid, name))
        for image_id in (left, right, middle):
            if image_id:
                image_trial[image_id] = tid

    @asynccontextmanager
    async def lifespan(_app):
        yield
        db.close()

    app = FastAPI(title="sr3 study", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.db = db
    app.add_middleware(BodyLimit, limit=max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError):
        # FastAPI's default echoes the input, and an input of NaN or Infinity (which
        # Python's JSON parser accepts) then fails to serialise: a 500 instead of 422.
        detail = [{"loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg", "")),
                   "type": str(e.get("type", ""))} for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    # -- helpers -------------------------------------------------------------
    def rater_of(request: Request) -> tuple[str, str] | None:
        token = request.cookies.get(COOKIE)
        if not token or not _ID.fullmatch(token):
            return None
        with db.read() as tx:
            row = tx.one("SELECT id, task FROM raters WHERE token_hash = ?", (_hash(token),))
        return None if row is None else (row[0], row[1])

    def require_rater(request: Request) -> tuple[str, str]:
        rater = rater_of(request)
        if rater is None:
            raise HTTPException(401, "no rater session; open the study page and give consent first")
        return rater

    def state_of(rater: tuple[str, str] | None, token: str | None = None) -> dict:
        if rater is None:
            return {"registered": False, "consent": config.consent_text}
        rater_id, task = rater
        with db.read() as tx:
            total = tx.scalar("SELECT COUNT(*) FROM assignments WHERE rater_id = ?", (rater_id,))
            answered = tx.scalar("SELECT COUNT(*) FROM responses WHERE rater_id = ?", (rater_id,))
            nxt = tx.one(
                "SELECT a.id, t.left_image, t.right_image, t.middle_image FROM assignments a "
                "JOIN trials t ON t.id = a.trial_id "
                "LEFT JOIN responses s ON s.assignment_id = a.id "
                "WHERE a.rater_id = ? AND s.assignment_id IS NULL ORDER BY a.position LIMIT 1", (rater_id,))
        state = {"registered": True, "question": QUESTIONS[task], "display_ms": display_ms,
                 "answered": answered, "total": total, "done": nxt is None, "trial": None}
        if token:
            state["resume"] = f"/resume/{token}"
        if nxt is not None:
            state["trial"] = {"id": nxt[0], "left": f"/img/{nxt[1]}", "right": f"/img/{nxt[2]}",
                              "middle": f"/img/{nxt[3]}" if nxt[3] else None}
        return state

    def json_state(request: Request, rater) -> dict:
        token = request.cookies.get(COOKIE) if rater else None
        return state_of(rater, token)

    def set_cookie(response: Response, token: str) -> None:
        response.set_cookie(COOKIE, token, max_age=COOKIE_MAX_AGE, httponly=True, samesite="strict",
                            secure=secure_cookie, path="/")

    def require_admin(request: Request) -> None:
        if not admin_token:
            raise HTTPException(404, "admin endpoints are disabled; start the server with --admin-token")
        given = request.headers.get("authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {admin_token}".encode()):
            raise HTTPException(401, "admin token missing or wrong; send 'Authorization: Bearer TOKEN'",
                                headers={"WWW-Authenticate": "Bearer"})

    # -- rater pages -----------------------------------------------------------
    @app.get("/", response_class=HTMLResponse)
    def index():
        return HTMLResponse(index_html)

    @app.get("/static/{name}")
    def static_file(name: str):
        if name not in static:  # a fixed list: nothing else on disk is reachable
            raise HTTPException(404, "no such file")
        return Response(static[name], media_type=STATIC_FILES[name])

    @app.get("/healthz")
    def healthz():
        return {"ok": True}

    @app.get("/resume/{token}")
    def resume(token: str):
        if _ID.fullmatch(token):
            with db.read() as tx:
                found = tx.scalar("SELECT id FROM raters WHERE token_hash = ?", (_hash(token),))
            if found:
                response = RedirectResponse("/", status_code=303)
                set_cookie(response, token)
                return response
        raise HTTPException(404, "unknown resume link; check that it was copied completely")

    @app.get("/api/state")
    def api_state(request: Request):
        return json_state(request, rater_of(request))

    @app.post("/api/consent")
    def api_consent(body: Consent, request: Request):
        rater = rater_of(request)
        if rater is not None:  # already registered (second tab, double click): keep the same rater
            return json_state(request, rater)
        wait = new_raters.acquire(client_key(request.client.host if request.client else None))
        if wait is not None:
            raise HTTPException(429, "too many new rater sessions from your network; try again in "
                                f"{math.ceil(wait / 60)} minute(s), or continue with your resume link",
                                headers={"Retry-After": str(math.ceil(wait))})
        token = secrets.token_urlsafe(24)
        rater_id = secrets.token_urlsafe(12)
        with db.write() as tx:
            tx.serialize("raters")
            k = tx.scalar("SELECT COALESCE(MAX(idx) + 1, 0) FROM raters")
            if max_raters is not None and k >= max_raters:
                raise HTTPException(403, "this study has all the raters it needs; thank you for your interest")
            task = design.rater_task(config, k)
            sequence = design.rater_sequence(config, k, pools.get((task, design.KIND_METHOD), []),
                                             pools.get((task, design.KIND_CATCH), []), image_of=lambda t: t[1])
            tx.run("INSERT INTO raters (id, token_hash, idx, task, created_at) VALUES (?, ?, ?, ?, ?)",
                   (rater_id, _hash(token), k, task, time.time()))
            tx.many("INSERT INTO assignments (id, rater_id, position, trial_id) VALUES (?, ?, ?, ?)",
                    [(secrets.token_urlsafe(16), rater_id, pos, trial[0]) for pos, trial in enumerate(sequence)])
        response = JSONResponse(state_of((rater_id, task), token))
        set_cookie(response, token)
        return response

    @app.post("/api/answer")
    def api_answer(body: Answer, request: Request):
        rater = require_rater(request)
        with db.write() as tx:
            tx.serialize(f"rater:{rater[0]}")
            row = tx.one("SELECT rater_id, position FROM assignments WHERE id = ?", (body.trial,))
            if row is None:
                raise HTTPException(404, "unknown trial id")
            if row[0] != rater[0]:
                raise HTTPException(403, "this trial belongs to another rater")
            previous = tx.scalar("SELECT choice FROM responses WHERE assignment_id = ?", (body.trial,))
            if previous is not None:
                if previous != body.choice:
                    raise HTTPException(409, "this trial was already answered; answers cannot be changed")
                status = "duplicate"  # a re-sent answer (e.g. retry after a lost reply): not counted again
            else:
                current = tx.scalar(
                    "SELECT MIN(a.position) FROM assignments a LEFT JOIN responses s ON s.assignment_id = a.id "
                    "WHERE a.rater_id = ? AND s.assignment_id IS NULL", (rater[0],))
                if row[1] != current:
                    raise HTTPException(409, "not the current trial; trials are answered in order")
                tx.run("INSERT INTO responses (assignment_id, rater_id, choice, rt_ms, answered_at) "
                       "VALUES (?, ?, ?, ?, ?)", (body.trial, rater[0], body.choice, body.rt_ms, time.time()))
                status = "recorded"
        return {"status": status, "state": json_state(request, rater)}

    @app.get("/img/{image_id}")
    def image(image_id: str, request: Request):
        # Opaque ids only; anything else (../, encoded slashes, file names) is simply not found.
        trial_id = image_trial.get(image_id) if _ID.fullmatch(image_id) else None
        if trial_id is None:
            raise HTTPException(404, "no such image")
        rater = require_rater(request)
        with db.read() as tx:
            mine = tx.scalar("SELECT 1 FROM assignments WHERE rater_id = ? AND trial_id = ?", (rater[0], trial_id))
            data = tx.scalar("SELECT b.data FROM images i JOIN blobs b ON b.id = i.blob_id WHERE i.id = ?",
                             (image_id,)) if mine else None
        if data is None:
            raise HTTPException(404, "no such image")
        return Response(session_copy(bytes(data), serve_key, rater[0], image_id), media_type="image/png")

    # -- admin -----------------------------------------------------------------
    @app.get("/admin/status")
    def admin_status(request: Request):
        require_admin(request)
        with db.read() as tx:
            raters = load_raters(tx)
            counts = tx.all("SELECT t.task, t.kind, t.method, COUNT(*) FROM responses s "
                            "JOIN assignments a ON a.id = s.assignment_id JOIN trials t ON t.id = a.trial_id "
                            "GROUP BY t.task, t.kind, t.method ORDER BY t.task, t.kind, t.method")
            last = tx.scalar("SELECT MAX(answered_at) FROM responses")
        return {"raters": len(raters), "raters_done": sum(r["answered"] == r["assigned"] for r in raters),
                "answers": sum(r["answered"] for r in raters), "last_answer_at": last,
                "answers_by": [{"task": t, "kind": k, "method": m, "answers": n} for t, k, m, n in counts],
                "config": json.loads(config.to_json())}

    @app.get("/admin/export")
    def admin_export(request: Request, format: Literal["json", "csv"] = "json"):
        require_admin(request)
        with db.read() as tx:
            rows = load_responses(tx)
        if format == "json":
            return rows
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=RESPONSE_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return Response(buf.getvalue(), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="responses.csv"'})

    return app


def serve(db_path: str | Path, host: str = "127.0.0.1", port: int = 8000, admin_token: str | None = None,
          max_raters: int | None = None, raters_per_client: int | None = None, log_level: str = "warning",
          show_token: bool = False) -> None:
    """Run the study with uvicorn until interrupted.

    uvicorn's access log stays off (``log_level="warning"``): it would record
    resume links, which are the raters' secrets.
    """
    import uvicorn
    if not is_loopback(host):
        warnings.warn(f"--host {host}: the study is reachable from the network; put it behind HTTPS "
                      "(a reverse proxy) so rater cookies and the admin token are not sent in clear text")
    app = create_app(db_path, admin_token, max_raters=max_raters, raters_per_client=raters_per_client,
                     secure_cookie=False)
    check_bindable(host, port)
    if show_token:
        print(f"admin token (generated): {admin_token}")
    print(f"serving {db_path} on http://{host}:{port}/  (admin: GET /admin/status, /admin/export with "
          "'Authorization: Bearer TOKEN'; Ctrl+C stops)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False, date_header=False)
