"""The filing-reminder DAG end to end on a reminder day: reminders only to those not filed."""

from __future__ import annotations

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
AS_OF = date(2026, 12, 8)  # 5 working days before the 2026-12-15 filing deadline


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    layout = DemoLayout(REPO, workdir=tmp_path_factory.mktemp("filing-dag"))
    prepare_sources(layout, as_of=AS_OF, debtors=400)
    with SmscSimulator(port=0, receipt_delay=0.05) as sim:
        env = airflow_environment(layout, smsc_host="127.0.0.1", smsc_port=sim.port)
        setup_airflow(layout, env, layout.logs / "setup.log")
        run_dag("tax_filing_reminders", AS_OF, env, layout.logs / "run1.log", conf=REHEARSAL_CONF)
        first = latest_run_figures(layout.store_db, "tax_filing_reminders")
        received = list(sim.messages)
        run_dag("tax_filing_reminders", AS_OF, env, layout.logs / "run2.log", conf=REHEARSAL_CONF)
        second = latest_run_figures(layout.store_db, "tax_filing_reminders")
        received_after = len(sim.messages)
    return layout, first, second, received, received_after


def test_reminders_go_to_taxpayers_not_filed_for_the_coming_deadline(run):
    layout, first, _, received, _ = run
    assert first["planned"] > 0 and first["submitted"] == first["planned"]
    assert len(received) == first["submitted"]
    engine = sa.create_engine(f"sqlite:///{layout.store_db}")
    with engine.connect() as conn:
        rows = pd.read_sql(sa.text("SELECT * FROM contact_ledger WHERE campaign = 'tax_filing'"), conn)
    engine.dispose()
    assert set(rows["period"]) == {"2026-12-15"}
    assert set(rows["attempt"]) == {1}
    levy = sa.create_engine(f"sqlite:///{layout.levy_db}")
    with levy.connect() as conn:
        filed = {
            t
            for (t,) in conn.execute(
                sa.text(
                    "SELECT taxpayer_id FROM filing_obligation WHERE deadline = '2026-12-15' "
                    "GROUP BY taxpayer_id HAVING MIN(CASE WHEN filed_on <= '2026-12-08' THEN 1 ELSE 0 END) = 1"
                )
            )
        }
    levy.dispose()
    reminded = {t for ids in rows["debtor_ids"] for t in ids.split(",")}
    assert reminded and not (reminded & filed), "a taxpayer who filed every return got a reminder"
    assert all("12月15日" in t for t in rows["message_text"])


def test_second_run_sends_nothing(run):
    _, first, second, received, received_after = run
    assert second["planned"] == 0 and second["submitted"] == 0
    assert received_after == len(received)
