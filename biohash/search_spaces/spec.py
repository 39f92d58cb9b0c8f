"""Check the structure of one search-space mapping and type its values.

Everything here is cheap and registry-free: unknown top-level keys, unknown
field names, wrong shapes (a list where one value belongs, a single value
where an axis belongs) and values ``TrialConfig`` rejects are reported as
``<file>: <key>: <why>``. Name checks against the registries (datasets,
losses, modes, archs) happen later, in ``SearchSpace.expand(validate=True)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, NoReturn

from biohash.config import DEFAULTS, check_field, field_name
from biohash.errors import ConfigError

__all__ = ["Spec", "Override", "Arm", "Sampled", "Search", "parse_spec", "TOP_KEYS",
           "OVERRIDE_KEYS", "ARM_KEYS", "FIELD_NAMES", "DISTRIBUTIONS", "ALGORITHMS", "SEARCH_KEYS",
           "METRICS", "MAX_TRIALS"]

#: Top-level keys of a space file, in the order the docs present them.
TOP_KEYS = ("description", "fixed", "grid", "sample", "overrides", "exclude", "seeds", "repeats",
            "search")
#: Keys of one ``overrides`` entry.
OVERRIDE_KEYS = ("when", "set", "grid", "arms")
#: Keys of one entry of an override's ``arms``.
ARM_KEYS = ("set", "grid")
FIELD_NAMES = tuple(DEFAULTS)
#: Most trials one space may expand to (grid combinations x ``num_samples``):
#: a sweep's trial list, plan and Tune state are all held in memory, and a
#: space past this is almost always a typo (an extra axis, ``repeats: 10000``).
MAX_TRIALS = 100_000
_SCALARS = (str, int, float, bool)

#: A condition: field -> the values that match (any of them).
Condition = dict[str, tuple[Any, ...]]

#: Distributions of a ``sample`` axis -> what their list holds. Ranges are
#: closed: ``randint: [1, 4]`` draws 1, 2, 3 or 4 (Tune's own ``randint`` excludes
#: its upper bound; the YAML says what it means instead).
DISTRIBUTIONS = {
    "uniform": "[low, high], low < high",
    "loguniform": "[low, high], 0 < low < high",
    "quniform": "[low, high, q], low < high, q > 0 (multiples of q)",
    "randint": "[low, high] integers, low < high, both included",
    "lograndint": "[low, high] integers, 0 < low < high, both included",
    "choice": "[value, ...] (any field)",
}
#: Distributions for float fields, for int fields; other fields take ``choice`` only.
_FLOAT_KINDS = ("uniform", "loguniform", "quniform", "choice")
_INT_KINDS = ("randint", "lograndint", "choice")
#: ``search.algorithm``: ``grid`` runs the expanded trials; ``random`` and
#: ``tpe`` draw ``num_samples`` configs of the ``sample`` axes per grid
#: combination with Optuna's RandomSampler / TPESampler (through Tune's
#: ``OptunaSearch``).
ALGORITHMS = ("grid", "random", "tpe")
#: Keys of the ``search`` block.
SEARCH_KEYS = ("algorithm", "num_samples", "metric", "seed", "max_concurrent")
#: Metrics a searcher may optimise: reported after every epoch (so ASHA can
#: compare trials at a rung) and maximised.
METRICS = ("val_mAP",)
#: Fields a searcher may not draw, and where they belong instead.
_NOT_SAMPLED = {
    "seed": "give seeds with `seeds` or `repeats`",
    "db": "datasets are a `grid` axis (their data is checked before launch)",
    "exp": "the experiment name is `fixed`",
}


@dataclass(frozen=True)
class Sampled:
    """One ``sample`` axis: a distribution and its arguments.

    ``args`` are typed: floats for ``uniform``/``loguniform``/``quniform``,
    ints for ``randint``/``lograndint`` (both bounds included), the field's
    typed values for ``choice``.
    """

    kind: str
    args: tuple[Any, ...]

    def domain(self) -> Any:
        """The Ray Tune search domain (imports Ray)."""
        from ray import tune

        if self.kind == "choice":
            return tune.choice(list(self.args))
        if self.kind == "quniform":
            return tune.quniform(*self.args)
        if self.kind in ("randint", "lograndint"):  # Tune's upper bound is exclusive
            low, high = self.args
            return getattr(tune, self.kind)(low, high + 1)
        return getattr(tune, self.kind)(*self.args)

    @property
    def extremes(self) -> tuple[Any, ...]:
        """The values that bound any cost monotone in this field (for plan's
        upper bound): every choice, or the two ends of a range."""
        return self.args if self.kind == "choice" else tuple(self.args[:2])

    def describe(self) -> str:
        return f"{self.kind}({', '.join(map(str, self.args))})"


@dataclass(frozen=True)
class Search:
    """The ``search`` block; the defaults are a plain grid."""

    algorithm: str = "grid"
    num_samples: int = 1
    metric: str = "val_mAP"
    seed: int = 0
    max_concurrent: int | None = None

    @property
    def sampled(self) -> bool:
        return self.algorithm != "grid"


@dataclass(frozen=True)
class Arm:
    """One alternative of an override: its own ``set`` values and ``grid``."""

    set: dict[str, Any]
    grid: dict[str, tuple[Any, ...]]


@dataclass(frozen=True)
class Override:
    """``when`` every condition holds: ``set`` values, then expand ``grid``.

    With ``arms``, a matching trial becomes the union over the arms of
    (override ``set`` + arm ``set``) x (override ``grid`` + arm ``grid``):
    the way a run script lists one loss twice with different flag sets
    (h2q's DCH with ``-no_cube -penalty 0.0`` and, without ``-no_cube``,
    ``-penalty`` in 1e-5, 1e-3, 0.1). An arm may not name a field that its
    override already sets or expands.
    """

    when: Condition
    set: dict[str, Any]
    grid: dict[str, tuple[Any, ...]]
    arms: tuple[Arm, ...] = ()

    def fields(self) -> set[str]:
        """Every field this override sets or expands, its arms included."""
        arms = (name for arm in self.arms for name in (*arm.set, *arm.grid))
        return {*self.set, *self.grid, *arms}


@dataclass(frozen=True)
class Spec:
    """A parsed space: typed values, aliases resolved to field names.

    ``located`` lists every value with the key it was written under
    (``grid.mode``), so later registry checks can name the key.
    """

    description: str
    fixed: dict[str, Any]
    grid: dict[str, tuple[Any, ...]]
    overrides: tuple[Override, ...]
    exclude: tuple[Condition, ...]
    seeds: tuple[int, ...] | None
    located: tuple[tuple[str, str, Any], ...]
    sample: dict[str, Sampled] = field(default_factory=dict)
    search: Search = Search()


def parse_spec(raw: Any, *, source: str) -> Spec:
    """Check ``raw`` (the loaded YAML) and return its typed ``Spec``.

    ``source`` names the file in every error message.
    """
    return _Parser(source).parse(raw)


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.located: list[tuple[str, str, Any]] = []

    def fail(self, key: str, why: str) -> NoReturn:
        raise ConfigError(f"{self.source}: {key}: {why}" if key else f"{self.source}: {why}")

    # ----------------------------------------------------------------- whole
    def parse(self, raw: Any) -> Spec:
        if raw is None:
            self.fail("", "the file is empty; a space needs at least `fixed` or `grid`")
        if not isinstance(raw, Mapping):
            self.fail("", f"expected a mapping of {', '.join(TOP_KEYS)}, "
                          f"got {type(raw).__name__}")
        for key in raw:
            if key not in TOP_KEYS:
                self.fail(str(key), f"unknown top-level key; choose from {', '.join(TOP_KEYS)}")
        description = raw.get("description", "")
        if not isinstance(description, str):
            self.fail("description", f"expected one line of text, got {description!r}")
        fixed = {name: self.value(f"fixed.{key}", name, value)
                 for key, name, value in self.fields("fixed", raw.get("fixed"))}
        grid = self.axes("grid", raw.get("grid"), taken=fixed)
        overrides = tuple(self.override(f"overrides[{i}]", entry)
                          for i, entry in enumerate(self.entries("overrides", raw.get("overrides"))))
        exclude = tuple(self.condition(f"exclude[{i}]", entry)
                        for i, entry in enumerate(self.entries("exclude", raw.get("exclude"))))
        seeds = self.seeds(raw, fixed, grid, overrides)
        sample = self.sample(raw.get("sample"), fixed=fixed, grid=grid, overrides=overrides,
                             exclude=exclude, seeds=seeds)
        search = self.search(raw.get("search"), sample)
        return Spec(description.strip(), fixed, grid, overrides, exclude, seeds,
                    tuple(self.located), sample, search)

    # -------------------------------------------------------------- sampling
    def sample(self, section: Any, *, fixed: Mapping, grid: Mapping,
               overrides: tuple[Override, ...], exclude: tuple[Condition, ...],
               seeds: tuple[int, ...] | None) -> dict[str, Sampled]:
        """``sample: {field: {distribution: [args]}}``; a sampled field is
        named nowhere else (its value is only known once a searcher drew it)."""
        elsewhere = ([("fixed", set(fixed)), ("grid", set(grid))]
                     + [(f"overrides[{i}]", o.fields() | set(o.when))
                        for i, o in enumerate(overrides)]
                     + [(f"exclude[{i}]", set(c)) for i, c in enumerate(exclude)])
        out = {}
        for written, name, value in self.fields("sample", section):
            key = f"sample.{written}"
            if name in _NOT_SAMPLED:
                self.fail(key, f"{name} is not sampled; {_NOT_SAMPLED[name]}")
            for where, names in elsewhere:
                if name in names:
                    self.fail(key, f"is also named in {where}; a sampled field is named "
                                   f"nowhere else")
            out[name] = self.distribution(key, name, value)
        return out

    def distribution(self, key: str, name: str, value: Any) -> Sampled:
        if not isinstance(value, Mapping) or len(value) != 1:
            self.fail(key, f"expected one distribution {{kind: [args]}} with kind in "
                           f"{', '.join(DISTRIBUTIONS)}, got {value!r}")
        (kind, args), = value.items()
        kinds = {float: _FLOAT_KINDS, int: _INT_KINDS}.get(type(DEFAULTS[name]), ("choice",))
        if kind not in DISTRIBUTIONS:
            self.fail(f"{key}.{kind}", f"unknown distribution; choose from "
                                       f"{', '.join(DISTRIBUTIONS)}")
        if kind not in kinds:
            self.fail(f"{key}.{kind}", f"{name} is a {type(DEFAULTS[name]).__name__} field; "
                                       f"choose from {', '.join(kinds)}")
        key = f"{key}.{kind}"
        if not isinstance(args, list) or not args:
            self.fail(key, f"expected a list {DISTRIBUTIONS[kind]}, got {args!r}")
        if kind == "choice":
            return Sampled(kind, self.axis(key, name, args))
        want = 3 if kind == "quniform" else 2
        if len(args) != want:
            self.fail(key, f"expected {DISTRIBUTIONS[kind]}, got {args!r}")
        number = int if kind in ("randint", "lograndint") else float
        typed = tuple(self.number(key, arg, number) for arg in args)
        low, high = typed[:2]
        if not low < high:
            self.fail(key, f"bounds {args!r} are in the wrong order; expected "
                           f"{DISTRIBUTIONS[kind]}")
        if kind.startswith("log") and low <= 0:
            self.fail(key, f"a log scale needs bounds > 0, got {args!r}")
        if kind == "quniform" and typed[2] <= 0:
            self.fail(key, f"q must be > 0, got {args!r}")
        for bound in (low, high):  # both ends must be values the field accepts
            self.value(key, name, bound)
        return Sampled(kind, typed)

    def number(self, key: str, value: Any, number: type) -> Any:
        # PyYAML reads 1e-6 (no dot) as text: accept numeric text, as `value` does.
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            self.fail(key, f"expected a number, got {value!r}")
        try:
            typed = number(float(value)) if number is float else int(value)
        except ValueError:
            self.fail(key, f"expected {'an integer' if number is int else 'a number'}, "
                           f"got {value!r}")
        if number is int and isinstance(value, float) and not value.is_integer():
            self.fail(key, f"expected an integer, got {value!r}")
        return typed

    def search(self, section: Any, sample: Mapping[str, Sampled]) -> Search:
        if section is None:
            section = {}
        if not isinstance(section, Mapping):
            self.fail("search", f"expected a mapping of {', '.join(SEARCH_KEYS)}, got {section!r}")
        for key in section:
            if key not in SEARCH_KEYS:
                self.fail(f"search.{key}", f"unknown key; choose from {', '.join(SEARCH_KEYS)}")
        default = "random" if sample else "grid"
        algorithm = section.get("algorithm", default)
        if algorithm not in ALGORITHMS:
            self.fail("search.algorithm", f"unknown algorithm {algorithm!r}; choose from "
                                          f"{', '.join(ALGORITHMS)}")
        if algorithm != "grid" and not sample:
            self.fail("search.algorithm", f"{algorithm} needs sampled axes: add "
                                          f"`sample: {{field: {{loguniform: [low, high]}}}}`")
        if algorithm == "grid" and sample:
            self.fail("search.algorithm", f"grid does not sample; with `sample` axes choose "
                                          f"random or tpe")
        num = section.get("num_samples", 1)
        if isinstance(num, bool) or not isinstance(num, int) or num < 1:
            self.fail("search.num_samples", f"expected an integer >= 1, got {num!r}")
        if num > MAX_TRIALS:
            self.fail("search.num_samples", f"{num:,} draws per combination pass the limit of "
                                            f"{MAX_TRIALS:,} trials per space")
        if algorithm == "grid" and num != 1:
            self.fail("search.num_samples", f"a grid runs each trial once, got {num!r}; "
                                            f"repeat trials with `seeds` or `repeats`")
        if sample and "num_samples" not in section:
            self.fail("search", "sampled axes need `num_samples` (configs drawn per grid "
                                "combination)")
        metric = section.get("metric", METRICS[0])
        if metric not in METRICS:
            self.fail("search.metric", f"unknown metric {metric!r}; choose from "
                                       f"{', '.join(METRICS)} (reported every epoch, maximised)")
        seed = section.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            self.fail("search.seed", f"expected an integer >= 0, got {seed!r}")
        limit = section.get("max_concurrent")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 1):
            self.fail("search.max_concurrent", f"expected an integer >= 1, got {limit!r}")
        return Search(algorithm, num, metric, seed, limit)

    # ------------------------------------------------------------- sections
    def fields(self, key: str, section: Any) -> list[tuple[str, str, Any]]:
        """``(written key, field name, value)`` of a field mapping."""
        if section is None:
            return []
        if not isinstance(section, Mapping):
            self.fail(key, f"expected a mapping of field: value, got {section!r}")
        out, seen = [], {}
        for written, value in section.items():
            name = field_name(written) if isinstance(written, str) else None
            if name is None:
                self.fail(f"{key}.{written}", f"unknown field; choose from {', '.join(FIELD_NAMES)}")
            if name in seen:
                self.fail(f"{key}.{written}", f"names the same field as {key}.{seen[name]}")
            seen[name] = written
            out.append((written, name, value))
        return out

    def entries(self, key: str, section: Any) -> list[Any]:
        if section is None:
            return []
        if not isinstance(section, list):
            self.fail(key, f"expected a list of entries, got {section!r}")
        return section

    def axes(self, key: str, section: Any, *, taken: Mapping[str, Any]) -> dict[str, tuple]:
        out = {}
        for written, name, values in self.fields(key, section):
            if name in taken:
                self.fail(f"{key}.{written}", "is also fixed; a field is either fixed or an axis")
            out[name] = self.axis(f"{key}.{written}", name, values)
        return out

    def axis(self, key: str, name: str, values: Any) -> tuple[Any, ...]:
        if not isinstance(values, list):
            self.fail(key, f"expected a list of values, got {values!r} "
                           "(a single value belongs under `fixed` or `set`)")
        if not values:
            self.fail(key, "the list of values is empty")
        typed = tuple(self.value(key, name, value) for value in values)
        for i, value in enumerate(typed):
            if value in typed[:i]:
                self.fail(key, f"value {values[i]!r} is listed twice")
        return typed

    def override(self, key: str, entry: Any) -> Override:
        if not isinstance(entry, Mapping):
            self.fail(key, f"expected a mapping with `when` and `set`, `grid` and/or `arms`, "
                           f"got {entry!r}")
        for part in entry:
            if part not in OVERRIDE_KEYS:
                self.fail(f"{key}.{part}", f"unknown key; choose from {', '.join(OVERRIDE_KEYS)}")
        if not entry.get("when"):
            self.fail(key, "needs a non-empty `when` (use `fixed`/`grid` for every trial)")
        if not any(entry.get(part) for part in ("set", "grid", "arms")):
            self.fail(key, "needs `set`, `grid` and/or `arms`")
        when = self.condition(f"{key}.when", entry["when"])
        sets = {name: self.value(f"{key}.set.{written}", name, value)
                for written, name, value in self.fields(f"{key}.set", entry.get("set"))}
        grid = self.axes(f"{key}.grid", entry.get("grid"), taken=sets)
        arms = self.arms(key, entry.get("arms"), taken={**sets, **grid})
        return Override(when, sets, grid, arms)

    def arms(self, key: str, section: Any, *, taken: Mapping[str, Any]) -> tuple[Arm, ...]:
        """An override's ``arms``; ``taken``: the fields its own set/grid name."""
        if section is not None and not section:
            self.fail(f"{key}.arms", "the list of arms is empty")
        arms: list[Arm] = []
        for i, entry in enumerate(self.entries(f"{key}.arms", section)):
            arm = self.arm(f"{key}.arms[{i}]", entry, taken=taken, owner=key)
            if arm in arms:
                self.fail(f"{key}.arms[{i}]", f"repeats {key}.arms[{arms.index(arm)}]")
            arms.append(arm)
        return tuple(arms)

    def arm(self, key: str, entry: Any, *, taken: Mapping[str, Any], owner: str) -> Arm:
        if not isinstance(entry, Mapping):
            self.fail(key, f"expected a mapping with `set` and/or `grid`, got {entry!r}")
        for part in entry:
            if part not in ARM_KEYS:
                self.fail(f"{key}.{part}", f"unknown key; choose from {', '.join(ARM_KEYS)}")
        if not entry.get("set") and not entry.get("grid"):
            self.fail(key, "needs `set` and/or `grid`")
        for part in ARM_KEYS:
            for written, name, _ in self.fields(f"{key}.{part}", entry.get(part)):
                if name in taken:  # the arm would silently win over its override
                    self.fail(f"{key}.{part}.{written}",
                              f"is also in {owner}'s set/grid; name a field in one of the two")
        sets = {name: self.value(f"{key}.set.{written}", name, value)
                for written, name, value in self.fields(f"{key}.set", entry.get("set"))}
        return Arm(sets, self.axes(f"{key}.grid", entry.get("grid"), taken=sets))

    def condition(self, key: str, entry: Any) -> Condition:
        if not isinstance(entry, Mapping) or not entry:
            self.fail(key, f"expected a non-empty mapping of field: value(s), got {entry!r}")
        out = {}
        for written, name, values in self.fields(key, entry):
            if isinstance(values, list):  # a list means "any of"
                out[name] = self.axis(f"{key}.{written}", name, values)
            else:
                out[name] = (self.value(f"{key}.{written}", name, values),)
        return out

    def seeds(self, raw: Mapping, fixed: Mapping, grid: Mapping,
              overrides: tuple[Override, ...]) -> tuple[int, ...] | None:
        if "seeds" in raw and "repeats" in raw:
            self.fail("repeats", "give either `seeds` or `repeats`, not both")
        if "seeds" not in raw and "repeats" not in raw:
            return None
        key = "seeds" if "seeds" in raw else "repeats"
        elsewhere = [where for where, names in
                     [("fixed", fixed), ("grid", grid)]
                     + [(f"overrides[{i}]", o.fields()) for i, o in enumerate(overrides)]
                     if "seed" in names]
        if elsewhere:
            self.fail(key, f"seed is also set in {elsewhere[0]}; give seeds in one place only")
        value = raw[key]
        if key == "repeats":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                self.fail("repeats", f"expected an integer >= 1 (seeds 0..n-1), got {value!r}")
            if value > MAX_TRIALS:  # refused before range() is materialised
                self.fail("repeats", f"{value:,} seeds pass the limit of {MAX_TRIALS:,} trials "
                                     f"per space")
            return tuple(range(value))
        seeds = self.axis("seeds", "seed", value)
        return tuple(int(s) for s in seeds)

    # ---------------------------------------------------------------- values
    def value(self, key: str, name: str, value: Any) -> Any:
        """Type ``value`` as TrialConfig would, naming ``key`` on failure."""
        if value is None or not isinstance(value, _SCALARS):
            shape = "nothing (null)" if value is None else f"a {type(value).__name__} {value!r}"
            self.fail(key, f"expected a single value (text, number or true/false), got {shape}")
        try:
            typed = check_field(name, value, registry=False)
        except ConfigError as exc:
            self.fail(key, str(exc))
        self.located.append((key, name, typed))
        return typed

