"""``biohash`` command line: a table of subcommands, each a thin handler.

Each subcommand module exposes ``add_parser(subparsers)``, which registers
its parser(s) with ``set_defaults(func=handler)``; a handler parses nothing
itself, calls one library function and prints. Heavy imports (torch, ray,
mlflow) happen inside the handlers, so ``biohash --help`` stays fast.

Any ``BiohashError`` becomes one line on stderr and exit status 2; other
exceptions show a traceback only under ``--debug``. A flag argparse rejects
(a wrong type, a missing or unknown argument) is the same: one line naming
it, one line pointing to ``--help``, exit status 2.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import NoReturn, Sequence

from biohash.errors import BiohashError

__all__ = ["main", "build_parser", "Parser"]

#: Modules that contribute subcommands, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "biohash.data.commands",        # data download | process | import-h2q | list
    "biohash.pipeline.commands",    # train | predict | eval | demo-trial
    "biohash.orchestrator.commands",  # sweep plan | run | resume | status | list ; demo
    "biohash.results.commands",     # results list | best | table | plot | compare | repair ...
    "biohash.analysis.commands",    # ui
    "biohash.cluster.commands",     # cluster rehearse | publish
)


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line plus a ``--help`` hint.

    argparse prints the whole usage (11 lines for ``train``) before its
    message; the message alone names the flag and the bad value. Subparsers
    are built with the parser's own class, so every subcommand inherits this.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n"
                     f"run '{self.prog} --help' for the flags and their values\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="biohash",
        description="Deep hashing with biologically plausible learning rules: "
                    "train, predict, evaluate, sweep and compare.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:  # `biohash` alone: every subparser below requires its action
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
