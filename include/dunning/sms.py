"""Encode, split and decode SMS text the way SMPP carries it (pure, no I/O).

The GSM 03.38 tables are written out here rather than taken from ``smpplib.gsm``: smpplib's
table puts a backtick where 03.38 has ``§`` (0x5F), so it would encode a character the handset
shows as ``§`` and refuse a real ``§``; it also splits long messages on raw octets, which can
cut a GSM escape pair or a UTF-16 surrogate pair in half. ``consts`` only has length constants.

SMPP sends GSM-7 *unpacked*: one septet per octet, escape pairs as two octets (0x1B, code).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field

DATA_CODING_GSM7 = 0
DATA_CODING_ASCII = 1
DATA_CODING_LATIN1 = 3
DATA_CODING_UCS2 = 8

GSM7_SINGLE_SEPTETS = 160
GSM7_PART_SEPTETS = 153
UCS2_SINGLE_UNITS = 70
UCS2_PART_UNITS = 67
MAX_CONCAT_PARTS = 255

GSM7_ESCAPE = 0x1B

# GSM 03.38 default alphabet, index = septet value. 0x1B is the escape to the extension table.
GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
# GSM 03.38 extension table: character -> septet following the escape.
GSM7_EXTENSION = {
    "\x0c": 0x0A,
    "^": 0x14,
    "{": 0x28,
    "}": 0x29,
    "\\": 0x2F,
    "[": 0x3C,
    "~": 0x3D,
    "]": 0x3E,
    "|": 0x40,
    "€": 0x65,
}

_GSM7_ENCODE: dict[str, bytes] = {ch: bytes([i]) for i, ch in enumerate(GSM7_BASIC) if i != GSM7_ESCAPE}
_GSM7_ENCODE.update({ch: bytes([GSM7_ESCAPE, code]) for ch, code in GSM7_EXTENSION.items()})
_GSM7_DECODE_EXT = {code: ch for ch, code in GSM7_EXTENSION.items()}
# One regex scan instead of a dict lookup per character (tests check it against the table).
_NOT_GSM7 = re.compile("[^" + "".join(re.escape(ch) for ch in _GSM7_ENCODE) + "]")
_EXTENSION_CHARS = tuple(GSM7_EXTENSION)
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")  # characters that take a UTF-16 surrogate pair


class MessageTooLong(ValueError):
    """Raised when a text needs more SMS parts than allowed."""

    def __init__(self, parts_needed: int, max_parts: int) -> None:
        super().__init__(f"message needs {parts_needed} SMS parts; the maximum is {max_parts}")
        self.parts_needed = parts_needed
        self.max_parts = max_parts


@dataclass(frozen=True)
class ConcatInfo:
    """Describe one part of a concatenated SMS, as read from its user data header."""

    reference: int
    total: int
    sequence: int
    reference_bits: int = 8


@dataclass
class EncodedMessage:
    """Hold a text encoded for SMPP: its data_coding and one payload per part (without UDH)."""

    data_coding: int
    parts: list[bytes]
    text: str
    units: list[int] = field(default_factory=list)

    @property
    def is_multipart(self) -> bool:
        """Return whether the message needs a concatenation header on every part."""
        return len(self.parts) > 1


def is_gsm7(text: str) -> bool:
    """Return whether every character of ``text`` is in the GSM 03.38 alphabet or its extension."""
    return _NOT_GSM7.search(text) is None


def choose_coding(text: str) -> int:
    """Return the SMPP data_coding for ``text``: 0 (GSM-7) when it fits, else 8 (UCS2)."""
    return DATA_CODING_GSM7 if is_gsm7(text) else DATA_CODING_UCS2


def encode_gsm7(text: str) -> bytes:
    """Encode ``text`` as unpacked GSM-7 septets, extension characters as escape pairs.

    :param text: text made only of GSM 03.38 characters
    :raises ValueError: when a character has no GSM-7 code
    """
    try:
        return b"".join(_GSM7_ENCODE[ch] for ch in text)
    except KeyError as exc:
        raise ValueError(f"character {exc.args[0]!r} is not in the GSM 03.38 alphabet") from None


def gsm7_septets(text: str) -> int:
    """Return how many septets ``text`` takes in GSM-7 (extension characters count 2)."""
    return len(encode_gsm7(text))


def ucs2_units(text: str) -> int:
    """Return how many UTF-16 code units ``text`` takes (a non-BMP character counts 2)."""
    return len(text.encode("utf-16-be")) // 2


def _char_chunks(text: str, data_coding: int) -> list[bytes]:
    if data_coding == DATA_CODING_GSM7:
        return [_GSM7_ENCODE[ch] for ch in text]
    return [ch.encode("utf-16-be") for ch in text]


def _limits(data_coding: int) -> tuple[int, int, int]:
    """Return (octets in a single SMS, octets per concatenated part, octets per unit)."""
    if data_coding == DATA_CODING_GSM7:
        return GSM7_SINGLE_SEPTETS, GSM7_PART_SEPTETS, 1
    return UCS2_SINGLE_UNITS * 2, UCS2_PART_UNITS * 2, 2


def split_text(text: str, *, max_parts: int | None = None) -> EncodedMessage:
    """Encode ``text`` and split it into SMS payloads, never cutting an escape or surrogate pair.

    :param text: the full message, signature (【...】) included
    :param max_parts: refuse texts that need more parts than this
    :raises MessageTooLong: when the text needs more than ``max_parts`` (or 255) parts
    """
    data_coding = choose_coding(text)
    single, per_part, unit = _limits(data_coding)
    # Fast path (the send loop's hot spot): one encode call; a text that fits one SMS is done.
    whole = text.encode("utf-16-be") if data_coding == DATA_CODING_UCS2 else encode_gsm7(text)
    if len(whole) <= single:
        parts = [whole]
    else:
        chunks = _char_chunks(text, data_coding)
        parts = []
        current: list[bytes] = []
        size = 0
        for chunk in chunks:
            if size + len(chunk) > per_part:
                parts.append(b"".join(current))
                current, size = [], 0
            current.append(chunk)
            size += len(chunk)
        if current:
            parts.append(b"".join(current))
    limit = MAX_CONCAT_PARTS if max_parts is None else min(max_parts, MAX_CONCAT_PARTS)
    if len(parts) > limit:
        raise MessageTooLong(len(parts), limit)
    return EncodedMessage(
        data_coding=data_coding, parts=parts, text=text, units=[len(p) // unit for p in parts]
    )


def sms_parts(text: str) -> int:
    """Return how many SMS parts ``text`` is sent as (what the operator is billed for).

    :param text: the full message, signature (【...】) included
    """
    if _NOT_GSM7.search(text) is None:
        escapes = sum(map(text.count, _EXTENSION_CHARS))
        septets = len(text) + escapes
        if septets <= GSM7_SINGLE_SEPTETS:
            return 1
        if not escapes:  # every character one septet: parts are simply full
            return -(-septets // GSM7_PART_SEPTETS)
        return _greedy_parts(text, DATA_CODING_GSM7)
    if _ASTRAL.search(text) is None:  # no surrogate pairs: every character one UTF-16 unit
        if len(text) <= UCS2_SINGLE_UNITS:
            return 1
        return -(-len(text) // UCS2_PART_UNITS)
    return _greedy_parts(text, DATA_CODING_UCS2)


def _greedy_parts(text: str, data_coding: int) -> int:
    """Count parts character by character, never cutting an escape or a surrogate pair."""
    single, per_part, _unit = _limits(data_coding)
    chunks = _char_chunks(text, data_coding)
    if sum(len(c) for c in chunks) <= single:
        return 1
    parts, size = 1, 0
    for chunk in chunks:
        if size + len(chunk) > per_part:
            parts += 1
            size = 0
        size += len(chunk)
    return parts


def concat_udh(ref: int, total: int, seq: int) -> bytes:
    """Return the 6-octet concatenation UDH (IEI 0x00, 8-bit reference) for one part.

    :param ref: concatenation reference shared by all parts, 0-255
    :param total: number of parts, 1-255
    :param seq: this part's number, 1-based
    """
    if not 0 <= ref <= 0xFF:
        raise ValueError(f"reference {ref} does not fit in 8 bits")
    if not 1 <= total <= MAX_CONCAT_PARTS or not 1 <= seq <= total:
        raise ValueError(f"part {seq} of {total} is not a valid concatenation position")
    return bytes([0x05, 0x00, 0x03, ref, total, seq])


def parse_udh(payload: bytes) -> tuple[ConcatInfo | None, bytes]:
    """Split a payload that starts with a UDH into (concatenation info or None, body).

    Understands IEI 0x00 (8-bit reference) and 0x08 (16-bit reference); other elements are
    skipped.

    :param payload: short_message (or message_payload) of a PDU whose esm_class has UDHI set
    :raises ValueError: when the header is truncated
    """
    if not payload:
        raise ValueError("empty payload has no user data header")
    udh_len = payload[0]
    if udh_len + 1 > len(payload):
        raise ValueError(f"user data header length {udh_len} exceeds payload of {len(payload)} octets")
    header, body = payload[1 : 1 + udh_len], payload[1 + udh_len :]
    info: ConcatInfo | None = None
    pos = 0
    while pos < len(header):
        if pos + 2 > len(header):
            raise ValueError("truncated information element in user data header")
        iei, length = header[pos], header[pos + 1]
        data = header[pos + 2 : pos + 2 + length]
        if len(data) != length:
            raise ValueError(f"information element 0x{iei:02X} is truncated")
        if iei == 0x00 and length == 3:
            info = ConcatInfo(reference=data[0], total=data[1], sequence=data[2], reference_bits=8)
        elif iei == 0x08 and length == 4:
            info = ConcatInfo(
                reference=int.from_bytes(data[:2], "big"),
                total=data[2],
                sequence=data[3],
                reference_bits=16,
            )
        pos += 2 + length
    return info, body


def decode_gsm7(body: bytes) -> str:
    """Decode unpacked GSM-7 septets (one per octet); an unknown escape shows its base character."""
    out: list[str] = []
    escaped = False
    for octet in body:
        septet = octet & 0x7F
        if escaped:
            out.append(_GSM7_DECODE_EXT.get(septet, GSM7_BASIC[septet] if septet != GSM7_ESCAPE else " "))
            escaped = False
        elif septet == GSM7_ESCAPE:
            escaped = True
        else:
            out.append(GSM7_BASIC[septet])
    return "".join(out)


def decode_payload(data_coding: int, body: bytes, *, errors: str = "strict") -> str:
    """Decode an SMS body (UDH already removed) according to its SMPP data_coding.

    :param data_coding: 0 GSM-7 unpacked, 1 ASCII, 3 Latin-1, 8 UCS2 (UTF-16-BE)
    :param body: the octets after the UDH
    :param errors: codec error handling for UCS2 and ASCII ("strict", "replace")
    :raises ValueError: for a data_coding this codec does not handle
    """
    if data_coding == DATA_CODING_GSM7:
        return decode_gsm7(body)
    if data_coding == DATA_CODING_UCS2:
        return body.decode("utf-16-be", errors=errors)
    if data_coding == DATA_CODING_LATIN1:
        return body.decode("latin-1")
    if data_coding == DATA_CODING_ASCII:
        return body.decode("ascii", errors=errors)
    raise ValueError(f"data_coding 0x{data_coding:02X} is not supported")


def reference_for(key: str) -> int:
    """Return a concatenation reference (0-255) derived from ``key``, the same on every retry.

    :param key: a stable identifier of the message, e.g. the contact ledger's idempotency key
    """
    return zlib.crc32(key.encode("utf-8")) & 0xFF
