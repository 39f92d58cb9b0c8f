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
Label columns that are zero in every fold (h2q's 10 unused MS_COCO columns)
are removed so the width matches the dataset's class count.
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


def _parse_line(line: str) -> tuple[str, list[int]]:
    if "," in line:
        path, vector = line.rsplit(",", 1)
        return path.strip().strip('"'), [int(v) for v in vector.split()]
    path, *vector = line.split()
    return path, [int(v) for v in vector]


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
    names = [str(k) for k in range(width)]
    path = src / "label_names.txt"
    if not path.is_file():
        return names
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if len(r) >= 2 and r[0].strip().lstrip("-").isdigit()]
    ids = [int(r[0]) for r in rows]
    shift = 1 if ids and min(ids) == 1 and max(ids) == width else 0  # h2q MS_COCO: id - 1
    for i, r in zip(ids, rows):
        if 0 <= i - shift < width:
            names[i - shift] = r[-1].strip()
    return names


def _prepare(self) -> Prepared:
    src = self.raw
    parsed = {}
    for fold in FOLDS:
        lines = [ln for ln in _metadata_file(src, fold).read_text().splitlines() if ln.strip()]
        parsed[fold] = [_parse_line(ln) for ln in lines]
    widths = {len(v) for items in parsed.values() for _, v in items}
    if len(widths) != 1:
        raise DataError(f"{src}: label vectors of different lengths {sorted(widths)}")
    width = widths.pop()
    labels = {f: np.asarray([v for _, v in items], np.uint8).reshape(-1, width)
              for f, items in parsed.items()}
    names = _label_names(src, width)
    keep = np.arange(width)
    if width != self.num_classes:
        keep = np.flatnonzero(np.concatenate(list(labels.values())).any(0))
        if len(keep) != self.num_classes:
            raise DataError(f"{src}: {width} label columns ({len(keep)} used), but "
                            f"{self.name} has {self.num_classes} classes; wrong --name?")
    folds = {}
    for fold, items in parsed.items():
        paths = [_resolve(src, fold, p) for p, _ in items]
        folds[fold] = FoldSource([p.name for p in paths], labels[fold][:, keep], paths=paths)
    return Prepared(folds, [names[k] for k in keep],
                    extra={"h2q_label_columns": int(width), "imported_from": str(src)})
