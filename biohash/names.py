"""The one check for names the user gives that become folder names.

A sweep name (``--name``, ``sweep status|resume NAME``), an experiment
(``-exp``), a dataset name used in a path (``-db``) and a run group
(``--group``) each become one path component under a storage or models
root. One rule for all of them: a letter or digit, then letters, digits,
``.``, ``_`` or ``-``, at most ``NAME_MAX`` characters in all. So no ``/``,
``\\``, ``..``, leading dot, whitespace or control character can reach a
path, and every name is also a valid S3/GCS key part and MLflow name.
"""
from __future__ import annotations

import re

from biohash.errors import ConfigError

__all__ = ["NAME_MAX", "NAME_RULE", "is_name", "check_name"]

NAME_MAX = 100
_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{NAME_MAX - 1}}}")
#: What ``check_name``'s message says is allowed.
NAME_RULE = (f"letters, digits, '.', '_', '-' (up to {NAME_MAX}, starting with a letter or "
             f"digit)")


def is_name(value: object) -> bool:
    """True when ``value`` is a string that ``check_name`` accepts."""
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def check_name(value: object, flag: str) -> str:
    """``value`` if it is a valid name, else ``ConfigError`` naming ``flag``
    (e.g. ``--name``, ``-exp``) and the rule."""
    if not is_name(value):
        raise ConfigError(f"bad {flag} {value!r}; allowed: {NAME_RULE}")
    return value  # type: ignore[return-value]
