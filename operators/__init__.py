"""sluice operators: build a Pipeline in Python or compile one from a YAML recipe.

    from sluice.operators import Pipeline, text_length_filter, document_deduplicator
    Pipeline([text_length_filter(min_len=50), document_deduplicator()]).run("data/*.jsonl", output="out")

Every registered operator is reachable here by its registry name.
"""

import os
from pathlib import Path

# Numba's compiled kernels go to the user's cache, not beside the installed package (which
# may be read-only), so a first run's compilation is paid once per machine.
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                                             / "sluice" / "numba"))

from .base import (OPERATORS, Deduplicator, Filter, Mapper, Operator, ParamError, Selector,
                   create_operator, get_operator, param, register)
from .io import Source
from .pipeline import Pipeline, RunResult


def __getattr__(name: str):
    try:
        return get_operator(name)
    except ParamError:
        raise AttributeError(f"module 'sluice.operators' has no attribute '{name}'") from None


__all__ = ["Pipeline", "RunResult", "Source", "Operator", "Mapper", "Filter", "Deduplicator",
           "Selector", "ParamError", "param", "register", "create_operator", "get_operator", "OPERATORS"]
