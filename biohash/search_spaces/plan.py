"""``plan``: what a sweep over a space would run, need and cost, before launch.

The GPU-time estimate is an upper bound from a deliberately simple cost
model (every number is in the tables below, so it is easy to recalibrate):

    train   = ep x |train fold| / train_ips(arch) x overhead(rule) x slowdown(precision)
    val     = ep x |val fold| / predict_ips(arch) x slowdown(fp32)  (per-epoch validation
              hashes the whole val fold, always in fp32)
    predict = (sum of all folds) / predict_ips(arch) x slowdown(fp32)  (always fp32)
    hours   = sum over trials of (train + val + predict) / 3600

It assumes every epoch runs (no early stopping), ignores evaluation (seconds
on a CPU with the vectorised metrics) and data loading (processed data is
memory-mapped uint8), and counts one trial per GPU.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Mapping

from biohash.config import FROZEN, TrialConfig, base_arch, parse_bio_scope
from biohash.search_spaces.space import SearchSpace

__all__ = ["Plan", "DataStatus", "plan", "trial_gpu_seconds",
           "REFERENCE_GPU", "THROUGHPUT", "RULE_OVERHEAD", "PRECISION_SLOWDOWN"]

#: The card and setting the throughput table is for.
REFERENCE_GPU = "NVIDIA A10G (AWS g5), bf16 autocast, 224x224 (cnn-small: its own small input)"
#: Rough images/second of one trial on REFERENCE_GPU, per base arch:
#: (training forward+backward, inference forward). Derived from the archs'
#: FLOPs (vgg16 15.5 GMAC, hrnet_w18 4.3, hrnet_w32 9.0, alexnet 0.7) at
#: ~35 dense TFLOP/s achieved; alexnet and cnn-small are input-bound.
THROUGHPUT: dict[str, tuple[float, float]] = {
    "alexnet": (2500.0, 8000.0),
    "vgg16": (300.0, 1000.0),
    "hhnet-w18": (450.0, 1400.0),
    "hhnet-w32": (250.0, 800.0),
    "cnn-small": (20000.0, 60000.0),
}
#: Arch assumed for an arch missing from THROUGHPUT (the slowest: an upper bound).
FALLBACK_ARCH = "vgg16"
#: Training-time factor of each rule vs backprop: the custom autograd
#: functions lose some fusion; sign-concordant rules recompute sign(W) each
#: step; brsf also redraws its magnitudes every batch.
RULE_OVERHEAD: dict[str, float] = {
    "bp": 1.0, FROZEN: 1.0, "fa": 1.15, "usf": 1.2, "frsf": 1.2, "brsf": 1.3, "dfa": 1.15,
}
#: Time factor of each ``-precision`` vs the bf16 autocast THROUGHPUT was set
#: for. fp32 (the default, as h2q) runs convolutions in TF32 (PyTorch's cuDNN
#: default), whose dense tensor-core rate on Ampere cards like the A10G is
#: half of bf16's, and moves twice the activation bytes: x2 for the
#: compute-bound archs, applied to all (an upper bound for the input-bound
#: alexnet and cnn-small). ``auto`` is bf16 on CUDA. Predict and the per-epoch
#: validation always run in fp32, so they always take the fp32 factor.
PRECISION_SLOWDOWN: dict[str, float] = {"fp32": 2.0, "bf16": 1.0, "fp16": 1.0, "auto": 1.0}


@dataclass(frozen=True)
class DataStatus:
    """Whether one dataset's processed store exists under the data root.

    ``auto``: not there yet, but built on first use (small embedded sets),
    so it does not stop a launch.
    """

    name: str
    ready: bool
    auto: bool = False
    message: str = ""  # how to get it, when not ready

    @property
    def state(self) -> str:
        return "ready" if self.ready else "built on first use" if self.auto else "MISSING"


@dataclass(frozen=True)
class Plan:
    """A space's trials plus what launching them needs; see ``render``."""

    space: SearchSpace
    trials: list[TrialConfig]
    axes: dict[str, list[Any]]
    data_root: str
    data: dict[str, DataStatus]
    gpu_hours: float
    #: GPU-hours per (db, arch), for the breakdown in ``render``.
    gpu_hours_by: dict[tuple[str, str], float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def n_trials(self) -> int:
        """Trials the sweep runs (``trials`` are the grid combinations, each
        run ``search.num_samples`` times with drawn values when it samples)."""
        return self.space.n_trials

    @property
    def problems(self) -> list[str]:
        """Reasons not to launch (missing data); empty when ready."""
        return [s.message for s in self.data.values() if not (s.ready or s.auto)]

    def render(self) -> str:
        """The text ``biohash sweep plan`` prints."""
        lines = [f"search space {self.space.name!r} ({self.space.source}): "
                 f"{self.n_trials:,} trials"]
        if self.space.description:
            lines.append(f"  {self.space.description}")
        per_rule = self.space.trials_per_rule
        if len(per_rule) > 1:
            lines.append("per learning rule: " + ", ".join(f"{rule} {n:,}"
                                                           for rule, n in per_rule.items()))
        lines.append("axes:" if self.axes else "axes: none (a single configuration)")
        width = max((len(name) for name in (*self.axes, *self.space.sample)), default=0)
        lines += [f"  {name:<{width}}  {', '.join(map(str, values))}"
                  for name, values in self.axes.items()]
        search = self.space.search
        if search.sampled:
            limit = search.max_concurrent or "no limit"
            lines.append(f"sampled axes ({search.algorithm}, {search.num_samples:,} samples per "
                         f"grid combination x {len(self.trials):,} combinations, seed "
                         f"{search.seed}, metric {search.metric}, max concurrent {limit}):")
            lines += [f"  {name:<{width}}  {dist.describe()}"
                      for name, dist in self.space.sample.items()]
        n = search.num_samples
        per_db = Counter({db: count * n for db, count in
                          Counter(cfg.db for cfg in self.trials).items()})
        lines.append(f"data (root {self.data_root!r}):")
        width = max(len(name) for name in self.data)
        for name, status in self.data.items():
            lines.append(f"  {name:<{width}}  {per_db[name]:>6} trials  {status.state}")
        lines.append(f"estimated GPU time: {_duration(self.gpu_hours)} upper bound "
                     "(every epoch, no early stopping)")
        lines.append(f"  on {REFERENCE_GPU};")
        lines.append(f"  fp32 (the default) costs x{PRECISION_SLOWDOWN['fp32']:g}; "
                     "predict and validation always run in fp32:")
        width = max((len(f"{db} {arch}") for db, arch in self.gpu_hours_by), default=0)
        lines += [f"    {f'{db} {arch}':<{width}}  {_duration(hours)}"
                  for (db, arch), hours in self.gpu_hours_by.items()]
        lines += [f"note: {note}" for note in self.notes]
        if self.problems:
            lines.append("problems (the sweep will not launch):")
            lines += [f"  - {problem}" for problem in self.problems]
        return "\n".join(lines)


def plan(space: SearchSpace, *, data_root: str = "data") -> Plan:
    """Expand and validate ``space``, check its data under ``data_root`` and
    estimate its GPU time (see the module docstring for the cost model)."""
    from biohash.data import DATASETS, is_processed, missing_message

    trials = space.expand(validate=True)
    notes: list[str] = []
    data: dict[str, DataStatus] = {}
    for db in dict.fromkeys(cfg.db for cfg in trials):
        ready = is_processed(db, data_root)
        auto = not ready and DATASETS.get(db).auto_process
        data[db] = DataStatus(db, ready, auto, "" if ready else missing_message(db, data_root))
    by: dict[tuple[str, str], float] = {}
    # Every Dataset states its fold sizes as a class constant (biohash.data.base).
    sizes = {db: DATASETS.get(db).split_sizes for db in data}
    uncosted = sorted({base_arch(c.arch) for cfg in trials for c in space.corners(cfg)}
                      - set(THROUGHPUT))
    notes += [f"no throughput for {arch}; costed as {FALLBACK_ARCH}" for arch in uncosted]
    for cfg in trials:
        # A sampled trial costs at most its dearest corner (the cost model is
        # monotone in each field), times the draws per combination.
        costs = {c: trial_gpu_seconds(c, sizes[c.db]) for c in space.corners(cfg)}
        worst = max(costs, key=costs.__getitem__)
        key = (worst.db, worst.arch)
        by[key] = by.get(key, 0.0) + costs[worst] * space.search.num_samples / 3600
    return Plan(space=space, trials=trials, axes=space.axes, data_root=str(data_root),
                data=data, gpu_hours=sum(by.values()), gpu_hours_by=by, notes=notes)


def trial_gpu_seconds(cfg: TrialConfig, split_sizes: Mapping[str, int]) -> float:
    """Upper-bound GPU seconds of one trial on REFERENCE_GPU.

    ``split_sizes``: items per fold (``train``, ``query``, ``val``,
    ``database``), as the dataset registry states them.
    """
    train_ips, predict_ips = THROUGHPUT.get(base_arch(cfg.arch), THROUGHPUT[FALLBACK_ARCH])
    train = (cfg.ep * split_sizes["train"] / train_ips * rule_overhead(cfg)
             * PRECISION_SLOWDOWN[cfg.precision])
    fp32 = PRECISION_SLOWDOWN["fp32"]
    val = cfg.ep * split_sizes.get("val", cfg.val_size) / predict_ips * fp32
    predict = sum(split_sizes.values()) / predict_ips * fp32
    return train + val + predict


def rule_overhead(cfg: TrialConfig) -> float:
    """The slowest rule among the trial's parts (an upper bound)."""
    parts = parse_bio_scope(cfg.bio_scope, cfg.effective_mode)
    return max(RULE_OVERHEAD.get(mode, max(RULE_OVERHEAD.values())) for mode in parts.values())


def _duration(hours: float) -> str:
    return f"{hours:,.1f} GPU-hours" if hours >= 0.1 else f"{hours * 60:.1f} GPU-minutes"

