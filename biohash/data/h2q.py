"""Import an old-workflow (h2q / BioDeepHashing) processed folder, keeping its splits.

Accepted layout of ``src`` (h2q's ``data/processed/<NAME>/``)::

    <fold>_metadata.txt        one line per item: ``image_path,label`` where label is the
                               0/1 vector separated by spaces (``np.array2string``), e.g.
                               ``data/processed/CIFAR_10/images/a.png,0 0 1 0 0 0 0 0 0 0``
      (or <fold>/metadata.txt) (also accepted: ``image_path 0 0 1 ...``)
    images/<file>              the images (PNG/JPEG)
    label_names.txt            optional CSV ``id,name`` (h2q writes it)

for the four folds. ``image_path`` is tried as written (absolute or relative to
the working directory), then relative to the folder above ``data/`` (h2q wrote
paths relative to its repository root), then as ``src/images/<file>`` and
``src/<fold>/<file>``. Images get the dataset's usual processing transform.
Labels are kept exactly as h2q wrote them (MS_COCO: all 90 columns, the ten
unused ones included), so the store reproduces h2q's folds and label widths;
the width must equal the dataset's ``num_classes``. A malformed line fails the
import with ``DataError`` naming the file and line, before any image is read.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np

from biohash.data.base import DATASETS, FoldSource, Prepared
from biohash.data.store import FOLDS
from biohash.errors import DataError

__all__ = ["import_h2q"]


def import_h2q(src_dir: str | os.PathLike, root: str | os.PathLike = "data",
               name: str = "CIFAR_10", **kwargs: Any) -> Path:
    """Convert the old processed folder ``src_dir`` into the store ``<root>/processed/<name>``.

    ``kwargs`` go to the dataset class (``strict``, ``workers``, ``progress``).
    """
    cls = DATASETS.get(name)
    importer = type(f"{cls.__name__}FromH2Q", (cls,), {
        "missing_raw": _missing, "prepare": _prepare, "seed": None,
        "notes": "imported from the old workflow's folder; splits kept as they were",
        "download_hint": "expected the old layout: <fold>_metadata.txt files and images/ "
                         "(see biohash.data.h2q)",
    })
    return importer(root, raw=src_dir, **kwargs).process()


def _metadata_file(src: Path, fold: str) -> Path | None:
    for candidate in (src / f"{fold}_metadata.txt", src / fold / "metadata.txt"):
        if candidate.is_file():
            return candidate
    return None


def _missing(self) -> list[str]:
    if not self.raw.is_dir():
        return [f"{self.raw} (not a directory)"]
    return [f"{f}_metadata.txt" for f in FOLDS if _metadata_file(self.raw, f) is None]


def _parse_line(line: str, where: str) -> tuple[str, list[int]]:
    """``path,0 1 0 ...`` or ``path 0 1 0 ...`` -> (path, vector); ``where`` = file:line."""
    if "," in line:
        path, vector = line.rsplit(",", 1)
        path, tokens = path.strip().strip('"'), vector.split()
    else:
        path, *tokens = line.split()
    bad = next((t for t in tokens if t not in ("0", "1")), None)
    if not path or not tokens or bad is not None:
        shown = bad if bad is not None else line.strip()[:80]
        raise DataError(f"{where}: bad metadata line (value {shown!r}); expected "
                        f"'image_path,0 1 0 ...' with a 0/1 label vector")
    return path, [int(t) for t in tokens]


def _resolve(src: Path, fold: str, listed: str) -> Path:
    p = Path(listed)
    parts = p.parts
    candidates = [p]
    if "data" in parts:  # h2q paths are relative to the repository root above data/
        k = len(parts) - 1 - parts[::-1].index("data")
        candidates.append(src.joinpath(*[".."] * _depth_below_data(src)).joinpath(*parts[k + 1:]))
    candidates += [src / "images" / p.name, src / fold / p.name]
    return next((c for c in candidates if c.is_file()), candidates[-2])


def _depth_below_data(src: Path) -> int:
    """How many levels ``src`` sits below its nearest ``data`` ancestor (data/processed/X -> 2)."""
    parts = src.resolve().parts
    return len(parts) - 1 - parts[::-1].index("data") if "data" in parts else 0


def _label_names(src: Path, width: int) -> list[str]:
    """Column names from h2q's ``label_names.txt`` (``id,name``); MS_COCO's ids start at
    1 (column = id - 1) and its unnamed columns become ``unused_<id>``, as when processing."""
    names = [str(k) for k in range(width)]
    path = src / "label_names.txt"
    if not path.is_file():
        return names
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if len(r) >= 2 and r[0].strip().lstrip("-").isdigit()]
    ids = [int(r[0]) for r in rows]
    shift = 1 if ids and min(ids) == 1 and max(ids) == width else 0  # h2q MS_COCO: id - 1
    if shift:
        names = [f"unused_{k + 1}" for k in range(width)]
    for i, r in zip(ids, rows):
        if 0 <= i - shift < width:
            names[i - shift] = r[-1].strip()
    return names


def _prepare(self) -> Prepared:
    src = self.raw
    parsed = {}
    for fold in FOLDS:
        path = _metadata_file(src, fold)
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: unreadable metadata file ({exc})") from None
        items = []
        for k, line in enumerate(lines, 1):
            if not line.strip():
                continue
            image, vector = _parse_line(line, f"{path}:{k}")
            if len(vector) != self.num_classes:
                raise DataError(f"{path}:{k}: {len(vector)} label columns, but {self.name} "
                                f"has {self.num_classes}; wrong --name?")
            items.append((image, vector))
        if not items:  # an empty fold would be imported and fail later, in training
            raise DataError(f"{path}: no items; each fold needs lines 'image_path,0 1 0 ...'")
        parsed[fold] = items
    labels = {f: np.asarray([v for _, v in items], np.uint8).reshape(-1, self.num_classes)
              for f, items in parsed.items()}
    folds = {}
    for fold, items in parsed.items():
        paths = [_resolve(src, fold, p) for p, _ in items]
        folds[fold] = FoldSource([p.name for p in paths], labels[fold], paths=paths)
    return Prepared(folds, _label_names(src, self.num_classes),
                    extra={"h2q_label_columns": self.num_classes, "imported_from": str(src)})
