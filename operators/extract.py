"""Extract from a source system with SQL into Parquet staging, in chunks, never half a file."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from operators.common import DEFAULT_STORE_CONN_ID, resolve_as_of, run_partition, sql_engine


class SqlToParquetOperator(BaseOperator):
    """Run a query against a source database and stream the result into one Parquet file.

    The file lands in the run's staging partition as ``extract/<dataset>.parquet``; it is
    written under a temporary name and renamed when complete, so readers never see half a
    file and a retry simply rewrites it. Returns the path and the row count (XCom).
    Sources are read as Arrow record batches where the library is installed (ADBC for
    PostgreSQL and SQLite, ConnectorX for MariaDB), else with ``COPY ... TO STDOUT`` or a
    streaming cursor; the log says which (see ``include.dunning.extraction``). Credentials come
    from the Airflow connection and never appear in a log or an error.

    :param sql: the query, or a ``.sql`` file under include/sql/ (templated)
    :param conn_id: Airflow connection of the source database
    :param dataset: name of the extracted data set (the file's name)
    :param parameters: bind parameters; ``as_of`` is added from the run (templated)
    :param chunk_rows: rows fetched and written per chunk (memory stays flat)
    :param dtypes: column -> type (``"string"``, ``"decimal(14,2)"``, ``"date"``...) to pin the
        Parquet schema, or the name of a YAML file of such lines under include/sql/ (e.g.
        ``levy/overdue_liabilities.types.yaml``, next to the query): the same query then gives
        the same schema on every engine. By default the types come from the source (SQLite:
        from the values)
    :param watermark_column: extract incrementally: the query gets ``:since``, the highest
        value of this column extracted so far (``None`` on the first run), kept per connection
        and data set in the dunning store's ``extract_watermark`` table once the file is in place
    :param watermark_lookback: an overlap window (``timedelta``, or seconds; a number for an
        integer watermark): ``:since`` is the watermark minus this, so rows committed late with
        an older change timestamp are still picked up; needs ``watermark_key``
    :param watermark_key: the column(s) identifying a row: a row version (key + watermark
        value) already extracted in the overlap window is dropped, so none is delivered twice
    :param store_conn_id: the dunning store (only used with ``watermark_column``)
    :param as_of_window: (first, last) day offsets from the as-of date; the query gets
        ``:window_start`` and ``:window_end`` as dates (date arithmetic is not portable SQL)
    """

    template_fields: Sequence[str] = ("sql", "parameters")
    template_ext: Sequence[str] = (".sql",)
    template_fields_renderers = {"sql": "sql"}
    ui_color = "#e8f1fb"

    def __init__(
        self,
        *,
        sql: str,
        conn_id: str,
        dataset: str,
        parameters: dict[str, Any] | None = None,
        chunk_rows: int = 100_000,
        dtypes: dict[str, str] | str | None = None,
        watermark_column: str | None = None,
        watermark_lookback: timedelta | float | None = None,
        watermark_key: str | Sequence[str] | None = None,
        store_conn_id: str = DEFAULT_STORE_CONN_ID,
        as_of_window: tuple[int, int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.as_of_window = as_of_window
        self.sql = sql
        self.conn_id = conn_id
        self.dataset = dataset
        self.parameters = parameters
        self.chunk_rows = chunk_rows
        self.dtypes = dtypes
        self.watermark_column = watermark_column
        if watermark_lookback and not watermark_key:
            raise ValueError(f"{dataset}: watermark_lookback needs watermark_key (the row's key columns)")
        if watermark_lookback and not watermark_column:
            raise ValueError(f"{dataset}: watermark_lookback needs watermark_column")
        self.watermark_lookback = watermark_lookback
        self.watermark_key = [watermark_key] if isinstance(watermark_key, str) else watermark_key
        self.store_conn_id = store_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        from datetime import UTC, datetime

        from airflow.exceptions import AirflowException

        from include.dunning.extraction import (
            ExtractionError,
            Overlap,
            extract_to_parquet,
            load_dtypes,
            read_watermark_state,
            save_watermark_state,
            since_with_lookback,
        )
        from include.paths import SQL_ROOT

        dtypes = self.dtypes
        if isinstance(dtypes, str):
            try:
                dtypes = load_dtypes(SQL_ROOT / dtypes)
            except ValueError as exc:
                raise AirflowFailException(str(exc)) from None
        as_of = resolve_as_of(context)
        params: dict[str, Any] = {"as_of": as_of, **(self.parameters or {})}
        if self.as_of_window is not None:
            params["window_start"] = as_of + timedelta(days=self.as_of_window[0])
            params["window_end"] = as_of + timedelta(days=self.as_of_window[1])
        store = sql_engine(self.store_conn_id) if self.watermark_column else None
        overlap = None
        if store is not None:
            state = read_watermark_state(store, self.conn_id, self.dataset)
            params["since"] = since_with_lookback(state.watermark, self.watermark_lookback)
            if self.watermark_lookback:
                overlap = Overlap(self.watermark_key or [], self.watermark_lookback, state)
            self.log.info(
                "extract %s: incremental since %s = %s (watermark %s, lookback %s)",
                self.dataset,
                self.watermark_column,
                params["since"],
                state.watermark,
                self.watermark_lookback,
            )
        target = run_partition(context) / "extract" / f"{self.dataset}.parquet"
        partial = target.with_name(f".{self.dataset}.parquet.partial")
        target.parent.mkdir(parents=True, exist_ok=True)
        engine = sql_engine(self.conn_id)
        label = f"extract {self.dataset} from connection {self.conn_id!r}"
        try:
            with partial.open("wb") as sink:
                result = extract_to_parquet(
                    engine,
                    self.sql,
                    params,
                    sink,
                    chunk_rows=self.chunk_rows,
                    dtypes=dtypes,
                    watermark_column=self.watermark_column,
                    overlap=overlap,
                    label=label,
                )
        except ExtractionError as exc:
            partial.unlink(missing_ok=True)
            # The message names the table and column; it never holds the URL or a password.
            if exc.permanent:
                raise AirflowFailException(str(exc)) from None
            raise AirflowException(str(exc)) from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        finally:
            engine.dispose()
        partial.rename(target)
        self.log.info(
            "extract %s: %d rows written to %s (reader %s)", self.dataset, result.rows, target, result.reader
        )
        if result.skipped:
            self.log.info(
                "extract %s: %d rows already extracted (overlap) dropped", self.dataset, result.skipped
            )
        if store is not None:
            if result.watermark is not None:
                save_watermark_state(
                    store, self.conn_id, self.dataset, result.watermark, result.seen, at=datetime.now(UTC)
                )
                self.log.info("extract %s: watermark now %s", self.dataset, result.watermark)
            store.dispose()
        return {"path": str(target), "rows": result.rows}
