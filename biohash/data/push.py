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

from biohash.data.remote import resolve_filesystem
from biohash.data.store import MANIFEST, local_root, missing_message, read_manifest, store_dir
from biohash.errors import DataError

__all__ = ["push"]

log = logging.getLogger(__name__)


def _destination(dest: str, filesystem: Any) -> tuple[Any, str]:
    """(pyarrow filesystem, base path) for a URI, a local path or an explicit filesystem."""
    from pyarrow import fs as pafs

    if filesystem is not None:
        return filesystem, str(dest).rstrip("/")
    if "://" not in str(dest):
        return pafs.LocalFileSystem(), str(Path(dest).expanduser().resolve())
    fs, base = resolve_filesystem(dest, None)
    return fs, base.rstrip("/")


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
    fs, base = _destination(dest, filesystem)
    remote = f"{base}/processed/{name}"
    if isinstance(fs, pafs.LocalFileSystem) and Path(remote).resolve() == src.resolve():
        raise DataError(f"cannot push {name} onto itself ({remote}); choose another --to")
    local = pafs.LocalFileSystem()
    try:
        fs.create_dir(remote, recursive=True)
        fs.delete_file(f"{remote}/{MANIFEST}")
    except FileNotFoundError:
        pass  # no previous manifest: a first push
    except OSError as exc:
        raise DataError(f"cannot write to {dest!r}: {exc}") from None
    try:
        for fname in files:
            log.info("uploading %s -> %s", src / fname, f"{remote}/{fname}")
            pafs.copy_files(str(src / fname), f"{remote}/{fname}", source_filesystem=local,
                            destination_filesystem=fs)
        for fname in files:
            info = fs.get_file_info(f"{remote}/{fname}")
            expected = sizes.get(fname, (src / fname).stat().st_size)
            if info.type != pafs.FileType.File or info.size != expected:
                raise DataError(f"upload of {fname} to {dest!r} is incomplete ({info.size} of "
                                f"{expected} bytes); push again")
        pafs.copy_files(str(src / MANIFEST), f"{remote}/{MANIFEST}", source_filesystem=local,
                        destination_filesystem=fs)
    except OSError as exc:
        raise DataError(f"cannot upload {name} to {dest!r}: {exc}; push again "
                        f"(nodes ignore the partial copy: it has no manifest)") from None
    return _join_uri(dest, f"processed/{name}") if filesystem is None else remote


def _join_uri(dest: str, suffix: str) -> str:
    if "://" not in str(dest):
        return str(Path(dest).expanduser().resolve() / suffix)
    head, sep, query = str(dest).partition("?")
    return f"{head.rstrip('/')}/{suffix}{sep}{query}"
