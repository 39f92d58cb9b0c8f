"""Remote data roots: file:// stand-in bucket with racing processes, and a real moto S3."""
from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest

from biohash.data import is_processed, open_store
from biohash.data.remote import materialize
from biohash.data.store import MANIFEST, store_dir
from biohash.errors import DataError

from s3_server import moto_s3  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def bucket(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bucket")
    open_store("DIGITS", root)
    return root


def _child(uri: str, cache: str, out) -> None:
    local = materialize("DIGITS", uri, cache)
    manifest = store_dir(local, "DIGITS") / MANIFEST
    out.put((str(local), manifest.stat().st_mtime_ns, len(open_store("DIGITS", local).fold("val"))))


def test_local_root_is_returned_as_is(tmp_path):
    assert materialize("DIGITS", tmp_path) == tmp_path


def test_file_uri_two_processes_race(bucket, tmp_path):
    uri = bucket.as_uri()
    assert is_processed("DIGITS", uri) and not is_processed("CIFAR_10", uri)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_child, args=(uri, str(tmp_path), out)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    (a, ta, na), (b, tb, nb) = results
    assert a == b and na == nb == 180
    assert ta == tb  # copied once: the second process found the complete cache
    local = Path(a)
    assert local.parent == tmp_path and open_store("DIGITS", local).verify() == []
    src = open_store("DIGITS", bucket).fold("train").images
    assert np.array_equal(open_store("DIGITS", local).fold("train").images, src)


def test_damaged_cache_is_refetched(bucket, tmp_path):
    local = materialize("DIGITS", bucket.as_uri(), tmp_path)
    victim = store_dir(local, "DIGITS") / "train.labels.npy"
    victim.write_bytes(b"truncated")
    assert materialize("DIGITS", bucket.as_uri(), tmp_path) == local
    assert open_store("DIGITS", local).verify() == []


def test_corrupted_remote_fails_clearly(tmp_path):
    remote = tmp_path / "remote"
    open_store("DIGITS", remote)
    path = store_dir(remote, "DIGITS") / "query.images.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="checksum mismatch for .*query.images.npy.*after 2 copies"):
        materialize("DIGITS", remote.as_uri(), tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob(MANIFEST))
    with pytest.raises(DataError, match="biohash data download CIFAR_10"):
        materialize("CIFAR_10", remote.as_uri(), tmp_path / "cache")


def test_moto_s3(bucket, tmp_path, moto_s3):  # noqa: F811
    client = moto_s3.client()
    client.create_bucket(Bucket="datasets")
    for file in store_dir(bucket, "DIGITS").iterdir():
        client.upload_file(str(file), "datasets", f"shared/processed/DIGITS/{file.name}")
    fs = moto_s3.filesystem()
    local = materialize("DIGITS", "datasets/shared", tmp_path, filesystem=fs)
    store = open_store("DIGITS", local)
    assert store.sizes["train"] == 900 and store.verify() == []
    assert materialize("DIGITS", "datasets/shared", tmp_path, filesystem=fs, verify=True) == local


def test_push_and_materialize_keep_the_similar_probability(bucket, tmp_path):
    from biohash.data.push import push
    from biohash.data.remote import read_remote_manifest

    dest = tmp_path / "shared"
    push("DIGITS", str(bucket), str(dest))
    remote = read_remote_manifest("DIGITS", dest.as_uri())
    assert remote["similar_probability"] == 0.1  # DIGITS train: 90 per class
    assert read_remote_manifest("CIFAR_10", dest.as_uri()) is None
    local = materialize("DIGITS", dest.as_uri(), tmp_path / "cache")
    assert open_store("DIGITS", local).similar_probability == 0.1
    with pytest.raises(DataError, match="bad data root 'nosuch://x'"):
        read_remote_manifest("DIGITS", "nosuch://x")
