"""``biohash train | predict | eval``: the old scripts' flags, verbatim.

``python src/models/PenaltyStrategies/train.py -exp bioexp -db CIFAR_10 ...``
becomes ``biohash train -exp bioexp -db CIFAR_10 ...`` with the same names,
defaults and run directories (``models/<group>/<db>/<exp>/<run name>``);
``python src/eval/eval_map.py -p RUN_DIR`` becomes ``biohash eval -p RUN_DIR``.

Bad input exits 2 before anything is written: flags through ``TrialConfig``
(one check per field) and ``--group`` through ``TrialConfig.run_dir``'s name
check; a dataset that is not processed under ``--data-root`` is reported
(with the commands that make it) before the run directory is created.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from biohash.config import FIELDS, TrialConfig
from biohash.defaults import default_data_root

__all__ = ["add_parser"]

_TYPES = {"str": str, "int": int, "float": float}


def _add_trial_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrialConfig field: ``-bs`` (and ``--batch_size`` where it had one)."""
    for f in FIELDS:
        names = [f"-{f.metadata['flag']}"]
        if f.metadata["long"]:
            names.append(f"--{f.metadata['long']}")
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        if kind == "bool":
            parser.add_argument(*names, dest=f.name, action="store_true", help=f.metadata["help"])
        else:
            parser.add_argument(*names, dest=f.name, type=_TYPES[kind], default=f.default,
                                help=f.metadata["help"])
    _add_runtime_flags(parser)


def _add_runtime_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", default=default_data_root(),
                        help="processed data root (path or URI; default $BIOHASH_DATA_ROOT, else data)")
    parser.add_argument("--models-dir", default="models", help="root of run directories")
    parser.add_argument("--group", default="PenaltyStrategies", help="folder under models/")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")


def _config(args: argparse.Namespace) -> TrialConfig:
    cfg = TrialConfig.from_dict({f.name: getattr(args, f.name) for f in FIELDS}, source="flags")
    return cfg.validate()


def _require_data(cfg: TrialConfig, data_root: str) -> None:
    """``DataError`` (the commands that make it) unless ``cfg.db`` is processed under
    ``data_root`` or is built on first use (the embedded DIGITS sets)."""
    from biohash.data import DATASETS, is_processed, missing_message
    from biohash.errors import DataError

    if not DATASETS.get(cfg.db).auto_process and not is_processed(cfg.db, data_root):
        raise DataError(missing_message(cfg.db, data_root))


def _runtime(args: argparse.Namespace):
    from biohash.pipeline.runtime import Runtime

    return Runtime(data_root=args.data_root, device=args.device)


def _print_epoch(metrics: dict, _ckpt: Path) -> None:
    print(f"epoch {metrics['epoch']:>3}  loss {metrics.get('train/loss', float('nan')):.4f}  "
          f"val mAP {metrics['val_mAP']:.4f}  ({metrics['time/epoch_s']:.1f}s)", flush=True)


def _train(args: argparse.Namespace) -> int:
    from biohash.pipeline.run import resume_point, skip_reason, train_in_run_dir

    cfg = _config(args)
    run_dir = cfg.run_dir(args.models_dir, args.group)
    reason = skip_reason(cfg, run_dir, "train")
    if reason:
        print(f"skipping: {reason}")
        return 0
    _require_data(cfg, args.data_root)
    print(f"run directory: {run_dir}")
    result = train_in_run_dir(cfg, run_dir, runtime=_runtime(args), report=_print_epoch,
                              resume=resume_point(cfg, run_dir))
    print(f"{result.status}: best val mAP {result.best_val:.4f} at epoch {result.best_epoch}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from biohash.pipeline.predict import predict
    from biohash.pipeline.run import write_status

    cfg = _config(args)
    run_dir = cfg.run_dir(args.models_dir, args.group)
    _require_data(cfg, args.data_root)
    seconds = predict(cfg, run_dir, runtime=_runtime(args), hashes_tsv=args.hashes_tsv)
    write_status(run_dir, predict="done")
    print(f"predictions written to {run_dir} ({seconds:.1f}s)")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from biohash.pipeline.evaluate import EVAL_FOLDS, evaluate
    from biohash.pipeline.run import write_status

    results, _ = evaluate(Path(args.p), folds=tuple(args.folds or EVAL_FOLDS))
    write_status(args.p, eval="done")
    print(json.dumps(results, indent=2, sort_keys=True))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    common = dict(allow_abbrev=False, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p = sub.add_parser("train", help="train one config (old train.py flags)", **common)
    _add_trial_flags(p)
    p.set_defaults(func=_train)

    p = sub.add_parser("predict", help="hash every fold with the best checkpoint (old predict.py flags)",
                       **common)
    _add_trial_flags(p)
    p.add_argument("--hashes-tsv", "-tsv", action="store_true",
                   help="also write the old {fold}-hashes.tsv text files")
    p.set_defaults(func=_predict)

    p = sub.add_parser("eval", help="retrieval metrics of a run directory (old eval_map.py)", **common)
    p.add_argument("-p", "--path", dest="p", required=True, help="run directory")
    p.add_argument("--folds", nargs="+", help="query and/or val (default: both)")
    p.set_defaults(func=_eval)
