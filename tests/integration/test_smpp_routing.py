"""Several SMPP gateways over real sockets, with the ledger in PostgreSQL.

Three SMSC simulators stand for a carrier's own gateway (prefix hints), the default bulk
gateway and an urgent-lane gateway. The send operator, the collector and the store's quota
table are the real ones; what each simulator received is compared with what the ledger says.
"""

from __future__ import annotations

import json
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime

import pytest
import sqlalchemy as sa

from include.dunning import ledger
from include.dunning.ledger import DunningStore
from include.dunning.routing import URGENT, BatchId, RoutingTable
from include.simulators.smsc import SmscSimulator

pytestmark = pytest.mark.integration

AS_OF = date(2026, 11, 23)
RUN = "manual__2026-11-23"
GATEWAYS = ["smpp_default", "smpp_cmcc", "smpp_urgent"]
PRIORITIES = {"cutoff_notice": URGENT}
TABLES = ("contact_ledger", "message_part", "receipt_unmatched", "gateway_usage", "gateway_balance")


class FakeTI:
    dag_id = "power_dunning"

    def xcom_push(self, key, value):
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def set_gateway(monkeypatch, name: str, port: int, password: str = "pw", **extra: object) -> None:
    conn = {
        "conn_type": "smpp",
        "host": "127.0.0.1",
        "port": port,
        "login": "dunning",
        "password": password,
        "extra": {"window": 20, "connect_attempts": 2, "connect_timeout": 2, **extra},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{name.upper()}", json.dumps(conn))


@pytest.fixture(scope="module")
def engine(pg_url) -> Iterator[sa.Engine]:
    engine = sa.create_engine(pg_url)
    DunningStore(engine).create_schema()
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine, pg_url, monkeypatch) -> DunningStore:
    url = sa.engine.make_url(pg_url)
    monkeypatch.setenv(
        "AIRFLOW_CONN_DUNNING_STORE",
        json.dumps(
            {
                "conn_type": "postgres",
                "host": url.host,
                "port": url.port or 5432,
                "login": url.username,
                "schema": url.database,
            }
        ),
    )
    with engine.begin() as conn:
        for table in TABLES:
            conn.exec_driver_sql(f"DELETE FROM {table}")
    return DunningStore(engine)


@pytest.fixture
def sims() -> Iterator[dict[str, SmscSimulator]]:
    started = {name: SmscSimulator(port=0, receipt_delay=0.02, undeliverable_share=0.1) for name in GATEWAYS}
    for sim in started.values():
        sim.start()
    try:
        yield started
    finally:
        for sim in started.values():
            sim.stop()


def contact(
    n: int, phone: str, stage: str = "dunning", text: str = "【示范供电】您的电费已逾期，请尽快缴纳。"
) -> dict:
    return {
        "idempotency_key": ledger.idempotency_key(
            "power_dunning", "2026-11", f"tel:{phone}", stage, "sms", 1
        ),
        "campaign": "power_dunning",
        "period": "2026-11",
        "as_of": AS_OF,
        "debtor_id": f"A{n}",
        "debtor_name": "某用户",
        "stage": stage,
        "channel": "sms",
        "attempt": 1,
        "phone": phone,
        "template": "t",
        "message_text": text,
        "parts": ledger_parts(text),
        "amount": None,
        "surcharge": None,
        "gateway": "smpp_default",
        "state": ledger.PLANNED,
        "reason": None,
        "planned_run_id": RUN,
        "planned_at": datetime(2026, 11, 23),
    }


def ledger_parts(text: str) -> int:
    from include.dunning.templates import sms_parts

    return sms_parts(text)


def plan(store: DunningStore, rows: list[dict], table: RoutingTable | None = None, **kwargs) -> list[str]:
    """Route (as the plan step does), write and batch the rows; return the batch ids."""
    if table is not None:
        for r in rows:
            r["gateway"] = table.route(r["phone"], PRIORITIES.get(r["stage"], "normal"))
    store.upsert_planned(rows)
    return store.assign_batches("power_dunning", AS_OF, RUN, priorities=PRIORITIES, **kwargs)


def send(batch: str, *, gateways=GATEWAYS, **kwargs) -> dict[str, int]:
    from operators.smpp import SmppSendOperator

    op = SmppSendOperator(
        task_id="send_sms",
        batch_id=batch,
        smpp_conn_id=BatchId.parse(batch).gateway,
        gateways=gateways,
        respect_sending_window=False,
        **kwargs,
    )
    return op.execute({"run_id": RUN, "ti": FakeTI(), "params": {}})


def collect(gateway: str) -> dict[str, int]:
    from operators.smpp import SmppCollectReceiptsOperator

    op = SmppCollectReceiptsOperator(
        task_id="collect_receipts", smpp_conn_id=gateway, max_wait_seconds=15, idle_seconds=2
    )
    return op.execute({"run_id": RUN, "ti": FakeTI(), "params": {}})


def ledger_rows(store: DunningStore) -> list[sa.Row]:
    with store.engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT phone, stage, gateway, state, batch_id, parts FROM contact_ledger ORDER BY phone")
        ).all()


def part_gateways(store: DunningStore) -> Counter:
    with store.engine.connect() as conn:
        return Counter(g for (g,) in conn.execute(sa.text("SELECT gateway FROM message_part")))


def received(sim: SmscSimulator) -> set[str]:
    return {m["destination"] for m in sim.messages}


def mixed_contacts() -> list[dict]:
    rows = [contact(n, f"1391234{n:04d}") for n in range(12)]  # China Mobile prefix 139
    rows += [contact(100 + n, f"1891234{n:04d}") for n in range(10)]  # no hint: default
    rows += [contact(200 + n, f"13{8 + n % 2}5678{n:04d}", stage="cutoff_notice") for n in range(6)]
    return rows


def three_gateways(monkeypatch, sims, **overrides) -> RoutingTable:
    extras = {
        "smpp_cmcc": {"lane": "normal", "prefixes": "134-139,147,150-152,157-159,182-184,187,188"},
        "smpp_default": {"lane": "normal"},
        "smpp_urgent": {"lane": "urgent"},
    }
    for name, extra in overrides.items():
        extras[name] = {**extras[name], **extra}
    for name in GATEWAYS:
        set_gateway(monkeypatch, name, sims[name].port, **extras[name])
    return RoutingTable.from_extras([(name, extras[name]) for name in GATEWAYS])


def test_urgent_rows_go_through_the_urgent_gateway_and_prefixes_through_the_carrier(store, sims, monkeypatch):
    table = three_gateways(monkeypatch, sims)
    rows = mixed_contacts()
    batches = plan(store, rows, table, batch_size=5)
    assert BatchId.parse(batches[0]).priority == URGENT, "urgent batches come first"
    assert {BatchId.parse(b).gateway for b in batches if BatchId.parse(b).priority == URGENT} == {
        "smpp_urgent"
    }
    for batch in batches:
        send(batch)
    urgent = {r["phone"] for r in rows if r["stage"] == "cutoff_notice"}
    assert received(sims["smpp_urgent"]) == urgent
    assert received(sims["smpp_cmcc"]) == {r["phone"] for r in rows if r["phone"].startswith("139")} - urgent
    assert received(sims["smpp_default"]) == {r["phone"] for r in rows if r["phone"].startswith("189")}
    assert sum(len(s.messages) for s in sims.values()) == len(rows), "each row sent once"
    # Rows and parts name the gateway they went through; receipts come back on each of them.
    by_gateway = Counter(r.gateway for r in ledger_rows(store))
    assert (
        part_gateways(store) == by_gateway == Counter({"smpp_cmcc": 12, "smpp_default": 10, "smpp_urgent": 6})
    )
    assert sorted(store.gateways_to_collect(RUN)) == sorted(GATEWAYS)
    for gateway in store.gateways_to_collect(RUN):
        collect(gateway)
    states = Counter(r.state for r in ledger_rows(store))
    assert states["SUBMITTED"] == 0 and states["DELIVERED"] + states["UNDELIVERED"] == len(rows)


def test_a_gateway_that_cannot_bind_fails_over_to_the_next_of_its_lane(store, sims, monkeypatch):
    table = three_gateways(monkeypatch, sims)
    dead = free_port()
    set_gateway(monkeypatch, "smpp_cmcc", dead, lane="normal", prefixes="139")
    rows = mixed_contacts()
    batches = plan(store, rows, table, batch_size=50)
    cmcc_batches = [b for b in batches if BatchId.parse(b).gateway == "smpp_cmcc"]
    assert cmcc_batches
    for batch in batches:
        send(batch)
    assert received(sims["smpp_cmcc"]) == set()
    normal_139 = {r["phone"] for r in rows if r["phone"].startswith("139") and r["stage"] != "cutoff_notice"}
    assert normal_139 <= received(sims["smpp_default"])
    assert received(sims["smpp_urgent"]) == {r["phone"] for r in rows if r["stage"] == "cutoff_notice"}
    by_phone = {r.phone: r for r in ledger_rows(store)}
    assert {by_phone[p].gateway for p in normal_139} == {"smpp_default"}
    assert {by_phone[p].batch_id for p in normal_139} == set(cmcc_batches)
    assert "smpp_cmcc" not in part_gateways(store)
    # The collector reads every gateway used (not the dead one) and settles the failed-over rows.
    assert store.gateways_to_collect(RUN) == ["smpp_default", "smpp_urgent"]
    collect("smpp_default")
    assert {r.state for r in ledger_rows(store) if r.phone in normal_139} <= {"DELIVERED", "UNDELIVERED"}


def test_with_every_gateway_of_the_lane_down_the_rows_stay_planned_for_the_retry(store, sims, monkeypatch):
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    table = three_gateways(monkeypatch, sims)
    dead_a, dead_b = free_port(), free_port()
    set_gateway(monkeypatch, "smpp_cmcc", dead_a, lane="normal", prefixes="139")
    set_gateway(monkeypatch, "smpp_default", dead_b, lane="normal")
    batches = plan(store, mixed_contacts(), table, batch_size=50)
    cmcc = next(b for b in batches if BatchId.parse(b).gateway == "smpp_cmcc")
    with pytest.raises(AirflowException) as err:
        send(cmcc)
    assert not isinstance(err.value, AirflowFailException), "an unreachable gateway is worth a retry"
    assert f"127.0.0.1:{dead_a}" in str(err.value) and f"127.0.0.1:{dead_b}" in str(err.value)
    assert received(sims["smpp_urgent"]) == set(), "normal traffic never fails over to the urgent lane"
    assert {r.state for r in ledger_rows(store) if r.batch_id == cmcc} == {"PLANNED"}


def test_a_wrong_password_fails_clearly_and_does_not_fail_over(store, sims, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    table = three_gateways(monkeypatch, sims)
    with SmscSimulator(port=0, password="right") as guarded:
        set_gateway(monkeypatch, "smpp_cmcc", guarded.port, password="wrongpw", lane="normal", prefixes="139")
        batches = plan(store, mixed_contacts(), table, batch_size=50)
        cmcc = next(b for b in batches if BatchId.parse(b).gateway == "smpp_cmcc")
        with pytest.raises(AirflowFailException) as err:
            send(cmcc)
    assert "smpp_cmcc" in str(err.value) and "refused" in str(err.value) and "wrongpw" not in str(err.value)
    assert received(sims["smpp_default"]) == set()
    assert {r.state for r in ledger_rows(store) if r.batch_id == cmcc} == {"PLANNED"}


def test_two_concurrent_senders_never_exceed_the_daily_quota(store, sims, monkeypatch):
    table = three_gateways(monkeypatch, sims, smpp_default={"daily_quota": 30})
    # 40 two-part messages (80 parts) over two batches; the quota allows 30 parts = 15 messages.
    long_text = "【示范供电】" + "您的电费已逾期，请尽快缴纳，以免产生违约金。" * 3
    rows = [contact(n, f"1891234{n:04d}", text=long_text) for n in range(40)]
    assert {r["parts"] for r in rows} == {2}
    batches = plan(store, rows, table, batch_size=20)
    assert len(batches) == 2
    results: list[dict[str, int]] = []
    errors: list[BaseException] = []

    def run(batch: str) -> None:
        try:
            # No other normal gateway to fail over to: what the quota does not cover is held.
            results.append(send(batch, claim_size=3, gateways=["smpp_default", "smpp_urgent"]))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    parts_received = sum(len(m["message_ids"]) for m in sims["smpp_default"].messages)
    assert parts_received == 30
    assert store.gateway_usage(_today()) == {"smpp_default": (30, 30)}
    states = Counter(r.state for r in ledger_rows(store))
    assert states == Counter({"SUBMITTED": 15, "PLANNED": 25}), "held rows are never lost"
    assert sum(r["held_quota"] for r in results) == 25
    assert sum(r["submitted"] for r in results) == 15


def test_quota_used_up_fails_over_to_the_next_gateway_of_the_lane(store, sims, monkeypatch):
    table = three_gateways(monkeypatch, sims, smpp_cmcc={"daily_quota": 5})
    rows = [contact(n, f"1391234{n:04d}") for n in range(12)]
    (batch,) = plan(store, rows, table, batch_size=50)
    counts = send(batch, claim_size=4)
    assert counts["submitted"] == 12 and counts["held_quota"] == 0
    assert len(received(sims["smpp_cmcc"])) == 5
    assert len(received(sims["smpp_default"])) == 7
    assert Counter(r.gateway for r in ledger_rows(store)) == Counter({"smpp_cmcc": 5, "smpp_default": 7})
    assert part_gateways(store) == Counter({"smpp_cmcc": 5, "smpp_default": 7})
    usage = store.gateway_usage(_today())
    assert usage["smpp_cmcc"] == (5, 5) and usage["smpp_default"][0] == 7


def test_prepaid_balance_is_enforced_and_rejected_parts_are_given_back(store, monkeypatch):
    # 30% of submits refused permanently: their parts must not be charged to the balance.
    with SmscSimulator(port=0, permanent_error_share=0.3, seed=7) as sim:
        set_gateway(monkeypatch, "smpp_default", sim.port, lane="normal")
        store.add_gateway_balance("smpp_default", 10)
        rows = [contact(n, f"1891234{n:04d}") for n in range(20)]
        (batch,) = plan(store, rows, RoutingTable.from_extras([("smpp_default", {})]), batch_size=50)
        counts = send(batch, gateways=["smpp_default"], claim_size=5)
    assert counts["submitted"] == 10, "the balance paid for exactly 10 accepted parts"
    assert counts["failed"] > 0
    assert store.gateway_balance("smpp_default") == 0
    accepted = [r for r in sim.received if r["message_id"] is not None]
    assert len(accepted) == 10
    states = Counter(r.state for r in ledger_rows(store))
    assert states["SUBMITTED"] == 10 and states["FAILED"] == counts["failed"]
    assert states["PLANNED"] == counts["held_quota"] == 20 - 10 - counts["failed"]


def race_for_quota(store: DunningStore) -> None:
    """Eight threads reserve 1-3 parts at a time against a quota of 500: never more is granted."""
    granted: list[int] = []
    lock = threading.Lock()

    def worker(seed: int) -> None:
        for i in range(200):
            size = 1 + (seed + i) % 3
            if store.reserve_gateway_parts("smpp_x", AS_OF, [size], daily_quota=500):
                with lock:
                    granted.append(size)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert store.gateway_usage(AS_OF)["smpp_x"] == (sum(granted), 500)
    assert 497 <= sum(granted) <= 500  # the last parts may not fit the requests left


def test_concurrent_reservations_are_exact_on_postgresql(store):
    race_for_quota(store)


def test_concurrent_reservations_are_exact_on_mariadb(mariadb_url):
    engine = sa.create_engine(mariadb_url, pool_size=10)
    try:
        store = DunningStore(engine)
        store.create_schema()
        race_for_quota(store)
    finally:
        engine.dispose()


def _today() -> date:
    from operators.routing import local_day

    return local_day()
