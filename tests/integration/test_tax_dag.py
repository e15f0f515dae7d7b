"""The tax dunning DAG end to end: `airflow dags test` against the SMSC simulator over a real socket.

What the simulator received (the decoded text of every SMS) must be exactly what the ledger
says was submitted; a second run in the same week must send nothing.
"""

from __future__ import annotations

from collections import Counter
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa

from include.demo import (
    REHEARSAL_CONF,
    DemoLayout,
    airflow_environment,
    latest_run_figures,
    prepare_sources,
    run_dag,
    setup_airflow,
)
from include.simulators.smsc import SmscSimulator

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
AS_OF = date(2026, 11, 23)  # a Monday, a week after the 2026-11-16 deadline


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    layout = DemoLayout(REPO, workdir=tmp_path_factory.mktemp("tax-dag"))
    prepare_sources(layout, as_of=AS_OF, debtors=400)
    return layout


@pytest.fixture(scope="module")
def simulator():
    with SmscSimulator(port=0, receipt_delay=0.05, undeliverable_share=0.05) as sim:
        yield sim


@pytest.fixture(scope="module")
def env(layout, simulator):
    env = airflow_environment(layout, smsc_host="127.0.0.1", smsc_port=simulator.port)
    setup_airflow(layout, env, layout.logs / "setup.log")
    return env


def submitted_rows(layout):
    engine = sa.create_engine(f"sqlite:///{layout.store_db}")
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT phone, message_text, parts, state, message_ids FROM contact_ledger "
                "WHERE state IN ('SUBMITTED', 'DELIVERED', 'UNDELIVERED', 'UNKNOWN', 'EXPIRED')"
            )
        ).all()
    engine.dispose()
    return rows


@pytest.fixture(scope="module")
def first_run(layout, env, simulator):
    run_dag("tax_dunning", AS_OF, env, layout.logs / "run1.log", conf=REHEARSAL_CONF)
    return latest_run_figures(layout.store_db, "tax_dunning")


def test_first_run_sends_every_planned_contact(first_run, layout, simulator):
    assert first_run["extracted"] > 50
    assert 0 < first_run["debtors"] <= first_run["extracted"]
    assert first_run["quarantined"] > 0, "the demo data has dirty rows: some must be quarantined"
    assert first_run["planned"] > 0
    assert first_run["submitted"] == first_run["planned"]
    assert first_run["delivered"] + first_run["undelivered"] + first_run["pending"] == first_run["submitted"]
    assert first_run["undelivered"] > 0, "5% of destinations are undeliverable in the simulator"
    assert Path(first_run["report_path"]).exists()


def test_simulator_received_exactly_the_ledger_texts(first_run, layout, simulator):
    received = Counter((m["destination"], m["text"]) for m in simulator.messages)
    ledger = Counter((phone, text) for phone, text, *_ in submitted_rows(layout))
    assert received == ledger
    parts_sent = sum(len(m["message_ids"]) for m in simulator.messages)
    assert parts_sent == sum(r.parts for r in submitted_rows(layout))


def test_ledger_states_follow_the_receipts(first_run, layout):
    states = Counter(r.state for r in submitted_rows(layout))
    assert states["DELIVERED"] == first_run["delivered"]
    assert states["UNDELIVERED"] == first_run["undelivered"]


def test_second_run_in_the_same_week_sends_nothing(first_run, layout, env, simulator):
    before = len(simulator.messages)
    run_dag("tax_dunning", AS_OF, env, layout.logs / "run2.log", conf=REHEARSAL_CONF)
    second = latest_run_figures(layout.store_db, "tax_dunning")
    assert second["run_id"] != first_run["run_id"] or second["finished_at"] != first_run["finished_at"]
    assert second["planned"] == 0
    assert second["submitted"] == 0
    assert len(simulator.messages) == before


def test_quarantine_names_row_field_and_reason_without_full_phone_numbers(first_run, layout):
    engine = sa.create_engine(f"sqlite:///{layout.store_db}")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT record_key, field, reason, bad_value FROM quarantine")).all()
    engine.dispose()
    assert rows
    for key, field, reason, value in rows:
        assert key and field and reason
        if field == "mobile_normalized" and value:
            digits = "".join(ch for ch in value if ch.isdigit())
            assert len(digits) < 11, f"full phone number stored in quarantine: {value}"


def test_gx_data_docs_beside_the_run_report_without_phone_numbers(first_run):
    import re

    docs = Path(str(first_run["report_path"])).with_suffix(".data_docs")
    assert (docs / "index.html").is_file()
    text = "".join(p.read_text("utf-8") for p in docs.rglob("*.html"))
    assert "levy_overdue_liabilities" in text and "taxpayer_known" in text
    assert not re.findall(r"(?<![0-9])1[3-9][0-9]{9}(?![0-9])", text)


# -- stop rules, holdout and re-notification on real data -------------------------------------------


def ledger_frame(layout, where: str = "1 = 1"):
    import pandas as pd

    engine = sa.create_engine(f"sqlite:///{layout.store_db}")
    with engine.connect() as conn:
        frame = pd.read_sql(
            sa.text(f"SELECT * FROM contact_ledger WHERE campaign = 'tax_payment' AND {where}"), conn
        )
    engine.dispose()
    return frame


def test_open_promises_to_pay_are_suppressed_with_their_date(first_run, layout, simulator):
    rows = ledger_frame(layout, f"as_of = '{AS_OF.isoformat()}'")
    promised = rows[rows["reason"].fillna("").str.startswith("promise_to_pay until ")]
    assert len(promised) > 0, "the demo data has open promises to pay"
    levy = sa.create_engine(f"sqlite:///{layout.levy_db}")
    with levy.connect() as conn:
        open_until = dict(
            conn.execute(
                sa.text(
                    "SELECT taxpayer_id, MAX(promised_on) FROM tax_promise WHERE promised_on >= :d "
                    "AND recorded_on <= :d GROUP BY taxpayer_id"
                ),
                {"d": AS_OF.isoformat()},
            ).all()
        )
    levy.dispose()
    for _, row in promised.iterrows():
        ids = row["debtor_ids"].split(",")
        assert all(t in open_until for t in ids)
        assert row["reason"] == f"promise_to_pay until {max(open_until[t] for t in ids)}"
    sent_to = {m["destination"] for m in simulator.messages}
    assert not set(promised["phone"]) & sent_to


def test_holdout_taxpayers_are_recorded_and_never_contacted(first_run, layout, simulator):
    from include.dunning.reporting import holdout_group

    rows = ledger_frame(layout, f"as_of = '{AS_OF.isoformat()}'")
    held = rows[rows["reason"] == "holdout"]
    assert len(held) > 0, "5% of the taxpayers are held out by default"
    for ids in held["debtor_ids"]:
        debtors = set(ids.split(","))
        assert holdout_group(debtors, share=0.05, seed="tax_payment") == debtors
    assert not set(held["phone"]) & {m["destination"] for m in simulator.messages}
    # everyone planned is outside the group (or shares a number with someone outside it)
    planned = rows[rows["state"].isin(["SUBMITTED", "DELIVERED", "UNDELIVERED"])]
    for ids in planned["debtor_ids"]:
        debtors = set(ids.split(","))
        assert holdout_group(debtors, share=0.05, seed="tax_payment") != debtors


def age_contacts(layout, as_of: date) -> None:
    """Date the contacts of the ``as_of`` run back to that day, as if a week had really passed.

    The weekly cap compares a number's last submit time with the as-of date of the next plan,
    and the submit time is the wall clock of the first run (today, whatever ``AS_OF`` says): without
    this the week-2 run would see every week-1 message as sent "after" its own as-of date and
    cap them all, so the test would depend on the day it runs.
    """
    moment = f"{as_of.isoformat()} 01:30:00"  # 09:30 Asia/Shanghai
    engine = sa.create_engine(f"sqlite:///{layout.store_db}")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE contact_ledger SET claimed_at = :t, submitted_at = :t "
                "WHERE as_of = :as_of AND submitted_at IS NOT NULL"
            ),
            {"t": moment, "as_of": as_of.isoformat()},
        )
    engine.dispose()


@pytest.fixture(scope="module")
def next_week(first_run, layout, simulator):
    """The run a week later, with two GSM modem emulators for the voice re-notification."""
    from include.simulators.modem import ModemEmulator

    fast = {"sms_delay": 0.05, "ring_seconds": 0.1, "tts_seconds_per_char": 0.001, "answer_ratio": 0.7}
    with ModemEmulator("tcp", **fast) as one, ModemEmulator("tcp", **fast) as two:
        modems = {"gsm_modem_1": one, "gsm_modem_2": two}
        urls = {conn_id: m.url for conn_id, m in modems.items()}
        env = airflow_environment(layout, smsc_host="127.0.0.1", smsc_port=simulator.port, modems=urls)
        setup_airflow(layout, env, layout.logs / "setup-modems.log", modems=len(urls))
        before = len(simulator.messages)
        age_contacts(layout, AS_OF)
        conf = {**REHEARSAL_CONF, "modems": sorted(urls), "ring_timeout_seconds": 5}
        run_dag("tax_dunning", NEXT_WEEK, env, layout.logs / "run3.log", conf=conf)
        calls = [c for m in modems.values() for c in m.calls]
    return {"calls": calls, "sms": simulator.messages[before:]}


NEXT_WEEK = date(2026, 11, 30)


def test_undelivered_sms_are_followed_by_a_call_the_next_week(next_week, layout):
    week1 = ledger_frame(layout, f"as_of = '{AS_OF.isoformat()}' AND channel = 'sms'")
    undelivered = set(week1[week1["state"] == "UNDELIVERED"]["phone"])
    delivered = set(week1[week1["state"] == "DELIVERED"]["phone"])
    assert undelivered, "5% of destinations are undeliverable in the simulator"
    week2 = ledger_frame(layout, f"as_of = '{NEXT_WEEK.isoformat()}'")
    voice = week2[week2["channel"] == "voice"]
    called_rows = voice[voice["state"].isin(["DELIVERED", "UNDELIVERED"])]
    assert len(called_rows) > 0
    # voice only where the SMS did not arrive; every such number still dunned gets a call
    assert set(voice["phone"]) <= undelivered
    sent_sms_week2 = set(week2[(week2["channel"] == "sms") & week2["state"].isin(
        ["SUBMITTED", "DELIVERED", "UNDELIVERED", "UNKNOWN", "EXPIRED"])]["phone"])  # fmt: skip
    assert not sent_sms_week2 & undelivered
    everything1 = ledger_frame(layout, f"as_of = '{AS_OF.isoformat()}'")
    before = {
        r.phone: (r.state, r.reason if isinstance(r.reason, str) else "") for r in everything1.itertuples()
    }
    for phone in sent_sms_week2 & set(before):
        state, reason = before[phone]
        # held in week 1 by something that has ended since: a promise, a deferral, the cap
        ended = reason == "deferral" or (
            reason.startswith(("promise_to_pay until ", "frequency_cap"))
            and reason[-10:] < NEXT_WEEK.isoformat()
        )
        assert phone in delivered or state == "UNKNOWN" or (state == "SUPPRESSED" and ended), (state, reason)
    # a promise that lapsed unpaid during the week: dunning resumed
    reasons = everything1["reason"].fillna("")
    lapsed = everything1[
        reasons.str.startswith("promise_to_pay until ") & (reasons.str[-10:] < NEXT_WEEK.isoformat())
    ]
    assert len(lapsed) > 0, "the demo data has promises falling due in the week"
    resumed = week2[week2["phone"].isin(lapsed["phone"])]
    assert len(resumed) == len(lapsed)
    assert not resumed["reason"].fillna("").str.startswith("promise_to_pay").any()
    assert set(called_rows["gateway"]) == {"modem_pool"}
    assert (called_rows["attempt"] == 1).all()
    called = Counter(c.number[-11:] for c in next_week["calls"])
    assert set(called) == set(called_rows["phone"]) and max(called.values()) == 1
    # the SMS of week 2 went to the other numbers, one each
    assert Counter(m["destination"] for m in next_week["sms"]) == Counter(sent_sms_week2)
