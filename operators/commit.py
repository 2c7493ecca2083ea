"""Output folders: what a run may replace, where it writes meanwhile, and the move into place.

A run never deletes what sluice did not write and never leaves a half-written output that
looks complete:

- The target folder must be new, empty, an earlier sluice output (it holds MARKER), or the
  user passes `overwrite`; it may not be, hold, or lie inside an input.
- The run writes into PARTIAL_PREFIX + NAME + PARTIAL_SUFFIX beside the target NAME: MARKER
  first (what the run is: operators, settings, input files), then one checkpoint per input
  file as each completes (its rows after the first fused stage, then its completion marker),
  the rows after each whole-dataset operator (with the run's counts so far, then a completion
  marker), then data/, rejects/, report.html and, last, summary.json (the completion marker).
- Two runs never write to one output at once: a run holds an exclusive lock on
  `.NAME.sluice-lock` beside the target from its checks until it ends, and removes the file
  (the system drops the lock when the process dies, so a killed run can still be resumed). An
  output in a store (a URI) is locked on this machine only, in sluice's cache folder.
- Only then is it moved into place: an earlier output is set aside as `.NAME.sluice-old`,
  the new folder renamed onto NAME, and the old one removed. A run that fails or is
  interrupted leaves NAME as it was, and its partial folder for `resume`; a crash between the
  two renames is repaired by the next run, which puts the old output back. (A store has no
  renames: its folders are copied, the summary last.)
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from .io import json_bytes
from .storage import Location

MARKER = ".sluice-output"
SUMMARY = "summary.json"
CHECKPOINT = "checkpoint"
PARTIAL_SUFFIX = ".sluice-partial"


class OutputError(ValueError):
    """An output folder sluice will not write to, with what to do instead."""


@dataclass
class RunFolder:
    """A run's target folder and the partial folder it writes into meanwhile; `with` it for as
    long as the run writes (it holds the target's lock)."""

    target: Location
    resumed: bool = False  # whether the partial folder holds an interrupted run's checkpoints
    _lock: int | None = None

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.unlock()

    @property
    def lock_path(self) -> Path:
        if self.target.local:
            return Path(self.target.path).parent / f".{self.target.name}.sluice-lock"
        digest = hashlib.sha256(str(self.target).encode()).hexdigest()[:24]
        return cache_folder() / "locks" / f"{digest}.sluice-lock"

    def lock(self) -> None:
        """Take the target's lock, or refuse at once when another run holds it."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise OutputError(f"another sluice run (pid {holder}) is writing to {self.target}; "
                                  "wait for it to finish or choose another output") from None
            if _same_file(fd, self.lock_path):
                break
            os.close(fd)  # its holder removed the file as we locked it: lock the new one
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock = fd

    def unlock(self) -> None:
        """Remove the lock file, then let go of it (a run that opened it meanwhile sees it gone)."""
        if self._lock is not None:
            self.lock_path.unlink(missing_ok=True)
            os.close(self._lock)
            self._lock = None

    @property
    def partial(self) -> Location:
        return self.target.with_name(f".{self.target.name}{PARTIAL_SUFFIX}")

    @property
    def old(self) -> Location:
        return self.target.with_name(f".{self.target.name}.sluice-old")

    @property
    def checkpoint(self) -> Location:
        return self.partial / CHECKPOINT

    def done_path(self, ordinal: int) -> Location:
        """The completion marker of input part `ordinal`'s checkpoint."""
        return self.checkpoint / f"{ordinal:05d}.done.json"

    def finished_parts(self) -> dict[int, dict]:
        """The completion markers of the input parts whose checkpoint is whole, by ordinal."""
        done = {}
        for path in self.checkpoint.children("[0-9]*.done.json"):
            marker = json.loads(path.read_text())
            done[marker["ordinal"]] = marker
        return done

    def stage_folder(self, index: int) -> Location:
        """Where the rows after whole-dataset stage `index` are checkpointed."""
        return self.checkpoint / f"after-{index:03d}"

    def part_chunks(self, done: dict[int, dict]) -> list[Location]:
        """The checkpointed rows of the finished input parts `done` (`finished_parts`), in input order."""
        return [self.checkpoint / c["file"] for i in sorted(done) for c in done[i]["chunks"] if c["file"]]

    def save_stage(self, index: int, files: list[Location], ledger_state: dict,
                   id_columns: list[str] | None = None) -> None:
        """Mark stage `index`'s checkpointed rows (`files`) whole, with the run's counts so far;
        the earlier stages' checkpoints are then of no more use. With `id_columns`, the files
        hold only the rows' ids: the rows are those of the input parts' checkpoints, with these
        columns."""
        marker = {"stage": index, "files": [f.name for f in files], "ledger": ledger_state,
                  "id_columns": id_columns}
        (self.checkpoint / f"after-{index:03d}.done.json").write_bytes(json_bytes(marker))
        for earlier in self.checkpoint.children("after-*"):
            if earlier.name < f"after-{index:03d}":
                earlier.rmtree()
                earlier.unlink()

    def finished_stage(self) -> dict | None:
        """The marker of the latest whole-dataset stage whose rows are checkpointed whole."""
        markers = self.checkpoint.children("after-*.done.json")
        return json.loads(markers[-1].read_text()) if markers else None

    def commit(self) -> None:
        """Move the finished partial folder into place (its summary is already written)."""
        rejects = self.partial / "rejects"
        for path in self.checkpoint.children("*.rejects.jsonl"):
            rejects.mkdir()
            path.rename(rejects / path.name.replace(".rejects", ""))
        self.checkpoint.rmtree()
        if self.target.exists():
            self.target.rename(self.old)
            self.partial.rename(self.target)
            self.old.rmtree()
        else:
            self.partial.rename(self.target)
        self.unlock()


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def cache_folder() -> Path:
    """sluice's folder in the user's cache (XDG_CACHE_HOME, or ~/.cache)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sluice"


def partial_folder(target: "str | os.PathLike | Location") -> "Path | Location":
    """Where a run into `target` writes until it has finished (a Path on the local disk)."""
    return RunFolder(Location.of(target)).partial.native()


# What an output held before sluice wrote MARKER into it.
EARLIER_LAYOUT = {"data", "rejects", SUMMARY, "report.html"}


def is_sluice_output(folder: Location) -> bool:
    """Whether sluice wrote `folder`: it holds MARKER, or exactly the layout of an output from
    before the marker existed, with a summary."""
    if (folder / MARKER).is_file():
        return True
    names = {p.name for p in folder.children()}
    if SUMMARY not in names or not names <= EARLIER_LAYOUT:
        return False
    try:
        return "rows_read" in json.loads((folder / SUMMARY).read_text())
    except (ValueError, OSError):
        return False


def prepare(output: str | os.PathLike, sources, files: list[str], identity: dict, *,
            overwrite: bool = False, resume: bool = False) -> RunFolder:
    """Check that the run may write to `output` and set up its partial folder. With `resume`, an
    interrupted run's partial folder is kept when it was the same run (`identity`: operators,
    settings, input files), and refused naming what changed."""
    folder = RunFolder(Location.of(output))
    if not folder.target.parent.is_dir():
        check_outside_inputs(folder.target, sources, files)  # before the lock makes the folder
    folder.lock()
    try:
        _set_up(folder, sources, files, identity, overwrite, resume)
    except BaseException:
        folder.unlock()
        raise
    return folder


def _set_up(folder: RunFolder, sources, files: list[str], identity: dict, overwrite: bool, resume: bool) -> None:
    _repair_interrupted_commit(folder)  # before the checks: the earlier output is back in place
    check_target(folder.target, sources, files, overwrite)
    partial = folder.partial
    if partial.exists() and not is_sluice_output(partial):
        raise OutputError(f"'{partial}' exists and was not written by sluice; move it away to run into {folder.target}")
    if resume and partial.exists():
        earlier = json.loads((partial / MARKER).read_text())
        change = difference(earlier, identity)
        if change:
            raise OutputError(f"cannot resume the run in {partial}: {change}; run without --resume to start over")
        folder.resumed = True
        for name in ("data", "rejects"):  # written after the checkpoints: redone from them
            (partial / name).rmtree()
        for name in (SUMMARY, "report.html"):  # a run killed while moving into place wrote these
            (partial / name).unlink()
        return
    partial.rmtree()
    if not partial.local:  # a store's upload is whole or absent: the marker goes first
        (partial / MARKER).write_text(json.dumps(identity, indent=1))
        return
    # Made whole under another name and renamed, so the partial folder always has its marker.
    making = partial.with_name(f"{partial.name}-{os.getpid()}")
    (making / CHECKPOINT).mkdir()
    (making / MARKER).write_text(json.dumps(identity, indent=1))
    making.rename(partial)


def _repair_interrupted_commit(folder: RunFolder) -> None:
    """A commit stopped between its two renames: the earlier output is put back, or, when the
    new one is already in place, the earlier one is removed (if sluice wrote it)."""
    if not folder.old.exists():
        return
    if not folder.target.exists():
        folder.old.rename(folder.target)
    elif is_sluice_output(folder.old):
        folder.old.rmtree()
    else:
        raise OutputError(f"'{folder.old}' is in the way of replacing {folder.target}; move it away")


def check_target(target: Location, sources, files: list[str], overwrite: bool) -> None:
    """Refuse an output that is, holds or lies inside an input, or that holds files sluice did
    not write (unless `overwrite`)."""
    check_outside_inputs(target, sources, files)
    if not target.exists() and not (target.local and os.path.islink(target.path)):
        return
    if not target.is_dir():
        raise OutputError(f"output '{target}' exists and is not a folder; choose a folder path")
    if overwrite or is_sluice_output(target) or not target.children():
        return
    raise OutputError(f"output '{target}' holds files sluice did not write; choose a new or empty folder, "
                      "or pass --overwrite (overwrite=True) to replace it")


def check_outside_inputs(target: Location, sources, files: list[str]) -> None:
    real = target.resolved()
    for path in files:
        if Location.of(path).resolved().within(real):
            raise OutputError(f"output '{target}' holds the input file '{path}'; choose an output folder "
                              "outside the inputs")
    for source in sources:
        root = _input_root(source.path)
        if root is not None and real.within(root):
            raise OutputError(f"output '{target}' is inside the input '{source.path}', so a later run would "
                              "read it back; choose an output folder outside the inputs")


def _input_root(path: str) -> Location | None:
    """The folder a directory input, or a glob that descends (`**`), reads everything under."""
    location = Location.of(path)
    if any(ch in location.path for ch in "*?["):
        parts = location.path.split("/")
        if "**" not in parts:
            return None
        fixed = parts[:next(i for i, p in enumerate(parts) if any(ch in p for ch in "*?["))]
        return replace(location, path="/".join(fixed) or "/").resolved()
    return location.resolved() if location.is_dir() else None


def input_identity(files: list[str]) -> list[list]:
    """Each input file as [path, size, modification time]: what a resume checks is unchanged."""
    out = []
    for path in files:
        info = Location.of(path).info()
        out.append([path, info.size, info.mtime_ns])
    return out


def difference(earlier: dict, now: dict) -> str | None:
    """The first difference between two run identities, in words; None when they are the same."""
    for key in now.keys() | earlier.keys():
        if key in ("operators", "inputs") or earlier.get(key) == now.get(key):
            continue
        return f"'{key}' was {earlier.get(key)!r} and is now {now.get(key)!r}"
    ops_then, ops_now = earlier.get("operators", []), now.get("operators", [])
    for i, (a, b) in enumerate(zip(ops_then, ops_now)):
        if a != b:
            return f"operator {i + 1} was {a} and is now {b}"
    if len(ops_then) != len(ops_now):
        return f"the recipe had {len(ops_then)} operators and now has {len(ops_now)}"
    files_then = {p: (size, mtime) for p, size, mtime in earlier.get("inputs", [])}
    files_now = {p: (size, mtime) for p, size, mtime in now.get("inputs", [])}
    for path in files_now:
        if path not in files_then:
            return f"input file '{path}' is new"
        if files_then[path] != files_now[path]:
            return f"input file '{path}' changed (size or modification time)"
    for path in files_then:
        if path not in files_now:
            return f"input file '{path}' is gone"
    if list(files_then) != list(files_now):
        return "the input files are listed in another order"
    return None
