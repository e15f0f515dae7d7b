"""Stream the result of a SQL query into one Parquet file in constant memory (no Airflow here).

The same function serves the three source engines. By default each uses an Arrow-native reader
when its library is installed (columns arrive as Arrow arrays, no Python object per value):

* PostgreSQL: ADBC (``adbc-driver-postgresql``, libpq binary ``COPY``), record batches of
  about 16 MiB. Fallback: psycopg ``COPY (<query>) TO STDOUT (FORMAT csv)`` parsed by pyarrow's
  streaming CSV reader (also used for column types ADBC does not map, e.g. interval, json).
* MariaDB / MySQL: ConnectorX (``connectorx``, Rust, binary protocol) as an Arrow stream of
  ``chunk_rows`` batches. Fallback: a PyMySQL streaming cursor (types ConnectorX cannot carry
  exactly: ``DECIMAL`` with more than 10 decimals, a bare ``NULL`` column, JSON, BIT, TIME).
  ConnectorX holds decimals in 28 digits: a larger value fails the extract, never rounds.
* SQLite: ADBC (``adbc-driver-sqlite``), batches of ``chunk_rows``. ADBC infers a column's type
  from the first batch; if a later value has another type (SQLite columns may mix them) the
  extract starts again with the sqlite3 cursor, which converts value by value.

Bind parameters are rendered into the query by the driver's own quoting for ConnectorX
(PyMySQL ``mogrify``) and PostgreSQL (psycopg ``ClientCursor.mogrify``), bound for SQLite;
never string formatting. The query is first described (``SELECT * FROM (<query>) LIMIT 0``)
through the SQLAlchemy engine, so errors name the table and column the same way on every path.
Which reader ran, and why a fallback was taken, is logged (``include.dunning.extraction``).

Types: integers -> int64, exact numerics -> decimal128(p, s) (unconstrained PostgreSQL
``numeric`` -> string, exact), floats -> float64, dates -> date32, timestamps ->
timestamp[us], everything else -> string. SQLite has no result types: columns are inferred
from the first chunk; pass ``dtypes`` (column -> type) to pin them, for instance to get the same
Parquet schema from every engine (``load_dtypes`` reads them from a YAML file next to the SQL).

Incremental extracts: ``watermark_column`` makes the extract track the highest value of that
column; ``read_watermark_state`` / ``save_watermark_state`` keep it in the dunning store (tables
``extract_watermark`` and ``extract_watermark_seen``), and the query gets the bind parameter
``:since`` (``None`` on the first run, so write ``(:since IS NULL OR updated_at > :since)``).
A strict ``>`` misses rows committed late with an older change timestamp; with a ``lookback``
(overlap window) ``:since`` is the watermark minus the lookback, and rows already extracted in
that window are dropped by their key (``key_columns``) and change value, so each version of a
row is delivered once (see ``since_with_lookback`` and ``Overlap``).

Errors from the driver become ``ExtractionError`` with the table and column named (a missing
column is reported as such) and without the connection URL or password.
"""

from __future__ import annotations

import io
import itertools
import logging
import queue
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa

__all__ = [
    "ExtractResult",
    "ExtractionError",
    "Overlap",
    "WatermarkState",
    "arrow_type",
    "extract_to_parquet",
    "format_watermark",
    "load_dtypes",
    "read_watermark",
    "read_watermark_state",
    "save_watermark",
    "save_watermark_state",
    "since_with_lookback",
    "stream_query_to_parquet",
    "watermark_schema_path",
]

WATERMARK_DDL = Path(__file__).resolve().parent.parent / "sql" / "dunning_store" / "extract_watermark.sql"
TypeSpec = pa.DataType | str
log = logging.getLogger(__name__)


class ExtractionError(RuntimeError):
    """The extract failed; the message names the table / column and never holds credentials.

    ``permanent`` is true for errors a retry cannot fix (missing column or table, bad SQL).
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class ExtractResult:
    """What an extract wrote: the row count, the Parquet schema and the new watermark (text).

    ``reader`` names the path that read the rows (``adbc``, ``connectorx``, ``copy-csv``,
    ``cursor``); with an ``Overlap``, ``skipped`` counts the rows dropped as already extracted
    and ``seen`` holds the (key, change value) pairs of the new overlap window.
    """

    rows: int
    schema: pa.Schema
    watermark: str | None = None
    reader: str = ""
    skipped: int = 0
    seen: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True)
class Overlap:
    """Re-read a window below the watermark and drop what was already extracted.

    :param key_columns: the columns that identify a row (a version is key + change value)
    :param lookback: the width of the window: a ``timedelta`` for timestamp or date
        watermarks, a number for integer ones
    :param previous: the watermark and the (key, change value) pairs seen in the window by the
        previous run (``read_watermark_state``)
    """

    key_columns: Sequence[str]
    lookback: timedelta | int
    previous: WatermarkState | None = None


@dataclass(frozen=True)
class WatermarkState:
    """A stored watermark (text) and the row versions extracted in its overlap window."""

    watermark: str | None = None
    seen: frozenset[tuple[str, str]] = field(default_factory=frozenset)


# --------------------------------------------------------------------------------------
# Types
# --------------------------------------------------------------------------------------

_NAMED_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "str": pa.string(),
    "text": pa.string(),
    "int": pa.int64(),
    "int64": pa.int64(),
    "integer": pa.int64(),
    "int32": pa.int32(),
    "float": pa.float64(),
    "float64": pa.float64(),
    "double": pa.float64(),
    "bool": pa.bool_(),
    "boolean": pa.bool_(),
    "date": pa.date32(),
    "date32": pa.date32(),
    "timestamp": pa.timestamp("us"),
    "datetime": pa.timestamp("us"),
}


def arrow_type(spec: TypeSpec) -> pa.DataType:
    """Return the Arrow type for a spec: an Arrow type, or a name such as ``"string"``,
    ``"int64"``, ``"date"``, ``"timestamp"``, ``"float64"``, ``"bool"``, ``"decimal(14,2)"``."""
    if isinstance(spec, pa.DataType):
        return spec
    text = str(spec).strip().lower().replace(" ", "")
    if text in _NAMED_TYPES:
        return _NAMED_TYPES[text]
    match = re.fullmatch(r"(?:decimal|numeric|decimal128)\((\d+),(\d+)\)", text)
    if match:
        return pa.decimal128(int(match[1]), int(match[2]))
    raise ValueError(f"unknown column type {spec!r}")


def _resolve_dtypes(dtypes: Mapping[str, TypeSpec] | None) -> dict[str, pa.DataType]:
    return {name: arrow_type(spec) for name, spec in (dtypes or {}).items()}


def load_dtypes(path: str | Path) -> dict[str, str]:
    """Return the column -> type mapping of a YAML file (``column: type`` lines).

    The file sits next to the query (``levy/overdue_liabilities.sql`` ->
    ``levy/overdue_liabilities.types.yaml``) and pins the Parquet schema, so the same query gives
    the same schema on SQLite, PostgreSQL and MariaDB. Every type must be one ``arrow_type``
    knows; an unknown one fails here with the file and column named.
    """
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read the column types: {exc}") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected a mapping of column: type")
    out: dict[str, str] = {}
    for column, spec in data.items():
        try:
            arrow_type(str(spec))
        except ValueError:
            raise ValueError(f"{path}: column {column}: unknown type {spec!r}") from None
        out[str(column)] = str(spec)
    return out


# PostgreSQL type OIDs (pg_type) -> Arrow.
_PG_INT = {20, 21, 23, 26}  # int8, int2, int4, oid
_PG_FLOAT = {700, 701}
_PG_TYPES: dict[int, pa.DataType] = {
    16: pa.bool_(),
    1082: pa.date32(),
    1114: pa.timestamp("us"),
    1184: pa.timestamp("us", tz="UTC"),
}


def _pg_type(column: Any) -> pa.DataType:
    oid = column.type_code
    if oid in _PG_INT:
        return pa.int64()
    if oid in _PG_FLOAT:
        return pa.float64()
    if oid == 1700:  # numeric: exact with its declared precision, else exact text
        if column.precision is not None and column.scale is not None and column.precision <= 38:
            return pa.decimal128(column.precision, column.scale)
        return pa.string()
    return _PG_TYPES.get(oid, pa.string())


def _mysql_type(column: tuple) -> pa.DataType:
    from pymysql.constants import FIELD_TYPE as F

    code, length, scale = column[1], column[4], column[5]
    if code in (F.TINY, F.SHORT, F.LONG, F.LONGLONG, F.INT24, F.YEAR, F.BIT):
        return pa.int64()
    if code in (F.FLOAT, F.DOUBLE):
        return pa.float64()
    if code in (F.DECIMAL, F.NEWDECIMAL):
        # PyMySQL reports the display length: digits plus a sign and a decimal point.
        scale = scale or 0
        precision = (length or 40) - (1 if scale else 0) - 1
        return pa.decimal128(max(1, min(38, precision)), min(scale, 38))
    if code in (F.DATE, F.NEWDATE):
        return pa.date32()
    if code in (F.DATETIME, F.TIMESTAMP):
        return pa.timestamp("us")
    return pa.string()


# --------------------------------------------------------------------------------------
# Python values -> Arrow
# --------------------------------------------------------------------------------------


def _as_text(value: Any, target: pa.DataType) -> str:
    if isinstance(value, float) and pa.types.is_decimal(target):
        return repr(round(value, target.scale))  # SQLite NUMERIC arithmetic is floating point
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, datetime) and pa.types.is_date(target):
        return value.date().isoformat()
    if isinstance(value, date | datetime):
        return value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _column(values: list | tuple, target: pa.DataType) -> pa.Array:
    """Return the values as an Arrow array of the target type (exact, or an error)."""
    if pa.types.is_integer(target):  # pyarrow would truncate 12.5 to 12 without a word
        bad = next((v for v in values if isinstance(v, float) and not v.is_integer()), None)
        if bad is not None:
            raise pa.ArrowInvalid(f"{bad!r} is not a whole number (pin the column's type with dtypes)")
    try:
        return pa.array(values, type=target)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        pass
    if pa.types.is_string(target):
        return pa.array([None if v is None else _as_text(v, target) for v in values], type=pa.string())
    try:
        inferred = pa.array(values)
        if not pa.types.is_floating(inferred.type) or pa.types.is_floating(target):
            return inferred.cast(target)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError):
        pass
    text = pa.array([None if v is None else _as_text(v, target) for v in values], type=pa.string())
    return text.cast(target)


def _infer_type(values: list | tuple) -> pa.DataType:
    """Return the type of a column from values (SQLite): int64, float64, string, ..."""
    try:
        inferred = pa.array(values).type
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        return pa.string()
    if pa.types.is_null(inferred) or pa.types.is_binary(inferred):
        return pa.string()
    if pa.types.is_integer(inferred):
        return pa.int64()
    if pa.types.is_decimal(inferred):
        return pa.decimal128(38, max(inferred.scale, 0))
    return inferred


def _storage(array: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Return the storage of an extension array (ADBC's opaque PostgreSQL numeric is text)."""
    if isinstance(array.type, pa.ExtensionType) or hasattr(array.type, "storage_type"):
        if isinstance(array, pa.ChunkedArray):
            return pa.chunked_array([c.storage for c in array.chunks], type=array.type.storage_type)
        return array.storage
    return array


def _conform_column(array: pa.Array, target: pa.DataType) -> pa.Array:
    """Return an Arrow column as the target type: a vectorised cast, else value by value (exact)."""
    array = _storage(array)
    if array.type == target:
        return array
    if pa.types.is_large_string(array.type):
        array = array.cast(pa.string())
        if target == pa.string():
            return array
    try:
        if pa.types.is_floating(array.type) and pa.types.is_integer(target):
            raise pa.ArrowInvalid("float to integer")  # only exact values: see _column
        return array.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return _column(array.to_pylist(), target)


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """Return a batch with the columns of ``schema`` (same names, in order) and its types."""
    if batch.schema.equals(schema):
        return batch
    return pa.RecordBatch.from_arrays(
        [_named(f.name, _conform_column, batch.column(i), f.type) for i, f in enumerate(schema)],
        schema=schema,
    )


def _named(name: str, convert: Callable[..., pa.Array], values: Any, target: pa.DataType) -> pa.Array:
    """Run a column conversion; a value that does not fit names the column."""
    try:
        return convert(values, target)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise pa.ArrowInvalid(f"column {name} ({target}): {exc}") from None


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------

_TABLE_REF = re.compile(r"\b(?:FROM|JOIN)\s+([A-Za-z_][\w.]*)(?:\s+(?:AS\s+)?([A-Za-z_]\w*))?", re.IGNORECASE)
_NOT_ALIASES = {
    "on", "where", "left", "right", "inner", "outer", "full", "cross", "join", "group", "order",
    "limit", "union", "natural", "using", "having", "window", "lateral", "as",
}  # fmt: skip
_MISSING_COLUMN = (
    re.compile(r'column "?([\w.]+?)"? does not exist'),  # PostgreSQL
    re.compile(r"Unknown column '([^']+)'"),  # MariaDB / MySQL
    re.compile(r"no such column: ([\w.]+)"),  # SQLite
)
_MISSING_TABLE = (
    re.compile(r'relation "([^"]+)" does not exist'),
    re.compile(r"Table '([^']+)' doesn't exist"),
    re.compile(r"no such table: ([\w.]+)"),
)


def _tables(sql: str) -> dict[str, str]:
    """Return {alias or name: table} for the tables a query reads."""
    out: dict[str, str] = {}
    for match in _TABLE_REF.finditer(re.sub(r"--[^\n]*", "", sql)):
        table, alias = match[1], match[2]
        out[table.split(".")[-1].lower()] = table
        if alias and alias.lower() not in _NOT_ALIASES:
            out[alias.lower()] = table
    return out


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)  # any URL with a password


def _mask_digit_runs(text: str) -> str:
    """Mask quoted values and runs of 7+ digits (a phone or id in Arrow's message) as the logs do."""
    from include.dunning.phones import mask

    text = re.sub(r"'([^']*)'", lambda m: f"'{mask(m.group(1))}'", text)
    return re.sub(r"(?<![*\d])\d{7,}", lambda m: mask(m.group()), text)


def _secrets(engine: sa.Engine) -> list[str]:
    from urllib.parse import quote

    password = engine.url.password
    if not password:
        return []
    password = str(password)
    return sorted({password, quote(password, safe=""), quote(password)}, key=len, reverse=True)


def _driver_message(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    args = getattr(orig, "args", ())
    if len(args) == 2 and isinstance(args[0], int):  # PyMySQL: (code, message)
        return f"{args[1]} (error {args[0]})"
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__


def _explain(exc: BaseException, sql: str, engine: sa.Engine, label: str) -> ExtractionError:
    """Return an ExtractionError for a driver error: table and column named, no credentials."""
    message = _scrub(_driver_message(exc), _secrets(engine))
    tables = _tables(sql)
    for pattern in _MISSING_COLUMN:
        match = pattern.search(message)
        if match:
            ref = match[1]
            qualifier, _, column = ref.rpartition(".")
            table = tables.get(qualifier.lower()) if qualifier else None
            where = (
                f"table {table}"
                if table
                else "one of the tables " + ", ".join(sorted(set(tables.values())))
                if tables
                else "the query's tables"
            )
            return ExtractionError(
                f"{label}: column {column} is missing in {where} ({engine.dialect.name} says: {message})",
                permanent=True,
            )
    for pattern in _MISSING_TABLE:
        match = pattern.search(message)
        if match:
            return ExtractionError(
                f"{label}: table {match[1]} does not exist ({engine.dialect.name} says: {message})",
                permanent=True,
            )
    permanent = any(
        word in type(getattr(exc, "orig", exc)).__name__
        for word in ("ProgrammingError", "SyntaxError", "UndefinedFunction", "InvalidTextRepresentation")
    )
    return ExtractionError(f"{label} failed on {engine.dialect.name}: {message}", permanent=permanent)


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


class _Writer:
    """Collect batches into row groups of about ``chunk_rows`` rows and track the watermark.

    Row groups are encoded and written by a background thread (pyarrow releases the GIL), so
    reading the next rows overlaps with writing; at most two row groups wait in between, which
    keeps memory flat. With an ``Overlap``, rows already extracted are dropped here.
    """

    def __init__(
        self,
        sink_file: str | Path | IO[bytes],
        schema: pa.Schema,
        chunk_rows: int,
        watermark: str | None,
        overlap: Overlap | None = None,
    ) -> None:
        self.sink_file = sink_file
        self.writer: pq.ParquetWriter | None = None  # opened with the first row group
        self.schema = schema
        self.chunk_rows = chunk_rows
        self.pending: list[pa.RecordBatch] = []
        self.pending_rows = 0
        self.rows = 0
        self.watermark_column = watermark
        self.high: Any = None
        self.overlap = overlap
        self.skipped = 0
        self.candidates: list[tuple[Any, tuple[str, str]]] = []
        self.old_high: Any = None
        self.lookback: Any = None
        self.prev_seen: frozenset[tuple[str, str]] = frozenset()
        if overlap is not None:
            self._check_overlap(overlap)
        self.queue: queue.Queue[pa.Table | None] = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="parquet-writer", daemon=True)
        self.thread.start()

    def _check_overlap(self, overlap: Overlap) -> None:
        column = self.watermark_column
        if column is None:
            raise ExtractionError("an overlap (lookback) needs a watermark column", permanent=True)
        kind = self.schema.field(column).type
        if not (pa.types.is_temporal(kind) or pa.types.is_integer(kind) or pa.types.is_decimal(kind)):
            raise ExtractionError(
                f"watermark column {column} is {kind}: a lookback needs a timestamp, date or integer "
                f"column (pin its type with dtypes)",
                permanent=True,
            )
        missing = [c for c in overlap.key_columns if c not in self.schema.names]
        if not overlap.key_columns or missing:
            raise ExtractionError(
                f"overlap key column(s) {', '.join(missing) or '(none given)'} not among the query's "
                f"columns ({', '.join(self.schema.names)})",
                permanent=True,
            )
        lookback = overlap.lookback
        if pa.types.is_temporal(kind) and isinstance(lookback, int | float):
            lookback = timedelta(seconds=lookback)
        if not pa.types.is_temporal(kind) and isinstance(lookback, timedelta):
            raise ExtractionError(
                f"watermark column {column} is {kind}: give the lookback as a number", permanent=True
            )
        self.lookback = lookback
        previous = overlap.previous
        if previous is not None and previous.watermark is not None:
            self.old_high = _parse_watermark(previous.watermark)
            self.prev_seen = previous.seen

    def _run(self) -> None:
        while True:
            table = self.queue.get()
            if table is None:
                return
            if self.error is None:
                try:
                    self._open(table)
                    self.writer.write_table(table, row_group_size=max(self.chunk_rows, table.num_rows))
                except BaseException as exc:  # handed to the reading thread
                    self.error = exc

    def _open(self, first: pa.Table | None) -> None:
        """Open the Parquet file; dictionary-encode only the columns where it pays.

        A column with many distinct values (ids, names, phones, amounts) costs time to
        dictionary-encode and gains nothing, so the first row group decides per column.
        """
        if self.writer is not None:
            return
        dictionary: bool | list[str] = True
        if first is not None and first.num_rows >= 1000:
            dictionary = [
                name
                for name, column in zip(first.column_names, first.columns, strict=True)
                if pc.count_distinct(column).as_py() <= first.num_rows // 4
            ]
        self.writer = pq.ParquetWriter(
            self.sink_file, self.schema, compression="snappy", use_dictionary=dictionary
        )

    def _raise_error(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def _versions(self, batch: pa.RecordBatch) -> list[tuple[str, str]]:
        """Return (key, change value) of each row, as text (the form kept in the store)."""
        assert self.overlap is not None and self.watermark_column is not None
        keys = [batch.column(c).to_pylist() for c in self.overlap.key_columns]
        changes = batch.column(self.watermark_column).to_pylist()
        return [
            (
                "\x1f".join("" if v is None else (format_watermark(v) or "") for v in values),
                format_watermark(c) or "",
            )
            for values, c in zip(zip(*keys, strict=True), changes, strict=True)
        ]

    def _apply_overlap(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        assert self.overlap is not None and self.watermark_column is not None
        changes = batch.column(self.watermark_column)
        if self.high is not None:  # versions in the window below the running high: seen next time
            low = pa.scalar(self.high - self.lookback, type=changes.type)
            near = batch.filter(pc.fill_null(pc.greater_equal(changes, low), False))
            if near.num_rows:
                values = near.column(self.watermark_column).to_pylist()
                self.candidates.extend(zip(values, self._versions(near), strict=True))
            if len(self.candidates) > 4 * self.chunk_rows:
                self._prune()
        if not self.prev_seen or self.old_high is None:
            return batch
        old = pa.scalar(self.old_high, type=changes.type)
        maybe = pc.fill_null(pc.less_equal(changes, old), False)
        if not pc.any(maybe).as_py():
            return batch
        positions = pc.indices_nonzero(maybe).to_pylist()
        versions = self._versions(batch.take(pa.array(positions, type=pa.int64())))
        drop = {p for p, v in zip(positions, versions, strict=True) if v in self.prev_seen}
        if not drop:
            return batch
        self.skipped += len(drop)
        keep = pa.array([i not in drop for i in range(batch.num_rows)], type=pa.bool_())
        return batch.filter(keep)

    def _prune(self) -> None:
        if self.high is None or self.overlap is None:
            return
        low = self.high - self.lookback
        self.candidates = [c for c in self.candidates if c[0] is not None and c[0] >= low]

    def seen(self) -> frozenset[tuple[str, str]]:
        """Return the row versions in the window below the final watermark (after ``close``)."""
        self._prune()
        return frozenset(version for _, version in self.candidates)

    def add(self, batch: pa.RecordBatch) -> None:
        self._raise_error()
        if batch.num_rows == 0:
            return
        if self.watermark_column is not None:
            top = pc.max(batch.column(self.watermark_column)).as_py()
            if top is not None and (self.high is None or top > self.high):
                self.high = top
        if self.overlap is not None:
            batch = self._apply_overlap(batch)
            if batch.num_rows == 0:
                return
        self.pending.append(batch)
        self.pending_rows += batch.num_rows
        self.rows += batch.num_rows
        if self.pending_rows >= self.chunk_rows:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            table = pa.Table.from_batches(self.pending, schema=self.schema)
            self.pending = []
            self.pending_rows = 0
            self.queue.put(table)
            self._raise_error()

    def close(self) -> None:
        """Write what is pending and close the file (one with the columns if there were no rows)."""
        self.flush()
        self._stop()
        self._raise_error()
        self._open(None)
        self.writer.close()

    def _stop(self) -> None:
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()

    def abort(self) -> None:
        """Stop the writing thread and close the file, if open (after an error)."""
        self._stop()
        if self.writer is not None and self.writer.is_open:
            self.writer.close()


def _parse_watermark(text: str) -> Any:
    """Return the value of a stored watermark: int, Decimal, datetime or date."""
    text = text.strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"-?\d+\.\d+", text):
        return Decimal(text)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return date.fromisoformat(text)
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"unreadable watermark {text!r}") from None


def since_with_lookback(watermark: str | None, lookback: timedelta | int | None) -> str | None:
    """Return the ``:since`` of the next run: the stored watermark minus the lookback (text).

    ``None`` before the first run. A timestamp or date watermark takes a ``timedelta``, an
    integer one a number.
    """
    if watermark is None:
        return None
    if not lookback:
        return watermark
    value = _parse_watermark(watermark)
    if isinstance(value, date) and isinstance(lookback, int | float):
        lookback = timedelta(seconds=lookback)
    if isinstance(value, int | Decimal) and isinstance(lookback, timedelta):
        raise ValueError(f"watermark {watermark!r} is a number: give the lookback as a number")
    return format_watermark(value - lookback)


def format_watermark(value: Any) -> str | None:
    """Return a watermark value as the text kept in the store (and bound as ``:since``)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="microseconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


# --------------------------------------------------------------------------------------
# PostgreSQL: COPY TO STDOUT -> streaming CSV reader
# --------------------------------------------------------------------------------------


class _CopyStream(io.RawIOBase):
    """A read-only file over the data blocks of a psycopg ``Copy`` (for pyarrow's CSV reader).

    psycopg yields about one row per block; reads are filled up to the size asked for, so that
    pyarrow parses large blocks.
    """

    def __init__(self, blocks: Iterator[bytes]) -> None:
        self.blocks = blocks
        self.buffer = bytearray()
        self.done = False

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        want = len(target)
        buffer = self.buffer
        while len(buffer) < want and not self.done:
            block = next(self.blocks, None)
            if block is None:
                self.done = True
            else:
                buffer += block
        size = min(want, len(buffer))
        target[:size] = buffer[:size]
        del buffer[:size]
        return size


def _render_pg(engine: sa.Engine, raw: Any, sql: str, params: Mapping[str, Any]) -> str:
    """Return the query with its bind parameters rendered as literals by psycopg."""
    import psycopg

    compiled = sa.text(sql).compile(dialect=engine.dialect)
    values = compiled.construct_params(dict(params))
    query = compiled.string
    if not values:
        query = query.replace("%%", "%")
        return query.strip().rstrip(";")
    return psycopg.ClientCursor(raw).mogrify(query, values).strip().rstrip(";")


def _extract_postgres(
    engine: sa.Engine,
    sql: str,
    params: Mapping[str, Any],
    open_writer: Callable[[pa.Schema], _Writer],
    dtypes: dict[str, pa.DataType],
    block_bytes: int,
) -> _Writer:
    import pyarrow.csv as pcsv

    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        query = _render_pg(engine, raw, sql, params)
        with raw.cursor() as cur:
            cur.execute("SET LOCAL DateStyle TO ISO, YMD")
            cur.execute("SET LOCAL IntervalStyle TO iso_8601")
            cur.execute(f"SELECT * FROM (\n{query}\n) AS extract_query LIMIT 0")  # noqa: S608 - our SQL, values quoted by psycopg
            names = [c.name for c in cur.description]
            if len(set(names)) != len(names):
                raise ExtractionError(f"duplicate column names in the query: {names}", permanent=True)
            types = [dtypes.get(c.name, _pg_type(c)) for c in cur.description]
            schema = pa.schema(list(zip(names, types, strict=True)))
            writer = open_writer(schema)
            read_types = dict(zip(names, types, strict=True))  # timestamptz text carries its offset
            with cur.copy(f"COPY (\n{query}\n) TO STDOUT (FORMAT csv)") as copy:
                blocks = iter(copy)
                first = next(blocks, None)
                if first is None:  # no rows (pyarrow refuses an empty CSV)
                    return writer
                reader = pcsv.open_csv(
                    _CopyStream(itertools.chain([first], blocks)),
                    read_options=pcsv.ReadOptions(column_names=names, block_size=block_bytes),
                    parse_options=pcsv.ParseOptions(newlines_in_values=True),
                    convert_options=pcsv.ConvertOptions(
                        column_types=read_types,
                        strings_can_be_null=True,
                        quoted_strings_can_be_null=False,
                        null_values=[""],
                        true_values=["t"],
                        false_values=["f"],
                    ),
                )
                for batch in reader:
                    writer.add(batch)
    return writer


# --------------------------------------------------------------------------------------
# Other engines: streaming cursor -> Arrow columns
# --------------------------------------------------------------------------------------


def _raw_text_decoders(raw: Any) -> dict | None:
    """On PyMySQL, make decimals and dates arrive as text (parsed by Arrow); return the old map."""
    decoders = getattr(raw, "decoders", None)
    if not isinstance(decoders, dict):
        return None
    from pymysql.constants import FIELD_TYPE as F

    fast = dict(decoders)
    for code in (F.DECIMAL, F.NEWDECIMAL, F.DATE, F.NEWDATE, F.DATETIME, F.TIMESTAMP):
        fast.pop(code, None)
    raw.decoders = fast
    return decoders


def _extract_cursor(
    engine: sa.Engine,
    sql: str,
    params: Mapping[str, Any],
    open_writer: Callable[[pa.Schema], _Writer],
    dtypes: dict[str, pa.DataType],
    chunk_rows: int,
) -> _Writer:
    mysql = engine.dialect.name in ("mysql", "mariadb")
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        saved = _raw_text_decoders(raw) if mysql else None
        try:
            result = conn.execution_options(stream_results=True, yield_per=chunk_rows).execute(
                sa.text(sql), dict(params)
            )
            names = list(result.keys())
            if len(set(names)) != len(names):
                raise ExtractionError(f"duplicate column names in the query: {names}", permanent=True)
            description = result.cursor.description if mysql and result.cursor is not None else None
            writer: _Writer | None = None
            types: list[pa.DataType] | None = None
            if description is not None or len(dtypes) >= len(names):
                types = [
                    dtypes.get(n, _mysql_type(d) if description is not None else pa.string())
                    for n, d in zip(names, description or [None] * len(names), strict=True)
                ]
            for part in result.partitions(chunk_rows):
                columns = list(zip(*part, strict=True))
                if types is None:
                    types = [dtypes.get(n) or _infer_type(col) for n, col in zip(names, columns, strict=True)]
                if writer is None:
                    writer = open_writer(pa.schema(list(zip(names, types, strict=True))))
                arrays = [_named(n, _column, col, t) for n, col, t in zip(names, columns, types, strict=True)]
                writer.add(pa.RecordBatch.from_arrays(arrays, schema=writer.schema))
            if writer is None:  # no rows: still a file with the query's columns
                types = types or [dtypes.get(n, pa.string()) for n in names]
                writer = open_writer(pa.schema(list(zip(names, types, strict=True))))
            result.close()
        finally:
            if saved is not None:
                raw.decoders = saved
    return writer


# --------------------------------------------------------------------------------------
# Arrow-native readers: ADBC (PostgreSQL, SQLite), ConnectorX (MariaDB / MySQL)
# --------------------------------------------------------------------------------------

# PostgreSQL types ADBC maps onto what _pg_type promises (bool, integers, floats, numeric,
# text-like, date, timestamp, timestamptz); anything else is read with COPY csv.
_ADBC_PG_OIDS = {16, 19, 20, 21, 23, 25, 26, 700, 701, 1042, 1043, 1082, 1114, 1184, 1700}


class _Fallback(Exception):
    """The Arrow reader cannot do this query (a type, a changing column type): use the other."""


def _query_text(sql: str) -> str:
    return sql.strip().rstrip(";").strip()


def _describe(engine: sa.Engine, sql: str, params: Mapping[str, Any]) -> tuple[list[str], Any]:
    """Return the column names and the DB-API description of a query, without running it.

    Errors (missing table or column, bad SQL) come from the engine's own driver here, so they
    read the same whichever reader then runs the query. ``sql`` is already rendered (no bind
    parameters) for PostgreSQL.
    """
    wrapped = f"SELECT * FROM (\n{_query_text(sql)}\n) extract_query LIMIT 0"  # noqa: S608 - our SQL
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            with conn.connection.dbapi_connection.cursor() as cur:
                cur.execute(wrapped)
                description = cur.description
                names = [c.name for c in description]
        else:
            result = conn.execute(sa.text(wrapped), dict(params))
            names = list(result.keys())
            description = result.cursor.description if result.cursor is not None else None
            result.close()
    if len(set(names)) != len(names):
        raise ExtractionError(f"duplicate column names in the query: {names}", permanent=True)
    return names, description


def _pg_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _adbc_uri(engine: sa.Engine, scheme: str) -> str:
    url = engine.url.set(drivername=scheme)
    if scheme == "mysql":
        url = url.set(query={})  # charset and driver options are PyMySQL's, not ConnectorX's
    return url.render_as_string(hide_password=False)


def _render_mysql(engine: sa.Engine, sql: str, params: Mapping[str, Any]) -> str:
    """Return the query with its bind parameters quoted by PyMySQL (for ConnectorX)."""
    compiled = sa.text(sql).compile(dialect=engine.dialect)
    values = compiled.construct_params(dict(params))
    args: Any = [values[n] for n in compiled.positiontup or []] if compiled.positional else values
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        with raw.cursor() as cur:
            return _query_text(cur.mogrify(compiled.string, args or ({} if not compiled.positional else ())))


def _mysql_fast_type_ok(column: tuple) -> bool:
    """Whether ConnectorX carries a MariaDB result column exactly."""
    from pymysql.constants import FIELD_TYPE as F

    code = column[1]
    if code in (F.DECIMAL, F.NEWDECIMAL):
        return _mysql_type(column).scale <= 10  # ConnectorX: decimal128(38, 10)
    return code in (
        F.TINY, F.SHORT, F.LONG, F.LONGLONG, F.INT24, F.YEAR, F.FLOAT, F.DOUBLE, F.DATE, F.NEWDATE,
        F.DATETIME, F.TIMESTAMP, F.VARCHAR, F.VAR_STRING, F.STRING, F.BLOB, F.TINY_BLOB,
        F.MEDIUM_BLOB, F.LONG_BLOB,
    )  # fmt: skip


def _batches(reader: Any) -> Iterator[pa.RecordBatch]:
    """Yield the record batches of a pyarrow ``RecordBatchReader``."""
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        yield batch


def _extract_adbc_postgres(
    engine: sa.Engine,
    sql: str,
    params: Mapping[str, Any],
    open_writer: Callable[[pa.Schema], _Writer],
    dtypes: dict[str, pa.DataType],
) -> _Writer:
    import adbc_driver_postgresql.dbapi as adbc_pg

    if engine.dialect.driver != "psycopg":
        raise _Fallback("the ADBC reader quotes parameters with psycopg 3 (postgresql+psycopg)")
    with engine.connect() as conn:
        query = _render_pg(engine, conn.connection.dbapi_connection, sql, params)
    names, description = _describe(engine, query, {})
    unsupported = [c.name for c in description if c.type_code not in _ADBC_PG_OIDS]
    if unsupported:
        raise _Fallback(f"column type(s) of {', '.join(unsupported)} not read by ADBC")
    if any(c.type_code == 1700 for c in description):
        # ADBC turns binary numerics into text on the client, slowly; the server's text is
        # cheaper, and Arrow parses it into decimal128 exactly.
        columns = ", ".join(
            f"{_pg_ident(c.name)}::text AS {_pg_ident(c.name)}" if c.type_code == 1700 else _pg_ident(c.name)
            for c in description
        )
        query = f"SELECT {columns} FROM (\n{query}\n) extract_query"  # noqa: S608 - our SQL
    schema = pa.schema([(n, dtypes.get(n, _pg_type(c))) for n, c in zip(names, description, strict=True)])
    writer = open_writer(schema)
    with adbc_pg.connect(_adbc_uri(engine, "postgresql")) as conn, conn.cursor() as cur:
        cur.execute(query)
        for batch in _batches(cur.fetch_record_batch()):
            writer.add(_conform(batch, schema))
    return writer


def _extract_connectorx_mysql(
    engine: sa.Engine,
    sql: str,
    params: Mapping[str, Any],
    open_writer: Callable[[pa.Schema], _Writer],
    dtypes: dict[str, pa.DataType],
    chunk_rows: int,
) -> _Writer:
    import connectorx as cx

    names, description = _describe(engine, sql, params)
    unsupported = [d[0] for d in description if not _mysql_fast_type_ok(d)]
    if unsupported:
        raise _Fallback(f"column type(s) of {', '.join(unsupported)} not read exactly by ConnectorX")
    query = _render_mysql(engine, sql, params)
    schema = pa.schema([(n, dtypes.get(n, _mysql_type(d))) for n, d in zip(names, description, strict=True)])
    writer = open_writer(schema)
    reader = cx.read_sql(_adbc_uri(engine, "mysql"), query, return_type="arrow_stream", batch_size=chunk_rows)
    for batch in _batches(reader):
        writer.add(_conform(batch, schema))
    return writer


def _sqlite_value(value: Any) -> Any:
    """Return a bind value as sqlite3 would store it (dates as ISO text, decimals as text)."""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bool):
        return int(value)
    return value


def _adbc_type(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_integer(kind):
        return pa.int64()
    if pa.types.is_floating(kind):
        return pa.float64()
    return pa.string()


def _extract_adbc_sqlite(
    engine: sa.Engine,
    sql: str,
    params: Mapping[str, Any],
    open_writer: Callable[[pa.Schema], _Writer],
    dtypes: dict[str, pa.DataType],
    chunk_rows: int,
) -> _Writer:
    import adbc_driver_sqlite.dbapi as adbc_sqlite

    database = engine.url.database
    if not database or database == ":memory:" or engine.url.query:
        raise _Fallback("an in-memory or URI database is read by the sqlite3 cursor")
    names, _ = _describe(engine, sql, params)
    compiled = sa.text(sql).compile(dialect=engine.dialect)
    values = compiled.construct_params(dict(params))
    positional = [_sqlite_value(values[name]) for name in compiled.positiontup or []]
    writer: _Writer | None = None
    with adbc_sqlite.connect(database) as conn, conn.cursor() as cur:
        cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(chunk_rows)})
        cur.execute(_query_text(compiled.string), parameters=positional or None)
        reader = cur.fetch_record_batch()
        try:
            for batch in _batches(reader):
                if writer is None:
                    writer = open_writer(
                        pa.schema(
                            [
                                (n, dtypes.get(n, _adbc_type(f.type)))
                                for n, f in zip(names, batch.schema, strict=True)
                            ]
                        )
                    )
                writer.add(_conform(batch, writer.schema))
        except OSError as exc:  # ADBC: a value of another type than the first batch had
            if "Type mismatch" in str(exc):
                raise _Fallback(
                    f"SQLite column types change within the result ({str(exc).strip()})"
                ) from None
            raise
        if writer is None:
            writer = open_writer(
                pa.schema(
                    [
                        (n, dtypes.get(n, _adbc_type(f.type)))
                        for n, f in zip(names, reader.schema, strict=True)
                    ]
                )
            )
    return writer


def _arrow_reader_available(kind: str) -> bool:
    import importlib.util

    module = {"postgresql": "adbc_driver_postgresql", "mysql": "connectorx", "sqlite": "adbc_driver_sqlite"}
    return kind in module and importlib.util.find_spec(module[kind]) is not None


def _restart(sink_file: str | Path | IO[bytes]) -> bool:
    """Prepare the sink for a second attempt; return whether it can be rewritten."""
    if isinstance(sink_file, str | Path):
        return True
    try:
        if sink_file.seekable():
            sink_file.seek(0)
            sink_file.truncate()
            return True
    except (OSError, ValueError):
        pass
    return False


# --------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------


def extract_to_parquet(
    engine: sa.Engine,
    sql: str,
    params: Mapping[str, Any] | None,
    sink_file: str | Path | IO[bytes],
    *,
    chunk_rows: int = 100_000,
    dtypes: Mapping[str, TypeSpec] | None = None,
    watermark_column: str | None = None,
    overlap: Overlap | None = None,
    label: str = "extract",
    reader: str = "auto",
    use_copy: bool | None = None,
) -> ExtractResult:
    """Run ``sql`` with ``params`` and write the result to ``sink_file`` (a path or binary file).

    :param engine: the source database (PostgreSQL through psycopg 3, MariaDB, SQLite, ...)
    :param sql: the query with ``:name`` bind parameters
    :param params: the bind parameters (values are bound or safely quoted, never formatted)
    :param sink_file: where the Parquet file goes; the caller renames it into place
    :param chunk_rows: rows per fetch and per Parquet row group (memory stays flat)
    :param dtypes: column -> Arrow type or name (``"string"``, ``"decimal(14,2)"``, ``"date"``...)
    :param watermark_column: a column whose highest value is returned as the new watermark
    :param overlap: with ``watermark_column``: the key columns, the lookback and the previous
        run's state; rows already extracted in the window are dropped
    :param label: what the error messages call this extract
    :param reader: ``"auto"`` (the Arrow-native reader when installed, else the driver's),
        ``"arrow"`` (the same, without falling back), ``"copy"`` (PostgreSQL COPY csv) or
        ``"cursor"`` (a streaming DB-API cursor)
    :param use_copy: deprecated alias: true is ``reader="copy"``, false ``reader="cursor"``
    """
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    if use_copy is not None:
        reader = "copy" if use_copy else "cursor"
    if reader not in ("auto", "arrow", "copy", "cursor"):
        raise ValueError(f"unknown reader {reader!r}")
    types = _resolve_dtypes(dtypes)
    params = dict(params or {})
    holder: dict[str, _Writer] = {}

    def open_writer(schema: pa.Schema) -> _Writer:
        if watermark_column is not None and watermark_column not in schema.names:
            raise ExtractionError(
                f"{label}: watermark column {watermark_column} is not among the query's columns "
                f"({', '.join(schema.names)})",
                permanent=True,
            )
        holder["writer"] = _Writer(sink_file, schema, chunk_rows, watermark_column, overlap)
        return holder["writer"]

    kind = engine.dialect.name
    kind = "mysql" if kind == "mariadb" else kind
    psycopg = kind == "postgresql" and engine.dialect.driver == "psycopg"
    plan: list[str] = []
    if reader in ("auto", "arrow") and _arrow_reader_available(kind):
        plan.append("arrow")
    elif reader == "arrow":
        raise ExtractionError(f"{label}: no Arrow-native reader installed for {kind}", permanent=True)
    if reader in ("auto", "copy") and psycopg:
        plan.append("copy-csv")
    if reader in ("auto", "cursor") or (reader == "copy" and not psycopg):
        plan.append("cursor")
    used = path = ""
    try:
        for attempt, path in enumerate(plan):
            if _abort(holder) and not _restart(sink_file):
                raise ExtractionError(
                    f"{label}: the Arrow reader stopped and the sink cannot be rewritten; "
                    "pin the column types with dtypes",
                    permanent=True,
                )
            try:
                if path == "arrow":
                    if kind == "postgresql":
                        writer = _extract_adbc_postgres(engine, sql, params, open_writer, types)
                        used = "adbc"
                    elif kind == "mysql":
                        writer = _extract_connectorx_mysql(
                            engine, sql, params, open_writer, types, chunk_rows
                        )
                        used = "connectorx"
                    else:
                        writer = _extract_adbc_sqlite(engine, sql, params, open_writer, types, chunk_rows)
                        used = "adbc"
                elif path == "copy-csv":
                    writer = _extract_postgres(engine, sql, params, open_writer, types, block_bytes=4 << 20)
                    used = "copy-csv"
                else:
                    writer = _extract_cursor(engine, sql, params, open_writer, types, chunk_rows)
                    used = "cursor"
            except _Fallback as why:
                if reader == "arrow" or path == plan[-1]:
                    raise ExtractionError(f"{label}: {why}", permanent=True) from None
                log.warning("%s: %s; falling back to the %s reader", label, why, plan[attempt + 1])
                continue
            break
        writer.close()
        holder.pop("writer", None)
    except ExtractionError:
        raise
    except (sa.exc.DBAPIError, sa.exc.StatementError) as exc:
        raise _explain(exc, sql, engine, label) from None
    except Exception as exc:
        if _is_driver_error(exc):
            raise _explain(exc, sql, engine, label) from None
        if isinstance(exc, pa.ArrowInvalid):
            raise ExtractionError(
                f"{label}: a value does not fit its column type: "
                f"{_mask_digit_runs(_scrub(str(exc), _secrets(engine)))}",
                permanent=True,
            ) from None
        if path == "arrow" and isinstance(exc, RuntimeError | OSError):
            # ConnectorX (RuntimeError) and ADBC mid-stream (OSError) errors: scrubbed, retryable
            raise _explain(exc, sql, engine, label) from None
        raise
    except BaseException as exc:
        if type(exc).__name__ == "PanicException":  # ConnectorX (Rust) panics
            raise _explain(exc, sql, engine, label) from None
        raise
    finally:
        _abort(holder)  # after an error: stop the writing thread, close the file
    log.info("%s: %d rows read by the %s reader", label, writer.rows, used)
    seen = writer.seen() if overlap is not None else frozenset()
    return ExtractResult(
        writer.rows, writer.schema, format_watermark(writer.high), used, writer.skipped, seen
    )


def _abort(holder: dict[str, _Writer]) -> bool:
    """Stop and close a writer left by an attempt; return whether there was one."""
    leftover = holder.pop("writer", None)
    if leftover is not None:
        leftover.abort()
    return leftover is not None


def _is_driver_error(exc: BaseException) -> bool:
    module = type(exc).__module__.split(".")[0]
    return module in ("psycopg", "pymysql", "sqlite3", "psycopg2", "MySQLdb", "adbc_driver_manager")


def stream_query_to_parquet(
    engine: sa.Engine,
    sql: str,
    params: Mapping[str, Any] | None,
    sink_file: str | Path | IO[bytes],
    *,
    chunk_rows: int = 100_000,
    dtypes: Mapping[str, TypeSpec] | None = None,
) -> int:
    """Stream a query's result into a Parquet file; return the number of rows written.

    See ``extract_to_parquet`` for the parameters (and for incremental extracts).
    """
    return extract_to_parquet(engine, sql, params, sink_file, chunk_rows=chunk_rows, dtypes=dtypes).rows


# --------------------------------------------------------------------------------------
# Watermarks in the dunning store
# --------------------------------------------------------------------------------------


def watermark_schema_path() -> Path:
    """Return the portable DDL file of the ``extract_watermark`` table."""
    return WATERMARK_DDL


def _ensure_watermark_table(store: sa.Engine) -> None:
    text = WATERMARK_DDL.read_text(encoding="utf-8")
    body = "\n".join(line.split("--", 1)[0] for line in text.splitlines())
    with store.begin() as conn:
        for stmt in (s.strip() for s in body.split(";")):
            if stmt:
                conn.exec_driver_sql(stmt)


def read_watermark(store: sa.Engine, source: str, dataset: str) -> str | None:
    """Return the stored watermark of a source's data set (text), or None before the first run."""
    _ensure_watermark_table(store)
    with store.connect() as conn:
        return conn.execute(
            sa.text("SELECT watermark FROM extract_watermark WHERE source = :s AND dataset = :d"),
            {"s": source, "d": dataset},
        ).scalar()


def _write_watermark(conn: sa.Connection, values: dict[str, Any]) -> None:
    """Insert or update one data set's watermark row inside the caller's transaction."""
    updated = conn.execute(
        sa.text(
            "UPDATE extract_watermark SET watermark = :w, updated_at = :at WHERE source = :s AND dataset = :d"
        ),
        values,
    ).rowcount
    if not updated:
        conn.execute(
            sa.text(
                "INSERT INTO extract_watermark (source, dataset, watermark, updated_at) "
                "VALUES (:s, :d, :w, :at)"
            ),
            values,
        )


def save_watermark(store: sa.Engine, source: str, dataset: str, watermark: str, *, at: datetime) -> None:
    """Store the watermark of a source's data set (insert or update, one transaction)."""
    _ensure_watermark_table(store)
    values = {"s": source, "d": dataset, "w": watermark, "at": at}
    with store.begin() as conn:
        _write_watermark(conn, values)


def read_watermark_state(store: sa.Engine, source: str, dataset: str) -> WatermarkState:
    """Return the stored watermark of a data set and the row versions seen in its overlap window."""
    watermark = read_watermark(store, source, dataset)
    with store.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT row_key, changed FROM extract_watermark_seen WHERE source = :s AND dataset = :d"),
            {"s": source, "d": dataset},
        ).all()
    return WatermarkState(watermark, frozenset((r[0], r[1]) for r in rows))


def save_watermark_state(
    store: sa.Engine,
    source: str,
    dataset: str,
    watermark: str,
    seen: frozenset[tuple[str, str]] | set[tuple[str, str]],
    *,
    at: datetime,
) -> None:
    """Store a watermark and replace the row versions of its overlap window (one transaction)."""
    too_long = [key for key, _ in seen if len(key) > 200]
    if too_long:
        raise ExtractionError(
            f"overlap key {too_long[0][:40]!r}... is longer than 200 characters", permanent=True
        )
    _ensure_watermark_table(store)
    values = {"s": source, "d": dataset, "w": watermark, "at": at}
    with store.begin() as conn:
        _write_watermark(conn, values)
        conn.execute(
            sa.text("DELETE FROM extract_watermark_seen WHERE source = :s AND dataset = :d"),
            {"s": source, "d": dataset},
        )
        if seen:
            conn.execute(
                sa.text(
                    "INSERT INTO extract_watermark_seen (source, dataset, row_key, changed) "
                    "VALUES (:s, :d, :k, :c)"
                ),
                [{"s": source, "d": dataset, "k": k, "c": c} for k, c in sorted(seen)],
            )
