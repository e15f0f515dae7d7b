"""Tests for the modem emulator through pyserial, over a real pty and over TCP (no serial mocks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import serial

from include.dunning.pdu import SmsDeliver, SmsStatusReport, decode_pdu, encode_submit
from include.simulators.modem import ModemEmulator

pytestmark = pytest.mark.integration

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(params=["pty", "tcp"])
def modem(request: pytest.FixtureRequest) -> Iterator[ModemEmulator]:
    with ModemEmulator(request.param, sms_delay=0.01, report_delay=0.01, ring_seconds=0.05) as emulator:
        yield emulator


@pytest.fixture
def port(modem: ModemEmulator) -> Iterator[serial.SerialBase]:
    handle = serial.serial_for_url(modem.url, 115200, timeout=0.05)
    yield handle
    handle.close()


def read_until(port: serial.SerialBase, marker: bytes, timeout: float = 3.0) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data and time.monotonic() < deadline:
        data += port.read(max(1, port.in_waiting))
    return data


def at(port: serial.SerialBase, command: str, marker: bytes = b"OK\r\n") -> str:
    port.write(command.encode() + b"\r")
    return read_until(port, marker).decode("ascii", "replace")


def test_echo_then_ate0(port: serial.SerialBase) -> None:
    assert at(port, "AT") == "AT\r\r\nOK\r\n"
    assert at(port, "ATE0") == "ATE0\r\r\nOK\r\n"
    assert at(port, "AT") == "\r\nOK\r\n"


def test_cmgs_decodes_pdu_answers_reference_and_reports(
    modem: ModemEmulator, port: serial.SerialBase
) -> None:
    at(port, "ATE0")
    at(port, "AT+CNMI=2,1,0,1,0")
    text = "【12366】您好，您的增值税尚未缴纳，请尽快办理。" * 4
    pdus = encode_submit("13812348000", text, concat_reference=77)
    references = []
    reports = b""
    for pdu in pdus:
        assert at(port, f"AT+CMGS={pdu.tpdu_length}", b"> ").endswith("> ")
        port.write(pdu.hex.encode() + b"\x1a")
        answer = read_until(port, b"OK\r\n")
        reports += answer
        references.append(int(answer.decode().split("+CMGS:")[1].split()[0]))
    assert modem.messages == [
        {"destination": "13812348000", "text": text, "references": references, "parts": 2}
    ]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not (
        reports.count(b"+CDS:") == 2 and reports.rsplit(b"+CDS:", 1)[1].count(b"\r\n") >= 2
    ):
        reports += read_until(port, b"\r\n", 1.0)
    lines = reports.decode().split()
    decoded = [decode_pdu(lines[i + 2]) for i, word in enumerate(lines) if word == "+CDS:"]
    assert {(r.reference, r.recipient) for r in decoded if isinstance(r, SmsStatusReport)} == {
        (ref, "13812348000") for ref in references
    }


def test_wrong_pdu_length_is_refused(port: serial.SerialBase, modem: ModemEmulator) -> None:
    at(port, "ATE0")
    at(port, "AT+CMEE=1")
    (pdu,) = encode_submit("13812348000", "hello")
    at(port, f"AT+CMGS={pdu.tpdu_length + 3}", b"> ")
    port.write(pdu.hex.encode() + b"\x1a")
    assert "+CMS ERROR: 304" in read_until(port, b"304").decode()
    assert modem.messages == []


def test_injected_sms_error(port: serial.SerialBase, modem: ModemEmulator) -> None:
    at(port, "ATE0")
    at(port, "AT+CMEE=1")
    modem.fail_next_sms(500)
    (pdu,) = encode_submit("13812348000", "hello")
    at(port, f"AT+CMGS={pdu.tpdu_length}", b"> ")
    port.write(pdu.hex.encode() + b"\x1a")
    assert "+CMS ERROR: 500" in read_until(port, b"500").decode()
    assert modem.messages == []


def test_mo_message_stored_announced_and_readable(port: serial.SerialBase, modem: ModemEmulator) -> None:
    at(port, "ATE0")
    at(port, "AT+CNMI=2,1,0,1,0")
    (index,) = modem.inject_mo("13812348000", "退订")
    assert f'+CMTI: "SM",{index}' in read_until(port, b"+CMTI").decode() + read_until(port, b"\r\n").decode()
    lines = at(port, f"AT+CMGR={index}").split()
    decoded = decode_pdu(lines[lines.index("OK") - 1])
    assert isinstance(decoded, SmsDeliver) and (decoded.sender, decoded.text) == ("13812348000", "退订")
    at(port, f"AT+CMGD={index}")
    assert modem.stored == {}


def test_stopped_modem_sends_nothing(port: serial.SerialBase, modem: ModemEmulator) -> None:
    at(port, "ATE0")
    modem.stop_answering()
    port.write(b"AT\r")
    assert read_until(port, b"OK", 0.5) == b""


def test_busy_call_ends_with_busy(port: serial.SerialBase, modem: ModemEmulator) -> None:
    modem.call_rules["13800000002"] = "busy"
    at(port, "ATE0")
    assert "OK" in at(port, "ATD13800000002;")
    assert "BUSY" in read_until(port, b"BUSY").decode()
    assert [(c.number, c.outcome) for c in modem.calls] == [("13800000002", "busy")]


def test_cli_serves_tcp_until_interrupted() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "include.simulators.modem", "--tcp", "0", "--sms-delay", "0"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert "socket://127.0.0.1:" in banner
        url = banner.strip().split(" on ")[1]
        with serial.serial_for_url(url, timeout=0.05) as handle:
            assert at(handle, "AT+CPIN?").endswith("+CPIN: READY\r\n\r\nOK\r\n")
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0
        assert "stopped" in process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
