"""The electricity DAG over three SMPP gateways: `airflow dags test` against three SMSC simulators.

``DUNNING_SMPP_GATEWAYS`` lists a default gateway, a carrier gateway with prefix hints and an
urgent-lane gateway. Cut-off notices (the ladder's urgent stage) must all go through the urgent
gateway, the carrier's numbers through the carrier, the rest through the default; every gateway
used is collected from, so every submitted row ends settled by its receipt.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa

from include.demo import (
    REHEARSAL_CONF,
    DemoLayout,
    _airflow,
    airflow_environment,
    latest_run_figures,
    prepare_sources,
    run_dag,
    setup_airflow,
)
from include.dunning.routing import parse_prefixes
from include.simulators.smsc import SmscSimulator

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
AS_OF = date(2026, 11, 30)
CMCC = "134-139,147,150-152,157-159,178,182-184,187,188,198"
GATEWAYS = {
    "smpp_default": {"lane": "normal"},
    "smpp_cmcc": {"lane": "normal", "prefixes": CMCC},
    "smpp_urgent": {"lane": "urgent"},
}


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    layout = DemoLayout(REPO, workdir=tmp_path_factory.mktemp("routing-dag"))
    prepare_sources(layout, as_of=AS_OF, debtors=400)
    return layout


@pytest.fixture(scope="module")
def sims():
    started = {name: SmscSimulator(port=0, receipt_delay=0.05, undeliverable_share=0.05) for name in GATEWAYS}
    for sim in started.values():
        sim.start()
    try:
        yield started
    finally:
        for sim in started.values():
            sim.stop()


@pytest.fixture(scope="module")
def run(layout, sims):
    env = airflow_environment(layout, smsc_host="127.0.0.1", smsc_port=sims["smpp_default"].port)
    env["DUNNING_SMPP_GATEWAYS"] = ",".join(GATEWAYS)
    for name, extra in GATEWAYS.items():
        env[f"AIRFLOW_CONN_{name.upper()}"] = json.dumps(
            {
                "conn_type": "smpp",
                "host": "127.0.0.1",
                "port": sims[name].port,
                "login": "dunning",
                "password": "demo",
                "extra": {"source_addr": "95598", "window": 50, **extra},
            }
        )
    setup_airflow(layout, env, layout.logs / "setup.log")
    for name in GATEWAYS:
        _airflow(["pools", "set", name, "4", f"binds to {name}"], env, layout.logs / "setup.log", what="pool")
    run_id = run_dag("power_dunning", AS_OF, env, layout.logs / "run1.log", conf=REHEARSAL_CONF)
    return run_id, latest_run_figures(layout.store_db, "power_dunning")


def sms_rows(layout) -> list[sa.Row]:
    engine = sa.create_engine(f"sqlite:///{layout.store_db}")
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT phone, stage, gateway, state, batch_id, parts FROM contact_ledger "
                "WHERE channel = 'sms' AND state NOT IN ('SUPPRESSED')"
            )
        ).all()
    engine.dispose()
    return rows


def test_every_planned_sms_is_sent_once_through_its_routed_gateway(run, layout, sims):
    _run_id, figures = run
    rows = sms_rows(layout)
    assert figures["submitted"] == figures["planned"] > 0
    urgent = {r.phone for r in rows if r.stage == "cutoff_notice"}
    assert urgent, "the demo data has cut-off notices at this date"
    received = {name: Counter(m["destination"] for m in sim.messages) for name, sim in sims.items()}
    assert set(received["smpp_urgent"]) == urgent
    prefixes = parse_prefixes(CMCC)
    carrier = {r.phone for r in rows if r.gateway == "smpp_cmcc"}
    default = {r.phone for r in rows if r.gateway == "smpp_default"}
    assert carrier and default
    assert all(p.startswith(prefixes) for p in carrier)
    assert not any(p.startswith(prefixes) for p in default)
    assert set(received["smpp_cmcc"]) == carrier
    assert set(received["smpp_default"]) == default
    assert sum(sum(c.values()) for c in received.values()) == len(rows), "each row sent exactly once"


def test_urgent_batches_are_their_own_and_every_gateway_was_collected(run, layout):
    rows = sms_rows(layout)
    for r in rows:
        urgent_batch = r.batch_id.rsplit(":", 1)[1].startswith("u")
        assert urgent_batch == (r.stage == "cutoff_notice"), r.batch_id
        assert r.batch_id.split(":")[2] == r.gateway
    states = Counter(r.state for r in rows)
    assert states["SUBMITTED"] == 0, "receipts from all three gateways settle every row"
    assert states["DELIVERED"] + states["UNDELIVERED"] == len(rows)
