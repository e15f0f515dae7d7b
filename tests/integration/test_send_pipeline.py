"""The send pipeline (claim ahead, record behind) on PostgreSQL against the SMSC simulator.

What a worker can leave behind is bounded: a dropped connection mid-pipeline leaves every
answered row SUBMITTED with its message ids, and the in-doubt rows (sent, no recorded answer)
never exceed ``max_in_doubt`` even when the ledger is slower than the SMSC.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import date

import pytest
import sqlalchemy as sa
from ledger_rows import sms_contact

from include.dunning import ledger
from include.dunning.ledger import DunningStore, SubmitOutcome
from include.dunning.receipts import normalize_message_id
from include.simulators.smsc import SmscSimulator

pytestmark = pytest.mark.integration

AS_OF = date(2026, 11, 23)


class FakeTI:
    dag_id = "tax_dunning"

    def xcom_push(self, key, value):  # type: ignore[no-untyped-def]
        pass


def planned_row(n: int, tag: str, *, multipart: bool = True) -> dict:
    two = multipart and n % 10 == 0  # every tenth row takes two parts: recorded per message
    text = f"【示范市税务】请缴税，编号{n}。" * (6 if two else 1)
    return sms_contact(n, campaign=tag, period=tag, text=text, parts=2 if two else 1)


@pytest.fixture(scope="module")
def store(pg_url: str) -> DunningStore:
    store = DunningStore(pg_url)
    store.create_schema()
    return store


def new_batch(store: DunningStore, rows: int, tag: str, *, multipart: bool = True) -> str:
    # One campaign per test: the module shares one database.
    store.upsert_planned(planned_row(n, tag, multipart=multipart) for n in range(rows))
    (batch_id,) = store.assign_batches(tag, AS_OF, f"run-{tag}", batch_size=rows)
    return batch_id


def ledger_rows(store: DunningStore, tag: str) -> dict[str, tuple[str, str | None]]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT phone, state, message_ids FROM contact_ledger WHERE campaign = :tag"),
            {"tag": tag},
        ).all()
    return {phone: (state, ids) for phone, state, ids in rows}


def set_connections(monkeypatch: pytest.MonkeyPatch, port: int, pg_url: str, window: int) -> None:
    url = sa.engine.make_url(pg_url)
    monkeypatch.setenv(
        "AIRFLOW_CONN_DUNNING_STORE",
        json.dumps(
            {
                "conn_type": "postgres",
                "host": url.host,
                "port": url.port,
                "login": url.username,
                "password": url.password,
                "schema": url.database,
            }
        ),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_SMPP_DEFAULT",
        json.dumps(
            {
                "conn_type": "smpp",
                "host": "127.0.0.1",
                "port": port,
                "login": "dunning",
                "password": "pw",
                "extra": {"window": window, "connect_attempts": 1, "registered_delivery": "false"},
            }
        ),
    )


def send(batch_id: str, **kwargs: object) -> dict[str, int]:
    from operators.smpp import SmppSendOperator

    op = SmppSendOperator(task_id="send_sms", batch_id=batch_id, respect_sending_window=False, **kwargs)
    return op.execute({"run_id": "r1", "ti": FakeTI(), "params": {}})


def test_dropped_connection_mid_pipeline_leaves_answered_rows_recorded(
    store: DunningStore, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk.exceptions import AirflowException

    rows, window = 800, 20
    batch_id = new_batch(store, rows, "drop")
    with SmscSimulator(latency=0.005, disconnect_every=300) as sim:
        set_connections(monkeypatch, sim.port, pg_url, window)
        with pytest.raises(AirflowException, match="127.0.0.1"):
            send(batch_id, claim_size=250)
        taken = {m["destination"]: m["message_ids"] for m in sim.messages}
        sent = {r["destination"] for r in sim.received if r["status"] == 0}  # a part reached the SMSC
        before = ledger_rows(store, "drop")
        # Every row is somewhere: nothing lost, nothing settled that was not answered.
        assert {state for state, _ in before.values()} <= {ledger.SUBMITTED, ledger.CLAIMED, ledger.PLANNED}
        submitted = {p for p, (state, _) in before.items() if state == ledger.SUBMITTED}
        in_doubt = {p for p, (state, _) in before.items() if state == ledger.CLAIMED}
        assert len(submitted) >= 200  # answers received before the drop are recorded
        for phone in submitted:  # recorded with the ids the SMSC gave, part by part
            ids = before[phone][1]
            assert ids is not None
            assert ids.split(",") == [normalize_message_id(i) for i in taken[phone]]
        # Sent with no recorded answer: in doubt, and no more than the default bound (one window).
        sent_in_doubt = in_doubt & sent
        assert 1 <= len(sent_in_doubt) <= window
        assert sent == submitted | sent_in_doubt
        # Claimed ahead but never sent: in doubt too, resent once by the retry.
        assert in_doubt - sent
        with store.engine.connect() as conn:
            parts = conn.execute(
                sa.text(
                    "SELECT COUNT(*) FROM message_part p JOIN contact_ledger c "
                    "ON c.idempotency_key = p.idempotency_key WHERE c.campaign = 'drop'"
                )
            ).scalar_one()
        assert parts == sum(len(taken[p]) for p in submitted)

        sim.disconnect_every = 0  # the retry finds a healthy SMSC (same ids, no collisions)
        counts = send(batch_id, claim_size=250)
        received = Counter(m["destination"] for m in sim.messages)
    assert counts["resent_uncertain"] == len(in_doubt)
    assert counts["submitted"] == rows - len(submitted)
    assert {state for state, _ in ledger_rows(store, "drop").values()} == {ledger.SUBMITTED}
    assert len(received) == rows
    duplicates = {p for p, n in received.items() if n > 1}
    assert duplicates <= sent_in_doubt  # only rows sent with no recorded answer can go twice


class SlowLedger(DunningStore):
    """A store whose recording is slower than the SMSC, and that checks the in-doubt bound."""

    def __init__(self, url: str, sim: SmscSimulator, bound: int) -> None:
        super().__init__(url)
        self.sim = sim
        self.bound = bound
        self.committed = 0
        self.largest_gap = 0

    def record_submits(self, gateway: str, outcomes: Sequence[SubmitOutcome]) -> dict[str, int]:
        # Messages the SMSC took minus answers already recorded: the rows a kill now would
        # leave in doubt (every message here is one part, one submit_sm).
        gap = self.sim.submits - self.committed
        self.largest_gap = max(self.largest_gap, gap)
        time.sleep(0.03)
        counts = super().record_submits(gateway, outcomes)
        self.committed += len(outcomes)
        return counts

    def log_responses(
        self, outcomes: Sequence[SubmitOutcome], claims: Mapping[str, str], *, synchronous: bool = True
    ) -> dict[str, int]:
        # The same with the send log: an answer counts as recorded once its log row commits.
        gap = self.sim.submits - self.committed
        self.largest_gap = max(self.largest_gap, gap)
        time.sleep(0.03)
        counts = super().log_responses(outcomes, claims, synchronous=synchronous)
        self.committed += len(outcomes)
        return counts


@pytest.mark.parametrize("logged", [False, True], ids=["ledger", "send_log"])
def test_in_doubt_rows_never_exceed_the_bound_when_the_ledger_lags(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, logged: bool
) -> None:
    from hooks.smpp import SmppHook
    from operators.smpp_pipeline import send_rows

    rows, window, bound = 400, 10, 25
    with SmscSimulator() as sim:
        set_connections(monkeypatch, sim.port, pg_url, window)
        slow = SlowLedger(pg_url, sim, bound)
        tag = f"slow{int(logged)}"
        batch_id = new_batch(slow, rows, tag, multipart=False)
        batch = slow.batch_rows(batch_id)
        counts: dict[str, int] = {}
        with SmppHook(bind_mode="transmitter") as hook:
            taken = send_rows(
                hook, slow, batch, gateway="smpp_default", run_id="r1", max_in_doubt=bound, counts=counts,
                batch_id=batch_id if logged else None,
            )  # fmt: skip
        slow.engine.dispose()
    assert taken == len(batch) == counts["submitted"]
    assert window < slow.largest_gap <= bound  # the bound held the bind back, not the window
    assert {state for state, _ in ledger_rows(slow, tag).values()} == {ledger.SUBMITTED}
    assert slow.unsettled_sends() == 0  # with the log: all settled before send_rows returned


def test_prepare_can_end_the_batch_and_the_rest_stays_planned(
    store: DunningStore, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hooks.smpp import SmppHook
    from operators.smpp_pipeline import send_rows

    rows = 300
    batch_id = new_batch(store, rows, "quota")
    batch = store.batch_rows(batch_id)
    allowed = {"rows": 130}

    def prepare(chunk: Sequence[ledger.LedgerRow]) -> int:  # a quota of 130 rows
        fits = min(len(chunk), allowed["rows"])
        allowed["rows"] -= fits
        return fits

    with SmscSimulator() as sim:
        set_connections(monkeypatch, sim.port, pg_url, 10)
        counts: dict[str, int] = {}
        with SmppHook(bind_mode="transmitter") as hook:
            taken = send_rows(
                hook, store, batch, gateway="smpp_default", run_id="r1", claim_size=50, counts=counts,
                prepare=prepare,
            )  # fmt: skip
        received = [m["destination"] for m in sim.messages]
    assert taken == counts["submitted"] == 130
    assert sorted(received) == sorted(r.phone for r in batch[:130])
    states = ledger_rows(store, "quota")
    assert {states[r.phone][0] for r in batch[:130]} == {ledger.SUBMITTED}
    assert {states[r.phone][0] for r in batch[130:]} == {ledger.PLANNED}
