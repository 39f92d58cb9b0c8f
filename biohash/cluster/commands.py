"""``biohash cluster rehearse | publish | mlflow-backup | mlflow-restore``."""
from __future__ import annotations

import argparse
import os

__all__ = ["add_parser"]


def _rehearse(args: argparse.Namespace) -> int:
    from biohash.cluster.observe import render_table
    from biohash.cluster.rehearse import RehearsalOptions, rehearse

    report = rehearse(RehearsalOptions(
        cluster_file=args.cluster_file, space=args.space, gpus_per_trial=args.gpus_per_trial,
        cpus_per_trial=args.cpus_per_trial, spot_losses=args.spot_losses,
        idle_timeout_s=args.idle_timeout, max_workers=args.max_workers,
        node_types=tuple(t for t in (args.node_types or "").split(",") if t),
        workdir=args.workdir, timeout_s=args.timeout, epochs=args.epochs))
    print(render_table(report))
    print(f"\nlogs, results and MLflow store: {report['workdir']}")
    res = report["results"]
    ok = (report["sweep_rc"] == 0 and res["parquet_rows"] == res["parquet_trials"] ==
          res["mlflow_trials"] == res["mlflow_children"] and report["scale_to_zero_s"] is not None)
    return 0 if ok else 1


def _publish(args: argparse.Namespace) -> int:
    from biohash.cluster.config import (describe_types, load_cluster_file, node_types,
                                        publish_node_types)

    config = load_cluster_file(args.cluster_file)
    types = node_types(config, args.cluster_file)
    address = args.address
    if address in (None, "auto"):
        import ray._private.services as services

        address = services.canonicalize_bootstrap_address_or_die(address or "auto")
    publish_node_types(address, types)
    print(f"published to {address}: {describe_types(types)}")
    return 0


def _mlflow_backup(args: argparse.Namespace) -> int:
    from biohash.cluster.mlflow_store import backup_store, default_backup_uri

    dest = args.backup or default_backup_uri()
    size = backup_store(args.db, dest)
    print(f"backed up {args.db} to {dest} ({size} bytes, SQLite online backup)")
    return 0


def _mlflow_restore(args: argparse.Namespace) -> int:
    from biohash.cluster.mlflow_store import default_backup_uri, restore_store

    src = args.backup or default_backup_uri()
    done = restore_store(args.db, src)
    print({"kept": f"kept the MLflow store {args.db}",
           "restored": f"restored the MLflow store {args.db} from {src}",
           "fresh": f"no backup at {src}: the MLflow store {args.db} starts empty"}[done])
    return 0


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default="~/mlflow/mlflow.db", help="the head's MLflow SQLite store")
    p.add_argument("--backup", default=None,
                   help="the bucket copy (default: $BIOHASH_BUCKET/mlflow/mlflow.db)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    cluster = sub.add_parser("cluster", help="rehearse a cluster file on this machine; publish "
                                             "its node types to a running cluster")
    csub = cluster.add_subparsers(dest="cluster_command", metavar="SUBCOMMAND", required=True)

    p = csub.add_parser(
        "rehearse", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="run the README's launch command on Ray's real autoscaler with fake nodes",
        description="Start Ray's autoscaler with the fake multi-node provider and the node "
                    "types of CLUSTER_FILE, MLflow as the head starts it, run a sweep with "
                    "--gpus-per-trial/--cpus-per-trial against it, lose worker nodes while "
                    "trials run, and print what happened. Needs no cloud account.")
    p.add_argument("cluster_file", nargs="?", default="cluster.yaml")
    p.add_argument("--space", default="demo", help="search space to run (a shipped name or a YAML)")
    p.add_argument("--gpus-per-trial", type=float, default=0.5)
    p.add_argument("--cpus-per-trial", type=float, default=2.0)
    p.add_argument("--spot-losses", type=int, default=2,
                   help="worker nodes to kill while trials run (each after it is replaced)")
    p.add_argument("--idle-timeout", type=float, default=30.0,
                   help="seconds an idle worker lives (the file's idle_timeout_minutes, shortened)")
    p.add_argument("--max-workers", type=int, default=2,
                   help="cluster-wide worker bound for this machine (the file's is kept if lower); "
                        "each fake worker runs its trials here")
    p.add_argument("--node-types", default=None,
                   help="comma-separated worker types to rehearse (default: all of the file's)")
    p.add_argument("--workdir", default=None,
                   help="empty folder for storage, MLflow and logs (default: a new temp folder)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds the sweep may take")
    p.add_argument("--epochs", type=int, default=None,
                   help="cut every trial to this many epochs (default: the space's own)")
    p.set_defaults(func=_rehearse)

    p = csub.add_parser(
        "publish", help="record a cluster file's node types in the running cluster's GCS",
        description="Write the autoscaler node types of CLUSTER_FILE into Ray's GCS (the "
                    "cluster config Ray's ReportClusterConfig stores), so `biohash sweep run "
                    "--address ...` can check trial resources from any machine. Run it on the "
                    "head after `ray start`.")
    p.add_argument("cluster_file", nargs="?", default="~/ray_bootstrap_config.yaml")
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                   help="GCS address host:port (default: $RAY_ADDRESS, else the local cluster)")
    p.set_defaults(func=_publish)

    p = csub.add_parser(
        "mlflow-backup", help="copy the head's MLflow store to the bucket (SQLite online backup)",
        description="Snapshot the MLflow SQLite store with SQLite's online backup API (consistent "
                    "while the server writes), check it, and replace the bucket copy with it. "
                    "Run it on the head before `ray down`.")
    _store_args(p)
    p.set_defaults(func=_mlflow_backup)

    p = csub.add_parser(
        "mlflow-restore", help="before MLflow starts: keep the store, or restore it from the bucket",
        description="Keep the MLflow store if it exists; otherwise download the bucket copy, "
                    "check it and put it in place; with no bucket copy, start empty. Any "
                    "failure exits non-zero (the head's start command runs it).")
    _store_args(p)
    p.set_defaults(func=_mlflow_restore)
