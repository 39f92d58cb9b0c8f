"""What the driver-side sinks need from a Tune trial and its reports."""
from __future__ import annotations

import logging
import os
from typing import Any, Mapping

from ray.tune.result import AUTO_RESULT_KEYS

from biohash.config import TrialConfig
from biohash.contract import BOOKKEEPING, FINAL, TRAIN
from biohash.errors import ConfigError
from biohash.results.schema import numeric_items

__all__ = ["trial_config", "epoch_metrics", "trial_error_text", "FINAL", "TRAIN"]

log = logging.getLogger(__name__)
#: Keys Tune adds to every report (its own and the few it adds besides
#: ``AUTO_RESULT_KEYS``), and the bookkeeping keys of the contract.
_NOT_METRICS = frozenset(AUTO_RESULT_KEYS) | {"done", "should_checkpoint", "experiment_tag"} \
    | frozenset(BOOKKEEPING)


def trial_config(trial: Any) -> TrialConfig | None:
    """The trial's ``TrialConfig`` (``trial.config["trial"]``), None if not a biohash trial."""
    data = (getattr(trial, "config", None) or {}).get("trial")
    if not isinstance(data, Mapping):
        return None
    try:
        return TrialConfig.from_dict(data, source=f"trial {trial}")
    except ConfigError as exc:
        log.warning("results: skipping trial %s with a bad config: %s", trial, exc)
        return None


def epoch_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The numeric metrics of a report, without Tune's own bookkeeping keys."""
    return {k: v for k, v in numeric_items(result) if k not in _NOT_METRICS}


def trial_error_text(trial: Any) -> str | None:
    """The last lines of the trial's error trace (None when Tune kept none)."""
    text = None
    try:
        # Written locally by Tune before callbacks run; storage gets it later.
        if trial.error_file and os.path.isfile(trial.error_file):
            with open(trial.error_file, encoding="utf-8", errors="replace") as f:
                text = f.read()
        else:
            text = trial.get_error()
    except Exception:  # noqa: BLE001 - storage may be gone; the status alone still counts
        return None
    if text is None:
        return None
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return "\n".join(lines[-3:])[-2000:] if lines else None
