"""The one private function of datasketch that sluice calls, kept here and checked against the
datasketch versions it was written for (pyproject.toml pins the same range)."""

from __future__ import annotations

from functools import lru_cache
from importlib.metadata import version

SUPPORTED = ((1, 6), (2, 1))  # datasketch >=1.6,<2.1
SUPPORTED_TEXT = "datasketch>=1.6,<2.1"


def release(text: str) -> tuple[int, int]:
    """(major, minor) of a version string such as '2.0.0' or '1.6.5.post1'."""
    major, minor = (text.split(".") + ["0"])[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


@lru_cache(maxsize=1)
def check_datasketch() -> None:
    """One line saying what to install when the installed datasketch is outside the range."""
    installed = version("datasketch")
    if not SUPPORTED[0] <= release(installed) < SUPPORTED[1]:
        raise RuntimeError(f"datasketch {installed} is installed; sluice's MinHash band choice calls "
                           f"datasketch.lsh._optimal_param, written for {SUPPORTED_TEXT}: "
                           f"pip install '{SUPPORTED_TEXT}'")


def lsh_optimal_param(threshold: float, num_perm: int) -> tuple[int, int]:
    """datasketch's MinHashLSH choice of (bands, rows per band), false positives and false
    negatives weighted equally (its defaults)."""
    check_datasketch()
    from datasketch.lsh import _optimal_param

    return _optimal_param(threshold, num_perm, 0.5, 0.5)
