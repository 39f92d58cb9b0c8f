"""biohash.data: registry, DIGITS stores, store format, loader, CLI."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import biohash.data as data
from biohash.data import DATASETS, FOLDS, BatchLoader, open_store
from biohash.data.store import MANIFEST, similar_probability, store_dir
from biohash.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def test_import_is_torch_free():
    code = "import sys, biohash.data; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", DATASETS.names())
def test_registry_constants(name):
    cls = DATASETS.get(name)
    assert set(cls.split_sizes) == set(FOLDS)
    assert cls.num_classes >= 10 and len(cls.image_shape) == 3
    assert isinstance(cls.multi_label, bool)
    assert data.missing_message(name, "somewhere").startswith(f"dataset {name} is not processed")


def test_unknown_dataset():
    with pytest.raises(ConfigError, match="unknown dataset 'FOO'; choose from CIFAR_10"):
        DATASETS.check("FOO")
    with pytest.raises(ConfigError):
        open_store("FOO", "x")


def test_missing_store_names_command(tmp_path):
    assert not data.is_processed("CIFAR_10", tmp_path)
    with pytest.raises(DataError, match="biohash data download CIFAR_10 .*process CIFAR_10"):
        open_store("CIFAR_10", tmp_path)


def _ids(store):
    return {f: set(store.fold(f).ids.tolist()) for f in FOLDS}


def test_digits_real(root):
    store = open_store("DIGITS", root)  # processed automatically on first open
    assert data.is_processed("DIGITS", root)
    assert store.sizes == {"train": 900, "query": 180, "val": 180, "database": 537}
    assert sum(store.sizes.values()) == 1797
    ids = _ids(store)
    assert set.union(*ids.values()) == {str(i) for i in range(1797)}
    assert sum(map(len, ids.values())) == 1797  # disjoint
    train = store.fold("train")
    assert train.images.dtype == np.uint8 and train.images.shape == (900, 8, 8, 1)
    assert isinstance(train.images, np.memmap)
    assert (train.labels.sum(1) == 1).all() and (train.labels.sum(0) == 90).all()
    assert train.images.max() == 255 and store.num_classes == 10
    assert len(store.mean) == 1 and 0.2 < store.mean[0] < 0.4
    assert store.verify() == []


def test_digits_ml_real(root):
    store = open_store("DIGITS_ML", root)
    assert store.image_shape == (8, 16, 1)
    assert store.sizes == {"train": 1200, "query": 240, "val": 240, "database": 720}
    labels = store.fold("query").labels
    assert set(labels.sum(1).tolist()) <= {1, 2} and (labels.sum(1) == 2).mean() > 0.8
    # Pairs are built only from their fold's digits: no source digit crosses folds.
    src = {f: {int(x) for i in store.fold(f).ids for x in i.split("+")} for f in FOLDS}
    assert all(src[a].isdisjoint(src[b]) for a in FOLDS for b in FOLDS if a < b)
    # Relevance (shared label) exists between query and database.
    rel = store.fold("query").labels.astype(int) @ store.fold("database").labels.T.astype(int) > 0
    assert 0.1 < rel.mean() < 0.9


def test_verify_detects_corruption(tmp_path):
    store = open_store("DIGITS", tmp_path)
    path = store.directory / "val.images.npy"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert open_store("DIGITS", tmp_path).verify() == ["val.images.npy"]


def test_loader_normalises(root):
    store = open_store("DIGITS", root)
    fold = store.fold("val")
    x, y, idx = next(iter(BatchLoader(fold, 32, shuffle=True, seed=3)))
    assert x.shape == (32, 1, 8, 8) and x.dtype == torch.float32 and x.is_contiguous()
    assert y.shape == (32, 10) and y.dtype == torch.float32 and idx.dtype == torch.int64
    raw = torch.from_numpy(np.asarray(fold.images[idx.numpy()])).permute(0, 3, 1, 2).float()
    expected = (raw / 255 - store.mean[0]) / store.std[0]
    torch.testing.assert_close(x, expected)
    torch.testing.assert_close(y, torch.from_numpy(fold.labels[idx.numpy()]).float())
    # Over the whole train fold the normalised pixels have mean 0, std 1.
    xs = torch.cat([b[0] for b in BatchLoader(store.fold("train"), 128)])
    assert abs(xs.mean().item()) < 1e-3 and abs(xs.std().item() - 1) < 1e-2


def test_loader_shuffle_reproducible(root):
    fold = open_store("DIGITS", root).fold("train")

    def order(seed, epoch, **kw):
        return torch.cat([b[2] for b in BatchLoader(fold, 50, shuffle=True, seed=seed,
                                                    epoch=epoch, **kw)]).tolist()

    a = order(0, 0)
    assert sorted(a) == list(range(900))
    assert a == order(0, 0) and a != order(0, 1) and a != order(1, 0)
    loader = BatchLoader(fold, 50, shuffle=True, seed=0)
    loader.set_epoch(1)
    assert torch.cat([b[2] for b in loader]).tolist() == order(0, 1)
    batches = list(BatchLoader(fold, 64, drop_last=True))
    assert len(batches) == 900 // 64 and all(len(b[0]) == 64 for b in batches)
    assert [len(b[0]) for b in BatchLoader(fold, 400)] == [400, 400, 100]
    sub = BatchLoader(fold, 7, indices=[5, 3, 899])
    assert torch.cat([b[2] for b in sub]).tolist() == [3, 5, 899]


def test_loader_resizes_on_device(root):
    store = open_store("DIGITS", root)
    x, _, _ = next(iter(BatchLoader(store.fold("query"), 4, image_size=32)))
    assert x.shape == (4, 1, 32, 32)
    x, _, _ = next(iter(BatchLoader(open_store("DIGITS_ML", root).fold("val"), 4,
                                    image_size=(16, 32), dtype=torch.bfloat16)))
    assert x.shape == (4, 1, 16, 32) and x.dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="bad image_size"):
        BatchLoader(store.fold("query"), 4, image_size=0)


def test_loader_early_break_releases(root):
    loader = BatchLoader(open_store("DIGITS", root).fold("database"), 8, prefetch=1)
    for k, _ in enumerate(loader):
        if k == 2:
            break
    assert len(list(loader)) == len(loader)


def _cli(*argv):
    from biohash.cli import main

    try:
        return main(list(argv))
    except ModuleNotFoundError:  # other subpackages not there yet: use our parser alone
        from biohash.data import commands
        from biohash.errors import BiohashError

        parser = argparse.ArgumentParser()
        commands.add_parser(parser.add_subparsers())
        args = parser.parse_args(list(argv))
        try:
            return args.func(args)
        except BiohashError as exc:
            print(f"biohash: error: {exc}", file=sys.stderr)
            return 2


def test_cli(tmp_path, capsys):
    assert _cli("data", "process", "DIGITS", "--root", str(tmp_path)) == 0
    assert _cli("data", "verify", "DIGITS", "--root", str(tmp_path)) == 0
    assert _cli("data", "list", "--root", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "DIGITS     processed" in out and "CIFAR_10   not processed" in out
    assert _cli("data", "process", "CIFAR_10", "--root", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "missing raw files" in err and "data_batch_1" in err and "biohash data download" in err
    assert _cli("data", "process", "NOPE", "--root", str(tmp_path)) == 2
    manifest = json.loads((store_dir(tmp_path, "DIGITS") / MANIFEST).read_text())
    assert manifest["format_version"] == 1 and manifest["seed"] == 0
    assert set(manifest["checksums"]) == {f"{f}.{k}.npy" for f in FOLDS
                                          for k in ("images", "labels", "ids")}


# ------------------------------------------------------------------ similar-pair probability
def _brute_force_p(labels: np.ndarray) -> float:
    """mean of [y_i . y_j > 0] over all ordered pairs, diagonal included, by a double loop."""
    y = labels.astype(int).tolist()
    n = len(y)
    hits = sum(1 for a in y for b in y if sum(u * v for u, v in zip(a, b)) > 0)
    return hits / (n * n)


def test_similar_probability_one_hot_is_exactly_a_tenth():
    labels = np.eye(10, dtype=np.uint8)[np.repeat(np.arange(10), 500)]  # CIFAR train: 500/class
    np.random.default_rng(0).shuffle(labels)
    assert similar_probability(labels) == 0.1
    # Unbalanced classes: sum_c n_c^2 / N^2.
    counts = np.array([3, 1, 6])
    labels = np.eye(3, dtype=np.uint8)[np.repeat(np.arange(3), counts)]
    assert similar_probability(labels) == pytest.approx((counts ** 2).sum() / 100)
    with_unlabeled = np.concatenate([labels, np.zeros((4, 3), np.uint8)])
    assert similar_probability(with_unlabeled) == pytest.approx(_brute_force_p(with_unlabeled))


@pytest.mark.parametrize("block_bytes", [1, 1 << 25])
def test_similar_probability_multi_label_matches_double_loop(block_bytes):
    rng = np.random.default_rng(1)
    labels = (rng.random((70, 12)) < 0.12).astype(np.uint8)
    labels[:5] = 0  # all-zero rows are similar to nothing, not even themselves
    labels[5:9] = labels[9]  # repeated rows are merged internally
    expected = _brute_force_p(labels)
    assert 0 < expected < 1
    assert similar_probability(labels, block_bytes=block_bytes) == pytest.approx(expected, abs=1e-15)
    with pytest.raises(DataError, match="non-empty"):
        similar_probability(np.zeros((0, 3), np.uint8))


def test_similar_probability_in_manifest_and_for_old_manifests(tmp_path):
    store = open_store("DIGITS_ML", tmp_path)
    p = store.manifest["similar_probability"]
    y = store.fold("train").labels.astype(np.int64)  # (1200, 10) multi-hot
    assert p == pytest.approx(((y @ y.T) > 0).mean(), abs=1e-15)
    assert p == store.similar_probability
    assert open_store("DIGITS", tmp_path).manifest["similar_probability"] == 0.1  # 90/class
    # A store processed before the key existed: computed on open, manifest left untouched.
    path = store.directory / MANIFEST
    manifest = json.loads(path.read_text())
    del manifest["similar_probability"]
    path.write_text(json.dumps(manifest))
    before = path.read_bytes()
    old = open_store("DIGITS_ML", tmp_path)
    assert "similar_probability" not in old.manifest
    assert old.similar_probability == p and old.similar_probability == p  # cached
    assert path.read_bytes() == before


# ------------------------------------------------------------------ CLI defaults, bad roots
def test_cli_root_defaults_to_env(tmp_path, monkeypatch, capsys):
    from biohash.cli import main

    env_root, explicit = tmp_path / "env", tmp_path / "explicit"
    monkeypatch.setenv("BIOHASH_DATA_ROOT", str(env_root))
    assert main(["data", "process", "DIGITS"]) == 0
    assert data.is_processed("DIGITS", env_root)
    assert "similar-pair probability 0.1," in capsys.readouterr().out
    assert main(["data", "verify", "DIGITS"]) == 0
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert f"data root: {env_root}" in out and "DIGITS     processed" in out
    assert main(["data", "process", "DIGITS", "--root", str(explicit)]) == 0  # --root wins
    assert data.is_processed("DIGITS", explicit)
    assert main(["data", "download", "DIGITS"]) == 0
    assert "nothing to download" in capsys.readouterr().out
    # push: --root and --to both come from the environment; a URI root is refused early.
    assert main(["data", "push", "DIGITS", "--root", str(env_root),
                 "--to", str(tmp_path / "shared")]) == 0
    monkeypatch.setenv("BIOHASH_DATA_ROOT", (tmp_path / "shared").as_uri())
    capsys.readouterr()
    assert main(["data", "list"]) == 0  # reads the remote manifests
    assert "DIGITS     processed" in capsys.readouterr().out
    assert main(["data", "process", "DIGITS"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "needs a local data folder" in err
    assert "(from $BIOHASH_DATA_ROOT)" in err
    assert main(["data", "push", "DIGITS", "--to", str(tmp_path / "other")]) == 2
    assert "push DIGITS needs a local data folder" in capsys.readouterr().err


def test_cli_root_is_a_file(tmp_path, capsys):
    from biohash.cli import main

    file = tmp_path / "not-a-folder"
    file.write_text("x")
    for argv in (["data", "process", "DIGITS"], ["data", "process", "CIFAR_10"],
                 ["data", "download", "DIGITS"], ["data", "verify", "DIGITS"], ["data", "list"]):
        assert main([*argv, "--root", str(file)]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"biohash: error: data root {str(file)!r} is a file, not a folder; " \
                      "pass --root <folder>"
    assert main(["data", "process", "MS_COCO", "--variant", "nope", "--root", str(tmp_path)]) == 2
    assert "unknown MS_COCO variant 'nope'; choose from h2q, clean80" in capsys.readouterr().err


def test_missing_message_recipes():
    imagenet = data.missing_message("ImageNet", "/d")
    assert "run: biohash data download ImageNet --root /d && biohash data process ImageNet " \
           "--root /d" in imagenet and "manual download" in imagenet
    remote = data.missing_message("CIFAR_10", "s3://b/data")
    assert remote.startswith("dataset CIFAR_10 is not processed under s3://b/data; in a local "
                             "folder run: biohash data download CIFAR_10 --root data && ")
    assert remote.endswith("biohash data push CIFAR_10 --root data --to s3://b/data")
