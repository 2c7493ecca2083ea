"""Output folders: what a run may replace, where it writes meanwhile, and the move into place.

A run never deletes what sluice did not write and never leaves a half-written output that
looks complete:

- The target folder must be new, empty, an earlier sluice output (it holds MARKER), or the
  user passes `overwrite`; it may not be, hold, or lie inside an input.
- The run writes into PARTIAL_PREFIX + NAME + PARTIAL_SUFFIX beside the target NAME: MARKER
  first (what the run is: operators, settings, input files), then one checkpoint per input
  file as each completes (its rows after the first fused stage, then its completion marker),
  then data/, rejects/, report.html and, last, summary.json (the completion marker).
- Two runs never write to one output at once: a run holds an exclusive lock on
  `.NAME.sluice-lock` beside the target from its checks until it ends, and removes the file
  (the system drops the lock when the process dies, so a killed run can still be resumed).
- Only then is it moved into place: an earlier output is set aside as `.NAME.sluice-old`,
  the new folder renamed onto NAME, and the old one removed. A run that fails or is
  interrupted leaves NAME as it was, and its partial folder for `resume`; a crash between the
  two renames is repaired by the next run, which puts the old output back.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

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

    target: Path
    resumed: bool = False  # whether the partial folder holds an interrupted run's checkpoints
    _lock: int | None = None

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.unlock()

    @property
    def lock_path(self) -> Path:
        return self.target.parent / f".{self.target.name}.sluice-lock"

    def lock(self) -> None:
        """Take the target's lock, or refuse at once when another run holds it."""
        self.target.parent.mkdir(parents=True, exist_ok=True)
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
    def partial(self) -> Path:
        return partial_folder(self.target)

    @property
    def old(self) -> Path:
        return self.target.parent / f".{self.target.name}.sluice-old"

    @property
    def checkpoint(self) -> Path:
        return self.partial / CHECKPOINT

    def done_path(self, ordinal: int) -> Path:
        """The completion marker of input part `ordinal`'s checkpoint."""
        return self.checkpoint / f"{ordinal:05d}.done.json"

    def finished_parts(self) -> dict[int, dict]:
        """The completion markers of the input parts whose checkpoint is whole, by ordinal."""
        if not self.checkpoint.is_dir():
            return {}
        done = {}
        for path in self.checkpoint.glob("*.done.json"):
            marker = json.loads(path.read_text())
            done[marker["ordinal"]] = marker
        return done

    def commit(self) -> None:
        """Move the finished partial folder into place (its summary is already written)."""
        rejects = self.partial / "rejects"
        for path in sorted(self.checkpoint.glob("*.rejects.jsonl")):
            rejects.mkdir(exist_ok=True)
            path.rename(rejects / path.name.replace(".rejects", ""))
        shutil.rmtree(self.checkpoint, ignore_errors=True)
        if self.target.exists():
            self.target.rename(self.old)
            self.partial.rename(self.target)
            shutil.rmtree(self.old)
        else:
            self.partial.rename(self.target)
        self.unlock()


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def partial_folder(target: str | os.PathLike) -> Path:
    target = Path(target)
    return target.parent / f".{target.name}{PARTIAL_SUFFIX}"


# What an output held before sluice wrote MARKER into it.
EARLIER_LAYOUT = {"data", "rejects", SUMMARY, "report.html"}


def is_sluice_output(folder: Path) -> bool:
    """Whether sluice wrote `folder`: it holds MARKER, or exactly the layout of an output from
    before the marker existed, with a summary."""
    if (folder / MARKER).is_file():
        return True
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
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
    folder = RunFolder(Path(os.path.abspath(output)))
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
            shutil.rmtree(partial / name, ignore_errors=True)
        for name in (SUMMARY, "report.html"):  # a run killed while moving into place wrote these
            (partial / name).unlink(missing_ok=True)
        return
    if partial.exists():
        shutil.rmtree(partial)
    # Made whole under another name and renamed, so the partial folder always has its marker.
    making = partial.with_name(f"{partial.name}-{os.getpid()}")
    (making / CHECKPOINT).mkdir(parents=True)
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
        shutil.rmtree(folder.old)
    else:
        raise OutputError(f"'{folder.old}' is in the way of replacing {folder.target}; move it away")


def check_target(target: Path, sources, files: list[str], overwrite: bool) -> None:
    """Refuse an output that is, holds or lies inside an input, or that holds files sluice did
    not write (unless `overwrite`)."""
    check_outside_inputs(target, sources, files)
    if not target.exists() and not target.is_symlink():
        return
    if not target.is_dir():
        raise OutputError(f"output '{target}' exists and is not a folder; choose a folder path")
    if overwrite or is_sluice_output(target) or not any(target.iterdir()):
        return
    raise OutputError(f"output '{target}' holds files sluice did not write; choose a new or empty folder, "
                      "or pass --overwrite (overwrite=True) to replace it")


def check_outside_inputs(target: Path, sources, files: list[str]) -> None:
    real = Path(os.path.realpath(target))
    for path in files:
        file = Path(os.path.realpath(path))
        if file == real or real in file.parents:
            raise OutputError(f"output '{target}' holds the input file '{path}'; choose an output folder "
                              "outside the inputs")
    for source in sources:
        root = _input_root(source.path)
        if root is not None and (real == root or root in real.parents):
            raise OutputError(f"output '{target}' is inside the input '{source.path}', so a later run would "
                              "read it back; choose an output folder outside the inputs")


def _input_root(path: str) -> Path | None:
    """The folder a directory input, or a glob that descends (`**`), reads everything under."""
    if any(ch in path for ch in "*?["):
        parts = Path(path).parts
        if "**" not in parts:
            return None
        fixed = parts[:next(i for i, p in enumerate(parts) if any(ch in p for ch in "*?["))]
        return Path(os.path.realpath(Path(*fixed) if fixed else Path(".")))
    return Path(os.path.realpath(path)) if os.path.isdir(path) else None


def input_identity(files: list[str]) -> list[list]:
    """Each input file as [path, size, modification time]: what a resume checks is unchanged."""
    out = []
    for path in files:
        stat = os.stat(path)
        out.append([path, stat.st_size, stat.st_mtime_ns])
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
