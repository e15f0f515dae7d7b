"""AT dialogue with a GSM modem over any pyserial port: line reader, URCs, errors (no Airflow).

:class:`AtChannel` owns the byte stream of one open port (composition: it is handed a pyserial
object, it does not inherit one). It turns bytes into lines, drops the echo of what it sent,
recognises the ``> `` prompt of ``AT+CMGS``, keeps unsolicited result codes (URCs: ``+CMTI``,
``+CDS`` with its PDU line, ``RING``, ``NO CARRIER``, ``+CTTS: 0``, ...) that arrive between or
inside responses in a queue, and ends each command at its final result code (``OK``, ``ERROR``,
``+CME ERROR: <n>``, ``+CMS ERROR: <n>``, and for ``ATD`` ``BUSY`` / ``NO CARRIER`` /
``NO ANSWER`` / ``NO DIALTONE``). Every error names the port and the last command; the SIM PIN
never appears in one (``AT+CPIN="****"``).

The codes come from 3GPP TS 27.005 §3.2.5 (``+CMS ERROR``) and TS 27.007 §9.2 (``+CME ERROR``),
plus the SMS cause values of TS 24.011 (1-127) that modems pass through in ``+CMS ERROR``.
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

PROMPT = "> "
FINAL_OK = "OK"
CALL_RESULTS = ("BUSY", "NO CARRIER", "NO ANSWER", "NO DIALTONE")

# +CMS ERROR codes after which sending the same message again cannot succeed (a wrong number,
# a barred destination, a malformed PDU) or a person must act (SIM missing, PUK, no SMSC).
PERMANENT_CMS = frozenset(
    {1, 8, 10, 21, 27, 28, 29, 30, 50, 69, 81, 95, 96, 97, 98, 99, 111, 127}
    | set(range(128, 256))  # TP-FCS values: the PDU itself was refused
    | {301, 302, 303, 304, 305, 310, 311, 312, 313, 316, 317, 318, 330}
)
# +CME ERROR codes that no retry fixes: SIM missing / PIN / PUK / wrong password / unsupported.
PERMANENT_CME = frozenset({3, 4, 10, 11, 12, 13, 16, 17, 18, 50})

_CMS_TEXT = {
    1: "unassigned (unallocated) number",
    8: "operator determined barring",
    10: "call barred",
    21: "short message transfer rejected",
    27: "destination out of service",
    28: "unidentified subscriber",
    29: "facility rejected",
    30: "unknown subscriber",
    38: "network out of order",
    41: "temporary failure",
    42: "congestion",
    47: "resources unavailable",
    50: "requested facility not subscribed",
    69: "requested facility not implemented",
    96: "invalid mandatory information",
    300: "ME failure",
    301: "SMS service of ME reserved",
    302: "operation not allowed",
    303: "operation not supported",
    304: "invalid PDU mode parameter",
    305: "invalid text mode parameter",
    310: "SIM not inserted",
    311: "SIM PIN required",
    313: "SIM failure",
    314: "SIM busy",
    316: "SIM PUK required",
    321: "invalid memory index",
    322: "memory full",
    330: "SMSC address unknown",
    331: "no network service",
    332: "network timeout",
    500: "unknown error",
}
_CME_TEXT = {
    3: "operation not allowed",
    4: "operation not supported",
    10: "SIM not inserted",
    11: "SIM PIN required",
    12: "SIM PUK required",
    13: "SIM failure",
    14: "SIM busy",
    16: "incorrect password",
    30: "no network service",
    31: "network timeout",
    50: "incorrect parameters",
    100: "unknown",
}

# Lines that are never part of a response. Two-line URCs carry a PDU on the next line.
_BARE_URCS = frozenset(
    {"RING", "RDY", "SMS DONE", "PB DONE", "CALL READY", "SMS READY", "MISSED_CALL", "POWERED DOWN"}
)
_URC_WITH_PDU = ("+CMT:", "+CDS:")
_PREFIX = re.compile(r"^(\+[A-Z]+):")


def describe_error(kind: str, code: int) -> str:
    """Return ``+CMS ERROR: 500 (unknown error)`` style text."""
    table = _CMS_TEXT if kind == "CMS" else _CME_TEXT
    text = table.get(code)
    return f"+{kind} ERROR: {code}" + (f" ({text})" if text else "")


class ModemError(Exception):
    """Raised for any modem failure; carries the +CMS / +CME code when there is one.

    :param permanent: resending cannot succeed (or a person must act first); task retries
        should not apply
    """

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        kind: str | None = None,
        permanent: bool = False,
        port: str | None = None,
        command: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.kind = kind
        self.permanent = permanent
        self.port = port
        self.command = command
        self.references: list[int] = []


class ModemTransportError(ModemError):
    """Raised when the port cannot be opened, the modem stops answering or answers garbage."""


class ModemTimeout(ModemTransportError):
    """Raised when a command gets no final result code in time."""


class ModemCommandError(ModemError):
    """Raised when the modem answers ``ERROR``, ``+CMS ERROR: <n>`` or ``+CME ERROR: <n>``."""


class ModemSimError(ModemError):
    """Raised when the SIM is locked (PIN missing or wrong, PUK required) or absent; permanent."""


class ModemBusyError(ModemError):
    """Raised when another task holds the modem's lock for longer than ``lock_timeout``."""


class ModemMessageError(ModemError):
    """Raised when a text cannot be sent as given (too long, unencodable, bad number); permanent."""


@dataclass(frozen=True)
class Urc:
    """Hold one unsolicited result code and, for ``+CMT`` / ``+CDS``, the PDU line after it."""

    line: str
    pdu: str | None = None


class AtChannel:
    """Speak AT commands over an open pyserial port; queue URCs; raise ModemError subclasses.

    :param port: an open pyserial object (``serial_for_url`` result)
    :param name: the port's name for messages (device path or URL)
    :param command_timeout: default seconds to wait for a final result code
    """

    def __init__(self, port: Any, name: str, *, command_timeout: float = 10.0) -> None:
        self.port = port
        self.name = name
        self.command_timeout = command_timeout
        self.urcs: deque[Urc] = deque()
        self.last_command = ""
        self._buffer = bytearray()
        self._lines: deque[str] = deque()
        self._echo: set[str] = set()
        self._garbage: list[bytes] = []

    # -- bytes to lines ------------------------------------------------------------------------

    def _fill(self, deadline: float) -> bool:
        """Read what is available (waiting at most until ``deadline``); return whether bytes came."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.port.timeout = min(remaining, 0.05)
        try:
            data = self.port.read(max(1, self.port.in_waiting))
        except Exception as exc:  # pyserial raises SerialException / OSError subclasses
            raise ModemTransportError(
                f"lost the modem on {self.name} during {self.last_command or 'start-up'}: {exc}",
                port=self.name,
                command=self.last_command,
            ) from None
        if not data:
            return False
        self._buffer.extend(data)
        while True:
            match = re.search(rb"[\r\n]", self._buffer)
            if match is None:
                break
            raw = bytes(self._buffer[: match.start()])
            del self._buffer[: match.end()]
            line = self._decode(raw)
            if line:
                self._lines.append(line)
        return True

    def _decode(self, raw: bytes) -> str:
        raw = raw.replace(b"\x1a", b"").strip()
        if not raw:
            return ""
        if any(b < 0x20 or b > 0x7E for b in raw):
            self._garbage.append(raw)
            log.debug("Unreadable bytes from %s: %r", self.name, raw[:40])
            return ""
        return raw.decode("ascii")

    def _prompt_ready(self) -> bool:
        stripped = bytes(self._buffer).lstrip(b"\r\n")
        if stripped.startswith(b">"):
            self._buffer.clear()
            return True
        return False

    def _next_line(self, deadline: float) -> str | None:
        while not self._lines:
            if not self._fill(deadline) and time.monotonic() >= deadline:
                return None
        return self._lines.popleft()

    # -- URCs ------------------------------------------------------------------------------------

    def _is_urc(self, line: str, command_prefix: str | None, dialing: bool) -> bool:
        upper = line.upper()
        if upper in _BARE_URCS or upper.startswith("VOICE CALL:"):
            return True
        if upper in CALL_RESULTS:
            return not dialing
        match = _PREFIX.match(upper)
        if match is None:
            return False
        prefix = match.group(1)
        if prefix in ("+CME", "+CMS"):
            return False
        return prefix != command_prefix

    def _take_urc(self, line: str, deadline: float) -> None:
        pdu = None
        if line.upper().startswith(_URC_WITH_PDU):
            pdu = self._next_line(max(deadline, time.monotonic() + 2.0))
        self.urcs.append(Urc(line, pdu))
        log.debug("URC from %s: %s", self.name, line)

    def poll(self, timeout: float = 0.0) -> None:
        """Read whatever arrived (waiting up to ``timeout``) into the URC queue."""
        deadline = time.monotonic() + timeout
        while True:
            got = self._fill(deadline)
            while self._lines:
                line = self._lines.popleft()
                if line in self._echo:
                    continue
                self._take_urc(line, deadline)
            if not got and time.monotonic() >= deadline:
                return
            if self.urcs and not self._lines and not self._buffer:
                return

    def wait_urc(self, match: Callable[[Urc], bool], timeout: float) -> Urc | None:
        """Return (and remove) the first queued or arriving URC ``match`` accepts, or None on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            for urc in list(self.urcs):
                if match(urc):
                    self.urcs.remove(urc)
                    return urc
            if time.monotonic() >= deadline:
                return None
            self.poll(min(0.1, max(0.0, deadline - time.monotonic())))

    # -- commands ----------------------------------------------------------------------------------

    def _send(self, data: bytes, shown: str) -> None:
        self.last_command = shown
        try:
            self.port.write(data)
            self.port.flush()
        except Exception as exc:
            raise ModemTransportError(
                f"cannot write to the modem on {self.name} ({shown}): {exc}", port=self.name, command=shown
            ) from None

    def command(
        self,
        command: str,
        *,
        timeout: float | None = None,
        shown: str | None = None,
        pdu: str | None = None,
        prompt_timeout: float | None = None,
    ) -> list[str]:
        """Send ``command`` (without ``\\r``), return its information lines once ``OK`` arrives.

        :param command: e.g. ``AT+CPIN?``
        :param timeout: seconds to wait for the final result code (default: command_timeout)
        :param shown: how the command appears in errors and logs (hides a PIN)
        :param pdu: for ``AT+CMGS``: hex sent after the ``> `` prompt, ended by Ctrl-Z
        :param prompt_timeout: seconds to wait for the prompt (default: command_timeout, at most 5)
        :raises ModemTimeout: when no final result code comes in time (names the garbage, if any)
        :raises ModemCommandError: for ``ERROR`` / ``+CMS ERROR`` / ``+CME ERROR``
        """
        shown = shown or command
        timeout = self.command_timeout if timeout is None else timeout
        self.poll(0)
        self._garbage.clear()
        self._echo = {command, command.upper()}
        self._send(command.encode("ascii") + b"\r", shown)
        upper = command.upper()
        match = _PREFIX.match(upper[2:]) or re.match(r"^(\+[A-Z]+)", upper[2:])
        command_prefix = match.group(1) if match else None
        dialing = upper.startswith("ATD")
        if pdu is not None:
            wait = min(5.0, self.command_timeout) if prompt_timeout is None else prompt_timeout
            self._await_prompt(time.monotonic() + wait, shown)
            self._echo |= {pdu, pdu.upper()}
            self._send(pdu.encode("ascii") + b"\x1a", shown)
        deadline = time.monotonic() + timeout
        info: list[str] = []
        while True:
            line = self._next_line(deadline)
            if line is None:
                raise self._timeout(shown, timeout)
            if line in self._echo:
                continue
            if self._is_urc(line, command_prefix, dialing):
                self._take_urc(line, deadline)
                continue
            if line == FINAL_OK:
                return info
            if dialing and line in CALL_RESULTS:
                info.append(line)
                return info
            error = self._error_for(line, shown)
            if error is not None:
                raise error
            info.append(line)

    def _await_prompt(self, deadline: float, shown: str) -> None:
        while True:
            if self._prompt_ready():
                return
            while self._lines:
                line = self._lines.popleft()
                if line in self._echo:
                    continue
                error = self._error_for(line, shown)
                if error is not None:
                    raise error
                self._take_urc(line, deadline)
            if self._prompt_ready():
                return
            if not self._fill(deadline) and time.monotonic() >= deadline:
                self._send(b"\x1b", shown)  # leave PDU input if the prompt came late
                raise self._timeout(shown + " (no '> ' prompt)", max(0.0, deadline - time.monotonic()))

    def _error_for(self, line: str, shown: str) -> ModemError | None:
        upper = line.upper()
        if upper == "ERROR":
            return ModemCommandError(
                f"modem on {self.name} answered ERROR to {shown}", port=self.name, command=shown
            )
        match = re.match(r"^\+(CMS|CME) ERROR:\s*(\d+)", upper)
        if match is None:
            if upper.startswith(("+CMS ERROR", "+CME ERROR")):  # verbose (AT+CMEE=2) form
                return ModemCommandError(
                    f"modem on {self.name} answered {line} to {shown}", port=self.name, command=shown
                )
            return None
        kind, code = match.group(1), int(match.group(2))
        permanent = code in (PERMANENT_CMS if kind == "CMS" else PERMANENT_CME)
        cls = ModemSimError if (kind, code) in {("CME", 10), ("CME", 11), ("CME", 12), ("CME", 16)} else None
        return (cls or ModemCommandError)(
            f"modem on {self.name} answered {describe_error(kind, code)} to {shown}",
            code=code,
            kind=kind,
            permanent=permanent,
            port=self.name,
            command=shown,
        )

    def _timeout(self, shown: str, timeout: float) -> ModemTimeout:
        if self._garbage:
            sample = self._garbage[-1][:32]
            return ModemTimeout(
                f"modem on {self.name} answered garbage to {shown} ({sample!r}); check the baud rate "
                "and that the port is a modem's AT port",
                port=self.name,
                command=shown,
            )
        return ModemTimeout(
            f"modem on {self.name} did not answer {shown} within {timeout:g} s",
            port=self.name,
            command=shown,
        )

    def write_raw(self, data: bytes, shown: str) -> None:
        """Write bytes without waiting for an answer (hang-up from on_kill)."""
        self._send(data, shown)
