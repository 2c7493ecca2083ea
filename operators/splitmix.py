"""splitmix64 (Steele, Lea and Flood 2014): its finalizer spreads a 64-bit value's bits over
all of its bits. Written once for numpy arrays; numba kernels compile the same function
(`numba.njit(inline="always")(splitmix64_mix)`)."""

from __future__ import annotations

import numpy as np

GOLDEN_GAMMA = 0x9E3779B97F4A7C15  # splitmix64's increment: 2**64 / the golden ratio, odd


def splitmix64_mix(z):
    """splitmix64's finalizer of uint64 `z` (an array, or a scalar inside a numba kernel)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))
