"""The processed store: one on-disk format for every dataset.

Layout of ``<root>/processed/<NAME>/``::

    <fold>.images.npy   uint8  N x H x W x C   (np.save format: np.load(mmap_mode="r"))
    <fold>.labels.npy   uint8  N x L           multi-hot (one-hot for single-label sets)
    <fold>.ids.npy      str    N               item ids (source file names / indices)
    manifest.json       written last and atomically; its presence = "processed"

for every fold in ``FOLDS``; these are the only file names a store has
(``STORE_FILES``; a remote manifest naming anything else is refused). Besides sizes, checksums and normalisation the
manifest records ``similar_probability`` (the train fold's similar-pair
probability, see that function) and, for datasets with processing variants
(MS_COCO), the ``variant`` that made the store.

Arrays are written under hidden temp names and renamed into place before the
manifest is written, so a process killed at any point leaves no manifest and
the store never looks complete. Re-processing removes the old manifest first
for the same reason.

This module is torch-free (the sweep planner imports it).
"""
from __future__ import annotations

import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from biohash.errors import DataError, ResultsError
from biohash.storage import Location, read_json, resolve, sha256_file, write_bytes
# The encoding every biohash JSON file uses (NumPy values as lists).
from biohash.utils import _json_default

__all__ = ["FOLDS", "FORMAT_VERSION", "MANIFEST", "Fold", "Store", "StoreWriter",
           "store_dir", "open_store", "is_processed", "missing_message", "sha256_file",
           "similar_probability", "local_root", "IMAGENET_MEAN", "IMAGENET_STD", "STORE_FILES",
           "data_location", "store_location", "manifest_location", "read_manifest"]

FOLDS = ("train", "query", "val", "database")
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PROCESSED = "processed"
KINDS = ("images", "labels", "ids")
#: remap the output memmap after this many bytes: written pages of a shared mapping
#: count towards the writer's RSS until unmapped (a 20 GB fold would show 20 GB).
_REMAP_BYTES = 256 << 20
#: h2q normalises every RGB dataset with ImageNet statistics (pretrained backbones).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_CHUNK = 1 << 22
#: bytes of one (rows x unique label sets) block of ``similar_probability`` (peak ~2x).
_PAIR_BLOCK_BYTES = 32 << 20


def store_dir(root: str | os.PathLike, name: str) -> Path:
    """``<root>/processed/<name>`` on the local disk."""
    return Path(root) / PROCESSED / name


def file_name(fold: str, kind: str) -> str:
    return f"{fold}.{kind}.npy"


#: Every array file name a store may hold (``<fold>.<kind>.npy``).
STORE_FILES = frozenset(file_name(f, k) for f in FOLDS for k in KINDS)


def data_location(root: str | os.PathLike | Location, filesystem: Any = None) -> Location:
    """A data root (folder, URI or a path inside ``filesystem``) as a storage ``Location``."""
    try:
        return resolve(root if isinstance(root, Location) else str(root), filesystem)
    except ResultsError as exc:
        raise DataError(f"bad data root {str(root)!r}: {exc}; allowed: a folder or a URI such "
                        f"as s3://bucket/data, gs://bucket/data, file:///path") from None


def store_location(root: Location, name: str) -> Location:
    """``<root>/processed/<name>`` on any filesystem."""
    return root.join(PROCESSED, name)


def manifest_location(store: Location) -> Location:
    return store.join(MANIFEST)


def _is_uri(root: Any) -> bool:
    return isinstance(root, str) and "://" in root


def local_root(root: str | os.PathLike, action: str) -> Path:
    """``root`` as a local folder for ``action`` (e.g. "process"), before any work.

    Raises ``DataError`` for a URI (``$BIOHASH_DATA_ROOT`` is usually one: only
    ``push`` writes there) and for an existing path that is not a folder.
    """
    if _is_uri(str(root)):
        from_env = os.environ.get("BIOHASH_DATA_ROOT") == str(root)
        raise DataError(f"{action} needs a local data folder, got the root {str(root)!r}"
                        f"{' (from $BIOHASH_DATA_ROOT)' if from_env else ''}; pass --root "
                        f"<folder> (a remote root is written by push, read by list and trials)")
    path = Path(root).expanduser()
    if path.exists() and not path.is_dir():
        raise DataError(f"data root {str(root)!r} is a file, not a folder; pass --root <folder>")
    return path


def similar_probability(labels: np.ndarray, *, block_bytes: int = _PAIR_BLOCK_BYTES) -> float:
    """The fraction of similar pairs: mean of ``[y_i . y_j > 0]`` over ALL N x N pairs.

    Pairs are ordered and the diagonal counts (h2q's losses weight pairs with
    this p over every entry of the B x B similarity matrix, i = j included), so
    an all-zero label row is similar to nothing, not even itself. At most one
    label per row gives ``sum_c n_c^2 / N^2`` (CIFAR_10, 500 per class: exactly 0.1).

    Exact (integer counts) with memory bounded whatever N: multi-label rows are
    merged into unique label sets first, which are then compared block by block
    within ``block_bytes``.
    """
    y = np.asarray(labels) != 0
    if y.ndim != 2 or y.shape[0] == 0:
        raise DataError(f"similar_probability needs a non-empty (N, L) label array, "
                        f"got shape {y.shape}")
    n = y.shape[0]
    if (y.sum(1) <= 1).all():  # single-label: pairs are similar iff they share the class
        per_class = y.sum(0, dtype=np.int64)
        return int(per_class @ per_class) / (n * n)
    rows, counts = _unique_rows(y)  # (K, L) bool, (K,) int64
    # Per-row sums of counts are integers <= N: exact in float32 below 2**24.
    dtype = np.float32 if n < 1 << 24 else np.float64
    rows_f, counts_f = rows.astype(dtype), counts.astype(dtype)
    step = max(1, block_bytes // (rows_f.itemsize * len(rows)))
    similar = 0
    for start in range(0, len(rows), step):
        block = rows_f[start:start + step] @ rows_f.T  # (b, K) shared-label counts
        np.greater(block, 0.5, out=block)  # in place -> 0/1: no second (b, K) buffer
        partners = (block @ counts_f).astype(np.int64)  # (b,) similar items per row
        similar += int(counts[start:start + step] @ partners)
    return similar / (n * n)


def _unique_rows(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique rows of a bool (N, L) array and their counts; rows are bit-packed first
    so the sort compares a few bytes per row instead of L."""
    packed = np.packbits(y, axis=1)  # (N, ceil(L/8)) uint8
    keys = np.ascontiguousarray(packed).view(np.dtype((np.void, packed.shape[1]))).ravel()
    _, first, counts = np.unique(keys, return_index=True, return_counts=True)
    return y[first], counts.astype(np.int64)


def is_processed(name: str, root: str | os.PathLike) -> bool:
    """True when ``<root>/processed/<name>/manifest.json`` exists (local path or URI)."""
    if _is_uri(root):
        return manifest_location(store_location(data_location(root), name)).exists()
    return (store_dir(root, name) / MANIFEST).is_file()


def missing_message(name: str, root: str | os.PathLike) -> str:
    """One line telling the user which commands make ``name`` available under ``root``.

    For a remote root (a URI) the store is built in a local folder and pushed.
    ``data download`` is part of the recipe even for a manual download
    (ImageNet): it fetches the split lists and prints the manual steps.
    """
    from biohash.data.base import DATASETS

    cls = DATASETS.get(name)
    head = f"dataset {name} is not processed under {root}"
    manual = (f" ({name}'s images need a manual download: `biohash data download {name}` "
              f"prints the steps)") if cls.manual_download else ""
    if _is_uri(str(root)):
        local = "data"
        steps = [] if cls.auto_process else [f"biohash data download {name} --root {local}"]
        steps += [f"biohash data process {name} --root {local}",
                  f"biohash data push {name} --root {local} --to {root}"]
        return f"{head}; in a local folder run: {' && '.join(steps)}{manual}"
    if cls.auto_process:
        return f"{head}; it is built on first use " \
               f"(or run: biohash data process {name} --root {root})"
    return f"{head}; run: biohash data download {name} --root {root} && " \
           f"biohash data process {name} --root {root}{manual}"


@dataclass(frozen=True)
class Fold:
    """One split of a processed dataset. ``images`` is a read-only memmap (N x H x W x C)."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    #: normalisation stats (0..1 scale) and the store's transform, for the loader.
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    transform: str = "native"

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def path(self) -> Path:
        return Path(self.images.filename)  # type: ignore[attr-defined]

    @property
    def offset(self) -> int:
        """Byte offset of the first image in ``path`` (after the .npy header)."""
        return int(self.images.offset)  # type: ignore[attr-defined]


class Store:
    """A processed dataset: the manifest plus lazily opened folds."""

    def __init__(self, directory: Path, manifest: Mapping[str, Any]) -> None:
        self.directory = directory
        self.manifest = dict(manifest)
        self._folds: dict[str, Fold] = {}
        self._similar_probability: float | None = None

    @property
    def name(self) -> str:
        return self.manifest["dataset"]

    @property
    def num_classes(self) -> int:
        return len(self.manifest["label_names"])

    @property
    def label_names(self) -> list[str]:
        return list(self.manifest["label_names"])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of the stored uint8 images."""
        return tuple(self.manifest["image_shape"])  # type: ignore[return-value]

    @property
    def mean(self) -> tuple[float, ...]:
        """Per-channel mean on the 0..1 scale used to normalise inputs."""
        return tuple(self.manifest["mean"])

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(self.manifest["std"])

    @property
    def sizes(self) -> dict[str, int]:
        return dict(self.manifest["sizes"])

    @property
    def similar_probability(self) -> float:
        """p = mean of ``[y_i . y_j > 0]`` over all pairs of the train fold, diagonal
        included (``similar_probability``); the pair weights of DCH, WGLHH and HashNet.

        Read from the manifest; stores processed before it was recorded compute it
        once from the train labels (the manifest file is left as it is).
        """
        if self._similar_probability is None:
            stored = self.manifest.get("similar_probability")
            if stored is None:
                labels = self.fold("train").labels
                if len(labels) == 0:
                    raise DataError(f"{self.directory}: the train fold is empty, so the similar-"
                                    f"pair probability is undefined; re-process {self.name}")
                stored = similar_probability(labels)
            self._similar_probability = float(stored)
        return self._similar_probability

    @property
    def variant(self) -> str | None:
        """The processing variant (MS_COCO: ``h2q`` or ``clean80``); None where a
        dataset has only one way of being processed. Old manifests are inferred."""
        from biohash.data.base import DATASETS

        return DATASETS.get(self.name).stored_variant(self.manifest)

    def fold(self, fold: str) -> Fold:
        if fold not in FOLDS:
            raise DataError(f"unknown fold {fold!r}; choose from {', '.join(FOLDS)}")
        if fold not in self._folds:
            d = self.directory
            images = np.load(d / file_name(fold, "images"), mmap_mode="r")
            labels = np.load(d / file_name(fold, "labels"))
            ids = np.load(d / file_name(fold, "ids"))
            self._folds[fold] = Fold(fold, images, labels, ids, self.mean, self.std,
                                     self.manifest.get("transform", "native"))
        return self._folds[fold]

    def verify(self) -> list[str]:
        """Re-hash every array; return the files whose sha256 differs (empty = intact)."""
        bad = []
        for fname, digest in self.manifest["checksums"].items():
            path = self.directory / fname
            if not path.is_file() or sha256_file(path) != digest:
                bad.append(fname)
        return bad

    def __repr__(self) -> str:
        return f"Store({self.name!r}, sizes={self.sizes}, image_shape={self.image_shape})"


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """A local store's manifest; None when missing, or empty / truncated (a
    warning names it: the store counts as not processed and is rebuilt)."""
    path = directory / MANIFEST
    manifest = read_json(resolve(str(path)), what="dataset manifest")
    if manifest is None:
        return None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{path} has format version {manifest.get('format_version')!r}; "
                        f"this biohash reads version {FORMAT_VERSION}; re-run the process command")
    return manifest


def open_store(name: str, root: str | os.PathLike = "data") -> Store:
    """Open a processed dataset; DIGITS-like sets are processed on first use.

    Raises ``DataError`` naming the command to run when the store is missing,
    and ``ConfigError`` for an unknown dataset name.
    """
    from biohash.data.base import DATASETS

    cls = DATASETS.get(name)
    if _is_uri(root):
        raise DataError(f"open_store needs a local root, got {root!r}; "
                        f"call biohash.data.materialize({name!r}, {root!r}) first")
    local_root(root, f"opening {name}")
    directory = store_dir(root, name)
    manifest = read_manifest(directory)
    if manifest is None and cls.auto_process:
        from filelock import FileLock

        directory.parent.mkdir(parents=True, exist_ok=True)
        # Concurrent trials on one node may all open DIGITS at once.
        with FileLock(str(directory.parent / f".{name}.lock")):
            if read_manifest(directory) is None:
                cls(root).process()
        manifest = read_manifest(directory)
    if manifest is None:
        raise DataError(missing_message(name, root))
    return Store(directory, manifest)


class _FoldWriter:
    """Writes one fold's images chunk by chunk into a pre-allocated memmap."""

    def __init__(self, directory: Path, fold: str, n: int, image_shape: Sequence[int]) -> None:
        self.directory, self.fold, self.capacity = directory, fold, n
        self.tmp = directory / f".{file_name(fold, 'images')}.partial"
        self.images = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=np.uint8,
                                                shape=(n, *image_shape))
        self.count = 0
        self._since_remap = 0
        self.keep: list[int] = []  # source positions actually written
        self._sum = np.zeros(image_shape[-1], np.float64)
        self._sq = np.zeros(image_shape[-1], np.float64)

    def write(self, positions: Iterable[int], images: Sequence[np.ndarray | None]) -> None:
        """Append decoded images; ``None`` marks an unreadable source (dropped)."""
        for pos, img in zip(positions, images):
            if img is None:
                continue
            self.images[self.count] = img
            self.count += 1
            self.keep.append(pos)
            self._wrote(img.nbytes)

    def write_block(self, images: np.ndarray, start: int) -> None:
        """Fast path for in-memory sources: a contiguous block, nothing dropped."""
        self.images[self.count:self.count + len(images)] = images
        self.keep.extend(range(start, start + len(images)))
        self.count += len(images)
        self._wrote(images.nbytes)

    def _wrote(self, nbytes: int) -> None:
        self._since_remap += nbytes
        if self._since_remap >= _REMAP_BYTES:
            self.images.flush()
            self.images = np.load(self.tmp, mmap_mode="r+")  # drops the old mapping
            self._since_remap = 0

    def channel_stats(self) -> tuple[np.ndarray, np.ndarray, int]:
        """Per-channel sum and sum of squares (0..1 scale) over the written images."""
        step = max(1, _CHUNK // max(1, int(np.prod(self.images.shape[1:]))))
        for i in range(0, self.count, step):
            block = self.images[i:i + step].astype(np.float64) / 255.0
            self._sum += block.reshape(-1, block.shape[-1]).sum(0)
            self._sq += (block.reshape(-1, block.shape[-1]) ** 2).sum(0)
        pixels = self.count * int(np.prod(self.images.shape[1:-1]))
        return self._sum, self._sq, pixels

    def finish(self) -> Path:
        self.images.flush()
        del self.images
        if self.count < self.capacity:
            _shrink_npy(self.tmp, self.count)
        final = self.directory / file_name(self.fold, "images")
        os.replace(self.tmp, final)
        return final


def _shrink_npy(path: Path, n: int) -> None:
    """Cut a .npy array to its first ``n`` rows in place (rewrite header, truncate)."""
    fmt = np.lib.format
    with open(path, "r+b") as f:
        version = fmt.read_magic(f)
        read, write = ((fmt.read_array_header_1_0, fmt.write_array_header_1_0) if version == (1, 0)
                       else (fmt.read_array_header_2_0, fmt.write_array_header_2_0))
        shape, fortran, dtype = read(f)
        offset = f.tell()
        buf = io.BytesIO()
        write(buf, {"descr": fmt.dtype_to_descr(dtype), "fortran_order": fortran,
                    "shape": (n, *shape[1:])})
        if buf.tell() != offset:  # numpy pads headers so the first axis can change in place
            raise DataError(f"cannot shrink {path}: its header size would change")
        f.seek(0)
        f.write(buf.getvalue())
        f.truncate(offset + n * int(np.prod(shape[1:])) * dtype.itemsize)


class StoreWriter:
    """Builds a store: ``begin`` -> per fold ``fold_writer``/``commit_fold`` -> ``finish``."""

    def __init__(self, root: str | os.PathLike, name: str, image_shape: Sequence[int]) -> None:
        self.directory = store_dir(root, name)
        self.name = name
        self.image_shape = tuple(int(s) for s in image_shape)
        self.sizes: dict[str, int] = {}
        self.checksums: dict[str, str] = {}
        self.file_sizes: dict[str, int] = {}
        self.stats: tuple[np.ndarray, np.ndarray, int] | None = None
        self.similar_probability: float | None = None

    def begin(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        # Remove the old manifest first: from here until ``finish`` the store is incomplete.
        (self.directory / MANIFEST).unlink(missing_ok=True)
        for stale in self.directory.glob(".*.partial"):
            stale.unlink()

    def fold_writer(self, fold: str, n: int) -> _FoldWriter:
        return _FoldWriter(self.directory, fold, n, self.image_shape)

    def commit_fold(self, writer: _FoldWriter, labels: np.ndarray, ids: Sequence[str]) -> None:
        """Save labels/ids for the rows actually written, then rename all into place."""
        keep = np.asarray(writer.keep, dtype=np.int64)
        labels = np.ascontiguousarray(np.asarray(labels, dtype=np.uint8)[keep])
        id_arr = np.asarray([str(ids[i]) for i in keep]) if len(keep) else np.asarray([], "<U1")
        if writer.fold == "train":
            self.stats = writer.channel_stats()
            # From the rows actually written: a dropped unreadable image leaves the fold.
            self.similar_probability = similar_probability(labels) if len(labels) else None
        paths = [writer.finish()]
        for kind, arr in (("labels", labels), ("ids", id_arr)):
            final = self.directory / file_name(writer.fold, kind)
            tmp = self.directory / f".{final.name}.partial"
            with open(tmp, "wb") as f:
                np.save(f, arr, allow_pickle=False)
            os.replace(tmp, final)
            paths.append(final)
        for p in paths:
            self.checksums[p.name] = sha256_file(p)
            self.file_sizes[p.name] = p.stat().st_size
        self.sizes[writer.fold] = writer.count

    def finish(self, *, label_names: Sequence[str], seed: int | None,
               mean: Sequence[float] | None, std: Sequence[float] | None,
               transform: str, dropped: Mapping[str, int] | None = None,
               **extra: Any) -> Path:
        """Write the manifest (last, atomically). ``mean/std`` None = train-fold statistics."""
        missing = [f for f in FOLDS if f not in self.sizes]
        if missing:
            raise DataError(f"store {self.name}: folds {missing} were not written")
        train_mean = train_std = None
        if self.stats is not None and self.stats[2] > 0:
            s, sq, n = self.stats
            train_mean = (s / n).tolist()
            train_std = np.sqrt(np.maximum(sq / n - (s / n) ** 2, 1e-12)).tolist()
        manifest = {
            "dataset": self.name, "format_version": FORMAT_VERSION,
            "sizes": self.sizes, "seed": seed, "label_names": list(label_names),
            "image_shape": list(self.image_shape), "transform": transform,
            "mean": list(mean) if mean is not None else train_mean,
            "std": list(std) if std is not None else train_std,
            "train_mean": train_mean, "train_std": train_std,
            "similar_probability": self.similar_probability,
            "checksums": self.checksums, "file_sizes": self.file_sizes, "dropped": dict(dropped or {}),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra,
        }
        path = self.directory / MANIFEST
        write_bytes(resolve(str(path)), json.dumps(manifest, indent=2, sort_keys=True,
                                                   default=_json_default).encode())
        return path
