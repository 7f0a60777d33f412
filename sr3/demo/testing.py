"""A demo app served by uvicorn on a background thread, for the browser test and the docs screenshot.

Nothing here is needed to run the demo (``sr3 demo`` serves in the foreground).
"""

from __future__ import annotations

import threading
import time

import httpx
import uvicorn
from fastapi import FastAPI

from ..study.testing import free_port


class DemoServer:
    """``with DemoServer(app) as server: page.goto(server.url)``; stops the server (and its worker) on exit."""

    def __init__(self, app: FastAPI, startup_timeout: float = 30.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="sr3-demo-server", daemon=True)
        self.startup_timeout = startup_timeout

    def __enter__(self) -> "DemoServer":
        self.thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        self.__exit__()
        raise RuntimeError(f"demo server did not answer on {self.url} within {self.startup_timeout} s")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
