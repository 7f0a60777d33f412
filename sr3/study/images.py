"""How the study's images are encoded: once at create time, and again for each rater session.

At create time every image is decoded to 8-bit RGB (which drops EXIF, ICC
profiles, text chunks and the file name) and written as uncompressed PNG
(:func:`encode_png`).  Uncompressed PNG of a given size has
a byte length fixed by its dimensions alone, so the two images of a trial are
identical in format, size, encoder settings *and* length: the network panel
cannot hint that a blurrier image (which would compress better) is the model's.

At serve time every image, the real photo and the method's output alike, goes
out as a *session copy* (:func:`session_copy`): the stored pixels plus
independent noise of -1, 0 or +1 grey level per value, re-encoded the same way.
The noise is keyed by a secret stored in the study database and by the rater
session and image id, so a rater's page shows the same copy on reload, while no
two sessions and no two served images share bytes or pixels.  Without it the
real photo was the one image a rater could find byte-identical elsewhere (in a
catch trial, or in a second session next to another method's output).  One grey
level is below what a viewer can see on 8-bit displays, and it is applied to
both images of a pair alike.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import secrets
import struct
import zlib

import numpy as np
from PIL import Image

SERVE_KEY_BYTES = 32
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def encode_png(img: Image.Image) -> bytes:
    """Canonical encoding for every stored and served image (see module docstring).

    8-bit RGB, no filtering, one IDAT chunk of stored (uncompressed) deflate
    blocks, and nothing but IHDR, IDAT and IEND: what Pillow writes with
    ``compress_level=0``, without its per-row filter search, which makes
    Pillow several times slower (``benchmarks/study_image_speed.py``); the
    server encodes every image it serves.
    """
    pixels = np.asarray(img.convert("RGB"), dtype=np.uint8)  # no .info carried over
    height, width, _ = pixels.shape
    rows = np.zeros((height, 1 + 3 * width), dtype=np.uint8)  # each row: filter type 0, then RGB
    rows[:, 1:] = pixels.reshape(height, 3 * width)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit, truecolour, no interlace
    return (PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 0))
            + _chunk(b"IEND", b""))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def new_serve_key() -> bytes:
    """The secret behind the session copies; made once per study, never sent to a rater."""
    return secrets.token_bytes(SERVE_KEY_BYTES)


def session_copy(png: bytes, key: bytes, session: str, image_id: str) -> bytes:
    """The copy of the stored image ``png`` that rater session ``session`` is served as ``image_id``."""
    digest = hmac.new(key, f"{session}\0{image_id}".encode(), hashlib.sha256).digest()
    rng = np.random.default_rng(int.from_bytes(digest, "big"))
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    noisy = np.clip(pixels + rng.integers(-1, 2, pixels.shape, dtype=np.int16), 0, 255).astype(np.uint8)
    return encode_png(Image.fromarray(noisy, mode="RGB"))
