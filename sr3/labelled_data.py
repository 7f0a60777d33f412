"""Labelled training data for class-conditional cascades (CDM, Ho et al. 2021).

Two on-disk layouts are read, both into one in-memory :class:`LabelledDataset`:

* **IDX** (the MNIST / Fashion-MNIST format, gzipped or not): a folder holding
  ``train-images-idx3-ubyte[.gz]`` + ``train-labels-idx1-ubyte[.gz]`` and the
  ``t10k-*`` test pair.  IDX is a 4-byte magic (two zero bytes, a dtype code,
  the number of dimensions), one big-endian int32 per dimension, then raw data.
* **A folder of class sub-folders** (``root/<class name>/*.png``): labels are the
  sub-folder names in sorted order.

Like every dataset of :mod:`sr3.data`, it has ``sample(batch_size, generator) ->
Batch(hr, label)``, drawing only from ``generator`` so resumed runs repeat exactly.
Images are padded to a square power-of-two-friendly side (Fashion-MNIST: 28 -> 32
with 2 px of black on each side, the background colour) and then brought to the
stage's resolution with the project's one degradation operator
(:func:`sr3.degradation.downsample`), so a 16x16 base model sees exactly the
images a 16 -> 32 SR stage is conditioned on at training time.
"""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data import Batch
from .degradation import downsample
from .errors import UserError
from .imageio import list_images, load_image

# Fashion-MNIST's label names (Xiao et al. 2017), in label order.
FASHION_MNIST_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat",
                         "sandal", "shirt", "sneaker", "bag", "ankle-boot")

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
SPLIT_PREFIX = {"train": "train", "test": "t10k"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (``.gz`` or plain) into a numpy array of its declared shape."""
    path = Path(path)
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as e:
        raise UserError(f"{path}: cannot read IDX file ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise UserError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    if len(raw) != header + int(np.prod(shape)) * dtype.itemsize:
        raise UserError(f"{path}: IDX file is truncated or has trailing data (header says shape {shape})")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find_idx(root: Path, prefix: str, kind: str) -> Path | None:
    for name in (f"{prefix}-{kind}-ubyte", f"{prefix}-{kind}.idx"):
        for suffix in (".gz", ""):
            if (root / (name + suffix)).exists():
                return root / (name + suffix)
    return None


def is_idx_folder(root: str | Path) -> bool:
    """Whether ``root`` holds an IDX image/label pair (train or test split)."""
    root = Path(root)
    return any(_find_idx(root, p, "images-idx3") for p in SPLIT_PREFIX.values())


def is_class_folder(root: str | Path) -> bool:
    """Whether ``root`` is a folder of class sub-folders (and no loose images at the top)."""
    root = Path(root)
    return root.is_dir() and any(p.is_dir() for p in root.iterdir()) and not any(
        p.is_file() and p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff") for p in root.iterdir())


def load_idx_split(root: str | Path, split: str = "train") -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(images [N, H, W] or [N, H, W, C] uint8, labels [N] int64, class names) of one IDX split."""
    root = Path(root)
    prefix = SPLIT_PREFIX[split]
    images_path, labels_path = _find_idx(root, prefix, "images-idx3"), _find_idx(root, prefix, "labels-idx1")
    if images_path is None or labels_path is None:
        raise UserError(f"{root}: no {prefix}-images-idx3-ubyte[.gz] / {prefix}-labels-idx1-ubyte[.gz] pair "
                        f"for the {split} split")
    images, labels = read_idx(images_path), read_idx(labels_path).astype(np.int64)
    if len(images) != len(labels):
        raise UserError(f"{root}: {len(images)} images but {len(labels)} labels in the {split} split")
    n_classes = int(labels.max()) + 1
    names = FASHION_MNIST_CLASSES if "fashion" in str(root.resolve()).lower() and n_classes <= 10 else \
        tuple(str(i) for i in range(n_classes))
    return images, labels, names


def load_class_folders(root: str | Path) -> tuple[list[np.ndarray], np.ndarray, tuple[str, ...]]:
    """(list of [H, W, 3] uint8 images, labels [N], class names) from ``root/<class>/*``."""
    root = Path(root)
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
    images, labels = [], []
    for index, name in enumerate(classes):
        for path in list_images(root / name):
            try:
                images.append(np.asarray(load_image(path), dtype=np.uint8))
            except UserError as e:
                warnings.warn(f"skipping {e}")
                continue
            labels.append(index)
    if not images:
        raise UserError(f"{root}: no readable images in its class sub-folders")
    return images, np.asarray(labels, dtype=np.int64), classes


class LabelledDataset:
    """Labelled images at one resolution, as ``Batch(hr [B, C, R, R] in [-1, 1], label [B])``.

    root: an IDX folder or a folder of class sub-folders.
    resolution: output side R in pixels; images are padded to a square of side
        ``pad_to`` (or their larger side), then, if R is smaller, downsampled by the
        integer factor ``pad_to / R`` with :func:`sr3.degradation.downsample`.
    channels: 3 repeats grey images to RGB (what the rest of the toolkit reads and
        writes); 1 keeps one channel (then set ``model.image_channels = 1``).
    split: "train" or "test" (IDX only; a class folder is a single split).
    hflip: random horizontal flips (Fashion-MNIST items are left/right symmetric enough).
    pad_to: padded side (default: the next multiple of 8 >= the largest image side; 28 -> 32).
    """

    def __init__(self, root: str | Path, resolution: int, channels: int = 3, split: str = "train",
                 hflip: bool = False, pad_to: int | None = None):
        root = Path(root)
        if not root.exists():
            raise UserError(f"{root}: labelled data folder not found (IDX files or class sub-folders)")
        if is_idx_folder(root):
            raw, labels, names = load_idx_split(root, split)
            raw = raw[..., None] if raw.ndim == 3 else raw
            tensors = torch.from_numpy(raw.copy()).permute(0, 3, 1, 2)
        elif is_class_folder(root):
            arrays, labels, names = load_class_folders(root)
            side = max(max(a.shape[:2]) for a in arrays)
            tensors = torch.stack([pad_square(torch.from_numpy(a.copy()).permute(2, 0, 1), side) for a in arrays])
        else:
            raise UserError(f"{root}: neither IDX files (train-images-idx3-ubyte[.gz]) nor class sub-folders")
        side = max(tensors.shape[-2:])
        self.pad_to = pad_to or -(-side // 8) * 8
        if self.pad_to % resolution:
            raise UserError(f"{root}: resolution {resolution} does not divide the padded size {self.pad_to}; "
                            f"use a divisor such as {self.pad_to}, {self.pad_to // 2} or {self.pad_to // 4}")
        if channels not in (1, 3):
            raise UserError(f"channels must be 1 or 3, got {channels}")
        self.images = pad_square(tensors, self.pad_to)  # uint8 [N, C, P, P], C = 1 or 3
        self.labels = torch.from_numpy(labels)
        self.class_names = names
        self.resolution, self.channels, self.hflip, self.root = resolution, channels, hflip, root

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.labels)

    def images_at(self, index: torch.Tensor) -> torch.Tensor:
        """The images at ``index`` [B] as floats [B, channels, R, R] in [-1, 1] (no flips)."""
        return to_resolution(self.images[index], self.channels, self.resolution)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        index = torch.randint(len(self.labels), (batch_size,), generator=generator)
        return Batch(hr=random_hflips(self.images_at(index), generator, self.hflip), label=self.labels[index])


def to_resolution(padded: torch.Tensor, channels: int, resolution: int) -> torch.Tensor:
    """uint8 squares [B, C, P, P] -> floats [B, channels, R, R] in [-1, 1] (grey<->RGB, then the
    degradation operator's integer downsampling P -> R).  Shared with sr3/streaming.py."""
    x = padded.float().div(127.5).sub(1.0)
    if x.shape[1] != channels:
        x = x.mean(dim=1, keepdim=True) if channels == 1 else x.expand(-1, 3, -1, -1)
    if resolution != x.shape[-1]:
        x = downsample(x, x.shape[-1] // resolution)
    return x.contiguous()


def random_hflips(x: torch.Tensor, generator: torch.Generator, enabled: bool) -> torch.Tensor:
    """Flip each image of [B, C, H, W] left/right with probability 1/2 (one draw of B numbers)."""
    if not enabled:
        return x
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def pad_square(x: torch.Tensor, side: int) -> torch.Tensor:
    """Centre [..., H, W] on a black ``side`` x ``side`` canvas (Fashion-MNIST's background is 0)."""
    h, w = x.shape[-2:]
    top, left = (side - h) // 2, (side - w) // 2
    return F.pad(x, (left, side - w - left, top, side - h - top))
