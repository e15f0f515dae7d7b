"""The electricity planner on the power ladder: stage, 违约金, cut-off rule, voice, balance alerts."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest

from include.dunning import planner
from include.dunning.ladder import load_ladder
from include.dunning.planner import PowerCampaign

LADDER = load_ladder("power")
AS_OF = date(2026, 4, 9)


def bill(
    item_id, *, days, amount="300.00", demand=0, cls="residential", phone="13800138000", account="1234567890"
):
    return {
        "kind": "bill",
        "item_id": item_id,
        "account_no": account,
        "name": "王芳",
        "customer_class": cls,
        "mobile_normalized": phone,
        "period": "2026-02",
        "outstanding": amount,
        "due_date": (AS_OF - timedelta(days=days)).isoformat(),
        "demand_logged": demand,
        "balance": None,
    }


def balance(value, *, phone="13900139000", account="9876543210"):
    return {
        "kind": "balance",
        "item_id": account,
        "account_no": account,
        "name": "李强",
        "customer_class": "residential",
        "mobile_normalized": phone,
        "period": None,
        "outstanding": None,
        "due_date": None,
        "demand_logged": 0,
        "balance": value,
    }


def plan(records, campaign=None, **kw):
    return list(
        planner.plan_power(
            sorted(records, key=lambda r: r["mobile_normalized"]),
            as_of=AS_OF,
            run_id="r1",
            planned_at=datetime(2026, 4, 9, 2),
            campaign=campaign or PowerCampaign(),
            ladder=LADDER,
            **kw,
        )
    )


def test_domain_example_residential_penalty_at_day_15_is_voice():
    # DOMAIN §3: residential 300.00 due 2026-03-25 paid 2026-04-09 -> 4.50; day 15 is the voice stage
    (row,) = plan([bill("1", days=15)])
    assert row["surcharge"] == Decimal("4.50")
    assert (row["stage"], row["channel"]) == ("overdue_voice", "voice")
    assert (row["state"], row["reason"]) == ("SUPPRESSED", "voice channel not configured: no modems")


def test_voice_goes_to_the_modem_pool_when_modems_exist():
    (row,) = plan([bill("1", days=15)], PowerCampaign(voice_gateway="modem_pool"))
    assert (row["state"], row["gateway"]) == ("PLANNED", "modem_pool")


@pytest.mark.parametrize(
    ("days", "stage"),
    [(0, "due_reminder"), (3, None), (7, "overdue"), (14, "overdue"), (29, None), (31, None)],
    ids=lambda v: str(v),
)
def test_stage_by_days_overdue_without_a_payment_demand(days, stage):
    rows = plan([bill("1", days=days)])
    assert [r["stage"] for r in rows] == ([stage] if stage else [])


def test_cutoff_notice_only_after_day_30_with_a_logged_demand():
    (row,) = plan([bill("1", days=31, demand=1)])
    assert row["stage"] == "cutoff_notice" and row["state"] == "PLANNED"
    assert "4月16日前仍未缴清，将按规定中止供电" in row["message_text"]
    assert "以书面停电通知为准" in row["message_text"]
    assert plan([bill("1", days=30, demand=1)]) == []


def test_minimum_penalty_of_one_yuan():
    # DOMAIN §3: residential 50.00, 5 days -> 0.25 -> 1.00
    rows = plan([bill("1", days=7, amount="50.00"), bill("2", days=5, amount="50.00")])
    (row,) = rows
    # 50 x 1‰ x 7 = 0.35 -> 1.00 and 50 x 1‰ x 5 = 0.25 -> 1.00: the minimum applies per bill
    assert row["surcharge"] == Decimal("2.00")
    assert row["amount"] == Decimal("100.00")


def test_several_bills_of_one_number_are_one_message_at_the_most_severe_stage():
    rows = plan([bill("1", days=7), bill("2", days=0, account="1234567891")])
    (row,) = rows
    assert row["stage"] == "overdue"
    assert row["debtor_ids"] == "1234567890,1234567891"
    assert "2个户号" in row["message_text"]


@pytest.mark.parametrize(
    ("value", "attempt"), [("42.00", 1), ("-3.50", 2), ("50.00", None)], ids=["below-50", "below-0", "at-50"]
)
def test_prepaid_alert_once_per_threshold(value, attempt):
    rows = plan([balance(value)])
    if attempt is None:
        assert rows == []
    else:
        (row,) = rows
        assert (row["stage"], row["attempt"], row["period"]) == (
            "low_balance",
            attempt,
            "low_balance:2026-04",
        )
        assert "余额" in row["message_text"]


def test_opt_out_and_cap_are_suppressed_with_reasons():
    (row,) = plan([bill("1", days=7)], opted_out={"13800138000"})
    assert (row["state"], row["reason"]) == ("SUPPRESSED", "opted_out")
    (row,) = plan([bill("1", days=7)], last_contact={"13800138000": datetime(2026, 4, 5)})
    assert row["state"] == "SUPPRESSED" and row["reason"].startswith("frequency_cap")
    # balance alerts are not subject to the weekly cap
    (row,) = plan([balance("10.00")], last_contact={"13900139000": datetime(2026, 4, 8)})
    assert row["state"] == "PLANNED"
