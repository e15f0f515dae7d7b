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
