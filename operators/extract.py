"""Extract from a source system with SQL into Parquet staging, in chunks, never half a file."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from operators.common import resolve_as_of, run_partition, sql_engine


class SqlToParquetOperator(BaseOperator):
    """Run a query against a source database and stream the result into one Parquet file.

    The file lands in the run's staging partition as ``extract/<dataset>.parquet``; it is
    written under a temporary name and renamed when complete, so readers never see half a
    file and a retry simply rewrites it. Returns the path and the row count (XCom).

    :param sql: the query, or a ``.sql`` file under include/sql/ (templated)
    :param conn_id: Airflow connection of the source database
    :param dataset: name of the extracted data set (the file's name)
    :param parameters: bind parameters; ``as_of`` is added from the run (templated)
    :param chunk_rows: rows fetched and written per chunk (memory stays flat)
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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.sql = sql
        self.conn_id = conn_id
        self.dataset = dataset
        self.parameters = parameters
        self.chunk_rows = chunk_rows

    def execute(self, context: Any) -> dict[str, Any]:
        import pandas as pd
        import pyarrow as pa
        import pyarrow.parquet as pq
        import sqlalchemy as sa

        params = {"as_of": resolve_as_of(context), **(self.parameters or {})}
        target = run_partition(context) / "extract" / f"{self.dataset}.parquet"
        partial = target.with_name(f".{self.dataset}.parquet.partial")
        target.parent.mkdir(parents=True, exist_ok=True)
        engine = sql_engine(self.conn_id)
        rows = 0
        writer: pq.ParquetWriter | None = None
        try:
            with engine.connect() as conn, partial.open("wb") as sink:
                chunks = pd.read_sql(sa.text(self.sql), conn, params=params, chunksize=self.chunk_rows)
                for chunk in chunks:
                    table = pa.Table.from_pandas(chunk, preserve_index=False)
                    if writer is None:
                        writer = pq.ParquetWriter(sink, table.schema)
                    writer.write_table(table.cast(writer.schema))
                    rows += len(chunk)
                    self.log.info("extract %s: %d rows so far", self.dataset, rows)
                if writer is None:  # no rows: still write a file with the query's columns
                    empty = pd.read_sql(sa.text(self.sql), conn, params=params)
                    writer = pq.ParquetWriter(sink, pa.Table.from_pandas(empty, preserve_index=False).schema)
                writer.close()
        except (sa.exc.DBAPIError, pd.errors.DatabaseError) as exc:
            partial.unlink(missing_ok=True)
            # The driver's message names the table or column; the URL (and its password) is not in it.
            cause = (
                exc.orig
                if isinstance(exc, sa.exc.DBAPIError)
                else getattr(exc.__cause__, "orig", exc.__cause__)
            )
            raise AirflowFailException(
                f"extract {self.dataset} from connection {self.conn_id!r} failed: {cause or exc}"
            ) from None
        finally:
            engine.dispose()
        partial.rename(target)
        self.log.info("extract %s: %d rows written to %s", self.dataset, rows, target)
        return {"path": str(target), "rows": rows}
