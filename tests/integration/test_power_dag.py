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
AS_OF = date(2026, 11, 23)


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
def first_run(layout, simulator):
    env = airflow_environment(layout, smsc_host="127.0.0.1", smsc_port=simulator.port)
    setup_airflow(layout, env, layout.logs / "setup.log")
    run_dag("power_dunning", AS_OF, env, layout.logs / "run1.log", conf=REHEARSAL_CONF)
    figures = latest_run_figures(layout.store_db, "power_dunning")
    figures["env"] = env
    return figures


def ledger(layout) -> pd.DataFrame:
    engine = sa.create_engine(f"sqlite:///{layout.store_db}")
    with engine.connect() as conn:
        frame = pd.read_sql(sa.text("SELECT * FROM contact_ledger WHERE campaign = 'power_dunning'"), conn)
    engine.dispose()
    return frame


def test_first_run_sends_what_it_planned(first_run, simulator):
    assert first_run["planned"] > 0
    assert first_run["submitted"] == first_run["planned"]
    assert len(simulator.messages) == first_run["submitted"]


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


def test_every_decision_is_a_row_and_voice_is_recorded_not_dropped(first_run, layout):
    rows = ledger(layout)
    assert rows["idempotency_key"].is_unique
    states = Counter(rows["state"])
    assert states["SUPPRESSED"] >= 0
    voice = rows[rows["channel"] == "voice"]
    assert (voice["state"] == "SUPPRESSED").all()
    assert voice["reason"].str.contains("voice channel not configured").all()
    # one message per number and purpose (dunning vs balance alert) per day
    sms = rows[rows["channel"] == "sms"]
    purpose = sms["stage"].where(sms["stage"] == "low_balance", "dunning")
    assert not sms.assign(purpose=purpose).duplicated(["phone", "purpose"]).any()


def test_texts_received_are_the_ledger_texts(first_run, layout, simulator):
    rows = ledger(layout)
    sent = rows[rows["state"].isin(["SUBMITTED", "DELIVERED", "UNDELIVERED", "UNKNOWN", "EXPIRED"])]
    assert Counter(zip(sent["phone"], sent["message_text"], strict=True)) == Counter(
        (m["destination"], m["text"]) for m in simulator.messages
    )
    assert all(t.startswith("【示范供电】") for t in sent["message_text"])


def test_second_run_the_same_day_sends_nothing(first_run, layout, simulator):
    before = len(simulator.messages)
    run_dag("power_dunning", AS_OF, first_run["env"], layout.logs / "run2.log", conf=REHEARSAL_CONF)
    second = latest_run_figures(layout.store_db, "power_dunning")
    assert second["planned"] == 0 and second["submitted"] == 0
    assert len(simulator.messages) == before
