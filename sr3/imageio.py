"""Reading and writing images safely.

Every image that enters sr3 goes through :func:`load_image`, which turns the many
ways a file can be wrong (missing, empty, truncated, not an image, a decompression
bomb, a JPEG whose compressed data is garbage) into a one-line
:class:`~sr3.errors.UserError`, turns the pixels upright by their EXIF orientation, and
converts grey, RGBA, palette, CMYK and 16-bit images to 8-bit RGB with one warning that
says what was dropped (16-bit precision, transparency, a grey or CMYK ICC profile).  An RGB
image's ICC profile is kept in ``info["icc_profile"]`` for the writer.  Every image that leaves
goes through :func:`save_image`, which writes to a temporary file and renames it,
so an interrupted run never leaves a half-written output.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .atomic import atomic_write
from .errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")

# Largest image we agree to decode (pixels).  PIL's own guard is 89 M pixels with a
# warning only; we make it a hard, explained error.
MAX_PIXELS = 128 * 1024 * 1024


class TooManyPixels(UserError):
    """An image larger than the caller allows (e.g. an upload to the demo)."""


class ImageConversionWarning(UserWarning):
    """An input image was not 8-bit RGB and was converted."""


def list_images(inputs: list[str | Path] | str | Path) -> list[Path]:
    """Expand files and folders into a sorted list of image paths.

    Folders are searched recursively for the extensions in ``IMAGE_EXTENSIONS``;
    files given explicitly are kept whatever their extension (so a bad file is
    reported, not silently skipped).
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_EXTENSIONS and q.is_file())
        elif p.exists():
            paths.append(p)
        else:
            raise UserError(f"{p}: no such file or folder; check the path")
    return paths


def load_image(path: str | Path) -> Image.Image:
    """Open ``path`` as an upright 8-bit RGB PIL image, or raise a one-line UserError."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, expected an image file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: file is empty (0 bytes); re-export or remove it")
    return _decode(path, path)


def load_image_bytes(data: bytes, name: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode an encoded image held in memory (a tar shard's member, a demo upload) like :func:`load_image`.

    name: how the one-line UserError calls the image.
    max_pixels: refuse larger images (TooManyPixels) from the header's size, before any pixel is decoded.
    """
    if not data:
        raise UserError(f"{name}: file is empty (0 bytes); re-export or remove it")
    return _decode(io.BytesIO(data), Path(name), max_pixels)


def _decode(source, path: Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open and fully decode ``source`` (a path or file object) into 8-bit RGB; errors name ``path``."""
    old_limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                if img.size[0] * img.size[1] > max_pixels:
                    raise TooManyPixels(f"{path}: {img.size[0]}x{img.size[1]} px is more than the {max_pixels} "
                                        "pixels allowed; downscale it first")
                if img.format == "JPEG":
                    check_jpeg_data(source.getvalue() if isinstance(source, io.BytesIO) else path.read_bytes(), path)
                sixteen_bit = any(";16" in str(tile.args) for tile in img.tile)  # 48-bit PNG opens as "RGB"
                img.load()
                return _to_rgb(_upright(img, path), path, sixteen_bit)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(
            f"{path}: image is larger than {MAX_PIXELS // 2**20} M pixels (possible decompression bomb); "
            "downscale it first") from None
    except UnidentifiedImageError:
        raise UserError(f"{path}: not a readable image (supported: png, jpg, webp, tiff, bmp)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise UserError(f"{path}: corrupt or truncated image ({e}); re-export or remove it") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit


# In a JPEG's entropy-coded data a 0xFF byte is followed by 0x00 (a stuffed 0xFF), a restart
# marker 0xD0-0xD7 or more 0xFF fill bytes; anything else ends the scan with a marker.  Markers
# that may follow a scan: EOI, SOS (progressive), DHT, DQT, DRI, DNL, COM, APPn.
_SCAN_END = re.compile(rb"\xff(?![\x00\xd0-\xd7\xff])")
_AFTER_SCAN = {0xD9, 0xDA, 0xC4, 0xDB, 0xDD, 0xDC, 0xFE, *range(0xE0, 0xF0)}


def check_jpeg_data(data: bytes, path: Path) -> None:
    """Raise UserError when the compressed data of a JPEG is not made of valid segments.

    libjpeg decodes garbage scan data to 8x8 blocks of noise and only warns ("Corrupt JPEG
    data"), and Pillow discards those warnings, so a file with an intact header and damaged
    data would be upscaled and scored as if it were a photo.  Damage that happens to contain no
    0xFF byte (a few bytes of a large file) still gets through: this is a structural check,
    not a decoder.  Bytes after the end-of-image marker (some cameras append data) are ignored.
    """
    def corrupt(detail: str) -> UserError:
        return UserError(f"{path}: corrupt JPEG data ({detail}); the image would decode to garbage, "
                         "re-export or remove it")
    pos = 2  # after SOI, which Pillow has checked
    while pos < len(data):
        if data[pos] != 0xFF:
            raise corrupt(f"expected a marker at byte {pos}")
        while pos < len(data) and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= len(data):
            break
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # EOI
            return
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # stand-alone markers
            continue
        if pos + 2 > len(data):
            break
        (length,) = struct.unpack(">H", data[pos:pos + 2])
        if length < 2:
            raise corrupt(f"segment 0xFF{marker:02X} at byte {pos - 2} has length {length}")
        if pos + length > len(data):
            raise corrupt(f"segment 0xFF{marker:02X} at byte {pos - 2} runs past the end of the file")
        pos += length
        if marker == 0xDA:  # SOS: entropy-coded data runs to the next real marker
            end = _SCAN_END.search(data, pos)
            if end is None:
                raise corrupt("the compressed data has no end: the file is truncated")
            following = data[end.end()] if end.end() < len(data) else None
            if following is not None and following not in _AFTER_SCAN:
                raise corrupt(f"invalid marker 0xFF{following:02X} inside the compressed data at byte {end.start()}")
            pos = end.start()
    raise corrupt("no end-of-image marker: the file is truncated")


def _upright(img: Image.Image, path: Path) -> Image.Image:
    """The pixels as the camera meant them to be seen (EXIF orientation, e.g. a phone held upright)."""
    try:
        return ImageOps.exif_transpose(img)
    except (OSError, SyntaxError, ValueError, KeyError, TypeError, struct.error):
        warnings.warn(f"{path}: unreadable EXIF data; orientation not applied", ImageConversionWarning, stacklevel=4)
        return img


def _to_rgb(img: Image.Image, path: Path, sixteen_bit: bool = False) -> Image.Image:
    dropped = []
    if sixteen_bit or img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        dropped.append("16-bit precision (kept 8 bits)")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        dropped.append("transparency (composited on white)")
    profile = img.info.get("icc_profile")
    # An RGB profile stays with the pixels (``info["icc_profile"]``; sr3 upscale writes it into the output),
    # a grey or CMYK one cannot describe the RGB result.
    keep_profile = bool(profile) and img.mode in ("RGB", "RGBA", "P")
    if profile and not keep_profile:
        dropped.append("ICC colour profile")
    original = img.mode
    if img.mode == "RGB":
        out = img.copy()
    elif img.mode in ("I;16", "I;16B", "I;16L", "I", "I;16N"):
        # 16-bit grey: PIL's convert("RGB") clips at 255, so scale explicitly.
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 or img.mode.startswith("I;16") else 255.0
        arr = np.clip(np.round(arr / peak * 255.0), 0, 255).astype(np.uint8)
        out = Image.fromarray(arr, mode="L").convert("RGB")
    elif has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        out = Image.alpha_composite(background, rgba).convert("RGB")
    else:
        out = img.convert("RGB")
    out.info = {"icc_profile": profile} if keep_profile else {}
    if original != "RGB" or dropped:
        what = f"converted {original} image to 8-bit RGB" if original != "RGB" else "read as 8-bit RGB"
        warnings.warn(f"{path}: {what}" + (f"; dropped: {', '.join(dropped)}" if dropped else ""),
                      ImageConversionWarning, stacklevel=3)
    return out


def save_image(img: Image.Image, path: str | Path, **save_kwargs) -> Path:
    """Write ``img`` atomically: to a temporary file in the same folder, then rename.

    The format follows the file extension.  Raises UserError if the folder cannot
    be created or written.
    """
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    if fmt == "JPEG":
        save_kwargs.setdefault("quality", 95)
    try:
        atomic_write(path, lambda f: img.save(f, format=fmt, **save_kwargs))
    except OSError as e:
        where = path.parent if not path.parent.is_dir() else path
        raise UserError(f"{where}: cannot write output ({e.strerror or e}); choose another --out") from None
    return path


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> float tensor [3, H, W] in [-1, 1] (the model's range)."""
    arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())
    return arr.permute(2, 0, 1).float().div(127.5).sub(1.0)


def tensor_to_pil(x: torch.Tensor) -> Image.Image:
    """Float tensor [3, H, W] in [-1, 1] -> PIL RGB (rounded, clipped)."""
    arr = x.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return Image.fromarray(arr.permute(1, 2, 0).cpu().numpy(), mode="RGB")
