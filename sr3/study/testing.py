"""Helpers for the study's tests and docs scripts: tiny image folders and a real server process.

Kept in the package (not in tests/) so the docs script and every test file use
the same code.  Nothing here is needed to run a study.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image


def make_folders(root: str | Path, methods: list[str], n_images: int = 4, size: int = 16,
                 seed: int = 0, prefix: str = "img") -> dict[str, Path]:
    """Write ``n_images`` random references and one slightly different output per method.

    Returns ``{"reference": dir, method: dir, ...}``; file names are ``{prefix}{i}.png``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    dirs = {"reference": root / "reference", **{m: root / m for m in methods}}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    for i in range(n_images):
        ref = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(ref).save(dirs["reference"] / f"{prefix}{i}.png")
        for k, m in enumerate(methods):
            noisy = np.clip(ref.astype(int) + rng.integers(-20 - 10 * k, 21 + 10 * k, ref.shape), 0, 255)
            Image.fromarray(noisy.astype(np.uint8)).save(dirs[m] / f"{prefix}{i}.png")
    return dirs


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Starting through `sr3 study serve` imports every sub-command (torch included);
# this shorter entry point starts the same server in about a second.
_SERVE_CODE = ("import sys; from sr3.study.server import serve; "
               "serve(sys.argv[1], port=int(sys.argv[2]), admin_token=sys.argv[3])")


class ServerProcess:
    """``sr3 study serve`` in a child process on a free loopback port.

    ``with ServerProcess(db) as server: httpx.get(server.url + "/healthz")``.
    ``cli=True`` starts it through the real ``sr3`` command line.
    """

    def __init__(self, db_path: str | Path, admin_token: str = "test-admin-token", *, cli: bool = False,
                 port: int | None = None, startup_timeout: float = 60.0):
        self.db_path, self.admin_token, self.cli = str(db_path), admin_token, cli
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ServerProcess":
        if self.cli:
            cmd = [sys.executable, "-m", "sr3", "study", "serve", self.db_path, "--port", str(self.port),
                   "--admin-token", self.admin_token]
        else:
            cmd = [sys.executable, "-c", _SERVE_CODE, self.db_path, str(self.port), self.admin_token]
        # A file, not a pipe: a pipe nobody reads could fill up and block the server.
        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"study server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"study server did not answer on {self.url} within {self.startup_timeout} s")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, as in a crash or power cut of the process."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        """What the server printed so far."""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
