"""Read a validated Parquet file in phone-sorted chunks with bounded memory (pure, no Airflow).

The planners group records by mobile number (one message per number) and need them sorted
by the operator's sort columns, phone first. Sorting 10 million rows in memory does not fit
the plan step's memory budget, so :func:`phone_sorted_chunks` range-partitions the file by
phone instead (an external sort):

1. read only the phone column, a row group at a time, and keep a systematic sample of it;
   the sample's quantiles cut the phone range into buckets of about ``chunk_rows`` rows;
2. read the file batch by batch and append each row to its bucket's Arrow IPC spill file
   (in a temporary folder, deleted afterwards), keeping the file order within a bucket;
3. yield the buckets in phone order, each sorted (stable) by the sort columns.

Every row of one number is in the same bucket, so no group straddles two chunks, and the
concatenation of the chunks is exactly the file stably sorted by the sort columns (nulls
last): the same order ``DataFrame.sort_values(kind="stable")`` gives.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from functools import lru_cache
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "VALIDATION_COLUMNS",
    "default_processes",
    "map_ordered",
    "phone_sorted_chunks",
    "records",
]

DEFAULT_CHUNK_ROWS = 100_000
#: Check columns the validate step derives for its suite; planners never read them.
VALIDATION_COLUMNS = (
    "taxpayer_id_ok",
    "taxpayer_id_review",
    "taxpayer_id_reason",
    "outstanding_yuan",
    "balance_yuan",
    "days_overdue",
    "account_ok",
    "item_complete",
    "deadline_date",
)
_SAMPLE_ROWS = 200_000  # phones kept to place the bucket boundaries
_READ_BATCH = 65_536


def phone_sorted_chunks(
    source: str | os.PathLike[str] | IO[bytes],
    sort_columns: Sequence[str],
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    spill_dir: str | os.PathLike[str] | None = None,
    exclude: Collection[str] = (),
) -> Iterator[pa.Table]:
    """Yield the rows of a Parquet file as Arrow tables sorted by ``sort_columns``, phone-complete.

    :param source: the Parquet file (path or seekable binary file)
    :param sort_columns: the sort order; the first column is the grouping column (the phone)
    :param chunk_rows: about how many rows a chunk holds (a chunk never splits a phone's rows,
        so one with very many rows is larger)
    :param spill_dir: where the temporary spill files go (default: the system's temp folder)
    :param exclude: columns not to read (e.g. :data:`VALIDATION_COLUMNS`)
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    key = sort_columns[0]
    # pre_buffer=False: with pre-buffering the reader keeps every column chunk it has read, so
    # its memory grows with the file (about 0.5 GiB more at 10M rows) instead of staying flat.
    parquet = pq.ParquetFile(source, pre_buffer=False)
    total = parquet.metadata.num_rows
    if total == 0:
        return
    columns = [name for name in parquet.schema_arrow.names if name not in set(exclude)]
    order = [(c, "ascending", "at_end") for c in sort_columns]
    if total <= chunk_rows:
        table = parquet.read(columns=columns)
        yield _sorted(table, order)
        return

    boundaries = _boundaries(parquet, key, total, chunk_rows)
    buckets = len(boundaries) + 2  # the last bucket holds the rows without a phone
    with tempfile.TemporaryDirectory(prefix="plan-chunks-", dir=spill_dir) as folder:
        writers: dict[int, Any] = {}
        schema = pa.schema([parquet.schema_arrow.field(name) for name in columns])
        try:
            for batch in parquet.iter_batches(batch_size=_READ_BATCH, columns=columns):
                phones = batch.column(key)
                bucket = _bucket_of(phones, boundaries, buckets)
                by_bucket = np.argsort(bucket, kind="stable")
                ordered = batch.take(pa.array(by_bucket))
                ids = bucket[by_bucket]
                cuts = np.flatnonzero(np.diff(ids)) + 1
                starts = np.concatenate(([0], cuts))
                ends = np.concatenate((cuts, [len(ids)]))
                for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
                    b = int(ids[start])
                    writer = writers.get(b)
                    if writer is None:
                        writer = ipc.new_stream(os.path.join(folder, f"{b:06d}.arrow"), schema)
                        writers[b] = writer
                    writer.write_batch(ordered.slice(start, end - start))
        finally:
            for writer in writers.values():
                writer.close()
        del writers
        for b in range(buckets):
            path = os.path.join(folder, f"{b:06d}.arrow")
            if not os.path.exists(path):
                continue
            with pa.memory_map(path) as source_map:
                table = ipc.open_stream(source_map).read_all()
            table = _sorted(table, order).combine_chunks()
            os.unlink(path)
            yield table


def _sorted(table: pa.Table, order: list[tuple[str, str, str]]) -> pa.Table:
    # Arrow's sort_indices is stable; nulls (and NaN) go last, as with pandas' sort_values.
    return table.take(pc.sort_indices(table, sort_keys=order))


def _boundaries(parquet: pq.ParquetFile, key: str, total: int, chunk_rows: int) -> np.ndarray:
    """Return sorted phone values that cut the file into buckets of about ``chunk_rows`` rows."""
    step = max(1, total // _SAMPLE_ROWS)
    sample: list[pa.Array] = []
    offset = 0
    for batch in parquet.iter_batches(batch_size=_READ_BATCH, columns=[key]):
        column = batch.column(0)
        first = (-offset) % step
        if first < len(column):
            picked = column.take(pa.array(np.arange(first, len(column), step))).drop_null()
            if len(picked):
                sample.append(picked)
        offset += len(column)
    if not sample:
        return np.array([], dtype=object)
    values = pa.concat_arrays(sample)
    values = values.take(pc.sort_indices(values))  # Arrow's sort: no Python compare per value
    pieces = max(1, -(-total // chunk_rows))
    cuts = values.take(pa.array((np.arange(1, pieces) * len(values)) // pieces, type=pa.int64()))
    return np.unique(np.asarray(cuts.to_numpy(zero_copy_only=False)))


def _bucket_of(phones: pa.Array, boundaries: np.ndarray, buckets: int) -> np.ndarray:
    """Return the bucket of each phone: the count of boundaries not above it; nulls last."""
    values = phones
    valid = np.asarray(values.is_valid().to_numpy(zero_copy_only=False))
    out = np.full(len(values), buckets - 1, dtype=np.int64)
    if valid.any():
        present = values.filter(pa.array(valid)) if values.null_count else values
        if len(boundaries):
            out[valid] = _search(boundaries, present)
        else:
            out[valid] = 0
    return out


def _search(boundaries: np.ndarray, values: pa.Array) -> np.ndarray:
    """``np.searchsorted(boundaries, values, side="right")`` for a string array without nulls.

    Normalised phones all have the same length: their UTF-8 bytes are then viewed as one
    fixed-width numpy array and compared in C (byte order is code point order, the order of
    Python's ``str``) instead of one Python comparison per value and step.
    """
    if pa.types.is_string(values.type) and len(values):
        offsets = np.frombuffer(values.buffers()[1], dtype=np.int32)[
            values.offset : values.offset + len(values) + 1
        ]
        width = int(offsets[1] - offsets[0])
        if width > 0 and (np.diff(offsets) == width).all() and all("\0" not in b for b in boundaries):
            raw = np.frombuffer(values.buffers()[2], dtype=np.uint8, count=len(values) * width,
                                offset=int(offsets[0]))  # fmt: skip
            if raw.all():  # no NUL byte (a fixed-width view ignores trailing NULs)
                encoded = np.array([b.encode("utf-8") for b in boundaries.tolist()])
                return np.searchsorted(encoded, raw.view(f"S{width}"), side="right")
    return np.searchsorted(boundaries, np.asarray(values.to_numpy(zero_copy_only=False)), side="right")


def records(table: pa.Table) -> list[dict[str, Any]]:
    """Return a table's rows as dicts of plain Python values (Decimal, date, str, None).

    The same values as ``table.to_pylist()``, built column by column: repeated values (tax
    types, dates, periods) are converted once through a dictionary encoding, decimals through
    their text. Several times faster than ``to_pylist`` or ``DataFrame.to_dict("records")``.
    """
    columns = [_pylist(table.column(i)) for i in range(table.num_columns)]
    return _row_builder(tuple(table.column_names))(columns)


@lru_cache(maxsize=64)
def _row_builder(names: tuple[str, ...]) -> Callable[[list[list[Any]]], list[dict[str, Any]]]:
    """Return a function turning column lists into row dicts with a dict display.

    ``{"a": _0, "b": _1}`` in a comprehension builds a row about twice as fast as
    ``dict(zip(names, values))``; the keys are the column names' ``repr`` (plain literals).
    """
    if not names:
        return lambda columns: []
    args = ", ".join(f"_{i}" for i in range(len(names)))
    body = ", ".join(f"{name!r}: _{i}" for i, name in enumerate(names))
    namespace: dict[str, Any] = {}
    exec(
        f"def build(columns):\n    return [{{{body}}} for {args}{',' if len(names) == 1 else ''} in zip(*columns)]",
        namespace,
    )
    return namespace["build"]


def _pylist(column: pa.ChunkedArray | pa.Array) -> list[Any]:
    kind = column.type
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_decimal(kind)
            or pa.types.is_date(kind)):  # fmt: skip
        return column.to_pylist()
    encoded = pc.dictionary_encode(column)
    dictionary = encoded.dictionary
    if len(dictionary) * 2 > len(column) and not pa.types.is_decimal(kind):
        return column.to_pylist()  # mostly distinct values: the dictionary does not pay
    if pa.types.is_decimal(kind):
        # Decimal(text) is the exact value (scale kept); several times faster than to_pylist.
        values: list[Any] = [
            None if s is None else Decimal(s) for s in dictionary.cast(pa.string()).to_pylist()
        ]
    else:
        values = dictionary.to_pylist()
    indices = encoded.indices
    if indices.null_count:
        values.append(None)
        indices = pc.fill_null(indices, len(values) - 1)
    return list(map(values.__getitem__, indices.to_numpy().tolist()))


def default_processes() -> int:
    """Return how many processes plan chunks, the task's own included: ``DUNNING_PLAN_PROCESSES``, else min(2, CPUs)."""
    configured = os.environ.get("DUNNING_PLAN_PROCESSES", "").strip()
    if configured:
        try:
            value = int(configured)
        except ValueError:
            raise ValueError(f"DUNNING_PLAN_PROCESSES must be an integer, got {configured!r}") from None
        return max(1, value)
    return max(1, min(2, os.cpu_count() or 1))


def map_ordered(
    job: Callable[..., Any],
    items: Iterable[tuple[Any, Mapping[str, Any]]],
    *,
    processes: int,
) -> Iterator[tuple[Any, Any]]:
    """Yield ``(item, job(item, **kwargs))`` for each ``(item, kwargs)``, in order, in ``processes`` processes.

    Chunks are independent once phone-sorted (a number never straddles two), so they can be
    planned side by side. ``job`` must be picklable; it is sent to each worker once. At most
    ``processes + 1`` items are in flight, so memory stays bounded however long ``items`` is;
    each kwargs mapping is built (e.g. store lookups) in this process just before its item is
    sent. Workers are started with ``spawn``: a fresh interpreter inherits no open database
    connection, socket or lock of this process (safe in an Airflow task that holds both). An
    exception raised in a worker is raised here, for the item it failed on. With
    ``processes <= 1`` everything runs in this process.

    :param job: called as ``job(item, **kwargs)``
    :param items: pairs of an item (e.g. an Arrow table) and the keyword arguments for it
    :param processes: processes running jobs, this one included: it runs every
        ``processes``-th item itself while ``processes - 1`` workers run the others (no busy
        process more than there are CPUs: a worker's result costs this process as much to
        unpickle and consume as a share of the jobs)
    """
    if processes <= 1:
        for item, kwargs in items:
            yield item, job(item, **kwargs)
        return
    import multiprocessing
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        processes - 1, mp_context=context, initializer=_set_job, initargs=(job,)
    ) as pool:
        # Start the workers now (they import the planner while this process reads the first chunk).
        pool.submit(int)
        # (item, future) for a worker's item, (item, kwargs) for one run here when it is due:
        # by then the items after it are with the workers, which work while this process does.
        # This process takes one item in ``processes`` (every other one beside one worker);
        # one in three measured no better.
        pending: deque[tuple[Any, Any, bool]] = deque()
        try:
            for n, (item, kwargs) in enumerate(items):
                if n % processes == 0:
                    pending.append((item, dict(kwargs), True))
                else:
                    pending.append((item, pool.submit(_run_job, item, dict(kwargs)), False))
                if len(pending) > processes:
                    yield _resolve(job, *pending.popleft())
            while pending:
                yield _resolve(job, *pending.popleft())
        finally:
            for _, future, local in pending:
                if not local:
                    future.cancel()


def _resolve(job: Callable[..., Any], item: Any, pending: Any, local: bool) -> tuple[Any, Any]:
    return item, (job(item, **pending) if local else pending.result())


_JOB: Callable[..., Any] | None = None


def _set_job(job: Callable[..., Any]) -> None:
    global _JOB
    _JOB = job


def _run_job(item: Any, kwargs: dict[str, Any]) -> Any:
    assert _JOB is not None, "worker started without a job"
    return _JOB(item, **kwargs)


def worker_peak_rss_mib() -> float:
    """Return the peak resident memory of the largest finished worker process, in MiB (Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
