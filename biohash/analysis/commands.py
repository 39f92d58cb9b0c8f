"""CLI: ``biohash ui``, the MLflow UI on the sweeps' tracking store.

The ``biohash results ...`` verbs live in ``biohash.results.commands``.
"""
from __future__ import annotations

import argparse

from biohash.cli_types import positive_float

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    ui = subparsers.add_parser("ui", help="MLflow UI on the tracking store (127.0.0.1)")
    ui.add_argument("--mlflow-uri", help="tracking URI (default: sqlite:///<cwd>/mlflow.db)")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--workers", type=int, default=1)
    ui.add_argument("--timeout", type=positive_float, default=None,
                    help="stop the server after this many seconds (default: run until Ctrl-C)")
    ui.set_defaults(func=_ui)


def _ui(args: argparse.Namespace) -> int:
    from biohash.analysis.ui import serve_ui
    from biohash.defaults import default_mlflow_uri

    uri = args.mlflow_uri or default_mlflow_uri()
    print(f"MLflow UI for {uri} at http://127.0.0.1:{args.port} (Ctrl-C to stop)", flush=True)
    # serve_ui stops the server's whole process group on SIGTERM / SIGINT / --timeout.
    return serve_ui(uri, args.port, workers=args.workers, timeout_s=args.timeout)
