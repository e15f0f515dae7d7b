"""The planner turns overdue liabilities into exactly one correct message per taxpayer."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest

from include.dunning import planner, templates
from include.dunning.planner import TaxPaymentCampaign

AS_OF = date(2026, 4, 10)


def liability(
    taxpayer_id: str,
    *,
    outstanding: str,
    deadline: str,
    tax_type: str = "增值税",
    period: str = "2026-02",
    phone: str = "13800138000",
    name: str = "杭州示例贸易有限公司",
):
    return {
        "taxpayer_id": taxpayer_id,
        "taxpayer_name": name,
        "tax_type": tax_type,
        "period": period,
        "outstanding": outstanding,
        "deadline": deadline,
        "mobile_normalized": phone,
    }


def plan(records, as_of=AS_OF, **eligibility):
    return list(
        planner.plan_tax_payment(
            records,
            **eligibility,
            as_of=as_of,
            run_id="r1",
            planned_at=datetime(2026, 4, 10, 1),
            campaign=TaxPaymentCampaign(),
        )
    )


def test_single_liability_message_has_domain_example_surcharge():
    # DOMAIN §1: 10,000.00 due 2026-03-16, as of 2026-04-10 -> 25 days -> 125.00
    (row,) = plan([liability("91330100MA27XXXX1A", outstanding="10000.00", deadline="2026-03-16")])
    assert row["surcharge"] == Decimal("125.00")
    assert row["amount"] == Decimal("10000.00")
    assert row["message_text"] == (
        "【示范市税务】杭州示例贸易有限公司：您2026年2月增值税10,000.00元已过缴款期限3月16日仍未缴纳，"
        "截至4月10日滞纳金125.00元（按日万分之五）。请尽快缴纳，已缴请忽略。咨询12366。"
    )
    assert row["parts"] == templates.sms_parts(row["message_text"])
    assert row["state"] == "PLANNED" and row["period"] == "2026-W15"


def test_several_liabilities_of_one_taxpayer_become_one_message():
    rows = plan(
        [
            liability("A", outstanding="10000.00", deadline="2026-03-16"),
            liability("A", outstanding="2000.00", deadline="2026-02-24", tax_type="城市维护建设税"),
            liability("B", outstanding="300.00", deadline="2026-03-16", phone="13900139000"),
        ]
    )
    assert [r["debtor_id"] for r in rows] == ["A", "B"]
    a = rows[0]
    # 2,000.00 from 2026-02-24 to 2026-04-10 = 45 days -> 45.00; plus 125.00
    assert a["surcharge"] == Decimal("170.00")
    assert a["amount"] == Decimal("12000.00")
    assert "2笔税款合计12,000.00元" in a["message_text"] and "最早2月24日" in a["message_text"]


def test_keys_are_stable_within_a_week_and_change_the_next_week():
    rec = [liability("A", outstanding="100.00", deadline="2026-03-16")]
    monday, friday, next_monday = date(2026, 4, 6), date(2026, 4, 10), date(2026, 4, 13)
    assert plan(rec, monday)[0]["idempotency_key"] == plan(rec, friday)[0]["idempotency_key"]
    assert plan(rec, friday)[0]["idempotency_key"] != plan(rec, next_monday)[0]["idempotency_key"]


def test_iso_week_at_year_end():
    assert planner.campaign_week(date(2026, 12, 31)) == "2026-W53"
    assert planner.campaign_week(date(2027, 1, 4)) == "2027-W01"


def test_default_template_passes_the_lint():
    TaxPaymentCampaign().lint()


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("【示范市税务】{{ name }}{{ unknown_thing }}", "unknown variables unknown_thing"),
        ("{{ name }}：请缴税。", "must start with a signature"),
        ("【示范市税务】{{ name }}：本短信视为送达。", "must not claim legal service"),
        ("【示范市税务】" + "欠" * 300, "more than 4"),
        ("【示范市税务】{% if %}", "payment_overdue.j2:1"),
    ],
    ids=["unknown-variable", "no-signature", "legal-claim", "too-long", "syntax-error"],
)
def test_lint_refuses_bad_templates_naming_the_file(tmp_path, source, problem):
    (tmp_path / "sms").mkdir()
    (tmp_path / "sms" / "payment_overdue.j2").write_text(source, encoding="utf-8")
    with pytest.raises(templates.TemplateProblem) as err:
        templates.lint_template(
            "sms/payment_overdue.j2",
            allowed_variables=planner.TAX_PAYMENT_VARIABLES,
            sample={"name": "某公司"},
            root=tmp_path,
        )
    assert problem in str(err.value)
    assert "payment_overdue.j2" in str(err.value)


def test_lint_names_a_missing_template(tmp_path):
    with pytest.raises(templates.TemplateProblem, match="does not exist"):
        templates.lint_template("sms/nope.j2", allowed_variables=(), sample={}, root=tmp_path)


def test_render_refuses_undefined_variables():
    import jinja2

    with pytest.raises(jinja2.UndefinedError):
        templates.render("sms/tax/payment_overdue.j2", {"count": 1})


def test_float_amounts_from_sqlite_convert_exactly():
    (row,) = plan([liability("A", outstanding=1234.5, deadline="2026-03-16")])
    assert row["amount"] == Decimal("1234.50")
    (row,) = plan([liability("A", outstanding=0.1 + 0.2, deadline="2026-03-16")])
    assert row["amount"] == Decimal("0.30")


def test_taxpayers_sharing_a_phone_get_one_message_naming_them():
    rows = plan(
        [
            liability("A", outstanding="100.00", deadline="2026-03-16", name="甲公司"),
            liability("B", outstanding="200.00", deadline="2026-02-24", name="乙公司"),
            liability("C", outstanding="300.00", deadline="2026-03-16", name="丙公司"),
        ]
    )
    assert len(rows) == 1
    (row,) = rows
    assert row["debtor_ids"] == "A,B,C"
    assert row["amount"] == Decimal("600.00")
    assert "您联系的3户纳税人（甲公司、乙公司等）共3笔税款合计600.00元" in row["message_text"]
    assert row["parts"] <= TaxPaymentCampaign().max_parts


def test_key_is_per_phone_so_the_weekly_cap_holds_per_person():
    one = plan([liability("A", outstanding="1.00", deadline="2026-03-16")])
    two = plan(
        [
            liability("A", outstanding="1.00", deadline="2026-03-16"),
            liability("B", outstanding="1.00", deadline="2026-03-16"),
        ]
    )
    assert one[0]["idempotency_key"] == two[0]["idempotency_key"]


def test_opted_out_number_is_suppressed_with_the_reason():
    (row,) = plan([liability("A", outstanding="1.00", deadline="2026-03-16")], opted_out={"13800138000"})
    assert (row["state"], row["reason"]) == ("SUPPRESSED", "opted_out")


def test_deferral_in_force_suppresses_and_names_it():
    rec = {**liability("A", outstanding="1.00", deadline="2026-03-16"), "deferred_until": "2026-05-15"}
    (row,) = plan([rec])
    assert (row["state"], row["reason"]) == ("SUPPRESSED", "deferral")
    # once the deferral has ended, the liability is dunned again
    (row,) = plan([{**rec, "deferred_until": "2026-04-09"}])
    assert row["state"] == "PLANNED"


def test_only_the_deferred_liability_is_left_out_of_a_shared_message():
    rows = plan(
        [
            {**liability("A", outstanding="100.00", deadline="2026-03-16"), "deferred_until": "2026-06-01"},
            liability("B", outstanding="200.00", deadline="2026-03-16"),
        ]
    )
    (row,) = rows
    assert row["state"] == "PLANNED" and row["amount"] == Decimal("200.00") and row["debtor_ids"] == "B"


@pytest.mark.parametrize(
    ("last", "state"),
    [(datetime(2026, 4, 4, 10), "SUPPRESSED"), (datetime(2026, 4, 3, 10), "PLANNED")],
    ids=["6-days-ago-held", "7-days-ago-sent"],
)
def test_frequency_cap_of_seven_days_across_campaigns(last, state):
    (row,) = plan(
        [liability("A", outstanding="1.00", deadline="2026-03-16")], last_contact={"13800138000": last}
    )
    assert row["state"] == state
    if state == "SUPPRESSED":
        assert row["reason"] == "frequency_cap: last contact 2026-04-04"


# -- stop rules, holdout, re-notification (ladder-driven) -------------------------------------------


def counts(**kw):
    """One (phone, stage, period) entry of ``DunningStore.contact_history``."""
    base = {
        "first_as_of": date(2026, 4, 3),
        "last_as_of": date(2026, 4, 3),
        "sms_delivered": 0,
        "sms_undelivered": 0,
        "sms_unanswered": 0,
        "voice_answered": 0,
        "voice_unanswered": 0,
        "voice_failed": 0,
    }
    return {**base, **kw}


def plan_with(records, campaign, as_of=AS_OF, **kw):
    return list(
        planner.plan_tax_payment(
            records, as_of=as_of, run_id="r1", planned_at=datetime(2026, 4, 10, 1), campaign=campaign, **kw
        )
    )


def test_open_promise_to_pay_suppresses_until_its_date_then_dunning_resumes():
    rec = {**liability("A", outstanding="100.00", deadline="2026-03-16"), "promised_until": "2026-04-20"}
    (row,) = plan([rec])
    assert (row["state"], row["reason"]) == ("SUPPRESSED", "promise_to_pay until 2026-04-20")
    (row,) = plan([rec], as_of=date(2026, 4, 20))  # the promised day itself: still held
    assert row["state"] == "SUPPRESSED"
    (row,) = plan([rec], as_of=date(2026, 4, 21))  # the date passed unpaid
    assert row["state"] == "PLANNED" and row["debtor_ids"] == "A"


def test_a_promise_of_one_taxpayer_leaves_only_that_taxpayer_out_of_a_shared_message():
    rows = plan(
        [
            {**liability("A", outstanding="100.00", deadline="2026-03-16"), "promised_until": "2026-05-01"},
            liability("B", outstanding="200.00", deadline="2026-03-16"),
        ]
    )
    (row,) = rows
    assert (row["state"], row["debtor_ids"], row["amount"]) == ("PLANNED", "B", Decimal("200.00"))


def test_stage_and_max_attempts_come_from_the_tax_ladder():
    # payment_overdue: from day 1, a new attempt every 7 days, at most 8 -> the last on days 50..56
    day56 = liability("A", outstanding="100.00", deadline="2026-02-13")  # 56 days before 2026-04-10
    day57 = liability("A", outstanding="100.00", deadline="2026-02-12")
    (row,) = plan([day56])
    assert (row["state"], row["stage"], row["channel"]) == ("PLANNED", "payment_overdue", "sms")
    (row,) = plan([day57])
    assert (row["state"], row["reason"]) == ("SUPPRESSED", "max_attempts: payment_overdue allows 8")
    # a liability still within the ladder keeps the number dunned, listing both
    (row,) = plan([day57, liability("A", outstanding="50.00", deadline="2026-03-16")])
    assert row["state"] == "PLANNED" and row["amount"] == Decimal("150.00")


def test_holdout_is_a_stable_seeded_share_of_taxpayers():
    from include.dunning.reporting import holdout_group

    campaign = TaxPaymentCampaign(holdout_share=0.3)
    records = [
        liability(f"T{n:03d}", outstanding="10.00", deadline="2026-03-16", phone=f"138{n:08d}")
        for n in range(200)
    ]
    rows = plan_with(records, campaign)
    held = {r["debtor_id"] for r in rows if r["reason"] == "holdout"}
    assert held == holdout_group([f"T{n:03d}" for n in range(200)], share=0.3, seed="tax_payment")
    assert 30 < len(held) < 90
    assert {r["state"] for r in rows if r["debtor_id"] not in held} == {"PLANNED"}
    assert held == {r["debtor_id"] for r in plan_with(records[::-1], campaign) if r["reason"] == "holdout"}
    assert not [r for r in plan_with(records, TaxPaymentCampaign(holdout_share=0.0)) if r["reason"]]


def test_a_shared_number_is_held_out_only_when_every_taxpayer_behind_it_is():
    from include.dunning.reporting import holdout_group

    campaign = TaxPaymentCampaign(holdout_share=0.3)
    ids = [f"T{n:03d}" for n in range(50)]
    held = sorted(holdout_group(ids, share=0.3, seed="tax_payment"))
    free = sorted(set(ids) - set(held))
    both = [liability(held[0], outstanding="1.00", deadline="2026-03-16"),
            liability(free[0], outstanding="1.00", deadline="2026-03-16")]  # fmt: skip
    (row,) = plan_with(both, campaign)
    assert row["state"] == "PLANNED"
    (row,) = plan_with([liability(t, outstanding="1.00", deadline="2026-03-16") for t in held[:2]], campaign)
    assert (row["state"], row["reason"]) == ("SUPPRESSED", "holdout")


def test_undelivered_sms_moves_to_a_voice_call_on_the_next_run():
    history = {("13800138000", "payment_overdue", "2026-W14"): counts(sms_undelivered=1)}
    rec = [liability("A", outstanding="10000.00", deadline="2026-03-16")]
    (row,) = plan_with(rec, TaxPaymentCampaign(voice_gateway="modem_pool"), history=history)
    assert (row["state"], row["channel"], row["attempt"], row["gateway"]) == (
        "PLANNED",
        "voice",
        1,
        "modem_pool",
    )
    assert row["template"] == "voice/tax/payment_overdue.j2" and "【" not in row["message_text"]
    assert "滞纳金125.00元" in row["message_text"]
    # without modems the call is recorded, not dropped
    (row,) = plan_with(rec, TaxPaymentCampaign(), history=history)
    assert (row["state"], row["channel"]) == ("SUPPRESSED", "voice")
    assert row["reason"] == "voice channel not configured: no modems"
    # the weekly cap still holds across channels
    (row,) = plan_with(
        rec, TaxPaymentCampaign(voice_gateway="modem_pool"), history=history,
        last_contact={"13800138000": datetime(2026, 4, 8, 2)},
    )  # fmt: skip
    assert row["reason"] == "frequency_cap: last contact 2026-04-08"


def test_voice_after_two_unanswered_sms_and_back_to_sms_when_the_call_cap_is_reached():
    campaign = TaxPaymentCampaign(voice_gateway="modem_pool")
    rec = [liability("A", outstanding="100.00", deadline="2026-03-16")]
    one = {("13800138000", "payment_overdue", "2026-W13"): counts(sms_delivered=1, sms_unanswered=1)}
    assert plan_with(rec, campaign, history=one)[0]["channel"] == "sms"
    two = {**one, ("13800138000", "payment_overdue", "2026-W14"): counts(sms_delivered=1, sms_unanswered=1)}
    (row,) = plan_with(rec, campaign, history=two)
    assert (row["channel"], row["attempt"]) == ("voice", 1)
    called = {**two, ("13800138000", "payment_overdue", "2026-W15"): counts(voice_unanswered=2)}
    (row,) = plan_with(rec, campaign, history=called)
    assert (row["channel"], row["state"]) == ("sms", "PLANNED")  # 2 calls: the voice cap


def test_history_of_an_earlier_episode_does_not_count():
    # contacts that ended before the liability's deadline belonged to an earlier, settled debt
    old = {("13800138000", "payment_overdue", "2026-W05"): counts(
        first_as_of=date(2026, 1, 26), last_as_of=date(2026, 1, 30), sms_undelivered=3)}  # fmt: skip
    (row,) = plan_with(
        [liability("A", outstanding="1.00", deadline="2026-03-16")],
        TaxPaymentCampaign(voice_gateway="modem_pool"),
        history=old,
    )
    assert row["channel"] == "sms"


def test_failed_contacts_flag_the_debtors_for_staff_with_what_was_tried():
    from include.dunning.ladder import load_ladder

    history = {
        ("13800138000", "payment_overdue", "2026-W13"): counts(sms_undelivered=1),
        ("13800138000", "payment_overdue", "2026-W14"): counts(voice_unanswered=2, voice_answered=0),
        ("13900139000", "payment_overdue", "2026-W14"): counts(sms_undelivered=2),
    }
    records = [
        liability("A", outstanding="1.00", deadline="2026-03-16"),
        liability("B", outstanding="1.00", deadline="2026-03-16"),
        liability("C", outstanding="1.00", deadline="2026-03-16", phone="13900139000"),
    ]
    flags = planner.failed_contact_flags(
        records, history=history, ladder=load_ladder("tax"), as_of=AS_OF, run_id="r1",
        campaign="tax_payment", debtor_column="taxpayer_id",
    )  # fmt: skip
    assert sorted(f["debtor_id"] for f in flags) == ["A", "B"]  # C: 2 failures, below 3
    assert flags[0]["reason"] == "failed_contacts"
    assert flags[0]["detail"].startswith(
        "3 failed contacts since 2026-04-03: 1 SMS undelivered, 2 calls unanswered"
    )


def test_contact_history_from_a_real_ledger_drives_the_next_channel(tmp_path):
    from include.dunning.ledger import DunningStore

    store = DunningStore(f"sqlite:///{tmp_path / 'store.db'}")
    store.create_schema()
    rec = [
        liability("A", outstanding="100.00", deadline="2026-03-16"),
        liability("B", outstanding="100.00", deadline="2026-03-16", phone="13900139000"),
    ]
    first = plan_with(rec, TaxPaymentCampaign(), as_of=date(2026, 4, 3))
    store.upsert_planned(first)
    with store.engine.begin() as conn:
        for row, state in zip(first, ("UNDELIVERED", "DELIVERED"), strict=True):
            conn.exec_driver_sql(
                "UPDATE contact_ledger SET state = ?, submitted_at = '2026-04-03 02:00:00' WHERE idempotency_key = ?",
                (state, row["idempotency_key"]),
            )
    history = store.contact_history("tax_payment", since=date(2026, 1, 1))
    assert history[("13800138000", "payment_overdue", "2026-W14")]["sms_undelivered"] == 1
    assert history[("13900139000", "payment_overdue", "2026-W14")]["sms_unanswered"] == 1
    rows = plan_with(rec, TaxPaymentCampaign(voice_gateway="modem_pool"), history=history)
    assert [(r["debtor_id"], r["channel"]) for r in rows] == [("A", "voice"), ("B", "sms")]
    # a reply after the delivered SMS: it is not unanswered
    store.record_inbound("smpp_default", "13900139000", None, "已缴")
    history = store.contact_history("tax_payment", since=date(2026, 1, 1))
    assert history[("13900139000", "payment_overdue", "2026-W14")]["sms_unanswered"] == 0
