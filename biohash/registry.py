"""One small generic registry (name -> builder), one instance per kind.

Used for datasets, archs, learning-rule modes, losses and search spaces, so
that every kind answers unknown names the same way and tests can be
parametrised over ``registry.names()``.

``LazyRegistry`` is the torch-free face of a registry whose builders live in
a heavy module (archs, losses and rules import torch): it knows its names
without importing that module, and loads it on the first ``get``/``create``.
The names it declares must be exactly the names the module registers; the
first load checks it, so the two cannot drift apart silently.
"""
from __future__ import annotations

import importlib
from typing import Callable, Generic, Iterable, Iterator, TypeVar

from biohash.errors import ConfigError

T = TypeVar("T")

__all__ = ["Registry", "LazyRegistry"]


class Registry(Generic[T]):
    """A named mapping from names to builders with helpful errors.

    ``kind`` is used in messages: ``unknown arch 'vgg19'; choose from ...``.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T | None = None) -> Callable[[T], T] | T:
        """Register ``item`` under ``name``; usable as a decorator.

        Registering the same name twice raises: silent replacement would let
        two modules disagree about what a name means.
        """
        def _add(obj: T) -> T:
            if name in self._items:
                raise ConfigError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return _add if item is None else _add(item)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; choose from {', '.join(self.names())}"
            ) from None

    def check(self, name: str) -> str:
        """Return ``name`` if registered, else raise the standard error."""
        self.get(name)
        return name

    def create(self, name: str, /, **kwargs):
        """Call the builder registered under ``name`` with keyword arguments."""
        return self.get(name)(**kwargs)  # type: ignore[operator]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


class LazyRegistry(Registry[T]):
    """A registry answered from declared names; builders loaded on first use.

    ``source`` is ``"module:attr"``, the ``Registry`` that the builders
    register in; ``modules``: further modules whose import registers builders
    there (imported before ``source`` is read). ``names``: the names it must hold, or None to learn them by
    loading ``source`` (for a module that is cheap to import anyway).
    ``names()``, ``in``, ``check`` and ``len`` never import ``source`` when
    the names are declared; ``get``/``create`` do. Registration happens in
    ``source`` only.
    """

    def __init__(self, kind: str, source: str, names: Iterable[str] | None = None, *,
                 modules: Iterable[str] = ()) -> None:
        super().__init__(kind)
        self.source = source
        self._modules = tuple(modules)
        self._declared = None if names is None else tuple(sorted(names))
        self._loaded: Registry[T] | None = None

    def load(self) -> Registry[T]:
        """Import ``source`` (once) and return its registry.

        Raises ``RuntimeError`` when its names differ from the declared ones:
        a programming error (a builder added without its name, or the reverse).
        """
        if self._loaded is None:
            for module in self._modules:
                importlib.import_module(module)
            module, _, attr = self.source.partition(":")
            registry = getattr(importlib.import_module(module), attr)
            if self._declared is not None and tuple(registry.names()) != self._declared:
                extra = sorted(set(registry.names()) - set(self._declared))
                missing = sorted(set(self._declared) - set(registry.names()))
                raise RuntimeError(f"{self.kind} names declared for {self.source} differ from "
                                   f"its registrations: registered only {extra}, declared "
                                   f"only {missing}")
            self._loaded = registry
        return self._loaded

    def register(self, name: str, item: T | None = None) -> Callable[[T], T] | T:
        raise TypeError(f"register {self.kind} {name!r} in {self.source}, and declare its name "
                        f"where this LazyRegistry is built")

    def get(self, name: str) -> T:
        self.check(name)
        return self.load().get(name)

    def check(self, name: str) -> str:
        if name not in self:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; choose from {', '.join(self.names())}")
        return name

    def names(self) -> list[str]:
        return list(self._declared) if self._declared is not None else self.load().names()

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def __len__(self) -> int:
        return len(self.names())
