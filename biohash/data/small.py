"""Small datasets: CIFAR-10 (python pickle release) and the embedded DIGITS sets.

These keep their native image size in the store (32x32, 8x8); the loader
resizes on the device when asked (``BatchLoader(image_size=224)`` reproduces
h2q's Resize(256)+CenterCrop(224) upsampling of CIFAR).
"""
from __future__ import annotations

import pickle
from typing import ClassVar

import numpy as np

from biohash.data.base import DATASETS, Dataset, FoldSource, Prepared, split_per_class
from biohash.errors import DataError

__all__ = ["CIFAR10", "Digits", "DigitsML"]


def _one_hot(classes: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((len(classes), n), dtype=np.uint8)
    out[np.arange(len(classes)), classes] = 1
    return out


class _PerClass(Dataset):
    """Single-label set split per class (h2q's CIFAR rule)."""

    def _folds(self, images: np.ndarray, classes: np.ndarray, ids: list[str]) -> dict:
        idx = split_per_class(classes, self.sizes, self.seed)
        labels = _one_hot(classes, self.num_classes)
        return {f: FoldSource([ids[i] for i in ix], labels[ix], array=images[ix])
                for f, ix in idx.items()}


@DATASETS.register("CIFAR_10")
class CIFAR10(_PerClass):
    """All 60k images pooled; 500/100/100 per class for train/query/val (h2q: seed 0)."""

    name = "CIFAR_10"
    num_classes = 10
    image_shape = (32, 32, 3)
    transform = "native"
    per_class_sizes: ClassVar[dict[str, int]] = {"train": 500, "query": 100, "val": 100}
    split_sizes: ClassVar[dict[str, int]] = {"train": 5000, "query": 1000, "val": 1000,
                                             "database": 53000}
    folder = "cifar-10-batches-py"
    batches: ClassVar[tuple[str, ...]] = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
    raw_files = tuple(f"cifar-10-batches-py/{b}" for b in (*batches, "batches.meta"))
    download_hint = "run: biohash data download CIFAR_10 --root <root>"
    notes = "images kept at 32x32; h2q upsampled with Resize(256)+CenterCrop(224): use image_size=224"

    def prepare(self) -> Prepared:
        images, classes, ids = [], [], []
        for batch in self.batches:
            d = _unpickle(self.raw / self.folder / batch)
            data = np.asarray(d[b"data"], dtype=np.uint8)
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # (n, 32, 32, 3)
            classes += list(d[b"labels"])
            names = d.get(b"filenames")
            ids += ([n.decode() for n in names] if names is not None
                    else [f"{batch}/{i}" for i in range(len(data))])
        meta = _unpickle(self.raw / self.folder / "batches.meta")
        label_names = [n.decode() for n in meta[b"label_names"]]
        folds = self._folds(np.concatenate(images), np.asarray(classes, np.int64), ids)
        return Prepared(folds, label_names)

    def download(self) -> str:
        from torchvision.datasets import CIFAR10 as TV

        self.raw.mkdir(parents=True, exist_ok=True)
        TV(str(self.raw), train=True, download=True)  # fetches and checks the whole archive
        return f"CIFAR_10: raw files ready under {self.raw / self.folder}"


def _unpickle(path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except (OSError, pickle.UnpicklingError, EOFError) as exc:
        raise DataError(f"unreadable CIFAR batch {path}: {exc}; re-download it") from None


@DATASETS.register("DIGITS")
class Digits(_PerClass):
    """sklearn's 1,797 8x8 digits (0..16 scaled to 0..255, one channel), no download.

    Per class: 90 train / 18 query / 18 val, the rest (~54) database, i.e.
    900 / 180 / 180 / 537. Processed automatically on first ``open_store``.
    """

    name = "DIGITS"
    num_classes = 10
    image_shape = (8, 8, 1)
    transform = "native"
    auto_process = True
    mean = std = None  # grayscale digits: use train-fold statistics
    per_class_sizes: ClassVar[dict[str, int]] = {"train": 90, "query": 18, "val": 18}
    split_sizes: ClassVar[dict[str, int]] = {"train": 900, "query": 180, "val": 180, "database": 537}

    def _digits(self) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.datasets import load_digits

        d = load_digits()
        images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # (n, 8, 8, 1)
        return images, d.target.astype(np.int64)

    def download(self) -> str:
        return f"{self.name} is built from scikit-learn's digits: nothing to download"

    def prepare(self) -> Prepared:
        images, classes = self._digits()
        ids = [str(i) for i in range(len(classes))]
        return Prepared(self._folds(images, classes, ids), [str(c) for c in range(10)])


@DATASETS.register("DIGITS_ML")
class DigitsML(Digits):
    """Multi-label DIGITS: two digits side by side (8x16), multi-hot of both.

    The DIGITS split is made first; each fold's pairs are drawn (seeded) only
    from that fold's digits, so no source digit is shared between folds.
    Pairs may repeat a class (then the label has a single 1).
    """

    name = "DIGITS_ML"
    multi_label = True
    image_shape = (8, 16, 1)
    per_class_sizes = None
    split_sizes: ClassVar[dict[str, int]] = {"train": 1200, "query": 240, "val": 240, "database": 720}

    def prepare(self) -> Prepared:
        images, classes = self._digits()
        idx = split_per_class(classes, Digits.per_class_sizes, self.seed)
        rng = np.random.default_rng(self.seed)
        folds = {}
        for fold in idx:
            members = idx[fold]
            pairs = rng.choice(members, size=(int(self.sizes[fold]), 2))  # (n, 2) digit indices
            composed = np.concatenate([images[pairs[:, 0]], images[pairs[:, 1]]], axis=2)
            labels = np.zeros((len(pairs), 10), np.uint8)
            labels[np.arange(len(pairs)), classes[pairs[:, 0]]] = 1
            labels[np.arange(len(pairs)), classes[pairs[:, 1]]] = 1
            ids = [f"{a}+{b}" for a, b in pairs.tolist()]
            folds[fold] = FoldSource(ids, labels, array=composed)
        return Prepared(folds, [str(c) for c in range(10)])
