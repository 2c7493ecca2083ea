"""Data-Juicer's output layout: `export_path` names a file.

A Data-Juicer config's result goes where Data-Juicer writes it: the file `export_path` in the
format its suffix (or `export_type`) names: `jsonl` (JSON lines), `json` (one JSON array) or
`parquet`; with `export_shard_size` (bytes) it is split into contiguous shards beside that
path, `<name>-<i>-of-<n>.<suffix>` with zero-padded numbers, as Data-Juicer names them.
sluice's own run folder (summary.json, report.html, rejects/, trace/) sits beside the result
as `<name>_sluice/`; the run writes its rows there first and they are moved into the layout
above once the run has finished (each file written under a temporary name, then renamed).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from .io import write_table
from .storage import Location, is_uri

FORMATS = ("jsonl", "json", "parquet")


class ExportError(ValueError):
    """An export setting or target a user can fix."""


@dataclass(frozen=True)
class Export:
    path: Path
    format: str          # jsonl, json or parquet
    shard_size: int = 0  # bytes per shard; 0 writes one file

    @classmethod
    def of(cls, export_path: str, export_type: str | None = None, shard_size: int = 0) -> "Export":
        if is_uri(export_path):
            raise ExportError(f"export_path '{export_path}' is a URI; Data-Juicer's layout is written to a local "
                              "path (for a store, give sluice an output folder URI instead: --output)")
        path = Path(export_path)
        fmt = (export_type or path.suffix.lstrip(".")).lower()
        if fmt not in FORMATS:
            raise ExportError(f"export_path '{export_path}' must end in .jsonl, .json or .parquet (or set "
                              f"export_type to one of {', '.join(FORMATS)})")
        if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 0:
            raise ExportError(f"export_shard_size is a number of bytes (0: one file), got {shard_size!r}")
        return cls(path, fmt, shard_size)

    @property
    def base(self) -> str:
        """The file name up to its first '.', as Data-Juicer names shards and side files."""
        return self.path.name.split(".")[0]

    @property
    def run_folder(self) -> Path:
        """Where sluice's summary, report, rejects and trace go."""
        return self.path.with_name(f"{self.base}_sluice")

    def shard_paths(self, shards: int) -> list[Path]:
        width = len(str(shards)) + 1
        return [self.path.with_name(f"{self.base}-{i:0{width}d}-of-{shards:0{width}d}.{self.format}")
                for i in range(shards)]

    def check_target(self, overwrite: bool) -> list[Path]:
        """The result files an earlier sluice run of this path wrote; refuses to replace a
        result file that none wrote."""
        if self.path.exists() and not self.path.is_file():
            raise ExportError(f"export_path '{self.path}' is a folder; it names the result file")
        written = previous_files(self.run_folder)
        if self.path.is_file() and self.path not in written and not overwrite:
            raise ExportError(f"export_path '{self.path}' exists and no sluice run wrote it; remove it or "
                              "run with --overwrite")
        return written

    def write(self, data_dir: Path, earlier: list[Path]) -> list[Path]:
        """Move the run's rows (shards under `data_dir`) into the layout, removing the `earlier`
        result files it does not write again; returns the files."""
        shards = sorted(p for p in data_dir.glob("*") if p.is_file() and not p.name.startswith("."))
        stale = set(earlier)
        if self.shard_size <= 0:
            files = [self.path]
            _into_one_file(shards, self.path, self.format)
        else:
            table = _read(shards)
            count = max(1, min(int(table.nbytes / self.shard_size) + 1, table.num_rows))
            files = self.shard_paths(count)
            per, extra = divmod(table.num_rows, count)
            start = 0
            for i, path in enumerate(files):
                rows = per + (1 if i < extra else 0)  # contiguous, the first ones one row longer
                _write(table.slice(start, rows), path, self.format)
                start += rows
        for old in stale - set(files):  # shards an earlier sluice run of this path wrote
            old.unlink(missing_ok=True)
        for shard in shards:
            shard.unlink(missing_ok=True)  # (a single shard was moved)
        return files


def previous_files(run_folder: Path) -> list[Path]:
    """The result files the last sluice run into `run_folder` recorded in its summary."""
    try:
        summary = json.loads((run_folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [Path(p) for p in summary.get("output_files", [])]


def _read(shards: list[Path]) -> pa.Table:
    """The rows of a run's shards (parquet, or JSON lines whatever their suffix)."""
    tables = [pq.read_table(p) if p.suffix == ".parquet" else pa_json.read_json(p)
              for p in shards if p.stat().st_size]
    tables = [t for t in tables if t.num_columns]
    return pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})


def read_result(files: list[Path]) -> pa.Table:
    """The rows of result files in this layout (a .json file is one JSON array)."""
    tables = []
    for path in files:
        if path.suffix == ".json":
            tables.append(pa.Table.from_pylist(json.loads(path.read_text(encoding="utf-8"))))
        else:
            tables.append(_read([path]))
    tables = [t for t in tables if t.num_columns]
    return pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})


def _write(table: pa.Table, path: Path, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_table(table, Location.of(path), fmt)  # (through a temporary name, as `_replace`)


def _into_one_file(shards: list[Path], path: Path, fmt: str) -> None:
    """The run's shards as the one file `path`: a single shard in that format moved, JSON-lines
    shards concatenated, anything else read and written again."""
    if len(shards) == 1 and shards[0].suffix == f".{fmt}":
        _replace(path, lambda temporary: os.replace(shards[0], temporary))
    elif fmt == "jsonl" and all(p.suffix == ".jsonl" for p in shards):
        _concatenate(shards, path)
    else:
        _write(_read(shards), path, fmt)


def _concatenate(shards: list[Path], path: Path) -> None:
    """JSON-lines shards into one file, as they are (a shard's last line may lack its newline)."""
    def copy(temporary: Path) -> None:
        with open(temporary, "wb") as out:
            for shard in shards:
                with open(shard, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 24)
                    if f.tell() and (f.seek(-1, os.SEEK_END), f.read(1))[1] != b"\n":
                        out.write(b"\n")
    _replace(path, copy)


def _replace(path: Path, write) -> None:
    """`write(temporary)` beside `path`, then the temporary renamed to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.sluice-tmp")
    write(temporary)
    os.replace(temporary, path)
