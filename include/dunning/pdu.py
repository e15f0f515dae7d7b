"""Encode SMS-SUBMIT and decode SMS-DELIVER / SMS-STATUS-REPORT PDUs (3GPP TS 23.040; pure, no I/O).

A GSM modem in PDU mode (``AT+CMGF=0``) takes the hex of an SMS-SUBMIT after ``AT+CMGS=<n>``
and hands back SMS-DELIVER (``+CMGR``, ``+CMT``) and SMS-STATUS-REPORT (``+CDS``) PDUs. Text
splitting reuses :mod:`include.dunning.sms` (GSM-7 tables, 153/67 units per part, never cutting
an escape or a surrogate pair, deterministic concatenation references); this module adds what
the air interface needs on top: septet packing with UDH fill bits, semi-octet addresses, the
relative validity period, service-centre time stamps and the first-octet flags.

No maintained PyPI package covers both directions (``smspdu`` is from 2011,
``smspdudecoder`` decodes only, ``python-gsmmodem``'s codec comes with its modem-is-a-port
design), so this is written against TS 23.040 / TS 23.038; the tests use the packing example
of TS 23.038 and the widely used reference PDUs ("hellohello").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from include.dunning.sms import (
    DATA_CODING_GSM7,
    DATA_CODING_UCS2,
    MessageTooLong,
    concat_udh,
    decode_gsm7,
    encode_gsm7,
    parse_udh,
    split_text,
)

__all__ = [
    "MTI_DELIVER",
    "MTI_STATUS_REPORT",
    "MTI_SUBMIT",
    "MessageTooLong",
    "PduError",
    "SmsDeliver",
    "SmsStatusReport",
    "SmsSubmit",
    "SubmitPdu",
    "UnencodableText",
    "decode_address",
    "decode_pdu",
    "decode_scts",
    "encode_address",
    "encode_deliver",
    "encode_scts",
    "encode_status_report",
    "encode_submit",
    "pack_septets",
    "relative_validity",
    "status_stat",
    "unpack_septets",
]

MTI_DELIVER = 0b00
MTI_SUBMIT = 0b01
MTI_STATUS_REPORT = 0b10

TON_UNKNOWN = 0x81  # type unknown, ISDN/telephone numbering plan
TON_INTERNATIONAL = 0x91
TON_ALPHANUMERIC = 0xD0

_FO_RD = 0x04  # SUBMIT: reject duplicates
_FO_VPF_RELATIVE = 0x10
_FO_SRR = 0x20  # SUBMIT: status report request
_FO_MMS = 0x04  # DELIVER / STATUS-REPORT: more messages to send (bit set = none)
_FO_SRQ = 0x20  # STATUS-REPORT: qualifier
_FO_UDHI = 0x40

_SEMI_OCTETS = "0123456789*#abc"


class PduError(ValueError):
    """Raised when a PDU cannot be decoded; says which field was wrong."""


class UnencodableText(ValueError):
    """Raised when a text cannot be sent as it is; says which character and why."""

    def __init__(self, reason: str, *, position: int | None = None, character: str | None = None) -> None:
        super().__init__(reason)
        self.position = position
        self.character = character


# -- septets ------------------------------------------------------------------------------------


def pack_septets(septets: bytes, fill_bits: int = 0) -> bytes:
    """Pack 7-bit values into octets, least significant bit first (TS 23.038 §6.1.2.1.1).

    :param septets: one septet per octet (the unpacked form :func:`encode_gsm7` returns)
    :param fill_bits: zero bits before the first septet, to align after a UDH (0-6)
    """
    out = bytearray()
    acc, bits = 0, fill_bits
    for septet in septets:
        acc |= (septet & 0x7F) << bits
        bits += 7
        while bits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            bits -= 8
    if bits:
        out.append(acc & 0xFF)
    return bytes(out)


def unpack_septets(data: bytes, count: int, fill_bits: int = 0) -> bytes:
    """Unpack ``count`` septets from packed octets, skipping ``fill_bits`` leading bits.

    :raises PduError: when ``data`` holds fewer than ``count`` septets
    """
    if fill_bits + 7 * count > 8 * len(data):
        raise PduError(f"user data holds fewer than {count} septets")
    value = int.from_bytes(data, "little") >> fill_bits
    return bytes((value >> (7 * i)) & 0x7F for i in range(count))


def _fill_bits(udh_octets: int) -> int:
    """Return the fill bits that align GSM-7 text after a UDH of ``udh_octets`` (UDHL included)."""
    return (7 - (udh_octets * 8) % 7) % 7


# -- addresses and time stamps -----------------------------------------------------------------


def _swap_semi_octets(digits: str) -> bytes:
    if len(digits) % 2:
        digits += "F"
    return bytes(int(digits[i + 1] + digits[i], 16) for i in range(0, len(digits), 2))


def _unswap_semi_octets(data: bytes) -> str:
    out = []
    for octet in data:
        for nibble in (octet & 0x0F, octet >> 4):
            if nibble == 0x0F:
                continue
            out.append(_SEMI_OCTETS[nibble] if nibble < len(_SEMI_OCTETS) else "?")
    return "".join(out)


def encode_address(number: str) -> bytes:
    """Return a TP address (length in digits, type octet, swapped semi-octets) for ``number``.

    A leading ``+`` makes it international (0x91); otherwise unknown type (0x81), which is
    what national numbers such as ``13812348000`` and service codes such as ``12366`` use.

    :raises ValueError: when ``number`` has characters other than digits, ``*`` and ``#``
    """
    number = number.strip().replace(" ", "").replace("-", "")
    ton = TON_UNKNOWN
    if number.startswith("+"):
        number, ton = number[1:], TON_INTERNATIONAL
    if not number or any(ch not in "0123456789*#" for ch in number):
        raise ValueError(f"{number!r} is not a dialable number")
    digits = number.replace("*", "A").replace("#", "B")
    return bytes([len(number), ton]) + _swap_semi_octets(digits)


def decode_address(data: bytes, pos: int) -> tuple[str, int]:
    """Read a TP address at ``pos``; return (number, position after it).

    International numbers come back with a leading ``+``; alphanumeric senders (TON 5) as text.
    """
    if pos + 2 > len(data):
        raise PduError("PDU ends inside an address")
    length, ton = data[pos], data[pos + 1]
    octets = (length + 1) // 2
    body = data[pos + 2 : pos + 2 + octets]
    if len(body) != octets:
        raise PduError("address is truncated")
    if (ton >> 4) & 0x07 == 0x05:
        text = decode_gsm7(unpack_septets(body, (length * 4) // 7))
        return text, pos + 2 + octets
    number = _unswap_semi_octets(body)[:length]
    if (ton >> 4) & 0x07 == 0x01:
        number = "+" + number
    return number, pos + 2 + octets


def encode_smsc(number: str | None) -> bytes:
    """Return the SMSC information element that prefixes a PDU for ``AT+CMGS`` (00 = the SIM's)."""
    if not number:
        return b"\x00"
    address = encode_address(number)
    return bytes([len(address) - 1]) + address[1:]


def encode_scts(moment: datetime) -> bytes:
    """Return a 7-octet service-centre time stamp; naive datetimes are taken as UTC+8."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone(timedelta(hours=8)))
    offset = moment.utcoffset() or timedelta(0)
    quarters = int(offset.total_seconds() // 900)
    fields = f"{moment.year % 100:02d}{moment.month:02d}{moment.day:02d}"
    fields += f"{moment.hour:02d}{moment.minute:02d}{moment.second:02d}"
    tz = _swap_semi_octets(f"{abs(quarters):02d}")[0]
    if quarters < 0:
        tz |= 0x08
    return _swap_semi_octets(fields) + bytes([tz])


def decode_scts(data: bytes) -> datetime:
    """Read a 7-octet service-centre time stamp into an aware datetime.

    :raises PduError: when the fields are not a valid date
    """
    if len(data) != 7:
        raise PduError("time stamp is not 7 octets")
    digits = _unswap_semi_octets(data[:6])
    tz_octet = data[6]
    quarters = (tz_octet & 0x07) * 10 + (tz_octet >> 4)
    if tz_octet & 0x08:
        quarters = -quarters
    try:
        year, month, day, hour, minute, second = (int(digits[i : i + 2]) for i in range(0, 12, 2))
        return datetime(
            (2000 if year < 70 else 1900) + year,
            month,
            day,
            hour,
            minute,
            second,
            tzinfo=timezone(timedelta(minutes=15 * quarters)),
        )
    except ValueError as exc:
        raise PduError(f"invalid time stamp {data.hex().upper()}: {exc}") from None


def relative_validity(minutes: int) -> int:
    """Return the TP-VP octet (relative format) for at least ``minutes`` of validity (max 63 weeks)."""
    if minutes <= 0:
        raise ValueError("validity must be positive")
    if minutes <= 720:
        return max(0, -(-minutes // 5) - 1)
    if minutes <= 1440:
        return 143 + -(-(minutes - 720) // 30)
    days = -(-minutes // 1440)
    if days <= 30:
        return 166 + days
    return min(255, 192 + -(-days // 7))


# -- decoded forms ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SubmitPdu:
    """Hold one SMS-SUBMIT ready for ``AT+CMGS``: the hex and the TPDU length to announce."""

    hex: str
    tpdu_length: int
    part: int
    total: int


@dataclass(frozen=True)
class SmsSubmit:
    """Hold a decoded SMS-SUBMIT (what a modem receives; the emulator decodes these)."""

    destination: str
    text: str
    data_coding: int
    status_report: bool
    reference: int
    concat_reference: int | None = None
    part: int = 1
    total: int = 1
    smsc: str | None = None


@dataclass(frozen=True)
class SmsDeliver:
    """Hold a decoded SMS-DELIVER: a message from a handset (a reply such as 退订)."""

    sender: str
    text: str
    timestamp: datetime
    data_coding: int
    concat_reference: int | None = None
    part: int = 1
    total: int = 1
    smsc: str | None = None


# TP-Status values (TS 23.040 §9.2.3.15) and the receipt word (include.dunning.receipts) each means.
_STATUS_NAMES = {
    0x00: "received by the handset",
    0x01: "forwarded, delivery unconfirmed",
    0x02: "replaced by the service centre",
    0x20: "congestion, still trying",
    0x21: "handset busy, still trying",
    0x22: "no response from handset, still trying",
    0x23: "service rejected, still trying",
    0x24: "quality of service not available, still trying",
    0x25: "error in handset, still trying",
    0x40: "remote procedure error",
    0x41: "incompatible destination",
    0x42: "connection rejected by handset",
    0x43: "not obtainable",
    0x44: "quality of service not available",
    0x45: "no interworking available",
    0x46: "validity period expired",
    0x47: "deleted by originating handset",
    0x48: "deleted by service centre administration",
    0x49: "message does not exist",
    0x60: "congestion, stopped trying",
    0x61: "handset busy, stopped trying",
    0x62: "no response from handset, stopped trying",
    0x63: "service rejected, stopped trying",
    0x64: "quality of service not available, stopped trying",
    0x65: "error in handset, stopped trying",
}


def status_stat(status: int) -> str:
    """Return the delivery-receipt word (DELIVRD, ENROUTE, EXPIRED, ...) for a TP-Status value."""
    if status <= 0x1F:
        return "DELIVRD"
    if status <= 0x3F:
        return "ENROUTE"
    if status == 0x46:
        return "EXPIRED"
    if status in (0x47, 0x48):
        return "DELETED"
    if status in (0x41, 0x42, 0x43):
        return "REJECTD"
    return "UNDELIV"


@dataclass(frozen=True)
class SmsStatusReport:
    """Hold a decoded SMS-STATUS-REPORT: the fate of the SMS-SUBMIT whose ``+CMGS`` gave ``reference``."""

    reference: int
    recipient: str
    status: int
    submitted: datetime
    discharged: datetime
    smsc: str | None = None
    extra: dict[str, int] = field(default_factory=dict)

    @property
    def stat(self) -> str:
        """Return the receipt word (DELIVRD, ENROUTE, EXPIRED, DELETED, REJECTD, UNDELIV)."""
        return status_stat(self.status)

    @property
    def delivered(self) -> bool:
        """Return whether the handset got the message."""
        return self.status <= 0x1F

    @property
    def final(self) -> bool:
        """Return whether the service centre has stopped trying (delivered or given up)."""
        return not 0x20 <= self.status <= 0x3F

    @property
    def description(self) -> str:
        """Return the TP-Status in words."""
        return _STATUS_NAMES.get(self.status, f"status 0x{self.status:02X}")


# -- encoding -----------------------------------------------------------------------------------


def _check_text(text: str, allow_surrogates: bool) -> None:
    for position, ch in enumerate(text):
        code = ord(ch)
        if 0xD800 <= code <= 0xDFFF:
            raise UnencodableText(
                f"character {position} (U+{code:04X}) is a lone surrogate, not a character",
                position=position,
                character=ch,
            )
        if code > 0xFFFF and not allow_surrogates:
            raise UnencodableText(
                f"character {position} (U+{code:05X}) is outside UCS2 and this connection does not "
                "send UTF-16 surrogate pairs",
                position=position,
                character=ch,
            )


def encode_submit(
    destination: str,
    text: str,
    *,
    concat_reference: int = 0,
    status_report: bool = True,
    validity_minutes: int | None = 1440,
    smsc: str | None = None,
    max_parts: int | None = None,
    allow_surrogates: bool = True,
) -> list[SubmitPdu]:
    """Encode ``text`` to ``destination`` as one SMS-SUBMIT per part.

    GSM-7 when every character is in the GSM 03.38 alphabet, else UCS2. Characters outside the
    Basic Multilingual Plane (CJK extension B, emoji) go as UTF-16 surrogate pairs, which
    handsets show correctly, never split across parts; with ``allow_surrogates=False`` they are
    refused instead.

    :param destination: national number (``13812348000``) or ``+8613812348000``
    :param text: the whole message, signature (【...】) included
    :param concat_reference: shared by the parts of a long message (``reference_for(key)``)
    :param status_report: set TP-SRR so the network sends a status report (``+CDS``)
    :param validity_minutes: relative validity period; None leaves TP-VP out
    :param smsc: service centre number; None uses the one stored on the SIM
    :param max_parts: refuse texts that need more parts
    :param allow_surrogates: send non-BMP characters as surrogate pairs (else refuse them)
    :raises UnencodableText: for a lone surrogate, or non-BMP text when not allowed
    :raises MessageTooLong: when the text needs more than ``max_parts`` parts
    :raises ValueError: when the destination is not a dialable number
    """
    if not text:
        raise UnencodableText("empty text")
    _check_text(text, allow_surrogates)
    encoded = split_text(text, max_parts=max_parts)
    total = len(encoded.parts)
    smsc_octets = encode_smsc(smsc)
    address = encode_address(destination)
    pdus = []
    for seq, body in enumerate(encoded.parts, start=1):
        first = MTI_SUBMIT
        if status_report:
            first |= _FO_SRR
        if validity_minutes is not None:
            first |= _FO_VPF_RELATIVE
        udh = b""
        if total > 1:
            first |= _FO_UDHI
            udh = concat_udh(concat_reference, total, seq)
        if encoded.data_coding == DATA_CODING_GSM7:
            fill = _fill_bits(len(udh)) if udh else 0
            user_data = udh + pack_septets(body, fill)
            udl = (len(udh) * 8 + fill) // 7 + len(body)
            dcs = 0x00
        else:
            user_data = udh + body
            udl = len(user_data)
            dcs = 0x08
        tpdu = bytes([first, 0x00]) + address + bytes([0x00, dcs])
        if validity_minutes is not None:
            tpdu += bytes([relative_validity(validity_minutes)])
        tpdu += bytes([udl]) + user_data
        pdus.append(
            SubmitPdu(hex=(smsc_octets + tpdu).hex().upper(), tpdu_length=len(tpdu), part=seq, total=total)
        )
    return pdus


def _encode_user_data(text: str, udh: bytes = b"") -> tuple[int, int, bytes]:
    """Return (DCS, UDL, UD) for ``text`` in one part (GSM-7 when it fits, else UCS2)."""
    try:
        septets = encode_gsm7(text)
    except ValueError:
        body = text.encode("utf-16-be")
        return 0x08, len(udh) + len(body), udh + body
    fill = _fill_bits(len(udh)) if udh else 0
    return 0x00, (len(udh) * 8 + fill) // 7 + len(septets), udh + pack_septets(septets, fill)


def encode_deliver(
    sender: str, text: str, timestamp: datetime, *, smsc: str | None = "+8613800100500", udh: bytes = b""
) -> str:
    """Return the hex of an SMS-DELIVER (what a modem hands over for a received SMS).

    :param sender: the handset's number
    :param text: one part's text (GSM-7 if it fits, else UCS2)
    :param timestamp: the service-centre time stamp
    :param smsc: the service centre that delivered it (None: no SMSC information)
    :param udh: a user data header (with its length octet) for one part of a long message
    """
    first = MTI_DELIVER | _FO_MMS | (_FO_UDHI if udh else 0)
    dcs, udl, ud = _encode_user_data(text, udh)
    tpdu = bytes([first]) + encode_address(sender) + bytes([0x00, dcs]) + encode_scts(timestamp)
    tpdu += bytes([udl]) + ud
    return (encode_smsc(smsc) + tpdu).hex().upper()


def encode_status_report(
    reference: int,
    recipient: str,
    status: int,
    submitted: datetime,
    discharged: datetime,
    *,
    smsc: str | None = "+8613800100500",
) -> tuple[str, int]:
    """Return (hex, TPDU length) of an SMS-STATUS-REPORT, as a modem reports it in ``+CDS``."""
    tpdu = bytes([MTI_STATUS_REPORT | _FO_MMS, reference & 0xFF]) + encode_address(recipient)
    tpdu += encode_scts(submitted) + encode_scts(discharged) + bytes([status & 0xFF])
    return (encode_smsc(smsc) + tpdu).hex().upper(), len(tpdu)


# -- decoding -----------------------------------------------------------------------------------


def _alphabet(dcs: int) -> int:
    """Return DATA_CODING_GSM7, 4 (8-bit data) or DATA_CODING_UCS2 for a TP-DCS octet."""
    group = dcs >> 4
    if group <= 0x03:  # general data coding
        if dcs & 0x20:
            raise PduError(f"compressed text (DCS 0x{dcs:02X}) is not supported")
        return {0: DATA_CODING_GSM7, 1: 4, 2: DATA_CODING_UCS2}.get((dcs >> 2) & 0x03, DATA_CODING_GSM7)
    if group in (0x0C, 0x0D):  # message waiting, GSM-7
        return DATA_CODING_GSM7
    if group == 0x0E:  # message waiting, UCS2
        return DATA_CODING_UCS2
    if group == 0x0F:
        return 4 if dcs & 0x04 else DATA_CODING_GSM7
    raise PduError(f"reserved data coding scheme 0x{dcs:02X}")


def _decode_user_data(data: bytes, pos: int, dcs: int, udhi: bool) -> tuple[str, int | None, int, int]:
    """Return (text, concat reference, part, total) of the user data at ``pos``."""
    if pos >= len(data):
        raise PduError("PDU ends before TP-UDL")
    udl = data[pos]
    ud = data[pos + 1 :]
    alphabet = _alphabet(dcs)
    header = b""
    if udhi:
        if not ud:
            raise PduError("TP-UDHI set but user data is empty")
        header = ud[: 1 + ud[0]]
        try:
            info, _body = parse_udh(ud)
        except ValueError as exc:
            raise PduError(str(exc)) from None
    else:
        info = None
    if alphabet == DATA_CODING_GSM7:
        if header:
            fill = _fill_bits(len(header))
            header_septets = (len(header) * 8 + fill) // 7
            septets = unpack_septets(ud[len(header) :], udl - header_septets, fill)
        else:
            septets = unpack_septets(ud, udl)
        text = decode_gsm7(septets)
    else:
        body = ud[len(header) : udl]
        if len(ud) < udl:
            raise PduError(f"TP-UDL {udl} exceeds the {len(ud)} octets of user data")
        text = body.decode("utf-16-be", errors="replace") if alphabet == DATA_CODING_UCS2 else body.hex()
    if info is None:
        return text, None, 1, 1
    return text, info.reference, info.sequence, info.total


def _decode_smsc(data: bytes) -> tuple[str | None, int]:
    length = data[0]
    if length == 0:
        return None, 1
    if 1 + length > len(data):
        raise PduError("SMSC information is longer than the PDU")
    ton = data[1]
    number = _unswap_semi_octets(data[2 : 1 + length])
    return ("+" + number if (ton >> 4) & 0x07 == 1 else number), 1 + length


def decode_pdu(pdu_hex: str, *, smsc: bool = True) -> SmsDeliver | SmsStatusReport | SmsSubmit:
    """Decode the hex a modem shows (``+CMGR``, ``+CMT``, ``+CDS``) or receives (``AT+CMGS``).

    :param pdu_hex: the PDU in hex
    :param smsc: the PDU starts with SMSC information (what modems in PDU mode show)
    :raises PduError: when the PDU is malformed or of a type this codec does not read
    """
    try:
        data = bytes.fromhex(pdu_hex.strip())
    except ValueError:
        raise PduError(f"not hexadecimal: {pdu_hex[:40]!r}") from None
    if not data:
        raise PduError("empty PDU")
    smsc_number, pos = _decode_smsc(data) if smsc else (None, 0)
    if pos >= len(data):
        raise PduError("PDU ends after the SMSC information")
    first = data[pos]
    mti = first & 0x03
    try:
        if mti == MTI_DELIVER:
            sender, pos = decode_address(data, pos + 1)
            _pid, dcs = data[pos], data[pos + 1]
            timestamp = decode_scts(data[pos + 2 : pos + 9])
            text, ref, part, total = _decode_user_data(data, pos + 9, dcs, bool(first & _FO_UDHI))
            return SmsDeliver(
                sender=sender,
                text=text,
                timestamp=timestamp,
                data_coding=_alphabet(dcs),
                concat_reference=ref,
                part=part,
                total=total,
                smsc=smsc_number,
            )
        if mti == MTI_SUBMIT:
            reference = data[pos + 1]
            destination, pos = decode_address(data, pos + 2)
            _pid, dcs = data[pos], data[pos + 1]
            pos += 2
            vpf = (first >> 3) & 0x03
            pos += {0: 0, 2: 1}.get(vpf, 7)
            text, ref, part, total = _decode_user_data(data, pos, dcs, bool(first & _FO_UDHI))
            return SmsSubmit(
                destination=destination,
                text=text,
                data_coding=_alphabet(dcs),
                status_report=bool(first & _FO_SRR),
                reference=reference,
                concat_reference=ref,
                part=part,
                total=total,
                smsc=smsc_number,
            )
        if mti == MTI_STATUS_REPORT:
            reference = data[pos + 1]
            recipient, pos = decode_address(data, pos + 2)
            submitted = decode_scts(data[pos : pos + 7])
            discharged = decode_scts(data[pos + 7 : pos + 14])
            if pos + 14 >= len(data):
                raise PduError("status report ends before TP-ST")
            return SmsStatusReport(
                reference=reference,
                recipient=recipient,
                status=data[pos + 14],
                submitted=submitted,
                discharged=discharged,
                smsc=smsc_number,
            )
    except IndexError:
        raise PduError(f"PDU is truncated: {pdu_hex[:60]}") from None
    raise PduError(f"message type indicator {mti} is reserved")
