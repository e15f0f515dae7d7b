"""A send task SIGKILLed mid-batch and retried: nothing lost, duplicates bounded by the in-doubt limit.

The real send path (``SmppSendOperator.execute``) runs in a child process against the SMSC
simulator over a real socket, with 2,000 planned rows in a dunning store. The child is
killed with SIGKILL while a window of submit_sm waits for its responses (the simulator holds
them for ``LATENCY`` seconds), then a new process runs the same batch again, as Airflow's
retry would. Run on SQLite (ledger rows updated per claim and answer) and on PostgreSQL
(claims and answers in the send log; the retry settles what the killed try logged). The
send path claims rows ahead of the bind and records answers behind it
(operators/smpp_pipeline.py): rows claimed and never sent are resent once, not twice; rows
sent with no recorded answer (at most one window, the default ``max_in_doubt``) are
the only possible duplicates.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from ledger_rows import sms_contact

from include.dunning import ledger
from include.dunning.ledger import DunningStore
from include.simulators.smsc import SmscSimulator

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
AS_OF = date(2026, 11, 23)
ROWS = 2000
WINDOW = 50
MAX_IN_DOUBT = WINDOW  # send_rows' default bound on sent rows with no recorded answer
LATENCY = 0.1
KILL_AFTER = 300

CHILD = """
import json, sys
from operators.smpp import SmppSendOperator

class TI:
    dag_id = "tax_dunning"

    def xcom_push(self, key, value):
        pass

# Any hour: the test is about kill and retry, not the SMS sending window.
op = SmppSendOperator(task_id="send_sms", batch_id=sys.argv[1], respect_sending_window=False)
print("COUNTS " + json.dumps(op.execute({"run_id": "r1", "ti": TI(), "params": {}})), flush=True)
"""


def planned_row(n: int) -> dict:
    return sms_contact(n)


def rows_by_state(store: DunningStore) -> dict[str, set[str]]:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT state, phone FROM contact_ledger")).all()
    found: dict[str, set[str]] = {}
    for state, phone in rows:
        found.setdefault(state, set()).add(phone)
    return found


def start_send(batch_id: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, batch_id],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def store_and_conn(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[DunningStore, dict]:
    """Yield an empty dunning store and its Airflow connection: SQLite (ledger updated per
    claim and answer) and PostgreSQL (claims and answers in the send log, settled in bulk)."""
    if request.param == "sqlite":
        path = tmp_path / "store.sqlite"
        return DunningStore(f"sqlite:///{path}"), {"conn_type": "sqlite", "host": str(path)}
    url = sa.engine.make_url(request.getfixturevalue("pg_url"))
    conn = {
        "conn_type": "postgres",
        "host": url.host,
        "port": url.port,
        "login": url.username,
        "password": url.password,
        "schema": url.database,
    }
    return DunningStore(request.getfixturevalue("pg_url")), conn


def test_sigkill_mid_batch_then_retry_loses_nothing_and_bounds_duplicates(
    store_and_conn: tuple[DunningStore, dict],
) -> None:
    store, store_conn = store_and_conn
    store.create_schema()
    store.upsert_planned(planned_row(n) for n in range(ROWS))
    (batch_id,) = store.assign_batches("tax_payment", AS_OF, "r1", batch_size=ROWS)
    phones = {planned_row(n)["phone"] for n in range(ROWS)}

    with SmscSimulator(latency=LATENCY, receipt_delay=60) as sim:
        smpp = {
            "conn_type": "smpp",
            "host": "127.0.0.1",
            "port": sim.port,
            "login": "dunning",
            "password": "pw",
            "extra": {"window": WINDOW, "connect_attempts": 2, "registered_delivery": "false"},
        }
        env = dict(
            os.environ,
            PYTHONPATH=str(REPO),
            AIRFLOW_CONN_SMPP_DEFAULT=json.dumps(smpp),
            AIRFLOW_CONN_DUNNING_STORE=json.dumps(store_conn),
        )
        first = start_send(batch_id, env)
        try:
            deadline = time.monotonic() + 60
            # Kill while a whole window is on the wire and the SMSC holds its responses.
            while not (sim.submits >= KILL_AFTER and sim.submits % WINDOW == 0):
                assert first.poll() is None, first.communicate()[1][-2000:]
                assert time.monotonic() < deadline, "the send never reached the kill point"
                time.sleep(0.001)
            os.kill(first.pid, signal.SIGKILL)
            first.communicate(timeout=30)
        finally:
            if first.poll() is None:
                first.kill()
        assert first.returncode == -signal.SIGKILL
        time.sleep(LATENCY * 2)  # the cut session's held responses are dropped, nothing else comes
        received_before = Counter(m["destination"] for m in sim.messages)
        if store.send_log:
            # What the killed try logged and had not settled: at least the chunk on the wire.
            # The retry settles it first; settling it here shows the ledger the retry reads.
            with store.engine.connect() as conn:
                assert conn.execute(sa.text("SELECT COUNT(*) FROM send_claim")).scalar_one() > 0
            assert store.settle_sends(batch_id=batch_id) > 0
        before = rows_by_state(store)
        claimed = before.get(ledger.CLAIMED, set())

        retry = start_send(batch_id, env)  # Airflow's retry: a new process, same batch
        out, err = retry.communicate(timeout=120)
        assert retry.returncode == 0, err[-2000:]
        counts = json.loads(out.split("COUNTS ", 1)[1])
        received = Counter(m["destination"] for m in sim.messages)

    assert KILL_AFTER <= sum(received_before.values()) < ROWS
    # Claimed ahead: more rows are in doubt than were sent, but every sent one among them
    # is within the in-doubt bound.
    assert 0 < len(claimed & set(received_before)) <= MAX_IN_DOUBT
    assert counts["resent_uncertain"] == len(claimed)
    assert counts["submitted"] == ROWS - len(before.get(ledger.SUBMITTED, set()))
    assert rows_by_state(store) == {ledger.SUBMITTED: phones}
    assert set(received) == phones  # every planned row reached the SMSC at least once
    duplicates = {phone for phone, n in received.items() if n > 1}
    assert all(n <= 2 for n in received.values())
    # Only rows claimed with no recorded response go out twice, and only those that had
    # reached the SMSC before the kill: at most MAX_IN_DOUBT of them.
    assert duplicates == claimed & set(received_before)
    assert 0 < len(duplicates) <= MAX_IN_DOUBT
    if store.send_log:  # everything logged was settled: the log is empty again
        assert store.unsettled_sends() == 0
        with store.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT COUNT(*) FROM send_claim")).scalar_one() == 0
