"""Emulate a SIMCom / Quectel GSM modem's AT dialogue over a pty or TCP, for tests, demos and benches.

It speaks the part of 3GPP TS 27.005 / 27.007 the dunning channel uses, in PDU mode: ``AT``,
``ATE0/1``, ``AT+CMEE``, ``AT+CPIN`` (READY, SIM PIN, SIM PUK), ``AT+CMGF``, ``AT+CSMP``,
``AT+CNMI``, ``AT+CSCA``, ``AT+CMGS`` (with the ``> `` prompt; the PDU is decoded so tests can
assert on the text), ``AT+CMGR`` / ``AT+CMGD`` / ``AT+CMGL``, ``+CMTI`` / ``+CMT`` / ``+CDS``
URCs, ``ATD<number>;`` / ``ATH`` / ``AT+CHUP`` / ``AT+CLCC`` for voice calls, the vendors' TTS
(SIMCom ``AT+CTTS``, Quectel ``AT+QTTS``, text as UCS2 hex, completion URC ``+CTTS: 0`` /
``+QTTS: 0``) and ``AT+CFUN=1,1`` (restart, then ``RDY``).

Embed it::

    with ModemEmulator(sms_delay=0.05) as modem:          # a pty: modem.device == "/dev/pts/7"
        ...
    with ModemEmulator(transport="tcp") as modem:         # TCP: modem.url == "socket://127.0.0.1:PORT"
        ...

or run ``python -m include.simulators.modem --pty`` / ``--tcp 7000``.

Behaviour by number or share: ``call_rules={"13800000002": "busy"}`` (answer, busy, no_answer,
reject, no_carrier), ``answer_ratio`` for the rest (decided by ``crc32(number)`` so tests can
predict it), ``report_rules={"13800000003": 0x46}`` for status-report TP-Status values.
Faults: :meth:`ModemEmulator.fail_next_sms` (``+CMS ERROR: 500``), :meth:`drop_responses`
(commands that time out), :meth:`stop_answering` (a modem that hangs), ``garbage=True``
(line noise instead of answers), ``sim_state="SIM PUK"``.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import itertools
import logging
import os
import re
import select
import signal
import socket
import sys
import threading
import time
import tty
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from include.dunning.pdu import (
    PduError,
    SmsSubmit,
    decode_pdu,
    encode_deliver,
    encode_status_report,
)
from include.dunning.phones import mask
from include.dunning.sms import concat_udh, decode_payload, reference_for, split_text

log = logging.getLogger(__name__)

VENDORS = ("simcom", "quectel", "generic")
CALL_OUTCOMES = ("answer", "busy", "no_answer", "reject", "no_carrier")
SIM_STATES = ("READY", "SIM PIN", "SIM PUK")
CST = timezone(timedelta(hours=8))

_IDENT = {
    "simcom": ("SIMCOM INCORPORATED", "SIMCOM_SIM7600E-H"),
    "quectel": ("Quectel", "EC25"),
    "generic": ("GENERIC", "MODEM"),
}
_TTS_COMMAND = {"simcom": "+CTTS", "quectel": "+QTTS"}

# CLCC call states (TS 27.007 §7.18).
CALL_ACTIVE = 0
CALL_DIALING = 2
CALL_ALERTING = 3


@dataclass
class EmulatedCall:
    """Record one voice call the emulator placed: what was said and how it ended."""

    number: str
    behaviour: str
    state: int = CALL_DIALING
    outcome: str | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    spoken: list[str] = field(default_factory=list)

    @property
    def answered_seconds(self) -> float:
        """Return how long the call was connected (0 if never answered)."""
        if self.answered_at is None:
            return 0.0
        return max(0.0, (self.ended_at or time.monotonic()) - self.answered_at)


def _national(number: str) -> str:
    """Return ``number`` without a +86 / 0086 prefix, as rules are written."""
    for prefix in ("+86", "0086"):
        if number.startswith(prefix) and len(number) - len(prefix) == 11:
            return number[len(prefix) :]
    return number


def _tpdu_length(pdu_hex: str) -> int:
    """Return the TPDU length a modem announces for a PDU that starts with SMSC information."""
    data = bytes.fromhex(pdu_hex)
    return len(data) - 1 - data[0]


class _Scheduler:
    """Run callables after a delay on one daemon thread; stop() drops what is still waiting."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._tie = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="modem-emulator-timers", daemon=True)
        self._thread.start()

    def call_later(self, delay: float, func: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + max(0.0, delay), next(self._tie), func))
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                if self._stopped:
                    return
                _when, _tie, func = heapq.heappop(self._heap)
            try:
                func()
            except Exception:
                log.exception("modem emulator timer failed")

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify()
        self._thread.join(2)


class ModemEmulator:
    """Emulate one GSM modem on a pty (``.device``) or a TCP port (``.port``) from daemon threads.

    :param transport: ``pty`` or ``tcp``
    :param vendor: ``simcom``, ``quectel`` or ``generic`` (no TTS)
    :param host: TCP interface
    :param port: TCP port; 0 picks a free one (read ``.port`` after ``start()``)
    :param sms_delay: seconds the modem takes to send one SMS part (before ``+CMGS:``)
    :param report_delay: seconds from ``+CMGS:`` to the ``+CDS`` status report
    :param sim_state: READY, SIM PIN (``pin`` unlocks it) or SIM PUK
    :param pin: the SIM's PIN
    :param call_rules: number -> answer | busy | no_answer | reject | no_carrier
    :param answer_ratio: share (0-1) of other numbers that answer; the rest do not answer
    :param ring_seconds: seconds of ringing before a call is answered, busy or rejected
    :param talk_limit: seconds after which an answered callee hangs up (None: never)
    :param tts_seconds_per_char: speaking time per character of TTS text
    :param report_rules: number -> TP-Status of its status reports (default 0x00 delivered)
    :param garbage: answer every command with line noise
    """

    def __init__(
        self,
        transport: str = "pty",
        *,
        vendor: str = "simcom",
        host: str = "127.0.0.1",
        port: int = 0,
        sms_delay: float = 0.0,
        report_delay: float = 0.05,
        sim_state: str = "READY",
        pin: str = "1234",
        call_rules: dict[str, str] | None = None,
        answer_ratio: float = 1.0,
        ring_seconds: float = 0.2,
        talk_limit: float | None = None,
        tts_seconds_per_char: float = 0.005,
        report_rules: dict[str, int] | None = None,
        garbage: bool = False,
    ) -> None:
        if transport not in ("pty", "tcp"):
            raise ValueError(f"transport must be pty or tcp, not {transport!r}")
        if vendor not in VENDORS:
            raise ValueError(f"vendor must be one of {', '.join(VENDORS)}, not {vendor!r}")
        if sim_state not in SIM_STATES:
            raise ValueError(f"sim_state must be one of {', '.join(SIM_STATES)}, not {sim_state!r}")
        for number, behaviour in (call_rules or {}).items():
            if behaviour not in CALL_OUTCOMES:
                raise ValueError(f"call rule for {mask(number)}: {behaviour!r} is not one of {CALL_OUTCOMES}")
        self.transport = transport
        self.vendor = vendor
        self.host = host
        self.port = port
        self.sms_delay = sms_delay
        self.report_delay = report_delay
        self.sim_state = sim_state
        self.pin = pin
        self.call_rules = dict(call_rules or {})
        self.answer_ratio = answer_ratio
        self.ring_seconds = ring_seconds
        self.talk_limit = talk_limit
        self.tts_seconds_per_char = tts_seconds_per_char
        self.report_rules = dict(report_rules or {})
        self.garbage = garbage
        self.device: str | None = None

        self._lock = threading.RLock()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._scheduler: _Scheduler | None = None
        self._master: int | None = None
        self._slave: int | None = None
        self._listener: socket.socket | None = None
        self._client: socket.socket | None = None

        self._messages: list[dict[str, Any]] = []
        self._parts: list[dict[str, Any]] = []
        self._assemblies: dict[tuple[str, int, int], dict[int, SmsSubmit]] = {}
        self._part_refs: dict[tuple[tuple[str, int, int], int], int] = {}
        self._calls: list[EmulatedCall] = []
        self._storage: dict[int, tuple[str, str]] = {}  # index -> (status, pdu hex)
        self._commands: list[str] = []
        self._mr = itertools.count(1)
        self._sms_failures: list[int] = []
        self._drop = 0
        self._mute = False
        self._reset_session()

    # -- lifecycle -----------------------------------------------------------------------------

    def _reset_session(self) -> None:
        self.echo = True
        self.cmee = 0
        self.cmgf = 0
        self.cnmi = (0, 0, 0, 0, 0)
        self.clcc_urc = False
        self.smsc = "+8613800100500"
        self._buffer = bytearray()
        self._pdu_length: int | None = None
        self._call: EmulatedCall | None = None

    def start(self) -> ModemEmulator:
        """Open the pty or listening socket and start serving; return self."""
        if self._threads:
            raise RuntimeError("emulator already started")
        self._stop.clear()
        self._scheduler = _Scheduler()
        if self.transport == "pty":
            self._master, self._slave = os.openpty()
            tty.setraw(self._slave)
            self.device = os.ttyname(self._slave)
            target: Callable[[], None] = self._serve_pty
        else:
            self._listener = socket.create_server((self.host, self.port))
            self.port = self._listener.getsockname()[1]
            target = self._serve_tcp
        thread = threading.Thread(target=target, name=f"modem-emulator-{self.transport}", daemon=True)
        thread.start()
        self._threads.append(thread)
        log.info("Modem emulator (%s) serving on %s", self.vendor, self.url)
        return self

    def stop(self) -> None:
        """Stop serving and close the pty or socket."""
        self._stop.set()
        if self._scheduler is not None:
            self._scheduler.stop()
        for sock in (self._client, self._listener):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        for thread in self._threads:
            thread.join(3)
        self._threads.clear()
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None
        self._client = self._listener = None

    def __enter__(self) -> ModemEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Return what a GsmModemHook connection's host should be: the pty path or a socket:// URL."""
        if self.transport == "pty":
            return self.device or ""
        return f"socket://{self.host}:{self.port}"

    # -- views and controls (thread-safe) ---------------------------------------------------------

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Return the completed (reassembled) messages: destination, text, references, parts."""
        with self._lock:
            return [dict(m, references=list(m["references"])) for m in self._messages]

    @property
    def parts(self) -> list[dict[str, Any]]:
        """Return every SMS-SUBMIT accepted, in order: destination, text, reference, part, total."""
        with self._lock:
            return [dict(p) for p in self._parts]

    @property
    def calls(self) -> list[EmulatedCall]:
        """Return the calls placed so far (the last may still be going on)."""
        with self._lock:
            return list(self._calls)

    @property
    def commands(self) -> list[str]:
        """Return every command line received, in order (PDUs excluded)."""
        with self._lock:
            return list(self._commands)

    @property
    def stored(self) -> dict[int, str]:
        """Return the SIM's message storage as {index: REC UNREAD | REC READ}."""
        with self._lock:
            return {index: status for index, (status, _pdu) in self._storage.items()}

    def fail_next_sms(self, code: int = 500, times: int = 1) -> None:
        """Answer the next ``times`` AT+CMGS with ``+CMS ERROR: <code>``."""
        with self._lock:
            self._sms_failures.extend([code] * times)

    def drop_responses(self, count: int = 1) -> None:
        """Swallow the answers to the next ``count`` commands (the sender sees a timeout)."""
        with self._lock:
            self._drop += count

    def stop_answering(self) -> None:
        """Make the modem ignore everything from now on, like a hung firmware."""
        self._mute = True

    def resume_answering(self) -> None:
        """Undo :meth:`stop_answering`."""
        self._mute = False

    def inject_mo(self, sender: str, text: str, when: datetime | None = None) -> list[int]:
        """Store a message from ``sender`` on the SIM and announce it (``+CMTI`` or ``+CMT``).

        Long texts are stored as concatenated parts. Return the storage indexes.
        """
        when = when or datetime.now(CST).replace(microsecond=0)
        encoded = split_text(text)
        total = len(encoded.parts)
        reference = reference_for(f"{sender}|{text}")
        indexes = []
        for seq, body in enumerate(encoded.parts, start=1):
            part_text = decode_payload(encoded.data_coding, body)
            udh = concat_udh(reference, total, seq) if total > 1 else b""
            pdu_hex = encode_deliver(sender, part_text, when, smsc=self.smsc, udh=udh)
            with self._lock:
                index = max(self._storage, default=0) + 1
                self._storage[index] = ("REC UNREAD", pdu_hex)
            indexes.append(index)
            mt = self.cnmi[1]
            if mt == 1:
                self._urc(f'+CMTI: "SM",{index}')
            elif mt in (2, 3):
                self._write(f"\r\n+CMT: ,{_tpdu_length(pdu_hex)}\r\n{pdu_hex}\r\n".encode())
        return indexes

    def restart(self) -> None:
        """Restart the modem as AT+CFUN=1,1 does: drop calls and session settings, say RDY."""
        with self._lock:
            if self._call is not None and self._call.outcome is None:
                self._end_call(self._call, "reset")
            self._reset_session()
        assert self._scheduler is not None
        self._scheduler.call_later(0.05, lambda: self._urc("RDY"))
        if self.vendor == "simcom":
            self._scheduler.call_later(0.06, lambda: self._urc(f"+CPIN: {self.sim_state}"))
            self._scheduler.call_later(0.07, lambda: self._urc("SMS DONE"))

    # -- transports ----------------------------------------------------------------------------

    def _serve_pty(self) -> None:
        assert self._master is not None
        while not self._stop.is_set():
            try:
                readable, _, _ = select.select([self._master], [], [], 0.05)
                if not readable:
                    continue
                data = os.read(self._master, 4096)
            except OSError:
                if self._stop.is_set():
                    return
                time.sleep(0.05)
                continue
            self._feed(data)

    def _serve_tcp(self) -> None:
        assert self._listener is not None
        self._listener.settimeout(0.05)
        while not self._stop.is_set():
            try:
                client, _peer = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.settimeout(0.05)
            with self._lock:
                self._client = client
                self._buffer.clear()
                self._pdu_length = None
            try:
                while not self._stop.is_set():
                    try:
                        data = client.recv(4096)
                    except TimeoutError:
                        continue
                    if not data:
                        break
                    self._feed(data)
            except OSError:
                pass
            finally:
                with self._lock:
                    self._client = None
                with contextlib.suppress(OSError):
                    client.close()

    def _write(self, data: bytes) -> None:
        with self._write_lock:
            try:
                if self.transport == "pty" and self._master is not None:
                    view = memoryview(data)
                    while view:
                        written = os.write(self._master, view)
                        view = view[written:]
                elif self._client is not None:
                    self._client.sendall(data)
            except OSError as exc:
                log.debug("modem emulator write failed: %s", exc)

    def _urc(self, line: str) -> None:
        if not self._mute:
            self._write(f"\r\n{line}\r\n".encode())

    # -- command interpreter ----------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        if self._mute:
            return
        if self.echo:
            self._write(data)
        self._buffer.extend(data)
        while self._buffer and not self._stop.is_set():
            if self._pdu_length is not None:
                end = next((i for i, b in enumerate(self._buffer) if b in (0x1A, 0x1B)), -1)
                if end < 0:
                    return
                terminator = self._buffer[end]
                pdu_hex = self._buffer[:end].decode("ascii", "replace").strip()
                del self._buffer[: end + 1]
                length, self._pdu_length = self._pdu_length, None
                if terminator == 0x1B:
                    self._respond([], "OK")
                else:
                    self._submit(pdu_hex, length)
                continue
            match = re.search(rb"[\r\n]", self._buffer)
            if match is None:
                return
            line = self._buffer[: match.start()].decode("ascii", "replace").strip()
            del self._buffer[: match.end()]
            if line:
                self._command(line)

    def _respond(self, lines: list[str], final: str) -> None:
        with self._lock:
            if self._drop:
                self._drop -= 1
                return
        if self.garbage:
            self._write(b"\r\n\x07\xfe\x93garbled\xff\x00?!\r\n")
            return
        self._write("".join(f"\r\n{line}\r\n" for line in lines).encode() + f"\r\n{final}\r\n".encode())

    def _error(self, code: int, kind: str = "CME") -> None:
        if self.cmee == 0:
            self._respond([], "ERROR")
        else:
            self._respond([], f"+{kind} ERROR: {code}")

    def _command(self, line: str) -> None:
        with self._lock:
            self._commands.append(line)
        upper = line.upper()
        if not upper.startswith("AT"):
            self._respond([], "ERROR")
            return
        body = line[2:]
        head = body.upper()
        if head in ("", "Z", "&F"):
            self._respond([], "OK")
        elif head in ("E0", "E1", "E"):
            self.echo = head == "E1"
            self._respond([], "OK")
        elif head in ("I", "+CGMI", "+GMI"):
            self._respond([_IDENT[self.vendor][0]] if head != "I" else list(_IDENT[self.vendor]), "OK")
        elif head in ("+CGMM", "+GMM"):
            self._respond([_IDENT[self.vendor][1]], "OK")
        elif head.startswith("+CMEE="):
            self.cmee = int(head[6:] or 0)
            self._respond([], "OK")
        elif head == "+CPIN?":
            self._respond([f"+CPIN: {self.sim_state}"], "OK")
        elif head.startswith("+CPIN="):
            self._enter_pin(body[6:].strip().strip('"'))
        elif self.sim_state != "READY":
            self._error(12 if self.sim_state == "SIM PUK" else 11)
        elif head.startswith("D"):
            self._dial(body[1:].strip())
        elif head in ("H", "H0", "+CHUP"):
            with self._lock:
                call = self._call
                if call is not None and call.outcome is None:
                    self._end_call(call, "hung_up")
            self._respond([], "OK")
        elif head == "+CLCC":
            self._respond(self._clcc_lines(), "OK")
        elif head.startswith("+CLCC="):
            self.clcc_urc = head.endswith("1")
            self._respond([], "OK")
        elif head.startswith(("+CTTS", "+QTTS")):
            self._tts(head[:5], body[5:])
        elif head in ("+CSQ",):
            self._respond(["+CSQ: 23,99"], "OK")
        elif head == "+CREG?":
            self._respond(["+CREG: 0,1"], "OK")
        elif head.startswith("+CFUN=1,1"):
            self._respond([], "OK")
            self.restart()
        elif head.startswith(("+CLIP", "+COLP", "+CSCS", "+CPMS", "+CFUN", "+CSDH", "&W")):
            self._respond([], "OK")
        else:
            self._sms_command(head, body)

    def _sms_command(self, head: str, body: str) -> None:
        if head.startswith("+CMGF="):
            self.cmgf = int(head[6:] or 0)
            self._respond([], "OK")
        elif head == "+CMGF?":
            self._respond([f"+CMGF: {self.cmgf}"], "OK")
        elif head.startswith("+CSMP="):
            self._respond([], "OK")
        elif head.startswith("+CNMI="):
            values = [int(v) if v.strip() else 0 for v in head[6:].split(",")]
            self.cnmi = tuple((values + [0] * 5)[:5])  # type: ignore[assignment]
            self._respond([], "OK")
        elif head == "+CSCA?":
            self._respond([f'+CSCA: "{self.smsc}",145'], "OK")
        elif head.startswith("+CSCA="):
            self.smsc = body[6:].split(",")[0].strip().strip('"')
            self._respond([], "OK")
        elif head.startswith("+CMGS="):
            if self.cmgf != 0:
                self._error(302, "CMS")
                return
            try:
                self._pdu_length = int(head[6:])
            except ValueError:
                self._error(304, "CMS")
                return
            self._write(b"\r\n> ")
        elif head.startswith("+CMGR="):
            with self._lock:
                entry = self._storage.get(int(head[6:] or -1))
                if entry is not None:
                    index = int(head[6:])
                    self._storage[index] = ("REC READ", entry[1])
            if entry is None:
                self._error(321, "CMS")
                return
            status, pdu_hex = entry
            stat = 0 if status == "REC UNREAD" else 1
            self._respond([f"+CMGR: {stat},,{_tpdu_length(pdu_hex)}", pdu_hex], "OK")
        elif head.startswith("+CMGD="):
            args = head[6:].split(",")
            with self._lock:
                if len(args) > 1 and args[1].strip() == "4":
                    self._storage.clear()
                else:
                    self._storage.pop(int(args[0]), None)
            self._respond([], "OK")
        elif head.startswith("+CMGL"):
            lines = []
            with self._lock:
                for index, (status, pdu_hex) in sorted(self._storage.items()):
                    stat = 0 if status == "REC UNREAD" else 1
                    lines += [f"+CMGL: {index},{stat},,{_tpdu_length(pdu_hex)}", pdu_hex]
            self._respond(lines, "OK")
        else:
            self._error(4)

    def _enter_pin(self, pin: str) -> None:
        if self.sim_state == "SIM PUK":
            self._error(12)
        elif self.sim_state == "READY":
            self._error(3)
        elif pin == self.pin:
            self.sim_state = "READY"
            self._respond([], "OK")
        else:
            self._error(16)

    # -- SMS -----------------------------------------------------------------------------------

    def _submit(self, pdu_hex: str, announced: int) -> None:
        try:
            decoded = decode_pdu(pdu_hex)
        except PduError as exc:
            log.info("modem emulator refused a PDU: %s", exc)
            self._error(304, "CMS")
            return
        smsc_octets = bytes.fromhex(pdu_hex)[0] + 1
        if not isinstance(decoded, SmsSubmit) or len(bytes.fromhex(pdu_hex)) - smsc_octets != announced:
            self._error(304, "CMS")
            return
        with self._lock:
            failure = self._sms_failures.pop(0) if self._sms_failures else None
        if self.sms_delay:
            self._stop.wait(self.sms_delay)
        if failure is not None:
            self._error(failure, "CMS")
            return
        reference = next(self._mr) % 256
        record = {
            "destination": decoded.destination,
            "text": decoded.text,
            "reference": reference,
            "part": decoded.part,
            "total": decoded.total,
            "status_report": decoded.status_report,
        }
        with self._lock:
            self._parts.append(record)
            self._assemble(decoded, reference)
        self._respond([f"+CMGS: {reference}"], "OK")
        if decoded.status_report and self.cnmi[3] in (1, 2):
            status = self.report_rules.get(
                decoded.destination, self.report_rules.get(_national(decoded.destination), 0x00)
            )
            submitted = datetime.now(CST).replace(microsecond=0)
            assert self._scheduler is not None
            self._scheduler.call_later(
                self.report_delay,
                lambda: self._status_report(reference, decoded.destination, status, submitted),
            )

    def _assemble(self, decoded: SmsSubmit, reference: int) -> None:
        if decoded.total == 1:
            self._messages.append(
                {
                    "destination": decoded.destination,
                    "text": decoded.text,
                    "references": [reference],
                    "parts": 1,
                }
            )
            return
        key = (decoded.destination, decoded.concat_reference or 0, decoded.total)
        parts = self._assemblies.setdefault(key, {})
        parts[decoded.part] = decoded
        self._part_refs[(key, decoded.part)] = reference
        if len(parts) == decoded.total:
            del self._assemblies[key]
            ordered = [parts[i] for i in range(1, decoded.total + 1)]
            self._messages.append(
                {
                    "destination": decoded.destination,
                    "text": "".join(p.text for p in ordered),
                    "references": [self._part_refs.pop((key, i)) for i in range(1, decoded.total + 1)],
                    "parts": decoded.total,
                }
            )

    def _status_report(self, reference: int, recipient: str, status: int, submitted: datetime) -> None:
        pdu_hex, length = encode_status_report(
            reference, recipient, status, submitted, datetime.now(CST).replace(microsecond=0), smsc=self.smsc
        )
        if self.cnmi[3] == 2:
            with self._lock:
                index = max(self._storage, default=0) + 1
                self._storage[index] = ("REC UNREAD", pdu_hex)
            self._urc(f'+CDSI: "SR",{index}')
        else:
            self._write(f"\r\n+CDS: {length}\r\n{pdu_hex}\r\n".encode())

    # -- voice ---------------------------------------------------------------------------------

    def behaviour_for(self, number: str) -> str:
        """Return how ``number`` reacts to a call (call_rules, else answer_ratio by crc32)."""
        for candidate in (number, _national(number)):
            if candidate in self.call_rules:
                return self.call_rules[candidate]
        if zlib.crc32(number.encode()) % 1000 < self.answer_ratio * 1000:
            return "answer"
        return "no_answer"

    def _dial(self, target: str) -> None:
        if not target.endswith(";"):
            self._respond([], "NO CARRIER")  # data calls are not emulated
            return
        number = target[:-1].strip()
        with self._lock:
            if self._call is not None and self._call.outcome is None:
                self._error(3)
                return
            if not number or not re.fullmatch(r"\+?[0-9*#]+", number):
                self._error(50)
                return
            call = EmulatedCall(number=number, behaviour=self.behaviour_for(number))
            self._call = call
            self._calls.append(call)
        self._respond([], "OK")
        self._clcc_urc(call)
        assert self._scheduler is not None
        if call.behaviour == "no_carrier":
            self._scheduler.call_later(0.05, lambda: self._remote_end(call, "no_carrier", "NO CARRIER"))
            return
        self._scheduler.call_later(0.05, lambda: self._set_state(call, CALL_ALERTING))
        if call.behaviour == "busy":
            self._scheduler.call_later(self.ring_seconds, lambda: self._remote_end(call, "busy", "BUSY"))
        elif call.behaviour == "reject":
            self._scheduler.call_later(
                self.ring_seconds, lambda: self._remote_end(call, "rejected", "NO CARRIER")
            )
        elif call.behaviour == "answer":
            self._scheduler.call_later(self.ring_seconds, lambda: self._answer(call))

    def _set_state(self, call: EmulatedCall, state: int) -> None:
        with self._lock:
            if call.outcome is not None:
                return
            call.state = state
        self._clcc_urc(call)

    def _answer(self, call: EmulatedCall) -> None:
        with self._lock:
            if call.outcome is not None:
                return
            call.state = CALL_ACTIVE
            call.answered_at = time.monotonic()
        self._clcc_urc(call)
        if self.vendor == "simcom":
            self._urc("VOICE CALL: BEGIN")
        if self.talk_limit is not None:
            assert self._scheduler is not None
            self._scheduler.call_later(
                self.talk_limit, lambda: self._remote_end(call, "callee_hung_up", "NO CARRIER")
            )

    def _remote_end(self, call: EmulatedCall, outcome: str, urc: str) -> None:
        with self._lock:
            if call.outcome is not None:
                return
            self._end_call(call, outcome)
        self._urc(urc)

    def _end_call(self, call: EmulatedCall, outcome: str) -> None:
        call.outcome = outcome
        call.ended_at = time.monotonic()
        if self.clcc_urc:
            self._urc(self._clcc_line(call, 6))

    def _clcc_line(self, call: EmulatedCall, state: int | None = None) -> str:
        kind = 145 if call.number.startswith("+") else 129
        return f'+CLCC: 1,0,{call.state if state is None else state},0,0,"{call.number}",{kind}'

    def _clcc_lines(self) -> list[str]:
        with self._lock:
            call = self._call
            if call is None or call.outcome is not None:
                return []
            return [self._clcc_line(call)]

    def _clcc_urc(self, call: EmulatedCall) -> None:
        if self.clcc_urc:
            self._urc(self._clcc_line(call))

    def _tts(self, command: str, args: str) -> None:
        if _TTS_COMMAND.get(self.vendor) != command:
            self._error(4)
            return
        args = args.lstrip("=").strip()
        mode, _, text = args.partition(",")
        if mode.strip() == "0":
            self._respond([], "OK")
            return
        if mode.strip() != "1":
            self._error(50)
            return
        try:
            spoken = bytes.fromhex(text.strip().strip('"')).decode("utf-16-be")
        except ValueError:
            self._error(50)
            return
        with self._lock:
            call = self._call if self._call is not None and self._call.outcome is None else None
            if call is not None:
                call.spoken.append(spoken)
        self._respond([], "OK")
        assert self._scheduler is not None
        self._scheduler.call_later(
            self.tts_seconds_per_char * len(spoken), lambda: self._urc(f"{command}: 0")
        )


# -- command line -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the emulator until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m include.simulators.modem", description=__doc__.split("\n")[0]
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--pty", action="store_true", help="serve on a new pseudo-terminal")
    where.add_argument("--tcp", type=int, metavar="PORT", help="serve on a TCP port (0 = any free one)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--vendor", choices=VENDORS, default="simcom")
    parser.add_argument("--sms-delay", type=float, default=0.0, help="seconds per SMS part")
    parser.add_argument("--report-delay", type=float, default=0.5, help="seconds to the status report")
    parser.add_argument("--sim-state", choices=SIM_STATES, default="READY")
    parser.add_argument("--pin", default="1234")
    parser.add_argument("--answer-ratio", type=float, default=1.0)
    parser.add_argument("--ring-seconds", type=float, default=2.0)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    emulator = ModemEmulator(
        "pty" if args.pty else "tcp",
        vendor=args.vendor,
        host=args.host,
        port=args.tcp or 0,
        sms_delay=args.sms_delay,
        report_delay=args.report_delay,
        sim_state=args.sim_state,
        pin=args.pin,
        answer_ratio=args.answer_ratio,
        ring_seconds=args.ring_seconds,
    )
    try:
        emulator.start()
    except OSError as exc:
        print(f"modem emulator: cannot listen on {args.host}:{args.tcp}: {exc.strerror}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"Modem emulator ({args.vendor}) on {emulator.url}", flush=True)
    while not stop.wait(0.5):
        pass
    emulator.stop()
    print(
        f"Modem emulator stopped: {len(emulator.messages)} messages, {len(emulator.calls)} calls", flush=True
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
