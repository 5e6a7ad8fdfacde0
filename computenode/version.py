"""The package's version, read from its installed metadata: pyproject.toml is the one source."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version


def version() -> str:
    """The installed distribution's version; "0+unknown" when run from an uninstalled tree."""
    try:
        return _dist_version("computenode")
    except PackageNotFoundError:
        return "0+unknown"


__version__ = version()
