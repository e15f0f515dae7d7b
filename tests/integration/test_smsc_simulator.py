"""Tests for the SMSC simulator over a real socket, driven by a plain smpplib client."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import smpplib.client
import smpplib.exceptions
import smpplib.smpp

from include.dunning.sms import concat_udh, split_text
from include.simulators import smsc
from include.simulators.smsc import SmscSimulator

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHINESE = (
    "【12366】尊敬的纳税人，您2026年4月的增值税尚未申报缴纳，请于5月15日前办理，逾期将按日加收万分之五滞纳金。详询12366。"
    * 3
)
GSM_EXT = "Reminder {ref: A-17} [due 15/05] cost 10€ | pay via ~portal^ \\ now. " * 3


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll until predicate() is true; fail the test if it never becomes true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached")
        time.sleep(0.01)


@pytest.fixture
def simulator() -> Iterator[SmscSimulator]:
    with SmscSimulator(receipt_delay=0.01) as sim:
        yield sim


def connect(sim: SmscSimulator, mode: str = "transceiver", system_id: str = "esme", password: str = "pw"):
    client = smpplib.client.Client("127.0.0.1", sim.port, timeout=5, allow_unknown_opt_params=True)
    client.connect()
    resp = getattr(client, f"bind_{mode}")(system_id=system_id, password=password)
    return client, resp


def close(client: smpplib.client.Client) -> None:
    client.unbind()
    client.disconnect()


def submit(
    client, text: str, destination: str = "13812348000", *, receipt: bool = False, reverse: bool = False
):
    """Send ``text`` as one or more submit_sm; return the message ids in part order."""
    encoded = split_text(text)
    total = len(encoded.parts)
    pdus = []
    for seq, body in enumerate(encoded.parts, start=1):
        udh = concat_udh(77, total, seq) if total > 1 else b""
        pdus.append(
            smpplib.smpp.make_pdu(
                "submit_sm",
                client=client,
                source_addr="12366",
                source_addr_ton=0,
                source_addr_npi=1,
                destination_addr=destination,
                dest_addr_ton=0,
                dest_addr_npi=1,
                esm_class=0x40 if total > 1 else 0,
                data_coding=encoded.data_coding,
                registered_delivery=1 if receipt else 0,
                short_message=udh + body,
            )
        )
    ids: dict[int, str] = {}
    for index in reversed(range(total)) if reverse else range(total):
        client.send_pdu(pdus[index])
        resp = client.read_pdu()
        assert resp.command == "submit_sm_resp" and resp.status == 0
        ids[index] = resp.message_id.decode()
    return [ids[i] for i in range(total)]


def read_deliver(client) -> smpplib.command.DeliverSM:
    pdu = client.read_pdu()
    assert pdu.command == "deliver_sm"
    resp = smpplib.smpp.make_pdu("deliver_sm_resp", client=client)
    resp.sequence = pdu.sequence
    client.send_pdu(resp)
    return pdu


@pytest.mark.parametrize(
    ("mode", "submit_status"),
    [
        pytest.param("transmitter", 0, id="transmitter-submits"),
        pytest.param("transceiver", 0, id="transceiver-submits"),
        pytest.param("receiver", 0x04, id="receiver-refused-RINVBNDSTS"),
    ],
)
def test_bind_modes(simulator: SmscSimulator, mode: str, submit_status: int) -> None:
    client, resp = connect(simulator, mode)
    assert resp.status == 0 and resp.system_id == b"SMSCSIM"
    pdu = smpplib.smpp.make_pdu(
        "submit_sm", client=client, source_addr="12366", destination_addr="13812348000", short_message=b"hi"
    )
    client._socket.sendall(pdu.generate())  # smpplib itself refuses submit_sm on a receiver bind
    assert client.read_pdu().status == submit_status
    close(client)
    assert simulator.submits == (1 if submit_status == 0 else 0)


@pytest.mark.parametrize("reverse", [pytest.param(False, id="in-order"), pytest.param(True, id="reversed")])
def test_ucs2_multipart_reassembles_exact_text(simulator: SmscSimulator, reverse: bool) -> None:
    assert len(split_text(CHINESE).parts) == 3
    client, _ = connect(simulator)
    ids = submit(client, CHINESE, reverse=reverse)
    close(client)
    [message] = simulator.messages
    assert message["text"] == CHINESE
    assert (message["parts"], message["data_coding"]) == (3, 8)
    assert message["message_ids"] == ids
    assert len(set(ids)) == 3
    assert (message["source"], message["destination"], message["system_id"]) == (
        "12366",
        "13812348000",
        "esme",
    )


def test_gsm7_with_extension_chars(simulator: SmscSimulator) -> None:
    encoded = split_text(GSM_EXT)
    assert encoded.data_coding == 0 and len(encoded.parts) == 2
    client, _ = connect(simulator, "transmitter")
    submit(client, GSM_EXT)
    submit(client, "short {one} €")
    close(client)
    texts = [m["text"] for m in simulator.messages]
    assert texts == [GSM_EXT, "short {one} €"]
    assert [m["data_coding"] for m in simulator.messages] == [0, 0]


def test_message_payload_tlv(simulator: SmscSimulator) -> None:
    client, _ = connect(simulator, "transmitter")
    text = "税" * 100
    pdu = smpplib.smpp.make_pdu(
        "submit_sm",
        client=client,
        source_addr="95598",
        destination_addr="13900001111",
        data_coding=8,
        message_payload=text.encode("utf-16-be"),
    )
    client.send_pdu(pdu)
    assert client.read_pdu().status == 0
    close(client)
    assert [m["text"] for m in simulator.messages] == [text]


def test_receipts_wait_for_a_receiver_that_binds_after_the_transmitter_left(simulator: SmscSimulator) -> None:
    sender, _ = connect(simulator, "transmitter", system_id="tax")
    ids = submit(sender, "Pay your tax", "13812348000", receipt=True)
    ids += submit(sender, CHINESE, "13900001111", receipt=True)
    wait_for(
        lambda: simulator.snapshot()["receipts_queued"] == len(ids) == 4
    )  # a transmitter never gets them
    close(sender)
    other, _ = connect(simulator, "receiver", system_id="power")  # another system_id gets nothing
    receiver, _ = connect(simulator, "receiver", system_id="tax")
    receipts = [read_deliver(receiver) for _ in ids]
    close(receiver)
    close(other)
    assert sorted(p.receipted_message_id.decode() for p in receipts) == sorted(ids)
    for pdu in receipts:
        assert pdu.esm_class == 0x04
        assert pdu.message_state == 2
        text = pdu.short_message.decode("ascii")
        assert text.startswith(f"id:{pdu.receipted_message_id.decode()} sub:001 dlvrd:001 submit date:")
        assert " stat:DELIVRD err:000 text:" in text
    assert simulator.snapshot()["receipts_queued"] == 0


def test_unacknowledged_receipts_are_sent_again_to_the_next_receiver(simulator: SmscSimulator) -> None:
    client, _ = connect(simulator, "transceiver", system_id="tax")
    [message_id] = submit(client, "hello", receipt=True)
    first = client.read_pdu()  # read but never answered
    assert first.command == "deliver_sm"
    client.disconnect()
    again, _ = connect(simulator, "receiver", system_id="tax")
    second = read_deliver(again)
    close(again)
    assert second.receipted_message_id.decode() == message_id


def test_undeliverable_share_is_deterministic() -> None:
    destinations = [f"1381234{n:04d}" for n in range(40)]
    expected = {d: zlib.crc32(d.encode()) % 1000 < 400 for d in destinations}
    assert 0 < sum(expected.values()) < len(destinations)
    with SmscSimulator(receipt_delay=0.0, undeliverable_share=0.4) as sim:
        sender, _ = connect(sim, "transmitter")
        receiver, _ = connect(sim, "receiver")
        for destination in destinations:
            submit(sender, "Pay now", destination, receipt=True)
        receipts = [read_deliver(receiver) for _ in destinations]
        close(sender)
        close(receiver)
    got = {p.source_addr.decode(): p for p in receipts}
    for destination, undeliverable in expected.items():
        pdu = got[destination]
        assert pdu.message_state == (5 if undeliverable else 2)
        assert (b"stat:UNDELIV err:001" in pdu.short_message) is undeliverable


@pytest.mark.parametrize(
    ("password", "status"),
    [
        pytest.param("wrong", 0x0E, id="wrong-password-RINVPASWD"),
        pytest.param("s3cret", 0, id="right-password"),
    ],
)
def test_password(password: str, status: int) -> None:
    with SmscSimulator(password="s3cret") as sim:
        client = smpplib.client.Client("127.0.0.1", sim.port, timeout=5, allow_unknown_opt_params=True)
        client.connect()
        if status:
            with pytest.raises(smpplib.exceptions.PDUError) as info:
                client.bind_transmitter(system_id="esme", password=password)
            assert info.value.args[1] == status
            client.disconnect()
        else:
            assert client.bind_transmitter(system_id="esme", password=password).status == 0
            close(client)


def test_enquire_link_and_unknown_command(simulator: SmscSimulator) -> None:
    with socket.create_connection(("127.0.0.1", simulator.port), timeout=5) as sock:
        sock.sendall(struct.pack(">LLLL", 16, 0x15, 0, 7))  # enquire_link
        assert struct.unpack(">LLLL", sock.recv(16)) == (16, 0x80000015, 0, 7)
        sock.sendall(struct.pack(">LLLL", 16, 0x0000_0999, 0, 8))  # no such command
        assert struct.unpack(">LLLL", sock.recv(16)) == (16, 0x80000000, 0x03, 8)


def _run_cli(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-m", "include.simulators.smsc", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_cli_port_in_use_says_so_without_traceback() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _run_cli("--port", str(port))
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert err.strip().splitlines() == [
        f"smsc-simulator: 127.0.0.1:{port} is already in use by another program; choose another --port"
    ]


@pytest.mark.parametrize(
    "signum", [pytest.param(signal.SIGINT, id="SIGINT"), pytest.param(signal.SIGTERM, id="SIGTERM")]
)
def test_cli_serves_logs_jsonl_and_stops_on_signal(tmp_path: Path, signum: int) -> None:
    log_path = tmp_path / "messages.jsonl"
    proc = _run_cli("--port", "0", "--log", str(log_path))
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("SMSC simulator listening on 127.0.0.1:")
        port = int(line.rsplit(":", 1)[1])
        client = smpplib.client.Client("127.0.0.1", port, timeout=5, allow_unknown_opt_params=True)
        client.connect()
        client.bind_transmitter(system_id="cli", password="x")
        submit(client, CHINESE)
        close(client)
        proc.send_signal(signum)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    [record] = [json.loads(x) for x in log_path.read_text(encoding="utf-8").splitlines()]
    assert record["text"] == CHINESE and record["parts"] == 3 and record["destination"] == "13812348000"


def submit_pdu(client, destination: str):
    return smpplib.smpp.make_pdu(
        "submit_sm", client=client, source_addr="12366", destination_addr=destination, short_message=b"hi"
    )


def test_throttle_answers_0x58_over_the_rate_and_records_nothing() -> None:
    with SmscSimulator(throttle_rate=0.5, throttle_burst=5) as sim:
        client, _ = connect(sim, "transmitter")
        pdus = [submit_pdu(client, f"1380000{n:04d}") for n in range(12)]
        client._socket.sendall(b"".join(p.generate() for p in pdus))  # one window, back to back
        statuses = {}
        for _ in pdus:
            resp = client.read_pdu()
            statuses[resp.sequence] = resp.status
        close(client)
        received = sim.received
    assert [statuses[p.sequence] for p in pdus] == [0] * 5 + [0x58] * 7
    assert [r["status"] for r in received] == [0] * 5 + [0x58] * 7
    assert [m["destination"] for m in sim.messages] == [f"1380000{n:04d}" for n in range(5)]


def test_disconnect_every_records_the_cut_message_without_answering_it() -> None:
    with SmscSimulator(disconnect_every=3) as sim:
        client, _ = connect(sim, "transmitter")
        for n in range(2):
            client.send_pdu(submit_pdu(client, f"1390000{n:04d}"))
            assert client.read_pdu().status == 0
        client.send_pdu(submit_pdu(client, "13900000002"))
        with pytest.raises(smpplib.exceptions.ConnectionError):
            client.read_pdu()
        client.disconnect()
        assert len(sim.messages) == 3
        again, _ = connect(sim, "transmitter")  # the next session works again
        again.send_pdu(submit_pdu(again, "13900000003"))
        assert again.read_pdu().status == 0
        close(again)


def test_latency_is_scheduled_so_a_window_pipelines() -> None:
    with SmscSimulator(latency=0.2) as sim:
        client, _ = connect(sim, "transmitter")
        pdus = [submit_pdu(client, f"1370000{n:04d}") for n in range(50)]
        client._socket.sendall(b"".join(p.generate() for p in pdus))
        # A simulator that slept per PDU would need 10 s; the client's timeout is 5 s.
        got = sorted(client.read_pdu().sequence for _ in pdus)
        close(client)
    assert got == sorted(p.sequence for p in pdus)


def test_cli_rehearsal_flags_and_mo_reply(tmp_path: Path) -> None:
    proc = _run_cli(
        "--port",
        "0",
        "--receipt-delay",
        "0",
        "--receipt-mix",
        "EXPIRED=1",
        "--id-format",
        "decimal",
        "--mo",
        "tax:13812348000:12366:TD",
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().strip().rsplit(":", 1)[1])
        client = smpplib.client.Client("127.0.0.1", port, timeout=5, allow_unknown_opt_params=True)
        client.connect()
        client.bind_transceiver(system_id="tax", password="x")
        reply = read_deliver(client)
        [message_id] = submit(client, "Pay now", "13900001111", receipt=True)
        receipt = read_deliver(client)
        close(client)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert (reply.esm_class, reply.short_message, reply.source_addr) == (0, b"TD", b"13812348000")
    assert message_id.isdigit()
    assert receipt.message_state == 3 and b"stat:EXPIRED" in receipt.short_message


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"permanent_error_share": 0.7, "transient_error_share": 0.5}, id="shares-over-1"),
        pytest.param({"receipt_mix": {"DELIVERED": 1.0}}, id="unknown-stat"),
        pytest.param({"latency": -1}, id="negative-latency"),
    ],
)
def test_bad_rehearsal_settings_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        SmscSimulator(**kwargs)


def test_fast_submit_sm_parser_agrees_with_the_checked_one() -> None:
    from hooks.smpp import submit_sm_body

    args = {
        "source_addr_ton": 5,
        "source_addr_npi": 0,
        "source_addr": "TAXOFFICE",
        "dest_addr_ton": 1,
        "dest_addr_npi": 1,
        "destination_addr": "8613812348000",
        "esm_class": 0x40,
        "validity_period": "000001000000000R",
        "registered_delivery": 1,
        "data_coding": 8,
        "short_message": concat_udh(7, 2, 1) + "税务提醒".encode("utf-16-be"),
    }
    body = submit_sm_body(args)
    payload_tlv = struct.pack(">HH", 0x0424, 4) + b"\x00a\x00b"
    no_sm = body[: -len(args["short_message"]) - 1] + b"\x00"
    good = [body, body + struct.pack(">HHB", 0x020C, 1, 9), no_sm + payload_tlv]
    for sample in good:
        assert smsc._parse_submit_sm_fast(sample) == smsc._parse_submit_sm_checked(sample)
    # Malformed bodies: the same precise error either way (the fast path defers to the checked one).
    for broken in (
        body[:5],
        body[:-3],
        body + b"\x02",
        body.replace(b"\x00", b"\x01"),
        no_sm + payload_tlv[:6],
    ):
        with pytest.raises(smsc.PduError) as fast:
            smsc.parse_submit_sm(broken)
        with pytest.raises(smsc.PduError) as checked:
            smsc._parse_submit_sm_checked(broken)
        assert (str(fast.value), fast.value.status) == (str(checked.value), checked.value.status)
