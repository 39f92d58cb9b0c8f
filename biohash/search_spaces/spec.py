"""Check the structure of one search-space mapping and type its values.

Everything here is cheap and registry-free: unknown top-level keys, unknown
field names, wrong shapes (a list where one value belongs, a single value
where an axis belongs) and values ``TrialConfig`` rejects are reported as
``<file>: <key>: <why>``. Name checks against the registries (datasets,
losses, modes, archs) happen later, in ``SearchSpace.expand(validate=True)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, NoReturn

from biohash.config import FIELDS, TrialConfig
from biohash.errors import ConfigError

__all__ = ["Spec", "Override", "Arm", "parse_spec", "TOP_KEYS", "OVERRIDE_KEYS", "ARM_KEYS",
           "FIELD_NAMES"]

#: Top-level keys of a space file, in the order the docs present them.
TOP_KEYS = ("description", "fixed", "grid", "overrides", "exclude", "seeds", "repeats")
#: Keys of one ``overrides`` entry.
OVERRIDE_KEYS = ("when", "set", "grid", "arms")
#: Keys of one entry of an override's ``arms``.
ARM_KEYS = ("set", "grid")
FIELD_NAMES = tuple(f.name for f in FIELDS)
_ALIASES = {f.metadata["long"]: f.name for f in FIELDS if f.metadata["long"]}
_SCALARS = (str, int, float, bool)

#: A condition: field -> the values that match (any of them).
Condition = dict[str, tuple[Any, ...]]


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
        return Spec(description.strip(), fixed, grid, overrides, exclude, seeds,
                    tuple(self.located))

    # ------------------------------------------------------------- sections
    def fields(self, key: str, section: Any) -> list[tuple[str, str, Any]]:
        """``(written key, field name, value)`` of a field mapping."""
        if section is None:
            return []
        if not isinstance(section, Mapping):
            self.fail(key, f"expected a mapping of field: value, got {section!r}")
        out, seen = [], {}
        for written, value in section.items():
            name = _ALIASES.get(written, written)
            if not isinstance(written, str) or name not in FIELD_NAMES:
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
            typed = getattr(_probe(name, value), name)
        except ConfigError as exc:
            self.fail(key, str(exc))
        self.located.append((key, name, typed))
        return typed


def _probe(name: str, value: Any) -> TrialConfig:
    """A config with only ``name`` changed, to reuse TrialConfig's coercion
    and range checks instead of re-listing them here."""
    if name == "bio_scope":  # a scope is only legal on a bio-<arch>
        return TrialConfig(arch="bio-alexnet", bio_scope=value)
    return TrialConfig(**{name: value})
