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

Rehearsal knobs (constructor arguments and CLI flags; all off by default, so the default
simulator answers at once and accepts everything):

- ``latency``: seconds before each submit_sm_resp; scheduled, not awaited, so a client's
  window pipelines (a window of 100 at 20 ms gives ~5,000/s)
- ``throttle_rate`` / ``throttle_burst``: a token bucket per system_id; a submit_sm over the
  rate is answered ESME_RTHROTTLED (0x58) and not recorded
- ``permanent_error_share`` / ``transient_error_share`` (with ``seed``): random refusals,
  ``permanent_error_status`` (default 0x0B RINVDSTADR) and ``transient_error_status``
  (default 0x08 RSYSERR)
- ``disconnect_every``: every N-th accepted submit_sm is recorded, then the connection is cut
  before its response goes out (the uncertain case a network cut makes)
- ``receipt_delay`` and ``receipt_mix`` (share per stat: DELIVRD, UNDELIV, EXPIRED, REJECTD,
  DELETED, UNKNOWN, ``none`` = no receipt at all), decided per destination so tests can
  predict it (:meth:`SmscSimulator.receipt_stat_for`)
- ``id_format``: hex, decimal or mixed message ids
- :meth:`SmscSimulator.inject_mo` (CLI: ``--mo system_id:source:destination:text``) queues a
  mobile-originated reply such as ``TD`` for the receivers of a system_id

:meth:`SmscSimulator.messages` holds the completed messages, :meth:`SmscSimulator.received`
every submit_sm with the status it was answered with. Subclasses can still override
:meth:`SmscSimulator.submit_status`, :meth:`SmscSimulator.response_delay` and
:meth:`SmscSimulator.receipt_outcome`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import itertools
import json
import logging
import random
import signal
import socket
import struct
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterator, Mapping
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

# Receipt stat -> (err, message_state) (SMPP 3.4 appendix B, 5.2.28).
RECEIPT_STATS = {
    "DELIVRD": ("000", 2),
    "EXPIRED": ("000", 3),
    "DELETED": ("000", 4),
    "UNDELIV": ("001", 5),
    "UNKNOWN": ("000", 7),
    "REJECTD": ("002", 8),
}
NO_RECEIPT = "none"

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


def _receipt_mix(mix: Mapping[str, float]) -> list[tuple[float, str]]:
    """Return cumulative (upper bound, stat) pairs for a receipt mix, normalised to 1."""
    total = 0.0
    for stat, share in mix.items():
        if stat != NO_RECEIPT and stat.upper() not in RECEIPT_STATS:
            raise ValueError(f"receipt stat must be one of {', '.join(RECEIPT_STATS)} or none, not {stat!r}")
        if share < 0:
            raise ValueError(f"receipt share of {stat} is negative")
        total += share
    if total <= 0:
        raise ValueError("receipt_mix needs a positive share")
    bounds, running = [], 0.0
    for stat, share in mix.items():
        running += share / total
        bounds.append((running, stat if stat == NO_RECEIPT else stat.upper()))
    return bounds


def parse_receipt_mix(text: str) -> dict[str, float]:
    """Parse ``DELIVRD=0.8,UNDELIV=0.1,none=0.1`` (the CLI form of ``receipt_mix``)."""
    mix: dict[str, float] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        stat, sep, share = item.partition("=")
        if not sep:
            raise ValueError(f"expected STAT=SHARE, got {item!r}")
        mix[stat.strip()] = float(share)
    _receipt_mix(mix)
    return mix


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
    try:
        return _parse_submit_sm_fast(body)
    except (ValueError, IndexError):  # something is wrong: the checked parser says what
        return _parse_submit_sm_checked(body)


def _parse_submit_sm_fast(body: bytes) -> SubmitSm:
    """Decode a well-formed submit_sm with a few C calls (the simulator's hot path)."""
    find = body.index
    end_type = find(0)
    end_source = find(0, end_type + 3)
    end_destination = find(0, end_source + 3)
    end_schedule = find(0, end_destination + 4)
    end_validity = find(0, end_schedule + 1)
    sm_length = body[end_validity + 5]
    pos = end_validity + 6
    payload = body[pos : pos + sm_length]
    if len(payload) != sm_length:
        raise ValueError("short message truncated")
    tlvs = parse_tlvs(body[pos + sm_length :]) if len(body) > pos + sm_length else {}
    if TAG_MESSAGE_PAYLOAD in tlvs:
        if sm_length:
            raise ValueError("both short_message and message_payload are set")
        payload = tlvs[TAG_MESSAGE_PAYLOAD]
    return SubmitSm(
        service_type=body[:end_type].decode("latin-1"),
        source_addr_ton=body[end_type + 1],
        source_addr_npi=body[end_type + 2],
        source=body[end_type + 3 : end_source].decode("latin-1"),
        dest_addr_ton=body[end_source + 1],
        dest_addr_npi=body[end_source + 2],
        destination=body[end_source + 3 : end_destination].decode("latin-1"),
        esm_class=body[end_destination + 1],
        registered_delivery=body[end_validity + 1],
        data_coding=body[end_validity + 3],
        payload=payload,
        tlvs=tlvs,
    )


def _parse_submit_sm_checked(body: bytes) -> SubmitSm:
    """Decode a submit_sm field by field, naming the first one that is missing or wrong."""
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
        self._corked: list[bytes] | None = None
        self._later: dict[float, list[bytes]] = {}
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"

    @property
    def receives(self) -> bool:
        return self.mode in ("receiver", "transceiver") and not self.closed

    def next_sequence(self) -> int:
        return next(self._sequence) % 0x7FFFFFFF or next(self._sequence)

    def send(self, data: bytes) -> None:
        if self._corked is not None:
            self._corked.append(data)
        elif not self.closed:
            self.writer.write(data)

    def send_later(self, delay: float, data: bytes) -> None:
        """Queue ``data`` to go out after ``delay`` s; one timer per read (see uncork)."""
        self._later.setdefault(delay, []).append(data)

    def cork(self) -> None:
        """Collect what the PDUs of one read answer, to write it in one go."""
        self._corked = []

    def flush(self) -> None:
        if self._corked and not self.writer.is_closing():
            self.writer.write(b"".join(self._corked))
        if self._corked is not None:
            self._corked.clear()

    def uncork(self) -> dict[float, bytes]:
        """Write the collected output; return the delayed output by delay, for scheduling."""
        self.flush()
        self._corked = None
        later = {delay: b"".join(chunks) for delay, chunks in self._later.items()}
        self._later.clear()
        return later


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
    :param latency: seconds before each submit_sm_resp goes out (scheduled: responses pipeline)
    :param throttle_rate: submit_sm per second allowed per system_id (0 = no limit); over it
        the answer is ESME_RTHROTTLED (0x58) and nothing is recorded
    :param throttle_burst: token bucket size; defaults to a tenth of a second's worth (at least 1)
    :param permanent_error_share: share (0-1) of submit_sm refused with ``permanent_error_status``
    :param transient_error_share: share (0-1) refused with ``transient_error_status``
    :param permanent_error_status: default 0x0B ESME_RINVDSTADR
    :param transient_error_status: default 0x08 ESME_RSYSERR
    :param seed: seed of the random refusals and of the receipt mix (None = unpredictable refusals)
    :param disconnect_every: cut the connection after every N-th accepted submit_sm, which is
        recorded but never answered (0 = never)
    :param receipt_mix: share per receipt stat, e.g. ``{"DELIVRD": 0.8, "UNDELIV": 0.1,
        "EXPIRED": 0.05, "none": 0.05}`` (``none``: no receipt); replaces ``undeliverable_share``;
        normalised to sum to 1; decided per destination (see :meth:`receipt_stat_for`)
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
        latency: float = 0.0,
        throttle_rate: float = 0.0,
        throttle_burst: int | None = None,
        permanent_error_share: float = 0.0,
        transient_error_share: float = 0.0,
        permanent_error_status: int = ESME_RINVDSTADR,
        transient_error_status: int = ESME_RSYSERR,
        seed: int | None = None,
        disconnect_every: int = 0,
        receipt_mix: Mapping[str, float] | None = None,
    ) -> None:
        if id_format not in ("hex", "decimal", "mixed"):
            raise ValueError(f"id_format must be hex, decimal or mixed, not {id_format!r}")
        for name, share in (
            ("undeliverable_share", undeliverable_share),
            ("permanent_error_share", permanent_error_share),
            ("transient_error_share", transient_error_share),
        ):
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if permanent_error_share + transient_error_share > 1.0:
            raise ValueError("permanent_error_share + transient_error_share must not exceed 1")
        if latency < 0 or throttle_rate < 0 or disconnect_every < 0:
            raise ValueError("latency, throttle_rate and disconnect_every must not be negative")
        self.host = host
        self.port = port
        self.password = password
        self.receipt_delay = receipt_delay
        self.undeliverable_share = undeliverable_share
        self.log_path = log_path
        self.id_format = id_format
        self.latency = latency
        self.throttle_rate = throttle_rate
        self.throttle_burst = max(1, int(throttle_burst or throttle_rate / 10))
        self.permanent_error_share = permanent_error_share
        self.transient_error_share = transient_error_share
        self.permanent_error_status = permanent_error_status
        self.transient_error_status = transient_error_status
        self.seed = seed
        self.disconnect_every = disconnect_every
        self.receipt_mix = _receipt_mix(receipt_mix) if receipt_mix else None
        self._random = random.Random(seed)
        self._buckets: dict[str, list[float]] = {}  # system_id -> [tokens, last refill]
        self._received: list[dict[str, Any]] = []

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
    def received(self) -> list[dict[str, Any]]:
        """Return every submit_sm received, in arrival order, refused ones included.

        Each entry: ``system_id``, ``session`` (connection number), ``destination``, ``status``
        (the command_status answered) and ``message_id`` (None when refused).
        """
        with self._lock:
            return [dict(r) for r in self._received]

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
                "received": len(self._received),
                "receipts_sent": self._receipts_sent,
                "receipts_queued": sum(len(q) for q in self._queues.values()),
                "incomplete_messages": len(self._assemblies),
                "sessions": [
                    {"system_id": s.system_id, "mode": s.mode, "peer": s.peer} for s in self._sessions
                ],
            }

    def is_undeliverable(self, destination: str) -> bool:
        """Return whether receipts to ``destination`` will say UNDELIV (deterministic)."""
        if self.receipt_mix is not None:
            return self.receipt_stat_for(destination) == "UNDELIV"
        return zlib.crc32(destination.encode("utf-8")) % 1000 < self.undeliverable_share * 1000

    def receipt_stat_for(self, destination: str) -> str | None:
        """Return the receipt stat ``destination`` will get (None: no receipt); deterministic."""
        if self.receipt_mix is None:
            return "UNDELIV" if self.is_undeliverable(destination) else "DELIVRD"
        salt = "" if self.seed is None else f"{self.seed}:"
        point = zlib.crc32(f"{salt}{destination}".encode()) / 2**32
        for bound, stat in self.receipt_mix:
            if point < bound:
                return None if stat == NO_RECEIPT else stat
        stat = self.receipt_mix[-1][1]
        return None if stat == NO_RECEIPT else stat

    # -- growth points -----------------------------------------------------------------------

    def submit_status(self, session_system_id: str, submit: SubmitSm) -> int:
        """Return the command_status to answer a submit_sm with (0 accepts it).

        In order: no destination (0x0B), over ``throttle_rate`` (0x58), then the random
        permanent and transient refusals. Override to add more (a full queue, 0x14).
        """
        if not submit.destination:
            return ESME_RINVDSTADR
        if self.throttle_rate and not self._take_token(session_system_id):
            return ESME_RTHROTTLED
        if self.permanent_error_share or self.transient_error_share:
            draw = self._random.random()
            if draw < self.permanent_error_share:
                return self.permanent_error_status
            if draw < self.permanent_error_share + self.transient_error_share:
                return self.transient_error_status
        return ESME_ROK

    def _take_token(self, system_id: str) -> bool:
        now = time.monotonic()
        bucket = self._buckets.setdefault(system_id, [float(self.throttle_burst), now])
        bucket[0] = min(float(self.throttle_burst), bucket[0] + (now - bucket[1]) * self.throttle_rate)
        bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return True
        return False

    def response_delay(self, submit: SubmitSm) -> float:
        """Return seconds to wait before answering a submit_sm (``latency``; 0 by default)."""
        return self.latency

    def receipt_outcome(self, destination: str) -> tuple[str, str, int] | None:
        """Return (stat, err, message_state) of the receipt for ``destination``; None sends none."""
        stat = self.receipt_stat_for(destination)
        if stat is None:
            return None
        err, state = RECEIPT_STATS[stat]
        return stat, err, state

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
        buffer = bytearray()
        try:
            # Read what the socket has and answer every PDU in it with one write: a client
            # with a window sends many PDUs per segment, and one syscall per PDU is the limit.
            while not session.closed:
                data = await reader.read(65536)
                if not data:
                    break
                arrived = asyncio.get_running_loop().time()  # latency counts from here
                buffer += data
                session.cork()
                try:
                    while len(buffer) >= 16 and not session.closed:
                        length, command_id, status, sequence = struct.unpack_from(">LLLL", buffer)
                        if length < 16 or length > MAX_PDU_LENGTH:
                            session.send(pdu(GENERIC_NACK, sequence, status=ESME_RINVCMDLEN))
                            session.closed = True
                            break
                        if len(buffer) < length:
                            break
                        body = bytes(buffer[16:length])
                        del buffer[:length]
                        await self._dispatch(session, command_id, status, sequence, body)
                finally:
                    for delay, chunk in session.uncork().items():
                        self._schedule(delay, session.send, chunk, at=arrived + delay)
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
            session.flush()
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
                session.send_later(delay, data)
            else:
                session.send(data)

        entry = {
            "system_id": session.system_id,
            "session": session.id,
            "destination": submit.destination,
            "status": status,
            "message_id": None,
        }
        if status != ESME_ROK:
            with self._lock:
                self._received.append(entry)
            answer(pdu(SUBMIT_SM | RESP, sequence, status=status))
            return
        number = next(self._message_counter)
        message_id = self._format_id(number)
        entry["message_id"] = message_id
        with self._lock:
            self._submits += 1
            self._received.append(entry)
            cut = bool(self.disconnect_every) and self._submits % self.disconnect_every == 0
        # Record before answering: a client that saw the response must find the message.
        self._record_part(session.system_id, submit, concat, part_body, message_id)
        if cut:
            log.info("cutting session %s after submit_sm %d (disconnect_every)", session.id, self._submits)
            session.flush()  # what was answered before the cut still goes out
            session.closed = True  # drops this response and every scheduled one
            session.writer.transport.abort()
        else:
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

    def _schedule(self, delay: float, func: Any, *args: Any, at: float | None = None) -> None:
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            self._timers.discard(handle)  # type: ignore[arg-type]
            func(*args)

        loop = asyncio.get_running_loop()
        handle = loop.call_at(loop.time() + delay if at is None else at, fire)
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
        if log.isEnabledFor(logging.INFO):
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
        outcome = self.receipt_outcome(submit.destination)
        if outcome is None:
            return
        stat, err, state = outcome
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
    rehearsal = parser.add_argument_group("rehearsal (all off by default)")
    rehearsal.add_argument("--latency", type=float, default=0.0, help="seconds before each submit_sm_resp")
    rehearsal.add_argument(
        "--throttle-rate", type=float, default=0.0, help="submit_sm/s per system_id; over it: 0x58"
    )
    rehearsal.add_argument("--throttle-burst", type=int, default=None, help="token bucket size")
    rehearsal.add_argument("--permanent-error-share", type=float, default=0.0, help="share refused for good")
    rehearsal.add_argument("--transient-error-share", type=float, default=0.0, help="share refused for now")
    rehearsal.add_argument(
        "--permanent-error-status", type=_int_any_base, default=ESME_RINVDSTADR, help="default 0x0B"
    )
    rehearsal.add_argument(
        "--transient-error-status", type=_int_any_base, default=ESME_RSYSERR, help="default 0x08"
    )
    rehearsal.add_argument("--seed", type=int, default=None, help="seed of refusals and receipt mix")
    rehearsal.add_argument(
        "--disconnect-every", type=int, default=0, help="cut the connection after every N-th submit_sm"
    )
    rehearsal.add_argument(
        "--receipt-mix",
        type=parse_receipt_mix,
        default=None,
        help="receipt stats, e.g. DELIVRD=0.8,UNDELIV=0.1,EXPIRED=0.05,none=0.05",
    )
    rehearsal.add_argument(
        "--mo",
        action="append",
        default=[],
        type=_parse_mo,
        metavar="SYSTEM_ID:SOURCE:DESTINATION:TEXT",
        help="queue a mobile-originated reply (repeatable), e.g. tax:13812348000:12366:TD",
    )
    rehearsal.add_argument(
        "--mo-delay", type=float, default=0.0, help="seconds after start before --mo replies are queued"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every session and message")
    return parser.parse_args(argv)


def _int_any_base(text: str) -> int:
    return int(text, 0)


def _parse_mo(text: str) -> tuple[str, str, str, str]:
    parts = text.split(":", 3)
    if len(parts) != 4 or not all(parts[:3]) or not parts[3]:
        raise argparse.ArgumentTypeError(f"expected SYSTEM_ID:SOURCE:DESTINATION:TEXT, got {text!r}")
    return parts[0], parts[1], parts[2], parts[3]


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
        latency=args.latency,
        throttle_rate=args.throttle_rate,
        throttle_burst=args.throttle_burst,
        permanent_error_share=args.permanent_error_share,
        transient_error_share=args.transient_error_share,
        permanent_error_status=args.permanent_error_status,
        transient_error_status=args.transient_error_status,
        seed=args.seed,
        disconnect_every=args.disconnect_every,
        receipt_mix=args.receipt_mix,
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
        if args.mo and not stop.wait(args.mo_delay):
            for system_id, source, destination, text in args.mo:
                simulator.inject_mo(system_id, source, destination, text)
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
