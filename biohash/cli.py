"""``biohash`` command line: a table of subcommands, each a thin handler.

Each subcommand module exposes ``add_parser(subparsers)``, which registers
its parser(s) with ``set_defaults(func=handler)``; a handler parses nothing
itself, calls one library function and prints. Modules are imported only
when listed here, and heavy imports (torch, ray, mlflow) happen inside the
handlers, so ``biohash --help`` stays fast.

Any ``BiohashError`` becomes one line on stderr and exit status 2; other
exceptions show a traceback only under ``--debug``.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from biohash.errors import BiohashError

__all__ = ["main", "build_parser"]

#: Modules that contribute subcommands, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "biohash.data.commands",        # data download | process | import-h2q | list
    "biohash.pipeline.commands",    # train | predict | eval | demo-trial
    "biohash.orchestrator.commands",  # sweep plan | run | resume | status | list ; demo
    "biohash.analysis.commands",    # results best | table | plot | compare | sync-mlflow ; ui
    "biohash.cluster.commands",     # cluster rehearse | publish
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="biohash",
        description="Deep hashing with biologically plausible learning rules: "
                    "train, predict, evaluate, sweep and compare.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # Skip only an area that is not installed; a missing dependency
            # inside an existing module is a real error.
            if not name.startswith(exc.name or "\0"):
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BiohashError as exc:
        if args.debug:
            raise
        print(f"biohash: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("biohash: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
