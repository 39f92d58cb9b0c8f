"""``SearchSpace``: a parsed space file and its expansion into trial configs.

Expansion order (documented in the package docstring): the cartesian
product of ``grid`` over ``fixed``; each ``overrides`` entry in turn; then
``seeds``/``repeats`` (outermost, so a half-finished sweep already covers
every configuration once); then ``exclude``. Two trials that are the same
run (same ``TrialConfig.trial_id``) or that train the same parts with the
same rules (``mode``/``bio_scope`` spelt differently) are an error, not
silently merged: they mean an override or scope collapsed an axis.
"""
from __future__ import annotations

import functools
import itertools
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from biohash.config import (DEFAULTS, FIELDS, NON_RESULT_FIELDS, TrialConfig, check_field,
                            parse_bio_scope)
from biohash.errors import ConfigError
from biohash.registry import Registry
from biohash.search_spaces.spec import (MAX_TRIALS, Arm, Condition, Override, Sampled, Search,
                                        Spec, parse_spec)

__all__ = ["SearchSpace", "SPACES", "load_space", "SPACE_SUFFIXES", "MAX_TRIALS"]

log = logging.getLogger(__name__)

SPACE_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class SearchSpace:
    """A named grid of trials. Build with ``load_space`` or ``from_dict``.

    ``raw`` is the mapping as written; it is checked on construction, so a
    ``SearchSpace`` that exists is well-formed (registry names are checked
    by ``expand(validate=True)``). ``source`` names the file in errors.
    """

    name: str
    path: Path | None = None
    description: str = ""  # empty: taken from raw["description"]
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.source:
            object.__setattr__(self, "source", str(self.path) if self.path else self.name)
        spec = parse_spec(self.raw, source=self.source)
        object.__setattr__(self, "_spec", spec)
        if not self.description:
            object.__setattr__(self, "description", spec.description)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, name: str, path: str | Path | None = None,
                  source: str | None = None) -> "SearchSpace":
        """A space from an already-loaded mapping; ``raw`` is read, never changed."""
        return cls(name=name, path=Path(path) if path else None, raw=raw, source=source or "")

    @property
    def spec(self) -> Spec:
        return self._spec  # type: ignore[attr-defined]

    def expand(self, validate: bool = True) -> list[TrialConfig]:
        """Every trial, in a stable order; a fresh list on each call.

        With ``sample`` axes these are the grid combinations, each with the
        sampled fields at their defaults: the searcher draws
        ``search.num_samples`` configs per combination at run time
        (``n_trials`` counts them).

        ``validate`` also checks names (datasets, losses, modes, archs and
        the modes inside ``bio_scope``) against the registries; that imports
        the subpackages that define them.
        """
        trials = self._trials
        if validate:
            self._check_names(trials)
            self._check_corners(trials)
        return list(trials)

    @property
    def axes(self) -> dict[str, list[Any]]:
        """Every field that takes more than one value, with its values in
        first-seen order (fields in TrialConfig order)."""
        out = {}
        for f in FIELDS:
            values: list[Any] = []
            for cfg in self._trials:
                if getattr(cfg, f.name) not in values:
                    values.append(getattr(cfg, f.name))
            if len(values) > 1:
                out[f.name] = values
        return out

    @property
    def trials_per_rule(self) -> dict[str, int]:
        """Trials per learning rule actually used (``TrialConfig.effective_mode``,
        the results' ``rule`` column: a plain arch is ``bp``), first-seen order.
        Empty when ``mode`` or ``arch`` is sampled (the rule is drawn per trial)."""
        if {"mode", "arch"} & set(self.sample):
            return {}
        n = self.search.num_samples
        return {rule: count * n for rule, count in
                Counter(cfg.effective_mode for cfg in self._trials).items()}

    @property
    def sample(self) -> dict[str, Sampled]:
        """The sampled axes (field -> distribution); empty for a plain grid."""
        return dict(self.spec.sample)

    @property
    def search(self) -> Search:
        return self.spec.search

    @property
    def n_trials(self) -> int:
        """Trials the sweep runs: grid combinations x ``search.num_samples``."""
        return len(self._trials) * self.search.num_samples

    def corners(self, cfg: TrialConfig) -> list[TrialConfig]:
        """``cfg`` (one grid combination) with the sampled fields at every
        combination of their extremes (range ends, every choice): checked
        before launch, and the configs plan's cost upper bound is taken over.
        ``[cfg]`` for a plain grid."""
        sample = self.spec.sample
        combos = itertools.product(*(d.extremes for d in sample.values()))
        return [cfg.replace(**dict(zip(sample, values))) for values in combos]

    # -------------------------------------------------------------- private
    @functools.cached_property
    def _trials(self) -> tuple[TrialConfig, ...]:
        spec = self.spec
        used = {"overrides": [0] * len(spec.overrides), "exclude": [0] * len(spec.exclude),
                "expanded": [0]}
        # A lazy pipeline: at most `limit + 1` kept trials are ever held, so a
        # space that expands past the limit is refused without building it.
        limit = MAX_TRIALS // spec.search.num_samples
        kept = list(itertools.islice(self._expanded(used), limit + 1))
        if len(kept) > limit:
            raise ConfigError(
                f"{self.source}: the space expands past the limit of {MAX_TRIALS:,} trials per "
                f"space (more than {limit * spec.search.num_samples:,}, up to "
                f"{_upper_bound(spec):,}): narrow an axis or split it into several spaces")
        for section in ("overrides", "exclude"):
            for i, count in enumerate(used[section]):
                if not count:  # harmless, but usually a typo in a value
                    log.warning("%s: %s[%d] matches no trial", self.source, section, i)
        if not kept:
            raise ConfigError(f"{self.source}: the space is empty: exclude removes all "
                              f"{used['expanded'][0]} trials")
        trials = tuple(self._build(trial) for trial in kept)
        self._check_duplicates(trials)
        return trials

    def _expanded(self, used: dict[str, list[int]]) -> Iterator[dict[str, Any]]:
        """The trial dicts in expansion order (see the module docstring), lazily;
        ``used`` counts the matches of each override and exclusion, and the
        trials before exclusion (``expanded``)."""
        spec = self.spec

        def configurations() -> Iterator[dict[str, Any]]:
            dicts: Iterable[dict[str, Any]] = ({**spec.fixed, **combo}
                                               for combo in _product(spec.grid))
            for i, override in enumerate(spec.overrides):
                dicts = _overridden(dicts, override, used["overrides"], i)
            return iter(dicts)

        if spec.seeds is None:
            trials: Iterable[dict[str, Any]] = configurations()
        else:  # seeds outermost: the configurations are re-expanded per seed
            trials = ({**trial, "seed": seed} for seed in spec.seeds
                      for trial in configurations())
        for trial in trials:
            used["expanded"][0] += 1
            hits = [i for i, cond in enumerate(spec.exclude) if _matches(trial, cond)]
            for i in hits:
                used["exclude"][i] += 1
            if not hits:
                yield trial

    def _build(self, trial: Mapping[str, Any]) -> TrialConfig:
        try:
            return TrialConfig.from_dict(trial, source=self.source)
        except ConfigError as exc:
            raise ConfigError(f"{self.source}: trial {_describe(trial)}: {exc}") from None

    def _check_duplicates(self, trials: Iterable[TrialConfig]) -> None:
        by_id: dict[str, TrialConfig] = {}
        by_meaning: dict[str, TrialConfig] = {}
        for cfg in trials:
            first = by_id.setdefault(cfg.trial_id, cfg)
            if first is not cfg:
                raise ConfigError(
                    f"{self.source}: two trials are the same run {cfg.db}/{cfg.exp}/"
                    f"{cfg.run_name} ({_differences(first, cfg)}); an override collapsed "
                    f"an axis or the axis is a field that does not change results "
                    f"({', '.join(NON_RESULT_FIELDS)}): drop one with `exclude`")
            first = by_meaning.setdefault(_meaning(cfg), cfg)
            if first is not cfg:
                parts = parse_bio_scope(cfg.bio_scope, cfg.effective_mode)
                raise ConfigError(
                    f"{self.source}: two trials train the same parts with the same rules "
                    f"({', '.join(f'{k}={v}' for k, v in parts.items())}) and differ only in "
                    f"{_differences(first, cfg)}: drop one with `exclude`")

    def _check_corners(self, trials: Iterable[TrialConfig]) -> None:
        """A sampled value the searcher may draw must make a valid trial."""
        for cfg in trials:
            for corner in self.corners(cfg):
                try:
                    corner.validate()
                except ConfigError as exc:
                    drawn = ", ".join(f"{k}={getattr(corner, k)}" for k in self.spec.sample)
                    raise ConfigError(f"{self.source}: sample: drawing {drawn} for trial "
                                      f"{_describe(cfg.to_dict())}: {exc}") from None

    def _check_names(self, trials: Iterable[TrialConfig]) -> None:
        # First the values where they are written, so the message names the key.
        named = {f.name for f in FIELDS if f.metadata["registry"]}
        for key, name, value in self.spec.located:
            if name in named:
                try:
                    check_field(name, value)
                except ConfigError as exc:
                    raise ConfigError(f"{self.source}: {key}: {exc}") from None
        # Then every trial: catches defaults, e.g. an unregistered default db.
        for cfg in trials:
            try:
                cfg.validate()
            except ConfigError as exc:
                raise ConfigError(f"{self.source}: trial {_describe(cfg.to_dict())}: "
                                  f"{exc}") from None


def _product(grid: Mapping[str, tuple[Any, ...]]) -> Iterable[dict[str, Any]]:
    names = list(grid)
    return (dict(zip(names, combo)) for combo in itertools.product(*grid.values()))


def _overridden(dicts: Iterable[dict[str, Any]], override: Override, counts: list[int],
                i: int) -> Iterator[dict[str, Any]]:
    """``dicts`` with ``override`` applied to the matching ones (counted in ``counts[i]``)."""
    for trial in dicts:
        if _matches(trial, override.when):
            counts[i] += 1
            yield from _apply(trial, override)
        else:
            yield trial


def _upper_bound(spec: Spec) -> int:
    """Trials the space expands to at most, counted without expanding it:
    every override matching every trial, nothing excluded."""
    n = math.prod(len(values) for values in spec.grid.values())
    for override in spec.overrides:
        n *= max(1, sum(math.prod(len(v) for v in {**override.grid, **arm.grid}.values())
                        for arm in override.arms or (Arm({}, {}),)))
    return n * len(spec.seeds or (0,)) * spec.search.num_samples


def _apply(trial: Mapping[str, Any], override: Override) -> Iterable[dict[str, Any]]:
    """The trials a matching override turns ``trial`` into (arms in order)."""
    for arm in override.arms or (Arm({}, {}),):
        base = {**trial, **override.set, **arm.set}
        yield from ({**base, **combo} for combo in _product({**override.grid, **arm.grid}))


def _matches(trial: Mapping[str, Any], condition: Condition) -> bool:
    # An unset field has its TrialConfig default, so `when: {mode: fa}`
    # also matches trials that never name a mode.
    return all(trial.get(name, DEFAULTS[name]) in values for name, values in condition.items())


def _meaning(cfg: TrialConfig) -> str:
    """What decides the result, with mode/bio_scope resolved to per-part rules."""
    skip = ("mode", "bio_scope", *NON_RESULT_FIELDS)
    data = [(f.name, getattr(cfg, f.name)) for f in FIELDS if f.name not in skip]
    return repr((data, sorted(parse_bio_scope(cfg.bio_scope, cfg.effective_mode).items())))


def _differences(a: TrialConfig, b: TrialConfig) -> str:
    diffs = [f"{f.name}={getattr(a, f.name)!r} vs {getattr(b, f.name)!r}"
             for f in FIELDS if getattr(a, f.name) != getattr(b, f.name)]
    return "differ in " + ", ".join(diffs) if diffs else "identical"


def _describe(trial: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in trial.items() if v != DEFAULTS.get(k)) or "defaults"


# ------------------------------------------------------------------ loading
def _read_yaml(path: Path | resources.abc.Traversable, source: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        first = " ".join(str(exc).split())
        raise ConfigError(f"{source}: not valid YAML: {first}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read: {exc}") from None


def _load_file(path: Path, *, name: str, source: str) -> SearchSpace:
    raw = _read_yaml(path, source)
    return SearchSpace.from_dict(raw, name=name, path=path, source=source)


def _shipped() -> Registry[Callable[[], SearchSpace]]:
    registry: Registry[Callable[[], SearchSpace]] = Registry("search space")
    folder = resources.files(__package__)
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        stem, dot, suffix = entry.name.rpartition(".")
        if dot and f".{suffix}" in SPACE_SUFFIXES and entry.is_file():
            registry.register(stem, functools.partial(
                _load_file, Path(str(entry)), name=stem, source=entry.name))
    return registry


#: Shipped spaces: ``SPACES.create("demo")`` loads ``demo.yaml``.
SPACES = _shipped()


def load_space(name_or_path: str | Path) -> SearchSpace:
    """A shipped space by name (``demo``), or a user file by path.

    A bare name is looked up among the shipped spaces; anything ending in
    ``.yaml``/``.yml`` or containing a path separator is read as a file.
    """
    text = str(name_or_path)
    shipped = ", ".join(SPACES.names())
    if text in SPACES and not Path(text).suffix:
        return SPACES.create(text)
    path = Path(text)
    if path.suffix in SPACE_SUFFIXES or "/" in text or "\\" in text or path.is_file():
        if not path.is_file():
            raise ConfigError(f"no search space file {text!r}; give an existing .yaml file "
                              f"or a shipped space: {shipped}")
        return _load_file(path, name=path.stem, source=text)
    raise ConfigError(f"unknown search space {text!r}; choose from {shipped}, "
                      "or give the path of a .yaml file")

