"""Parse SMPP delivery receipts and normalise message ids (pure, no I/O).

The receipt text follows the de-facto format of SMPP 3.4 Appendix B::

    id:IIIIIIIIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DDDDDDD err:E text:...

SMSCs vary: field names in any case, missing fields, dates with seconds (12 digits), ids in
decimal in the receipt but in hex in submit_sm_resp. The parser tolerates all of these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime

MESSAGE_STATES: dict[int, str] = {
    1: "ENROUTE",
    2: "DELIVERED",
    3: "EXPIRED",
    4: "DELETED",
    5: "UNDELIVERABLE",
    6: "ACCEPTED",
    7: "UNKNOWN",
    8: "REJECTED",
}
# Receipt ``stat:`` words and the message_state each stands for.
STAT_TO_STATE: dict[str, int] = {
    "ENROUTE": 1,
    "DELIVRD": 2,
    "EXPIRED": 3,
    "DELETED": 4,
    "UNDELIV": 5,
    "ACCEPTD": 6,
    "UNKNOWN": 7,
    "REJECTD": 8,
}
STATE_TO_STAT: dict[int, str] = {state: stat for stat, state in STAT_TO_STATE.items()}
FINAL_STATS = frozenset({"DELIVRD", "EXPIRED", "DELETED", "UNDELIV", "REJECTD", "UNKNOWN"})

_FIELD = re.compile(r"(?i)(?:^|(?<=\s))(id|sub|dlvrd|submit[ _]date|done[ _]date|stat|err|text)\s*:")


@dataclass(frozen=True)
class DeliveryReceipt:
    """Hold one delivery receipt for one submitted SMS part."""

    message_id: str
    stat: str = ""
    err: str = ""
    dlvrd: str = ""
    sub: str = ""
    submit_date: datetime | None = None
    done_date: datetime | None = None
    text: str = ""
    message_state: int | None = None

    @property
    def delivered(self) -> bool:
        """Return whether the handset got the message."""
        return self.stat == "DELIVRD"

    @property
    def final(self) -> bool:
        """Return whether the state will not change any more."""
        return self.stat in FINAL_STATS

    @property
    def state_name(self) -> str:
        """Return the SMPP message_state name (DELIVERED, UNDELIVERABLE, ...) of this receipt."""
        state = self.message_state if self.message_state is not None else STAT_TO_STATE.get(self.stat)
        return message_state_name(state) if state is not None else self.stat or "UNKNOWN"


def normalize_message_id(raw: str | bytes | int | None, *, mixed_bases: bool = False) -> str:
    """Return the canonical form of an SMSC message id: stripped, lower-case, no leading zeros.

    :param raw: the id as it came in (submit_sm_resp, receipt text or TLV)
    :param mixed_bases: the SMSC writes this id in decimal while other places use hex; a purely
        decimal id is then converted to its hex form, so ``6699`` and ``1a2b`` both give
        ``1a2b``. Apply it only to ids known to be decimal (e.g. receipt text of such an SMSC):
        a hex id made only of digits cannot be told apart from a decimal one.
    """
    if raw is None:
        return ""
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", errors="replace")
    text = str(raw).strip().strip("\x00").strip().lower()
    if not text:
        return ""
    if mixed_bases and text.isdigit():
        return format(int(text), "x")
    stripped = text.lstrip("0")
    return stripped or "0"


def message_state_name(state: int) -> str:
    """Return the name of an SMPP message_state TLV value (2 -> DELIVERED)."""
    return MESSAGE_STATES.get(state, f"STATE_{state}")


def parse_receipt_date(value: str) -> datetime | None:
    """Return the datetime of a receipt date (YYMMDDhhmm or YYMMDDhhmmss), None if unreadable."""
    digits = value.strip()
    try:
        if len(digits) == 10 and digits.isdigit():
            return datetime.strptime(digits, "%y%m%d%H%M")
        if len(digits) == 12 and digits.isdigit():
            return datetime.strptime(digits, "%y%m%d%H%M%S")
    except ValueError:
        return None
    return None


def parse_receipt_text(text: str | bytes, *, mixed_bases: bool = False) -> DeliveryReceipt | None:
    """Parse the text of a delivery receipt; return None when it has no ``id:`` field.

    :param text: short_message of the deliver_sm, decoded
    :param mixed_bases: passed to :func:`normalize_message_id` for the ``id:`` field
    """
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    matches = list(_FIELD.finditer(text))
    fields: dict[str, str] = {}
    for index, match in enumerate(matches):
        name = match.group(1).lower().replace("_", " ")
        if name == "text":
            fields.setdefault(name, text[match.end() :])
            break
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        fields.setdefault(name, text[match.end() : end].strip())
    message_id = normalize_message_id(fields.get("id"), mixed_bases=mixed_bases)
    if not message_id:
        return None
    return DeliveryReceipt(
        message_id=message_id,
        stat=fields.get("stat", "").upper(),
        err=fields.get("err", ""),
        dlvrd=fields.get("dlvrd", ""),
        sub=fields.get("sub", ""),
        submit_date=parse_receipt_date(fields.get("submit date", "")),
        done_date=parse_receipt_date(fields.get("done date", "")),
        text=fields.get("text", ""),
    )


def merge_receipt_tlvs(
    receipt: DeliveryReceipt | None,
    *,
    receipted_message_id: str | bytes | None = None,
    message_state: int | None = None,
) -> DeliveryReceipt | None:
    """Combine a parsed receipt text with the deliver_sm TLVs; the TLVs win where both exist.

    :param receipt: what :func:`parse_receipt_text` gave, or None
    :param receipted_message_id: TLV 0x001E
    :param message_state: TLV 0x0427
    """
    tlv_id = normalize_message_id(receipted_message_id)
    if receipt is None:
        if not tlv_id:
            return None
        receipt = DeliveryReceipt(message_id=tlv_id)
    elif tlv_id:
        receipt = replace(receipt, message_id=tlv_id)
    if message_state is not None:
        receipt = replace(
            receipt,
            message_state=message_state,
            stat=STATE_TO_STAT.get(message_state, receipt.stat),
        )
    return receipt
