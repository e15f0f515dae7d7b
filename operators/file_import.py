"""Import a contact or debtor list file (.txt, .csv, .xlsx) into staging: all of it or nothing."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from operators.common import DEFAULT_STORE_CONN_ID, display_path, run_partition, sql_engine

REJECTED_COLUMNS = (
    "run_id",
    "list_name",
    "file_name",
    "row_no",
    "field",
    "bad_value",
    "reason",
    "rejected_at",
)
_LIST_NAME = re.compile(r"[^\s/\\.][^/\\]{0,119}")


class ContactFileImportOperator(BaseOperator):
    """Read a list of phones (and names, debtor ids, amounts) that staff handed over, as one unit.

    The file's encoding (UTF-8, GBK, GB18030) is detected, columns are found by their
    Chinese or English names, phones normalised, duplicates merged (see
    ``include.dunning.file_import``). Accepted rows go to ``imports/<list_name>.parquet`` in
    the run's staging partition (written under a temporary name, then renamed); every
    rejected cell goes to the ``import_rejected`` table of the dunning store with its row
    number, masked value and reason. Both are written only after the whole file parsed, and
    a file that cannot be imported at all (unknown encoding, missing column, corrupt
    workbook, empty, header only) fails the task without a retry and writes nothing.
    Re-running a run replaces its own rejected rows and file; nothing is loaded twice.
    Returns ``{"path", "accepted", "rejected", "duplicates_merged", "encoding"}`` (XCom),
    ``rejected`` counting file rows.

    :param source_path: the file: a local path or any ObjectStoragePath / fsspec URL (templated)
    :param list_name: the list's name: the Parquet file's name and the key of its rejected
        rows (templated)
    :param mapping: target field -> accepted source header names, e.g.
        ``{"phone": ["联系方式"]}``; fields not named keep the defaults (templated)
    :param encoding: the text encoding when known; ``None`` to detect it (templated)
    :param sheet: the worksheet of a workbook, by name or 0-based index; the first by default
    :param store_conn_id: Airflow connection of the dunning store
    """

    template_fields: Sequence[str] = ("source_path", "list_name", "mapping", "encoding")
    ui_color = "#eef6e8"

    def __init__(
        self,
        *,
        source_path: str,
        list_name: str,
        mapping: dict[str, Any] | None = None,
        encoding: str | None = None,
        sheet: str | int | None = None,
        store_conn_id: str = DEFAULT_STORE_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source_path = source_path
        self.list_name = list_name
        self.mapping = mapping
        self.encoding = encoding
        self.sheet = sheet
        self.store_conn_id = store_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        import tempfile

        from include.dunning.file_import import FileImportError, read_contact_file

        list_name = str(self.list_name)
        if not _LIST_NAME.fullmatch(list_name):
            raise AirflowFailException(
                f"list_name {list_name!r} must be 1-120 characters without slashes, not starting with a dot"
            )
        source = str(self.source_path)
        file_name = source.rstrip("/").rsplit("/", 1)[-1]
        with tempfile.TemporaryDirectory(prefix="dunning-import-") as scratch:
            local = self._local_copy(source, file_name, scratch)
            try:
                result = read_contact_file(
                    local, mapping=self.mapping, encoding=self.encoding or None, sheet=self.sheet
                )
            except FileImportError as exc:
                self.log.error("import of %s refused, nothing loaded: %s", source, exc)
                raise AirflowFailException(str(exc)) from None

        target = run_partition(context) / "imports" / f"{list_name}.parquet"
        partial = target.with_name(f".{list_name}.parquet.partial")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with partial.open("wb") as sink:
                _write_parquet(result.accepted, sink)
            self._store_rejected(context["run_id"], list_name, file_name, result.rejected)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.rename(target)
        reviews = int(result.accepted["debtor_id_review"].sum())
        if reviews:
            self.log.warning(
                "%d rows have a debtor id whose check digit fails: kept, flagged for review", reviews
            )
        self.log.info(
            "import %s (%s, encoding %s): %d rows read, %d accepted, %d rejected, %d duplicates merged -> %s",
            file_name,
            ", ".join(f"{k}<-{v}" for k, v in result.columns.items()),
            result.encoding,
            result.rows_read,
            len(result.accepted),
            result.rejected_rows,
            result.duplicates_merged,
            display_path(target),
        )
        return {
            "path": str(target),
            "accepted": len(result.accepted),
            "rejected": result.rejected_rows,
            "duplicates_merged": result.duplicates_merged,
            "encoding": result.encoding,
        }

    @staticmethod
    def _local_copy(source: str, file_name: str, scratch: str) -> str:
        """Return a local path of ``source``: itself when local, else a download into ``scratch``.

        The copy keeps the file's name, so error messages name the file staff sent.
        """
        import os
        import shutil

        from airflow.sdk import ObjectStoragePath

        if "://" not in source:
            return source
        remote = ObjectStoragePath(source)
        if remote.protocol in ("file", "local"):
            return "/" + remote.path.lstrip("/")
        try:
            opener = remote.open("rb")
        except ValueError:  # a scheme no Airflow provider registers: plain fsspec may know it
            import fsspec

            opener = fsspec.open(source, "rb")
        local = os.path.join(scratch, file_name or "import")
        with opener as src, open(local, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        return local

    def _store_rejected(
        self, run_id: str, list_name: str, file_name: str, rejected: Sequence[dict[str, Any]]
    ) -> None:
        """Replace this run's rejected rows of the list in one transaction (idempotent per run)."""
        from importlib import resources

        import sqlalchemy as sa

        from include.dunning.ledger import DunningStore, split_sql, utcnow

        store = DunningStore(sql_engine(self.store_conn_id))
        try:
            ddl = resources.files("include.sql").joinpath("dunning_store/file_import.sql").read_text("utf-8")
            with store.engine.begin() as conn:
                for statement in split_sql(ddl):
                    conn.exec_driver_sql(statement)
            now = utcnow()
            params = [
                {
                    "run_id": run_id,
                    "list_name": list_name,
                    "file_name": file_name[:255],
                    "row_no": r["row"],
                    "field": r["field"],
                    "bad_value": None if r["value"] is None else str(r["value"])[:200],
                    "reason": str(r["reason"])[:200],
                    "rejected_at": now,
                }
                for r in rejected
            ]
            # A retry may read a corrected file: its rejections replace the earlier try's.
            stmt = store._insert_ignore(
                "import_rejected", REJECTED_COLUMNS, ("run_id", "list_name", "row_no", "field")
            )
            with store.engine.begin() as conn:
                conn.execute(
                    sa.text("DELETE FROM import_rejected WHERE run_id = :run_id AND list_name = :list_name"),
                    {"run_id": run_id, "list_name": list_name},
                )
                for start in range(0, len(params), 5000):
                    conn.execute(stmt, params[start : start + 5000])
        finally:
            store.engine.dispose()


def _write_parquet(accepted: Any, sink: Any) -> None:
    """Write the accepted rows with a fixed schema (an all-empty amount column is still decimal)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    scale = 2
    for value in accepted["amount"]:
        if value is not None:
            exponent = value.as_tuple().exponent
            if isinstance(exponent, int):
                scale = max(scale, -exponent)
    types = {
        "phone": pa.string(),
        "name": pa.string(),
        "debtor_id": pa.string(),
        "debtor_id_review": pa.bool_(),
        "amount": pa.decimal128(38, scale),
        "note": pa.string(),
        "source_rows": pa.list_(pa.int64()),
    }
    arrays = [pa.array(accepted[name], type=kind, from_pandas=True) for name, kind in types.items()]
    pq.write_table(pa.Table.from_arrays(arrays, names=list(types)), sink)
