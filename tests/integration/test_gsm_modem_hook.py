"""Tests for GsmModemHook through pyserial against the modem emulator over a real pty and TCP."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest

from hooks.gsm_modem import (
    ANSWERED,
    BUSY,
    NO_ANSWER,
    NO_CARRIER,
    REJECTED,
    GsmModemHook,
    IncomingSms,
    ModemBusyError,
    ModemCommandError,
    ModemError,
    ModemMessageError,
    ModemSimError,
    ModemTimeout,
    ModemTransportError,
    StatusReport,
    report_key,
)
from include.simulators.modem import ModemEmulator

pytestmark = pytest.mark.integration

CONN_ID = "gsm_test"
CHINESE = "【12366】您好，您2026年4月的增值税尚未缴纳，请尽快办理，逾期将按日加收滞纳金。"
SAY = "您好，这里是12366税务提醒，您的增值税尚未缴纳。"
CALL_RULES = {
    "13800000001": "answer",
    "13800000002": "busy",
    "13800000003": "no_answer",
    "13800000004": "reject",
    "13800000005": "no_carrier",
}


def set_connection(monkeypatch: pytest.MonkeyPatch, host: str, tmp_path: object, **extra: object) -> None:
    conn = {
        "conn_type": "gsm_modem",
        "host": host,
        "extra": {
            "baud_rate": "115200",
            "vendor": "simcom",
            "command_timeout": "1",
            "sms_timeout": "2",
            "connect_attempts": "1",
            "lock_dir": str(tmp_path),
            "lock_timeout": "0.3",
            "clcc_poll_interval": "0.05",
            **{k: str(v) for k, v in extra.items()},
        },
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))


def emulator(transport: str, **kwargs: object) -> ModemEmulator:
    options: dict = {
        "sms_delay": 0.01,
        "report_delay": 0.01,
        "ring_seconds": 0.05,
        "tts_seconds_per_char": 0.001,
        "call_rules": CALL_RULES,
    }
    options.update(kwargs)
    return ModemEmulator(transport, **options)


@pytest.fixture(params=["pty", "tcp"])
def transport(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def modem(transport: str, monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> Iterator[ModemEmulator]:
    with emulator(transport) as sim:
        set_connection(monkeypatch, sim.url, tmp_path)
        yield sim


@pytest.fixture
def hook(modem: ModemEmulator) -> Iterator[GsmModemHook]:
    with GsmModemHook(CONN_ID) as opened:
        yield opened


def collect(hook: GsmModemHook, count: int, kind: type) -> list:
    events: list = []
    deadline = time.monotonic() + 10
    while len(events) < count and time.monotonic() < deadline:
        events += [e for e in hook.read_events(0.5) if isinstance(e, kind)]
    return events


# -- SMS ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(CHINESE, id="chinese-one-part"),
        pytest.param(CHINESE * 3, id="chinese-three-parts"),
        pytest.param("Tax due {ref A-17} [15/05] 10€ | pay ~now^ \\ " * 5, id="gsm7-extension-long"),
        pytest.param("税务提醒 😀 𠀀𠀁𪚥 " * 12, id="emoji-and-cjk-ext-b-long"),
    ],
)
def test_send_sms_arrives_whole_with_references(hook: GsmModemHook, modem: ModemEmulator, text: str) -> None:
    references = hook.send_sms("13812348000", text, key="2026-05|d1|step1|sms|1")
    (message,) = modem.messages
    assert message["text"] == text
    assert message["destination"] == "13812348000"
    assert message["references"] == references
    assert len(references) == message["parts"]


def test_status_reports_matched_to_key_and_part(hook: GsmModemHook, modem: ModemEmulator) -> None:
    modem.report_rules["13900000002"] = 0x46
    first = hook.send_sms("13900000001", CHINESE * 2, key="row-1")
    second = hook.send_sms("+8613900000002", "Pay now", key="row-2")
    reports = collect(hook, 3, StatusReport)
    got = {(r.message_id, r.key, r.part, r.stat, r.final) for r in reports}
    assert got == {
        (report_key(first[0], "13900000001"), "row-1", 1, "DELIVRD", True),
        (report_key(first[1], "13900000001"), "row-1", 2, "DELIVRD", True),
        (report_key(second[0], "13900000002"), "row-2", 1, "EXPIRED", True),
    }
    receipt = next(r for r in reports if r.key == "row-2").receipt()
    assert (receipt.message_id, receipt.stat, receipt.final) == (
        report_key(second[0], "+8613900000002"),
        "EXPIRED",
        True,
    )


def test_incoming_replies_reassembled_and_deleted(hook: GsmModemHook, modem: ModemEmulator) -> None:
    modem.inject_mo("13812348000", "退订")
    long_reply = "我已经缴纳了税款，请核实，谢谢。" * 6
    modem.inject_mo("13912345678", long_reply)
    replies = collect(hook, 2, IncomingSms)
    assert sorted((r.sender, r.text) for r in replies) == [
        ("13812348000", "退订"),
        ("13912345678", long_reply),
    ]
    assert modem.stored == {}


def test_messages_stored_before_connect_are_read(transport: str, monkeypatch, tmp_path) -> None:
    with emulator(transport) as sim:
        sim.inject_mo("13812348000", "TD")
        set_connection(monkeypatch, sim.url, tmp_path)
        with GsmModemHook(CONN_ID) as hook:
            events = hook.read_events(0)
        assert [(e.sender, e.text) for e in events if isinstance(e, IncomingSms)] == [("13812348000", "TD")]


@pytest.mark.parametrize(
    ("code", "permanent"),
    [
        pytest.param(500, False, id="500-unknown-transient"),
        pytest.param(21, True, id="21-rejected-permanent"),
    ],
)
def test_cms_error_mapped_and_row_resendable(
    hook: GsmModemHook, modem: ModemEmulator, code: int, permanent: bool
) -> None:
    modem.fail_next_sms(code)
    with pytest.raises(ModemCommandError) as info:
        hook.send_sms("13812348000", CHINESE, key="row-9")
    assert (info.value.code, info.value.kind, info.value.permanent) == (code, "CMS", permanent)
    assert "AT+CMGS=" in str(info.value) and modem.url in str(info.value)
    assert modem.messages == []
    references = hook.send_sms("13812348000", CHINESE, key="row-9")
    assert [m["references"] for m in modem.messages] == [references]


def test_failure_on_second_part_reports_sent_parts(hook: GsmModemHook, modem: ModemEmulator) -> None:
    hook.send_sms("13812348000", "warm-up", key="row-0")
    modem.drop_responses(2)  # the CMGS line of part 2 and its answer: nothing comes back
    with pytest.raises(ModemTimeout) as info:
        hook.send_sms("13812348000", "x" * 200, key="row-1")
    assert info.value.references in ([], [modem.parts[-1]["reference"]])
    assert "did not answer AT+CMGS=" in str(info.value)


def test_non_bmp_refused_with_reason_when_configured(modem: ModemEmulator, monkeypatch, tmp_path) -> None:
    set_connection(monkeypatch, modem.url, tmp_path, allow_non_bmp="false")
    with GsmModemHook(CONN_ID) as hook:
        with pytest.raises(ModemMessageError, match=r"U\+1F600\) is outside UCS2") as info:
            hook.send_sms("13812348000", "缴税提醒😀", key="row-1")
    assert info.value.permanent
    assert modem.parts == []


def test_too_long_message_refused_before_sending(hook: GsmModemHook, modem: ModemEmulator) -> None:
    with pytest.raises(ModemMessageError, match="maximum is 6") as info:
        hook.send_sms("13812348000", "税" * 500, key="row-1")
    assert info.value.permanent and modem.parts == []


# -- bad ports, SIMs and modems -----------------------------------------------------------------


def test_missing_port_names_it(monkeypatch, tmp_path) -> None:
    set_connection(monkeypatch, "/dev/ttyUSB-does-not-exist", tmp_path)
    with pytest.raises(
        ModemTransportError, match="cannot open the modem port /dev/ttyUSB-does-not-exist"
    ) as info:
        GsmModemHook(CONN_ID).get_conn()
    assert info.value.command == "(open)"


def test_refused_tcp_port_names_it(monkeypatch, tmp_path) -> None:
    with emulator("tcp") as sim:
        url = sim.url
    set_connection(monkeypatch, url, tmp_path)
    ok, message = GsmModemHook(CONN_ID).test_connection()
    assert not ok and url in message


def test_sim_asking_for_puk_is_permanent(transport: str, monkeypatch, tmp_path) -> None:
    with emulator(transport, sim_state="SIM PUK") as sim:
        set_connection(monkeypatch, sim.url, tmp_path, sim_pin="1234")
        with pytest.raises(ModemSimError, match="asks for a PUK") as info:
            GsmModemHook(CONN_ID).get_conn()
    assert info.value.permanent and info.value.command == "AT+CPIN?" and sim.url in str(info.value)


def test_sim_pin_entered_when_asked(transport: str, monkeypatch, tmp_path) -> None:
    with emulator(transport, sim_state="SIM PIN", pin="4321") as sim:
        set_connection(monkeypatch, sim.url, tmp_path, sim_pin="4321")
        with GsmModemHook(CONN_ID) as hook:
            hook.send_sms("13812348000", "hi", key="k")
        assert [m["text"] for m in sim.messages] == ["hi"]


def test_wrong_pin_never_retried_nor_shown(transport: str, monkeypatch, tmp_path, caplog) -> None:
    with emulator(transport, sim_state="SIM PIN", pin="4321") as sim:
        set_connection(monkeypatch, sim.url, tmp_path, sim_pin="9999", connect_attempts="3")
        with pytest.raises(ModemSimError, match="refused the PIN") as info:
            GsmModemHook(CONN_ID).get_conn()
        assert [c for c in sim.commands if c.startswith("AT+CPIN=")] == ['AT+CPIN="9999"']
    assert info.value.permanent and info.value.code == 16
    assert "9999" not in str(info.value) and "9999" not in caplog.text


def test_garbage_answers_name_port_and_command(transport: str, monkeypatch, tmp_path) -> None:
    with emulator(transport, garbage=True) as sim:
        set_connection(monkeypatch, sim.url, tmp_path, command_timeout="0.3")
        with pytest.raises(ModemTimeout, match="answered garbage to AT") as info:
            GsmModemHook(CONN_ID).get_conn()
    assert sim.url in str(info.value) and info.value.command == "AT"


def test_modem_that_stops_answering(hook: GsmModemHook, modem: ModemEmulator) -> None:
    modem.stop_answering()
    with pytest.raises(ModemTimeout, match=r"did not answer AT\+CMGS=\d+ \(no '> ' prompt\)") as info:
        hook.send_sms("13812348000", CHINESE, key="row-1")
    assert not info.value.permanent and modem.url in str(info.value)


# -- ownership, kill, reset ------------------------------------------------------------------------


def test_one_task_owns_the_modem(modem: ModemEmulator) -> None:
    with GsmModemHook(CONN_ID):
        with pytest.raises(ModemBusyError, match="in use by another task"):
            GsmModemHook(CONN_ID).get_conn()
    with GsmModemHook(CONN_ID) as second:
        assert second.send_sms("13812348000", "after release", key="k")


def test_on_kill_hangs_up_and_releases(modem: ModemEmulator) -> None:
    hook = GsmModemHook(CONN_ID)
    hook.get_conn()
    errors: list[BaseException] = []

    def ring() -> None:
        try:
            hook.call("13800000003", SAY, ring_timeout=5)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=ring)
    thread.start()
    deadline = time.monotonic() + 5
    while not modem.calls and time.monotonic() < deadline:
        time.sleep(0.02)
    hook.on_kill()
    thread.join(10)
    # The emulator reads the ATH from its side of the port on its own thread: wait for it.
    deadline = time.monotonic() + 5
    while modem.calls[-1].outcome is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert modem.calls[-1].outcome == "hung_up"
    with GsmModemHook(CONN_ID) as again:  # the lock was released
        assert again.send_sms("13812348000", "after kill", key="k")


def test_reset_restarts_and_reinitialises(hook: GsmModemHook, modem: ModemEmulator) -> None:
    hook.reset()
    commands = modem.commands
    assert "AT+CFUN=1,1" in commands
    assert "AT+CNMI=2,1,0,1,0" in commands[commands.index("AT+CFUN=1,1") :]
    assert hook.send_sms("13812348000", "after reset", key="k")
    assert modem.messages[-1]["text"] == "after reset"


def test_test_connection_reports_modem(modem: ModemEmulator) -> None:
    ok, message = GsmModemHook(CONN_ID).test_connection()
    assert ok and "SIMCOM" in message and modem.url in message


# -- voice --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "outcome"),
    [
        pytest.param("13800000002", BUSY, id="busy"),
        pytest.param("13800000003", NO_ANSWER, id="no-answer"),
        pytest.param("13800000004", REJECTED, id="rejected"),
        pytest.param("13800000005", NO_CARRIER, id="no-carrier"),
    ],
)
def test_unanswered_call_outcomes(
    hook: GsmModemHook, modem: ModemEmulator, number: str, outcome: str
) -> None:
    result = hook.call(number, SAY, ring_timeout=0.6)
    assert (result.outcome, result.answered_seconds) == (outcome, 0.0)
    assert modem.calls[-1].spoken == []
    assert modem.calls[-1].outcome is not None  # nothing left ringing


@pytest.mark.parametrize("vendor", ["simcom", "quectel"])
def test_answered_call_speaks_text_repeatedly(transport: str, vendor: str, monkeypatch, tmp_path) -> None:
    with emulator(transport, vendor=vendor) as sim:
        set_connection(monkeypatch, sim.url, tmp_path, vendor=vendor)
        with GsmModemHook(CONN_ID) as hook:
            result = hook.call("13800000001", SAY, repeat=3, ring_timeout=2)
        (call,) = sim.calls
    assert result.outcome == ANSWERED and result.answered_seconds > 0
    assert call.spoken == [SAY] * 3 and call.outcome == "hung_up"
    assert any(c.startswith("AT+QTTS=1," if vendor == "quectel" else "AT+CTTS=1,") for c in sim.commands)


def test_callee_hanging_up_during_playback(transport: str, monkeypatch, tmp_path) -> None:
    with emulator(transport, talk_limit=0.05, tts_seconds_per_char=0.02) as sim:
        set_connection(monkeypatch, sim.url, tmp_path)
        with GsmModemHook(CONN_ID) as hook:
            result = hook.call("13800000001", SAY, repeat=3, ring_timeout=2)
    assert result.outcome == ANSWERED and "callee hung up during playback 1" in result.detail
    assert sim.calls[0].outcome == "callee_hung_up"


@pytest.mark.parametrize(
    ("vendor", "text", "message"),
    [
        pytest.param("generic", SAY, "has no text-to-speech", id="generic-no-tts"),
        pytest.param("simcom", "请缴税😀", r"U\+1F600\) is outside UCS2", id="emoji-refused"),
        pytest.param("simcom", "  ", "nothing to say", id="empty"),
    ],
)
def test_call_refused_before_dialling(
    modem: ModemEmulator, monkeypatch, tmp_path, vendor, text, message
) -> None:
    set_connection(monkeypatch, modem.url, tmp_path, vendor=vendor)
    with GsmModemHook(CONN_ID) as hook:
        with pytest.raises(ModemMessageError, match=message) as info:
            hook.call("13800000001", text)
    assert info.value.permanent and modem.calls == []


def test_every_error_is_a_modem_error() -> None:
    for cls in (ModemBusyError, ModemCommandError, ModemMessageError, ModemSimError, ModemTimeout):
        assert issubclass(cls, ModemError)
