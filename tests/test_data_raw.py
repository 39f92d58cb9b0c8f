"""Processing from tiny fakes written in each real raw format, h2q import, interruption."""
from __future__ import annotations

import json
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from biohash.data import DATASETS, FOLDS, open_store, process
from biohash.data.base import load_image
from biohash.data.h2q import import_h2q
from biohash.data.store import MANIFEST, store_dir
from biohash.errors import ConfigError, DataError

RNG = np.random.default_rng(0)


def _jpeg(path: Path, w: int = 300, h: int = 260) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RNG.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path, quality=80)


def _sizes_ok(store, sizes):
    assert {f: store.sizes[f] for f in ("train", "query", "val")} == sizes
    ids = [set(store.fold(f).ids.tolist()) for f in FOLDS]
    assert sum(map(len, ids)) == len(set.union(*ids))  # disjoint folds


# ------------------------------------------------------------------ CIFAR-10
def _write_cifar(raw: Path, per_class: int = 12) -> tuple[np.ndarray, np.ndarray]:
    folder = raw / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    n = 10 * per_class
    labels = np.tile(np.arange(10), per_class)
    RNG.shuffle(labels)
    images = RNG.integers(0, 255, (n, 3, 32, 32), dtype=np.uint8)
    chunks = np.array_split(np.arange(n), 6)
    for name, ix in zip([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], chunks):
        batch = {b"data": images[ix].reshape(len(ix), -1), b"labels": labels[ix].tolist(),
                 b"filenames": [f"img_{i}.png".encode() for i in ix]}
        (folder / name).write_bytes(pickle.dumps(batch))
    meta = {b"label_names": [f"class{c}".encode() for c in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return images, labels


def test_cifar_pickles(tmp_path):
    images, labels = _write_cifar(tmp_path / "raw" / "CIFAR_10")
    sizes = {"train": 5, "query": 2, "val": 2}
    process("CIFAR_10", tmp_path, sizes=sizes)
    store = open_store("CIFAR_10", tmp_path)
    assert store.sizes == {"train": 50, "query": 20, "val": 20, "database": 30}
    assert store.label_names == [f"class{c}" for c in range(10)] and store.image_shape == (32, 32, 3)
    for fold in FOLDS:
        f = store.fold(fold)
        per = {"train": 5, "query": 2, "val": 2, "database": 3}[fold]
        assert (f.labels.sum(0) == per).all() and (f.labels.sum(1) == 1).all()
        src = np.asarray([int(i[4:-4]) for i in f.ids])
        assert (f.labels.argmax(1) == labels[src]).all()
        assert np.array_equal(f.images, images[src].transpose(0, 2, 3, 1))  # CHW -> HWC
    # Exactly h2q's rule: random.seed(0); shuffle all indices; per class first 5 -> train.
    order = list(range(120))
    random.Random(0).shuffle(order)
    h2q_train = sorted(j for c in range(10) for j in [i for i in order if labels[i] == c][:5])
    assert [int(i[4:-4]) for i in store.fold("train").ids] == h2q_train
    assert store.mean == pytest.approx((0.485, 0.456, 0.406))


# ------------------------------------------------------------------ NUS-WIDE
def _write_nus(raw: Path, n: int = 60, concepts: int = 23) -> np.ndarray:
    names = [f"concept{c:02d}" for c in range(concepts)]
    (raw / "Concepts81.txt").parent.mkdir(parents=True)
    (raw / "Concepts81.txt").write_text("\n".join(names) + "\n")
    p = np.linspace(0.5, 0.05, concepts)  # concept k less frequent than k-1
    labels = (RNG.random((n, concepts)) < p).astype(np.uint8)
    labels[:4] = 0  # four images with no concept at all
    labels[4:, 0] = np.maximum(labels[4:, 0], labels[4:, 21:].any(1))  # keep them labelled
    gt = raw / "Groundtruth" / "AllLabels"
    gt.mkdir(parents=True)
    for c, name in enumerate(names):
        (gt / f"Labels_{name}.txt").write_text("".join(f"{v}\n" for v in labels[:, c]))
    lines = [f"C:\\ImageData\\Flickr\\topic\\{i:04d}_{1000 + i}.jpg" for i in range(n)]
    (raw / "ImageList").mkdir()
    (raw / "ImageList" / "Imagelist.txt").write_text("\r\n".join(lines) + "\r\n")
    for i in range(n):
        if i not in (5, 6):  # two dead links: never downloaded
            _jpeg(raw / "images" / f"{i:04d}_{1000 + i}.jpg")
    (raw / "images" / f"{7:04d}_{1007}.jpg").write_bytes(b"not a jpeg")  # corrupted
    return labels


def test_nus_wide(tmp_path):
    labels = _write_nus(tmp_path / "raw" / "NUS_WIDE")
    sizes = {"train": 10, "query": 5, "val": 5}
    with pytest.raises(DataError, match="1 unreadable images.*0007_1007.jpg"):
        process("NUS_WIDE", tmp_path, sizes=sizes, strict=True)
    assert not (store_dir(tmp_path, "NUS_WIDE") / MANIFEST).exists()
    process("NUS_WIDE", tmp_path, sizes=sizes)
    store = open_store("NUS_WIDE", tmp_path)
    m = store.manifest
    assert m["dropped"] == {"no_labels": 4, "missing": 2, "corrupted": 1}
    assert sum(store.sizes.values()) == 60 - 4 - 2 - 1
    assert store.num_classes == 21 and store.image_shape == (224, 224, 3)
    freq = labels.sum(0)
    top = np.argsort(-freq, kind="stable")[:21]
    assert store.label_names == [f"concept{c:02d}" for c in top]
    for fold in FOLDS:
        f = store.fold(fold)
        src = np.asarray([int(i[:4]) for i in f.ids])
        assert np.array_equal(f.labels, labels[src][:, top]) and f.labels.any(1).all()
        assert f.images.shape == (len(f), 224, 224, 3)
    first = store.fold("train")
    expected = load_image(tmp_path / "raw" / "NUS_WIDE" / "images" / first.ids[0])
    assert np.array_equal(first.images[0], expected)
    # sizes of train/query/val unless a corrupted image fell into them
    assert sum(store.sizes[f] for f in ("train", "query", "val")) >= 19
    assert store.verify() == []


def test_resize_crop_matches_torchvision(tmp_path):
    from torchvision import transforms as T

    _jpeg(tmp_path / "a.jpg", 333, 251)
    tv = T.Compose([T.Resize(256), T.CenterCrop(224)])
    with Image.open(tmp_path / "a.jpg") as im:
        expected = np.asarray(tv(im.convert("RGB")))
    assert np.array_equal(load_image(tmp_path / "a.jpg"), expected)


# ------------------------------------------------------------------ MS-COCO
COCO_CATS = (1, 2, 4, 7, 90)  # non-contiguous ids, the largest is COCO's 90


def _write_coco(raw: Path) -> dict[str, set[int]]:
    """Fake 2014 release: images listed out of id order, 4 without annotations, one
    annotated image whose file is missing. Returns file -> category ids."""
    cats = [{"id": i, "name": f"cat{i}"} for i in COCO_CATS]
    truth = {}
    for part, n in (("train2014", 20), ("val2014", 10)):
        images, anns = [], []
        for i in RNG.permutation(n).tolist():
            image_id = (1 if part == "train2014" else 2) * 1000 + i
            file = f"COCO_{part}_{image_id:012d}.jpg"
            images.append({"id": image_id, "file_name": file})
            if not (part == "val2014" and i == 5):  # listed but never downloaded
                _jpeg(raw / part / file, 200, 240)
            truth[file] = set()
            if i % 7 == 3:
                continue  # no annotation
            truth[file] = {cats[i % 5]["id"], cats[(i * 3) % 5]["id"]}
            anns += [{"id": len(anns), "image_id": image_id, "category_id": c}
                     for c in sorted(truth[file])]
        (raw / "annotations").mkdir(parents=True, exist_ok=True)
        meta = {"images": images, "annotations": anns, "categories": cats[::-1]}
        (raw / "annotations" / f"instances_{part}.json").write_text(json.dumps(meta))
    return truth


def _h2q_coco_folds(raw: Path, sizes: dict[str, int]) -> dict[str, list[tuple[str, list[int]]]]:
    """h2q's src/data/process/MS_COCO.py restated: images of train then val in file order
    (only files that exist), labels at category_id - 1 over max(id) columns, unlabeled
    images kept; fold tags train/query/val/database shuffled after random.seed(0)."""
    items = []
    for part in ("train2014", "val2014"):
        meta = json.loads((raw / "annotations" / f"instances_{part}.json").read_text())
        width = max(c["id"] for c in meta["categories"])
        present = [img for img in meta["images"] if (raw / part / img["file_name"]).exists()]
        label = {img["id"]: [0] * width for img in present}
        for ann in meta["annotations"]:
            if ann["image_id"] in label:
                label[ann["image_id"]][ann["category_id"] - 1] = 1
        items += [(img["file_name"], label[img["id"]]) for img in present]
    tags = (["train"] * sizes["train"] + ["query"] * sizes["query"] + ["val"] * sizes["val"]
            + ["database"] * (len(items) - sum(sizes.values())))
    random.seed(0)
    random.shuffle(tags)
    return {f: [item for item, tag in zip(items, tags) if tag == f] for f in FOLDS}


def test_ms_coco_default_reproduces_h2q_folds(tmp_path):
    raw = tmp_path / "raw" / "MS_COCO"
    truth = _write_coco(raw)
    sizes = {"train": 8, "query": 4, "val": 4}
    process("MS_COCO", tmp_path, sizes=sizes)
    store = open_store("MS_COCO", tmp_path)
    expected = _h2q_coco_folds(raw, sizes)
    for fold in FOLDS:
        f = store.fold(fold)
        assert f.ids.tolist() == [file for file, _ in expected[fold]]
        assert f.labels.tolist() == [label for _, label in expected[fold]]
    m = store.manifest
    assert m["variant"] == "h2q" and store.variant == "h2q"
    assert m["dropped"] == {"missing": 1, "corrupted": 0}
    assert m["unlabeled_kept"] == 4 and sum(store.sizes.values()) == len(truth) - 1
    assert store.num_classes == 90 and store.label_names[89] == "cat90"
    assert store.label_names[:4] == ["cat1", "cat2", "unused_3", "cat4"]
    everything = np.concatenate([store.fold(f).labels for f in FOLDS])
    assert set(np.flatnonzero(everything.any(0))) == {c - 1 for c in COCO_CATS}
    assert not everything.any(1).all()  # unlabeled images stay, with all-zero rows


def test_ms_coco_clean80_variant(tmp_path):
    truth = _write_coco(tmp_path / "raw" / "MS_COCO")
    process("MS_COCO", tmp_path, sizes={"train": 8, "query": 4, "val": 4}, variant="clean80")
    store = open_store("MS_COCO", tmp_path)
    _sizes_ok(store, {"train": 8, "query": 4, "val": 4})
    assert store.manifest["variant"] == "clean80" and store.variant == "clean80"
    assert store.manifest["dropped"] == {"no_labels": 4, "missing": 1, "corrupted": 0}
    assert sum(store.sizes.values()) == sum(1 for c in truth.values() if c) - 1
    assert store.label_names == ["cat1", "cat2", "cat4", "cat7", "cat90"]  # contiguous columns
    column = {1: 0, 2: 1, 4: 2, 7: 3, 90: 4}
    for fold in FOLDS:
        f = store.fold(fold)
        for file, row in zip(f.ids, f.labels):
            assert set(np.flatnonzero(row)) == {column[c] for c in truth[file]}
    q, db = store.fold("query").labels, store.fold("database").labels
    assert ((q.astype(int) @ db.T.astype(int)) > 0).any()  # relevance works
    # A store written before variants existed (no key) was biohash's clean processing.
    manifest = dict(store.manifest)
    del manifest["variant"]
    assert DATASETS.get("MS_COCO").stored_variant(manifest) == "clean80"
    with pytest.raises(ConfigError, match="unknown MS_COCO variant 'clean'; choose from h2q, clean80"):
        process("MS_COCO", tmp_path, variant="clean")
    with pytest.raises(ConfigError, match="unknown CIFAR_10 variant 'h2q'; choose from none"):
        process("CIFAR_10", tmp_path, variant="h2q")


# ------------------------------------------------------------------ ImageNet
def _write_imagenet(raw: Path) -> None:
    def line(path, c):
        v = np.zeros(100, int)
        v[c] = 1
        return path + " " + " ".join(map(str, v))

    lists = raw / "hashnet"
    lists.mkdir(parents=True)
    images = raw / "ILSVRC" / "Data" / "CLS-LOC"
    old = "/home/someone/dataset/imagenet"
    rows = {"train": [], "database": [], "test": []}
    for c in range(3):
        wnid = f"n{1440764 + c:08d}"
        for k in range(6):
            file = f"{wnid}_{k}.JPEG"
            _jpeg(images / "train" / wnid / file, 250, 300)
            rows["train" if k < 2 else "database"].append(line(f"{old}/image/{file}", c))
        for k in range(2):
            file = f"ILSVRC2012_val_{c * 2 + k:08d}.JPEG"
            _jpeg(images / "val" / file, 250, 300)
            rows["test"].append(line(f"{old}/val_image/{file}", c))
    for name, r in rows.items():
        (lists / f"{name}.txt").write_text("\n".join(r) + "\n")


def test_imagenet_lists(tmp_path):
    _write_imagenet(tmp_path / "raw" / "ImageNet")
    process("ImageNet", tmp_path)
    store = open_store("ImageNet", tmp_path)
    assert store.sizes == {"train": 6, "query": 3, "val": 3, "database": 12}
    assert store.fold("query").ids.tolist() == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in (0, 2, 4)]
    assert store.num_classes == 100 and store.label_names[:3] == ["n01440764", "n01440765",
                                                                  "n01440766"]
    assert (store.fold("database").labels.sum(1) == 1).all()


# ------------------------------------------------------------------ h2q import
def test_import_h2q(tmp_path):
    src = tmp_path / "old" / "data" / "processed" / "CIFAR_10"
    (src / "images").mkdir(parents=True)
    expected = {}
    for fold, n in (("train", 6), ("query", 3), ("val", 3), ("database", 8)):
        lines = []
        for i in range(n):
            name = f"{fold}_{i}.png"
            img = RNG.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(img).save(src / "images" / name)
            label = np.eye(10, dtype=int)[i % 10]
            lines.append(f"data/processed/CIFAR_10/images/{name},{np.array2string(label).strip('[]')}")
            expected[name] = (img, label)
        (src / f"{fold}_metadata.txt").write_text("\n".join(lines) + "\n")
    (src / "label_names.txt").write_text("id,name\n" + "".join(f"{c},c{c}\n" for c in range(10)))
    import_h2q(src, tmp_path / "new", "CIFAR_10")
    store = open_store("CIFAR_10", tmp_path / "new")
    assert store.sizes == {"train": 6, "query": 3, "val": 3, "database": 8}
    assert store.label_names == [f"c{c}" for c in range(10)]
    for fold in FOLDS:
        f = store.fold(fold)
        assert all(i.startswith(fold) for i in f.ids)
        for name, img, label in zip(f.ids, f.images, f.labels):
            assert np.array_equal(img, expected[name][0]) and np.array_equal(label, expected[name][1])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="missing raw files.*train_metadata.txt.*old layout"):
        import_h2q(tmp_path / "empty", tmp_path / "new2", "CIFAR_10")
    with pytest.raises(DataError, match="not a directory"):
        import_h2q(tmp_path / "nothing", tmp_path / "new2", "CIFAR_10")


def _h2q_folder(src: Path, width: int, n: int = 3, side: int = 230) -> None:
    """An old processed folder: ``n`` items per fold, ``width`` label columns, side x side
    images (CIFAR_10 keeps 32 x 32; larger ones would count as unreadable)."""
    (src / "images").mkdir(parents=True)
    for fold in FOLDS:
        lines = []
        for i in range(n):
            name = f"{fold}_{i}.jpg"
            _jpeg(src / "images" / name, side, side)
            label = np.zeros(width, int)
            label[[i, width - 1] if i else []] = 1  # item 0 unlabeled, as h2q's COCO keeps them
            # h2q: np.array2string wraps long vectors; .replace("\n", "") leaves double spaces
            vector = np.array2string(label).strip("[]").replace("\n", "")
            lines.append(f"data/processed/MS_COCO/images/{name},{vector}")
        (src / f"{fold}_metadata.txt").write_text("\n".join(lines) + "\n")


def test_import_h2q_coco_keeps_90_columns(tmp_path):
    src = tmp_path / "old" / "data" / "processed" / "MS_COCO"
    _h2q_folder(src, 90)
    (src / "label_names.txt").write_text("id,name\n1,person\n2,bicycle\n90,toothbrush\n")
    import_h2q(src, tmp_path / "new", "MS_COCO")
    store = open_store("MS_COCO", tmp_path / "new")
    assert store.num_classes == 90 and store.variant == "h2q"
    assert store.label_names[:3] == ["person", "bicycle", "unused_3"]
    assert store.label_names[89] == "toothbrush"
    train = store.fold("train")
    assert train.ids.tolist() == ["train_0.jpg", "train_1.jpg", "train_2.jpg"]
    assert train.labels[0].sum() == 0 and np.flatnonzero(train.labels[2]).tolist() == [2, 89]
    # p over the 3 x 3 pairs: items 1 and 2 share column 89 -> 4 similar pairs of 9.
    assert store.similar_probability == pytest.approx(4 / 9)


@pytest.mark.parametrize("line, shown", [
    ("data/x/a.png,0 2 0 0 0 0 0 0 0 0", "'2'"),
    ("data/x/a.png,0 0 O 0 0 0 0 0 0 0", "'O'"),
    ("data/x/a.png,", "'data/x/a.png,'"),
])
def test_import_h2q_malformed_label_line(tmp_path, line, shown):
    src = tmp_path / "old"
    _h2q_folder(src, 10, n=1)
    bad = src / "val_metadata.txt"
    bad.write_text(bad.read_text() + line + "\n")
    with pytest.raises(DataError, match=f"val_metadata.txt:2: bad metadata line \\(value {shown}"):
        import_h2q(src, tmp_path / "new", "CIFAR_10")
    assert not (store_dir(tmp_path / "new", "CIFAR_10") / MANIFEST).exists()


def test_import_h2q_wrong_width_names_file_and_line(tmp_path):
    src = tmp_path / "old"
    _h2q_folder(src, 90, n=2)
    with pytest.raises(DataError, match="train_metadata.txt:1: 90 label columns, but CIFAR_10 "
                                        "has 10; wrong --name"):
        import_h2q(src, tmp_path / "new", "CIFAR_10")


def test_import_h2q_cli_uses_env_root(tmp_path, monkeypatch, capsys):
    from biohash.cli import main

    src = tmp_path / "old"
    _h2q_folder(src, 10, n=2, side=32)
    monkeypatch.setenv("BIOHASH_DATA_ROOT", str(tmp_path / "env"))
    assert main(["data", "import-h2q", str(src), "--name", "CIFAR_10"]) == 0
    assert open_store("CIFAR_10", tmp_path / "env").sizes == {f: 2 for f in FOLDS}
    capsys.readouterr()  # drop the progress bars
    (src / "query_metadata.txt").write_text("images/q.jpg,0 0 1 0 0 0 0 0 0 x\n")
    assert main(["data", "import-h2q", str(src), "--name", "CIFAR_10"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "query_metadata.txt:1: bad metadata line (value 'x')" in err


def test_imagenet_download_with_images_in_place_fetches_nothing(tmp_path):
    """The cluster recipe: images copied by hand, lists present -> no network, next step."""
    raw = tmp_path / "raw" / "ImageNet"
    _write_imagenet(raw)
    message = DATASETS.get("ImageNet")(tmp_path).download()
    assert "images found under" in message and "manual download" not in message
    assert message.endswith(f"next: biohash data process ImageNet --root {tmp_path}")
    shutil.rmtree(raw / "ILSVRC")
    assert "images need a manual download" in DATASETS.get("ImageNet")(tmp_path).download()


# ------------------------------------------------------------------ interruption
class _Boom(np.ndarray):
    """An in-memory image array that fails when the writer reaches it."""

    def __getitem__(self, key):
        raise KeyboardInterrupt


def test_interrupted_process_leaves_no_manifest(tmp_path, monkeypatch):
    open_store("DIGITS", tmp_path)  # a complete store exists
    cls = DATASETS.get("DIGITS")
    real = cls.prepare

    def failing(self):
        prepared = real(self)
        prepared.folds["val"].array = prepared.folds["val"].array.view(_Boom)
        return prepared

    monkeypatch.setattr(cls, "prepare", failing)
    with pytest.raises(KeyboardInterrupt):
        cls(tmp_path).process()
    directory = store_dir(tmp_path, "DIGITS")
    assert not (directory / MANIFEST).exists()
    assert list(directory.glob(".*.partial"))  # half-written fold left under a temp name
    monkeypatch.setattr(cls, "prepare", real)
    assert open_store("DIGITS", tmp_path).sizes["val"] == 180  # reprocessed on open
    assert not list(directory.glob(".*.partial"))
