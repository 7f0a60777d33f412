"""Refinement frames: the current clean-image estimate x̂₀ at every sampling step, as files.

SR3 (Saharia et al. 2021, Fig. 1 and the refinement chains of its figures) shows an
image emerging from noise step by step.  :class:`FrameRecorder` is a sampling
``callback`` (:func:`sr3.sampling.sample`, :class:`sr3.cascade.Cascade`) that writes,
for each image of the batch, into its own folder:

    stage{S}_step{III}.png         x̂₀ after step III of stage S (stage 0 for a single model)
    stage{S}_step{III}_noisy.png   the sampler's noisy state x_t (only with ``noisy=True``)
    refinement.gif                 every x̂₀ frame in order, all stages, looping

Frames are a *downscaled view*: the whole image, resized (Lanczos) so that its longest
side is at most ``max_side`` pixels (512 by default); an image already that small is kept
at its own size.  A 4096x4096 cascade output thus costs 512x512 frames, not 48 MB each.
The GIF's frames all take the size of the last frame (earlier, smaller cascade stages are
enlarged with nearest-neighbour so their coarser pixels stay visible).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from PIL import Image

from .atomic import atomic_write
from .errors import UserError
from .imageio import pil_to_tensor, save_image, tensor_to_pil

MAX_FRAME_SIDE = 512
"""Longest side (px) of a saved frame: larger images are shown downscaled, whole."""
ANIMATION_NAME = "refinement.gif"
FRAME_MS = 100
"""Display time of one animation frame (ms); the last frame is held ``HOLD_LAST`` times longer."""
HOLD_LAST = 15


def bounded_view(image: torch.Tensor, max_side: int = MAX_FRAME_SIDE) -> Image.Image:
    """[3, H, W] in [-1, 1] -> PIL RGB, downscaled (Lanczos) so the longest side is <= ``max_side``."""
    img = tensor_to_pil(image)
    w, h = img.size
    if max(w, h) <= max_side:
        return img
    ratio = max_side / max(w, h)
    return img.resize((max(1, round(w * ratio)), max(1, round(h * ratio))), Image.LANCZOS)


def frame_name(stage: int, step: int, noisy: bool = False) -> str:
    return f"stage{stage}_step{step:03d}{'_noisy' if noisy else ''}.png"


def frame_folders(root: Path, inputs: Iterable[Path]) -> dict[Path, Path]:
    """One frame folder per input, named after its file stem (``photo`` , then ``photo_2`` for a
    second ``photo.*``); refuses folders that already hold files, so no earlier frames are overwritten."""
    folders: dict[Path, Path] = {}
    used: set[str] = set()
    for src in inputs:
        name, k = src.stem, 1
        while name in used:
            k += 1
            name = f"{src.stem}_{k}"
        used.add(name)
        folder = Path(root) / name
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise UserError(f"{folder}: already exists and is not empty; choose another --save-steps folder")
        folders[src] = folder
    return folders


class FrameRecorder:
    """A sampling callback writing each image's refinement frames into its own folder.

    folders: one per image of the batch, in batch order.
    noisy: also write the sampler's noisy state x_t (diffusion space, clipped to [-1, 1];
        for a residual model it is the noisy residual, not an image).
    max_side: longest side of a frame in px (>= 16); see the module docstring.
    Call :meth:`finish` after sampling to write the animations.
    """

    def __init__(self, folders: list[Path], *, noisy: bool = False, max_side: int = MAX_FRAME_SIDE):
        if max_side < 16:
            raise UserError(f"frame size {max_side} px is too small; use at least 16")
        self.folders, self.noisy, self.max_side = [Path(f) for f in folders], noisy, max_side
        self.frames: list[list[Path]] = [[] for _ in self.folders]

    def __call__(self, info: dict) -> None:
        images = info["image"]
        if images.shape[0] != len(self.folders):
            raise ValueError(f"batch of {images.shape[0]} images but {len(self.folders)} frame folders")
        stage, step = int(info.get("stage", 0)), int(info["i"])
        for k, folder in enumerate(self.folders):
            path = save_image(bounded_view(images[k], self.max_side), folder / frame_name(stage, step))
            self.frames[k].append(path)
            if self.noisy:
                save_image(bounded_view(info["x"][k].clamp(-1, 1), self.max_side),
                           folder / frame_name(stage, step, noisy=True))

    def finish(self) -> list[Path]:
        """Write ``refinement.gif`` in every folder that got frames; returns the animation paths."""
        written = []
        for folder, paths in zip(self.folders, self.frames):
            if paths:
                written.append(write_animation([Image.open(p).convert("RGB") for p in paths],
                                               folder / ANIMATION_NAME))
        return written


def write_animation(frames: list[Image.Image], path: Path, frame_ms: int = FRAME_MS) -> Path:
    """A looping GIF of ``frames`` (resized to the last frame's size), written atomically."""
    size = frames[-1].size
    frames = [f if f.size == size else f.resize(size, Image.NEAREST) for f in frames]
    durations = [frame_ms] * (len(frames) - 1) + [frame_ms * HOLD_LAST]
    return atomic_write(path, lambda f: frames[0].save(f, format="GIF", save_all=True, append_images=frames[1:],
                                                       duration=durations, loop=0))


class StepCollector:
    """A sampling callback keeping small in-memory views of the first image at every step (for report strips)."""

    def __init__(self, max_side: int = 160):
        self.max_side = max_side
        self.views: list[tuple[int, int, Image.Image]] = []  # (stage, step, view)

    def __call__(self, info: dict) -> None:
        self.views.append((int(info.get("stage", 0)), int(info["i"]), bounded_view(info["image"][0], self.max_side)))

    def strip(self, n: int = 5) -> list[tuple[str, Image.Image]]:
        """``n`` frames spread evenly over all steps (first and last included), labelled 'step I'
        ('stage S step I' when several cascade stages ran)."""
        if not self.views:
            return []
        count = min(n, len(self.views))
        picks = sorted({round(j * (len(self.views) - 1) / max(1, count - 1)) for j in range(count)})
        staged = len({s for s, _, _ in self.views}) > 1
        return [(f"stage {s} step {i + 1}" if staged else f"step {i + 1}", v)
                for s, i, v in (self.views[p] for p in picks)]


def refinement_strip(upscaler, lr: Image.Image, seed: int, n: int = 5, max_side: int = 160):
    """``n`` evenly spaced x̂₀ frames of ``upscaler`` refining ``lr`` (plus the final output, as it is
    saved): ``[(label, image)]``, or ``[]`` for a method that does not refine step by step
    (at most one network evaluation per image, e.g. bicubic or regression)."""
    if upscaler.count_evaluations(lr.size[1], lr.size[0]) <= 1:
        return []
    collector = StepCollector(max_side)
    lr_batch = pil_to_tensor(lr.convert("RGB"))[None]
    with torch.inference_mode():
        upscaler(lr_batch, [seed], callback=collector)
    return collector.strip(n)
