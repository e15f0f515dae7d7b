"""Validate extracted data with a Great Expectations suite; quarantine failing rows with reasons."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from operators.common import DEFAULT_STORE_CONN_ID, dunning_store, resolve_as_of, run_partition

PREPARERS = {
    "levy_overdue_liabilities": "include.dunning.validation:prepare_levy_overdue",
    "billing_dunning_items": "include.dunning.validation:prepare_billing_items",
    "levy_filing_status": "include.dunning.validation:prepare_levy_filing",
}


class ValidateDebtorsOperator(BaseOperator):
    """Check an extracted Parquet file against a suite; write the good rows, quarantine the rest.

    Good rows go to ``valid/<dataset>.parquet`` in the run's partition; every failing row goes
    to the ``quarantine`` table of the dunning store with the expectation, the field, the masked
    value and a reason. The task fails only when the share of bad rows exceeds ``max_bad_share``
    (a sign the extraction itself is broken, not the data).

    :param source_path: the extracted Parquet file (templated; usually an XCom of the extract)
    :param suite: the suite's name in include/expectations/
    :param source: name of the source system, recorded on quarantined rows
    :param key_column: the column that identifies a row in the quarantine table
    :param debtor_column: the column that identifies a debtor (counted for the report)
    :param max_bad_share: the largest share of bad rows tolerated, 0..1 (templated)
    :param max_amount: upper bound of a plausible amount in yuan, overriding the suite's (templated)
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
        self.store_conn_id = store_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        import importlib

        import pandas as pd
        from airflow.sdk import ObjectStoragePath

        from include.dunning.validation import load_suite, validate_frame

        as_of = resolve_as_of(context)
        source = ObjectStoragePath(self.source_path)
        with source.open("rb") as fh:
            frame = pd.read_parquet(fh)
        module_name, func_name = PREPARERS[self.suite].split(":")
        prepare = getattr(importlib.import_module(module_name), func_name)
        prepared = prepare(frame, as_of)

        suite = load_suite(self.suite)
        if self.max_amount not in (None, ""):
            for spec in suite["expectations"]:
                if (
                    spec["type"] == "expect_column_values_to_be_between"
                    and spec["kwargs"].get("column") == "outstanding_yuan"
                ):
                    spec["kwargs"]["max_value"] = float(self.max_amount)
        outcome = validate_frame(prepared, suite, key_column=self.key_column)
        for summary in outcome.results:
            self.log.info(
                "expectation %s on %s: %s (%d unexpected)",
                summary["expectation"],
                summary["column"],
                "ok" if summary["success"] else "FAILED",
                summary["unexpected"],
            )

        store = dunning_store(self.store_conn_id)
        store.quarantine(
            [{**row, "run_id": context["run_id"], "source": self.source} for row in outcome.rejected]
        )
        reviews = int(outcome.good["taxpayer_id_review"].sum()) if "taxpayer_id_review" in outcome.good else 0
        if reviews:
            self.log.warning(
                "%d rows have a taxpayer id whose check character fails: kept, flagged for review", reviews
            )
        self.log.info(
            "validated %d rows: %d good, %d quarantined (%.1f%%)",
            len(prepared),
            len(outcome.good),
            outcome.bad_rows,
            100 * outcome.bad_share,
        )
        limit = float(self.max_bad_share)
        if outcome.bad_share > limit:
            raise AirflowFailException(
                f"{outcome.bad_rows} of {len(prepared)} rows of {source} failed validation "
                f"({outcome.bad_share:.1%} > max_bad_share {limit:.1%}); see the quarantine table for run "
                f"{context['run_id']}"
            )
        target = run_partition(context) / "valid" / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as fh:
            outcome.good.to_parquet(fh, index=False)
        return {
            "path": str(target),
            "rows": len(outcome.good),
            "quarantined": outcome.bad_rows,
            "debtors": int(prepared[self.debtor_column].nunique()),
        }
