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


# -- stop rules, holdout, re-notification ------------------------------------------------------


def test_a_top_up_after_the_due_date_that_covers_the_arrears_stops_dunning():
    rows = [
        {**bill("1", days=10, amount="300.00"), "topup_amount": "500.00", "topup_on": "2026-04-05"},
        {**bill("2", days=8, amount="100.00"), "topup_amount": "500.00", "topup_on": "2026-04-05"},
    ]
    (row,) = plan(rows)
    assert row["state"] == "SUPPRESSED"
    assert row["reason"] == "recharge: top-up 500.00 by 2026-04-05 covers the arrears"


def test_a_partial_top_up_covers_the_oldest_bills_first():
    rows = [
        {**bill("1", days=10, amount="300.00"), "topup_amount": "350.00", "topup_on": "2026-04-05"},
        {**bill("2", days=7, amount="100.00"), "topup_amount": "350.00", "topup_on": "2026-04-05"},
    ]
    (row,) = plan(rows)
    assert row["state"] == "PLANNED" and row["stage"] == "overdue"
    assert row["amount"] == Decimal("50.00")  # 450 owed, 350 topped up
    # penalty on what is left of bill 2 only: 50 x 1‰ x 7 = 0.35 -> 1.00 minimum
    assert row["surcharge"] == Decimal("1.00")


def test_a_top_up_covering_only_a_newer_bill_keeps_the_stage_of_the_rest():
    rows = [
        {**bill("1", days=15, amount="300.00"), "topup_amount": "300.00", "topup_on": "2026-04-01"},
        {**bill("2", days=7, amount="100.00"), "topup_amount": "100.00", "topup_on": "2026-04-05"},
    ]
    # the account's top-ups since the oldest due date are 300: bill 1 is covered, bill 2 is left
    (row,) = plan(rows)
    assert (row["stage"], row["amount"]) == ("overdue", Decimal("100.00"))


def test_promise_to_pay_holds_the_account_until_its_date():
    rec = {**bill("1", days=7), "promised_until": "2026-04-15"}
    (row,) = plan([rec])
    assert (row["state"], row["reason"]) == ("SUPPRESSED", "promise_to_pay until 2026-04-15")
    (row,) = plan([{**rec, "promised_until": "2026-04-08"}])  # passed unpaid: dunning resumes
    assert row["state"] == "PLANNED"


def test_a_prepaid_top_up_after_the_snapshot_stops_or_lowers_the_alert():
    (row,) = plan([{**balance("42.00"), "topup_amount": "100.00", "topup_on": "2026-04-08"}])
    assert (row["state"], row["reason"]) == (
        "SUPPRESSED",
        "recharge: balance 142.00 after a top-up on 2026-04-08",
    )
    (row,) = plan([{**balance("-3.50"), "topup_amount": "20.00", "topup_on": "2026-04-08"}])
    assert (row["state"], row["attempt"]) == ("PLANNED", 1)  # below 50 now, no longer below 0
    assert "16.50" in row["message_text"]


def test_holdout_suppresses_dunning_but_never_cutoff_notices_or_balance_alerts():
    from include.dunning.reporting import holdout_group

    accounts = [f"{1000000000 + n}" for n in range(60)]
    held = holdout_group(accounts, share=0.3, seed="power_dunning")
    campaign = PowerCampaign(holdout_share=0.3)
    rows = plan(
        [bill(str(n), days=7, account=a, phone=f"138{n:08d}") for n, a in enumerate(accounts)], campaign
    )
    assert {r["debtor_id"] for r in rows if r["reason"] == "holdout"} == held
    account = sorted(held)[0]
    (row,) = plan([bill("1", days=31, demand=1, account=account)], campaign)
    assert (row["stage"], row["state"]) == ("cutoff_notice", "PLANNED")
    (row,) = plan([{**balance("10.00"), "account_no": account}], campaign)
    assert row["state"] == "PLANNED"


def test_an_undelivered_sms_moves_to_a_call_in_the_same_stage_period():
    period = f"overdue:{(AS_OF - timedelta(days=8)).isoformat()}"
    history = {
        ("13800138000", "overdue", period): {
            "first_as_of": AS_OF - timedelta(days=1), "last_as_of": AS_OF - timedelta(days=1),
            "sms_delivered": 0, "sms_undelivered": 1, "sms_unanswered": 0,
            "voice_answered": 0, "voice_unanswered": 0, "voice_failed": 0,
        }
    }  # fmt: skip
    campaign = PowerCampaign(voice_gateway="modem_pool")
    (row,) = plan([bill("1", days=8)], campaign, history=history)
    assert (row["stage"], row["channel"], row["gateway"], row["state"]) == (
        "overdue", "voice", "modem_pool", "PLANNED",
    )  # fmt: skip
    assert row["template"] == "voice/power/overdue.j2"
    # the call is capped at one in the stage: with one placed, back to the (already sent) SMS key
    history[("13800138000", "overdue", period)]["voice_unanswered"] = 1
    (row,) = plan([bill("1", days=8)], campaign, history=history)
    assert row["channel"] == "sms"
    # another period (a new episode) has no history
    (row,) = plan([bill("1", days=9)], campaign, history=history)
    assert row["channel"] == "sms"
