"""Training data decoded per draw from a file index: memory independent of the dataset size.

:class:`StreamingImageDataset` (SR crops) and :class:`StreamingLabelledDataset`
(class-conditional data, CDM) keep only a :class:`sr3.file_index.FileIndex` (a
memory-mapped record array) and decode the few images a batch needs, in the
data-loader worker that builds the batch (sr3/step_loader.py).  They keep the
contract of every dataset of :mod:`sr3.data`: ``sample(batch_size, generator)``
draws only from ``generator``, in the same order as the in-memory datasets, so on a
folder without bad files a streamed batch equals the in-memory batch exactly.

A file that cannot be read, cannot be decoded or is too small is *skipped and
counted*: the draw is repeated from the same generator (so the outcome is still a
function of (seed, step, part)) and the reason travels back with the batch in
``Batch.skipped``; the training loop logs them.  A run never dies on one bad file
of a million.  Only when ``MAX_CONSECUTIVE_BAD`` draws in a row fail is it a
UserError: then the data, not one file, is wrong.

:func:`open_training_data` picks the dataset for ``sr3 train --data``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .config import Config
from .data import Batch, ImageFolderDataset, PairedFolderDataset, random_crop, to_float, uint8_chw
from .errors import UserError
from .file_index import INDEX_DIR, FileIndex, index_exists, is_shard_source, write_index
from .imageio import IMAGE_EXTENSIONS, load_image_bytes
from .labelled_data import LabelledDataset, is_class_folder, is_idx_folder, pad_square, random_hflips, \
    to_resolution

MAX_CONSECUTIVE_BAD = 1000
STREAM_AUTO_MIN_FILES = 2000
"""data.source = "auto" streams a folder from this many image files on (below it, decoding
everything once is faster: a 2-core CPU decodes the 43 photos once in ~3 s)."""


class _DecodingDataset:
    """Shared part: draw a record, read and decode it; skip and count what fails."""

    def __init__(self, index: FileIndex):
        self.index = index

    def __len__(self) -> int:
        return len(self.index)

    def _decode(self, i: int) -> torch.Tensor:
        """uint8 [3, H, W] of record i, or UserError/OSError saying why not."""
        data, name = self.index.read(i)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # grey/RGBA conversions: fine for training, not worth a line each
            return uint8_chw(load_image_bytes(data, name))

    def _draw_usable(self, first: int | None, generator: torch.Generator, check, skipped: list[str]):
        """Decode record ``first`` (or a fresh draw) and redraw from ``generator`` until ``check``
        accepts an image; returns (record, image)."""
        i = first
        for _ in range(MAX_CONSECUTIVE_BAD):
            if i is None:
                i = int(torch.randint(len(self.index), (1,), generator=generator))
            try:
                img = self._decode(i)
                reason = check(img)
            except (UserError, OSError) as e:
                reason = str(e) if isinstance(e, UserError) else f"{self.index.name(i)}: cannot read ({e})"
            if reason is None:
                return i, img
            skipped.append(reason)
            i = None
        raise UserError(f"{self.index.info.root}: {MAX_CONSECUTIVE_BAD} draws in a row found no usable image "
                        f"(last: {skipped[-1]}); check --data")


class StreamingImageDataset(_DecodingDataset):
    """Random crops of an indexed image folder or tar shards, decoded per draw; see
    :class:`sr3.data.ImageFolderDataset` for the arguments (same draws, same crops)."""

    def __init__(self, index: FileIndex, crop_size: int, hflip: bool = True, vflip: bool = False,
                 downscale_max: float = 1.0):
        super().__init__(index)
        if downscale_max < 1.0:
            raise UserError(f"data.downscale_max is {downscale_max}; it must be >= 1 (1 = no downscaling)")
        self.crop_size, self.hflip, self.vflip, self.downscale_max = crop_size, hflip, vflip, downscale_max

    def _check(self, img: torch.Tensor) -> str | None:
        if min(img.shape[1:]) < self.crop_size:
            return f"{img.shape[2]}x{img.shape[1]} image is smaller than the {self.crop_size} px crop"
        return None

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        crops, skipped = [], []
        for _ in range(batch_size):
            _, img = self._draw_usable(None, generator, self._check, skipped)
            crops.append(random_crop(img, self.crop_size, generator, self.downscale_max, self.hflip, self.vflip))
        return Batch(hr=to_float(torch.stack(crops)), skipped=tuple(skipped))


class StreamingLabelledDataset(_DecodingDataset):
    """Labelled images (class folders or shards with ``.cls``) decoded per draw, as
    :class:`sr3.labelled_data.LabelledDataset` gives them: padded to a ``pad_to`` square
    (default: the first image's larger side rounded up to a multiple of 8; larger images
    are skipped and counted), then brought to ``resolution`` by the degradation operator."""

    def __init__(self, index: FileIndex, resolution: int, channels: int = 3, hflip: bool = False,
                 pad_to: int | None = None):
        super().__init__(index)
        if not index.info.class_names:
            raise UserError(f"{index.info.root}: no class labels (class sub-folders or .cls shard members)")
        if pad_to is None:
            _, first = self._draw_usable(0, torch.Generator().manual_seed(0), lambda img: None, [])
            pad_to = -(-max(first.shape[1:]) // 8) * 8
        if pad_to % resolution:
            raise UserError(f"{index.info.root}: resolution {resolution} does not divide the padded size {pad_to}")
        if channels not in (1, 3):
            raise UserError(f"channels must be 1 or 3, got {channels}")
        self.resolution, self.channels, self.hflip, self.pad_to = resolution, channels, hflip, pad_to
        self.class_names = index.info.class_names

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _check(self, img: torch.Tensor) -> str | None:
        if max(img.shape[1:]) > self.pad_to:
            return f"{img.shape[2]}x{img.shape[1]} image is larger than the {self.pad_to} px square of this data"
        return None

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        # the same draw order as LabelledDataset.sample: B indices, then B flips (redraws only after bad files)
        index = torch.randint(len(self.index), (batch_size,), generator=generator)
        images, labels, skipped = [], [], []
        for i in index.tolist():
            i, img = self._draw_usable(i, generator, self._check, skipped)
            images.append(pad_square(img, self.pad_to))
            labels.append(self.index.label(i))
        x = to_resolution(torch.stack(images), self.channels, self.resolution)
        return Batch(hr=random_hflips(x, generator, self.hflip), label=torch.tensor(labels, dtype=torch.int64),
                     skipped=tuple(skipped))


def open_index(data: str | Path, out: str | Path, labelled: bool = False) -> FileIndex:
    """The run's index of ``data``: read from ``out/data_index`` if a previous start wrote it
    (no directory walk), else written there now."""
    index_dir = Path(out) / INDEX_DIR
    if not index_exists(index_dir):
        write_index(data, index_dir, labelled=labelled)
    index = FileIndex(index_dir)
    if Path(index.info.root) != Path(data).resolve():
        raise UserError(f"{index_dir}: indexes {index.info.root}, not --data {data}; train on the data the run "
                        "started with, or use a new --out")
    return index


def should_stream(config: Config, data: str | Path) -> bool:
    """data.source: "stream" / "memory", or "auto": tar shards always stream; a folder streams from
    STREAM_AUTO_MIN_FILES image files on (counted without decoding)."""
    source = config.data.source
    if is_shard_source(data):
        return True
    if source != "auto":
        return source == "stream"
    count = 0
    for path in Path(data).rglob("*"):
        count += path.suffix.lower() in IMAGE_EXTENSIONS
        if count >= STREAM_AUTO_MIN_FILES:
            return True
    return False


def open_training_data(config: Config, data: str | Path, out: str | Path, lr_data: str | Path | None = None):
    """The dataset ``sr3 train --data DATA --out OUT`` trains on (see the module doc).

    Labelled data (IDX files, or class sub-folders / labelled shards for a class-conditional
    model) feeds CDM's base model and its SR stages; IDX files are one array and always
    load into memory.  Paired LR/HR folders (``--lr-data``) load into memory.
    """
    d, data = config.data, Path(data)
    if not data.exists():
        raise UserError(f"{data}: training data not found; pass --data DIR (images, class folders or .tar shards)")
    class_conditional = bool(config.model.num_classes)
    labelled = d.task == "generate" or is_idx_folder(data) or (
        class_conditional and (is_shard_source(data) or is_class_folder(data)))
    if labelled and (is_idx_folder(data) or not should_stream(config, data)):
        dataset = LabelledDataset(data, d.crop_size, channels=config.model.image_channels, hflip=d.hflip)
    elif labelled:
        dataset = StreamingLabelledDataset(open_index(data, out, labelled=True), d.crop_size,
                                           channels=config.model.image_channels, hflip=d.hflip)
    elif lr_data:
        return PairedFolderDataset(lr_data, data, d.scale, d.crop_size, d.hflip, d.vflip)
    elif should_stream(config, data):
        return StreamingImageDataset(open_index(data, out), d.crop_size, d.hflip, d.vflip, d.downscale_max)
    else:
        return ImageFolderDataset(data, d.crop_size, d.hflip, d.vflip, d.downscale_max)
    if class_conditional and dataset.num_classes > config.model.num_classes:
        raise UserError(f"{data}: {dataset.num_classes} classes but model.num_classes is "
                        f"{config.model.num_classes}; raise --model.num-classes")
    return dataset
