"""Bad input on the send path: an unreachable SMSC or a refused bind leaves every row resendable."""

from __future__ import annotations

import json
import socket
from datetime import date

import pytest
import sqlalchemy as sa
from ledger_rows import sms_contact

from include.dunning import ledger
from include.dunning.ledger import DunningStore
from include.simulators.smsc import SmscSimulator

pytestmark = pytest.mark.integration

AS_OF = date(2026, 11, 23)


class FakeTI:
    dag_id = "tax_dunning"

    def xcom_push(self, key, value):
        pass


def make_store(tmp_path, monkeypatch, rows_count: int = 5) -> DunningStore:
    path = tmp_path / "store.sqlite"
    monkeypatch.setenv("AIRFLOW_CONN_DUNNING_STORE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    store = DunningStore(f"sqlite:///{path}")
    store.create_schema()
    rows = [sms_contact(n, phone=f"138001{n:05d}", text="【示范市税务】请缴税。") for n in range(rows_count)]
    store.upsert_planned(rows)
    return store


@pytest.fixture
def store(tmp_path, monkeypatch):
    return make_store(tmp_path, monkeypatch)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smpp_conn(monkeypatch, port: int, password: str = "pw") -> None:
    conn = {"conn_type": "smpp", "host": "127.0.0.1", "port": port, "login": "dunning", "password": password}
    conn["extra"] = {"connect_attempts": 2, "connect_timeout": 2}
    monkeypatch.setenv("AIRFLOW_CONN_SMPP_DEFAULT", json.dumps(conn))


def states(store):
    with store.engine.connect() as conn:
        return [s for (s,) in conn.execute(sa.text("SELECT state FROM contact_ledger"))]


def send(store, batch=None, **kwargs):
    from operators.smpp import SmppSendOperator

    if batch is None:
        (batch,) = store.assign_batches("tax_payment", AS_OF, "r1")
    kwargs.setdefault("respect_sending_window", False)
    op = SmppSendOperator(task_id="send_sms", batch_id=batch, **kwargs)
    return op.execute({"run_id": "r1", "ti": FakeTI(), "params": {}})


def test_unreachable_smsc_fails_with_host_and_port_and_keeps_rows_resendable(store, monkeypatch):
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    port = free_port()  # nothing listens there
    smpp_conn(monkeypatch, port)
    with pytest.raises(AirflowException) as err:
        send(store)
    assert not isinstance(err.value, AirflowFailException), "an unreachable SMSC is worth a retry"
    assert f"127.0.0.1:{port}" in str(err.value)
    assert set(states(store)) == {"PLANNED"}


def test_wrong_password_fails_without_retry_and_without_the_password(store, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    with SmscSimulator(port=0, password="right") as sim:
        smpp_conn(monkeypatch, sim.port, password="wrongpw1")
        with pytest.raises(AirflowFailException) as err:
            send(store)
    assert "wrongpw1" not in str(err.value)
    assert "refused" in str(err.value)
    assert set(states(store)) == {"PLANNED"}
    assert sim.messages == []


def test_retry_after_failure_sends_each_row_once(store, monkeypatch):
    port = free_port()
    smpp_conn(monkeypatch, port)
    (batch,) = store.assign_batches("tax_payment", AS_OF, "r1")
    with pytest.raises(Exception, match="127.0.0.1"):
        send(store, batch)
    with SmscSimulator(port=0) as sim:
        smpp_conn(monkeypatch, sim.port)
        counts = send(store, batch)  # the task's retry
        assert counts["submitted"] == 5
        assert send(store, batch)["submitted"] == 0  # a further retry finds nothing to send
        assert len(sim.messages) == 5
    assert set(states(store)) == {"SUBMITTED"}


def test_outside_the_sending_window_nothing_is_sent_and_rows_stay_planned(store, monkeypatch):
    with SmscSimulator(port=0) as sim:
        smpp_conn(monkeypatch, sim.port)
        counts = send(store, respect_sending_window="True", sending_window=("00:00", "00:00"))
        assert counts["held"] == 5 and counts["submitted"] == 0
        assert sim.messages == []
    assert set(states(store)) == {"PLANNED"}


def test_a_dropped_connection_leaves_only_the_unanswered_rows_uncertain(tmp_path, monkeypatch):
    store = make_store(tmp_path, monkeypatch, rows_count=20)
    (batch,) = store.assign_batches("tax_payment", AS_OF, "r1")
    with SmscSimulator(port=0, disconnect_every=12) as sim:
        smpp_conn(monkeypatch, sim.port)
        with pytest.raises(Exception, match="127.0.0.1"):
            send(store, batch, claim_size=20)
        first = len(sim.messages)
    answered = states(store).count("SUBMITTED")
    assert answered >= 1, "messages answered before the drop are recorded, not left CLAIMED"
    assert answered + states(store).count("CLAIMED") == 20
    with SmscSimulator(port=0) as sim2:
        smpp_conn(monkeypatch, sim2.port)
        counts = send(store, batch, claim_size=20)
    assert counts["resent_uncertain"] == 20 - answered
    assert set(states(store)) == {"SUBMITTED"}
    # only messages the first SMSC took without answering can have arrived twice
    assert first - answered <= 1


def test_numbers_opted_out_since_planning_are_suppressed_not_sent(store, monkeypatch):
    store.add_opt_out("13800100001", "reply")
    store.add_opt_out("13800100003", "reply")
    store.add_opt_out("13900000000", "reply")  # a number of no row: nothing to suppress
    with SmscSimulator() as sim:
        smpp_conn(monkeypatch, sim.port)
        counts = send(store)
        received = sorted(m["destination"] for m in sim.messages)
    assert counts["suppressed"] == 2 and counts["submitted"] == 3
    assert received == ["13800100000", "13800100002", "13800100004"]
    with store.engine.connect() as conn:
        rows = dict(conn.execute(sa.text("SELECT phone, state FROM contact_ledger")).all())
    assert rows["13800100001"] == rows["13800100003"] == ledger.SUPPRESSED
