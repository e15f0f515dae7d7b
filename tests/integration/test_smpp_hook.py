"""Tests for SmppHook against the SMSC simulator over a real socket."""

from __future__ import annotations

import json
import socket
import zlib
from collections.abc import Iterator

import pytest

from hooks.smpp import (
    OutboundSms,
    SmppBindError,
    SmppHook,
    SmppTransportError,
    SubmitResult,
    status_name,
)
from include.dunning.receipts import DeliveryReceipt, normalize_message_id
from include.dunning.sms import sms_parts
from include.simulators.smsc import SmscSimulator

pytestmark = pytest.mark.integration

PASSWORD = "s3cr3t!"
UNDELIVERABLE_SHARE = 0.2
TEXTS = [
    "【12366】您好，您2026年4月的增值税尚未缴纳，请尽快办理。",
    "【95598】尊敬的客户，您的电费已逾期，请于7日内缴纳，逾期将按日加收违约金。" * 3,
    "Reminder {ref: A-17} [due 15/05] fee 10€ | pay via ~portal^ \\ now.",
    "Tax due: please pay before 15 May. Reply TD to stop. " * 4,
    "😀 税务提醒 " * 12,
]


def set_connection(
    monkeypatch: pytest.MonkeyPatch, port: int, *, password: str = PASSWORD, **extra: object
) -> None:
    conn = {
        "conn_type": "smpp",
        "host": "127.0.0.1",
        "port": port,
        "login": "tax",
        "password": password,
        "extra": {"source_addr": "12366", "window": "10", "registered_delivery": "true", **extra},
    }
    monkeypatch.setenv("AIRFLOW_CONN_SMPP_TEST", json.dumps(conn))


@pytest.fixture
def simulator() -> Iterator[SmscSimulator]:
    with SmscSimulator(password=PASSWORD, receipt_delay=0.01, undeliverable_share=UNDELIVERABLE_SHARE) as sim:
        yield sim


def batch(n: int) -> list[OutboundSms]:
    return [
        OutboundSms(
            key=f"2026-05|debtor-{i}|step1|sms|1", destination=f"139{i:08d}", text=f"{TEXTS[i % 5]} #{i}"
        )
        for i in range(n)
    ]


def undeliverable(destination: str) -> bool:
    return zlib.crc32(destination.encode()) % 1000 < UNDELIVERABLE_SHARE * 1000


def collect_all(hook: SmppHook, expected: int) -> list[DeliveryReceipt]:
    receipts: list[DeliveryReceipt] = []
    count = hook.collect(
        on_receipt=receipts.append,
        idle_timeout=10,
        max_seconds=60,
        stop_when=lambda: len(receipts) >= expected,
    )
    assert count == len(receipts)
    return receipts


def check_batch(sim: SmscSimulator, messages: list[OutboundSms], results: list[SubmitResult]) -> list[str]:
    by_destination = {m["destination"]: m for m in sim.messages}
    all_ids = []
    for message, result in zip(messages, results, strict=True):
        assert (result.key, result.command_status, result.error, result.permanent) == (
            message.key,
            0,
            None,
            False,
        )
        record = by_destination[message.destination]
        assert record["text"] == message.text
        assert record["source"] == "12366"
        assert len(result.message_ids) == sms_parts(message.text) == record["parts"]
        assert result.message_ids == [normalize_message_id(i) for i in record["message_ids"]]
        all_ids += result.message_ids
    return all_ids


def test_submit_batch_then_collect_on_a_receiver(
    monkeypatch: pytest.MonkeyPatch, simulator: SmscSimulator
) -> None:
    set_connection(monkeypatch, simulator.port)
    messages = batch(200)
    with SmppHook("smpp_test", bind_mode="transmitter") as sender:
        results = sender.submit_batch(messages)
    assert len(simulator.messages) == 200
    all_ids = check_batch(simulator, messages, results)
    assert len(set(all_ids)) == len(all_ids) > 200
    with SmppHook("smpp_test", bind_mode="receiver") as receiver:
        receipts = collect_all(receiver, len(all_ids))
    assert sorted(r.message_id for r in receipts) == sorted(all_ids)
    destination_of = {i: m.destination for m, r in zip(messages, results, strict=True) for i in r.message_ids}
    for receipt in receipts:
        expected_bad = undeliverable(destination_of[receipt.message_id])
        assert receipt.stat == ("UNDELIV" if expected_bad else "DELIVRD")
        assert receipt.message_state == (5 if expected_bad else 2)
    assert 0 < sum(not r.delivered for r in receipts) < len(receipts)


def test_transceiver_hands_receipts_from_the_submit_to_collect(
    monkeypatch: pytest.MonkeyPatch, simulator: SmscSimulator
) -> None:
    set_connection(monkeypatch, simulator.port, window="3")
    messages = batch(30)
    with SmppHook("smpp_test") as hook:
        results = hook.submit_batch(messages)
        all_ids = check_batch(simulator, messages, results)
        receipts = collect_all(hook, len(all_ids))
    assert sorted(r.message_id for r in receipts) == sorted(all_ids)


def test_mixed_id_format_still_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    with SmscSimulator(password=PASSWORD, receipt_delay=0.0, id_format="mixed") as sim:
        set_connection(monkeypatch, sim.port, receipt_ids_decimal="true")
        with SmppHook("smpp_test") as hook:
            results = hook.submit_batch(batch(20))
            receipts = collect_all(hook, sum(len(r.message_ids) for r in results))
    assert sorted(r.message_id for r in receipts) == sorted(i for r in results for i in r.message_ids)


@pytest.mark.parametrize(
    ("message", "status", "permanent", "error"),
    [
        pytest.param(
            OutboundSms("k-long", "13900000001", "税" * 403),
            0x01,
            True,
            "needs 7 SMS parts",
            id="too-many-parts",
        ),
        pytest.param(
            OutboundSms("k-nodest", "", "hello"), 0x0B, True, "ESME_RINVDSTADR", id="no-destination"
        ),
    ],
)
def test_refused_messages_are_permanent_and_others_still_go(
    monkeypatch: pytest.MonkeyPatch,
    simulator: SmscSimulator,
    message: OutboundSms,
    status: int,
    permanent: bool,
    error: str,
) -> None:
    set_connection(monkeypatch, simulator.port)
    good = OutboundSms("k-good", "13900000002", "hello")
    with SmppHook("smpp_test", bind_mode="transmitter") as hook:
        bad_result, good_result = hook.submit_batch([message, good])
    assert (bad_result.key, bad_result.command_status, bad_result.permanent) == (
        message.key,
        status,
        permanent,
    )
    assert error in (bad_result.error or "")
    assert bad_result.message_ids == []
    assert good_result.command_status == 0 and len(good_result.message_ids) == 1
    assert [m["destination"] for m in simulator.messages] == ["13900000002"]


class ThrottlingSmsc(SmscSimulator):
    """Answer every third submit_sm with ESME_RTHROTTLED."""

    calls = 0

    def submit_status(self, session_system_id, submit):  # type: ignore[no-untyped-def]
        self.calls += 1
        return 0x58 if self.calls % 3 == 0 else super().submit_status(session_system_id, submit)


def test_throttled_parts_are_resent(monkeypatch: pytest.MonkeyPatch) -> None:
    with ThrottlingSmsc(password=PASSWORD) as sim:
        set_connection(monkeypatch, sim.port)
        messages = batch(30)
        with SmppHook("smpp_test", bind_mode="transmitter") as hook:
            results = hook.submit_batch(messages)
        check_batch(sim, messages, results)
        assert sim.calls > sim.submits


def test_reply_reaches_on_message(monkeypatch: pytest.MonkeyPatch, simulator: SmscSimulator) -> None:
    set_connection(monkeypatch, simulator.port)
    simulator.inject_mo("tax", "13812348000", "12366", "退订")
    replies: list[dict] = []
    with SmppHook("smpp_test", bind_mode="receiver") as hook:
        hook.collect(on_receipt=lambda r: None, on_message=replies.append, stop_when=lambda: bool(replies))
    assert replies == [{"source": "13812348000", "destination": "12366", "text": "退订"}]


def test_bad_password_is_refused_once_without_leaking_it(
    monkeypatch: pytest.MonkeyPatch, simulator: SmscSimulator
) -> None:
    set_connection(monkeypatch, simulator.port, password="hunter2", connect_attempts="3")
    hook = SmppHook("smpp_test")
    calls = []
    original = hook._connect_and_bind
    monkeypatch.setattr(hook, "_connect_and_bind", lambda: calls.append(1) or original())
    with pytest.raises(SmppBindError) as info:
        hook.get_conn()
    assert info.value.command_status == 0x0E
    assert "hunter2" not in str(info.value) and PASSWORD not in str(info.value)
    assert f"127.0.0.1:{simulator.port}" in str(info.value)
    assert calls == [1]
    ok, message = hook.test_connection()
    assert not ok and "hunter2" not in message and "RINVPASWD" in message


def test_unreachable_port_names_host_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    set_connection(monkeypatch, port, connect_attempts="2")
    hook = SmppHook("smpp_test")
    calls = []
    original = hook._connect_and_bind
    monkeypatch.setattr(hook, "_connect_and_bind", lambda: calls.append(1) or original())
    with pytest.raises(SmppTransportError, match=f"127.0.0.1:{port}"):
        hook.get_conn()
    assert calls == [1, 1]


def test_test_connection_succeeds(monkeypatch: pytest.MonkeyPatch, simulator: SmscSimulator) -> None:
    set_connection(monkeypatch, simulator.port)
    ok, message = SmppHook("smpp_test").test_connection()
    assert ok and f"127.0.0.1:{simulator.port}" in message


@pytest.mark.parametrize(
    ("extra", "attribute", "value"),
    [
        pytest.param({"registered_delivery": "false"}, "registered_delivery", False, id="bool-string-false"),
        pytest.param({"registered_delivery": "0"}, "registered_delivery", False, id="bool-string-zero"),
        pytest.param({}, "registered_delivery", True, id="bool-default"),
        pytest.param({"window": "25"}, "window", 25, id="window-string"),
        pytest.param({"extra__smpp__max_parts": "3"}, "max_parts", 3, id="prefixed-extra"),
        pytest.param({"validity_minutes": "1500"}, "validity_period", "000001010000000R", id="validity-1d1h"),
    ],
)
def test_extras_are_typed(
    monkeypatch: pytest.MonkeyPatch, extra: dict, attribute: str, value: object
) -> None:
    set_connection(monkeypatch, 2775, **extra)
    got = getattr(SmppHook("smpp_test"), attribute)
    assert (got() if callable(got) else got) == value


# -- rehearsal knobs of the simulator, against the hook ------------------------------------------


def single_part_batch(n: int, prefix: str = "138") -> list[OutboundSms]:
    return [OutboundSms(f"key-{i}", f"{prefix}{i:08d}", f"请缴税 #{i}") for i in range(n)]


def test_throttled_hook_slows_down_and_every_message_arrives_once(monkeypatch: pytest.MonkeyPatch) -> None:
    messages = single_part_batch(600)
    with SmscSimulator(password=PASSWORD, throttle_rate=1500, throttle_burst=20) as sim:
        set_connection(monkeypatch, sim.port, window="50", registered_delivery="false")
        with SmppHook("smpp_test", bind_mode="transmitter") as hook:
            results = hook.submit_batch(messages)
        received = sim.received
    throttled = [r for r in received if r["status"] == 0x58]
    accepted = [r for r in received if r["status"] == 0]
    assert throttled, "the simulator never throttled: the test proves nothing"
    assert all(r.command_status == 0 and len(r.message_ids) == 1 for r in results)
    assert sorted(r["destination"] for r in accepted) == sorted(m.destination for m in messages)
    assert [m["destination"] for m in sim.messages] == [r["destination"] for r in accepted]
    # Every throttled message went out again with the same text and was accepted once.
    texts = {m["destination"]: m["text"] for m in sim.messages}
    assert all(texts[r["destination"]] == f"请缴税 #{int(r['destination'][3:])}" for r in throttled)
    # A hook that resent at full speed would be throttled several times per message.
    assert len(throttled) < len(messages) // 2


def test_random_refusals_are_permanent_or_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    messages = single_part_batch(300)
    with SmscSimulator(
        password=PASSWORD, permanent_error_share=0.1, transient_error_share=0.1, seed=7
    ) as sim:
        set_connection(monkeypatch, sim.port, window="20", registered_delivery="false")
        with SmppHook("smpp_test", bind_mode="transmitter") as hook:
            results = hook.submit_batch(messages)
        status_of = {r["destination"]: r["status"] for r in sim.received}
    by_status: dict[int, int] = {}
    for message, result in zip(messages, results, strict=True):
        status = status_of[message.destination]
        by_status[status] = by_status.get(status, 0) + 1
        assert result.command_status == status
        assert result.permanent is (status == 0x0B)
        assert bool(result.message_ids) is (status == 0)
        if status:
            assert status_name(status) in (result.error or "")
    assert set(by_status) == {0, 0x0B, 0x08}
    assert 10 < by_status[0x0B] < 60 and 10 < by_status[0x08] < 60
    assert len(sim.messages) == by_status[0]


def test_disconnect_mid_batch_reports_the_answered_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    messages = single_part_batch(200)
    with SmscSimulator(password=PASSWORD, disconnect_every=75) as sim:
        set_connection(monkeypatch, sim.port, window="10", registered_delivery="false")
        hook = SmppHook("smpp_test", bind_mode="transmitter")
        with pytest.raises(SmppTransportError) as info:
            with hook:
                hook.submit_batch(messages)
        recorded = sim.messages
    results = info.value.results
    assert len(recorded) == 75  # the 75th was recorded, its response never came
    assert f"127.0.0.1:{sim.port}" in str(info.value)
    ids_of = {m["destination"]: m["message_ids"] for m in recorded}
    assert 75 - 10 <= len(results) < 75
    for result in results:
        destination = messages[int(result.key.split("-")[1])].destination
        assert result.command_status == 0
        assert result.message_ids == [normalize_message_id(i) for i in ids_of[destination]]
    answered = {r.key for r in results}
    assert messages[74].key not in answered  # recorded by the SMSC, uncertain to the hook


def test_receipt_state_mix_is_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    mix = {"DELIVRD": 0.5, "UNDELIV": 0.2, "EXPIRED": 0.15, "REJECTD": 0.05, "none": 0.1}
    messages = single_part_batch(200, prefix="137")
    with SmscSimulator(password=PASSWORD, receipt_delay=0.0, receipt_mix=mix, seed=3) as sim:
        set_connection(monkeypatch, sim.port, window="20")
        expected = {m.destination: sim.receipt_stat_for(m.destination) for m in messages}
        with SmppHook("smpp_test") as hook:
            results = hook.submit_batch(messages)
            wanted = sum(stat is not None for stat in expected.values())
            receipts: list[DeliveryReceipt] = []
            hook.collect(
                on_receipt=receipts.append, idle_timeout=2, stop_when=lambda: len(receipts) >= wanted
            )
    destination_of = {r.message_ids[0]: m.destination for m, r in zip(messages, results, strict=True)}
    assert len(receipts) == wanted
    states = {"DELIVRD": 2, "UNDELIV": 5, "EXPIRED": 3, "REJECTD": 8}
    for receipt in receipts:
        stat = expected[destination_of[receipt.message_id]]
        assert (receipt.stat, receipt.message_state) == (stat, states[stat])
        assert receipt.delivered is (stat == "DELIVRD")
    assert {r.stat for r in receipts} == set(states)
    assert 0 < sum(stat is None for stat in expected.values()) < 40


def test_reply_td_reaches_on_message_on_a_transceiver(
    monkeypatch: pytest.MonkeyPatch, simulator: SmscSimulator
) -> None:
    set_connection(monkeypatch, simulator.port)
    replies: list[dict] = []
    receipts: list[DeliveryReceipt] = []
    with SmppHook("smpp_test") as hook:
        [result] = hook.submit_batch([OutboundSms("k-td", "13812348000", "请缴税，回复TD退订")])
        simulator.inject_mo("tax", "13812348000", "12366", "TD")
        hook.collect(
            on_receipt=receipts.append,
            on_message=replies.append,
            idle_timeout=5,
            stop_when=lambda: bool(replies) and bool(receipts),
        )
    assert replies == [{"source": "13812348000", "destination": "12366", "text": "TD"}]
    assert [r.message_id for r in receipts] == result.message_ids


def test_on_result_streams_each_message_once_under_throttling_with_multipart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    messages = batch(200)  # a mix of single and multipart texts
    streamed: list[SubmitResult] = []
    # A low rate: even a machine busy with other work sends faster than this and is throttled.
    with SmscSimulator(password=PASSWORD, throttle_rate=400, throttle_burst=10, seed=3) as sim:
        set_connection(monkeypatch, sim.port, window="30", registered_delivery="false")
        with SmppHook("smpp_test", bind_mode="transmitter") as hook:
            results = hook.submit_batch(messages, on_result=streamed.append)
        throttled = [r for r in sim.received if r["status"] == 0x58]
    assert throttled, "the simulator never throttled: the test proves nothing"
    assert sorted(r.key for r in streamed) == sorted(m.key for m in messages)  # each exactly once
    by_key = {r.key: r for r in results}
    text_of = {m.key: m.text for m in messages}
    assert any(sms_parts(text) > 1 for text in text_of.values())
    for result in streamed:
        assert result.command_status == 0
        assert result.message_ids == by_key[result.key].message_ids  # complete when handed over
        assert len(result.message_ids) == sms_parts(text_of[result.key])


def test_admit_holds_messages_back_and_can_end_the_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    messages = single_part_batch(120)
    streamed: list[SubmitResult] = []
    seen_at_admit: list[tuple[int, int]] = []

    def admit() -> tuple[int, int]:
        # Start a message only once every earlier one was answered (a bound of one in doubt),
        # and end the batch after 90 messages, as a used-up quota would.
        seen_at_admit.append((len(streamed), sim.submits))
        return len(streamed) + 1, 90

    with SmscSimulator(password=PASSWORD) as sim:
        set_connection(monkeypatch, sim.port, window="10", registered_delivery="false")
        with SmppHook("smpp_test", bind_mode="transmitter") as hook:
            results = hook.submit_batch(messages, on_result=streamed.append, admit=admit)
        received = [m["destination"] for m in sim.messages]
    assert len(results) == len(streamed) == 90
    assert received == [m.destination for m in messages[:90]]  # in order, none past the end
    assert all(submits - answered <= 1 for answered, submits in seen_at_admit)


def test_disconnect_with_on_result_hands_over_every_answer_before_raising(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    messages = single_part_batch(200)
    streamed: list[SubmitResult] = []
    with SmscSimulator(password=PASSWORD, disconnect_every=75) as sim:
        set_connection(monkeypatch, sim.port, window="10", registered_delivery="false")
        hook = SmppHook("smpp_test", bind_mode="transmitter")
        with pytest.raises(SmppTransportError) as info:
            with hook:
                hook.submit_batch(messages, on_result=streamed.append)
        recorded = sim.messages
    assert info.value.results == []  # already handed over, one by one
    ids_of = {m["destination"]: m["message_ids"] for m in recorded}
    assert 75 - 10 <= len(streamed) < 75
    for result in streamed:
        destination = messages[int(result.key.split("-")[1])].destination
        assert result.message_ids == [normalize_message_id(i) for i in ids_of[destination]]
    assert messages[74].key not in {r.key for r in streamed}
