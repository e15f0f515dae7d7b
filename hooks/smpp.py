"""Send SMS and collect delivery receipts over SMPP 3.4 (smpplib transport, own window).

smpplib supplies the socket and the PDU codec; this hook adds what it lacks: a window of
outstanding submit_sm correlated by sequence number, throttling back-off, concatenation that
never splits an escape or surrogate pair (:mod:`include.dunning.sms`), deterministic
concatenation references, receipt parsing, bounded reconnect and keepalive.

Connection fields: host, port (default 2775), login = system_id, password (SMPP 3.4 allows at
most 8 characters). Extras (all optional, strings accepted, e.g. from a URI or an environment
variable):

- ``system_type`` (str), ``bind_mode``: ``transceiver`` (default) | ``transmitter`` | ``receiver``
- ``source_addr``: sender code, e.g. ``12366`` or ``95598``
- ``source_addr_ton`` / ``source_addr_npi``: default 0 / 1 for a numeric code (what Chinese
  SMSCs expect for service codes such as 12366), 5 / 0 for an alphanumeric sender
- ``dest_addr_ton`` / ``dest_addr_npi``: default 0 / 1 (national numbers such as 13812348000);
  a destination written with a leading ``+`` is sent as TON 1 (international) without the ``+``
- ``window`` (default 10): submit_sm outstanding at once
- ``rate_limit`` (messages/s, default 0 = none)
- ``enquire_link_interval`` (s, default 30), ``registered_delivery`` (bool, default true)
- ``validity_minutes`` (default 1440; 0 = the SMSC's default), ``max_parts`` (default 6)
- ``connect_timeout`` (s, default 10), ``connect_attempts`` (default 3),
  ``response_timeout`` (s, default 30: no submit_sm_resp for this long = connection lost)
- ``receipt_ids_decimal`` (bool, default false): the SMSC writes receipt-text ids in decimal
  while submit_sm_resp uses hex (Kannel's msg-id-type 0x01); the receipted_message_id TLV is
  always read as given
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import select
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import smpplib.client
import smpplib.consts
import smpplib.exceptions
import smpplib.smpp
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from hooks.extras import ConnectionExtras, as_bool
from include.dunning.phones import mask
from include.dunning.receipts import (
    DeliveryReceipt,
    merge_receipt_tlvs,
    normalize_message_id,
    parse_receipt_text,
)
from include.dunning.sms import (
    MessageTooLong,
    concat_udh,
    decode_payload,
    parse_udh,
    reference_for,
    split_text,
)

try:
    from airflow.sdk.bases.hook import BaseHook
except ImportError:  # Airflow 2.x
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef]

log = logging.getLogger(__name__)

DEFAULT_PORT = 2775
BIND_MODES = ("transceiver", "transmitter", "receiver")

ESME_ROK = 0x00
ESME_RINVMSGLEN = 0x01
ESME_RMSGQFUL = 0x14
ESME_RTHROTTLED = 0x58
# Resend the same PDU later: the SMSC is busy, the message is fine.
RETRY_LATER_STATUSES = frozenset({ESME_RTHROTTLED, ESME_RMSGQFUL})
# The message itself is wrong: sending it again cannot succeed.
PERMANENT_STATUSES = frozenset(
    {
        0x01,  # RINVMSGLEN
        0x0A,  # RINVSRCADR
        0x0B,  # RINVDSTADR
        0x15,  # RINVSERTYP
        0x33,  # RINVNUMDESTS
        0x43,  # RINVESMCLASS
        0x48,  # RINVSRCTON
        0x49,  # RINVSRCNPI
        0x50,  # RINVDSTTON
        0x51,  # RINVDSTNPI
        0x53,  # RINVSYSTYP
        0x61,  # RINVSCHED
        0x62,  # RINVEXPIRY
        0xC0,  # RINVOPTPARSTREAM
        0xC1,  # ROPTPARNOTALLWD
        0xC2,  # RINVPARLEN
        0xC3,  # RMISSINGOPTPARAM
        0xC4,  # RINVOPTPARAMVAL
    }
)
# Bind refusals that no retry can fix.
ESME_RINVPASWD = 0x0E
ESME_RINVSYSID = 0x0F

MAX_THROTTLE_RETRIES = 8
SUBMIT_SM = 0x00000004
SUBMIT_SM_RESP = 0x80000004
GENERIC_NACK = 0x80000000
_HEADER = struct.Struct(">LLLL")
# Throttle response: the first pause after a 0x58, doubled per further episode, capped.
THROTTLE_PAUSE = 0.02
THROTTLE_PAUSE_MAX = 2.0
# After a throttle the send rate is cut to this share of the rate that was throttled, then
# grows by SPEEDUP per accepted submit_sm until the SMSC throttles again (AIMD).
THROTTLE_DECREASE = 0.5
THROTTLE_SPEEDUP = 1.003
# Responses handled between two writes of new submit_sm.
SEND_GROUP = 16
# Seconds between two asks of submit_batch's admit() while it holds the next message back.
ADMIT_POLL = 0.001
_STATUS_NAMES = {
    value: name.removeprefix("SMPP_")
    for name, value in vars(smpplib.consts).items()
    if name.startswith("SMPP_ESME_") and isinstance(value, int)
}


def status_name(status: int) -> str:
    """Return ``0x0E ESME_RINVPASWD (Invalid Password)`` style text for a command_status."""
    name = _STATUS_NAMES.get(status, "vendor-specific")
    description = smpplib.consts.DESCRIPTIONS.get(status)
    return f"0x{status:02X} {name}" + (f" ({description})" if description else "")


class SmppError(Exception):
    """Raised for any SMPP failure; carries the SMPP command_status when there is one."""

    def __init__(self, message: str, command_status: int | None = None, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.command_status = command_status
        self.permanent = permanent


class SmppBindError(SmppError):
    """Raised when the SMSC refuses the bind (wrong password, unknown system_id, ...); not retried."""


class SmppTransportError(SmppError):
    """Raised when the connection drops or the SMSC stops answering.

    ``results`` holds the SubmitResult of every message of the batch whose parts all had a
    response before the failure; the rest of the batch is uncertain.
    """

    def __init__(self, message: str, *, results: list[SubmitResult] | None = None) -> None:
        super().__init__(message)
        self.results = results or []


@dataclass(frozen=True)
class OutboundSms:
    """Describe one SMS to send; ``key`` is the contact ledger's idempotency key."""

    key: str
    destination: str
    text: str
    source: str | None = None


@dataclass
class SubmitResult:
    """Hold what the SMSC answered for one OutboundSms (all its parts)."""

    key: str
    message_ids: list[str]
    command_status: int
    error: str | None
    permanent: bool


@dataclass
class _Part:
    index: int
    seq: int
    total: int
    pdu_args: dict[str, Any]
    attempts: int = 0
    body: bytes = b""


@dataclass
class _Batch:
    messages: Sequence[OutboundSms]
    results: list[SubmitResult]
    ids: dict[int, list[str | None]] = field(default_factory=dict)
    failed: set[int] = field(default_factory=set)
    # Parts of each planned message not settled yet (answered, refused or skipped); at 0 the
    # message's result is final and goes to on_result.
    unsettled: dict[int, int] = field(default_factory=dict)
    on_result: Callable[[SubmitResult], None] | None = None


def _cstring(value: str) -> bytes:
    return value.encode("ascii", errors="replace") + b"\x00"


def submit_sm_body(args: dict[str, Any]) -> bytes:
    """Return the body of a submit_sm PDU (no header) for the hook's part arguments.

    The hook encodes the one PDU it sends by the thousand itself: smpplib's generic codec
    costs more CPU than everything else in a batch. The bytes are what smpplib generates.
    """
    return b"".join(
        (
            b"\x00",  # service_type
            bytes((args["source_addr_ton"], args["source_addr_npi"])),
            _cstring(args["source_addr"]),
            bytes((args["dest_addr_ton"], args["dest_addr_npi"])),
            _cstring(args["destination_addr"]),
            bytes((args["esm_class"], 0, 0)),  # esm_class, protocol_id, priority_flag
            b"\x00",  # schedule_delivery_time
            _cstring(args["validity_period"]),
            bytes((args["registered_delivery"], 0, args["data_coding"], 0, len(args["short_message"]))),
            args["short_message"],
        )
    )


@dataclass(slots=True)
class _Resp:
    """A submit_sm_resp or generic_nack decoded without smpplib (the hot path)."""

    command: str
    sequence: int
    status: int
    message_id: bytes | None = None


class _NoDelayClient(smpplib.client.Client):
    """smpplib client whose socket sends small PDUs at once (TCP_NODELAY)."""

    def _create_socket(self) -> socket.socket:
        sock = super()._create_socket()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


class SmppHook(ConnectionExtras, BaseHook):
    """Bind to an SMSC over SMPP 3.4, submit SMS in a window and collect delivery receipts.

    Use it as a context manager: entering connects and binds, leaving unbinds and closes.

    :param smpp_conn_id: Airflow connection id of type ``smpp``
    :param bind_mode: overrides the connection's ``bind_mode`` extra
    """

    conn_name_attr = "smpp_conn_id"
    default_conn_name = "smpp_default"
    conn_type = "smpp"
    hook_name = "SMPP"

    def __init__(self, smpp_conn_id: str = default_conn_name, *, bind_mode: str | None = None) -> None:
        super().__init__()
        self.smpp_conn_id = smpp_conn_id
        self._bind_mode_override = bind_mode
        self._client: smpplib.client.Client | None = None
        self._bound_mode: str | None = None
        self._inbox: deque[Any] = deque()
        self._last_sent = 0.0
        self._rxbuf = bytearray()
        # Throttle state, kept across batches of one bind (see _throttled / _accepted).
        self._pace = 0.0  # seconds between submit_sm imposed by throttling; 0 = none
        self._hold_until = 0.0
        self._throttle_streak = 0
        self._send_times: deque[float] = deque(maxlen=256)

    # -- configuration -----------------------------------------------------------------------

    @property
    def host(self) -> str:
        """Return the SMSC host name."""
        return self.connection.host or "127.0.0.1"

    @property
    def port(self) -> int:
        """Return the SMSC TCP port (2775 when unset)."""
        return int(self.connection.port or DEFAULT_PORT)

    @property
    def address(self) -> str:
        """Return ``host:port`` for messages."""
        return f"{self.host}:{self.port}"

    @property
    def system_id(self) -> str:
        """Return the bind system_id (the connection's login)."""
        return self.connection.login or ""

    @property
    def system_type(self) -> str:
        """Return the bind system_type extra."""
        return str(self._extra("system_type", ""))

    @property
    def bind_mode(self) -> str:
        """Return transceiver, transmitter or receiver."""
        mode = str(self._bind_mode_override or self._extra("bind_mode", "transceiver")).strip().lower()
        if mode not in BIND_MODES:
            raise ValueError(f"bind_mode must be one of {', '.join(BIND_MODES)}, not {mode!r}")
        return mode

    @property
    def source_addr(self) -> str:
        """Return the default sender code."""
        return str(self._extra("source_addr", ""))

    def _source_ton_npi(self, source: str) -> tuple[int, int]:
        numeric = source.isdigit() or not source
        ton = self._extra("source_addr_ton", 0 if numeric else 5)
        npi = self._extra("source_addr_npi", 1 if numeric else 0)
        return int(ton), int(npi)

    @property
    def window(self) -> int:
        """Return how many submit_sm may wait for a response at once."""
        return max(1, int(self._extra("window", 10)))

    @property
    def rate_limit(self) -> float:
        """Return the submit_sm rate cap per second (0 = none)."""
        return max(0.0, float(self._extra("rate_limit", 0)))

    @property
    def enquire_link_interval(self) -> float:
        """Return seconds of silence after which an enquire_link is sent."""
        return float(self._extra("enquire_link_interval", 30))

    @property
    def registered_delivery(self) -> bool:
        """Return whether delivery receipts are requested."""
        return as_bool(self._extra("registered_delivery"), True)

    @property
    def validity_minutes(self) -> int:
        """Return the validity period in minutes (0 = SMSC default)."""
        return int(self._extra("validity_minutes", 1440))

    @property
    def max_parts(self) -> int:
        """Return the most SMS parts one message may take."""
        return int(self._extra("max_parts", 6))

    @property
    def connect_timeout(self) -> float:
        """Return seconds allowed for connecting and for reading one PDU."""
        return float(self._extra("connect_timeout", 10))

    @property
    def connect_attempts(self) -> int:
        """Return how many times connecting is tried before giving up."""
        return max(1, int(self._extra("connect_attempts", 3)))

    @property
    def response_timeout(self) -> float:
        """Return seconds without any submit_sm_resp after which the connection counts as lost."""
        return float(self._extra("response_timeout", 30))

    @property
    def receipt_ids_decimal(self) -> bool:
        """Return whether receipt-text ids are decimal forms of hex submit_sm_resp ids."""
        return as_bool(self._extra("receipt_ids_decimal"), False)

    def validity_period(self) -> str:
        """Return the relative validity period (YYMMDDhhmmss000R) for validity_minutes."""
        minutes = self.validity_minutes
        if minutes <= 0:
            return ""
        days, rest = divmod(minutes, 1440)
        hours, mins = divmod(rest, 60)
        return f"0000{min(days, 99):02d}{hours:02d}{mins:02d}00000R"

    # -- connect / bind / close ----------------------------------------------------------------

    def get_conn(self) -> smpplib.client.Client:
        """Return the bound smpplib client, connecting and binding first if needed."""
        if self._client is None:
            retrying = Retrying(
                stop=stop_after_attempt(self.connect_attempts),
                wait=wait_random_exponential(multiplier=0.5, max=5),
                retry=retry_if_exception_type(SmppTransportError),
                before_sleep=self._log_retry,
                reraise=True,
            )
            for attempt in retrying:
                with attempt:
                    self._client = self._connect_and_bind()
        return self._client

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        self.log.warning(
            "SMPP connect attempt %d to %s failed (%s); retrying", state.attempt_number, self.address, exc
        )

    def _connect_and_bind(self) -> smpplib.client.Client:
        mode = self.bind_mode
        password = self.connection.password or ""
        if len(password) > 8:
            self.log.warning("SMPP 3.4 passwords have at most 8 characters; the SMSC will see only 8")
        client = _NoDelayClient(
            self.host,
            self.port,
            timeout=self.connect_timeout,
            logger_name=f"{__name__}.smpplib",
            allow_unknown_opt_params=True,
        )
        client.logger.setLevel(max(client.logger.getEffectiveLevel(), logging.INFO))  # PDU dumps hold numbers
        try:
            client.connect()
        except (smpplib.exceptions.ConnectionError, OSError) as exc:
            self._discard(client)
            raise SmppTransportError(
                f"cannot connect to SMSC at {self.address}: {exc or 'refused'}"
            ) from None
        bind = getattr(client, f"bind_{mode}")
        try:
            bind(
                system_id=self.system_id,
                password=password,
                system_type=self.system_type,
                addr_ton=0,
                addr_npi=0,
                address_range="",
            )
        except smpplib.exceptions.PDUError as exc:
            self._discard(client)
            status = exc.args[1] if len(exc.args) > 1 else None
            detail = status_name(status) if status is not None else "malformed response"
            raise SmppBindError(
                f"SMSC at {self.address} refused bind_{mode} for system_id {self.system_id!r}: {detail}",
                status,
                permanent=status in (ESME_RINVPASWD, ESME_RINVSYSID),
            ) from None
        except (smpplib.exceptions.ConnectionError, OSError) as exc:
            self._discard(client)
            raise SmppTransportError(
                f"connection to SMSC at {self.address} lost during bind_{mode}: {exc or 'closed'}"
            ) from None
        self._bound_mode = mode
        self._last_sent = time.monotonic()
        self._rxbuf = bytearray()
        self.log.info("Bound to SMSC %s as %s (%s)", self.address, self.system_id, mode)
        return client

    @staticmethod
    def _discard(client: smpplib.client.Client) -> None:
        try:
            client.disconnect()
        except Exception:  # closing a socket that never opened
            client._socket = None

    def __enter__(self) -> SmppHook:
        self.get_conn()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Unbind and disconnect; problems while doing so are logged as warnings."""
        client, self._client = self._client, None
        self._bound_mode = None
        if client is None:
            return
        if self._inbox:
            self.log.warning("Closing with %d received deliver_sm not handed to collect()", len(self._inbox))
            self._inbox.clear()
        try:
            unbind = smpplib.smpp.make_pdu("unbind", client=client)
            client.send_pdu(unbind)
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                pdu = self._read_from(client, deadline - time.monotonic())
                if pdu is not None and pdu.command == "unbind_resp":
                    break
        except Exception as exc:
            self.log.warning("SMPP unbind from %s failed: %s", self.address, exc)
        try:
            client.disconnect()
        except Exception as exc:
            self.log.warning("SMPP disconnect from %s failed: %s", self.address, exc)

    def on_kill(self) -> None:
        """Release the bind when the task is killed."""
        self.close()

    def test_connection(self) -> tuple[bool, str]:
        """Connect, bind and unbind once; return (success, message) for the UI's Test button."""
        try:
            self.get_conn()
            mode = self._bound_mode
            self.close()
        except Exception as exc:
            return False, str(exc)
        return True, f"Bound to SMSC {self.address} as {self.system_id!r} ({mode})"

    # -- low-level I/O -----------------------------------------------------------------------

    def _read_from(self, client: smpplib.client.Client, timeout: float) -> Any:
        """Return the next PDU, or None when none is complete within ``timeout`` seconds.

        Reads whatever the socket has into a buffer (one recv for many PDUs); submit_sm_resp
        and generic_nack come back as :class:`_Resp`, everything else parsed by smpplib.
        """
        sock = client._socket
        if sock is None:
            raise SmppTransportError(f"not connected to SMSC at {self.address}")
        deadline = None
        while True:
            raw = self._take_pdu()
            if raw is not None:
                return self._decode(client, raw)
            if deadline is None:
                deadline = time.monotonic() + max(0.0, timeout)
                left = max(0.0, timeout)
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
            readable, _, _ = select.select([sock], [], [], left)
            if not readable:
                return None
            sock.settimeout(self.connect_timeout)
            data = sock.recv(65536)
            if not data:
                raise smpplib.exceptions.ConnectionError()
            self._rxbuf += data

    def _take_pdu(self) -> bytes | None:
        buf = self._rxbuf
        if len(buf) < 16:
            return None
        length = int.from_bytes(buf[:4], "big")
        if length < 16 or length > 256 * 1024:
            raise smpplib.exceptions.PDUError(f"PDU length {length} out of range")
        if len(buf) < length:
            return None
        raw = bytes(buf[:length])
        del buf[:length]
        return raw

    def _decode(self, client: smpplib.client.Client, raw: bytes) -> Any:
        _length, command_id, status, sequence = _HEADER.unpack_from(raw)
        if command_id == SUBMIT_SM_RESP:
            end = raw.find(b"\x00", 16)
            message_id = raw[16:end] if end >= 0 else raw[16:]
            return _Resp("submit_sm_resp", sequence, status, message_id or None)
        if command_id == GENERIC_NACK:
            return _Resp("generic_nack", sequence, status)
        return smpplib.smpp.parse_pdu(raw, client=client, allow_unknown_opt_params=True)

    def _read(self, timeout: float) -> Any:
        client = self._require_client()
        try:
            return self._read_from(client, timeout)
        except (smpplib.exceptions.ConnectionError, OSError) as exc:
            self._broken()
            raise SmppTransportError(
                f"connection to SMSC at {self.address} lost: {exc or 'closed'}"
            ) from None
        except smpplib.exceptions.PDUError as exc:
            self._broken()
            raise SmppTransportError(f"unreadable PDU from SMSC at {self.address}: {exc}") from None

    def _send(self, pdu: Any) -> None:
        client = self._require_client()
        try:
            client.send_pdu(pdu)
        except (smpplib.exceptions.ConnectionError, OSError) as exc:
            self._broken()
            raise SmppTransportError(
                f"connection to SMSC at {self.address} lost: {exc or 'closed'}"
            ) from None
        self._last_sent = time.monotonic()

    def _send_raw(self, data: bytes) -> None:
        client = self._require_client()
        try:
            client._socket.sendall(data)
        except OSError as exc:
            self._broken()
            raise SmppTransportError(
                f"connection to SMSC at {self.address} lost: {exc or 'closed'}"
            ) from None
        self._last_sent = time.monotonic()

    def _respond(self, command: str, sequence: int, status: int = ESME_ROK) -> None:
        resp = smpplib.smpp.make_pdu(command, client=self._require_client(), status=status)
        resp.sequence = sequence
        self._send(resp)

    def _require_client(self) -> smpplib.client.Client:
        if self._client is None:
            raise SmppTransportError(f"not connected to SMSC at {self.address}")
        return self._client

    def _broken(self) -> None:
        client, self._client = self._client, None
        self._bound_mode = None
        self._rxbuf = bytearray()
        if client is not None:
            self._discard(client)

    def _keepalive(self) -> None:
        if time.monotonic() - self._last_sent >= self.enquire_link_interval:
            self._send(smpplib.smpp.make_pdu("enquire_link", client=self._require_client()))

    def _answer_request(self, pdu: Any) -> bool:
        """Answer an SMSC-initiated PDU other than deliver_sm; return False once unbound."""
        if pdu.command == "enquire_link":
            self._respond("enquire_link_resp", pdu.sequence)
        elif pdu.command == "unbind":
            self._respond("unbind_resp", pdu.sequence)
            self.log.warning("SMSC %s unbound the session", self.address)
            self._broken()
            return False
        elif pdu.command not in ("enquire_link_resp", "deliver_sm_resp"):
            self.log.debug("Ignoring %s from SMSC %s", pdu.command, self.address)
        return True

    # -- submit ------------------------------------------------------------------------------

    def _submit_defaults(self) -> dict[str, Any]:
        """Return the submit_sm fields shared by a whole batch (extras read once)."""
        return {
            "dest_addr_ton": int(self._extra("dest_addr_ton", 0)),
            "dest_addr_npi": int(self._extra("dest_addr_npi", 1)),
            "registered_delivery": 1 if self.registered_delivery else 0,
            "validity_period": self.validity_period(),
            "max_parts": self.max_parts,
            "source_addr": self.source_addr,
        }

    def _plan(
        self, batch: _Batch, index: int, message: OutboundSms, defaults: dict[str, Any] | None = None
    ) -> list[_Part]:
        defaults = defaults or self._submit_defaults()
        try:
            encoded = split_text(message.text, max_parts=defaults["max_parts"])
        except MessageTooLong as exc:
            batch.results[index] = SubmitResult(
                key=message.key,
                message_ids=[],
                command_status=ESME_RINVMSGLEN,
                error=str(exc),
                permanent=True,
            )
            batch.failed.add(index)
            batch.unsettled[index] = 0
            self._settled_message(batch, index)
            return []
        source = message.source or defaults["source_addr"]
        src_ton, src_npi = self._source_ton_npi(source)
        destination = message.destination.strip()
        if destination.startswith("+"):
            destination, dst_ton = destination[1:], 1
        else:
            dst_ton = defaults["dest_addr_ton"]
        common = {
            "source_addr_ton": src_ton,
            "source_addr_npi": src_npi,
            "source_addr": source,
            "dest_addr_ton": dst_ton,
            "dest_addr_npi": defaults["dest_addr_npi"],
            "destination_addr": destination,
            "data_coding": encoded.data_coding,
            "registered_delivery": defaults["registered_delivery"],
            "validity_period": defaults["validity_period"],
        }
        total = len(encoded.parts)
        reference = reference_for(message.key)
        batch.ids[index] = [None] * total
        batch.unsettled[index] = total
        parts = []
        for seq, body in enumerate(encoded.parts, start=1):
            short_message = concat_udh(reference, total, seq) + body if total > 1 else body
            args = dict(common, esm_class=0x40 if total > 1 else 0x00, short_message=short_message)
            parts.append(_Part(index=index, seq=seq, total=total, pdu_args=args, body=submit_sm_body(args)))
        return parts

    def submit_batch(
        self,
        messages: Sequence[OutboundSms],
        *,
        on_result: Callable[[SubmitResult], None] | None = None,
        admit: Callable[[], tuple[int, int]] | None = None,
    ) -> list[SubmitResult]:
        """Submit every message, keeping up to ``window`` submit_sm unanswered; return one result each.

        The window is refilled as responses arrive (a few at a time, in one write), so it stays
        full over the SMSC's latency. Throttled (0x58) and queue-full (0x14) parts are sent
        again, the same PDU under a new sequence number, after the whole bind pauses and slows
        down (the pause doubles per throttle episode; the rate is halved, then grows again with
        every accepted submit_sm). A refused part stops the rest of its message. Messages over
        ``max_parts`` are not sent.

        :param messages: the batch, in ledger order
        :param on_result: called with each message's result as soon as all its parts are
            settled (in completion order, not batch order), so a caller can record results
            while later messages are still on the wire
        :param admit: returns ``(may_start, end)``: how many messages of the batch may have
            been started so far (e.g. claimed in the ledger, within the caller's bound of
            unrecorded results), and where the batch ends (``len(messages)``, or less once the
            caller stops it, e.g. a quota used up); the hook waits, still reading responses,
            until it allows the next message, and returns the results of ``[0, end)``
        :raises SmppTransportError: when the connection drops or the SMSC stops answering;
            ``error.results`` holds the results known by then (without ``on_result``: all of
            them; with it: none, they were all handed to ``on_result`` already)
        """
        client = self.get_conn()
        if self._bound_mode == "receiver":
            raise SmppError(
                f"cannot submit on a receiver bind to {self.address}; use transmitter or transceiver"
            )
        batch = _Batch(
            messages=messages,
            results=[
                SubmitResult(key=m.key, message_ids=[], command_status=ESME_ROK, error=None, permanent=False)
                for m in messages
            ],
            on_result=on_result,
        )
        defaults = self._submit_defaults()
        queue: deque[_Part] = deque()
        planned = 0  # messages [0, planned) are split and encoded into parts
        end = len(messages)  # messages [end, ...) are not to be sent (the caller stopped)

        def plan(count: int) -> None:
            nonlocal planned, end
            limit = end
            if admit is not None:
                limit, stop = admit()
                end = max(planned, min(end, stop))
                limit = min(limit, end)
            for index in range(planned, min(planned + count, limit)):
                queue.extend(self._plan(batch, index, messages[index], defaults))
                planned = index + 1

        outstanding: dict[int, _Part] = {}
        backoff: list[tuple[float, int, _Part]] = []
        tie = itertools.count()
        window = self.window
        response_timeout = self.response_timeout
        base_interval = 1.0 / self.rate_limit if self.rate_limit else 0.0
        next_send = time.monotonic()
        last_progress = time.monotonic()
        try:
            while queue or outstanding or backoff or planned < end:
                if not queue and planned < end:
                    plan(window)
                now = time.monotonic()
                while backoff and backoff[0][0] <= now:
                    queue.appendleft(heapq.heappop(backoff)[2])
                interval = max(base_interval, self._pace)
                if queue and len(outstanding) < window and now >= next_send and now >= self._hold_until:
                    if not outstanding:
                        last_progress = now
                    chunks = []
                    while queue and len(outstanding) < window and now >= next_send:
                        part = queue.popleft()
                        if part.index in batch.failed:
                            self._part_settled(batch, part)
                            continue
                        sequence = client.next_sequence()
                        chunks.append(_HEADER.pack(16 + len(part.body), SUBMIT_SM, 0, sequence) + part.body)
                        outstanding[sequence] = part
                        self._send_times.append(now)
                        if interval:
                            next_send = max(next_send + interval, now)
                    if chunks:
                        self._send_raw(b"".join(chunks))
                # Split and encode the next messages while these are on the wire, not between
                # a response and the submit_sm that refills its place.
                if planned < end and len(queue) < window:
                    plan(window - len(queue))
                if not outstanding and not queue and not backoff and planned == end:
                    break
                now = time.monotonic()
                waits = [response_timeout - (now - last_progress)] if outstanding else [1.0]
                if backoff:
                    waits.append(backoff[0][0] - now)
                if queue and len(outstanding) < window:
                    waits.append(max(next_send, self._hold_until) - now)
                elif not queue and planned < end:
                    waits.append(ADMIT_POLL)  # the caller's admit() may allow more soon
                pdu = self._read(max(0.0, min(waits)))
                if pdu is None:
                    if outstanding and time.monotonic() - last_progress >= response_timeout:
                        self._broken()
                        raise SmppTransportError(
                            f"SMSC at {self.address} sent no submit_sm_resp for {response_timeout:g} s "
                            f"with {len(outstanding)} submit_sm outstanding"
                        )
                    continue
                handled = 0
                while pdu is not None:
                    if pdu.command in ("submit_sm_resp", "generic_nack"):
                        part = outstanding.pop(pdu.sequence, None)
                        if part is None:
                            if pdu.command == "generic_nack":
                                raise SmppTransportError(
                                    f"SMSC at {self.address} sent generic_nack {status_name(pdu.status)}"
                                )
                            self.log.warning("Unexpected %s sequence %d", pdu.command, pdu.sequence)
                        else:
                            last_progress = time.monotonic()
                            self._settle(batch, part, pdu, backoff, tie)
                    elif pdu.command == "deliver_sm":
                        self._inbox.append(self._parse_deliver(pdu))
                        self._respond("deliver_sm_resp", pdu.sequence)
                    elif not self._answer_request(pdu):
                        raise SmppTransportError(f"SMSC at {self.address} unbound during submit")
                    # Refill the window after a few responses, in one write: the window stays
                    # spread out over the SMSC's latency instead of travelling as one block.
                    handled += 1
                    if handled >= SEND_GROUP and (queue or planned < end) and len(outstanding) < window:
                        break
                    pdu = self._read(0.0) if len(self._rxbuf) >= 16 else None
        except SmppTransportError as exc:
            if on_result is None:
                unfinished = {p.index for p in queue} | {p.index for p in outstanding.values()}
                unfinished |= {entry[2].index for entry in backoff}
                unfinished |= set(range(planned, end))
                exc.results = [self._finish(batch, i) for i in range(end) if i not in unfinished]
            raise
        return [self._finish(batch, i) for i in range(end)]

    def _throttled(self, status: int) -> float:
        """Slow the bind down after a throttle; return when the throttled part may go again."""
        now = time.monotonic()
        if now >= self._hold_until:  # a new episode; answers to PDUs already in flight join it
            self._throttle_streak += 1
            pause = min(THROTTLE_PAUSE * 2 ** (self._throttle_streak - 1), THROTTLE_PAUSE_MAX)
            pause *= 0.75 + random.random() / 2
            self._hold_until = now + pause
            sent = self._send_times
            rate = (len(sent) - 1) / (sent[-1] - sent[0]) if len(sent) > 1 and sent[-1] > sent[0] else 0.0
            current = max(rate, 1.0 / self._pace if self._pace else 0.0)
            if current:
                self._pace = max(self._pace, 1.0 / (current * THROTTLE_DECREASE))
            self.log.info(
                "SMSC %s busy (%s): pausing %.2f s, then at most %.0f submit_sm/s",
                self.address,
                status_name(status),
                pause,
                1.0 / self._pace if self._pace else float("inf"),
            )
        return self._hold_until

    def _accepted(self) -> None:
        if self._pace and time.monotonic() >= self._hold_until:
            self._throttle_streak = 0
            self._pace /= THROTTLE_SPEEDUP
            if self._pace < 1e-5:  # beyond 100,000/s: no pacing left
                self._pace = 0.0

    def _settle(
        self, batch: _Batch, part: _Part, pdu: Any, backoff: list[tuple[float, int, _Part]], tie: Any
    ) -> None:
        status = int(pdu.status or 0)
        if status == ESME_ROK:
            batch.ids[part.index][part.seq - 1] = normalize_message_id(getattr(pdu, "message_id", None))
            self._accepted()
            self._part_settled(batch, part)
            return
        if status in RETRY_LATER_STATUSES and part.attempts < MAX_THROTTLE_RETRIES:
            part.attempts += 1
            heapq.heappush(backoff, (self._throttled(status), next(tie), part))
            return
        if part.index in batch.failed:
            self._part_settled(batch, part)
            return
        batch.failed.add(part.index)
        message = batch.messages[part.index]
        batch.results[part.index] = SubmitResult(
            key=message.key,
            message_ids=[],
            command_status=status,
            error=f"part {part.seq}/{part.total} refused: {status_name(status)}",
            permanent=status in PERMANENT_STATUSES,
        )
        self.log.info(
            "SMSC %s refused a message to %s: %s",
            self.address,
            mask(message.destination),
            status_name(status),
        )
        self._part_settled(batch, part)

    def _part_settled(self, batch: _Batch, part: _Part) -> None:
        batch.unsettled[part.index] -= 1
        if batch.unsettled[part.index] == 0:
            self._settled_message(batch, part.index)

    def _settled_message(self, batch: _Batch, index: int) -> None:
        if batch.on_result is not None:
            batch.on_result(self._finish(batch, index))

    @staticmethod
    def _finish(batch: _Batch, index: int) -> SubmitResult:
        result = batch.results[index]
        result.message_ids = [i for i in batch.ids.get(index, []) if i is not None]
        return result

    # -- receive -----------------------------------------------------------------------------

    def _parse_deliver(self, pdu: Any) -> DeliveryReceipt | dict[str, str] | None:
        esm_class = int(pdu.esm_class or 0)
        payload = pdu.short_message or pdu.message_payload or b""
        data_coding = int(pdu.data_coding or 0)
        receipted_id = getattr(pdu, "receipted_message_id", None)
        message_state = getattr(pdu, "message_state", None)
        if (esm_class & 0x3C) in (0x04, 0x20) or receipted_id:
            text = payload.decode("utf-16-be", "replace") if data_coding == 8 else payload.decode("latin-1")
            receipt = parse_receipt_text(text, mixed_bases=self.receipt_ids_decimal)
            receipt = merge_receipt_tlvs(
                receipt, receipted_message_id=receipted_id, message_state=message_state
            )
            if receipt is None:
                self.log.warning("Unreadable delivery receipt from %s ignored", self.address)
            return receipt
        body = payload
        if esm_class & 0x40:
            try:
                _info, body = parse_udh(payload)
            except ValueError:
                body = payload
        try:
            text = decode_payload(data_coding, body, errors="replace")
        except ValueError:
            text = body.decode("latin-1")
        return {
            "source": (pdu.source_addr or b"").decode("latin-1"),
            "destination": (pdu.destination_addr or b"").decode("latin-1"),
            "text": text,
        }

    def _dispatch(
        self,
        event: DeliveryReceipt | dict[str, str] | None,
        on_receipt: Callable[[DeliveryReceipt], None],
        on_message: Callable[[dict], None] | None,
    ) -> int:
        if isinstance(event, DeliveryReceipt):
            on_receipt(event)
            return 1
        if isinstance(event, dict):
            if on_message is None:
                self.log.warning("Reply from %s dropped: no on_message handler", mask(event["source"]))
                return 0
            on_message(event)
            return 1
        return 0

    def collect(
        self,
        *,
        on_receipt: Callable[[DeliveryReceipt], None],
        on_message: Callable[[dict], None] | None = None,
        idle_timeout: float = 5.0,
        max_seconds: float = 60.0,
        stop_when: Callable[[], bool] | None = None,
    ) -> int:
        """Receive deliver_sm, hand receipts to ``on_receipt`` and replies to ``on_message``.

        A deliver_sm is acknowledged after its callback returns, so a callback that raises
        leaves it with the SMSC, which delivers it again later. Receipts that arrived during
        :meth:`submit_batch` on a transceiver bind are handed over first.

        :param on_receipt: called with each DeliveryReceipt (ids normalised)
        :param on_message: called with {source, destination, text} for each mobile-originated message
        :param idle_timeout: stop after this many seconds without a deliver_sm
        :param max_seconds: stop after this many seconds in any case
        :param stop_when: stop as soon as this returns True (checked after every PDU)
        :return: how many receipts and messages were handed to the callbacks
        """
        self.get_conn()
        if self._bound_mode == "transmitter":
            raise SmppError(
                f"cannot collect on a transmitter bind to {self.address}; use receiver or transceiver"
            )
        count = 0
        while self._inbox:
            count += self._dispatch(self._inbox.popleft(), on_receipt, on_message)
        start = last_deliver = time.monotonic()
        while self._client is not None:
            if stop_when is not None and stop_when():
                break
            now = time.monotonic()
            idle_left = idle_timeout - (now - last_deliver)
            total_left = max_seconds - (now - start)
            if idle_left <= 0 or total_left <= 0:
                break
            self._keepalive()
            keepalive_left = self.enquire_link_interval - (time.monotonic() - self._last_sent)
            pdu = self._read(max(0.0, min(idle_left, total_left, keepalive_left, 1.0)))
            if pdu is None:
                continue
            if pdu.command == "deliver_sm":
                last_deliver = time.monotonic()
                count += self._dispatch(self._parse_deliver(pdu), on_receipt, on_message)
                self._respond("deliver_sm_resp", pdu.sequence)
            elif not self._answer_request(pdu):
                break
        return count
