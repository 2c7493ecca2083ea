"""The one private function of datasketch that sluice calls, kept here and checked against the
datasketch versions it was written for (pyproject.toml pins the same range)."""

from __future__ import annotations

from functools import lru_cache
from importlib.metadata import version

from packaging.requirements import Requirement

SUPPORTED = "datasketch>=1.6,<2.1"


@lru_cache(maxsize=1)
def check_datasketch() -> None:
    """One line saying what to install when the installed datasketch is outside the range."""
    installed = version("datasketch")
    if not Requirement(SUPPORTED).specifier.contains(installed, prereleases=True):
        raise RuntimeError(f"datasketch {installed} is installed; sluice's MinHash band choice calls "
                           f"datasketch.lsh._optimal_param, written for {SUPPORTED}: "
                           f"pip install '{SUPPORTED}'")


def lsh_optimal_param(threshold: float, num_perm: int) -> tuple[int, int]:
    """datasketch's MinHashLSH choice of (bands, rows per band), false positives and false
    negatives weighted equally (its defaults)."""
    check_datasketch()
    from datasketch.lsh import _optimal_param

    return _optimal_param(threshold, num_perm, 0.5, 0.5)
