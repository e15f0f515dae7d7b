"""Validation of extracted source data with Great Expectations suites kept in include/expectations/.

Checks that Great Expectations cannot express directly (a mobile number's validity by
libphonenumber, a taxpayer id's check character) are first turned into derived columns by a
``prepare_*`` function; the suite then asserts on those columns. Failing rows are returned
with the expectation, the field, the (masked) value and a reason a person can act on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from typing import TYPE_CHECKING, Any

from include.dunning import identifiers, phones

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


@dataclass
class ValidationOutcome:
    """Rows that passed, rows that failed (with reasons), and per-expectation results."""

    good: pd.DataFrame
    rejected: list[dict[str, Any]]
    bad_rows: int
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def bad_share(self) -> float:
        total = len(self.good) + self.bad_rows
        return self.bad_rows / total if total else 0.0


def load_suite(name: str) -> dict[str, Any]:
    """Load an expectation suite (JSON) from include/expectations/ by name."""
    text = resources.files("include.expectations").joinpath(f"{name}.json").read_text("utf-8")
    return json.loads(text)


def prepare_levy_overdue(df: pd.DataFrame, as_of: date) -> pd.DataFrame:
    """Add the derived check columns the ``levy_overdue_liabilities`` suite asserts on."""
    import pandas as pd

    out = df.copy()
    raw_mobile = out["mobile"].astype("string").fillna("")
    out["mobile_normalized"] = [phones.normalize_mobile(m) for m in raw_mobile]
    id_checks = [identifiers.check_taxpayer_id(str(t) if t is not None else "") for t in out["taxpayer_id"]]
    out["taxpayer_id_ok"] = [c.valid or c.review for c in id_checks]
    out["taxpayer_id_review"] = [c.review for c in id_checks]
    out["taxpayer_id_reason"] = [c.reason for c in id_checks]
    out["outstanding_yuan"] = pd.to_numeric(out["outstanding"].astype("string"), errors="coerce")
    # Overdue is counted from the original deadline: a deferred liability is still overdue data.
    original = "original_deadline" if "original_deadline" in out else "deadline"
    deadlines = pd.to_datetime(out[original].astype("string"), errors="coerce")
    out["days_overdue"] = (pd.Timestamp(as_of) - deadlines).dt.days
    name = out["taxpayer_name"].astype("string").str.strip()
    out["taxpayer_name"] = name.mask(name == "", None)
    return out


def prepare_levy_filing(df: pd.DataFrame, as_of: date) -> pd.DataFrame:
    """Add the derived check columns the ``levy_filing_status`` suite asserts on."""
    import pandas as pd

    out = df.copy()
    raw_mobile = out["mobile"].astype("string").fillna("")
    out["mobile_normalized"] = [phones.normalize_mobile(m) for m in raw_mobile]
    id_checks = [identifiers.check_taxpayer_id(str(t) if t is not None else "") for t in out["taxpayer_id"]]
    out["taxpayer_id_ok"] = [c.valid or c.review for c in id_checks]
    out["taxpayer_id_reason"] = [c.reason for c in id_checks]
    out["deadline_date"] = pd.to_datetime(out["deadline"].astype("string"), errors="coerce")
    out["period"] = out["period"].astype("string")
    name = out["taxpayer_name"].astype("string").str.strip()
    out["taxpayer_name"] = name.mask(name == "", None)
    return out


def prepare_billing_items(df: pd.DataFrame, as_of: date) -> pd.DataFrame:
    """Add the derived check columns the ``billing_dunning_items`` suite asserts on."""
    import pandas as pd

    out = df.copy()
    raw_mobile = out["mobile"].astype("string").fillna("")
    out["mobile_normalized"] = [phones.normalize_mobile(m) for m in raw_mobile]
    out["account_ok"] = [
        identifiers.account_number(str(a) if a is not None else "").valid for a in out["account_no"]
    ]
    out["outstanding_yuan"] = pd.to_numeric(out["outstanding"].astype("string"), errors="coerce")
    out["balance_yuan"] = pd.to_numeric(out["balance"].astype("string"), errors="coerce")
    due = pd.to_datetime(out["due_date"].astype("string"), errors="coerce")
    out["days_overdue"] = (pd.Timestamp(as_of) - due).dt.days
    is_bill = out["kind"] == "bill"
    # A bill needs an amount and a due date; a balance alert needs a balance.
    out["item_complete"] = (is_bill & out["outstanding_yuan"].notna() & due.notna()) | (
        ~is_bill & out["balance_yuan"].notna()
    )
    name = out["name"].astype("string").str.strip()
    out["name"] = name.mask(name == "", None)
    return out


def _reason(expectation: str, column: str, row: Any) -> tuple[str, str | None]:
    """Return (reason, value safe to store) for one failed cell."""
    if column == "mobile_normalized":
        return f"mobile {phones.mobile_problem(row['mobile']) or 'invalid'}", phones.mask(
            str(row["mobile"] or "")
        )
    if column == "taxpayer_id_ok":
        return f"taxpayer id {row['taxpayer_id_reason'] or 'invalid'}", str(row["taxpayer_id"])
    if column == "outstanding_yuan":
        return "outstanding amount negative, zero or above the configured bound", str(row["outstanding"])
    if column == "days_overdue":
        when = row.get("original_deadline", row.get("deadline", row.get("due_date")))
        return "deadline missing or implausible", str(when)
    if column in ("taxpayer_name", "name"):
        return "name missing", None
    if column == "account_ok":
        return "account number (户号) not 10 or 13 digits", str(row["account_no"])
    if column == "customer_class":
        return "customer class neither residential nor non_residential", str(row["customer_class"])
    if column == "deadline_date":
        return "filing deadline missing or not a date", str(row.get("deadline"))
    if column == "period":
        return "period not YYYY-MM", str(row.get("period"))
    if column == "item_complete":
        return "bill without amount or due date, or balance missing", None
    if expectation == "expect_column_values_to_be_unique":
        return f"duplicate {column}", str(row[column])
    return f"{expectation} failed on {column}", str(row.get(column))


def validate_frame(
    df: pd.DataFrame,
    suite: dict[str, Any],
    *,
    key_column: str,
    reason: Callable[[str, str, Any], tuple[str, str | None]] = _reason,
) -> ValidationOutcome:
    """Validate a prepared frame against a suite and split it into good and rejected rows.

    :param df: the prepared frame (see the ``prepare_*`` functions)
    :param suite: the suite as loaded by ``load_suite`` (kwargs may be overridden by the caller)
    :param key_column: the column that names a row in the quarantine table
    :param reason: maps (expectation, column, row) to a reason and a safe value to keep
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    frame = df.reset_index(drop=True)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas("dunning").add_dataframe_asset(suite["name"])
    batch = asset.add_batch_definition_whole_dataframe("run").get_batch(batch_parameters={"dataframe": frame})
    expectation_suite = gx.ExpectationSuite(name=suite["name"], expectations=[])
    for spec in suite["expectations"]:
        expectation_suite.add_expectation(_expectation(gx, spec))
    result = batch.validate(expectation_suite, result_format="COMPLETE")

    rejected: list[dict[str, Any]] = []
    bad_index: set[int] = set()
    summaries = []
    for item in result.results:
        config = item.expectation_config
        column = config.kwargs.get("column")
        indices = item.result.get("unexpected_index_list") or []
        summaries.append(
            {
                "expectation": config.type,
                "column": column,
                "success": bool(item.success),
                "unexpected": len(indices),
            }
        )
        for idx in indices:
            row = frame.loc[idx]
            why, value = reason(config.type, column, row)
            bad_index.add(int(idx))
            rejected.append(
                {
                    "record_key": str(row[key_column]),
                    "field": column,
                    "expectation": config.type,
                    "bad_value": None if value is None else value[:200],
                    "reason": why[:300],
                }
            )
    good = frame.drop(index=sorted(bad_index))
    return ValidationOutcome(good=good, rejected=rejected, bad_rows=len(bad_index), results=summaries)


def _expectation(gx: Any, spec: dict[str, Any]) -> Any:
    class_name = "".join(part.capitalize() for part in spec["type"].split("_"))
    try:
        cls = getattr(gx.expectations, class_name)
    except AttributeError:
        raise ValueError(f"unknown expectation type {spec['type']!r} in suite") from None
    return cls(**spec["kwargs"])
