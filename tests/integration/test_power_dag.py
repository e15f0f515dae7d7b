"""The electricity dunning DAG end to end: `airflow dags test` against the SMSC simulator.

Checks the ladder's promises on real demo data: cut-off notices only for bills more than 30
days overdue with a logged payment demand, voice stages recorded (not silently dropped), one
message per number, and a second run the same day sends nothing.
"""

from __future__ import annotations

from collections import Counter
from datetime import date
from pathlib import Path

import pandas as pd
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
AS_OF = date(2026, 11, 30)  # bills due on the 10th and 15th are in the voice stage (15-28 days)


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    layout = DemoLayout(REPO, workdir=tmp_path_factory.mktemp("power-dag"))
    prepare_sources(layout, as_of=AS_OF, debtors=500)
    return layout


@pytest.fixture(scope="module")
def simulator():
    with SmscSimulator(port=0, receipt_delay=0.05) as sim:
        yield sim


@pytest.fixture(scope="module")
def modems():
    from include.simulators.modem import ModemEmulator

    fast = {"sms_delay": 0.05, "ring_seconds": 0.1, "tts_seconds_per_char": 0.001, "answer_ratio": 0.7}
    with ModemEmulator("tcp", **fast) as one, ModemEmulator("tcp", **fast) as two:
        yield {"gsm_modem_1": one, "gsm_modem_2": two}


@pytest.fixture(scope="module")
def first_run(layout, simulator, modems):
    urls = {conn_id: m.url for conn_id, m in modems.items()}
    env = airflow_environment(layout, smsc_host="127.0.0.1", smsc_port=simulator.port, modems=urls)
    setup_airflow(layout, env, layout.logs / "setup.log", modems=len(urls))
    conf = {**REHEARSAL_CONF, "modems": sorted(urls), "ring_timeout_seconds": 5}
    run_dag("power_dunning", AS_OF, env, layout.logs / "run1.log", conf=conf)
    figures = latest_run_figures(layout.store_db, "power_dunning")
    figures["env"] = env
    figures["conf"] = conf
    return figures


def ledger(layout) -> pd.DataFrame:
    engine = sa.create_engine(f"sqlite:///{layout.store_db}")
    with engine.connect() as conn:
        frame = pd.read_sql(sa.text("SELECT * FROM contact_ledger WHERE campaign = 'power_dunning'"), conn)
    engine.dispose()
    return frame


def test_first_run_sends_what_it_planned(first_run, simulator, layout):
    assert first_run["planned"] > 0
    assert first_run["submitted"] == first_run["planned"]
    rows = ledger(layout)
    assert (
        len(simulator.messages)
        == (rows["channel"] == "sms").sum() - (rows[rows["channel"] == "sms"]["state"] == "SUPPRESSED").sum()
    )


def test_cutoff_notices_only_with_a_logged_demand_after_day_30(first_run, layout):
    rows = ledger(layout)
    cutoff = rows[rows["stage"] == "cutoff_notice"]
    assert len(cutoff) > 0, "the demo data has bills > 30 days overdue with a logged 催交"
    billing = sa.create_engine(f"sqlite:///{layout.billing_db}")
    with billing.connect() as conn:
        demanded = {a for (a,) in conn.execute(sa.text("SELECT DISTINCT account_no FROM payment_demand"))}
        due = dict(
            conn.execute(sa.text("SELECT account_no, MIN(due_date) FROM bill GROUP BY account_no")).all()
        )
    billing.dispose()
    for _, row in cutoff.iterrows():
        accounts = row["debtor_ids"].split(",")
        assert any(a in demanded for a in accounts)
        assert min((AS_OF - date.fromisoformat(due[a])).days for a in accounts) > 30
        assert "中止供电" in row["message_text"] and "以书面停电通知为准" in row["message_text"]


def test_voice_stages_are_called_through_the_modem_pool(first_run, layout, modems):
    rows = ledger(layout)
    assert rows["idempotency_key"].is_unique
    voice = rows[(rows["channel"] == "voice") & (rows["state"] != "SUPPRESSED")]
    assert len(voice) > 0, "the demo data has bills 15-28 days overdue (the voice stage)"
    assert set(voice["gateway"]) == {"modem_pool"}
    assert set(voice["state"]) <= {"DELIVERED", "UNDELIVERED"}
    assert (voice["state"] == "DELIVERED").any() and (voice["state"] == "UNDELIVERED").any()
    called = Counter(c.number[-11:] for m in modems.values() for c in m.calls)
    # `airflow dags test` runs the mapped modem tasks one after the other, so one modem may take
    # every call here; tests/integration/test_modem_pool.py proves the pool shares them.
    assert set(called) == set(voice["phone"])
    assert max(called.values()) == 1, "nobody is called twice"
    # one message per number and purpose (dunning vs balance alert) per day
    sms = rows[rows["channel"] == "sms"]
    purpose = sms["stage"].where(sms["stage"] == "low_balance", "dunning")
    assert not sms.assign(purpose=purpose).duplicated(["phone", "purpose"]).any()


def test_texts_received_are_the_ledger_texts(first_run, layout, simulator):
    rows = ledger(layout)
    sms = rows[rows["channel"] == "sms"]
    sent = sms[sms["state"].isin(["SUBMITTED", "DELIVERED", "UNDELIVERED", "UNKNOWN", "EXPIRED"])]
    assert Counter(zip(sent["phone"], sent["message_text"], strict=True)) == Counter(
        (m["destination"], m["text"]) for m in simulator.messages
    )
    assert all(t.startswith("【示范供电】") for t in sent["message_text"])


def test_second_run_the_same_day_sends_nothing(first_run, layout, simulator):
    before = len(simulator.messages)
    run_dag("power_dunning", AS_OF, first_run["env"], layout.logs / "run2.log", conf=first_run["conf"])
    second = latest_run_figures(layout.store_db, "power_dunning")
    assert second["planned"] == 0 and second["submitted"] == 0
    assert len(simulator.messages) == before


def test_top_ups_and_promises_stop_dunning_with_the_reason(first_run, layout, simulator):
    rows = ledger(layout)
    billing = sa.create_engine(f"sqlite:///{layout.billing_db}")
    with billing.connect() as conn:
        topped = {a for (a,) in conn.execute(sa.text("SELECT DISTINCT account_no FROM account_topup"))}
        promised = dict(
            conn.execute(
                sa.text(
                    "SELECT account_no, MAX(promised_on) FROM bill_promise WHERE promised_on >= :d "
                    "AND recorded_on <= :d GROUP BY account_no"
                ),
                {"d": AS_OF.isoformat()},
            ).all()
        )
    billing.dispose()
    reasons = rows["reason"].fillna("")
    recharge = rows[reasons.str.startswith("recharge: ")]
    promise = rows[reasons.str.startswith("promise_to_pay until ")]
    assert len(recharge) > 0, "the demo data has top-ups after due dates and balance snapshots"
    assert len(promise) > 0, "the demo data has open promises to pay"
    assert (recharge["state"] == "SUPPRESSED").all() and (promise["state"] == "SUPPRESSED").all()
    for ids in recharge["debtor_ids"]:
        assert set(ids.split(",")) & topped
    for ids, reason in zip(promise["debtor_ids"], promise["reason"], strict=True):
        dates = [promised[a] for a in ids.split(",") if a in promised]
        assert dates and reason == f"promise_to_pay until {max(dates)}"
    # a number can still get its other purpose (a balance alert vs dunning), never the stopped one
    received = {(m["destination"], m["text"]) for m in simulator.messages}
    for _, row in pd.concat([recharge, promise]).iterrows():
        same = rows[(rows["phone"] == row["phone"]) & (rows["stage"] == row["stage"])]
        assert (same["state"] == "SUPPRESSED").all()
        assert (row["phone"], row["message_text"]) not in received


def test_holdout_accounts_are_recorded_and_not_dunned(first_run, layout, simulator):
    from include.dunning.reporting import holdout_group

    rows = ledger(layout)
    held = rows[rows["reason"] == "holdout"]
    assert len(held) > 0, "5% of the accounts are held out by default"
    assert not (held["stage"].isin(["cutoff_notice", "low_balance"])).any()
    for ids in held["debtor_ids"]:
        accounts = set(ids.split(","))
        assert holdout_group(accounts, share=0.05, seed="power_dunning") == accounts
    sent_sms = {m["destination"] for m in simulator.messages}
    dunning_sent = rows[(rows["stage"] != "low_balance") & rows["state"].isin(["DELIVERED", "UNDELIVERED"])]
    assert not set(held["phone"]) & set(dunning_sent["phone"])
    assert set(dunning_sent[dunning_sent["channel"] == "sms"]["phone"]) <= sent_sms
