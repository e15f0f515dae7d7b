"""Validation with the Great Expectations suite: bad rows are quarantined with a reason, never dropped."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from include.dunning.validation import load_suite, prepare_levy_overdue, validate_frame

AS_OF = date(2026, 11, 23)
GOOD_USCC = "91350100M000100Y43"  # GB 32100-2015 example with a correct check character


def frame(rows):
    base = {
        "liability_id": 0,
        "taxpayer_id": GOOD_USCC,
        "taxpayer_name": "福州示例有限公司",
        "tax_type": "增值税",
        "period": "2026-10",
        "outstanding": 1000.0,
        "deadline": "2026-11-16",
        "mobile": "13800138000",
    }
    return pd.DataFrame([{**base, "liability_id": i, **r} for i, r in enumerate(rows)])


@pytest.fixture(scope="module")
def suite():
    return load_suite("levy_overdue_liabilities")


def run(rows, suite):
    return validate_frame(prepare_levy_overdue(frame(rows), AS_OF), suite, key_column="liability_id")


def test_clean_rows_all_pass(suite):
    out = run([{}, {"mobile": "+86 139-1234-5678"}, {"mobile": "１３８００１３８０００"}], suite)
    assert out.bad_rows == 0 and out.rejected == []
    assert list(out.good["mobile_normalized"]) == ["13800138000", "13912345678", "13800138000"]


@pytest.mark.parametrize(
    ("bad", "field", "reason_part"),
    [
        ({"mobile": "12345"}, "mobile_normalized", "mobile"),
        ({"mobile": None}, "mobile_normalized", "mobile"),
        ({"taxpayer_id": "91350100I000100Y4"}, "taxpayer_id_ok", "taxpayer id"),
        ({"outstanding": -50.0}, "outstanding_yuan", "negative"),
        ({"outstanding": 5e9}, "outstanding_yuan", "bound"),
        ({"taxpayer_name": ""}, "taxpayer_name", "name missing"),
        ({"taxpayer_name": None}, "taxpayer_name", "name missing"),
        ({"deadline": None}, "days_overdue", "deadline"),
        ({"deadline": "2026-12-01"}, "days_overdue", "deadline"),
    ],
    ids=[
        "short-phone",
        "no-phone",
        "bad-id",
        "negative",
        "absurd",
        "empty-name",
        "null-name",
        "no-deadline",
        "future",
    ],
)
def test_each_kind_of_bad_row_is_quarantined_with_a_reason(suite, bad, field, reason_part):
    out = run([{}, bad, {}], suite)
    assert out.bad_rows == 1
    assert len(out.good) == 2
    fields = {r["field"] for r in out.rejected}
    assert field in fields
    rejected = next(r for r in out.rejected if r["field"] == field)
    assert rejected["record_key"] == "1"
    assert reason_part in rejected["reason"]


def test_uscc_check_character_mismatch_is_kept_and_flagged_for_review(suite):
    # DOMAIN §4: early pilot codes fail the check yet are legal: a review flag, not a drop.
    out = run([{"taxpayer_id": "91350100M000100Y4X"}], suite)
    assert out.bad_rows == 0
    assert bool(out.good.loc[0, "taxpayer_id_review"]) is True


def test_phone_values_are_masked_in_quarantine(suite):
    out = run([{"mobile": "1541234567"}], suite)
    (row,) = [r for r in out.rejected if r["field"] == "mobile_normalized"]
    assert "1541234567" not in (row["bad_value"] or "")


def test_duplicate_keys_are_quarantined(suite):
    df = prepare_levy_overdue(frame([{}, {}]), AS_OF)
    df.loc[1, "liability_id"] = 0
    out = validate_frame(df, suite, key_column="liability_id")
    assert out.bad_rows == 2
    assert {r["expectation"] for r in out.rejected} == {"expect_column_values_to_be_unique"}


def test_bad_share(suite):
    out = run([{}, {}, {}, {"mobile": "x"}], suite)
    assert out.bad_share == pytest.approx(0.25)
