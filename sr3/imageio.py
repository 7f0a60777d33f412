"""Reading and writing images safely.

Every image that enters sr3 goes through :func:`load_image`, which turns the many
ways a file can be wrong (missing, empty, truncated, not an image, a decompression
bomb) into a one-line :class:`~sr3.errors.UserError`, and converts grey, RGBA,
palette and 16-bit images to 8-bit RGB with a warning.  Every image that leaves
goes through :func:`save_image`, which writes to a temporary file and renames it,
so an interrupted run never leaves a half-written output.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .atomic import atomic_write, atomic_write_bytes, atomic_write_text  # noqa: F401 (re-exported)
from .errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")

# Largest image we agree to decode (pixels).  PIL's own guard is 89 M pixels with a
# warning only; we make it a hard, explained error.
MAX_PIXELS = 128 * 1024 * 1024


class TooManyPixels(UserError):
    """An image larger than the caller allows (:func:`decode_image`'s ``max_pixels``)."""


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
    """Open ``path`` as an 8-bit RGB PIL image, or raise a one-line UserError."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, expected an image file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: file is empty (0 bytes); re-export or remove it")
    return _decode(path, str(path))


def decode_image(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode uploaded bytes as an 8-bit RGB PIL image with the checks of :func:`load_image`.

    name: how the error messages call the image (e.g. the uploaded file name).
    max_pixels: refuse larger images before their pixels are decoded (from the header's size).
    """
    if not data:
        raise UserError(f"{name}: file is empty (0 bytes)")
    return _decode(io.BytesIO(data), name, max_pixels)


def _decode(source, name: str, max_pixels: int = MAX_PIXELS) -> Image.Image:
    old_limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                if img.size[0] * img.size[1] > max_pixels:
                    raise TooManyPixels(f"{name}: {img.size[0]}x{img.size[1]} px is more than the {max_pixels} pixels "
                                    "allowed; downscale it first")
                img.load()
                return _to_rgb(img, name)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(
            f"{name}: image is larger than {MAX_PIXELS // 2**20} M pixels (possible decompression bomb); "
            "downscale it first") from None
    except UnidentifiedImageError:
        raise UserError(f"{name}: not a readable image (supported: png, jpg, webp, tiff, bmp)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise UserError(f"{name}: corrupt or truncated image ({e}); re-export or remove it") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit


def _to_rgb(img: Image.Image, path: Path | str) -> Image.Image:
    if img.mode == "RGB":
        return img.copy()
    original = img.mode
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "I;16N"):
        # 16-bit grey: PIL's convert("RGB") clips at 255, so scale explicitly.
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 or img.mode.startswith("I;16") else 255.0
        arr = np.clip(np.round(arr / peak * 255.0), 0, 255).astype(np.uint8)
        out = Image.fromarray(arr, mode="L").convert("RGB")
    elif img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        out = Image.alpha_composite(background, rgba).convert("RGB")
    else:
        out = img.convert("RGB")
    warnings.warn(f"{path}: converted {original} image to RGB", ImageConversionWarning, stacklevel=3)
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
