"""An index of training files, written once, read by offset: folders of millions of images and tar shards.

Listing a folder of a million files takes minutes on network storage, and a list of
a million Python strings takes ~100 MB in every data-loader worker.  So the list is
made once, into ``OUT/data_index/`` of the training run, and every later start
(``--resume``, every worker process) reads it back as a memory-mapped numpy array:
only the pages of the records actually drawn are ever loaded, so memory does not
grow with the number of files.  Freezing the list in the run folder is also what
keeps ``--resume`` exact: files added to the folder later do not shift the indices
that the (seed, step, part) draws pick.

Two sources, one record per training image:

* **a folder** (searched recursively for image extensions); with ``labelled=True``
  it is a folder of class sub-folders, labels in sorted sub-folder order;
* **WebDataset-style tar shards** (``--data`` a folder of ``*.tar`` files or one
  ``.tar``): members that share a key (the name up to the first dot) form one
  sample; its image is the member with an image extension and its label, if any,
  the integer text of a ``.cls`` member (WebDataset's convention).  Shards must be
  uncompressed tar (WebDataset's default) so that an image is read by seeking to its
  offset; a stream-only object store can be mounted (s3fs, gcsfuse) to give that.

The streaming ``webdataset`` library reads shards sequentially through shuffle
buffers, which would tie the images of step k to how far earlier steps read; random
access by offset keeps every draw a function of (seed, k, part) only.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError
from .atomic import atomic_write_bytes, atomic_write_text
from .imageio import IMAGE_EXTENSIONS

INDEX_DIR = "data_index"
RECORDS_FILE, INFO_FILE = "records.npy", "index.json"
INDEX_VERSION = 1


@dataclass(frozen=True)
class IndexInfo:
    """What an index was made from.  kind: "folder" or "shards"; root: the --data path;
    shards: shard paths (kind "shards"); class_names: label names (empty = unlabelled)."""

    kind: str
    root: str
    count: int
    shards: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()


def is_shard_source(path: str | Path) -> bool:
    """Whether ``--data`` names tar shards: a ``.tar`` file, or a folder holding ``*.tar`` files."""
    path = Path(path)
    if path.is_file():
        return path.suffix == ".tar"
    return path.is_dir() and any(p.suffix == ".tar" for p in path.iterdir())


def write_index(source: str | Path, index_dir: str | Path, labelled: bool = False) -> Path:
    """List ``source`` (a folder, or tar shards) once into ``index_dir``; returns ``index_dir``.

    The records file is written before the info file, each atomically, so a kill
    mid-way leaves no index that looks complete.
    """
    source, index_dir = Path(source), Path(index_dir)
    if not source.exists():
        raise UserError(f"{source}: training data not found; pass --data DIR (images, class folders or .tar shards)")
    if is_shard_source(source):
        records, info = _index_shards(source, labelled)
    else:
        records, info = _index_folder(source, labelled)
    if info.count == 0:
        raise UserError(f"{source}: no images found (extensions {', '.join(IMAGE_EXTENSIONS)}); check --data")
    index_dir.mkdir(parents=True, exist_ok=True)
    buffer = _npy_bytes(records)
    atomic_write_bytes(index_dir / RECORDS_FILE, buffer)
    atomic_write_text(index_dir / INFO_FILE, json.dumps({"version": INDEX_VERSION, **info.__dict__}, indent=1))
    return index_dir


def index_exists(index_dir: str | Path) -> bool:
    return (Path(index_dir) / INFO_FILE).exists() and (Path(index_dir) / RECORDS_FILE).exists()


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _walk(folder: Path):
    """Image files under ``folder`` in sorted order, by os.scandir (no per-file stat beyond the entry type)."""
    stack = [folder]
    found = []
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except OSError as e:
            raise UserError(f"{current}: cannot list folder ({e.strerror})") from None
        for entry in entries:
            if entry.is_dir(follow_symlinks=True):
                stack.append(Path(entry.path))
            elif Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(entry.path)
    return sorted(found)


def _index_folder(root: Path, labelled: bool) -> tuple[np.ndarray, IndexInfo]:
    if labelled:
        classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
        paths, labels = [], []
        for label, name in enumerate(classes):
            found = _walk(root / name)
            paths += found
            labels += [label] * len(found)
    else:
        classes, paths = (), _walk(root)
        labels = [-1] * len(paths)
    relative = [os.path.relpath(p, root).encode("utf-8") for p in paths]
    width = max((len(r) for r in relative), default=1)
    records = np.zeros(len(relative), dtype=[("path", f"S{width}"), ("label", "<i8")])
    records["path"] = relative
    records["label"] = labels
    return records, IndexInfo("folder", str(root.resolve()), len(records), class_names=classes)


def _index_shards(source: Path, labelled: bool) -> tuple[np.ndarray, IndexInfo]:
    shards = [source] if source.is_file() else sorted(p for p in source.iterdir() if p.suffix == ".tar")
    rows = []  # (shard, offset, size, label, name)
    label_values = set()
    for shard_id, shard in enumerate(shards):
        samples: dict[str, dict] = {}
        try:
            with tarfile.open(shard, mode="r:") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    base = member.name.rsplit("/", 1)[-1]
                    key, _, ext = base.partition(".")
                    key = member.name[:len(member.name) - len(base)] + key
                    sample = samples.setdefault(key, {})
                    if ("." + ext.lower()) in IMAGE_EXTENSIONS and "image" not in sample:
                        sample["image"] = (member.offset_data, member.size, member.name)
                    elif ext.lower() == "cls":
                        text = tar.extractfile(member).read().decode("utf-8", "replace").strip()
                        try:
                            sample["label"] = int(text)
                        except ValueError:
                            raise UserError(f"{shard}: {member.name} holds {text!r}, not an integer class "
                                            "label; fix the shard") from None
        except tarfile.ReadError as e:
            raise UserError(f"{shard}: not an uncompressed tar file ({e}); write shards as plain .tar "
                            "(WebDataset's default), not .tar.gz") from None
        for key in sorted(samples):
            sample = samples[key]
            if "image" not in sample:
                continue
            label = sample.get("label", -1)
            if labelled and label < 0:
                raise UserError(f"{shard}: sample {key} has no .cls label; a class-conditional model needs one "
                                "per image")
            label_values.add(label)
            offset, size, name = sample["image"]
            rows.append((shard_id, offset, size, label, name.encode("utf-8")))
    width = max((len(r[4]) for r in rows), default=1)
    records = np.zeros(len(rows), dtype=[("shard", "<i4"), ("offset", "<i8"), ("size", "<i8"), ("label", "<i8"),
                                         ("name", f"S{width}")])
    for field, column in zip(records.dtype.names, zip(*rows) if rows else [()] * 5):
        records[field] = column
    classes = tuple(str(i) for i in range(max(label_values) + 1)) if labelled and rows else ()
    return records, IndexInfo("shards", str(source.resolve()), len(records),
                              shards=tuple(str(s.resolve()) for s in shards), class_names=classes)


class FileIndex:
    """A written index, opened lazily in each process (memory-mapped records, file handles per process).

    ``read(i) -> (bytes, name)``: the encoded image of record i and a name for messages;
    ``label(i)``: its class index (-1 when unlabelled).
    """

    def __init__(self, index_dir: str | Path):
        self.index_dir = Path(index_dir)
        if not index_exists(self.index_dir):
            raise UserError(f"{self.index_dir}: no data index here; it is written when training starts")
        raw = json.loads((self.index_dir / INFO_FILE).read_text())
        if raw.pop("version", None) != INDEX_VERSION:
            raise UserError(f"{self.index_dir}: data index of another sr3 version; delete the folder to rebuild it")
        raw["shards"], raw["class_names"] = tuple(raw["shards"]), tuple(raw["class_names"])
        self.info = IndexInfo(**raw)
        self._records = None
        self._files: dict[int, object] = {}

    def __getstate__(self):  # worker processes reopen the memory map and their own file handles
        return {"index_dir": self.index_dir, "info": self.info, "_records": None, "_files": {}}

    @property
    def records(self) -> np.ndarray:
        if self._records is None:
            self._records = np.load(self.index_dir / RECORDS_FILE, mmap_mode="r", allow_pickle=False)
        return self._records

    def __len__(self) -> int:
        return self.info.count

    def label(self, i: int) -> int:
        return int(self.records[i]["label"])

    def name(self, i: int) -> str:
        record = self.records[i]
        if self.info.kind == "folder":
            return str(Path(self.info.root) / record["path"].decode("utf-8"))
        return f"{self.info.shards[int(record['shard'])]}:{record['name'].decode('utf-8')}"

    def path(self, i: int) -> Path:
        """The file of record i (folder indexes only)."""
        return Path(self.info.root) / self.records[i]["path"].decode("utf-8")

    def read(self, i: int) -> tuple[bytes, str]:
        """The encoded bytes of record i; OSError when the file or shard cannot be read."""
        record = self.records[i]
        if self.info.kind == "folder":
            path = self.path(i)
            return path.read_bytes(), str(path)
        shard = int(record["shard"])
        handle = self._files.get(shard)
        if handle is None:
            handle = self._files[shard] = open(self.info.shards[shard], "rb")
        handle.seek(int(record["offset"]))
        data = handle.read(int(record["size"]))
        if len(data) != int(record["size"]):
            raise OSError(f"shard ended after {len(data)} of {int(record['size'])} bytes")
        return data, self.name(i)
