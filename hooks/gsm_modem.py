"""Send dunning SMS and place TTS voice reminders through a GSM/4G modem's AT commands.

Counties without an SMSC contract, and every voice reminder, go through modems. The layers:
pyserial is the transport (a device path or any pyserial URL: ``socket://host:port``,
``rfc2217://host:port``), :mod:`hooks.gsm_modem_protocol` the AT dialogue (line reader,
URCs, prompts, error codes), :mod:`include.dunning.pdu` the pure PDU codec.

Connection fields: host = serial port or URL. Extras (all optional, strings accepted, e.g. from
a URI or an environment variable):

- ``baud_rate`` (default 115200), ``sim_pin`` (entered only when the SIM asks; never logged)
- ``smsc_number``: service centre put into every PDU; empty = the one stored on the SIM
- ``vendor``: ``simcom`` (default; TTS by ``AT+CTTS``), ``quectel`` (``AT+QTTS``) or
  ``generic`` (SMS only, no voice)
- ``command_timeout`` (s, default 10), ``sms_timeout`` (s per part, default 60)
- ``validity_minutes`` (default 1440), ``max_parts`` (default 6)
- ``allow_non_bmp`` (bool, default true): send characters outside UCS2 (CJK extension B,
  emoji) as UTF-16 surrogate pairs, never split; false refuses such texts with the reason
- ``lock_dir`` (default the system temp dir), ``lock_timeout`` (s, default 30): one task owns a
  modem at a time through an exclusive lock file per port
- ``connect_attempts`` (default 3), ``clcc_poll_interval`` (s, default 0.5),
  ``reset_timeout`` (s, default 30)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

import serial
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from hooks.extras import ConnectionExtras, as_bool
from hooks.gsm_modem_protocol import (
    AtChannel,
    ModemBusyError,
    ModemCommandError,
    ModemError,
    ModemMessageError,
    ModemSimError,
    ModemTimeout,
    ModemTransportError,
    Urc,
)
from include.dunning.pdu import (
    MessageTooLong,
    PduError,
    SmsDeliver,
    SmsStatusReport,
    UnencodableText,
    decode_pdu,
    encode_submit,
)
from include.dunning.phones import mask
from include.dunning.receipts import DeliveryReceipt
from include.dunning.sms import reference_for

try:
    from airflow.sdk.bases.hook import BaseHook
except ImportError:  # Airflow 2.x
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef]

__all__ = [
    "ANSWERED",
    "BUSY",
    "FAILED",
    "NO_ANSWER",
    "NO_CARRIER",
    "REJECTED",
    "CallOutcome",
    "GsmModemHook",
    "IncomingSms",
    "ModemBusyError",
    "ModemCommandError",
    "ModemError",
    "ModemMessageError",
    "ModemSimError",
    "ModemTimeout",
    "ModemTransportError",
    "StatusReport",
    "report_key",
]

VENDORS = ("simcom", "quectel", "generic")
_TTS = {"simcom": "+CTTS", "quectel": "+QTTS"}

ANSWERED = "answered"
BUSY = "busy"
NO_ANSWER = "no_answer"
NO_CARRIER = "no_carrier"
REJECTED = "rejected"
FAILED = "failed"


def report_key(reference: int, number: str) -> str:
    """Return the id that ties a status report to its part: ``<TP-MR>:<national number>``.

    A modem's message reference is 8 bits and wraps, so the number is part of the key; it is
    written without ``+86`` / ``0086`` so the submit and the report compare equal.
    """
    digits = re.sub(r"\D", "", number)
    for prefix in ("0086", "86"):
        if digits.startswith(prefix) and len(digits) - len(prefix) == 11:
            digits = digits[len(prefix) :]
    return f"{reference}:{digits}"


@dataclass(frozen=True)
class CallOutcome:
    """Say how a voice reminder ended.

    :param outcome: answered, busy, no_answer, no_carrier, rejected or failed
    :param answered_seconds: seconds connected (0 unless answered)
    :param detail: what happened, for the contact ledger
    """

    outcome: str
    answered_seconds: float = 0.0
    detail: str = ""


@dataclass(frozen=True)
class StatusReport:
    """Hold one status report (``+CDS``): the fate of the part that got ``reference``."""

    reference: int
    recipient: str
    status: int
    stat: str
    delivered: bool
    final: bool
    description: str
    discharged: datetime
    key: str | None = None
    part: int | None = None

    @property
    def message_id(self) -> str:
        """Return :func:`report_key` of this report (what to store per part at submit time)."""
        return report_key(self.reference, self.recipient)

    def receipt(self) -> DeliveryReceipt:
        """Return the report as a DeliveryReceipt, so SMPP and modem receipts share one path."""
        return DeliveryReceipt(
            message_id=self.message_id,
            stat=self.stat,
            err=f"{self.status:03d}",
            done_date=self.discharged.replace(tzinfo=None),
        )


@dataclass(frozen=True)
class IncomingSms:
    """Hold a message from a handset (a reply such as 退订), long ones reassembled."""

    sender: str
    text: str
    received: datetime
    indexes: tuple[int, ...] = field(default_factory=tuple)


class GsmModemHook(ConnectionExtras, BaseHook):
    """Own one GSM modem: send PDU-mode SMS, read status reports and replies, place TTS calls.

    Use it as a context manager: entering locks the port, opens it and runs the start-up
    dialogue (ATE0, AT+CMEE=1, AT+CPIN?, AT+CMGF=0, AT+CSMP, AT+CNMI); leaving hangs up and
    closes it.

    :param gsm_modem_conn_id: Airflow connection id of type ``gsm_modem``
    """

    conn_name_attr = "gsm_modem_conn_id"
    default_conn_name = "gsm_modem_default"
    conn_type = "gsm_modem"
    hook_name = "GSM modem"

    def __init__(self, gsm_modem_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.gsm_modem_conn_id = gsm_modem_conn_id
        self._channel: AtChannel | None = None
        self._lock_file: IO[str] | None = None
        self._sent: dict[str, tuple[str, int]] = {}
        self._mo_parts: dict[tuple[str, int, int], dict[int, tuple[SmsDeliver, int]]] = {}
        self._storage_checked = False
        self._in_call = False

    # -- configuration ---------------------------------------------------------------------------

    @property
    def port_name(self) -> str:
        """Return the serial device path or pyserial URL (the connection's host)."""
        host = (self.connection.host or "").strip()
        if not host:
            raise ModemTransportError(
                f"connection {self.gsm_modem_conn_id!r} has no serial port (host)", permanent=True
            )
        return host

    @property
    def baud_rate(self) -> int:
        """Return the serial speed (115200 when unset)."""
        return int(self._extra("baud_rate", 115200))

    @property
    def sim_pin(self) -> str:
        """Return the SIM PIN (empty when unset)."""
        return str(self._extra("sim_pin", "") or self.connection.password or "")

    @property
    def smsc_number(self) -> str | None:
        """Return the SMSC number put into PDUs, or None to use the SIM's."""
        value = str(self._extra("smsc_number", "")).strip()
        return value or None

    @property
    def vendor(self) -> str:
        """Return simcom, quectel or generic."""
        vendor = str(self._extra("vendor", "simcom")).strip().lower()
        if vendor not in VENDORS:
            raise ValueError(f"vendor must be one of {', '.join(VENDORS)}, not {vendor!r}")
        return vendor

    @property
    def command_timeout(self) -> float:
        """Return seconds to wait for a command's final result code."""
        return float(self._extra("command_timeout", 10))

    @property
    def sms_timeout(self) -> float:
        """Return seconds to wait for ``+CMGS:`` after a PDU."""
        return float(self._extra("sms_timeout", 60))

    @property
    def validity_minutes(self) -> int:
        """Return the SMS validity period in minutes."""
        return int(self._extra("validity_minutes", 1440))

    @property
    def max_parts(self) -> int:
        """Return the most parts one message may take."""
        return int(self._extra("max_parts", 6))

    @property
    def allow_non_bmp(self) -> bool:
        """Return whether characters outside UCS2 go as surrogate pairs (else they are refused)."""
        return as_bool(self._extra("allow_non_bmp"), True)

    @property
    def lock_timeout(self) -> float:
        """Return seconds to wait for another task to release the modem."""
        return float(self._extra("lock_timeout", 30))

    @property
    def lock_dir(self) -> str:
        """Return the directory of the per-port lock files."""
        return str(self._extra("lock_dir", tempfile.gettempdir()))

    @property
    def connect_attempts(self) -> int:
        """Return how many times opening the port and the start-up dialogue are tried."""
        return max(1, int(self._extra("connect_attempts", 3)))

    @property
    def clcc_poll_interval(self) -> float:
        """Return seconds between AT+CLCC polls during a call."""
        return float(self._extra("clcc_poll_interval", 0.5))

    @property
    def reset_timeout(self) -> float:
        """Return seconds to wait for the modem to come back after AT+CFUN=1,1."""
        return float(self._extra("reset_timeout", 30))

    # -- open / lock / close -----------------------------------------------------------------------

    def get_conn(self) -> AtChannel:
        """Return the AT channel, locking and opening the port and initialising the modem if needed."""
        if self._channel is None:
            self._acquire_lock()
            retrying = Retrying(
                stop=stop_after_attempt(self.connect_attempts),
                wait=wait_random_exponential(multiplier=0.5, max=5),
                retry=retry_if_exception(lambda e: isinstance(e, ModemTransportError) and not e.permanent),
                before_sleep=self._log_retry,
                reraise=True,
            )
            try:
                for attempt in retrying:
                    with attempt:
                        self._channel = self._open()
            except BaseException:
                self._release_lock()
                raise
        return self._channel

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        self.log.warning(
            "Modem on %s: attempt %d failed (%s); retrying", self.port_name, state.attempt_number, exc
        )

    def _acquire_lock(self) -> None:
        if self._lock_file is not None:
            return
        digest = hashlib.sha1(self.port_name.encode()).hexdigest()[:16]
        path = os.path.join(self.lock_dir, f"gsm-modem-{digest}.lock")
        handle = open(path, "a+", encoding="utf-8")
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.close()
                    raise ModemBusyError(
                        f"modem on {self.port_name} is in use by another task (lock {path} held "
                        f"for more than {self.lock_timeout:g} s)",
                        port=self.port_name,
                    ) from None
                time.sleep(0.1)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock_file = handle

    def _release_lock(self) -> None:
        handle, self._lock_file = self._lock_file, None
        if handle is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    def _open(self) -> AtChannel:
        name = self.port_name
        kwargs: dict[str, Any] = {"baudrate": self.baud_rate, "timeout": 0.05, "write_timeout": 5}
        if "://" not in name:
            kwargs["exclusive"] = True
        try:
            port = serial.serial_for_url(name, **kwargs)
        except (serial.SerialException, ValueError, OSError) as exc:
            raise ModemTransportError(
                f"cannot open the modem port {name}: {exc}", port=name, command="(open)"
            ) from None
        channel = AtChannel(port, name, command_timeout=self.command_timeout)
        try:
            self._initialise(channel)
        except BaseException:
            with contextlib.suppress(Exception):
                port.close()
            raise
        self.log.info("Modem on %s ready (%s)", name, self.vendor)
        return channel

    def _initialise(self, channel: AtChannel) -> None:
        """Run the start-up dialogue; unlock the SIM with the PIN when it asks (never retried)."""
        with contextlib.suppress(Exception):
            channel.port.reset_input_buffer()
        channel.write_raw(b"\x1b\r", "ESC")  # leave a PDU prompt a killed task may have left open
        time.sleep(0.05)
        channel.poll(0.1)
        channel.urcs.clear()
        for attempt in range(3):
            try:
                channel.command("AT", timeout=min(2.0, self.command_timeout))
                break
            except ModemTimeout:
                if attempt == 2:
                    raise
        channel.command("ATE0")
        channel.command("AT+CMEE=1")
        self._unlock_sim(channel)
        channel.command("AT+CMGF=0")
        try:
            channel.command("AT+CSMP=49,167,0,0")  # SMS-SUBMIT with status report, 1 day
        except ModemCommandError as exc:
            self.log.debug("AT+CSMP refused on %s (%s); PDU mode sets the flags itself", channel.name, exc)
        channel.command("AT+CNMI=2,1,0,1,0")  # +CMTI for new messages, +CDS for status reports

    def _unlock_sim(self, channel: AtChannel) -> None:
        state = self._sim_state(channel)
        if state == "READY":
            return
        if state == "SIM PIN":
            if not self.sim_pin:
                raise ModemSimError(
                    f"SIM in the modem on {channel.name} asks for its PIN and the connection has no sim_pin",
                    permanent=True,
                    port=channel.name,
                    command="AT+CPIN?",
                )
            try:
                channel.command(f'AT+CPIN="{self.sim_pin}"', shown='AT+CPIN="****"')
            except (ModemCommandError, ModemSimError) as exc:
                raise ModemSimError(
                    f"SIM in the modem on {channel.name} refused the PIN ({exc}); not tried again, "
                    "so the SIM does not lock itself",
                    code=exc.code,
                    kind=exc.kind,
                    permanent=True,
                    port=channel.name,
                    command='AT+CPIN="****"',
                ) from None
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if self._sim_state(channel) == "READY":
                    return
                time.sleep(0.2)
            state = self._sim_state(channel)
        if state == "READY":
            return
        if "PUK" in state:
            detail = "a PUK (the PIN was entered wrongly too often); unlock it in a phone"
        else:
            detail = f"{state!r}"
        raise ModemSimError(
            f"SIM in the modem on {channel.name} asks for {detail}",
            permanent=True,
            port=channel.name,
            command="AT+CPIN?",
        )

    @staticmethod
    def _sim_state(channel: AtChannel) -> str:
        for line in channel.command("AT+CPIN?"):
            if line.upper().startswith("+CPIN:"):
                return line.split(":", 1)[1].strip().upper()
        raise ModemTransportError(
            f"modem on {channel.name} gave no +CPIN line to AT+CPIN?", port=channel.name, command="AT+CPIN?"
        )

    def __enter__(self) -> GsmModemHook:
        self.get_conn()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Hang up any call, close the port and release the lock; problems are logged as warnings."""
        channel, self._channel = self._channel, None
        if channel is not None:
            if self._in_call:
                with contextlib.suppress(ModemError):
                    channel.command("ATH", timeout=3)
                self._in_call = False
            try:
                channel.port.close()
            except Exception as exc:
                self.log.warning("Closing the modem port %s failed: %s", channel.name, exc)
        self._release_lock()

    def on_kill(self) -> None:
        """Hang up and close the port when the task is killed (without waiting for answers)."""
        channel = self._channel
        if channel is not None:
            with contextlib.suppress(Exception):
                channel.write_raw(b"\x1b\rATH\r", "ATH")
        self._in_call = False
        self.close()

    def test_connection(self) -> tuple[bool, str]:
        """Open the port, run the start-up dialogue and close; return (success, message) for the UI."""
        try:
            channel = self.get_conn()
            ident = " ".join(channel.command("ATI")) or self.vendor
            signal = " ".join(channel.command("AT+CSQ"))
            self.close()
        except Exception as exc:
            self.close()
            return False, str(exc)
        return True, f"Modem on {self.port_name} ready: {ident}; {signal}"

    def reset(self) -> None:
        """Restart the modem (``AT+CFUN=1,1``), wait for it and run the start-up dialogue again."""
        channel = self.get_conn()
        with contextlib.suppress(ModemTimeout):
            channel.command("AT+CFUN=1,1", timeout=self.command_timeout)
        ready = channel.wait_urc(
            lambda u: u.line.upper() in ("RDY", "SMS DONE", "SMS READY"), self.reset_timeout
        )
        if ready is None:
            self.log.warning(
                "Modem on %s sent no RDY after AT+CFUN=1,1; re-initialising anyway", channel.name
            )
        time.sleep(0.1)
        try:
            self._initialise(channel)
        except ModemTransportError:
            # a USB modem re-enumerates: reopen the port
            self._channel = None
            with contextlib.suppress(Exception):
                channel.port.close()
            self.get_conn()
        self._storage_checked = False

    # -- SMS ----------------------------------------------------------------------------------------

    def send_sms(self, destination: str, text: str, *, key: str, status_report: bool = True) -> list[int]:
        """Send ``text`` to ``destination`` in PDU mode; return the message reference (TP-MR) of each part.

        Store ``report_key(reference, destination)`` per part: status reports from
        :meth:`read_events` carry the same key. The concatenation reference is derived from
        ``key``, so a resend of the same row is reassembled the same way.

        :param destination: national (13812348000) or international (+8613812348000) number
        :param text: the whole message, signature (【...】) included
        :param key: the contact ledger's idempotency key
        :param status_report: ask the network for a status report per part
        :raises ModemMessageError: (permanent) text too long or unencodable, or a bad number
        :raises ModemCommandError: ``+CMS ERROR`` / ``+CME ERROR``; ``permanent`` and ``code``
            say whether a resend can help; ``references`` lists parts already sent
        :raises ModemTransportError: the modem stopped answering; ``references`` as above
        """
        try:
            pdus = encode_submit(
                destination,
                text,
                concat_reference=reference_for(key),
                status_report=status_report,
                validity_minutes=self.validity_minutes or None,
                smsc=self.smsc_number,
                max_parts=self.max_parts,
                allow_surrogates=self.allow_non_bmp,
            )
        except (UnencodableText, MessageTooLong, ValueError) as exc:
            raise ModemMessageError(
                f"message {key} to {mask(destination)} not sent: {exc}", permanent=True, port=self.port_name
            ) from None
        channel = self.get_conn()
        references: list[int] = []
        for pdu in pdus:
            command = f"AT+CMGS={pdu.tpdu_length}"
            try:
                lines = channel.command(command, pdu=pdu.hex, timeout=self.sms_timeout)
            except ModemError as exc:
                exc.references = list(references)
                self.log.info(
                    "Modem on %s refused part %d/%d to %s: %s",
                    channel.name,
                    pdu.part,
                    pdu.total,
                    mask(destination),
                    exc,
                )
                raise
            reference = self._cmgs_reference(channel, lines, command)
            references.append(reference)
            self._sent[report_key(reference, destination)] = (key, pdu.part)
        self.log.info(
            "Sent %d part(s) to %s on %s, references %s",
            len(pdus),
            mask(destination),
            channel.name,
            references,
        )
        return references

    @staticmethod
    def _cmgs_reference(channel: AtChannel, lines: list[str], command: str) -> int:
        for line in lines:
            if line.upper().startswith("+CMGS:"):
                with contextlib.suppress(ValueError):
                    return int(line.split(":", 1)[1].split(",")[0].strip())
        raise ModemTransportError(
            f"modem on {channel.name} answered OK without a +CMGS reference to {command}",
            port=channel.name,
            command=command,
        )

    def read_events(self, timeout: float = 0.0) -> list[StatusReport | IncomingSms]:
        """Return status reports and incoming messages, waiting up to ``timeout`` s for the first.

        Messages are read from the SIM (``AT+CMGR``) and deleted (``AT+CMGD``) once decoded;
        the first call also picks up messages stored while nobody listened (``AT+CMGL=4``).
        Parts of a long reply are held until all have arrived.
        """
        channel = self.get_conn()
        events: list[StatusReport | IncomingSms] = []
        if not self._storage_checked:
            self._storage_checked = True
            events += self._read_stored(channel)
        deadline = time.monotonic() + timeout
        while True:
            channel.poll(0)
            while channel.urcs:
                events += self._handle_urc(channel, channel.urcs.popleft())
            if events or time.monotonic() >= deadline:
                return events
            channel.poll(min(0.2, max(0.0, deadline - time.monotonic())))

    def _read_stored(self, channel: AtChannel) -> list[StatusReport | IncomingSms]:
        lines = channel.command("AT+CMGL=4")
        events: list[StatusReport | IncomingSms] = []
        for header, pdu_hex in zip(lines[::2], lines[1::2], strict=False):
            match = re.match(r"\+CMGL:\s*(\d+)", header)
            if match is None:
                continue
            index = int(match.group(1))
            events += self._decoded(channel, pdu_hex, index)
            channel.command(f"AT+CMGD={index}")
        return events

    def _handle_urc(self, channel: AtChannel, urc: Urc) -> list[StatusReport | IncomingSms]:
        upper = urc.line.upper()
        if upper.startswith(("+CDS:", "+CMT:")) and urc.pdu:
            return self._decoded(channel, urc.pdu, None)
        match = re.match(r'\+(CMTI|CDSI):\s*"?\w*"?\s*,\s*(\d+)', upper)
        if match is None:
            self.log.debug("URC ignored on %s: %s", channel.name, urc.line)
            return []
        index = int(match.group(2))
        try:
            lines = channel.command(f"AT+CMGR={index}")
        except ModemCommandError as exc:
            if exc.code != 321:
                raise
            return []  # already read (and deleted) through AT+CMGL
        pdu_hex = next((line for line in lines if not line.startswith("+")), None)
        events = self._decoded(channel, pdu_hex, index) if pdu_hex else []
        channel.command(f"AT+CMGD={index}")
        return events

    def _decoded(
        self, channel: AtChannel, pdu_hex: str, index: int | None
    ) -> list[StatusReport | IncomingSms]:
        try:
            decoded = decode_pdu(pdu_hex)
        except PduError as exc:
            self.log.warning("Unreadable PDU from the modem on %s ignored: %s", channel.name, exc)
            return []
        if isinstance(decoded, SmsStatusReport):
            sent = self._sent.get(report_key(decoded.reference, decoded.recipient))
            return [
                StatusReport(
                    reference=decoded.reference,
                    recipient=decoded.recipient,
                    status=decoded.status,
                    stat=decoded.stat,
                    delivered=decoded.delivered,
                    final=decoded.final,
                    description=decoded.description,
                    discharged=decoded.discharged,
                    key=sent[0] if sent else None,
                    part=sent[1] if sent else None,
                )
            ]
        if isinstance(decoded, SmsDeliver):
            if decoded.total <= 1:
                return [
                    IncomingSms(decoded.sender, decoded.text, decoded.timestamp, (index,) if index else ())
                ]
            group = (decoded.sender, decoded.concat_reference or 0, decoded.total)
            parts = self._mo_parts.setdefault(group, {})
            parts[decoded.part] = (decoded, index or 0)
            if len(parts) < decoded.total:
                return []
            del self._mo_parts[group]
            ordered = [parts[i] for i in sorted(parts)]
            return [
                IncomingSms(
                    decoded.sender,
                    "".join(p.text for p, _ in ordered),
                    ordered[0][0].timestamp,
                    tuple(i for _, i in ordered if i),
                )
            ]
        return []

    # -- voice ----------------------------------------------------------------------------------------

    def call(self, destination: str, text: str, *, repeat: int = 2, ring_timeout: float = 30) -> CallOutcome:
        """Call ``destination``; when answered, speak ``text`` ``repeat`` times by the modem's TTS, hang up.

        :param destination: the number to dial
        :param text: what to say (Basic Multilingual Plane characters only: TTS engines read UCS2)
        :param repeat: how many times the text is spoken
        :param ring_timeout: seconds to wait for an answer before hanging up (outcome no_answer)
        :raises ModemMessageError: (permanent) no TTS on this vendor, empty text, characters
            outside UCS2, or a number that cannot be dialled
        :raises ModemTransportError: the modem stopped answering (after trying to hang up)
        """
        tts = _TTS.get(self.vendor)
        if tts is None:
            raise ModemMessageError(
                f"vendor profile {self.vendor!r} of {self.port_name} has no text-to-speech; use simcom or quectel",
                permanent=True,
                port=self.port_name,
            )
        number = destination.strip().replace(" ", "").replace("-", "")
        if not re.fullmatch(r"\+?[0-9]{3,20}", number):
            raise ModemMessageError(f"{mask(destination)} is not a number to dial", permanent=True)
        if not text.strip():
            raise ModemMessageError("nothing to say: the call text is empty", permanent=True)
        outside = next(((i, ch) for i, ch in enumerate(text) if ord(ch) > 0xFFFF), None)
        if outside is not None:
            raise ModemMessageError(
                f"call text character {outside[0]} (U+{ord(outside[1]):05X}) is outside UCS2; "
                "the modem's TTS cannot read it",
                permanent=True,
            )
        channel = self.get_conn()
        try:
            channel.command("AT+CLCC=1")  # call state changes as +CLCC URCs, besides polling
        except ModemCommandError as exc:
            self.log.debug("AT+CLCC=1 refused on %s (%s); polling only", channel.name, exc)
        channel.urcs = type(channel.urcs)(u for u in channel.urcs if not self._is_call_urc(u))
        dial = f"ATD{number};"
        try:
            lines = channel.command(dial, timeout=self.command_timeout)
        except ModemCommandError as exc:
            return CallOutcome(FAILED, 0.0, str(exc))
        self._in_call = True
        try:
            if lines and lines[-1] in ("BUSY", "NO CARRIER", "NO ANSWER", "NO DIALTONE"):
                return self._ended(lines[-1], alerted=False)
            outcome = self._await_answer(channel, ring_timeout)
            if outcome is not None:
                return outcome
            answered_at = time.monotonic()
            self.log.info("Call to %s answered on %s", mask(destination), channel.name)
            hex_text = text.encode("utf-16-be").hex().upper()
            spoken = 0
            detail = ""
            for _ in range(max(1, repeat)):
                channel.command(f'AT{tts}=1,"{hex_text}"')
                done = channel.wait_urc(
                    lambda u: u.line.upper().startswith(f"{tts}:") or u.line.upper() == "NO CARRIER",
                    timeout=10 + 0.5 * len(text),
                )
                if done is None:
                    detail = "TTS did not finish in time"
                    break
                if done.line.upper() == "NO CARRIER":
                    detail = f"callee hung up during playback {spoken + 1}"
                    self._in_call = False
                    break
                spoken += 1
            seconds = time.monotonic() - answered_at
            if self._in_call:
                channel.command("ATH")
                self._in_call = False
            return CallOutcome(ANSWERED, round(seconds, 2), detail or f"spoken {spoken} time(s)")
        finally:
            if self._in_call:
                with contextlib.suppress(ModemError):
                    channel.command("ATH", timeout=3)
                self._in_call = False

    @staticmethod
    def _is_call_urc(urc: Urc) -> bool:
        line = urc.line.upper()
        return line in ("BUSY", "NO CARRIER", "NO ANSWER", "NO DIALTONE") or line.startswith(
            ("+CLCC:", "+CTTS:", "+QTTS:", "VOICE CALL:")
        )

    @staticmethod
    def _ended(result: str, alerted: bool) -> CallOutcome:
        if result == "BUSY":
            return CallOutcome(BUSY, 0.0, "callee busy")
        if result == "NO ANSWER":
            return CallOutcome(NO_ANSWER, 0.0, "network reported no answer")
        if result == "NO DIALTONE":
            return CallOutcome(NO_CARRIER, 0.0, "no dial tone (no network)")
        if alerted:
            return CallOutcome(REJECTED, 0.0, "callee rejected the call while it rang")
        return CallOutcome(NO_CARRIER, 0.0, "no carrier (number unreachable or switched off)")

    def _await_answer(self, channel: AtChannel, ring_timeout: float) -> CallOutcome | None:
        """Follow the call until it is answered (return None) or ends (return the outcome)."""
        deadline = time.monotonic() + ring_timeout
        alerted = False
        while time.monotonic() < deadline:
            for urc in list(channel.urcs):
                line = urc.line.upper()
                state = re.match(r"\+CLCC:\s*\d+,\s*0,\s*(\d+)", line)
                if state is not None:
                    channel.urcs.remove(urc)
                    alerted = alerted or state.group(1) == "3"
                    if state.group(1) == "0":
                        return None
                    continue
                if line in ("BUSY", "NO CARRIER", "NO ANSWER", "NO DIALTONE"):
                    channel.urcs.remove(urc)
                    self._in_call = False
                    return self._ended(line, alerted)
            states = [
                int(m.group(1))
                for line in channel.command("AT+CLCC")
                if (m := re.match(r"\+CLCC:\s*\d+,\s*0,\s*(\d+)", line))
            ]
            if 0 in states:
                return None
            if 3 in states:
                alerted = True
            if not states:
                channel.poll(0.2)  # the call is gone: its final URC is on its way
                continue
            channel.poll(self.clcc_poll_interval)
        channel.command("ATH")
        self._in_call = False
        return CallOutcome(NO_ANSWER, 0.0, f"not answered within {ring_timeout:g} s")
