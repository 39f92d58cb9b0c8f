"""``biohash data ...``: download, process, import-h2q, list, verify, push.

Every action's ``--root`` defaults to ``$BIOHASH_DATA_ROOT`` (else ``data``, the
old workflow's folder), read when the parser is built. On a cluster that
variable is usually a bucket URI: ``list`` reads it, the actions that write
or hash files need a local folder and say so in one line.
"""
from __future__ import annotations

import argparse
import os

from biohash.defaults import DATA_ROOT_ENV, default_data_root

__all__ = ["add_parser"]

_VARIANTS_HELP = ("processing variant, for datasets that have several. MS_COCO: h2q (default; "
                  "h2q's folds, unlabeled images kept, 90 columns at category_id - 1) or "
                  "clean80 (unlabeled images dropped, 80 columns; folds differ from h2q's)")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("data", help="download and process datasets into the store")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    root = default_data_root()

    def cmd(name: str, handler, help: str, *, dataset: bool = True) -> argparse.ArgumentParser:
        q = sub.add_parser(name, help=help)
        if dataset:
            q.add_argument("name", metavar="NAME", help="dataset name (see: biohash data list)")
        q.add_argument("--root", default=root,
                       help=f"data root (default: $BIOHASH_DATA_ROOT, else data; now: {root})")
        q.set_defaults(func=handler)
        return q

    cmd("download", _download, "download the raw files into <root>/raw/NAME")
    q = cmd("process", _process, "process raw files into <root>/processed/NAME")
    q.add_argument("--raw", default=None, help="raw folder (default: <root>/raw/NAME)")
    q.add_argument("--strict", action="store_true", help="fail on any unreadable image")
    q.add_argument("--workers", type=int, default=None, help="decoding threads")
    q.add_argument("--variant", default=None, help=_VARIANTS_HELP)
    q = cmd("import-h2q", _import_h2q, "import an old-workflow processed folder", dataset=False)
    q.add_argument("src", metavar="SRC", help="old folder, e.g. old/data/processed/CIFAR_10")
    q.add_argument("--name", required=True, help="dataset name")
    q.add_argument("--strict", action="store_true", help="fail on any unreadable image")
    cmd("list", _list, "datasets and their processed status", dataset=False)
    cmd("verify", _verify, "re-hash a processed dataset against its manifest")
    q = cmd("push", _push, "copy a processed dataset to a shared data root (s3://, gs://, folder)")
    env_root = os.environ.get(DATA_ROOT_ENV)
    q.add_argument("--to", default=env_root, required=not env_root,
                   help="destination data root (default: $BIOHASH_DATA_ROOT)")


def _push(args: argparse.Namespace) -> int:
    from biohash.data.push import push

    print(f"{args.name}: pushed to {push(args.name, args.root, args.to)}")
    return 0


def _download(args: argparse.Namespace) -> int:
    from biohash.data import DATASETS

    message = DATASETS.get(args.name)(args.root, progress=True).download()
    print(message or f"{args.name}: downloaded")
    return 0


def _process(args: argparse.Namespace) -> int:
    from biohash.data import DATASETS, open_store

    cls = DATASETS.get(args.name)
    cls(args.root, raw=args.raw, strict=args.strict, workers=args.workers, progress=True,
        variant=args.variant).process()
    _print_store(open_store(args.name, args.root))
    return 0


def _import_h2q(args: argparse.Namespace) -> int:
    from biohash.data import open_store
    from biohash.data.h2q import import_h2q

    import_h2q(args.src, args.root, args.name, strict=args.strict, progress=True)
    _print_store(open_store(args.name, args.root))
    return 0


def _list(args: argparse.Namespace) -> int:
    from biohash.data import DATASETS
    from biohash.data.store import local_root, read_manifest, store_dir

    if "://" in str(args.root):
        from biohash.data.remote import read_remote_manifest

        def manifest_of(name: str) -> dict | None:
            return read_remote_manifest(name, args.root)
    else:
        folder = local_root(args.root, "data list")

        def manifest_of(name: str) -> dict | None:
            return read_manifest(store_dir(folder, name))

    print(f"data root: {args.root}")
    print(f"{'dataset':<10} {'status':<13} {'classes':>7}  sizes (train/query/val/database)")
    for name in DATASETS.names():
        cls = DATASETS.get(name)
        manifest = manifest_of(name)
        if manifest:
            status, sizes = "processed", manifest["sizes"]
            classes, variant = len(manifest["label_names"]), cls.stored_variant(manifest)
        else:
            status, sizes = ("auto" if cls.auto_process else "not processed"), cls.split_sizes
            classes, variant = cls.num_classes, None
        print(f"{name:<10} {status:<13} {classes:>7}  "
              + "/".join(str(sizes.get(f, "?")) for f in ("train", "query", "val", "database"))
              + (f"  variant {variant}" if variant else ""))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from biohash.data import open_store
    from biohash.data.store import local_root
    from biohash.errors import DataError

    store = open_store(args.name, local_root(args.root, "data verify"))
    bad = store.verify()
    if bad:
        raise DataError(f"{args.name}: checksum mismatch in {', '.join(bad)}; "
                        f"re-run: biohash data process {args.name} --root {args.root}")
    print(f"{args.name}: {len(store.manifest['checksums'])} files OK")
    return 0


def _print_store(store) -> None:
    m = store.manifest
    variant = f", variant {store.variant}" if store.variant else ""
    p = m.get("similar_probability")  # None: empty train fold (every image unreadable)
    print(f"{store.name}: sizes {m['sizes']}, image shape {tuple(m['image_shape'])}, "
          f"{store.num_classes} classes{variant}, similar-pair probability "
          f"{'n/a' if p is None else f'{p:.6g}'}, dropped {m.get('dropped', {})} "
          f"-> {store.directory}")
