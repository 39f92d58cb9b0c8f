"""``biohash sweep plan | run | resume | status | list`` and ``biohash demo``.

Defaults come from the environment when set: ``--storage`` from
``$BIOHASH_STORAGE``, ``--data-root`` from ``$BIOHASH_DATA_ROOT`` and
``--mlflow-uri`` from ``$MLFLOW_TRACKING_URI`` (read when the parser is built).

Exit statuses of ``sweep run`` / ``sweep resume`` / ``demo``: 0 every trial
done; 1 failed or unfinished trials, or trials whose Parquet row could not be
written (named, with the ``results repair`` command); 2 bad input; 130 Ctrl-C
(SIGINT), 143 SIGTERM, 75 the driver lost its Ray cluster, each after printing
how far the sweep got and the command that continues it.

``sweep status`` and ``sweep list`` print the storage summary
(``biohash.storage.summary``) in its words: done / running / pending /
failed / stopped.
"""
from __future__ import annotations

import argparse
import json
import os

from biohash.cli_types import name, nonnegative_float, positive_float
from biohash.orchestrator.sweep import (DATA_ROOT_ENV, NOT_FINISHED, default_data_root,
                                        default_storage)
from biohash.storage import sweep_dir
from biohash.storage.summary import FAILED, STATES

__all__ = ["add_parser", "print_summary"]


def _storage_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", default=default_storage(),
                   help="sweep storage root: a folder or a URI (s3://bucket/prefix, gs://...); "
                        "default: $BIOHASH_STORAGE, else sweeps (made absolute at launch)")


def _plan(args: argparse.Namespace) -> int:
    from biohash.search_spaces import load_space, plan

    the_plan = plan(load_space(args.space), data_root=args.data_root)
    print(the_plan.render())
    return 1 if the_plan.problems else 0


def _options(args: argparse.Namespace):
    from biohash.orchestrator.sweep import SweepOptions

    return SweepOptions(
        space=args.space, name=args.name, storage=args.storage, address=args.address,
        cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
        max_concurrent=args.max_concurrent, scheduler=args.scheduler,
        max_failures=args.max_failures, checkpoint_interval=args.checkpoint_interval,
        data_root=args.data_root, mlflow_uri=args.mlflow_uri,
        num_cpus=args.num_cpus, cluster_config=args.cluster_config, verbose=args.tune_verbose)


def _counts(counts: dict[str, int], *, zeros: bool = False) -> str:
    """``2 done, 1 failed`` in the vocabulary's order (``zeros``: every state)."""
    return ", ".join(f"{counts.get(s, 0)} {s}" for s in STATES if zeros or counts.get(s))


def print_summary(summary) -> int:
    if summary.interrupted:
        parts = [f"{summary.n_done} of {summary.n_trials} done",
                 f"{summary.counts.get(NOT_FINISHED, 0)} {NOT_FINISHED}"]
        if summary.counts.get(FAILED):
            parts.append(f"{summary.counts[FAILED]} {FAILED}")
        print(f"sweep {summary.name} interrupted ({summary.interrupted}): {', '.join(parts)} "
              f"in {summary.path}")
    else:
        print(f"sweep {summary.name}: {summary.n_trials} trials ({_counts(summary.counts)}) "
              f"in {summary.path}")
    for line in summary.errors:
        print(f"  error: {line}")
    if summary.missing_rows:
        print(f"{len(summary.missing_rows)} trial(s) finished but have no Parquet row (storage "
              f"writes failed): {', '.join(summary.missing_rows)}; rebuild them with: "
              f"{summary.repair}")
    if summary.resume:
        print(f"continue with: {summary.resume}")
    return summary.exit_status


def _run(args: argparse.Namespace) -> int:
    from biohash.orchestrator.sweep import resume_sweep, run_sweep

    if args.resume and args.name:
        from biohash.orchestrator.sweep import storage_location

        if sweep_dir(storage_location(args.storage), args.name).exists():
            return print_summary(resume_sweep(args.name, storage=args.storage,
                                               address=args.address, num_cpus=args.num_cpus,
                                               data_root=args.data_root,
                                               cluster_config=args.cluster_config))
    return print_summary(run_sweep(_options(args)))


def _resume(args: argparse.Namespace) -> int:
    from biohash.orchestrator.sweep import resume_sweep

    return print_summary(resume_sweep(args.name, storage=args.storage, address=args.address,
                                       num_cpus=args.num_cpus,
                                       restart_errored=args.restart_errored,
                                       data_root=args.data_root,
                                       cluster_config=args.cluster_config))


def _status(args: argparse.Namespace) -> int:
    from biohash.orchestrator.sweep import sweep_status

    status = sweep_status(args.name, storage=args.storage)
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"{status['name']} ({status['space'] or '?'}): {status['state']}, "
          f"{status['n_trials'] if status['n_trials'] is not None else '?'} trials: "
          f"{_counts(status['counts'], zeros=True)}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from biohash.orchestrator.sweep import list_sweep_names

    sweeps = list_sweep_names(args.storage)
    if not sweeps:
        print(f"no sweeps in {args.storage}")
    for s in sweeps:
        n = s["n_trials"] if s["n_trials"] is not None else "?"
        print(f"{s['name']:<40} {s['space'] or '?':<14} {s['state']:<8} {n:>6} trials  "
              f"{_counts(s['counts']) or '-':<40} {s['created'] or ''}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from biohash.orchestrator.demo import run_demo

    return run_demo(storage=args.storage, mlflow_uri=args.mlflow_uri, space=args.space)


def _run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=None,
                   help="attach to a running Ray cluster ('auto' or host:port); "
                        "default: start an embedded local Ray")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the embedded local Ray")
    p.add_argument("--cluster-config", default=None, metavar="PATH",
                   help="cluster file whose autoscaler node types the launch check uses "
                        "(default: read them from the running cluster)")


def _data_root_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", default=default_data_root(),
                   help="processed data root (folder or URI, e.g. s3://bucket/data); "
                        "default: $BIOHASH_DATA_ROOT, else data")


def add_parser(sub: argparse._SubParsersAction) -> None:
    sweep = sub.add_parser("sweep", help="plan, run, resume and inspect sweeps on Ray Tune")
    ssub = sweep.add_subparsers(dest="sweep_command", metavar="SUBCOMMAND", required=True)

    p = ssub.add_parser("plan", help="validate a space and print trials, axes, GPU-hours")
    p.add_argument("--space", required=True, help="a shipped space name or a YAML path")
    _data_root_arg(p)
    p.set_defaults(func=_plan)

    p = ssub.add_parser("run", help="launch a sweep", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--space", required=True, help="a shipped space name or a YAML path")
    p.add_argument("--name", type=name, default=None, help="sweep name (default: <space>-<timestamp>)")
    _storage_arg(p)
    _run_flags(p)
    _data_root_arg(p)
    p.add_argument("--cpus-per-trial", type=positive_float, default=1.0)
    p.add_argument("--gpus-per-trial", type=nonnegative_float, default=0.0, help="0, 0.25, 0.5, 1, 2 ...")
    p.add_argument("--max-concurrent", type=int, default=None)
    p.add_argument("--scheduler", default="fifo", help="fifo or asha (stops weak trials early)")
    p.add_argument("--max-failures", type=int, default=2, help="retries per trial, from its checkpoint")
    p.add_argument("--checkpoint-interval", type=nonnegative_float, default=300.0,
                   help="least seconds between checkpoints sent to storage (0 = every epoch); "
                        "a retried trial repeats at most this much work")
    p.add_argument("--mlflow-uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
                   help="MLflow tracking URI (default: sqlite:///./mlflow.db; '' = off)")
    p.add_argument("--resume", action="store_true", help="if --name exists, resume it instead")
    p.add_argument("--tune-verbose", type=int, default=1, help="Ray Tune verbosity 0-3")
    p.set_defaults(func=_run)

    p = ssub.add_parser("resume", help="continue an interrupted sweep")
    p.add_argument("name", type=name)
    _storage_arg(p)
    _run_flags(p)
    p.add_argument("--data-root", default=os.environ.get(DATA_ROOT_ENV) or None,
                   help="processed data root for the trials still to run (folder or URI); "
                        "default: $BIOHASH_DATA_ROOT, else the one the sweep was started with")
    p.add_argument("--restart-errored", action="store_true",
                   help="restart errored trials from scratch instead of their checkpoint")
    p.set_defaults(func=_resume)

    p = ssub.add_parser("status", help="a sweep's state and trials per state (done, running, "
                                       "pending, failed, stopped), read from storage")
    p.add_argument("name", type=name)
    _storage_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_status)

    p = ssub.add_parser("list", help="sweeps in storage")
    _storage_arg(p)
    p.set_defaults(func=_list)

    p = sub.add_parser("demo", help="the demo sweep on DIGITS, then the best configs")
    _storage_arg(p)
    p.add_argument("--space", default="demo")
    p.add_argument("--mlflow-uri", default=os.environ.get("MLFLOW_TRACKING_URI"))
    p.set_defaults(func=_demo)
