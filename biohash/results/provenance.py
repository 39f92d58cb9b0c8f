"""Which code produced a result: ``<package version>+g<git sha>``."""
from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path

__all__ = ["code_version"]


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """biohash's version plus the short git sha of its checkout, when there is one.

    Cached: it is asked once per trial row and must not spawn git each time.
    """
    import biohash

    version = getattr(biohash, "__version__", None)
    if version is None:
        try:
            version = metadata.version("biohash")
        except metadata.PackageNotFoundError:
            version = "0+unknown"
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                             cwd=Path(biohash.__file__).parent, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{version}+g{sha}" if sha else str(version)
