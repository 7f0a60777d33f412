"""External methods for ``sr3 evaluate --methods NAME=DIR``: outputs another tool already made.

Any upscaler can be compared on the same images and metrics: run it on the LR inputs
(``sr3 evaluate`` saves them under ``OUT/images/lr``; ``benchmarks/peers.py`` makes the
same ones), put its outputs in a folder, and name the folder.  Outputs are matched to
HR images by relative path without extension (``a/b.png`` matches ``a/b.jpg``), so file
formats may differ; an image without an output is skipped with a warning.
"""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image

from .errors import UserError
from .imageio import list_images, load_image

NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_.+-]*")


def parse_spec(spec: str, reserved: tuple[str, ...] = ()) -> tuple[str, Path]:
    """``"NAME=DIR"`` -> (name, folder); the name must be a plain word not in ``reserved``."""
    name, _, folder = spec.partition("=")
    name, folder = name.strip(), folder.strip()
    if not NAME_PATTERN.fullmatch(name) or name in reserved or not folder:
        raise UserError(f"--methods {spec}: an external method is NAME=DIR with NAME a word (letters, digits, _.+-) "
                        f"other than {', '.join(reserved)}")
    path = Path(folder)
    if not path.is_dir():
        raise UserError(f"{path}: no such folder of outputs for --methods {name}=DIR; check the path")
    return name, path


class ExternalOutputs:
    """The output images in ``folder``, looked up by an HR image's key (its path relative to --data)."""

    def __init__(self, name: str, folder: Path):
        self.name = name
        self.folder = folder
        files = list_images(folder)
        if not files:
            raise UserError(f"{folder}: no images for --methods {name}={folder}; check the folder")
        self.by_stem = {p.relative_to(folder).with_suffix("").as_posix(): p for p in files}

    def __call__(self, key: str) -> Image.Image:
        stem = Path(key).with_suffix("").as_posix()
        path = self.by_stem.get(stem) or self.by_stem.get(stem.replace("/", "__"))
        if path is None:
            raise UserError(f"{self.folder}: no output named {stem}.* for {key}; name outputs after the HR files")
        return load_image(path)
