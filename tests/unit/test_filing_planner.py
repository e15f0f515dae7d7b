"""Filing reminders fall exactly on the ladder's working days; 非正常户 escalation after 3 months."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from include.dunning import planner
from include.dunning.ladder import load_ladder
from include.dunning.planner import TaxFilingCampaign

LADDER = load_ladder("tax")


def obligation(taxpayer, period, deadline, *, filed=0, phone="13800138000", name="甲公司", tax_type="增值税"):
    return {
        "obligation_id": hash((taxpayer, period, tax_type)) % 10**9,
        "taxpayer_id": taxpayer,
        "taxpayer_name": name,
        "tax_type": tax_type,
        "period": period,
        "deadline": deadline,
        "filed": filed,
        "mobile_normalized": phone,
    }


def reminders(records, as_of, **kw):
    return list(
        planner.plan_filing_reminders(
            sorted(records, key=lambda r: r["mobile_normalized"]),
            as_of=as_of,
            run_id="r",
            planned_at=datetime(2026, 12, 1),
            campaign=TaxFilingCampaign(),
            ladder=LADDER,
            **kw,
        )
    )


@pytest.mark.parametrize(
    ("as_of", "attempt"),
    [
        (date(2026, 12, 7), None),
        (date(2026, 12, 8), 1),  # 5 working days before Tue 2026-12-15
        (date(2026, 12, 9), None),
        (date(2026, 12, 11), 2),  # 2 working days before
        (date(2026, 12, 15), None),
    ],
    ids=lambda v: str(v),
)
def test_reminders_fall_five_and_two_working_days_before_the_deadline(as_of, attempt):
    rows = reminders([obligation("A", "2026-11", "2026-12-15")], as_of)
    assert [r["attempt"] for r in rows] == ([attempt] if attempt else [])


def test_holiday_week_counts_working_days_only():
    # 2026-10-26 deadline after the National Day week: 5 working days before is 10-19 (DOMAIN §2)
    assert reminders([obligation("A", "2026-09", "2026-10-26")], date(2026, 10, 19))
    assert not reminders([obligation("A", "2026-09", "2026-10-26")], date(2026, 10, 21))


def test_filed_taxpayers_get_nothing_and_a_shared_number_gets_one_message():
    rows = reminders(
        [
            obligation("A", "2026-11", "2026-12-15", name="甲公司"),
            obligation("B", "2026-11", "2026-12-15", name="乙公司"),
            obligation("C", "2026-11", "2026-12-15", name="丙公司", filed=1),
        ],
        date(2026, 12, 8),
    )
    (row,) = rows
    assert row["debtor_ids"] == "A,B"
    assert "您联系的2户纳税人（甲公司、乙公司）" in row["message_text"]
    assert "12月15日" in row["message_text"] and row["message_text"].startswith("【示范市税务】")


def test_opted_out_number_is_suppressed():
    (row,) = reminders(
        [obligation("A", "2026-11", "2026-12-15")], date(2026, 12, 8), opted_out={"13800138000"}
    )
    assert (row["state"], row["reason"]) == ("SUPPRESSED", "opted_out")


def history(taxpayer, filed_by_period):
    deadlines = {
        "2026-07": "2026-08-17",
        "2026-08": "2026-09-15",
        "2026-09": "2026-10-26",
        "2026-10": "2026-11-16",
    }
    return [obligation(taxpayer, p, deadlines[p], filed=f) for p, f in filed_by_period.items()]


@pytest.mark.parametrize(
    ("filed", "flagged"),
    [
        ({"2026-07": 1, "2026-08": 0, "2026-09": 0, "2026-10": 0}, True),
        ({"2026-07": 0, "2026-08": 0, "2026-09": 1, "2026-10": 0}, False),
        ({"2026-07": 0, "2026-08": 0, "2026-09": 0, "2026-10": 1}, False),
    ],
    ids=["three-latest-unfiled", "gap", "latest-filed"],
)
def test_abnormal_taxpayer_after_three_consecutive_unfiled_months(filed, flagged):
    flags = planner.abnormal_taxpayers(
        history("A", filed), as_of=date(2026, 11, 23), ladder=LADDER, run_id="r"
    )
    assert bool(flags) is flagged
    if flagged:
        assert flags[0]["reason"] == "abnormal_escalation" and "3 consecutive months" in flags[0]["detail"]
