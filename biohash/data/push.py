"""Upload a processed dataset to a shared data root that every cluster node reads.

``push("CIFAR_10", "data", "s3://bucket/data")`` copies ``data/processed/CIFAR_10/``
to ``s3://bucket/data/processed/CIFAR_10/``; trials then get it with
``biohash.data.materialize`` (``--data-root s3://bucket/data``). The destination
follows the store's rule "the manifest is the completeness marker": an old remote
manifest is deleted first, the arrays are uploaded and their sizes checked, and the
manifest goes last. A push killed midway therefore leaves a store that nodes refuse
(``materialize`` reports it missing) instead of one with mixed old/new arrays.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from biohash.data.store import (MANIFEST, data_location, local_root, manifest_location,
                                missing_message, read_manifest, store_dir, store_location)
from biohash.errors import DataError
from biohash.storage import is_local, is_uri

__all__ = ["push"]

log = logging.getLogger(__name__)


def push(name: str, root: str, dest: str, *, filesystem: Any = None) -> str:
    """Copy the processed dataset ``name`` under ``root`` to the data root ``dest``.

    ``dest`` is a URI understood by ``pyarrow.fs.FileSystem.from_uri`` (``s3://``,
    ``gs://``, ``file://``) or a local folder; with ``filesystem`` it is a path inside
    that filesystem. Returns where the dataset now lives (``<dest>/processed/<name>``).
    Raises ``DataError`` when the local store is missing or incomplete, when ``dest``
    cannot be parsed or written, or when it is the local store itself.
    """
    from pyarrow import fs as pafs

    src = store_dir(local_root(root, f"push {name}"), name)
    manifest = read_manifest(src)  # also rejects unreadable / other-version manifests
    if manifest is None:
        raise DataError(missing_message(name, root))
    files = list(manifest["checksums"])
    sizes = {f: int(s) for f, s in manifest.get("file_sizes", {}).items()}
    for fname in files:  # cheap local check before any remote write
        path = src / fname
        if not path.is_file() or (fname in sizes and path.stat().st_size != sizes[fname]):
            raise DataError(f"{path} is missing or has the wrong size; the store is damaged: "
                            f"re-run: biohash data process {name} --root {root}")
    target = store_location(data_location(dest, filesystem), name)
    fs, remote = target.fs, target.path
    if is_local(fs) and Path(remote).resolve() == src.resolve():
        raise DataError(f"cannot push {name} onto itself ({remote}); choose another --to")
    local = pafs.LocalFileSystem()
    try:
        fs.create_dir(remote, recursive=True)
        fs.delete_file(manifest_location(target).path)
    except FileNotFoundError:
        pass  # no previous manifest: a first push
    except OSError as exc:
        raise DataError(f"cannot write to {dest!r}: {exc}") from None
    try:
        for fname in files:
            log.info("uploading %s -> %s", src / fname, target.join(fname).uri)
            pafs.copy_files(str(src / fname), target.join(fname).path, source_filesystem=local,
                            destination_filesystem=fs)
        for fname in files:
            info = fs.get_file_info(target.join(fname).path)
            expected = sizes.get(fname, (src / fname).stat().st_size)
            if info.type != pafs.FileType.File or info.size != expected:
                raise DataError(f"upload of {fname} to {dest!r} is incomplete ({info.size} of "
                                f"{expected} bytes); push again")
        pafs.copy_files(str(src / MANIFEST), manifest_location(target).path,
                        source_filesystem=local, destination_filesystem=fs)
    except OSError as exc:
        raise DataError(f"cannot upload {name} to {dest!r}: {exc}; push again "
                        f"(nodes ignore the partial copy: it has no manifest)") from None
    # A URI stays a URI (with its options); a folder or a path inside
    # ``filesystem`` is returned as the absolute path written to.
    return target.uri if filesystem is None and is_uri(dest) else remote
