"""The bytes of an Arrow string array as numpy views, for kernels that walk every character."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def string_buffers(strings: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(UTF-8 bytes, int64 offsets: row i is bytes[offsets[i]:offsets[i+1]]) of a string or
    large_string array, without copying the bytes; a null row reads as its (empty) slot."""
    offset_type = np.int64 if pa.types.is_large_string(strings.type) else np.int32
    _, offsets_buffer, data_buffer = strings.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=offset_type)[strings.offset:strings.offset + len(strings) + 1]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    return data, offsets.astype(np.int64, copy=False)
