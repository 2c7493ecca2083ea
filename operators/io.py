"""Readers, writers and the rejects output.

Every input part is read by one task that streams pyarrow tables of about `CHUNK_BYTES`: a
part is a whole file, or, for a file larger than `PART_BYTES`, a range of its whole lines
(uncompressed JSON lines) or of its row groups (Parquet), so that one large file is read and
cleaned on every core. Each row gets `__id__` (file ordinal << 32 | line or row number: a stable order
key) and `__source__` (the input's name). What cannot be kept as it was written goes to the
rejects output with the reason and its file and line, and is counted; it never stops the run:
a malformed line (bytes that are not UTF-8, a lone UTF-16 surrogate, NaN or Infinity, an
integer outside the int64 range, nesting deeper than MAX_DEPTH), a row without the text field
or with a text value of the wrong type, a field named like sluice's internal columns, and the
unreadable rest of a truncated or corrupt file (one rejected row, from the line where reading
stopped). A file is read once however the inputs reach it.

Inputs are local paths or URIs (`s3://bucket/data/*.jsonl`: see `storage`), and so are the
files the writers write.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from .base import ID_COLUMN, REJECT_COLUMN, SOURCE_COLUMN
from .storage import Location, glob, is_uri

CHUNK_BYTES = 8 << 20
PART_BYTES = 32 << 20
READ_BYTES = 64 << 10
PARQUET_BATCH_ROWS = 8192
FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".csv": "csv"}
COMPRESSIONS = (".gz", ".zst")


class InputError(ValueError):
    """An input a user can fix: a path that matches nothing, an unknown file format."""


@dataclass(frozen=True)
class Source:
    """One named input: a file, a directory or a glob; `weight` takes part in mixing."""

    path: str
    name: str | None = None
    weight: float | None = None
    suffixes: tuple[str, ...] | None = None  # read only files ending so (Data-Juicer's `suffixes`)

    def files(self) -> list[str]:
        files = list_files(self.path)
        if self.suffixes is None:
            return files
        picked = [f for f in files if f.lower().endswith(tuple(x.lower() for x in self.suffixes))]
        if not picked:
            raise InputError(f"input '{self.path}' has no file ending in {', '.join(self.suffixes)} (suffixes)")
        return picked

    def source_name(self) -> str:
        return self.name or _stem(Path(self.path.rstrip("/*")).name) or "input"


def file_format(path: str) -> tuple[str, str | None]:
    """(format, compression) from a file name, e.g. ('jsonl', 'zst') for a.jsonl.zst."""
    name = path.lower()
    compression = next((c[1:] for c in COMPRESSIONS if name.endswith(c)), None)
    if compression:
        name = name[: -len(compression) - 1]
    for ext, fmt in FORMATS.items():
        if name.endswith(ext):
            return fmt, compression
    raise InputError(f"{path}: unknown input format; use .jsonl (.gz/.zst), .parquet or .csv")


def list_files(path: str) -> list[str]:
    if is_uri(path):
        return _store_files(path)
    if any(ch in path for ch in "*?["):
        candidates = _glob(path)
    elif os.path.isdir(path):
        candidates = sorted(str(p) for p in Path(path).rglob("*") if p.is_file())
        candidates = [c for c in candidates if _known_format(c)]
    elif os.path.isfile(path):
        candidates = [path]
    else:
        raise InputError(f"input '{path}' does not exist")
    files = [c for c in candidates if os.path.isfile(c)]
    if not files:
        raise InputError(f"input '{path}' matches no .jsonl/.parquet/.csv files")
    for f in files:
        file_format(f)
    return files


def _store_files(uri: str) -> list[str]:
    """The input files a URI names: a file, a folder's files of a known format, or a glob's."""
    location = Location.of(uri)
    if any(ch in location.path for ch in "*?["):
        files = [str(f) for f in glob(location) if _known_format(f.name)]
    elif location.is_dir():
        files = [str(f) for f in location.files() if _known_format(f.name)]
    elif location.is_file():
        files = [str(location)]
        file_format(files[0])
    else:
        raise InputError(f"input '{uri}' does not exist")
    if not files:
        raise InputError(f"input '{uri}' matches no .jsonl/.parquet/.csv files")
    return files


def _glob(pattern: str) -> list[str]:
    """Files matching `pattern`, where `**` is any number of directories. As with `rglob` on a
    directory input, `**` does not descend into symlinked directories, so a symlink loop cannot
    list a file many times over (or for ever); hidden files and folders are left out, as `glob`
    leaves them."""
    parts = Path(pattern).parts
    first = next(i for i, part in enumerate(parts) if any(ch in part for ch in "*?["))
    root = Path(*parts[:first]) if first else Path(".")
    matches = root.glob(str(Path(*parts[first:]))) if root.is_dir() else []
    return sorted(str(p) for p in matches if not any(part.startswith(".") for part in p.relative_to(root).parts))


def read_once(files: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(path, source) pairs less those naming a file already listed (by its real path, so a
    file reached through a symlink or by two globs is read once)."""
    seen: set[str] = set()
    unique = []
    for path, source in files:
        real = str(Location.of(path).resolved())
        if real not in seen:
            seen.add(real)
            unique.append((path, source))
    return unique


def _known_format(path: str) -> bool:
    try:
        file_format(path)
        return True
    except InputError:
        return False


def _stem(name: str) -> str:
    for suffix in COMPRESSIONS + tuple(FORMATS):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name


# ---- rejects ----

class Rejects(list):
    """Reject records collected as data: they travel with a task's result to whoever writes the
    run's output (an input file's checkpoint, or the driver through the ledger), so no worker
    writes to a path that only means something on the driver's machine."""

    def write(self, records: list[dict]) -> None:
        self.extend(records)


# Compact JSON in UTF-8 (msgspec: about ten times json.dumps); values JSON has no type for
# are written as their str(); NaN and infinities as null, as Ray Data's JSON writer does.
_JSON = msgspec.json.Encoder(enc_hook=str)


def json_lines(records: list[dict]) -> bytes:
    """Rows or reject records as JSON lines."""
    return _JSON.encode_lines(records)


def json_bytes(value) -> bytes:
    return _JSON.encode(value)


def public_columns(table: pa.Table) -> pa.Table:
    return table.select([c for c in table.column_names if not c.startswith("__")])


def reject_records(table: pa.Table, operator: str, paths: dict[int, str] | None = None) -> list[dict]:
    """Rows of `table` whose `__reject__` is set, as reject records with the reason."""
    reasons = table.column(REJECT_COLUMN).to_pylist()
    ids = table.column(ID_COLUMN).to_pylist() if ID_COLUMN in table.column_names else [None] * len(reasons)
    rows = public_columns(table).to_pylist()
    records = []
    for reason, row_id, row in zip(reasons, ids, rows):
        record = {"reason": reason, "operator": operator}
        if row_id is not None and paths is not None:
            record.update(source=paths.get(row_id >> 32), line=(row_id & 0xFFFFFFFF) + 1)
        record["row"] = row
        records.append(record)
    return records


def split_rejects(table: pa.Table) -> tuple[pa.Table, pa.Table | None]:
    """(accepted rows without the reject column, rejected rows or None)."""
    if REJECT_COLUMN not in table.column_names:
        return table, None
    flag = pc.is_valid(table.column(REJECT_COLUMN))
    rejected = table.filter(flag)
    accepted = table.filter(pc.invert(flag)).drop_columns([REJECT_COLUMN])
    return accepted, (rejected if rejected.num_rows else None)


# ---- reading ----

def _open_bytes(path: str, compression: str | None):
    """The file's bytes, decompressed by Arrow: a truncated or mislabelled .gz/.zst raises
    OSError where its data stops making sense, instead of ending early without a word."""
    return Location.of(path).open_input_stream({"gz": "gzip", "zst": "zstd"}.get(compression))


def _line_chunks(stream, read_bytes: int = READ_BYTES) -> Iterator[bytes]:
    """Chunks of whole lines, about CHUNK_BYTES each, from reads of `read_bytes`. Small reads
    (of a compressed stream) keep what a failing read loses small: the whole lines before a
    failure are yielded, then its error is raised."""
    pieces, size = [], 0
    try:
        while data := stream.read(read_bytes):
            size += len(data)
            cut = data.rfind(b"\n") + 1 if size >= CHUNK_BYTES else 0
            if not cut:
                pieces.append(data)
                continue
            yield b"".join([*pieces, memoryview(data)[:cut]])
            pieces, size = [data[cut:]], len(data) - cut
    except OSError:
        chunk, _ = _whole_lines(pieces)
        if chunk:
            yield chunk
        raise
    rest = b"".join(pieces)
    if rest:
        yield rest if rest.endswith(b"\n") else rest + b"\n"


def _whole_lines(pieces: list[bytes]) -> tuple[bytes, bytes]:
    data = b"".join(pieces)
    cut = data.rfind(b"\n") + 1
    return data[:cut], data[cut:]


def text_problem(key: str, kind: str | None) -> str:
    """Why a row's text field is unusable: missing (kind None), null, or another type."""
    if kind is None:
        return f"missing field '{key}'"
    if kind == "null":
        return f"field '{key}' is null"
    return f"field '{key}' is {kind}, expected a string"


# What a read that cannot go on raises: a truncated or corrupt compressed stream, a broken
# Parquet footer, a file that cannot be opened.
UNREADABLE = (OSError, pa.ArrowException)
# Lines nesting containers deeper than this (the row's object is level 1) are rejected: Arrow's
# reader and Ray's serializer crash the worker on thousands of levels.
MAX_DEPTH = 64
# An escaped or raw UTF-16 surrogate (only a lone one survives parsing).
SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
_NOT_OPENING = bytes(b for b in range(256) if b not in b"[{\n")
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}\n')


def _may_nest_deeper(chunk: bytes, levels: int) -> bool:
    """Whether a line of JSON lines may nest containers deeper than `levels` (Arrow's reader
    crashes the process on thousands of levels). A count of the opening brackets on each line
    settles almost every chunk; only one with a line holding more (code, say) is scanned with
    the brackets inside strings left out."""
    marks = np.frombuffer(chunk.translate(None, _NOT_OPENING), np.uint8)
    if np.diff(np.flatnonzero(marks == 10), prepend=-1).max(initial=0) <= levels + 1:
        return False
    return _depth_bound(chunk) > levels


def _depth_bound(chunk: bytes) -> int:
    """An upper bound of the depth of the brackets outside strings, on any line."""
    unescaped = chunk.replace(b"\\\\", b"").replace(b'\\"', b"")
    marks = np.frombuffer(unescaped.translate(None, _NOT_STRUCTURE), np.uint8)
    quote, newline = marks == 34, marks == 10
    quotes = np.cumsum(quote)
    in_string = (quotes - np.maximum.accumulate(np.where(newline, quotes, 0))) % 2 == 1
    brackets = marks[~(quote | newline | in_string)]
    depth = np.cumsum((brackets & 2).astype(np.int32) - 1)  # '[' and '{' have bit 1 set, ']' and '}' not
    return int((depth - np.minimum.accumulate(np.minimum(depth, 0))).max(initial=0))


def _as_written(table: pa.Table) -> bool:
    """False when Arrow's reader may have changed a value: a float that is NaN, infinite or
    beyond the int64 range (maybe an integer wider than 64 bits that the reader turned into a
    float). Such chunks are parsed line by line, where those lines are rejected."""
    for column in table.columns:
        for floats in (f for chunk in column.chunks for f in _float_values(chunk)):
            if pc.any(pc.invert(pc.less(pc.abs(floats), 2.0 ** 63))).as_py():
                return False
    return True


def _float_values(array: pa.Array) -> Iterator[pa.Array]:
    if pa.types.is_floating(array.type):
        yield array
    elif pa.types.is_struct(array.type):
        for i in range(array.type.num_fields):
            yield from _float_values(array.field(i))
    elif pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        yield from _float_values(array.flatten())


class _NotKept(ValueError):
    """A value that Arrow cannot hold as written: the line is rejected, not changed."""


def _valid(data) -> bool:
    try:
        data.validate(full=True)
        return True
    except pa.ArrowInvalid:
        return False


def _not_json(constant: str):
    raise _NotKept(f"{constant} is not a JSON value")


def _int64(text: str) -> int:
    value = int(text)
    if not -(2 ** 63) <= value < 2 ** 63:
        raise _NotKept(f"integer {text} does not fit in 64 bits; write it as a string")
    return value


def _double(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _NotKept(f"number {text} is too large for a 64-bit float; write it as a string")
    return value


def _json_object(line: bytes) -> tuple[dict | None, str | None]:
    """A line's JSON object, or None and why the line cannot be kept as it was written."""
    try:
        row = json.loads(line, parse_constant=_not_json, parse_int=_int64, parse_float=_double)
    except _NotKept as e:
        return None, str(e)
    except UnicodeDecodeError as e:
        return None, f"not UTF-8: byte 0x{line[e.start]:02x} at column {e.start + 1}"
    except RecursionError:
        return None, f"nested more than {MAX_DEPTH} levels deep"
    except ValueError as e:
        return None, f"malformed JSON: {e}"
    if not isinstance(row, dict):
        return None, "line is not a JSON object"
    if _deeper_than(row, MAX_DEPTH):
        return None, f"nested more than {MAX_DEPTH} levels deep"
    if SURROGATE.search(line):
        try:
            json.dumps(row, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return None, "holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text"
    return row, None


def _deeper_than(value, levels: int) -> bool:
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, list):
        return False
    return levels == 0 or any(_deeper_than(v, levels - 1) for v in value)


@dataclass(frozen=True)
class InputPart:
    """What one read task reads: a whole input file, the lines of an uncompressed JSON-lines
    file from byte `start` to `end`, or a Parquet file's row groups `start` to `end`; the first
    of them is line (row) `first_line` (0-based) of the file."""

    file: int  # the file's ordinal: the high half of its rows' `__id__`
    path: str
    source: str
    start: int = 0
    end: int | None = None  # None: the end of the file
    first_line: int = 0


def input_parts(files: list[tuple[str, str]]) -> list[InputPart]:
    """The parts of (path, source name) input files, in file and line order."""
    parts: list[InputPart] = []
    for ordinal, (path, source) in enumerate(files):
        fmt, compression = file_format(path)
        size = Location.of(path).info().size
        if fmt == "jsonl" and compression is None and size > PART_BYTES:
            parts += _line_ranges(ordinal, path, source, size)
        elif fmt == "parquet" and size > PART_BYTES:
            parts += _row_group_ranges(ordinal, path, source)
        else:
            parts.append(InputPart(ordinal, path, source))
    return parts


def _line_ranges(ordinal: int, path: str, source: str, size: int) -> list[InputPart]:
    """Parts of about PART_BYTES each that end after a newline, with the line each starts on
    (the parts' lines are counted on a thread per core)."""
    ends = []
    with Location.of(path).open_input_file() as f:
        while not ends or ends[-1] < size:
            ends.append(_line_end(f, (ends[-1] if ends else 0) + PART_BYTES, size))  # the cut's line's end
    starts = [0] + ends[:-1]
    with ThreadPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        lines = list(pool.map(lambda bounds: _count_lines(path, *bounds), zip(starts, ends)))
    first_lines = np.cumsum([0] + lines[:-1]).tolist()
    return [InputPart(ordinal, path, source, start, end, line) for start, end, line in zip(starts, ends, first_lines)]


def _count_lines(path: str, start: int, end: int) -> int:
    """The newlines in bytes start..end of `path` (numpy counts without holding the GIL)."""
    lines = 0
    with Location.of(path).open_input_file() as f:
        f.seek(start)
        for offset in range(start, end, CHUNK_BYTES):
            data = np.frombuffer(f.read(min(CHUNK_BYTES, end - offset)), dtype=np.uint8)
            lines += int(np.count_nonzero(data == 10))
    return lines


def _line_end(f, position: int, size: int) -> int:
    """Where the line holding byte `position` of file `f` ends (after its newline), or `size`."""
    while position < size:
        f.seek(position)
        data = f.read(READ_BYTES)
        newline = data.find(b"\n")
        if newline >= 0:
            return position + newline + 1
        position += len(data)
    return size


def _row_group_ranges(ordinal: int, path: str, source: str) -> list[InputPart]:
    """Parts of whole row groups, about PART_BYTES of the file each, with the row each starts on."""
    try:
        with Location.of(path).open_input_file() as f:
            metadata = pq.ParquetFile(f).metadata
    except UNREADABLE:  # its reader rejects it, with the reason
        return [InputPart(ordinal, path, source)]
    parts, first, row, size = [], 0, 0, 0
    for group in range(metadata.num_row_groups):
        columns = metadata.row_group(group)
        size += sum(columns.column(c).total_compressed_size for c in range(columns.num_columns))
        if size >= PART_BYTES or group == metadata.num_row_groups - 1:
            parts.append(InputPart(ordinal, path, source, first, group + 1, row))
            row += sum(metadata.row_group(g).num_rows for g in range(first, group + 1))
            first, size = group + 1, 0
    return parts or [InputPart(ordinal, path, source)]


class _ByteRange:
    """The bytes of a file from `start` to `end`, read like a stream."""

    def __init__(self, path: str, start: int, end: int):
        self.file = Location.of(path).open_input_file()
        self.file.seek(start)
        self.left = end - start

    def read(self, n: int) -> bytes:
        data = self.file.read(min(n, self.left))
        self.left -= len(data)
        return data

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()


class FileReader:
    """Reads one input part into tables of valid rows; rejects the rest with reasons."""

    def __init__(self, part: InputPart, text_key: str, rejects: Rejects):
        self.part, self.path, self.ordinal, self.source = part, part.path, part.file, part.source
        self.text_key, self.rejects = text_key, rejects
        self.rows_read = 0
        self.rows_rejected = 0
        self.position = part.first_line + 1  # the line or row a failing read stops at

    def tables(self) -> Iterator[pa.Table]:
        fmt, compression = file_format(self.path)
        reader = {"jsonl": self._jsonl, "parquet": self._parquet, "csv": self._csv}[fmt]
        try:
            for table, offsets, rejected in reader(compression):
                table, bad_names = self._with_ids(table, offsets)
                self.rows_read += table.num_rows + len(bad_names) + len(rejected)
                # (The JSON reader checks UTF-8 as it parses, with the column of the bad byte.)
                table, bad_bytes = (table, []) if fmt == "jsonl" else self._check_utf8(table)
                table, bad_text = self._check_text(table)
                self._reject(rejected + bad_names + bad_bytes + bad_text)
                if table.num_rows:
                    yield table
        except UNREADABLE as e:
            # A truncated or corrupt stream, a broken footer: the rest of the file from
            # `position` on counts as one rejected row (its rows cannot be counted).
            self.rows_read += 1
            self._reject([self._record(self.position, f"unreadable from here to the end of the file: {e}", None)])

    def _reject(self, records: list[dict]) -> None:
        self.rows_rejected += len(records)
        self.rejects.write(records)

    def _record(self, line_no: int, reason: str, raw) -> dict:
        return {"reason": reason, "operator": "read", "source": self.path, "line": line_no, "raw": raw}

    def _with_ids(self, table: pa.Table, offsets) -> tuple[pa.Table, list[dict]]:
        """The rows with `__id__` and `__source__`, less those that set a field named like
        sluice's internal columns ('__...'): those are rejected."""
        reserved = [i for i, name in enumerate(table.column_names) if name.startswith("__")]
        used = functools.reduce(pc.or_, [pc.is_valid(table.column(i)) for i in reserved]) if reserved else None
        names = ", ".join(f"'{table.column_names[i]}'" for i in reserved)
        table = table.select([i for i in range(table.num_columns) if i not in reserved])
        ids = (np.int64(self.ordinal) << 32) + np.asarray(offsets, dtype=np.int64)
        table = table.append_column(ID_COLUMN, pa.array(ids, pa.int64()))
        table = table.append_column(SOURCE_COLUMN, pa.array([self.source] * table.num_rows, pa.string()))
        if used is None or not pc.any(used).as_py():
            return table, []
        reason = f"field names starting with '__' are reserved for sluice's internal columns; rename {names}"
        return table.filter(pc.invert(used)), self._records_for(table.filter(used), reason)

    def _check_utf8(self, table: pa.Table) -> tuple[pa.Table, list[dict]]:
        """Reject rows holding strings that are not UTF-8 (Parquet and CSV pass them through);
        the rows of a table that fails the check are looked at one by one."""
        if _valid(table):
            return table, []
        fields = [[name for name, column in zip(table.column_names, table.columns)
                   if not _valid(column.slice(i, 1))] for i in range(table.num_rows)]
        bad = pa.array([bool(f) for f in fields])
        lines = (table.column(ID_COLUMN).to_numpy() & 0xFFFFFFFF) + 1
        records = [self._record(int(line), "not UTF-8 in field " + ", ".join(f"'{n}'" for n in names), None)
                   for line, names in zip(lines, fields) if names]
        return table.filter(pc.invert(bad)), records

    def _check_text(self, table: pa.Table) -> tuple[pa.Table, list[dict]]:
        """Reject rows whose text field is missing, null or not a string."""
        key = self.text_key
        if key not in table.column_names:
            bad = self._records_for(table, text_problem(key, None))
            return table.slice(0, 0), bad
        column = table.column(key)
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            if pa.types.is_null(column.type):
                return table.slice(0, 0), self._records_for(table, text_problem(key, "null"))
            bad = self._records_for(table, text_problem(key, str(column.type)))
            return table.slice(0, 0), bad
        nulls = pc.is_null(column)
        if not pc.any(nulls).as_py():
            return table, []
        bad = self._records_for(table.filter(nulls), text_problem(key, "null"))
        return table.filter(pc.invert(nulls)), bad

    def _records_for(self, table: pa.Table, reason: str) -> list[dict]:
        lines = (table.column(ID_COLUMN).to_numpy() & 0xFFFFFFFF) + 1
        rows = public_columns(table).to_pylist()
        return [self._record(int(n), reason, row) for n, row in zip(lines, rows)]

    def _jsonl(self, compression):
        line_base, part = self.part.first_line, self.part
        ranged = part.end is not None
        with _ByteRange(part.path, part.start, part.end) if ranged else _open_bytes(self.path, compression) as stream:
            for chunk in _line_chunks(stream, CHUNK_BYTES if ranged else READ_BYTES):
                n_lines = chunk.count(b"\n")
                table = self._parse_jsonl_fast(chunk, n_lines)
                if table is not None:
                    yield table, line_base + np.arange(n_lines), []
                else:
                    yield self._parse_jsonl_lines(chunk, line_base)
                line_base += n_lines
                self.position = line_base + 1

    def _parse_jsonl_fast(self, chunk: bytes, n_lines: int) -> pa.Table | None:
        """Arrow's JSON reader for a clean chunk; None when any line needs a closer look."""
        if _may_nest_deeper(chunk, MAX_DEPTH):
            return None
        try:
            opts = pa_json.ReadOptions(block_size=max(1 << 20, len(chunk) + 1))
            table = pa_json.read_json(pa.BufferReader(chunk), read_options=opts)
            table.validate(full=True)  # the reader passes bytes that are not UTF-8 through
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        if table.num_rows != n_lines or self.text_key not in table.column_names:
            return None
        text = table.column(self.text_key)
        if not pa.types.is_string(text.type) or text.null_count or not _as_written(table):
            return None
        return table

    def _parse_jsonl_lines(self, chunk: bytes, line_base: int):
        rows, offsets, rejected = [], [], []
        for i, line in enumerate(chunk.split(b"\n")[:-1]):
            if not line.strip():
                continue
            row, problem = _json_object(line)
            if row is not None and not isinstance(row.get(self.text_key), str):
                value = row.get(self.text_key)
                kind = None if self.text_key not in row else "null" if value is None else type(value).__name__
                problem = text_problem(self.text_key, kind)
            if problem:
                rejected.append(self._record(line_base + i + 1, problem, line.decode("utf-8", errors="replace")))
                continue
            rows.append(row)
            offsets.append(line_base + i)
        return rows_to_table(rows), offsets, rejected

    def _parquet(self, compression):
        part = self.part
        groups = None if part.end is None else range(part.start, part.end)
        offset = part.first_line
        for batch in pq.ParquetFile(Location.of(self.path).open_input_file()).iter_batches(
                batch_size=PARQUET_BATCH_ROWS, row_groups=groups):
            table = pa.Table.from_batches([batch])
            yield table, offset + np.arange(table.num_rows), []
            offset += table.num_rows
            self.position = offset + 1

    def _csv(self, compression):
        bad_rows: list[dict] = []

        def on_invalid(row):
            bad_rows.append(self._record(row.number or 0, f"malformed CSV row: {row.text!r}"[:200], row.text))
            return "skip"

        parse = pa_csv.ParseOptions(invalid_row_handler=on_invalid, newlines_in_values=True)
        # Bytes that are not UTF-8 would fail the whole batch: the rows holding them are rejected.
        convert = pa_csv.ConvertOptions(column_types={self.text_key: pa.string()}, check_utf8=False)
        with _open_bytes(self.path, compression) as stream:
            reader = pa_csv.open_csv(stream, parse_options=parse, convert_options=convert)
            offset = 0
            for batch in reader:
                table = pa.Table.from_batches([batch])
                # Row numbers count data rows (line 1 is the header).
                yield table, offset + 1 + np.arange(table.num_rows), bad_rows[:]
                bad_rows.clear()
                offset += table.num_rows
                self.position = offset + 2
        if bad_rows:
            yield pa.table({}), [], bad_rows


def rows_to_table(rows: list[dict]) -> pa.Table:
    """Rows of JSON values as a table with every field any row has (`Table.from_pylist` would
    keep only the first row's); a field whose values have mixed types keeps them as JSON text."""
    columns = {}
    for key in dict.fromkeys(k for r in rows for k in r):
        values = [r.get(key) for r in rows]
        try:
            columns[key] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            columns[key] = json_text(values)
    return pa.table(columns)


def json_text(values: list) -> pa.Array:
    """Values as JSON text (nulls stay null): how a field whose values do not share one type
    keeps them as they were written."""
    return pa.array([None if v is None else json.dumps(v, ensure_ascii=False, default=str) for v in values],
                    pa.string())


# ---- writing ----

def write_table(table: pa.Table, location: Location, fmt: str) -> None:
    """A table as Parquet, JSON lines or (`json`) one JSON array."""
    if fmt == "parquet":
        location.write_with(lambda out: pq.write_table(table, out))
    elif fmt == "jsonl":
        location.write_bytes(json_lines(table.to_pylist()))
    elif fmt == "json":
        location.write_bytes(b"[" + b",\n".join(map(_JSON.encode, table.to_pylist())) + b"]\n")
    else:
        raise InputError(f"unknown output format '{fmt}'; use parquet or jsonl")


def write_dataset(ds, location: Location, fmt: str) -> None:
    path, fs = (location.path, None) if location.local else (location.path, location.fs)
    if fmt == "parquet":
        ds.write_parquet(path, filesystem=fs)
    elif fmt == "jsonl":  # shards of JSON lines end .jsonl (Ray's default is .json)
        from ray.data.datasource import FilenameProvider

        ds.write_json(path, filesystem=fs, filename_provider=FilenameProvider(file_format="jsonl"))
    else:
        raise InputError(f"unknown output format '{fmt}'; use parquet or jsonl")


def read_output(path: "str | os.PathLike | Location") -> pa.Table:
    """All rows a run wrote under `path` (parquet or jsonl shards), for tests and tools."""
    files = [f for f in Location.of(path).children() if f.is_file() and not f.name.startswith(".")]
    tables = []
    for f in files:
        if f.name.endswith(".parquet"):
            tables.append(pq.read_table(f.open_input_file()))
        else:
            tables.append(pa_json.read_json(f.open_input_stream()))
    return pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})
