"""A pool of modems drains one run's rows through the ledger: spread, nothing twice, a dead modem's share taken over.

Modem emulators over real ptys, the operators driven with a fake task context, the dunning
store in SQLite; ``claim_next`` also on PostgreSQL and MariaDB with concurrent claimers.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import date, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from include.dunning import ledger
from include.dunning.ledger import DunningStore
from include.simulators.modem import ModemEmulator
from operators.common import LOCAL_TZ

pytestmark = pytest.mark.integration

AS_OF = date(2026, 11, 23)
WORKDAY_10AM = datetime(2026, 11, 23, 10, 0, tzinfo=LOCAL_TZ)  # a Monday
SAY = "您好，这里是税务提醒，您的增值税尚未缴纳。"
SMS = "【示范市税务】纳税人{n}：您2026年10月的增值税尚未缴纳，请尽快办理，逾期将按日加收滞纳金。"
# Number n reacts to a call by n % 5; the emulators' own word for it, and the ledger's.
BEHAVIOURS = ["answer", "busy", "no_answer", "reject", "no_carrier"]
OUTCOME_REASON = {"busy": "busy", "no_answer": "no_answer", "reject": "rejected", "no_carrier": "no_carrier"}


def phone(n: int) -> str:
    return f"1390000{n:04d}"


CALL_RULES = {phone(n): BEHAVIOURS[n % 5] for n in range(100)}


class FakeTI:
    dag_id = "tax_dunning"

    def xcom_push(self, key: str, value: Any) -> None:
        pass


CONTEXT = {"run_id": "r1", "ti": FakeTI(), "params": {}}


class FlakyModem(ModemEmulator):
    """A modem emulator that hangs at a chosen moment, so the failure tests do not race a timer.

    :param hang_on_dial: stop answering when the n-th ``ATD`` arrives (the call may have been dialled)
    :param hang_on_probe: stop answering when the n-th bare ``AT`` arrives (between two rows)
    :param hang_on_sms: stop answering when the n-th ``AT+CMGS`` arrives (no prompt: nothing sent)
    :param hiccup_on_dial: swallow the answer to the n-th ``ATD`` only (the call goes out)
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.triggers = {
            name: kwargs.pop(name, None)
            for name in ("hang_on_dial", "hang_on_probe", "hang_on_sms", "hiccup_on_dial")
        }
        self.seen: Counter[str] = Counter()
        super().__init__(*args, **kwargs)

    def _feed(self, data: bytes) -> None:
        line = data.strip().upper()
        kind = "dial" if line.startswith(b"ATD") else "probe" if line == b"AT" else None
        kind = "sms" if line.startswith(b"AT+CMGS") else kind
        if kind is not None and not self._mute:
            self.seen[kind] += 1
            if self.seen[kind] == self.triggers[f"hang_on_{kind}"]:
                self.stop_answering()
                return
            if kind == "dial" and self.seen[kind] == self.triggers["hiccup_on_dial"]:
                self.drop_responses(1)
        super()._feed(data)


def voice_row(n: int, *, channel: str = "voice") -> dict:
    debtor = f"D{n:04d}"
    return {
        "idempotency_key": ledger.idempotency_key("tax_payment", "2026-W48", debtor, "final", channel, 1),
        "campaign": "tax_payment",
        "period": "2026-W48",
        "as_of": AS_OF,
        "debtor_id": debtor,
        "debtor_name": f"纳税人{n}",
        "stage": "final",
        "channel": channel,
        "attempt": 1,
        "phone": phone(n),
        "template": f"{channel}/tax/final.j2",
        "message_text": SAY if channel == "voice" else SMS.format(n=n) * (1 + n % 3),
        "parts": 1,
        "amount": None,
        "surcharge": None,
        "gateway": "modem_pool",
        "state": ledger.PLANNED,
        "reason": None,
        "planned_run_id": "r1",
        "planned_at": datetime(2026, 11, 23),
    }


def make_store(tmp_path, monkeypatch, rows: int, channel: str = "voice") -> tuple[DunningStore, list[str]]:
    path = tmp_path / "store.sqlite"
    monkeypatch.setenv("AIRFLOW_CONN_DUNNING_STORE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    store = DunningStore(f"sqlite:///{path}")
    store.create_schema()
    store.upsert_planned(voice_row(n, channel=channel) for n in range(rows))
    batches = store.assign_batches("tax_payment", AS_OF, "r1", batch_size=rows // 2 or 1)
    return store, batches


def connect(monkeypatch, tmp_path, conn_id: str, modem: ModemEmulator, **extra: Any) -> None:
    options = {
        "vendor": "simcom",
        "command_timeout": "0.6",
        "sms_timeout": "2",
        "connect_attempts": "1",
        "reset_timeout": "0.5",
        "lock_dir": str(tmp_path),
        "lock_timeout": "0.5",
        "clcc_poll_interval": "0.05",
        **{k: str(v) for k, v in extra.items()},
    }
    conn = {"conn_type": "gsm_modem", "host": modem.url, "extra": options}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


def emulator(**kwargs: Any) -> FlakyModem:
    options: dict[str, Any] = {
        "sms_delay": 0.05,
        "report_delay": 0.05,
        "ring_seconds": 0.1,
        "tts_seconds_per_char": 0.001,
        "call_rules": CALL_RULES,
    }
    options.update(kwargs)
    return FlakyModem("pty", **options)


@pytest.fixture
def clock(monkeypatch):
    """Set the operators' clock (Asia/Shanghai); a working day at 10:00 unless a test moves it."""
    from operators.modem import _ModemQueueOperator

    now = {"at": WORKDAY_10AM}
    monkeypatch.setattr(_ModemQueueOperator, "_local_now", lambda self: now["at"])
    return now


def run_pool(kind: str, batches: list[str], modems: list[str], **kwargs: Any) -> dict[str, Any]:
    """Run one operator per modem at once, as the mapped tasks do; return each one's counts or error."""
    from operators.modem import ModemSmsOperator, ModemVoiceOperator

    cls = ModemVoiceOperator if kind == "voice" else ModemSmsOperator
    if kind == "voice":
        kwargs.setdefault("ring_timeout", 0.5)
    results: dict[str, Any] = {}

    def work(conn_id: str) -> None:
        op = cls(task_id=f"send_{kind}_{conn_id}", batch_ids=batches, modem_conn_id=conn_id, **kwargs)
        try:
            results[conn_id] = op.execute(CONTEXT)
        except Exception as exc:
            results[conn_id] = exc

    threads = [threading.Thread(target=work, args=(m,)) for m in modems]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads), "a modem task did not finish"
    return results


def ledger_rows(store: DunningStore) -> dict[str, dict[str, Any]]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT phone, state, reason, message_ids, send_tries FROM contact_ledger")
        )
        return {r.phone: r._asdict() for r in rows}


def dialled(modems: list[ModemEmulator]) -> list[str]:
    return [call.number for m in modems for call in m.calls]


# -- voice ------------------------------------------------------------------------------------------


def expected_call_result(number: str) -> tuple[str, str]:
    behaviour = CALL_RULES[number]
    if behaviour == "answer":
        return "DELIVERED", "answered"
    return "UNDELIVERED", OUTCOME_REASON[behaviour]


def test_calls_spread_over_the_modems_and_each_number_is_called_once(tmp_path, monkeypatch, clock):
    store, batches = make_store(tmp_path, monkeypatch, 30)
    assert len(batches) == 2
    with emulator() as m1, emulator() as m2, emulator() as m3:
        modems = {"modem_1": m1, "modem_2": m2, "modem_3": m3}
        for conn_id, modem in modems.items():
            connect(monkeypatch, tmp_path, conn_id, modem)
        results = run_pool("voice", batches, list(modems))
    assert all(isinstance(r, dict) for r in results.values()), results
    assert all(len(m.calls) > 0 for m in modems.values()), "every modem took a share"
    numbers = dialled(list(modems.values()))
    assert sorted(numbers) == sorted(phone(n) for n in range(30)), "each number called exactly once"
    rows = ledger_rows(store)
    for number, row in rows.items():
        state, reason = expected_call_result(number)
        assert (row["state"], row["reason"].split(" ")[0]) == (state, reason), number
        assert row["message_ids"] in modems
    spoken = {c.number: c.spoken for m in modems.values() for c in m.calls}
    assert all(spoken[n] == [SAY, SAY] for n in rows if CALL_RULES[n] == "answer")
    assert sum(r["calls"] for r in results.values()) == 30
    assert sum(r["answered"] for r in results.values()) == 6


def test_modem_tasks_run_in_the_modem_pool_on_the_modem_queue():
    from operators.modem import ModemSmsOperator, ModemVoiceOperator, modem_pool_name

    for cls in (ModemVoiceOperator, ModemSmsOperator):
        op = cls(task_id="t", batch_ids=["b"], modem_conn_id="modem_1")
        assert (op.pool, op.queue) == ("modem_pool", "modem")
    assert modem_pool_name("usb modem/1") == "modem_usb_modem_1"


def test_a_modem_hiccup_is_reset_and_the_uncertain_call_is_not_repeated(tmp_path, monkeypatch, clock):
    store, batches = make_store(tmp_path, monkeypatch, 10)
    with emulator(hiccup_on_dial=3, call_rules={}) as modem:  # every callee answers: no early NO CARRIER
        connect(monkeypatch, tmp_path, "modem_1", modem)
        (result,) = run_pool("voice", batches, ["modem_1"]).values()
        commands = modem.commands
    assert isinstance(result, dict), result
    assert result["resets"] == 1 and result["uncertain"] == 1
    assert "AT+CFUN=1,1" in commands
    numbers = dialled([modem])
    assert len(numbers) == len(set(numbers)) == 10, "the call in doubt is not dialled again"
    states = Counter(r["state"] for r in ledger_rows(store).values())
    assert states["CLAIMED"] == 1 and states["PLANNED"] == 0


@pytest.mark.parametrize(
    ("hang", "left_claimed"),
    [
        pytest.param({"hang_on_dial": 3}, 1, id="hangs-on-dial"),
        pytest.param({"hang_on_probe": 4}, 0, id="hangs-between-calls"),
    ],
)
def test_a_stuck_modem_fails_and_the_others_call_the_rest(tmp_path, monkeypatch, clock, hang, left_claimed):
    from airflow.sdk.exceptions import AirflowException

    store, batches = make_store(tmp_path, monkeypatch, 24)
    with emulator() as m1, emulator(**hang) as stuck, emulator() as m3:
        modems = {"modem_1": m1, "modem_stuck": stuck, "modem_3": m3}
        for conn_id, modem in modems.items():
            connect(monkeypatch, tmp_path, conn_id, modem)
        results = run_pool("voice", batches, list(modems))
    error = results["modem_stuck"]
    assert isinstance(error, AirflowException), error
    assert stuck.url in str(error) and "reset" in str(error)
    assert isinstance(results["modem_1"], dict) and isinstance(results["modem_3"], dict)
    numbers = dialled(list(modems.values()))
    assert len(numbers) == len(set(numbers)), "no number called twice"
    states = Counter(r["state"] for r in ledger_rows(store).values())
    assert states["CLAIMED"] == left_claimed
    assert states["PLANNED"] == 0, "the stuck modem's share was called by the others"
    assert states["DELIVERED"] + states["UNDELIVERED"] == 24 - left_claimed


def test_outside_the_calling_window_nothing_is_dialled(tmp_path, monkeypatch, clock):
    store, batches = make_store(tmp_path, monkeypatch, 6)
    clock["at"] = datetime(2026, 11, 23, 20, 30, tzinfo=LOCAL_TZ)
    with emulator() as modem:
        connect(monkeypatch, tmp_path, "modem_1", modem)
        (result,) = run_pool("voice", batches, ["modem_1"]).values()
        assert modem.calls == [] and modem.commands == []
    assert result["held"] == 6
    assert {r["state"] for r in ledger_rows(store).values()} == {"PLANNED"}


def test_no_calls_on_a_public_holiday_unless_rehearsing(tmp_path, monkeypatch, clock):
    store, batches = make_store(tmp_path, monkeypatch, 6)
    clock["at"] = datetime(2026, 10, 1, 10, 0, tzinfo=LOCAL_TZ)  # National Day
    with emulator() as modem:
        connect(monkeypatch, tmp_path, "modem_1", modem)
        (held,) = run_pool("voice", batches, ["modem_1"]).values()
        assert modem.calls == []
        assert {r["state"] for r in ledger_rows(store).values()} == {"PLANNED"}
        (rehearsed,) = run_pool("voice", batches, ["modem_1"], respect_calling_window="false").values()
    assert held["held"] == 6 and rehearsed["calls"] == 6


def test_opt_out_since_planning_is_not_called(tmp_path, monkeypatch, clock):
    store, batches = make_store(tmp_path, monkeypatch, 6)
    store.add_opt_out(phone(2), "reply")
    with emulator() as modem:
        connect(monkeypatch, tmp_path, "modem_1", modem)
        (result,) = run_pool("voice", batches, ["modem_1"]).values()
    assert phone(2) not in dialled([modem]) and result["suppressed"] == 1
    row = ledger_rows(store)[phone(2)]
    assert (row["state"], row["reason"]) == ("SUPPRESSED", "opted_out")


def test_a_modem_without_text_to_speech_takes_no_call(tmp_path, monkeypatch, clock):
    from airflow.sdk.exceptions import AirflowFailException

    store, batches = make_store(tmp_path, monkeypatch, 4)
    with emulator(vendor="generic") as modem:
        connect(monkeypatch, tmp_path, "modem_1", modem, vendor="generic")
        (result,) = run_pool("voice", batches, ["modem_1"]).values()
    assert isinstance(result, AirflowFailException) and "text-to-speech" in str(result)
    assert {r["state"] for r in ledger_rows(store).values()} == {"PLANNED"}


# -- SMS --------------------------------------------------------------------------------------------


def test_sms_spread_over_the_modems_arrive_whole_once_with_references(tmp_path, monkeypatch, clock):
    store, batches = make_store(tmp_path, monkeypatch, 20, channel="sms")
    with emulator() as m1, emulator() as m2:
        modems = {"modem_1": m1, "modem_2": m2}
        for conn_id, modem in modems.items():
            connect(monkeypatch, tmp_path, conn_id, modem)
        results = run_pool("sms", batches, list(modems))
    assert all(isinstance(r, dict) for r in results.values()), results
    assert all(m.messages for m in modems.values()), "every modem took a share"
    received = {msg["destination"]: (conn_id, msg) for conn_id, m in modems.items() for msg in m.messages}
    assert sum(len(m.messages) for m in modems.values()) == len(received) == 20
    for n in range(20):
        row = ledger_rows(store)[phone(n)]
        conn_id, message = received[phone(n)]
        assert message["text"] == voice_row(n, channel="sms")["message_text"]
        assert row["state"] in ("SUBMITTED", "DELIVERED")
        assert row["message_ids"].split(",") == [
            f"{conn_id}:{ref}:{phone(n)}" for ref in message["references"]
        ]
    assert sum(r["submitted"] for r in results.values()) == 20


@pytest.mark.parametrize(
    "hang_on_sms",
    [pytest.param(1, id="hangs-before-the-first-part"), pytest.param(3, id="hangs-later")],
)
def test_a_stuck_sms_modem_fails_and_the_other_sends_the_rest(tmp_path, monkeypatch, clock, hang_on_sms):
    from airflow.sdk.exceptions import AirflowException

    store, batches = make_store(tmp_path, monkeypatch, 16, channel="sms")
    with emulator() as m1, emulator(hang_on_sms=hang_on_sms) as stuck:
        modems = {"modem_1": m1, "modem_stuck": stuck}
        for conn_id, modem in modems.items():
            connect(monkeypatch, tmp_path, conn_id, modem)
        results = run_pool("sms", batches, list(modems))
        parts = [p["destination"] for p in stuck.parts]
    assert isinstance(results["modem_stuck"], AirflowException) and stuck.url in str(results["modem_stuck"])
    rows = ledger_rows(store)
    claimed = [number for number, row in rows.items() if row["state"] == "CLAIMED"]
    assert len(claimed) <= 1 and {r["state"] for r in rows.values()} <= {"SUBMITTED", "DELIVERED", "CLAIMED"}
    if hang_on_sms == 1:
        assert claimed == [], "a message the modem never took goes back to the queue"
    if claimed:
        # only a message cut after some of its parts stays CLAIMED: resending would repeat them
        assert claimed[0] in parts
    whole = [msg["destination"] for m in modems.values() for msg in m.messages]
    assert sorted(whole) == sorted(set(rows) - set(claimed)), "every other row arrived whole, once"


# -- the ledger's queue ----------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def any_store(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'claims.sqlite'}"
    else:
        url = request.getfixturevalue("pg_url" if request.param == "postgresql" else "mariadb_url")
    store = DunningStore(url)
    store.create_schema()
    with store.engine.begin() as conn:
        for table in ("contact_ledger", "message_part", "receipt_unmatched", "opt_out"):
            conn.execute(sa.text(f"DELETE FROM {table}"))
    yield store
    store.engine.dispose()


def test_concurrent_claimers_never_get_the_same_row(any_store):
    any_store.upsert_planned(voice_row(n) for n in range(200))
    batches = any_store.assign_batches("tax_payment", AS_OF, "r1", batch_size=70)
    assert len(batches) == 3
    taken: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def claimer(worker: int) -> None:
        got = taken.setdefault(worker, [])
        try:
            while (row := any_store.claim_next(batches, "r1", gateway=f"modem_{worker}")) is not None:
                assert row.state == "CLAIMED" and row.send_tries == 1
                got.append(row.idempotency_key)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    keys = [k for got in taken.values() for k in got]
    assert len(keys) == len(set(keys)) == 200
    assert any_store.sendable_count(batches) == {"PLANNED": 0, "CLAIMED": 200}
    assert any_store.claim_next(batches, "r1", gateway="late") is None


def test_call_outcomes_and_released_claims_in_the_ledger(any_store):
    any_store.upsert_planned(voice_row(n) for n in range(7))
    batches = any_store.assign_batches("tax_payment", AS_OF, "r1")
    rows = [any_store.claim_next(batches, "r1", gateway="modem_1") for _ in range(7)]
    outcomes = ["answered", "busy", "no_answer", "no_carrier", "rejected", "failed"]
    for row, outcome in zip(rows, outcomes, strict=False):
        seconds = 12.4 if outcome == "answered" else 0.0
        any_store.record_call(row.idempotency_key, outcome, seconds, "spoken 2 time(s)", modem="modem_1")
    assert any_store.release_claim(rows[6].idempotency_key) is True
    assert any_store.release_claim(rows[0].idempotency_key) is False, "a settled row is never reopened"
    assert any_store.record_call(rows[0].idempotency_key, "busy", 0, "") is None
    with any_store.engine.connect() as conn:
        found = {
            r.idempotency_key: (r.state, r.reason, r.submitted_at is not None)
            for r in conn.execute(
                sa.text("SELECT idempotency_key, state, reason, submitted_at FROM contact_ledger")
            )
        }
    assert [found[r.idempotency_key] for r in rows] == [
        ("DELIVERED", "answered 12s, spoken 2 time(s)", True),
        ("UNDELIVERED", "busy", True),
        ("UNDELIVERED", "no_answer", True),
        ("UNDELIVERED", "no_carrier", True),
        ("UNDELIVERED", "rejected", True),
        ("FAILED", "spoken 2 time(s)", False),
        ("PLANNED", None, False),
    ]
    again = any_store.claim_next(batches, "r1", gateway="modem_2")
    assert again is not None and again.idempotency_key == rows[6].idempotency_key and again.send_tries == 2
