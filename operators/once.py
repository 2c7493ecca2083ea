"""Tables and models built on first use and kept for the process (`functools.lru_cache`), built
once even when a local run's threads ask for them together: the others wait for the first,
rather than each building its own copy at the same time."""

from __future__ import annotations

import functools
import threading


def built_once(maxsize: int | None = None):
    def wrap(fn):
        cached = functools.lru_cache(maxsize=maxsize)(fn)
        lock = threading.Lock()

        @functools.wraps(fn)
        def get(*args):
            with lock:
                return cached(*args)

        get.cache_clear = cached.cache_clear
        return get
    return wrap
