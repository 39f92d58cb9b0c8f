"""``TrialConfig``: one trial's hyperparameters, the single source of truth.

The CLI flags, search-space axes, MLflow params, Parquet columns and run
directory names are all derived from the fields below, never re-listed.

Field names are the old workflow's flag names (``-bs``, ``-ep``, ``-lr`` ...),
so a researcher's shell loops, YAML grids and notebooks use one vocabulary.
The first block of fields reproduces the old ``train.py`` flags in their
order with their defaults; fields after it are biohash additions and appear
in a run name only when they differ from their default, so every old run
name is still produced unchanged.

This module imports without torch; name checks against the registries
(archs, losses, modes, datasets) import them lazily in ``validate``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from biohash.errors import ConfigError

__all__ = [
    "TrialConfig",
    "FIELDS",
    "OPTIMIZERS",
    "PRECISIONS",
    "HSWD_SAMPLES",
    "WEIGHTS",
    "BIO_PARTS",
    "parse_bio_scope",
    "effective_mode",
    "base_arch",
    "RUN_CONFIG_FILE",
]

OPTIMIZERS = ("adam", "sgd", "rmsprop")
#: fp32 first: the default, as h2q trained; the others are opt-in autocast
#: policies (``auto`` = bf16 on CUDA, fp32 elsewhere).
PRECISIONS = ("fp32", "bf16", "fp16", "auto")
#: How the HSWD penalty draws its target +-1 matrix (see ``biohash.losses``).
HSWD_SAMPLES = ("random", "balanced")
WEIGHTS = ("imagenet", "none")
TRANSFORMS = ("imagenet",)
#: Parts of every biohash model that a Hybrid Bio-Training scope may name.
BIO_PARTS = ("backbone", "head")
#: Pseudo-mode for a scope part: parameters frozen (no gradient at all).
FROZEN = "frozen"
RUN_CONFIG_FILE = "config.json"


def _f(default: Any, flag: str, help: str, *, long: str | None = None,
       name: str = "always") -> Any:
    """A config field. ``name``: 'always' | 'never' | 'nondefault' | 'true'
    says when the field appears in the run directory name."""
    return field(default=default,
                 metadata={"flag": flag, "long": long, "help": help, "name": name})


@dataclass(frozen=True)
class TrialConfig:
    """One train -> predict -> evaluate trial. Frozen: derive with ``replace``."""

    # --- the old workflow's flags, in its order, with its defaults ---------
    exp: str = _f("default", "exp", "experiment name (a folder under models/<group>/<db>/)",
                  long="experiment_name", name="never")
    db: str = _f("CIFAR_10", "db", "dataset", long="database", name="never")
    loss: str = _f("DSH", "loss", "hashing loss")
    nbits: int = _f(32, "nbits", "code length in bits", long="number_of_bits")
    trf: str = _f("imagenet", "trf", "input transform (name only, kept for run names)",
                  long="transformation")
    arch: str = _f("alexnet", "arch", "architecture; 'bio-<arch>' trains it with -mode",
                   long="architecture")
    seed: int = _f(0, "seed", "random seed (data order, init, feedback matrices)")
    bs: int = _f(16, "bs", "batch size", long="batch_size")
    mode: str = _f("fa", "mode", "learning rule of bio-<arch> models")
    nw: int = _f(1, "nw", "data loader workers (kept for compatibility)",
                 long="num_workers", name="never")
    ep: int = _f(10, "ep", "epochs", long="epochs")
    pt: int = _f(10, "pt", "early-stopping patience in epochs", long="patience")
    lr: float = _f(1e-5, "lr", "learning rate (hash layer: 10x)", long="learning_rate")
    wd: float = _f(5e-4, "wd", "weight decay", long="weight_decay")
    optim: str = _f("adam", "optim", "optimizer: adam, sgd (momentum 0.9), rmsprop",
                    long="optimizer")
    penalty: float = _f(0.01, "penalty", "the loss's own quantization weight (lambda)")
    L2_penalty: float = _f(0.0, "L2_penalty", "weight of mean sum (z - sign z)^2")
    HSWD_penalty: float = _f(0.0, "HSWD_penalty", "weight of the per-bit Wasserstein penalty")
    no_cube: bool = _f(False, "no_cube", "no tanh on the hash layer output", name="true")
    no_skip: bool = _f(False, "no_skip", "rerun even if the run already finished", name="never")
    soft_skip: bool = _f(False, "soft_skip", "skip if a run with any status exists", name="never")
    # --- biohash additions (named in run names only when not default) -----
    bio_scope: str = _f("all", "bio_scope",
                        "Hybrid Bio-Training: all | backbone | head | part=mode,... "
                        "(parts: backbone, head; modes: any rule or 'frozen')",
                        name="nondefault")
    weights: str = _f("imagenet", "weights", "backbone init: imagenet (pretrained) or none",
                      name="nondefault")
    val_size: int = _f(1000, "val_size",
                       "val items drawn (without replacement) per validation split (h2q: 1000)",
                       name="nondefault")
    val_repeats: int = _f(5, "val_repeats",
                          "random val query/retrieval splits averaged per epoch (h2q: 5)",
                          name="nondefault")
    precision: str = _f("fp32", "precision",
                        "training precision: fp32 (h2q), or autocast bf16, fp16 (CUDA only), "
                        "auto (bf16 on CUDA, fp32 on CPU); predict/eval features are always fp32",
                        name="nondefault")
    hswd_sample: str = _f("random", "hswd_sample",
                          "HSWD target: random (a fresh uniform +-1 matrix per step, as h2q) or "
                          "balanced (no draw: the expected sorted sample, half -1 then +1)",
                          name="nondefault")

    def __post_init__(self) -> None:
        # Coerce types once so that YAML ints for floats (lr: 1) and CLI
        # strings produce the same run names ("1.0" not "1").
        for f in fields(self):
            object.__setattr__(self, f.name, _coerce(f, getattr(self, f.name)))
        self._check_values()

    # ------------------------------------------------------------------ checks
    def _check_values(self) -> None:
        """Range checks that need no registry (cheap, torch-free)."""
        def need(ok: bool, name: str, allowed: str) -> None:
            if not ok:
                raise ConfigError(f"bad -{name} {getattr(self, name)!r}; allowed: {allowed}")

        need(self.nbits >= 1, "nbits", "an integer >= 1")
        need(self.bs >= 2, "bs", "an integer >= 2 (pairwise losses need pairs)")
        need(self.ep >= 1, "ep", "an integer >= 1")
        need(self.pt >= 1, "pt", "an integer >= 1")
        need(self.nw >= 0, "nw", "an integer >= 0")
        need(self.seed >= 0, "seed", "an integer >= 0")
        need(math.isfinite(self.lr) and self.lr > 0, "lr", "a finite number > 0")
        need(math.isfinite(self.wd) and self.wd >= 0, "wd", "a finite number >= 0")
        for name in ("penalty", "L2_penalty", "HSWD_penalty"):
            need(math.isfinite(getattr(self, name)) and getattr(self, name) >= 0,
                 name, "a finite number >= 0")
        need(self.optim in OPTIMIZERS, "optim", ", ".join(OPTIMIZERS))
        need(self.trf in TRANSFORMS, "trf", ", ".join(TRANSFORMS))
        need(self.weights in WEIGHTS, "weights", ", ".join(WEIGHTS))
        need(self.precision in PRECISIONS, "precision", ", ".join(PRECISIONS))
        need(self.hswd_sample in HSWD_SAMPLES, "hswd_sample", ", ".join(HSWD_SAMPLES))
        need(self.val_size >= 10, "val_size", "an integer >= 10")
        need(self.val_repeats >= 1, "val_repeats", "an integer >= 1")
        need(not (self.no_skip and self.soft_skip), "soft_skip",
             "not together with -no_skip")
        for part in ("exp", "db"):
            value = getattr(self, part)
            need(bool(value) and "/" not in value and value not in (".", ".."), part,
                 "a non-empty name without '/'")
        if set(parse_bio_scope(self.bio_scope, self.mode).values()) == {FROZEN}:  # + bad syntax
            raise ConfigError(f"bad -bio_scope {self.bio_scope!r}: every part is frozen, so nothing "
                              f"would learn; give at least one part a rule or bp")
        if self.bio_scope != "all" and not self.arch.startswith("bio-"):
            raise ConfigError(
                f"bad -bio_scope {self.bio_scope!r} for -arch {self.arch!r}; "
                f"a scope needs a bio-<arch> (e.g. bio-{self.arch})")

    def validate(self) -> "TrialConfig":
        """Check names against the registries; returns self for chaining."""
        from biohash.bio import MODES
        from biohash.data import DATASETS
        from biohash.losses import LOSSES
        from biohash.models import ARCHS

        DATASETS.check(self.db)
        LOSSES.check(self.loss)
        MODES.check(self.mode)
        ARCHS.check(base_arch(self.arch))
        for part, part_mode in parse_bio_scope(self.bio_scope, self.mode).items():
            if part_mode != FROZEN and part_mode not in MODES:
                raise ConfigError(f"bad -bio_scope {self.bio_scope!r}: unknown mode {part_mode!r} "
                                  f"for {part}; choose from {', '.join(MODES.names())}, {FROZEN}")
        return self

    # ------------------------------------------------------------ derivations
    @property
    def run_name(self) -> str:
        """The old workflow's run directory name, e.g. ``-loss=DCH-nbits=32-...``.

        ``-flag=str(value)`` per named field, in field order; a true boolean is
        written bare (``...-HSWD_penalty=0.0-no_cube``), as h2q's names were.
        """
        parts = []
        for f in fields(self):
            rule, value = f.metadata["name"], getattr(self, f.name)
            if (rule == "always" or (rule == "true" and value is True)
                    or (rule == "nondefault" and value != f.default)):
                flag = f.metadata["flag"]
                parts.append(f"-{flag}" if value is True else f"-{flag}={value}")
        return "".join(parts)

    def run_dir(self, models_dir: str | Path = "models", group: str = "PenaltyStrategies") -> Path:
        """``models/<group>/<db>/<exp>/<run_name>`` as in the old workflow."""
        return Path(models_dir) / group / self.db / self.exp / self.run_name

    @property
    def trial_id(self) -> str:
        """Stable short id of everything that defines the trial's result."""
        key = json.dumps({"db": self.db, "exp": self.exp, "name": self.run_name}, sort_keys=True)
        return hashlib.sha1(key.encode()).hexdigest()[:12]

    @property
    def effective_mode(self) -> str:
        return effective_mode(self.arch, self.mode)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "TrialConfig":
        return dataclasses.replace(self, **_known(changes))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "config") -> "TrialConfig":
        """Build from a mapping; unknown keys are an error naming the source."""
        return cls(**_known(data, source=source))

    @classmethod
    def from_run_dir(cls, run_dir: str | Path) -> "TrialConfig":
        """Load the config saved in a run directory (``config.json``)."""
        path = Path(run_dir) / RUN_CONFIG_FILE
        if not path.is_file():
            raise ConfigError(f"not a biohash run directory: {str(run_dir)!r} "
                              f"(no {RUN_CONFIG_FILE}); pass -p models/<group>/<db>/<exp>/<run>")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"unreadable {path}: {exc}") from None
        return cls.from_dict(data.get("trial", data), source=str(path))

    def save(self, run_dir: str | Path) -> Path:
        """Write ``config.json`` atomically into ``run_dir``."""
        from biohash.utils import atomic_write_text

        return atomic_write_text(Path(run_dir) / RUN_CONFIG_FILE,
                                 json.dumps({"trial": self.to_dict()}, indent=2))


FIELDS: tuple[dataclasses.Field, ...] = fields(TrialConfig)
_BY_NAME = {f.name: f for f in FIELDS}
_LONG = {f.metadata["long"]: f.name for f in FIELDS if f.metadata["long"]}


def _known(data: Mapping[str, Any], *, source: str = "config") -> dict[str, Any]:
    """Map long aliases to field names; reject unknown keys."""
    out = {}
    for key, value in data.items():
        name = _LONG.get(key, key)
        if name not in _BY_NAME:
            raise ConfigError(f"unknown key {key!r} in {source}; allowed: "
                              f"{', '.join(f.name for f in FIELDS)}")
        out[name] = value
    return out


def _coerce(f: dataclasses.Field, value: Any) -> Any:
    kind = f.type if isinstance(f.type, type) else {"str": str, "int": int, "float": float,
                                                    "bool": bool}[f.type]
    try:
        if kind is bool:
            if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
                return value.lower() in ("true", "1", "yes")
            if isinstance(value, (bool, int)) and value in (0, 1):
                return bool(value)
            raise ValueError
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if not isinstance(value, str):
            raise ValueError
        return value
    except (TypeError, ValueError):
        raise ConfigError(f"bad -{f.metadata['flag']} {value!r}; allowed: "
                          f"{ {bool: 'true/false', int: 'an integer', float: 'a number', str: 'a string'}[kind] }") from None


def base_arch(arch: str) -> str:
    """``bio-vgg16`` -> ``vgg16``."""
    return arch[4:] if arch.startswith("bio-") else arch


def effective_mode(arch: str, mode: str) -> str:
    """The rule actually used: ``-mode`` for ``bio-<arch>``, backprop otherwise.

    The old fork always read ``-mode`` but only bio archs used it; a plain
    arch is trained with backprop whatever ``-mode`` says.
    """
    return mode if arch.startswith("bio-") else "bp"


def parse_bio_scope(scope: str, mode: str) -> dict[str, str]:
    """Turn a ``-bio_scope`` string into ``{part: mode}`` for every part.

    ``all`` -> every part uses ``mode``; ``head`` -> head uses ``mode``, the
    rest backprop; ``backbone=frozen,head=fa`` -> explicit per-part modes.
    Mode names are checked by ``validate`` (registry); syntax here.
    """
    scope = scope.strip()
    if scope == "all":
        return {part: mode for part in BIO_PARTS}
    if scope in BIO_PARTS:
        return {part: (mode if part == scope else "bp") for part in BIO_PARTS}
    out = {part: "bp" for part in BIO_PARTS}
    seen = set()
    for item in scope.split(","):
        part, sep, part_mode = item.partition("=")
        part, part_mode = part.strip(), part_mode.strip()
        if not sep or part not in BIO_PARTS or not part_mode or part in seen:
            raise ConfigError(
                f"bad -bio_scope {scope!r}; allowed: all, {', '.join(BIO_PARTS)}, "
                f"or part=mode pairs like backbone=bp,head=fa (parts: {', '.join(BIO_PARTS)})")
        seen.add(part)
        out[part] = part_mode
    return out
