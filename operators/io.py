"""Readers, writers and the rejects output.

Every input file is read by one Ray task that streams pyarrow tables of about
`CHUNK_BYTES`. Each row gets `__id__` (file ordinal << 32 | line or row number: a stable order
key) and `__source__` (the input's name). A malformed line, a row without the text field or
with a text value of the wrong type is written to the rejects output with the reason and its
file and line, and counted; it never stops the run.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from .base import ID_COLUMN, REJECT_COLUMN, SOURCE_COLUMN

CHUNK_BYTES = 8 << 20
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

    def files(self) -> list[str]:
        return list_files(self.path)

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
    if any(ch in path for ch in "*?["):
        candidates = sorted(glob.glob(path, recursive=True))
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

class RejectWriter:
    """Appends rejected rows as JSON lines to a fresh file under `directory`."""

    def __init__(self, directory: str | None, stage: str):
        self.directory, self.stage, self.path = directory, stage, None

    def write(self, records: list[dict]) -> None:
        if not records or self.directory is None:
            return
        if self.path is None:
            os.makedirs(self.directory, exist_ok=True)
            self.path = os.path.join(self.directory, f"{self.stage}-{uuid.uuid4().hex[:12]}.jsonl")
        with open(self.path, "a", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")


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
    if compression == "gz":
        return gzip.open(path, "rb")
    if compression == "zst":
        import zstandard

        return zstandard.open(path, "rb")
    return open(path, "rb")


def _line_chunks(stream) -> Iterator[bytes]:
    """Chunks of whole lines, about CHUNK_BYTES each."""
    rest = b""
    while True:
        data = stream.read(CHUNK_BYTES)
        if not data:
            if rest:
                yield rest if rest.endswith(b"\n") else rest + b"\n"
            return
        data = rest + data
        cut = data.rfind(b"\n")
        if cut < 0:
            rest = data
            continue
        rest = data[cut + 1:]
        yield data[: cut + 1]


def text_problem(key: str, kind: str | None) -> str:
    """Why a row's text field is unusable: missing (kind None), null, or another type."""
    if kind is None:
        return f"missing field '{key}'"
    if kind == "null":
        return f"field '{key}' is null"
    return f"field '{key}' is {kind}, expected a string"


class FileReader:
    """Reads one input file into tables of valid rows; rejects the rest with reasons."""

    def __init__(self, path: str, ordinal: int, source: str, text_key: str, rejects: RejectWriter):
        self.path, self.ordinal, self.source, self.text_key = path, ordinal, source, text_key
        self.rejects = rejects
        self.rows_read = 0
        self.rows_rejected = 0

    def tables(self) -> Iterator[pa.Table]:
        fmt, compression = file_format(self.path)
        reader = {"jsonl": self._jsonl, "parquet": self._parquet, "csv": self._csv}[fmt]
        for table, rejected in reader(compression):
            self.rows_read += table.num_rows + len(rejected)
            table, bad = self._check_text(table)
            rejected.extend(bad)
            self.rows_rejected += len(rejected)
            self.rejects.write(rejected)
            if table.num_rows:
                yield table

    def _record(self, line_no: int, reason: str, raw) -> dict:
        return {"reason": reason, "operator": "read", "source": self.path, "line": line_no, "raw": raw}

    def _with_ids(self, table: pa.Table, offsets) -> pa.Table:
        ids = (np.int64(self.ordinal) << 32) + np.asarray(offsets, dtype=np.int64)
        table = table.append_column(ID_COLUMN, pa.array(ids, pa.int64()))
        return table.append_column(SOURCE_COLUMN, pa.array([self.source] * table.num_rows, pa.string()))

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
        line_base = 0
        with _open_bytes(self.path, compression) as stream:
            for chunk in _line_chunks(stream):
                n_lines = chunk.count(b"\n")
                table = self._parse_jsonl_fast(chunk, n_lines)
                if table is not None:
                    yield self._with_ids(table, line_base + np.arange(n_lines)), []
                else:
                    yield self._parse_jsonl_lines(chunk, line_base)
                line_base += n_lines

    def _parse_jsonl_fast(self, chunk: bytes, n_lines: int) -> pa.Table | None:
        """Arrow's JSON reader for a clean chunk; None when any line needs a closer look."""
        try:
            opts = pa_json.ReadOptions(block_size=max(1 << 20, len(chunk) + 1))
            table = pa_json.read_json(io.BytesIO(chunk), read_options=opts)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        if table.num_rows != n_lines or self.text_key not in table.column_names:
            return None
        text = table.column(self.text_key)
        if not pa.types.is_string(text.type) or text.null_count:
            return None
        return table

    def _parse_jsonl_lines(self, chunk: bytes, line_base: int):
        rows, offsets, rejected = [], [], []
        for i, line in enumerate(chunk.split(b"\n")[:-1]):
            if not line.strip():
                continue
            raw = line.decode("utf-8", errors="replace")
            try:
                row = json.loads(line)
            except ValueError as e:
                rejected.append(self._record(line_base + i + 1, f"malformed JSON: {e}", raw))
                continue
            if not isinstance(row, dict):
                rejected.append(self._record(line_base + i + 1, "line is not a JSON object", raw))
                continue
            value = row.get(self.text_key)
            if not isinstance(value, str):
                kind = None if self.text_key not in row else "null" if value is None else type(value).__name__
                rejected.append(self._record(line_base + i + 1, text_problem(self.text_key, kind), raw))
                continue
            rows.append(row)
            offsets.append(line_base + i)
        return self._with_ids(rows_to_table(rows), offsets), rejected

    def _parquet(self, compression):
        offset = 0
        for batch in pq.ParquetFile(self.path).iter_batches(batch_size=PARQUET_BATCH_ROWS):
            table = pa.Table.from_batches([batch])
            yield self._with_ids(table, offset + np.arange(table.num_rows)), []
            offset += table.num_rows

    def _csv(self, compression):
        bad_rows: list[dict] = []

        def on_invalid(row):
            bad_rows.append(self._record(row.number or 0, f"malformed CSV row: {row.text!r}"[:200], row.text))
            return "skip"

        parse = pa_csv.ParseOptions(invalid_row_handler=on_invalid, newlines_in_values=True)
        convert = pa_csv.ConvertOptions(column_types={self.text_key: pa.string()})
        with _open_bytes(self.path, compression) as stream:
            reader = pa_csv.open_csv(stream, parse_options=parse, convert_options=convert)
            offset = 0
            for batch in reader:
                table = pa.Table.from_batches([batch])
                # Row numbers count data rows (line 1 is the header).
                yield self._with_ids(table, offset + 1 + np.arange(table.num_rows)), bad_rows[:]
                bad_rows.clear()
                offset += table.num_rows
        if bad_rows:
            yield self._with_ids(pa.table({}), []), bad_rows


def rows_to_table(rows: list[dict]) -> pa.Table:
    """Rows of JSON values as a table; a field whose values have mixed types keeps them as JSON text."""
    if not rows:
        return pa.table({})
    try:
        return pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        keys = list(dict.fromkeys(k for r in rows for k in r))
        columns = {}
        for k in keys:
            values = [r.get(k) for r in rows]
            try:
                columns[k] = pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                columns[k] = pa.array([None if v is None else json.dumps(v) for v in values], pa.string())
        return pa.table(columns)


# ---- writing ----

def write_dataset(ds, path: str, fmt: str) -> None:
    if fmt == "parquet":
        ds.write_parquet(path)
    elif fmt == "jsonl":
        ds.write_json(path)
    else:
        raise InputError(f"unknown output format '{fmt}'; use parquet or jsonl")


def read_output(path: str) -> pa.Table:
    """All rows a run wrote under `path` (parquet or jsonl shards), for tests and tools."""
    files = sorted(p for p in Path(path).glob("*") if p.is_file() and not p.name.startswith("."))
    tables = []
    for f in files:
        if f.suffix == ".parquet":
            tables.append(pq.read_table(f))
        else:
            tables.append(pa_json.read_json(f))
    return pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})
