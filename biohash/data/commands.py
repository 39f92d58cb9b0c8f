"""``biohash data ...``: download, process, import-h2q, list, verify."""
from __future__ import annotations

import argparse
import os

__all__ = ["add_parser"]

DEFAULT_ROOT = "data"  # the old workflow's data directory


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("data", help="download and process datasets into the store")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    def cmd(name: str, handler, help: str, *, dataset: bool = True) -> argparse.ArgumentParser:
        q = sub.add_parser(name, help=help)
        if dataset:
            q.add_argument("name", metavar="NAME", help="dataset name (see: biohash data list)")
        q.add_argument("--root", default=DEFAULT_ROOT, help="data root (default: data)")
        q.set_defaults(func=handler)
        return q

    cmd("download", _download, "download the raw files into <root>/raw/NAME")
    q = cmd("process", _process, "process raw files into <root>/processed/NAME")
    q.add_argument("--raw", default=None, help="raw folder (default: <root>/raw/NAME)")
    q.add_argument("--strict", action="store_true", help="fail on any unreadable image")
    q.add_argument("--workers", type=int, default=None, help="decoding threads")
    q = cmd("import-h2q", _import_h2q, "import an old-workflow processed folder", dataset=False)
    q.add_argument("src", metavar="SRC", help="old folder, e.g. old/data/processed/CIFAR_10")
    q.add_argument("--name", required=True, help="dataset name")
    q.add_argument("--strict", action="store_true", help="fail on any unreadable image")
    cmd("list", _list, "datasets and their processed status", dataset=False)
    cmd("verify", _verify, "re-hash a processed dataset against its manifest")
    q = cmd("push", _push, "copy a processed dataset to a shared data root (s3://, gs://, folder)")
    q.add_argument("--to", default=os.environ.get("BIOHASH_DATA_ROOT"),
                   required=not os.environ.get("BIOHASH_DATA_ROOT"),
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
    cls(args.root, raw=args.raw, strict=args.strict, workers=args.workers, progress=True).process()
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
    from biohash.data.store import read_manifest, store_dir

    print(f"{'dataset':<10} {'status':<13} {'classes':>7}  sizes (train/query/val/database)")
    for name in DATASETS.names():
        cls = DATASETS.get(name)
        manifest = read_manifest(store_dir(args.root, name))
        if manifest:
            status, sizes = "processed", manifest["sizes"]
        else:
            status, sizes = ("auto" if cls.auto_process else "not processed"), cls.split_sizes
        print(f"{name:<10} {status:<13} {cls.num_classes:>7}  "
              + "/".join(str(sizes.get(f, "?")) for f in ("train", "query", "val", "database")))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from biohash.data import open_store
    from biohash.errors import DataError

    store = open_store(args.name, args.root)
    bad = store.verify()
    if bad:
        raise DataError(f"{args.name}: checksum mismatch in {', '.join(bad)}; "
                        f"re-run: biohash data process {args.name} --root {args.root}")
    print(f"{args.name}: {len(store.manifest['checksums'])} files OK")
    return 0


def _print_store(store) -> None:
    m = store.manifest
    print(f"{store.name}: sizes {m['sizes']}, image shape {tuple(m['image_shape'])}, "
          f"{store.num_classes} classes, dropped {m.get('dropped', {})} -> {store.directory}")
