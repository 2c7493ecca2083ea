"""Runs a pipeline's plan on Ray Data: the local machine's Ray, or a cluster.

The first fused stage runs in one Ray task per input file; later fused stages are
`map_batches` stages over the checkpoint; whole-dataset operators get the materialized
Dataset. The ledger and the tracer are small actors every task reports to.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

import pyarrow as pa
import pyarrow.parquet as pq

from .commit import OutputError, RunFolder
from .io import InputPart, write_dataset
from .ledger import Remote
from .progress import Progress
from .stage import CHECKPOINT_PARQUET, CRASHES, FusedStage, checkpoint_part
from .storage import Location
from .trace import removed_items


class RayExecutor:
    name = "ray"
    saves_ids = False  # (restoring rows by id would take a join)

    def __init__(self, address: str | None = None, num_cpus: int | None = None, quiet: bool = False):
        self.address, self.requested_cpus, self.quiet = address, num_cpus, quiet

    def start(self, locations: list[Location], shared_fs: bool, pipeline) -> None:
        ensure_ray(self.address, self.requested_cpus, self.quiet)
        check_shared(locations, shared_fs)
        pipeline.ship_user_code()
        configure_ray_data(self.quiet)

    @property
    def num_cpus(self) -> int:
        import ray

        return int(ray.cluster_resources().get("CPU", 1))

    def actor(self, cls, *args) -> Remote:
        import ray

        return Remote(ray.remote(num_cpus=0)(cls).remote(*args))

    def release(self, handle: Remote) -> None:
        handle.kill()

    def checkpoint(self, folder: RunFolder, parts: list[tuple[int, InputPart]], stage: FusedStage,
                   text_key: str, progress: Progress) -> None:
        import ray

        task = ray.remote(max_retries=CRASHES)(checkpoint_part)
        stage_ref = ray.put(stage)
        pending = [task.remote(folder, i, part, stage=stage_ref, text_key=text_key) for i, part in parts]
        while pending:  # what Ray Data's progress bar showed for reading: parts done so far
            finished, pending = ray.wait(pending, num_returns=1)
            ray.get(finished)
            progress.update(f"input parts read and checkpointed: {len(parts) - len(pending)}/{len(parts)}")

    def load(self, chunks: list[Location]):
        import ray

        paths = pa.table({"path": pa.array([c.path for c in chunks], pa.string())})
        return ray.data.from_arrow(paths).repartition(max(len(chunks), 1)).map_batches(
            read_checkpoint, batch_size=1, batch_format="pyarrow",
            fn_kwargs={"filesystem": chunks[0].fs if chunks else None})

    def save(self, ds, folder: Location) -> list[Location]:
        ds.write_parquet(folder.path, filesystem=None if folder.local else folder.fs, **CHECKPOINT_PARQUET)
        return folder.children("*.parquet")

    def materialize(self, ds):
        return ds.materialize()

    def count(self, ds) -> int:
        return ds.count()

    def map_blocks(self, ds, fn, **kwargs):
        return ds.map_batches(fn, batch_format="pyarrow", batch_size=None, fn_kwargs=kwargs)

    def whole_dataset(self, op, ds, ctx):
        return op.apply(ds, ctx).materialize()

    def removed(self, before, after, limit: int) -> list:
        return removed_items(before, after, limit)

    def fused(self, stage: FusedStage, ds):
        return ds.map_batches(stage.udf(), batch_format="pyarrow", batch_size=None, max_retries=CRASHES)

    def write(self, ds, folder: Location, fmt: str) -> None:
        write_dataset(ds, folder, fmt)


def read_checkpoint(batch: pa.Table, filesystem):
    """map_batches over a table of checkpoint file paths: yields their rows."""
    for path in batch.column("path").to_pylist():
        yield pq.read_table(path, filesystem=filesystem)


def ensure_ray(address: str | None = None, num_cpus: int | None = None, quiet: bool = False) -> None:
    """Start or join Ray. A Ctrl-C while Ray starts is held until it has started and raised then:
    cut short, `ray.init` leaves processes behind that `ray.shutdown` cannot reach."""
    import ray

    if ray.is_initialized():
        return
    kwargs = {"include_dashboard": False, "log_to_driver": not quiet,
              "logging_level": "WARNING"}
    with _sigint_held() as held:
        if address:
            ray.init(address=address, **kwargs)
        else:  # "local": never attach to a cluster some `ray start` left on this machine
            ray.init(address="local", num_cpus=num_cpus, **kwargs)
    if held:
        raise KeyboardInterrupt


@contextlib.contextmanager
def _sigint_held():
    """Within the block, SIGINT is noted instead of raised; the list it yields is non-empty when
    one came. (Signal handlers belong to the main thread: elsewhere this does nothing.)"""
    held: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield held
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield held
    finally:
        signal.signal(signal.SIGINT, previous)


def check_shared(locations: list[Location], shared_fs: bool) -> None:
    """Workers read the inputs and write the checkpoints and output where `locations` say: on a
    cluster whose nodes do not mount one filesystem, a local path means another disk on each
    node, and rows would land on whichever machine ran a task."""
    import ray

    nodes = sum(1 for node in ray.nodes() if node["Alive"])
    local = next((where for where in locations if where.local), None)
    if nodes > 1 and local is not None and not shared_fs:
        raise OutputError(f"the Ray cluster has {nodes} nodes and '{local}' is a local path, which each node "
                          "resolves on its own disk; use URIs every node reaches (s3://...), or put the inputs "
                          "and output in a folder every node mounts at the same path and pass --shared-fs "
                          "(recipe: ray: {shared_fs: true})")


def configure_ray_data(quiet: bool) -> None:
    """Order kept; Ray Data's progress bars only on a terminal and its INFO lines (one per
    dataset executed) not at all: sluice prints a line per stage itself."""
    import logging

    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = not quiet and sys.stderr.isatty()
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
