"""Stream the result of a SQL query into one Parquet file in constant memory (no Airflow here).

The same function serves the three source engines:

* PostgreSQL (psycopg 3): ``COPY (<query>) TO STDOUT (FORMAT csv)``, parsed by pyarrow's
  streaming CSV reader with the column types taken from the query's description, so phone
  numbers and identifiers stay strings and amounts stay exact decimals. The bind parameters
  are rendered into the query by psycopg's ``ClientCursor.mogrify`` (proper quoting), never
  by string formatting.
* MariaDB / MySQL (PyMySQL) and SQLite: a streaming (server-side) cursor read in chunks of
  ``chunk_rows`` rows, turned into Arrow column by column. On PyMySQL, decimals and dates
  arrive as text and are parsed by Arrow (much faster than Python ``Decimal`` objects).

Types: integers -> int64, exact numerics -> decimal128(p, s) (unconstrained PostgreSQL
``numeric`` -> string, exact), floats -> float64, dates -> date32, timestamps ->
timestamp[us], everything else -> string. SQLite has no result types: columns are inferred
from the first chunk; pass ``dtypes`` (column -> type) to pin them, for instance to get the same
Parquet schema from every engine.

Incremental extracts: ``watermark_column`` makes the extract track the highest value of that
column; ``read_watermark`` / ``save_watermark`` keep it in the dunning store (table
``extract_watermark``), and the query gets it as the bind parameter ``:since`` (``None`` on the
first run, so write ``(:since IS NULL OR updated_at > :since)``).

Errors from the driver become ``ExtractionError`` with the table and column named (a missing
column is reported as such) and without the connection URL or password.
"""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
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
    "arrow_type",
    "extract_to_parquet",
    "format_watermark",
    "read_watermark",
    "save_watermark",
    "stream_query_to_parquet",
    "watermark_schema_path",
]

WATERMARK_DDL = Path(__file__).resolve().parent.parent / "sql" / "dunning_store" / "extract_watermark.sql"
TypeSpec = pa.DataType | str


class ExtractionError(RuntimeError):
    """The extract failed; the message names the table / column and never holds credentials.

    ``permanent`` is true for errors a retry cannot fix (missing column or table, bad SQL).
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class ExtractResult:
    """What an extract wrote: the row count, the Parquet schema and the new watermark (text)."""

    rows: int
    schema: pa.Schema
    watermark: str | None = None


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
    """Collect batches into row groups of about ``chunk_rows`` rows and track the watermark."""

    def __init__(
        self, sink_file: str | Path | IO[bytes], schema: pa.Schema, chunk_rows: int, watermark: str | None
    ) -> None:
        self.writer = pq.ParquetWriter(sink_file, schema, compression="snappy")
        self.schema = schema
        self.chunk_rows = chunk_rows
        self.pending: list[pa.RecordBatch] = []
        self.pending_rows = 0
        self.rows = 0
        self.watermark_column = watermark
        self.high: Any = None

    def add(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        if self.watermark_column is not None:
            top = pc.max(batch.column(self.watermark_column)).as_py()
            if top is not None and (self.high is None or top > self.high):
                self.high = top
        self.pending.append(batch)
        self.pending_rows += batch.num_rows
        self.rows += batch.num_rows
        if self.pending_rows >= self.chunk_rows:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.writer.write_table(pa.Table.from_batches(self.pending, schema=self.schema))
            self.pending.clear()
            self.pending_rows = 0

    def close(self) -> None:
        self.flush()
        self.writer.close()


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
                arrays = [_column(col, t) for col, t in zip(columns, types, strict=True)]
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
    label: str = "extract",
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
    :param label: what the error messages call this extract
    :param use_copy: PostgreSQL COPY (default: on for postgresql+psycopg engines)
    """
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
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
        holder["writer"] = _Writer(sink_file, schema, chunk_rows, watermark_column)
        return holder["writer"]

    if use_copy is None:
        use_copy = engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"
    try:
        if use_copy:
            writer = _extract_postgres(engine, sql, params, open_writer, types, block_bytes=4 << 20)
        else:
            writer = _extract_cursor(engine, sql, params, open_writer, types, chunk_rows)
        writer.close()
    except ExtractionError:
        raise
    except (sa.exc.DBAPIError, sa.exc.StatementError) as exc:
        raise _explain(exc, sql, engine, label) from None
    except Exception as exc:
        if _is_driver_error(exc):
            raise _explain(exc, sql, engine, label) from None
        if isinstance(exc, pa.ArrowInvalid):
            raise ExtractionError(
                f"{label}: a value does not fit its column type: {_scrub(str(exc), _secrets(engine))}",
                permanent=True,
            ) from None
        raise
    finally:
        leftover = holder.get("writer")
        if leftover is not None and leftover.writer.is_open:
            leftover.writer.close()
    return ExtractResult(writer.rows, writer.schema, format_watermark(writer.high))


def _is_driver_error(exc: BaseException) -> bool:
    module = type(exc).__module__.split(".")[0]
    return module in ("psycopg", "pymysql", "sqlite3", "psycopg2", "MySQLdb")


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


def save_watermark(store: sa.Engine, source: str, dataset: str, watermark: str, *, at: datetime) -> None:
    """Store the watermark of a source's data set (insert or update, one transaction)."""
    _ensure_watermark_table(store)
    values = {"s": source, "d": dataset, "w": watermark, "at": at}
    with store.begin() as conn:
        updated = conn.execute(
            sa.text(
                "UPDATE extract_watermark SET watermark = :w, updated_at = :at "
                "WHERE source = :s AND dataset = :d"
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
