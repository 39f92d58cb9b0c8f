"""Image-folder datasets: NUS-WIDE, MS-COCO 2014 and the HashNet ImageNet subset.

Images are decoded, resized (shorter side 256) and centre-cropped (224) once
at processing time (``biohash.data.base.load_image``), in threads, straight
into the store's memmap. Unreadable images are skipped and counted in the
manifest (``dropped.corrupted``), or fail the run with ``strict=True``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np

from biohash.data.base import DATASETS, Dataset, FoldSource, Prepared, split_shuffled
from biohash.data.download import extract, fetch_many, fetch_url
from biohash.errors import DataError

__all__ = ["NUSWide", "MSCOCO", "ImageNet100"]


def _folds_from_split(idx: dict[str, np.ndarray], ids: list[str], labels: np.ndarray,
                      paths: list[Path]) -> dict[str, FoldSource]:
    return {f: FoldSource([ids[i] for i in ix], labels[ix], paths=[paths[i] for i in ix])
            for f, ix in idx.items()}


def _find(root: Path, relative: str, alternatives: tuple[str, ...] = ()) -> Path | None:
    for rel in (relative, *alternatives):
        if (root / rel).exists():
            return root / rel
    return None


@DATASETS.register("NUS_WIDE")
class NUSWide(Dataset):
    """NUS-WIDE: the 21 most frequent of the 81 concepts; items with none are dropped.

    Raw layout (h2q's): ``Concepts81.txt``, ``Groundtruth/AllLabels/Labels_<c>.txt``
    (or ``AllLabels/``), ``ImageList/Imagelist.txt`` and ``images/<file name>``
    (the last component of each Imagelist line). Concept frequencies are counted
    over all listed images, as h2q did; not-downloaded images are then dropped.
    """

    name = "NUS_WIDE"
    num_classes = 21
    multi_label = True
    split_sizes: ClassVar[dict[str, int]] = {"train": 10500, "query": 2100, "val": 2100,
                                             "database": 170000}
    raw_files = ("Concepts81.txt", "Groundtruth/AllLabels", "ImageList/Imagelist.txt", "images")
    download_hint = "run: biohash data download NUS_WIDE --root <root>"
    base_url = "https://lms.comp.nus.edu.sg/wp-content/uploads/2019/research/nuswide/"
    archives: ClassVar[tuple[str, ...]] = ("Groundtruth.zip", "ConceptsList.zip", "ImageList.zip",
                                           "NUS-WIDE-urls.rar")
    url_column = 2  # NUS-WIDE-urls.txt: Photo_file Photo_id url_Large url_Middle url_Small url_Original

    def missing_raw(self) -> list[str]:
        missing = super().missing_raw()
        if "Groundtruth/AllLabels" in missing and (self.raw / "AllLabels").is_dir():
            missing.remove("Groundtruth/AllLabels")
        return missing

    def prepare(self) -> Prepared:
        concepts = (self.raw / "Concepts81.txt").read_text().split()
        labels_dir = _find(self.raw, "Groundtruth/AllLabels", ("AllLabels",))
        columns = []
        for c in concepts:
            path = labels_dir / f"Labels_{c}.txt"
            if not path.is_file():
                raise DataError(f"NUS_WIDE: missing {path}; re-extract Groundtruth.zip")
            columns.append(np.asarray(path.read_bytes().split(), dtype=np.uint8))
        all_labels = np.stack(columns, axis=1)  # (269648, 81)
        keep_cols = np.argsort(-all_labels.sum(0), kind="stable")[: self.num_classes]
        labels = np.ascontiguousarray(all_labels[:, keep_cols])
        names = [re.split(r"[\\/]", line.strip())[-1]
                 for line in (self.raw / "ImageList" / "Imagelist.txt").read_text().splitlines()
                 if line.strip()]
        if len(names) != len(labels):
            raise DataError(f"NUS_WIDE: Imagelist.txt has {len(names)} lines but the label "
                            f"files have {len(labels)}; re-extract the raw archives")
        has_label = labels.any(1)
        paths = [self.raw / "images" / n for n in names]
        present = np.asarray([p.is_file() for p in paths])
        usable = np.flatnonzero(has_label & present)
        dropped = {"no_labels": int((~has_label).sum()),
                   "missing": int((has_label & ~present).sum())}
        idx = split_shuffled(len(usable), self.sizes, self.seed)
        idx = {f: usable[ix] for f, ix in idx.items()}
        return Prepared(_folds_from_split(idx, names, labels, paths),
                        [concepts[i] for i in keep_cols], dropped)

    def download(self) -> str:
        for archive in self.archives:
            target = fetch_url(self.base_url + archive, self.raw / "archives" / archive)
            extract(target, self.raw)
        urls_file = next(iter(self.raw.rglob("NUS-WIDE-urls.txt")), None)
        if urls_file is None:
            raise DataError(f"NUS_WIDE: NUS-WIDE-urls.txt not found under {self.raw} after "
                            "extracting NUS-WIDE-urls.rar")
        items = []
        for line in urls_file.read_text().splitlines()[1:]:
            cols = line.split()
            if len(cols) > self.url_column:
                name = re.split(r"[\\/]", cols[0])[-1]
                items.append((cols[self.url_column], self.raw / "images" / name))
        (self.raw / "images").mkdir(parents=True, exist_ok=True)
        ok, dead = fetch_many(items)
        (self.raw / "dead_links.txt").write_text("\n".join(dead) + ("\n" if dead else ""))
        return (f"NUS_WIDE: {ok} of {len(items)} images present, {len(dead)} dead links "
                f"(listed in {self.raw / 'dead_links.txt'}); re-run to retry")


@DATASETS.register("MS_COCO")
class MSCOCO(Dataset):
    """MS-COCO 2014 train+val with instance annotations, in one of two variants.

    ``h2q`` (default) reproduces h2q's folds: every image of
    ``instances_train2014.json`` then ``instances_val2014.json``, in file order
    (h2q read fiftyone's ``labels.json``, a copy of these files with the same
    image order), images without annotations kept with all-zero labels, 90 label
    columns at ``category_id - 1`` (the ten ids COCO never uses stay 0), then
    h2q's shuffled fold tags (``split_shuffled``).

    ``clean80`` (opt-in) drops images without annotations and keeps the 80
    categories as contiguous columns sorted by id; its folds differ from h2q's
    (another item list is shuffled), so its numbers are not comparable with the
    paper's. Images whose file is missing are dropped in both variants.
    """

    name = "MS_COCO"
    num_classes = 90  # the default variant's label columns (clean80: 80)
    multi_label = True
    split_sizes: ClassVar[dict[str, int]] = {"train": 10000, "query": 5000, "val": 5000,
                                             "database": 103287}
    variants: ClassVar[dict[str, str]] = {
        "h2q": "h2q's folds: unlabeled images kept, 90 columns at category_id - 1",
        "clean80": "unlabeled images dropped, 80 contiguous columns (folds differ from h2q's)",
    }
    parts: ClassVar[tuple[str, ...]] = ("train2014", "val2014")
    raw_files = ("annotations/instances_train2014.json", "annotations/instances_val2014.json",
                 "train2014", "val2014")
    download_hint = "run: biohash data download MS_COCO --root <root>"
    urls: ClassVar[dict[str, tuple[str, str]]] = {  # archive -> (url, md5)
        "annotations_trainval2014.zip": ("http://images.cocodataset.org/annotations/"
                                         "annotations_trainval2014.zip",
                                         "0a379cfc70b0e71301e0f377548639bd"),
        "train2014.zip": ("http://images.cocodataset.org/zips/train2014.zip",
                          "0da8c0bd3d6becc4dcb32757491aca88"),
        "val2014.zip": ("http://images.cocodataset.org/zips/val2014.zip",
                        "a3d79f5ed8d289b7a7554ce06a5782b3"),
    }

    @classmethod
    def stored_variant(cls, manifest: Mapping[str, Any]) -> str | None:
        """Manifests written before variants existed: biohash's own processing was
        ``clean80``; its old ``import-h2q`` kept h2q's folds but dropped the ten
        all-zero columns, which is neither variant (``h2q-cols80``)."""
        if manifest.get("variant"):
            return manifest["variant"]
        if "imported_from" in manifest:
            return "h2q" if len(manifest["label_names"]) == cls.num_classes else "h2q-cols80"
        return "clean80"

    def _annotations(self, part: str) -> dict:
        path = self.raw / "annotations" / f"instances_{part}.json"
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"MS_COCO: unreadable {path}: {exc}") from None

    def _columns(self, categories: list[dict]) -> tuple[dict[int, int], list[str]]:
        """category id -> label column, and the column names, for this variant."""
        cats = sorted(categories, key=lambda c: c["id"])
        if self.variant == "clean80":
            return {c["id"]: k for k, c in enumerate(cats)}, [c["name"] for c in cats]
        width = max(c["id"] for c in cats)  # h2q: the largest id (90), columns at id - 1
        names = [f"unused_{k + 1}" for k in range(width)]
        for c in cats:
            names[c["id"] - 1] = c["name"]
        return {c["id"]: c["id"] - 1 for c in cats}, names

    def prepare(self) -> Prepared:
        keep_unlabeled = self.variant == "h2q"
        ids, rows, paths = [], [], []
        column: dict[int, int] = {}
        names: list[str] = []
        dropped = {"missing": 0} if keep_unlabeled else {"no_labels": 0, "missing": 0}
        unlabeled = 0
        for part in self.parts:  # one annotation file in memory at a time (~0.5 GB each)
            meta = self._annotations(part)
            if not column:  # h2q took the categories from train2014
                column, names = self._columns(meta["categories"])
            positives: dict[int, set[int]] = {}
            for ann in meta["annotations"]:
                if ann["category_id"] not in column:
                    raise DataError(f"MS_COCO: instances_{part}.json annotation {ann.get('id')} "
                                    f"has category_id {ann['category_id']!r}, not among the "
                                    f"categories of instances_{self.parts[0]}.json")
                positives.setdefault(ann["image_id"], set()).add(column[ann["category_id"]])
            for img in meta["images"]:
                cols = positives.get(img["id"], set())
                file = self.raw / part / img["file_name"]
                if not cols and not keep_unlabeled:
                    dropped["no_labels"] += 1
                elif not file.is_file():
                    dropped["missing"] += 1
                else:
                    unlabeled += not cols
                    ids.append(img["file_name"])
                    rows.append(sorted(cols))
                    paths.append(file)
        labels = np.zeros((len(rows), len(names)), np.uint8)
        for i, cols in enumerate(rows):
            labels[i, cols] = 1
        idx = split_shuffled(len(ids), self.sizes, self.seed)
        extra = {"unlabeled_kept": unlabeled} if keep_unlabeled else {}
        return Prepared(_folds_from_split(idx, ids, labels, paths), names, dropped, extra)

    def download(self) -> str:
        for archive, (url, md5) in self.urls.items():
            target = fetch_url(url, self.raw / "archives" / archive, md5=md5)
            extract(target, self.raw)
        return f"MS_COCO: raw files ready under {self.raw}"


_SYNSET = re.compile(r"^(n\d{8})_")


@DATASETS.register("ImageNet")
class ImageNet100(Dataset):
    """The 100-class ImageNet subset of HashNet: its list files define the splits
    (``test.txt`` alternately into query/val, as h2q); images from ILSVRC-2012
    (``ILSVRC/Data/CLS-LOC/{train/<wnid>,val}/<file>``, Kaggle layout)."""

    name = "ImageNet"
    num_classes = 100
    split_sizes: ClassVar[dict[str, int]] = {"train": 13000, "query": 2500, "val": 2500,
                                             "database": 128495}
    lists_dir = "hashnet"
    lists_alt = "hashnet/HashNet/pytorch/data/imagenet"  # h2q's location
    list_url = "https://raw.githubusercontent.com/thuml/HashNet/master/pytorch/data/imagenet/"
    image_roots: ClassVar[tuple[str, ...]] = (
        "ILSVRC/Data/CLS-LOC", "imagenet-object-localization-challenge/ILSVRC/Data/CLS-LOC")
    raw_files = ("hashnet/database.txt", "hashnet/train.txt", "hashnet/test.txt",
                 "ILSVRC/Data/CLS-LOC")
    manual_download = True
    download_hint = ("get the HashNet lists with: biohash data download ImageNet --root <root>; "
                     "ILSVRC-2012 images need a manual download (see that command's output)")

    def missing_raw(self) -> list[str]:
        missing = []
        for f in ("database.txt", "train.txt", "test.txt"):
            if _find(self.raw, f"{self.lists_dir}/{f}", (f"{self.lists_alt}/{f}",)) is None:
                missing.append(f"{self.lists_dir}/{f}")
        if _find(self.raw, self.image_roots[0], self.image_roots[1:]) is None:
            missing.append(self.image_roots[0])
        return missing

    def _resolve(self, images: Path, listed: str) -> Path:
        file = listed.rsplit("/", 1)[-1]
        m = _SYNSET.match(file)
        return images / "train" / m.group(1) / file if m else images / "val" / file

    def prepare(self) -> Prepared:
        images = _find(self.raw, self.image_roots[0], self.image_roots[1:])
        lists = {}
        for f in ("database", "train", "test"):
            lists[f] = _find(self.raw, f"{self.lists_dir}/{f}.txt", (f"{self.lists_alt}/{f}.txt",))
        entries = {f: [line.split() for line in p.read_text().splitlines() if line.strip()]
                   for f, p in lists.items()}
        test = entries.pop("test")
        entries.update(query=test[0::2], val=test[1::2])
        folds, wnids, missing = {}, {}, 0
        for fold in ("train", "query", "val", "database"):
            ids, paths, rows = [], [], []
            for path, *vector in entries[fold]:
                label = np.asarray(vector, dtype=np.uint8)
                if len(label) != self.num_classes:
                    raise DataError(f"ImageNet: bad line in {fold} list: {path} has "
                                    f"{len(label)} labels, expected {self.num_classes}")
                file = self._resolve(images, path)
                if (m := _SYNSET.match(file.name)) and label.any():
                    wnids.setdefault(int(label.argmax()), m.group(1))
                if not file.is_file():
                    missing += 1
                    continue
                ids.append(file.name)
                paths.append(file)
                rows.append(label)
            labels = np.stack(rows) if rows else np.zeros((0, self.num_classes), np.uint8)
            folds[fold] = FoldSource(ids, labels, paths=paths)
        if missing and self.strict:
            raise DataError(f"ImageNet: {missing} listed images are missing under {images}")
        names = [wnids.get(k, str(k)) for k in range(self.num_classes)]
        return Prepared(folds, names, {"missing": missing})

    def download(self) -> str:
        """Fetch only HashNet's three split lists (small text files); never the images.

        Safe to run when the images are already in place (copied by hand): it
        then says the store can be processed.
        """
        for f in ("database.txt", "train.txt", "test.txt"):
            if _find(self.raw, f"{self.lists_dir}/{f}", (f"{self.lists_alt}/{f}",)) is None:
                fetch_url(self.list_url + f, self.raw / self.lists_dir / f, progress=False)
        lists = f"ImageNet: HashNet split lists ready under {self.raw / self.lists_dir}."
        images = _find(self.raw, self.image_roots[0], self.image_roots[1:])
        if images is not None:
            return (f"{lists} ILSVRC-2012 images found under {images}; next: "
                    f"biohash data process ImageNet --root {self.root}")
        return (f"{lists} The ILSVRC-2012 images need a manual download:\n"
                "  1. accept the terms at https://www.kaggle.com/c/imagenet-object-localization-challenge\n"
                "  2. kaggle competitions download -c imagenet-object-localization-challenge\n"
                f"  3. unzip it into {self.raw} (giving {self.raw / self.image_roots[0]}/train and /val)\n"
                f"  4. biohash data process ImageNet --root {self.root}")
