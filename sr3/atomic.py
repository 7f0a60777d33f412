"""The one atomic writer: every artefact (image, JSON, safetensors) goes to a temporary
file in the destination folder and is renamed into place, so a crash, a full disk or
Ctrl-C never leaves a torn file under the final name."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def default_file_mode() -> int:
    """0666 minus the umask: what open() would give.  mkstemp files are 0600, which would
    leave reports and outputs unreadable to anyone but their owner."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Create ``path``'s folder, call ``write(f)`` on a temporary file beside it, then rename.

    OSError (folder not creatable, disk full, ...) propagates after the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, default_file_mode())
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(x):
    """``x`` with every non-finite float (NaN, inf) replaced by None, so it serialises as strict JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def json_line(content) -> str:
    """One line of strict JSON (non-finite numbers as null), e.g. for a JSONL log."""
    return json.dumps(json_safe(content), allow_nan=False)


def write_json(path: str | Path, content) -> None:
    """Strict JSON (non-finite numbers as null, never a bare ``NaN``), written atomically."""
    atomic_write_text(path, json.dumps(json_safe(content), indent=2, allow_nan=False) + "\n")
