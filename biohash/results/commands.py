"""CLI: ``biohash results best|table|plot|compare|list|sync-mlflow|repair``.

Thin verbs: each handler calls one library function (``biohash.analysis``
for tables and plots, ``biohash.results`` for reading, MLflow and repair)
and prints. Sweeps are addressed as ``--storage DIR_OR_URI`` (default
``$BIOHASH_STORAGE``, else ``sweeps``) plus sweep NAME(s); several names
are read as one result set. Heavy libraries are imported inside the
handlers only: ``list``, ``best`` and ``table`` never import torch.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_parser"]


def _common(metric: bool = True) -> argparse.ArgumentParser:
    from biohash.defaults import default_storage

    parent = argparse.ArgumentParser(add_help=False)
    # Read when the parser is built (not at import): $BIOHASH_STORAGE, else sweeps,
    # the same default as `biohash sweep`.
    parent.add_argument("--storage", default=default_storage(),
                        help="folder or URI (s3://bucket/prefix) holding the sweeps "
                             "(default: %(default)s)")
    if metric:
        parent.add_argument("--metric", default="score",
                            help="column to rank by (default: %(default)s; e.g. query/mAP_at_5000)")
    return parent


def _format_args(parser: argparse.ArgumentParser) -> None:
    from biohash.analysis.formats import FORMATS

    parser.add_argument("--format", default="markdown", choices=FORMATS.names())
    parser.add_argument("--out", type=Path, help="write to this file instead of stdout")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    results = subparsers.add_parser("results", help="best configs, tables, plots, MLflow sync, repair")
    sub = results.add_subparsers(dest="results_command", metavar="ACTION", required=True)

    p = sub.add_parser("best", parents=[_common()], help="best config per group (mean over seeds)")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--group-by", default="db,nbits,mode")
    _format_args(p)
    p.set_defaults(func=_best)

    p = sub.add_parser("table", parents=[_common()], help="paper-style mean ± std table (x100)")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--rows", default="mode")
    p.add_argument("--cols", default="db,nbits")
    p.add_argument("--vs-published", action="store_true",
                   help="h2q's published VGG16 numbers (arXiv:2311.04207) beside the sweep's "
                        "mean ± std and the difference, per method, rule, dataset and bits")
    _format_args(p)
    p.set_defaults(func=_table)

    p = sub.add_parser("plot", parents=[_common()], help="PNG plots into --out DIR")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--kind", default="all",
                   help="bits | gap | curves | alignment | all (default: %(default)s)")
    p.set_defaults(func=_plot)

    p = sub.add_parser("compare", parents=[_common()], help="matched configs of sweeps A and B")
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    _format_args(p)
    p.set_defaults(func=_compare)

    p = sub.add_parser("sync-mlflow", parents=[_common(metric=False)],
                       help="fill MLflow from a sweep's Parquet results")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--mlflow-uri", help="tracking URI (default: sqlite:///<cwd>/mlflow.db)")
    p.add_argument("--experiment", default="biohash")
    p.set_defaults(func=_sync)

    p = sub.add_parser("list", parents=[_common(metric=False)], help="sweeps with trial counts")
    p.set_defaults(func=_list)

    p = sub.add_parser("repair", parents=[_common(metric=False)],
                       help="rebuild missing Parquet rows from the trials' final.json")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=_repair)


# ---------------------------------------------------------------------- handlers
def _load(args: argparse.Namespace, names: list[str], history: bool = False):
    from biohash.results.reader import load_history, load_results
    from biohash.storage import resolve_sweeps

    sweeps = resolve_sweeps(args.storage, names)
    return load_history(sweeps) if history else load_results(sweeps)


def _emit(args: argparse.Namespace, text: str) -> int:
    if getattr(args, "out", None):
        from biohash.utils import atomic_write_text

        atomic_write_text(args.out, text)
        print(f"wrote {args.out}")
    else:
        print(text, end="")
    return 0


def _best(args: argparse.Namespace) -> int:
    from biohash.analysis.formats import render
    from biohash.analysis.tables import best_configs, best_view

    best = best_configs(_load(args, args.names), args.group_by, args.metric)
    return _emit(args, render(best_view(best), args.format))


def _table(args: argparse.Namespace) -> int:
    from biohash.analysis.formats import render
    from biohash.analysis.tables import paper_table

    if args.vs_published:
        return _vs_published(args)
    table = paper_table(_load(args, args.names), args.rows, args.cols, args.metric)
    return _emit(args, render(table, args.format))


def _vs_published(args: argparse.Namespace) -> int:
    from biohash.analysis.formats import render
    from biohash.analysis.published import format_vs_published, vs_published
    from biohash.errors import ConfigError

    # The published layout and metric are fixed; refuse options it would ignore.
    if args.metric != "score" or args.rows != "mode" or args.cols != "db,nbits":
        raise ConfigError("--vs-published compares the score (mAP@1000 on ImageNet, mAP@5000 "
                          "otherwise) in a fixed layout; drop --metric/--rows/--cols")
    table = format_vs_published(vs_published(_load(args, args.names)))
    return _emit(args, render(table, args.format))


def _plot(args: argparse.Namespace) -> int:
    from biohash.analysis.plots import PLOTS, plot
    from biohash.errors import ConfigError, ResultsError
    from biohash.results.reader import load_history

    if args.kind != "all" and args.kind not in PLOTS:
        raise ConfigError(f"unknown plot kind {args.kind!r}; choose from "
                          f"{', '.join([*PLOTS.names(), 'all'])}")
    results = _load(args, args.names)
    history = None
    if args.kind in ("curves", "alignment", "all"):
        from biohash.storage import resolve_sweeps

        try:
            history = load_history(resolve_sweeps(args.storage, args.names))
        except ResultsError:
            if args.kind != "all":
                raise
    paths = plot(args.kind, results, history, args.out, args.metric)
    if not paths:
        raise ResultsError(f"nothing to plot for --kind {args.kind} (gap needs bp trials, "
                           "curves/alignment need history rows with val_mAP / align/*)")
    for path in paths:
        print(path)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from biohash.analysis.formats import render
    from biohash.analysis.tables import compare

    diff = compare(_load(args, [args.a]), _load(args, [args.b]), metric=args.metric)
    return _emit(args, render(diff, args.format))


def _sync(args: argparse.Namespace) -> int:
    from biohash.defaults import default_mlflow_uri
    from biohash.results.backfill import backfill
    from biohash.results.mlflow_best import BEST_FILTER

    uri = args.mlflow_uri or default_mlflow_uri()
    print(f"{backfill(args.storage, args.name, uri, experiment=args.experiment)} ({uri})")
    print(f"best runs: biohash ui --mlflow-uri {uri}, then search {BEST_FILTER}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from biohash.analysis.formats import render
    from biohash.results.summary import summarize_sweeps

    print(render(summarize_sweeps(args.storage), "markdown"), end="")
    return 0


def _repair(args: argparse.Namespace) -> int:
    from biohash.results.repair import repair

    report = repair(args.storage, args.name)
    print(f"{report} (sweep {args.name})")
    for trial_id, why in report.failed.items():
        print(f"biohash: trial {trial_id} not repaired: {why}", file=sys.stderr)
    return 1 if report.failed else 0
