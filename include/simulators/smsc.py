"""Run an SMPP 3.4 SMSC simulator that accepts messages and sends delivery receipts.

Users rehearse a campaign against it, the demo sends through it, tests and benchmarks bind to
it over a real socket. Embed it with :class:`SmscSimulator` (asyncio in a daemon thread) or run
``python -m include.simulators.smsc --port 2775``.

What it does: bind_transmitter / bind_receiver / bind_transceiver (optional password),
submit_sm (short_message with or without a concatenation UDH, SAR TLVs, message_payload TLV),
enquire_link, unbind, generic_nack for unknown commands; multipart messages are reassembled
into one record; delivery receipts are queued per system_id and delivered to any bound
receiver or transceiver of that system_id, waiting in the queue while none is bound, and sent
again when a session closes before answering them.

Growth points (not built yet): :meth:`SmscSimulator.submit_status` (throttling 0x58, queue full
0x14), :meth:`SmscSimulator.response_delay` (latency), :meth:`SmscSimulator.receipt_outcome`
(late or lost receipts), :meth:`SmscSimulator.drop_sessions` (disconnects) and
:meth:`SmscSimulator.inject_mo` (mobile-originated replies) are the places to add them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import itertools
import json
import logging
import signal
import socket
import struct
import sys
import threading
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from include.dunning.phones import mask
from include.dunning.sms import (
    DATA_CODING_ASCII,
    choose_coding,
    decode_payload,
    encode_gsm7,
    parse_udh,
)

log = logging.getLogger(__name__)

# Command ids (SMPP 3.4, 5.1.2.1).
GENERIC_NACK = 0x80000000
BIND_RECEIVER = 0x00000001
BIND_TRANSMITTER = 0x00000002
SUBMIT_SM = 0x00000004
DELIVER_SM = 0x00000005
UNBIND = 0x00000006
BIND_TRANSCEIVER = 0x00000009
ENQUIRE_LINK = 0x00000015
RESP = 0x80000000

# command_status values used here.
ESME_ROK = 0x00
ESME_RINVMSGLEN = 0x01
ESME_RINVCMDLEN = 0x02
ESME_RINVCMDID = 0x03
ESME_RINVBNDSTS = 0x04
ESME_RALYBND = 0x05
ESME_RSYSERR = 0x08
ESME_RINVDSTADR = 0x0B
ESME_RINVPASWD = 0x0E
ESME_RTHROTTLED = 0x58

# TLV tags.
TAG_RECEIPTED_MESSAGE_ID = 0x001E
TAG_SAR_MSG_REF_NUM = 0x020C
TAG_SAR_TOTAL_SEGMENTS = 0x020E
TAG_SAR_SEGMENT_SEQNUM = 0x020F
TAG_SC_INTERFACE_VERSION = 0x0210
TAG_MESSAGE_PAYLOAD = 0x0424
TAG_MESSAGE_STATE = 0x0427

ESM_UDHI = 0x40
ESM_DELIVERY_RECEIPT = 0x04
MAX_PDU_LENGTH = 64 * 1024
SYSTEM_ID = "SMSCSIM"

BIND_MODES = {BIND_TRANSMITTER: "transmitter", BIND_RECEIVER: "receiver", BIND_TRANSCEIVER: "transceiver"}


class PduError(ValueError):
    """Raised when a PDU body cannot be decoded; carries the status to answer with."""

    def __init__(self, message: str, status: int = ESME_RSYSERR) -> None:
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------------------------
# PDU encoding (own, small codec: a simulator built on the client library's codec would share
# its bugs and hide them from the tests).


def _cstring(value: str) -> bytes:
    return value.encode("latin-1", errors="replace") + b"\x00"


def _read_cstring(body: bytes, pos: int, name: str) -> tuple[str, int]:
    end = body.find(b"\x00", pos)
    if end < 0:
        raise PduError(f"{name} is not NUL-terminated")
    return body[pos:end].decode("latin-1"), end + 1


def _read_byte(body: bytes, pos: int, name: str) -> tuple[int, int]:
    if pos >= len(body):
        raise PduError(f"PDU ends before {name}")
    return body[pos], pos + 1


def parse_tlvs(data: bytes) -> dict[int, bytes]:
    """Return the optional parameters of a PDU body tail as {tag: value}."""
    tlvs: dict[int, bytes] = {}
    pos = 0
    while pos + 4 <= len(data):
        tag, length = struct.unpack(">HH", data[pos : pos + 4])
        value = data[pos + 4 : pos + 4 + length]
        if len(value) != length:
            raise PduError(f"TLV 0x{tag:04X} is truncated")
        tlvs[tag] = value
        pos += 4 + length
    if pos != len(data):
        raise PduError("trailing octets after the last TLV")
    return tlvs


def tlv(tag: int, value: bytes) -> bytes:
    """Return one encoded TLV."""
    return struct.pack(">HH", tag, len(value)) + value


def pdu(command_id: int, sequence: int, body: bytes = b"", status: int = ESME_ROK) -> bytes:
    """Return a complete PDU (header + body)."""
    return struct.pack(">LLLL", 16 + len(body), command_id, status, sequence) + body


@dataclass
class SubmitSm:
    """Hold the fields of a decoded submit_sm (or deliver_sm) the simulator uses."""

    service_type: str
    source_addr_ton: int
    source_addr_npi: int
    source: str
    dest_addr_ton: int
    dest_addr_npi: int
    destination: str
    esm_class: int
    registered_delivery: int
    data_coding: int
    payload: bytes
    tlvs: dict[int, bytes]


def parse_submit_sm(body: bytes) -> SubmitSm:
    """Decode the body of a submit_sm PDU.

    :raises PduError: when a field is missing or a length is wrong
    """
    pos = 0
    service_type, pos = _read_cstring(body, pos, "service_type")
    src_ton, pos = _read_byte(body, pos, "source_addr_ton")
    src_npi, pos = _read_byte(body, pos, "source_addr_npi")
    source, pos = _read_cstring(body, pos, "source_addr")
    dst_ton, pos = _read_byte(body, pos, "dest_addr_ton")
    dst_npi, pos = _read_byte(body, pos, "dest_addr_npi")
    destination, pos = _read_cstring(body, pos, "destination_addr")
    esm_class, pos = _read_byte(body, pos, "esm_class")
    _protocol_id, pos = _read_byte(body, pos, "protocol_id")
    _priority, pos = _read_byte(body, pos, "priority_flag")
    _schedule, pos = _read_cstring(body, pos, "schedule_delivery_time")
    _validity, pos = _read_cstring(body, pos, "validity_period")
    registered_delivery, pos = _read_byte(body, pos, "registered_delivery")
    _replace, pos = _read_byte(body, pos, "replace_if_present_flag")
    data_coding, pos = _read_byte(body, pos, "data_coding")
    _default_msg, pos = _read_byte(body, pos, "sm_default_msg_id")
    sm_length, pos = _read_byte(body, pos, "sm_length")
    payload = body[pos : pos + sm_length]
    if len(payload) != sm_length:
        raise PduError(f"sm_length {sm_length} exceeds the PDU", ESME_RINVMSGLEN)
    tlvs = parse_tlvs(body[pos + sm_length :])
    if TAG_MESSAGE_PAYLOAD in tlvs:
        if sm_length:
            raise PduError("both short_message and message_payload are set", ESME_RINVMSGLEN)
        payload = tlvs[TAG_MESSAGE_PAYLOAD]
    return SubmitSm(
        service_type=service_type,
        source_addr_ton=src_ton,
        source_addr_npi=src_npi,
        source=source,
        dest_addr_ton=dst_ton,
        dest_addr_npi=dst_npi,
        destination=destination,
        esm_class=esm_class,
        registered_delivery=registered_delivery,
        data_coding=data_coding,
        payload=payload,
        tlvs=tlvs,
    )


def deliver_sm_body(
    *,
    source: str,
    destination: str,
    esm_class: int,
    data_coding: int,
    short_message: bytes,
    tlvs: bytes = b"",
    source_ton: int = 1,
    source_npi: int = 1,
    dest_ton: int = 0,
    dest_npi: int = 1,
) -> bytes:
    """Return the body of a deliver_sm PDU."""
    return (
        _cstring("")  # service_type
        + bytes([source_ton, source_npi])
        + _cstring(source)
        + bytes([dest_ton, dest_npi])
        + _cstring(destination)
        + bytes([esm_class, 0, 0])  # esm_class, protocol_id, priority_flag
        + _cstring("")  # schedule_delivery_time
        + _cstring("")  # validity_period
        + bytes([0, 0, data_coding, 0, len(short_message)])
        + short_message
        + tlvs
    )


# ---------------------------------------------------------------------------------------------
# Simulator state


@dataclass
class PendingDeliver:
    """Hold one deliver_sm waiting for a receiver of ``system_id``."""

    system_id: str
    body: bytes
    kind: str  # "receipt" | "mo"
    attempts: int = 0


@dataclass
class _Assembly:
    system_id: str
    source: str
    destination: str
    data_coding: int
    registered_delivery: int
    total: int
    bodies: dict[int, bytes] = field(default_factory=dict)
    message_ids: dict[int, str] = field(default_factory=dict)


class _Session:
    """One ESME connection."""

    _ids = itertools.count(1)

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.id = next(self._ids)
        self.reader = reader
        self.writer = writer
        self.system_id: str | None = None
        self.mode: str | None = None
        self.closed = False
        self._sequence = itertools.count(1)
        self.awaiting: dict[int, PendingDeliver] = {}
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"

    @property
    def receives(self) -> bool:
        return self.mode in ("receiver", "transceiver") and not self.closed

    def next_sequence(self) -> int:
        return next(self._sequence) % 0x7FFFFFFF or next(self._sequence)

    def send(self, data: bytes) -> None:
        if not self.closed:
            self.writer.write(data)


class SmscSimulator:
    """Serve SMPP 3.4 on a TCP port from a daemon thread; record messages, send receipts.

    :param host: interface to listen on
    :param port: TCP port; 0 picks a free one (read ``.port`` after ``start()``)
    :param password: required bind password; None accepts any
    :param receipt_delay: seconds between a submit_sm and its delivery receipt
    :param undeliverable_share: share of destinations (0-1) whose receipts say UNDELIV;
        ``zlib.crc32(destination) % 1000 < share * 1000`` decides, so tests can predict it
    :param log_path: append one JSON line per completed message to this file
    :param id_format: "hex", "decimal", or "mixed" (hex in submit_sm_resp and the TLV,
        decimal in the receipt text, like some real SMSCs)
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        password: str | None = None,
        receipt_delay: float = 0.05,
        undeliverable_share: float = 0.0,
        log_path: str | None = None,
        id_format: str = "hex",
    ) -> None:
        if id_format not in ("hex", "decimal", "mixed"):
            raise ValueError(f"id_format must be hex, decimal or mixed, not {id_format!r}")
        if not 0.0 <= undeliverable_share <= 1.0:
            raise ValueError("undeliverable_share must be between 0 and 1")
        self.host = host
        self.port = port
        self.password = password
        self.receipt_delay = receipt_delay
        self.undeliverable_share = undeliverable_share
        self.log_path = log_path
        self.id_format = id_format

        self._lock = threading.Lock()
        self._messages: list[dict[str, Any]] = []
        self._submits = 0
        self._receipts_sent = 0
        self._message_counter = itertools.count(1)
        self._assemblies: dict[tuple[str, str, str, int], _Assembly] = {}
        self._queues: dict[str, deque[PendingDeliver]] = {}
        self._sessions: set[_Session] = set()
        self._log_file: TextIO | None = None

        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._start_error: BaseException | None = None
        self._timers: set[asyncio.TimerHandle] = set()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> SmscSimulator:
        """Start listening in a daemon thread; return once the port accepts connections.

        :raises OSError: when the port cannot be bound (e.g. already in use)
        """
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        self._ready.clear()
        self._start_error = None
        self._thread = threading.Thread(target=self._run, name="smsc-simulator", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            self._thread.join()
            self._thread = None
            raise self._start_error
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close every session and the listening socket, and end the thread."""
        if self._thread is None:
            return
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopping.set)
        self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> SmscSimulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start() when it happens before ready
            if not self._ready.is_set():
                self._start_error = exc
            else:
                log.exception("SMSC simulator stopped on an error")
        finally:
            self._ready.set()
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = server.sockets[0].getsockname()[1]
        if self.log_path:
            self._log_file = open(self.log_path, "a", encoding="utf-8")
        log.info("SMSC simulator listening on %s:%s", self.host, self.port)
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            for timer in list(self._timers):
                timer.cancel()
            for session in list(self._sessions):
                session.closed = True
                session.writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None

    # -- thread-safe views -------------------------------------------------------------------

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Return a copy of the completed (reassembled) messages, in completion order."""
        with self._lock:
            return [dict(m, message_ids=list(m["message_ids"])) for m in self._messages]

    @property
    def submits(self) -> int:
        """Return how many submit_sm PDUs were accepted."""
        with self._lock:
            return self._submits

    def snapshot(self) -> dict[str, Any]:
        """Return a consistent copy of the counters and records."""
        with self._lock:
            return {
                "messages": [dict(m, message_ids=list(m["message_ids"])) for m in self._messages],
                "submits": self._submits,
                "receipts_sent": self._receipts_sent,
                "receipts_queued": sum(len(q) for q in self._queues.values()),
                "incomplete_messages": len(self._assemblies),
                "sessions": [
                    {"system_id": s.system_id, "mode": s.mode, "peer": s.peer} for s in self._sessions
                ],
            }

    def is_undeliverable(self, destination: str) -> bool:
        """Return whether receipts to ``destination`` will say UNDELIV (deterministic)."""
        return zlib.crc32(destination.encode("utf-8")) % 1000 < self.undeliverable_share * 1000

    # -- growth points -----------------------------------------------------------------------

    def submit_status(self, session_system_id: str, submit: SubmitSm) -> int:
        """Return the command_status to answer a submit_sm with (0 accepts it).

        Override or extend for throttling (0x58) or a full queue (0x14).
        """
        if not submit.destination:
            return ESME_RINVDSTADR
        return ESME_ROK

    def response_delay(self, submit: SubmitSm) -> float:
        """Return seconds to wait before answering a submit_sm (latency); 0 by default."""
        return 0.0

    def receipt_outcome(self, destination: str) -> tuple[str, str, int]:
        """Return (stat, err, message_state) of the receipt for ``destination``."""
        if self.is_undeliverable(destination):
            return "UNDELIV", "001", 5
        return "DELIVRD", "000", 2

    def inject_mo(self, system_id: str, source: str, destination: str, text: str) -> None:
        """Queue a mobile-originated message (a reply such as 退订) for ``system_id``'s receivers.

        :param source: the handset number
        :param destination: the service code the handset replied to (e.g. 12366)
        """
        coding = choose_coding(text)
        payload = encode_gsm7(text) if coding == 0 else text.encode("utf-16-be")
        if len(payload) > 254:
            raise ValueError("injected message must fit one SMS")
        body = deliver_sm_body(
            source=source, destination=destination, esm_class=0, data_coding=coding, short_message=payload
        )
        self._call_in_loop(self._enqueue, PendingDeliver(system_id=system_id, body=body, kind="mo"))

    def drop_sessions(self, system_id: str | None = None) -> None:
        """Close every session (of ``system_id`` when given) without an unbind, like a network cut."""

        def _drop() -> None:
            for session in list(self._sessions):
                if system_id is None or session.system_id == system_id:
                    session.writer.close()

        self._call_in_loop(_drop)

    def _call_in_loop(self, func: Any, *args: Any) -> None:
        if self._loop is None or self._thread is None:
            raise RuntimeError("simulator is not running")
        self._loop.call_soon_threadsafe(func, *args)

    # -- sessions ----------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _Session(reader, writer)
        with contextlib.suppress(OSError, AttributeError):
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._sessions.add(session)
        log.debug("session %s connected from %s", session.id, session.peer)
        try:
            while not session.closed:
                header = await reader.readexactly(16)
                length, command_id, status, sequence = struct.unpack(">LLLL", header)
                if length < 16 or length > MAX_PDU_LENGTH:
                    session.send(pdu(GENERIC_NACK, sequence, status=ESME_RINVCMDLEN))
                    break
                body = await reader.readexactly(length - 16)
                await self._dispatch(session, command_id, status, sequence, body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("session %s failed", session.id)
        finally:
            session.closed = True
            with self._lock:
                self._sessions.discard(session)
            self._requeue(session)
            with contextlib.suppress(Exception):
                writer.close()
            log.debug("session %s (%s, %s) closed", session.id, session.system_id, session.mode)

    async def _dispatch(
        self, session: _Session, command_id: int, status: int, sequence: int, body: bytes
    ) -> None:
        if command_id in BIND_MODES:
            self._bind(session, command_id, sequence, body)
        elif command_id == SUBMIT_SM:
            await self._submit(session, sequence, body)
        elif command_id == ENQUIRE_LINK:
            session.send(pdu(ENQUIRE_LINK | RESP, sequence))
        elif command_id == UNBIND:
            session.send(pdu(UNBIND | RESP, sequence))
            await session.writer.drain()
            session.closed = True
        elif command_id == DELIVER_SM | RESP:
            pending = session.awaiting.pop(sequence, None)
            if pending is not None and status != ESME_ROK:
                log.info("deliver_sm refused with status 0x%02X; queued again", status)
                pending.attempts += 1
                self._enqueue(pending)
        elif command_id & RESP:
            log.debug("ignoring %08X from session %s", command_id, session.id)
        else:
            session.send(pdu(GENERIC_NACK, sequence, status=ESME_RINVCMDID))

    def _bind(self, session: _Session, command_id: int, sequence: int, body: bytes) -> None:
        resp_id = command_id | RESP
        if session.mode is not None:
            session.send(pdu(resp_id, sequence, _cstring(SYSTEM_ID), status=ESME_RALYBND))
            return
        try:
            system_id, pos = _read_cstring(body, 0, "system_id")
            password, pos = _read_cstring(body, pos, "password")
        except PduError:
            session.send(pdu(resp_id, sequence, status=ESME_RINVCMDLEN))
            return
        if self.password is not None and password != self.password:
            log.warning("bind refused for system_id %s from %s: invalid password", system_id, session.peer)
            session.send(pdu(resp_id, sequence, status=ESME_RINVPASWD))
            session.closed = True
            return
        session.system_id = system_id
        session.mode = BIND_MODES[command_id]
        session.send(pdu(resp_id, sequence, _cstring(SYSTEM_ID) + tlv(TAG_SC_INTERFACE_VERSION, b"\x34")))
        log.info("bound %s as %s from %s", system_id, session.mode, session.peer)
        if session.receives:
            self._flush(system_id)

    async def _submit(self, session: _Session, sequence: int, body: bytes) -> None:
        if session.mode not in ("transmitter", "transceiver"):
            session.send(pdu(SUBMIT_SM | RESP, sequence, status=ESME_RINVBNDSTS))
            return
        assert session.system_id is not None
        try:
            submit = parse_submit_sm(body)
            concat, part_body = self._split_concat(submit)
        except PduError as exc:
            log.info("submit_sm refused: %s", exc)
            session.send(pdu(SUBMIT_SM | RESP, sequence, status=exc.status))
            return
        except ValueError as exc:
            log.info("submit_sm refused: %s", exc)
            session.send(pdu(SUBMIT_SM | RESP, sequence, status=ESME_RINVMSGLEN))
            return
        status = self.submit_status(session.system_id, submit)
        delay = self.response_delay(submit)

        def answer(data: bytes) -> None:
            # Latency is scheduled, not awaited, so a client's window still pipelines.
            if delay > 0:
                self._schedule(delay, session.send, data)
            else:
                session.send(data)

        if status != ESME_ROK:
            answer(pdu(SUBMIT_SM | RESP, sequence, status=status))
            return
        number = next(self._message_counter)
        message_id = self._format_id(number)
        with self._lock:
            self._submits += 1
        # Record before answering: a client that saw the response must find the message.
        self._record_part(session.system_id, submit, concat, part_body, message_id)
        answer(pdu(SUBMIT_SM | RESP, sequence, _cstring(message_id)))
        if submit.registered_delivery & 0x01:
            submitted_at = datetime.now()
            part_text = decode_payload(submit.data_coding, part_body, errors="replace") if part_body else ""
            self._schedule(
                self.receipt_delay,
                self._receipt_due,
                session.system_id,
                submit,
                number,
                part_text,
                submitted_at,
            )

    def _schedule(self, delay: float, func: Any, *args: Any) -> None:
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            self._timers.discard(handle)  # type: ignore[arg-type]
            func(*args)

        handle = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(handle)

    @staticmethod
    def _split_concat(submit: SubmitSm) -> tuple[tuple[int, int, int] | None, bytes]:
        if submit.esm_class & ESM_UDHI:
            info, body = parse_udh(submit.payload)
            if info is None:
                return None, body
            if not 1 <= info.sequence <= info.total:
                raise PduError(f"part {info.sequence} of {info.total}", ESME_RINVMSGLEN)
            return (info.reference, info.total, info.sequence), body
        tags = submit.tlvs
        if TAG_SAR_MSG_REF_NUM in tags and TAG_SAR_TOTAL_SEGMENTS in tags and TAG_SAR_SEGMENT_SEQNUM in tags:
            ref = int.from_bytes(tags[TAG_SAR_MSG_REF_NUM], "big")
            return (ref, tags[TAG_SAR_TOTAL_SEGMENTS][0], tags[TAG_SAR_SEGMENT_SEQNUM][0]), submit.payload
        return None, submit.payload

    def _format_id(self, number: int) -> str:
        if self.id_format == "decimal":
            return f"{number:010d}"
        return f"{number:010x}"

    def _receipt_id(self, number: int) -> str:
        if self.id_format == "hex":
            return f"{number:010x}"
        return f"{number:010d}"

    def _record_part(
        self,
        system_id: str,
        submit: SubmitSm,
        concat: tuple[int, int, int] | None,
        body: bytes,
        message_id: str,
    ) -> None:
        if concat is None or concat[1] == 1:
            self._complete(system_id, submit, [body], [message_id])
            return
        ref, total, seq = concat
        key = (system_id, submit.source, submit.destination, ref)
        assembly = self._assemblies.get(key)
        if assembly is None or assembly.total != total or seq in assembly.bodies:
            assembly = _Assembly(
                system_id=system_id,
                source=submit.source,
                destination=submit.destination,
                data_coding=submit.data_coding,
                registered_delivery=submit.registered_delivery,
                total=total,
            )
            self._assemblies[key] = assembly
        assembly.bodies[seq] = body
        assembly.message_ids[seq] = message_id
        if len(assembly.bodies) == total:
            del self._assemblies[key]
            order = sorted(assembly.bodies)
            self._complete(
                system_id,
                submit,
                [assembly.bodies[i] for i in order],
                [assembly.message_ids[i] for i in order],
            )

    def _complete(self, system_id: str, submit: SubmitSm, bodies: list[bytes], ids: list[str]) -> None:
        try:
            text = decode_payload(submit.data_coding, b"".join(bodies), errors="replace")
        except ValueError:
            text = b"".join(bodies).decode("latin-1")
        record = {
            "system_id": system_id,
            "source": submit.source,
            "destination": submit.destination,
            "text": text,
            "parts": len(bodies),
            "message_ids": ids,
            "data_coding": submit.data_coding,
            "registered_delivery": submit.registered_delivery,
        }
        with self._lock:
            self._messages.append(record)
        log.info(
            "message %s from %s to %s: %d part(s), data_coding %d",
            ids[0],
            submit.source,
            mask(submit.destination),
            len(bodies),
            submit.data_coding,
        )
        if self._log_file is not None:
            line = dict(record, ts=datetime.now().isoformat(timespec="milliseconds"))
            self._log_file.write(json.dumps(line, ensure_ascii=False) + "\n")
            self._log_file.flush()

    # -- receipts ----------------------------------------------------------------------------

    def _receipt_due(
        self, system_id: str, submit: SubmitSm, number: int, part_text: str, submitted_at: datetime
    ) -> None:
        stat, err, state = self.receipt_outcome(submit.destination)
        done_at = datetime.now()
        preview = part_text[:20].encode("ascii", errors="replace").decode("ascii")
        text = (
            f"id:{self._receipt_id(number)} sub:001 dlvrd:{'001' if state == 2 else '000'} "
            f"submit date:{submitted_at:%y%m%d%H%M} done date:{done_at:%y%m%d%H%M} "
            f"stat:{stat} err:{err} text:{preview}"
        )
        short_message = text.encode("ascii")[:254]
        body = deliver_sm_body(
            source=submit.destination,
            destination=submit.source,
            esm_class=ESM_DELIVERY_RECEIPT,
            data_coding=DATA_CODING_ASCII,
            short_message=short_message,
            source_ton=submit.dest_addr_ton,
            source_npi=submit.dest_addr_npi,
            dest_ton=submit.source_addr_ton,
            dest_npi=submit.source_addr_npi,
            tlvs=tlv(TAG_RECEIPTED_MESSAGE_ID, _cstring(self._format_id(number)))
            + tlv(TAG_MESSAGE_STATE, bytes([state])),
        )
        self._enqueue(PendingDeliver(system_id=system_id, body=body, kind="receipt"))

    def _enqueue(self, pending: PendingDeliver) -> None:
        with self._lock:
            self._queues.setdefault(pending.system_id, deque()).append(pending)
        self._flush(pending.system_id)

    def _flush(self, system_id: str) -> None:
        receivers = sorted(
            (s for s in self._sessions if s.system_id == system_id and s.receives), key=lambda s: s.id
        )
        if not receivers:
            return
        queue = self._queues.get(system_id)
        turn = itertools.cycle(receivers)
        while queue:
            with self._lock:
                if not queue:
                    break
                pending = queue.popleft()
                if pending.kind == "receipt":
                    self._receipts_sent += 1
            session = next(turn)
            sequence = session.next_sequence()
            session.awaiting[sequence] = pending
            session.send(pdu(DELIVER_SM, sequence, pending.body))

    def _requeue(self, session: _Session) -> None:
        """Put deliver_sm a closing session never answered back in front of the queue."""
        if not session.awaiting or session.system_id is None:
            return
        with self._lock:
            queue = self._queues.setdefault(session.system_id, deque())
            for pending in reversed(list(session.awaiting.values())):
                if pending.kind == "receipt":
                    self._receipts_sent -= 1
                queue.appendleft(pending)
        session.awaiting.clear()
        self._flush(session.system_id)


# ---------------------------------------------------------------------------------------------
# CLI


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="smsc-simulator",
        description="SMPP 3.4 SMSC simulator: accepts submit_sm, sends delivery receipts.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=2775, help="TCP port (default 2775; 0 = any free)")
    parser.add_argument("--receipt-delay", type=float, default=0.05, help="seconds until a receipt")
    parser.add_argument(
        "--undeliverable-share", type=float, default=0.0, help="share of destinations reported UNDELIV"
    )
    parser.add_argument("--password", default=None, help="required bind password (default: accept any)")
    parser.add_argument("--id-format", choices=("hex", "decimal", "mixed"), default="hex")
    parser.add_argument(
        "--log", dest="log_path", default=None, help="append completed messages to this JSONL"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every session and message")
    return parser.parse_args(argv)


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, lambda *_: stop.set())
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: list[str] | None = None) -> int:
    """Run the simulator until SIGINT or SIGTERM; return the process exit code."""
    args = _parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    simulator = SmscSimulator(
        args.host,
        args.port,
        password=args.password,
        receipt_delay=args.receipt_delay,
        undeliverable_share=args.undeliverable_share,
        log_path=args.log_path,
        id_format=args.id_format,
    )
    try:
        simulator.start()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(
                f"smsc-simulator: {args.host}:{args.port} is already in use by another program; "
                "choose another --port",
                file=sys.stderr,
            )
        else:
            print(
                f"smsc-simulator: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr
            )
        return 2
    stop = threading.Event()
    with _stop_on_signals(stop):
        print(f"SMSC simulator listening on {args.host}:{simulator.port}", flush=True)
        while not stop.wait(0.5):
            pass
    simulator.stop()
    snap = simulator.snapshot()
    print(
        f"SMSC simulator stopped: {len(snap['messages'])} messages, {snap['submits']} submit_sm, "
        f"{snap['receipts_sent']} receipts sent",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
