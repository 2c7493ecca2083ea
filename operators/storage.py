"""Where a run reads and writes: a local path or a URI that `pyarrow.fs` resolves (`s3://`,
`gs://`, `hdfs://`, ...), as one `Location`.

On a Ray cluster whose nodes do not share a disk, a URI is what every node reaches the same
way: workers open inputs and write checkpoints by it. A store's credentials and endpoint come
from its usual environment (for S3: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
`AWS_ENDPOINT_URL`, ...) or from the URI's query (`s3://bucket/data?endpoint_override=...`),
which the Location keeps for the files under it.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.fs as pafs

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def is_uri(where: str | os.PathLike) -> bool:
    """Whether `where` names a store other than the local disk (a `file://` URI is a path)."""
    match = _SCHEME.match(str(where))
    return bool(match) and match.group(1).lower() != "file"


@functools.lru_cache(maxsize=64)
def _filesystem(root: str) -> pafs.FileSystem:
    return pafs.FileSystem.from_uri(root)[0]


@dataclass(frozen=True)
class Location:
    """A file or folder: on the local disk (`scheme` empty, `path` absolute) or in a store."""

    path: str
    scheme: str = ""
    netloc: str = ""  # what a URI's path does not hold (hdfs's host:port)
    query: str = ""

    @classmethod
    def of(cls, where: "str | os.PathLike | Location") -> "Location":
        if isinstance(where, Location):
            return where
        text = str(where)
        if text.startswith("file://"):
            text = text[len("file://"):]
        if not is_uri(text):
            return cls(os.path.abspath(text))
        rest, _, query = text.partition("?")
        fs, path = pafs.FileSystem.from_uri(text)
        scheme = _SCHEME.match(text).group(1).lower()
        after = rest[len(scheme) + 3:]
        netloc = "" if after.startswith(path.lstrip("/")) else after.split("/", 1)[0]
        return cls(path.rstrip("/") or "/", scheme, netloc, query)

    @property
    def local(self) -> bool:
        return not self.scheme

    @property
    def fs(self) -> pafs.FileSystem:
        if self.local:
            return pafs.LocalFileSystem()
        return _filesystem(f"{self.scheme}://{self.netloc}{'' if self.netloc else self.path.split('/')[0]}"
                           + (f"?{self.query}" if self.query else ""))

    def __str__(self) -> str:
        if self.local:
            return self.path
        path = self.path if self.netloc else self.path.lstrip("/")
        return f"{self.scheme}://{self.netloc}{path}" + (f"?{self.query}" if self.query else "")

    def native(self) -> "Path | Location":
        """A local Location as a `Path`; a store's as it is."""
        return Path(self.path) if self.local else self

    def __truediv__(self, name: str) -> "Location":
        return replace(self, path=f"{self.path.rstrip('/')}/{name}")

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def parent(self) -> "Location":
        return replace(self, path=self.path.rstrip("/").rsplit("/", 1)[0] or "/")

    def with_name(self, name: str) -> "Location":
        return self.parent / name

    def within(self, other: "Location") -> bool:
        """Whether this is `other` or lies under it."""
        return (self.scheme, self.netloc) == (other.scheme, other.netloc) and (
            self.path == other.path or self.path.startswith(other.path.rstrip("/") + "/"))

    def resolved(self) -> "Location":
        """With symlinks resolved (on the local disk; a store has none)."""
        return replace(self, path=os.path.realpath(self.path)) if self.local else self

    # ---- what is there ----

    def info(self) -> pafs.FileInfo:
        return self.fs.get_file_info(self.path)

    def exists(self) -> bool:
        return self.info().type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self.info().type == pafs.FileType.Directory

    def is_file(self) -> bool:
        return self.info().type == pafs.FileType.File

    def children(self, pattern: str = "*") -> list["Location"]:
        """What the folder holds whose name matches `pattern`, sorted by name ([] when it is absent)."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        names = sorted(i.base_name for i in infos)
        return [self / n for n in names if fnmatch.fnmatchcase(n, pattern)]

    def files(self) -> list["Location"]:
        """Every file under the folder, sorted, hidden ones (a part named '.…') left out."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=True, allow_not_found=True))
        root = self.path.rstrip("/") + "/"
        paths = sorted(i.path for i in infos if i.type == pafs.FileType.File)
        return [replace(self, path=p) for p in paths
                if not any(part.startswith(".") for part in p[len(root):].split("/"))]

    # ---- reading and writing ----

    def open_input_stream(self, compression: str | None = None):
        return self.fs.open_input_stream(self.path, compression=compression)

    def open_input_file(self):
        return self.fs.open_input_file(self.path)

    def read_bytes(self) -> bytes:
        with self.open_input_stream() as f:
            return f.read()

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_with(self, write: Callable[[pa.NativeFile], None]) -> None:
        """`write(stream)` so that the file is whole or absent: on the local disk through a
        temporary name and a rename; a store's upload is all or nothing as it is."""
        if not self.local:
            with self.fs.open_output_stream(self.path) as out:
                write(out)
            return
        temporary = f"{self.path}.tmp"
        with self.fs.open_output_stream(temporary) as out:
            write(out)
        os.replace(temporary, self.path)

    def write_bytes(self, data: bytes) -> None:
        self.write_with(lambda out: out.write(data))

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    def mkdir(self) -> None:
        self.fs.create_dir(self.path, recursive=True)

    def unlink(self) -> None:
        """Remove the file if it is there."""
        if self.is_file():
            self.fs.delete_file(self.path)

    def rmtree(self) -> None:
        """Remove the folder and all it holds, if it is there."""
        if self.is_dir():
            self.fs.delete_dir(self.path)

    def rename(self, target: "Location") -> None:
        """Move this file or folder to `target` (which must not exist): a rename on the local
        disk; in a store, which has no folders to rename, each file copied (a folder's summary
        last, so the copy looks complete only once it is) and the original removed."""
        if self.local:
            os.rename(self.path, target.path)
            return
        if self.is_file():
            self.fs.move(self.path, target.path)
            return
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=True))
        paths = sorted((i.path for i in infos if i.type == pafs.FileType.File),
                       key=lambda p: p.endswith("/summary.json"))
        for path in paths:
            self.fs.copy_file(path, target.path + path[len(self.path):])
        self.fs.delete_dir(self.path)


def glob(pattern: Location) -> list[Location]:
    """Files in a store matching `pattern` (`*`, `?`, `[...]` within a name; `**` any number of
    folders), hidden ones left out, as `glob` leaves them on a local disk."""
    parts = pattern.path.split("/")
    first = next(i for i, part in enumerate(parts) if any(ch in part for ch in "*?["))
    root = replace(pattern, path="/".join(parts[:first]) or "/")
    prefix = root.path.rstrip("/") + "/"
    return [f for f in root.files() if _matches(f.path[len(prefix):].split("/"), parts[first:])]


def _matches(names: list[str], patterns: list[str]) -> bool:
    if not patterns:
        return not names
    if patterns[0] == "**":
        return any(_matches(names[i:], patterns[1:]) for i in range(len(names) + 1))
    return bool(names) and fnmatch.fnmatchcase(names[0], patterns[0]) and _matches(names[1:], patterns[1:])
