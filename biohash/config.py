"""``TrialConfig``: one trial's hyperparameters, the single source of truth.

The CLI flags, search-space axes, MLflow params, Parquet columns and run
directory names are all derived from the fields below, never re-listed.

Field names are the old workflow's flag names (``-bs``, ``-ep``, ``-lr`` ...),
so a researcher's shell loops, YAML grids and notebooks use one vocabulary.
The first block of fields reproduces the old ``train.py`` flags in their
order with their defaults; fields after it are biohash additions and appear
in a run name only when they differ from their default, so every old run
name is still produced unchanged.

Each field's metadata says everything there is to know about it: its flag,
when it appears in run names, whether it changes a trial's result
(``affects_result``), what values it allows and which registry (if any) its
value must be a name of. ``check_field(name, value)`` is the one check per
field: ``TrialConfig`` runs it on construction (registries excluded) and in
``validate`` (registries), search spaces run it on every value where it is
written. ``NON_RESULT_FIELDS`` is derived from the metadata for everyone who
needs "the fields that do not change results" (duplicate trials, tables).

This module imports without torch: registry names come from
``biohash.catalog``, which declares them without importing the builders.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

from biohash.errors import ConfigError
from biohash.names import NAME_RULE, check_name, is_name

__all__ = [
    "TrialConfig",
    "FIELDS",
    "DEFAULTS",
    "ALIASES",
    "NON_RESULT_FIELDS",
    "MAX_NBITS",
    "CODE_TABLE_LOSSES",
    "CODE_TABLE_MAX_NBITS",
    "check_field",
    "field_name",
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


#: Largest ``-nbits`` the metrics rank exactly: the Hamming part of the
#: ranking key is one float32 GEMM whose partial sums are integers up to
#: 10·nbits (``biohash.metrics._ranking._hamming_parts``), exact below 2**24.
MAX_NBITS = (2**24 - 1) // 10
#: Losses that read h2q's code table (HyP2/CEL separations); its rows are
#: nbits 1..CODE_TABLE_MAX_NBITS (``biohash/losses/h2q-codetable.csv``).
CODE_TABLE_LOSSES = ("HyP2", "CEL")
CODE_TABLE_MAX_NBITS = 256


class Allowed(NamedTuple):
    """A field's own value rule: ``test(value)`` and the words for the message."""

    test: Callable[[Any], bool]
    text: str


def _at_least(low: int) -> Allowed:
    return Allowed(lambda v: v >= low, f"an integer >= {low}")


def _finite(*, positive: bool) -> Allowed:
    if positive:
        return Allowed(lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
    return Allowed(lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")


def _one_of(choices: tuple[str, ...]) -> Allowed:
    return Allowed(lambda v: v in choices, ", ".join(choices))


_NAME = Allowed(is_name, NAME_RULE)
_NBITS = Allowed(lambda v: 1 <= v <= MAX_NBITS, f"an integer in 1..{MAX_NBITS:,} (the largest "
                                                 f"code the metrics rank exactly)")


def _f(default: Any, flag: str, help: str, *, long: str | None = None,
       name: str = "always", allowed: Allowed | None = None, registry: str | None = None,
       affects_result: bool = True) -> Any:
    """A config field.

    ``name``: 'always' | 'never' | 'nondefault' | 'true' says when the field
    appears in the run directory name; ``allowed``: its own value rule;
    ``registry``: the ``biohash.catalog.REGISTRIES`` kind its value names;
    ``affects_result``: False for bookkeeping that cannot change what the
    trial computes (its folder, workers, skip rules).
    """
    return field(default=default,
                 metadata={"flag": flag, "long": long, "help": help, "name": name,
                           "allowed": allowed, "registry": registry,
                           "affects_result": affects_result})


@dataclass(frozen=True)
class TrialConfig:
    """One train -> predict -> evaluate trial. Frozen: derive with ``replace``."""

    # --- the old workflow's flags, in its order, with its defaults ---------
    exp: str = _f("default", "exp", "experiment name (a folder under models/<group>/<db>/)",
                  long="experiment_name", name="never", allowed=_NAME, affects_result=False)
    db: str = _f("CIFAR_10", "db", "dataset", long="database", name="never", allowed=_NAME,
                 registry="dataset")
    loss: str = _f("DSH", "loss", "hashing loss", registry="loss")
    nbits: int = _f(32, "nbits", "code length in bits", long="number_of_bits", allowed=_NBITS)
    trf: str = _f("imagenet", "trf", "input transform (name only, kept for run names)",
                  long="transformation", allowed=_one_of(TRANSFORMS))
    arch: str = _f("alexnet", "arch", "architecture; 'bio-<arch>' trains it with -mode",
                   long="architecture", registry="arch")
    seed: int = _f(0, "seed", "random seed (data order, init, feedback matrices)",
                   allowed=_at_least(0))
    bs: int = _f(16, "bs", "batch size", long="batch_size",
                 allowed=Allowed(lambda v: v >= 2, "an integer >= 2 (pairwise losses need pairs)"))
    mode: str = _f("fa", "mode", "learning rule of bio-<arch> models", registry="mode")
    nw: int = _f(1, "nw", "data loader workers (kept for compatibility)",
                 long="num_workers", name="never", allowed=_at_least(0), affects_result=False)
    ep: int = _f(10, "ep", "epochs", long="epochs", allowed=_at_least(1))
    pt: int = _f(10, "pt", "early-stopping patience in epochs", long="patience",
                 allowed=_at_least(1))
    lr: float = _f(1e-5, "lr", "learning rate (hash layer: 10x)", long="learning_rate",
                   allowed=_finite(positive=True))
    wd: float = _f(5e-4, "wd", "weight decay", long="weight_decay",
                   allowed=_finite(positive=False))
    optim: str = _f("adam", "optim", "optimizer: adam, sgd (momentum 0.9), rmsprop",
                    long="optimizer", allowed=_one_of(OPTIMIZERS))
    penalty: float = _f(0.01, "penalty", "the loss's own quantization weight (lambda)",
                        allowed=_finite(positive=False))
    L2_penalty: float = _f(0.0, "L2_penalty", "weight of mean sum (z - sign z)^2",
                           allowed=_finite(positive=False))
    HSWD_penalty: float = _f(0.0, "HSWD_penalty", "weight of the per-bit Wasserstein penalty",
                             allowed=_finite(positive=False))
    no_cube: bool = _f(False, "no_cube", "no tanh on the hash layer output", name="true")
    no_skip: bool = _f(False, "no_skip", "rerun even if the run already finished", name="never",
                       affects_result=False)
    soft_skip: bool = _f(False, "soft_skip", "skip if a run with any status exists", name="never",
                         affects_result=False)
    # --- biohash additions (named in run names only when not default) -----
    bio_scope: str = _f("all", "bio_scope",
                        "Hybrid Bio-Training: all | backbone | head | part=mode,... "
                        "(parts: backbone, head; modes: any rule or 'frozen')",
                        name="nondefault", registry="mode")
    weights: str = _f("imagenet", "weights", "backbone init: imagenet (pretrained) or none",
                      name="nondefault", allowed=_one_of(WEIGHTS))
    val_size: int = _f(1000, "val_size",
                       "val items drawn (without replacement) per validation split (h2q: 1000)",
                       name="nondefault", allowed=_at_least(10))
    val_repeats: int = _f(5, "val_repeats",
                          "random val query/retrieval splits averaged per epoch (h2q: 5)",
                          name="nondefault", allowed=_at_least(1))
    precision: str = _f("fp32", "precision",
                        "training precision: fp32 (h2q), or autocast bf16, fp16 (CUDA only), "
                        "auto (bf16 on CUDA, fp32 on CPU); predict/eval features are always fp32",
                        name="nondefault", allowed=_one_of(PRECISIONS))
    hswd_sample: str = _f("random", "hswd_sample",
                          "HSWD target: random (a fresh uniform +-1 matrix per step, as h2q) or "
                          "balanced (no draw: the expected sorted sample, half -1 then +1)",
                          name="nondefault", allowed=_one_of(HSWD_SAMPLES))

    def __post_init__(self) -> None:
        # Coerce types once so that YAML ints for floats (lr: 1) and CLI
        # strings produce the same run names ("1.0" not "1").
        for f in FIELDS:
            object.__setattr__(self, f.name, _checked(f, getattr(self, f.name)))
        self._check_combination()

    # ------------------------------------------------------------------ checks
    def _check_combination(self) -> None:
        """Rules between fields (each field's own rule is ``check_field``'s)."""
        if self.no_skip and self.soft_skip:
            raise ConfigError("bad -soft_skip True; allowed: not together with -no_skip")
        if self.bio_scope != "all" and not self.arch.startswith("bio-"):
            raise ConfigError(
                f"bad -bio_scope {self.bio_scope!r} for -arch {self.arch!r}; "
                f"a scope needs a bio-<arch> (e.g. bio-{self.arch})")
        if self.loss in CODE_TABLE_LOSSES and self.nbits > CODE_TABLE_MAX_NBITS:
            raise ConfigError(f"bad -nbits {self.nbits} for -loss {self.loss}; allowed: 1.."
                              f"{CODE_TABLE_MAX_NBITS} (the rows of h2q's code table, which "
                              f"{'/'.join(CODE_TABLE_LOSSES)} read)")

    def validate(self) -> "TrialConfig":
        """Check names against the registries; returns self for chaining."""
        for f in FIELDS:
            if f.metadata["registry"]:
                _check_registry(f.name, getattr(self, f.name))
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
        """``models/<group>/<db>/<exp>/<run_name>`` as in the old workflow.

        ``group`` is a user-given folder name: ``ConfigError`` unless it passes
        ``biohash.names.check_name`` (so ``--group ../x`` cannot leave ``models_dir``).
        """
        check_name(group, "--group")
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
#: Field name -> its default.
DEFAULTS: dict[str, Any] = {f.name: f.default for f in FIELDS}
#: Long alias (the old ``--batch_size`` spellings) -> field name.
ALIASES: dict[str, str] = {f.metadata["long"]: f.name for f in FIELDS if f.metadata["long"]}
#: Fields that cannot change what a trial computes (``affects_result=False``).
NON_RESULT_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS
                                           if not f.metadata["affects_result"])


def field_name(key: str) -> str | None:
    """The field a key names (a field name or a long alias), or None."""
    name = ALIASES.get(key, key)
    return name if name in _BY_NAME else None


def check_field(name: str, value: Any, *, registry: bool = True) -> Any:
    """Type and check one field's value on its own; returns the typed value.

    The field's type (``_coerce``), its own value rule (``allowed``) and,
    with ``registry``, its registry names (importing only the torch-free
    ``biohash.catalog``; datasets read ``biohash.data``). Rules between
    fields are ``TrialConfig``'s. Raises ``ConfigError`` naming the flag.
    """
    f = _BY_NAME.get(name)
    if f is None:
        raise ConfigError(f"unknown field {name!r}; allowed: {', '.join(DEFAULTS)}")
    typed = _coerce(f, value)
    _check_allowed(f, typed)
    if registry and f.metadata["registry"]:
        _check_registry(name, typed)
    return typed


#: (field, type, value) -> the coerced, checked value: a 100,000-trial space repeats a few
#: values per field, and coercing and checking each of them per trial was ~1/3 of expanding it.
_CHECKED: dict[tuple[str, type, Any], Any] = {}
_CHECKED_MAX = 1 << 14


def _checked(f: dataclasses.Field, value: Any) -> Any:
    """``check_field`` without the registry, memoised for hashable values (a value that
    fails is never cached, so it fails every time)."""
    key: tuple[str, type, Any] | None = (f.name, type(value), value)
    try:
        return _CHECKED[key]
    except KeyError:
        pass
    except TypeError:  # unhashable (e.g. a list given for a scalar): checked, not cached
        key = None
    typed = check_field(f.name, value, registry=False)
    if key is not None and len(_CHECKED) < _CHECKED_MAX:
        _CHECKED[key] = typed
    return typed


def _check_allowed(f: dataclasses.Field, value: Any) -> None:
    allowed: Allowed | None = f.metadata["allowed"]
    if allowed is not None and not allowed.test(value):
        raise ConfigError(f"bad -{f.metadata['flag']} {value!r}; allowed: {allowed.text}")
    if f.name == "bio_scope":
        _check_scope(value)


def _check_scope(scope: str) -> None:
    """A scope's syntax, and that something learns: explicit ``part=frozen``
    for every part (the implicit parts are never frozen)."""
    if set(parse_bio_scope(scope, "bp").values()) == {FROZEN}:
        raise ConfigError(f"bad -bio_scope {scope!r}: every part is frozen, so nothing "
                          f"would learn; give at least one part a rule or bp")


def _check_registry(name: str, value: str) -> None:
    from biohash.catalog import REGISTRIES

    f = _BY_NAME[name]
    registry = REGISTRIES[f.metadata["registry"]]
    if name == "bio_scope":  # the modes a scope names; FROZEN is not a rule
        for part, part_mode in parse_bio_scope(value, "bp").items():
            if part_mode != FROZEN and part_mode not in registry:
                raise ConfigError(f"bad -bio_scope {value!r}: unknown mode {part_mode!r} for "
                                  f"{part}; choose from {', '.join(registry.names())}, {FROZEN}")
        return
    registry.check(base_arch(value) if name == "arch" else value)


def _known(data: Mapping[str, Any], *, source: str = "config") -> dict[str, Any]:
    """Map long aliases to field names; reject unknown keys."""
    out = {}
    for key, value in data.items():
        name = ALIASES.get(key, key)
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
