"""Dataset classes: facts as class constants, one generic processing engine.

A dataset class (torchvision style) holds its facts - raw file list, URLs,
checksums, split sizes, label count - as class constants; a sibling dataset
overrides constants only. Its ``prepare`` reads the raw files into per-fold
``FoldSource`` items (ids, labels and either in-memory images or image paths);
``process`` then writes them into the store (``biohash.data.store``) with
decoding/resizing in a thread pool and chunked writes into a memmap, so even
NUS-WIDE never sits in RAM.

Splits reproduce h2q's exactly where its algorithm is known: Python's
``random.Random(seed)`` shuffles either the item order (per-class splits,
CIFAR) or the list of fold tags (multi-label sets); folds keep source order.
"""
from __future__ import annotations

import logging
import os
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from biohash.errors import ConfigError, DataError
from biohash.registry import Registry
from biohash.data.store import (FOLDS, IMAGENET_MEAN, IMAGENET_STD, StoreWriter, local_root,
                                store_dir)

__all__ = ["DATASETS", "Dataset", "FoldSource", "Prepared", "split_per_class",
           "split_shuffled", "load_image", "RESIZE", "CROP"]

log = logging.getLogger(__name__)

DATASETS: Registry[type["Dataset"]] = Registry("dataset")
#: h2q's deterministic transform, applied once at processing time.
RESIZE, CROP = 256, 224
_DECODE_CHUNK = 256


@dataclass
class FoldSource:
    """Items of one fold before writing: ``array`` (in memory) or ``paths`` (decoded)."""

    ids: Sequence[str]
    labels: np.ndarray  # (n, L) uint8
    array: np.ndarray | None = None  # (n, H, W, C) uint8
    paths: Sequence[Path] | None = None

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Prepared:
    folds: dict[str, FoldSource]
    label_names: list[str]
    dropped: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def split_per_class(classes: np.ndarray, per_class: Mapping[str, int],
                    seed: int) -> dict[str, np.ndarray]:
    """h2q's per-class split: shuffle all indices with ``random.Random(seed)``, then per
    class take the first ``train``, next ``query``, next ``val``; the rest is database."""
    order = list(range(len(classes)))
    random.Random(seed).shuffle(order)
    shuffled = np.asarray(order, dtype=np.int64)
    tags = np.full(len(classes), len(FOLDS) - 1, dtype=np.int64)  # database
    for c in np.unique(classes):
        members = shuffled[classes[shuffled] == c]
        start = 0
        for k, fold in enumerate(FOLDS[:-1]):
            n = int(per_class[fold])
            if start + n > len(members):
                raise DataError(f"class {c} has {len(members)} items, fewer than the "
                                f"{sum(int(per_class[f]) for f in FOLDS[:-1])} the split needs")
            tags[members[start:start + n]] = k
            start += n
    return {fold: np.flatnonzero(tags == k) for k, fold in enumerate(FOLDS)}


def split_shuffled(n: int, sizes: Mapping[str, int], seed: int) -> dict[str, np.ndarray]:
    """h2q's multi-label split: a list of fold tags (train, query, val, rest database)
    shuffled with ``random.Random(seed)``; each fold keeps source order."""
    fixed = [int(sizes[f]) for f in FOLDS[:-1]]
    if sum(fixed) > n:
        raise DataError(f"only {n} usable items, fewer than the {sum(fixed)} that "
                        f"train/query/val need ({dict(zip(FOLDS, fixed))})")
    tags = [k for k, size in enumerate(fixed) for _ in range(size)]
    tags += [len(FOLDS) - 1] * (n - sum(fixed))
    random.Random(seed).shuffle(tags)
    arr = np.asarray(tags, dtype=np.int64)
    return {fold: np.flatnonzero(arr == k) for k, fold in enumerate(FOLDS)}


def load_image(path: str | os.PathLike, resize: int | None = RESIZE,
               crop: int | None = CROP) -> np.ndarray | None:
    """Decode to RGB, Resize(shorter side) + CenterCrop exactly as torchvision does on
    PIL images (bilinear; crop offset ``round((h - crop) / 2)``). None if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if resize:
                w, h = im.size
                short, long = (w, h) if w <= h else (h, w)
                new_long = int(resize * long / short)
                size = (resize, new_long) if w <= h else (new_long, resize)
                im = im.resize(size, Image.BILINEAR)
            if crop:
                w, h = im.size
                top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
                im = im.crop((left, top, left + crop, top + crop))
            return np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError):
        return None


class Dataset:
    """Base class. Subclasses set the constants and implement ``prepare``.

    ``sizes`` overrides the split sizes: per class for ``per_class`` datasets
    (keys train/query/val), totals otherwise (database = the rest). Tests use
    it to split tiny fakes. ``variant`` picks one of ``variants`` (default: the
    first, h2q's); it is recorded in the manifest. ``root`` must be a local
    folder (``DataError`` otherwise, before any work).
    """

    name: ClassVar[str]
    num_classes: ClassVar[int]
    multi_label: ClassVar[bool] = False
    image_shape: ClassVar[tuple[int, int, int]] = (CROP, CROP, 3)
    #: fold -> size (database approximate where it depends on the raw data).
    split_sizes: ClassVar[dict[str, int]]
    #: per-class train/query/val counts (per-class datasets only).
    per_class_sizes: ClassVar[dict[str, int] | None] = None
    seed: ClassVar[int] = 0
    #: files/folders (relative to the raw dir) that ``process`` needs.
    raw_files: ClassVar[tuple[str, ...]] = ()
    download_hint: ClassVar[str] = ""
    manual_download: ClassVar[bool] = False
    auto_process: ClassVar[bool] = False
    #: normalisation stats (0..1 scale); None = computed from the train fold.
    mean: ClassVar[tuple[float, ...] | None] = IMAGENET_MEAN
    std: ClassVar[tuple[float, ...] | None] = IMAGENET_STD
    #: "resize256_centercrop224" (done at processing time) or "native".
    transform: ClassVar[str] = "resize256_centercrop224"
    notes: ClassVar[str] = ""
    #: processing variants -> one-line description; the first is the default and
    #: reproduces h2q. Empty: one way only (no ``variant`` key in the manifest).
    variants: ClassVar[dict[str, str]] = {}

    def __init__(self, root: str | os.PathLike = "data", *, raw: str | os.PathLike | None = None,
                 sizes: Mapping[str, int] | None = None, strict: bool = False,
                 workers: int | None = None, progress: bool = False,
                 variant: str | None = None) -> None:
        self.root = local_root(root, f"writing {self.name}")
        self.raw = Path(raw) if raw is not None else self.root / "raw" / self.name
        self.variant = self._check_variant(variant)
        base = self.per_class_sizes if self.per_class_sizes is not None else self.split_sizes
        unknown = set(sizes or {}) - set(FOLDS)
        if unknown:
            raise DataError(f"unknown folds in sizes: {sorted(unknown)}; allowed: {', '.join(FOLDS)}")
        self.sizes = {**base, **(sizes or {})}
        self.strict, self.progress = strict, progress
        self.workers = workers or min(8, (os.cpu_count() or 1) * 2)

    @classmethod
    def _check_variant(cls, variant: str | None) -> str | None:
        if variant is None:
            return next(iter(cls.variants), None)
        if variant not in cls.variants:
            allowed = ", ".join(cls.variants) if cls.variants else "none (drop --variant)"
            raise ConfigError(f"unknown {cls.name} variant {variant!r}; choose from {allowed}")
        return variant

    @classmethod
    def stored_variant(cls, manifest: Mapping[str, Any]) -> str | None:
        """The variant a store was processed with (manifests before variants: override)."""
        return manifest.get("variant")

    # ------------------------------------------------------------- raw data
    def missing_raw(self) -> list[str]:
        return [f for f in self.raw_files if not (self.raw / f).exists()]

    def check_raw(self) -> None:
        missing = self.missing_raw()
        if missing:
            raise DataError(f"{self.name}: missing raw files under {self.raw}: "
                            f"{', '.join(missing)}; {self.hint()}")

    def download(self) -> str:
        """Fetch the raw files into ``self.raw``; returns a summary line to print."""
        raise DataError(f"{self.name} has no automatic download; {self.hint()}")

    def hint(self) -> str:
        return self.download_hint.replace("<root>", str(self.root))

    def prepare(self) -> Prepared:  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------- process
    def process(self) -> Path:
        """Read the raw files and write the store; returns the store directory."""
        self.check_raw()
        prepared = self.prepare()
        writer = StoreWriter(self.root, self.name, self.image_shape)
        writer.begin()
        corrupted: list[str] = []
        for fold in FOLDS:
            src = prepared.folds[fold]
            fw = writer.fold_writer(fold, len(src))
            if src.array is not None:
                for start in range(0, len(src), 4096):
                    fw.write_block(src.array[start:start + 4096], start)
            else:
                corrupted += self._decode_into(fw, src)
            writer.commit_fold(fw, src.labels, src.ids)
        if corrupted and self.strict:
            raise DataError(f"{self.name}: {len(corrupted)} unreadable images (--strict): "
                            f"{', '.join(corrupted[:20])}{' ...' if len(corrupted) > 20 else ''}")
        dropped = {**prepared.dropped, "corrupted": len(corrupted)}
        variant = {"variant": self.variant} if self.variant is not None else {}
        writer.finish(label_names=prepared.label_names, seed=self.seed, mean=self.mean,
                      std=self.std, transform=self.transform, dropped=dropped,
                      corrupted_ids=corrupted[:1000], notes=self.notes,
                      source=str(self.raw), **variant, **prepared.extra)
        log.info("processed %s into %s: %s", self.name, writer.directory, writer.sizes)
        return store_dir(self.root, self.name)

    def _decode_into(self, fw: Any, src: FoldSource) -> list[str]:
        """Decode+resize+crop in threads (PIL releases the GIL), write in order."""
        assert src.paths is not None
        crop = self.image_shape[0] if self.transform != "native" else None
        resize = RESIZE if crop == CROP else crop
        bad: list[str] = []
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=len(src), desc=f"{self.name} {fw.fold}", unit="img")
        with ThreadPoolExecutor(self.workers) as pool:
            for start in range(0, len(src), _DECODE_CHUNK):
                pos = range(start, min(start + _DECODE_CHUNK, len(src)))
                imgs = list(pool.map(lambda i: load_image(src.paths[i], resize, crop), pos))
                imgs = [im if im is None or im.shape == self.image_shape else None for im in imgs]
                bad += [str(src.ids[i]) for i, im in zip(pos, imgs) if im is None]
                fw.write(pos, imgs)
                if bar is not None:
                    bar.update(len(pos))
        if bar is not None:
            bar.close()
        return bad
