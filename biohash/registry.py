"""One small generic registry (name -> builder), one instance per kind.

Used for datasets, archs, learning-rule modes, losses and search spaces, so
that every kind answers unknown names the same way and tests can be
parametrised over ``registry.names()``.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from biohash.errors import ConfigError

T = TypeVar("T")

__all__ = ["Registry"]


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
