"""Validate extracted data with a Great Expectations suite; quarantine failing rows with reasons."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from operators.common import (
    DEFAULT_STORE_CONN_ID,
    display_path,
    dunning_store,
    resolve_as_of,
    run_partition,
)

#: Rows validated at a time (memory stays flat in the extract's size).
CHUNK_ROWS = 250_000


def data_docs_folder(context: Any) -> Any:
    """Return the folder of the run's GX data docs: beside the run report, ``<stem>.data_docs/``.

    The run report is ``<report root>/<dag_id>/<stem>.html`` (``operators.report.report_root``
    and ``include.monitor.reports.report_stem``).
    """
    from include.monitor.reports import report_stem
    from operators.report import report_root

    return report_root() / context["ti"].dag_id / f"{report_stem(context['run_id'])}.data_docs"


class ValidateDebtorsOperator(BaseOperator):
    """Check an extracted Parquet file against a suite; write the good rows, quarantine the rest.

    The file is validated in chunks of ``chunk_rows`` (``include.dunning.validation.validate_parquet``):
    good rows stream to ``valid/<dataset>.parquet`` in the run's partition (written under a
    temporary name, renamed only when the run passes); every failing row goes to the
    ``quarantine`` table of the dunning store, chunk by chunk, with the expectation, the field,
    the masked value and a reason. The task fails only when the share of bad rows over the
    whole file exceeds ``max_bad_share`` (a sign the extraction itself is broken, not the data).
    GX data docs (HTML) of the run are written beside the run report (``data_docs_folder``),
    also when the task fails; their path is in the XCom (``data_docs``).

    :param source_path: the extracted Parquet file (templated; usually an XCom of the extract)
    :param suite: the suite's name in include/expectations/
    :param source: name of the source system, recorded on quarantined rows
    :param key_column: the column that identifies a row in the quarantine table
    :param debtor_column: the column that identifies a debtor (counted for the report)
    :param max_bad_share: the largest share of bad rows tolerated, 0..1 (templated)
    :param max_amount: upper bound of a plausible amount in yuan, overriding the suite's (templated)
    :param chunk_rows: rows validated at a time
    :param store_conn_id: Airflow connection of the dunning store
    """

    template_fields: Sequence[str] = ("source_path", "max_bad_share", "max_amount")
    ui_color = "#fdf3e1"

    def __init__(
        self,
        *,
        source_path: str,
        suite: str,
        source: str,
        key_column: str,
        debtor_column: str,
        max_bad_share: float | str = 0.2,
        max_amount: float | str | None = None,
        chunk_rows: int = CHUNK_ROWS,
        store_conn_id: str = DEFAULT_STORE_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source_path = source_path
        self.suite = suite
        self.source = source
        self.key_column = key_column
        self.debtor_column = debtor_column
        self.max_bad_share = max_bad_share
        self.max_amount = max_amount
        self.chunk_rows = chunk_rows
        self.store_conn_id = store_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.sdk import ObjectStoragePath

        from include.dunning.validation import SuiteRunner, load_suite, validate_parquet

        as_of = resolve_as_of(context)
        run_id = context["run_id"]
        source = ObjectStoragePath(self.source_path)
        suite = load_suite(self.suite)
        if self.max_amount not in (None, ""):
            for spec in suite["expectations"]:
                if (
                    spec["type"] == "expect_column_values_to_be_between"
                    and spec["kwargs"].get("column") == "outstanding_yuan"
                ):
                    spec["kwargs"]["max_value"] = float(self.max_amount)
        runner = SuiteRunner(suite, key_column=self.key_column)
        store = dunning_store(self.store_conn_id)

        def quarantine(rows: list[dict[str, Any]]) -> None:
            store.quarantine([{**row, "run_id": run_id, "source": self.source} for row in rows])

        target = run_partition(context) / "valid" / source.name
        partial = target.with_name(f".{source.name}.partial")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with source.open("rb") as fh, partial.open("wb") as sink:
                outcome = validate_parquet(
                    fh,
                    suite,
                    as_of=as_of,
                    key_column=self.key_column,
                    debtor_column=self.debtor_column,
                    good_sink=sink,
                    on_rejected=quarantine,
                    chunk_rows=int(self.chunk_rows),
                    runner=runner,
                )
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        for summary in outcome.results:
            self.log.info(
                "expectation %s on %s: %s (%d unexpected)",
                summary["expectation"],
                summary["column"],
                "ok" if summary["success"] else "FAILED",
                summary["unexpected"],
            )
        docs = self._write_data_docs(context, runner)
        if outcome.reviews:
            self.log.warning(
                "%d rows have a taxpayer id whose check character fails: kept, flagged for review",
                outcome.reviews,
            )
        self.log.info(
            "validated %d rows in %d chunks: %d good, %d quarantined (%.1f%%)",
            outcome.rows,
            outcome.chunks,
            outcome.good_rows,
            outcome.bad_rows,
            100 * outcome.bad_share,
        )
        limit = float(self.max_bad_share)
        if outcome.bad_share > limit:
            partial.unlink(missing_ok=True)
            raise AirflowFailException(
                f"{outcome.bad_rows} of {outcome.rows} rows of {source} failed validation "
                f"({outcome.bad_share:.1%} > max_bad_share {limit:.1%}); see the quarantine table for run "
                f"{run_id} and the data docs {docs}"
            )
        partial.rename(target)
        return {
            "path": str(target),
            "rows": outcome.good_rows,
            "quarantined": outcome.bad_rows,
            "debtors": outcome.debtors,
            "data_docs": docs,
        }

    def _write_data_docs(self, context: Any, runner: Any) -> str | None:
        """Build the GX data docs locally and copy them beside the run report; return the index path.

        A failure here is logged, not raised: the docs are for analysts, the run goes on.
        """
        import tempfile
        from pathlib import Path

        folder = data_docs_folder(context)
        try:
            with tempfile.TemporaryDirectory(prefix="gx_docs_") as tmp:
                index = runner.write_data_docs(tmp, run_name=context["run_id"])
                for path in sorted(Path(tmp).rglob("*")):
                    if path.is_file():
                        dest = folder / path.relative_to(tmp).as_posix()
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        with dest.open("wb") as out:
                            out.write(path.read_bytes())
                docs = display_path(folder / index.relative_to(tmp).as_posix())
        except Exception:
            self.log.exception("GX data docs could not be written to %s", folder)
            return None
        self.log.info("GX data docs: %s", docs)
        return docs
