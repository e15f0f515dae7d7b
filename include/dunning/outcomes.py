"""One outcome taxonomy for every channel: what happened to a contact, in words analysts share.

SMPP delivery receipts and ``submit_sm_resp`` statuses, modem ``+CMS`` / ``+CME`` errors, voice
call endings, replies and the contact ledger's own states are all mapped here, and only here, to
an :class:`Outcome`. The reporting tables and the run report use these values; ``docs/outcomes.md``
is the same table for readers who do not read Python. Pure: no I/O, no Airflow.
"""

from __future__ import annotations

import re
import unicodedata
from enum import StrEnum


class Outcome(StrEnum):
    """What happened to one contact (one ledger row)."""

    PLANNED = "planned"  # decided, not sent yet (PLANNED or CLAIMED)
    SUPPRESSED = "suppressed"  # not sent by decision: cap, deferral, superseded, holdout, ...
    OPTED_OUT = "opted-out"  # not sent (or stopped) because the person asked to stop
    PENDING = "pending"  # accepted by the gateway, no final receipt yet
    DELIVERED = "delivered"  # the handset has the SMS
    UNDELIVERED_BAD_NUMBER = "undelivered-bad-number"  # the number does not exist / is not a mobile
    UNDELIVERED_TRANSIENT = "undelivered-transient"  # phone off, out of coverage, memory full, network
    UNDELIVERED_BARRED = "undelivered-barred"  # operator barring, facility rejected, spam filter
    UNDELIVERED = "undelivered"  # undelivered for a reason the gateway did not say
    EXPIRED = "expired"  # the validity period ran out before the phone was reached
    UNKNOWN = "unknown"  # no (or an UNKNOWN) receipt within the validity period
    SUBMIT_REJECTED = "submit-rejected"  # the gateway refused the message itself (length, PDU, ...)
    GATEWAY_TRANSIENT = "gateway-transient"  # throttled, queue full, system error: resent later
    DEVICE_FAILED = "device-failed"  # SIM missing / PIN / PUK / no SMSC: a person must act
    ANSWERED = "answered"  # voice: the call was answered
    BUSY = "busy"  # voice: line busy
    NO_ANSWER = "no-answer"  # voice: rang, nobody answered
    NOT_CONNECTED = "not-connected"  # voice: NO CARRIER, the call did not connect
    CALL_REJECTED = "call-rejected"  # voice: the callee rejected the call
    REPLIED = "replied"  # a reply that is not an opt-out

    @property
    def reached(self) -> bool:
        """Return whether the person was reached (SMS delivered or call answered)."""
        return self in REACHED

    @property
    def failed_contact(self) -> bool:
        """Return whether this is a contact that certainly did not reach the person."""
        return self in FAILED_CONTACT


REACHED = frozenset({Outcome.DELIVERED, Outcome.ANSWERED})
# Attempts that certainly did not reach the person: these count towards the staff follow-up list.
# UNKNOWN is not one (the message may well have arrived), nor PENDING, SUPPRESSED, OPTED_OUT.
FAILED_CONTACT = frozenset(
    {
        Outcome.UNDELIVERED_BAD_NUMBER,
        Outcome.UNDELIVERED_TRANSIENT,
        Outcome.UNDELIVERED_BARRED,
        Outcome.UNDELIVERED,
        Outcome.EXPIRED,
        Outcome.SUBMIT_REJECTED,
        Outcome.GATEWAY_TRANSIENT,
        Outcome.DEVICE_FAILED,
        Outcome.BUSY,
        Outcome.NO_ANSWER,
        Outcome.NOT_CONNECTED,
        Outcome.CALL_REJECTED,
    }
)
# Ledger states whose rows are failed contacts (the SQL twin of FAILED_CONTACT; a test keeps them equal).
FAILED_CONTACT_STATES = ("UNDELIVERED", "EXPIRED", "FAILED")

# -- SMPP delivery receipts ---------------------------------------------------------------------

# ``err:`` of an UNDELIV receipt: most SMSCs pass the GSM MAP error (TS 29.002) as 3 digits.
RECEIPT_ERR_BAD_NUMBER = frozenset({1, 5, 9, 11, 12})  # unknown / unidentified / illegal subscriber
RECEIPT_ERR_BARRED = frozenset({13, 21})  # call barred, facility not supported
RECEIPT_ERR_TRANSIENT = frozenset({6, 27, 31, 32, 33, 34})  # absent, busy, delivery failure, memory full


def _int(value: str | int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, int):
        return value
    text = value.strip()
    try:
        return int(text, 16) if text.lower().startswith("0x") else int(text)
    except ValueError:
        return None


def from_receipt(stat: str | None, err: str | int | None = None) -> Outcome:
    """Return the outcome of an SMPP delivery receipt (SMPP 3.4 appendix B).

    ========  =====================  ===================================================
    stat      err (GSM MAP error)    outcome
    ========  =====================  ===================================================
    DELIVRD   any                    delivered
    UNDELIV   1, 5, 9, 11, 12        undelivered-bad-number (unknown/illegal subscriber)
    UNDELIV   13, 21                 undelivered-barred
    UNDELIV   6, 27, 31-34           undelivered-transient (absent, busy, memory full)
    UNDELIV   other / none           undelivered
    REJECTD   any                    undelivered-barred (refused by the operator)
    DELETED   any                    undelivered
    EXPIRED   any                    expired
    UNKNOWN   any                    unknown
    ENROUTE,  any                    pending (intermediate: the ledger ignores them)
    ACCEPTD
    other     any                    unknown
    ========  =====================  ===================================================

    :param stat: the receipt's ``stat`` word, any case
    :param err: the receipt's ``err`` field (``"001"``), if any
    """
    word = (stat or "").strip().upper()
    if word == "DELIVRD":
        return Outcome.DELIVERED
    if word == "UNDELIV":
        code = _int(err)
        if code in RECEIPT_ERR_BAD_NUMBER:
            return Outcome.UNDELIVERED_BAD_NUMBER
        if code in RECEIPT_ERR_BARRED:
            return Outcome.UNDELIVERED_BARRED
        if code in RECEIPT_ERR_TRANSIENT:
            return Outcome.UNDELIVERED_TRANSIENT
        return Outcome.UNDELIVERED
    if word == "REJECTD":
        return Outcome.UNDELIVERED_BARRED
    if word == "DELETED":
        return Outcome.UNDELIVERED
    if word == "EXPIRED":
        return Outcome.EXPIRED
    if word in ("ENROUTE", "ACCEPTD"):
        return Outcome.PENDING
    return Outcome.UNKNOWN


# -- SMPP submit_sm_resp command_status ----------------------------------------------------------

SMPP_BAD_NUMBER = frozenset({0x0B, 0x50, 0x51})  # RINVDSTADR, RINVDSTTON, RINVDSTNPI
# The message itself is wrong (hooks.smpp.PERMANENT_STATUSES minus the destination ones).
SMPP_REJECTED = frozenset(
    {0x01, 0x0A, 0x15, 0x33, 0x43, 0x48, 0x49, 0x53, 0x61, 0x62, 0xC0, 0xC1, 0xC2, 0xC3, 0xC4}
)


def from_smpp_status(command_status: int | str | None) -> Outcome:
    """Return the outcome of a ``submit_sm_resp`` command_status (SMPP 3.4 §5.1.3).

    ===============================================  ==========================
    command_status                                   outcome
    ===============================================  ==========================
    0x00 ESME_ROK                                    pending (await the receipt)
    0x0B RINVDSTADR, 0x50 RINVDSTTON, 0x51 RINVDSTNPI undelivered-bad-number
    0x01 RINVMSGLEN, 0x0A RINVSRCADR, 0x15, 0x33,    submit-rejected
    0x43, 0x48, 0x49, 0x53, 0x61, 0x62, 0xC0-0xC4
    anything else (0x58 RTHROTTLED, 0x14 RMSGQFUL,   gateway-transient (resent)
    0x08 RSYSERR, 0x45 RSUBMITFAIL, ...)
    ===============================================  ==========================

    :param command_status: the status as an int or as the ledger keeps it (``"0x0000000B"``)
    """
    code = _int(command_status)
    if code == 0:
        return Outcome.PENDING
    if code in SMPP_BAD_NUMBER:
        return Outcome.UNDELIVERED_BAD_NUMBER
    if code in SMPP_REJECTED:
        return Outcome.SUBMIT_REJECTED
    return Outcome.GATEWAY_TRANSIENT


# -- GSM modem +CMS / +CME errors ----------------------------------------------------------------

CMS_BAD_NUMBER = frozenset({1, 28, 30})  # unassigned number, unidentified / unknown subscriber
CMS_BARRED = frozenset({8, 10, 21, 29, 50, 69})  # barring, transfer / facility rejected, not subscribed
CMS_TRANSIENT = frozenset({27, 38, 41, 42, 47, 314, 322, 331, 332, 500})  # out of service, network, busy
CMS_DEVICE = frozenset({300, 310, 311, 312, 313, 316, 317, 318, 330})  # SIM / SMSC address: a person acts
CME_DEVICE = frozenset({10, 11, 12, 13, 16, 17, 18})  # SIM missing / PIN / PUK / failure / password
CME_TRANSIENT = frozenset({14, 30, 31, 100})  # SIM busy, no network, network timeout, unknown


def from_modem_error(kind: str | None, code: int | str | None) -> Outcome:
    """Return the outcome of a modem error (3GPP TS 27.005 §3.2.5 ``+CMS``, TS 27.007 §9.2 ``+CME``).

    ====  ==============================================  ======================
    kind  code                                            outcome
    ====  ==============================================  ======================
    CMS   1, 28, 30                                       undelivered-bad-number
    CMS   8, 10, 21, 29, 50, 69                           undelivered-barred
    CMS   27, 38, 41, 42, 47, 314, 322, 331, 332, 500     gateway-transient
    CMS   300, 310-313, 316-318, 330                      device-failed
    CMS   other (PDU errors 96-99, 128-255, 301-305 ...)  submit-rejected
    CME   10-13, 16-18 (SIM, PIN, PUK, password)          device-failed
    CME   14, 30, 31, 100                                 gateway-transient
    CME   other (3, 4, 50 ...)                            submit-rejected
    none  (timeout, port error, no code)                  device-failed
    ====  ==============================================  ======================

    :param kind: ``"CMS"`` or ``"CME"`` (``ModemError.kind``), None for errors without a code
    :param code: the numeric code (``ModemError.code``)
    """
    number = _int(code)
    family = (kind or "").strip().upper().lstrip("+")
    if number is None or family not in ("CMS", "CME"):
        return Outcome.DEVICE_FAILED
    if family == "CMS":
        if number in CMS_BAD_NUMBER:
            return Outcome.UNDELIVERED_BAD_NUMBER
        if number in CMS_BARRED:
            return Outcome.UNDELIVERED_BARRED
        if number in CMS_TRANSIENT:
            return Outcome.GATEWAY_TRANSIENT
        if number in CMS_DEVICE:
            return Outcome.DEVICE_FAILED
        return Outcome.SUBMIT_REJECTED
    if number in CME_DEVICE:
        return Outcome.DEVICE_FAILED
    if number in CME_TRANSIENT:
        return Outcome.GATEWAY_TRANSIENT
    return Outcome.SUBMIT_REJECTED


# -- voice calls and replies ---------------------------------------------------------------------

CALL_OUTCOMES = {
    "answered": Outcome.ANSWERED,
    "busy": Outcome.BUSY,
    "no_answer": Outcome.NO_ANSWER,
    "no_carrier": Outcome.NOT_CONNECTED,
    "rejected": Outcome.CALL_REJECTED,
    "failed": Outcome.DEVICE_FAILED,
}


def from_call(outcome: str | None) -> Outcome:
    """Return the outcome of a voice call (``hooks.gsm_modem.CallOutcome.outcome``).

    ==========  =============
    call        outcome
    ==========  =============
    answered    answered
    busy        busy
    no_answer   no-answer
    no_carrier  not-connected
    rejected    call-rejected
    failed      device-failed
    other       unknown
    ==========  =============
    """
    word = (outcome or "").strip().lower().replace(" ", "_").replace("-", "_")
    return CALL_OUTCOMES.get(word, Outcome.UNKNOWN)


# Same words as include.dunning.replies.OPT_OUT_WORDS (a test keeps them equal).
OPT_OUT_WORDS = frozenset({"TD", "T", "N", "R", "退订"})


def from_reply(text: str | None) -> Outcome:
    """Return the outcome of a mobile-originated reply.

    A reply that is, trimmed and NFKC-normalised, one of ``TD T N R 退订`` (any case or width)
    is ``opted-out``; any other reply is ``replied``.
    """
    if text:
        word = unicodedata.normalize("NFKC", text).strip().strip("。.!！").upper()
        if word in OPT_OUT_WORDS:
            return Outcome.OPTED_OUT
    return Outcome.REPLIED


# -- the contact ledger --------------------------------------------------------------------------

_MODEM_CODE = re.compile(r"^\+?(CMS|CME)\s*(?:ERROR:?)?\s*(\d+)$", re.IGNORECASE)
_SMPP_CODE = re.compile(r"^0x[0-9a-f]+$", re.IGNORECASE)


def from_error_code(error_code: str | None) -> Outcome:
    """Return the outcome of a ledger ``error_code``: ``0x0000000B`` (SMPP), ``CMS1`` (modem), ``call_failed``."""
    code = (error_code or "").strip()
    if _SMPP_CODE.match(code):
        return from_smpp_status(code)
    match = _MODEM_CODE.match(code)
    if match:
        return from_modem_error(match.group(1), match.group(2))
    return Outcome.DEVICE_FAILED


def from_ledger(
    state: str,
    reason: str | None = None,
    error_code: str | None = None,
    *,
    channel: str | None = None,
    stat: str | None = None,
    err: str | None = None,
) -> Outcome:
    """Return the outcome of a contact ledger row.

    ===========  ==========================================  ===============================
    state        reason / error_code / receipt               outcome
    ===========  ==========================================  ===============================
    PLANNED,     any                                         planned
    CLAIMED
    SUPPRESSED   reason ``opted_out``                        opted-out
    SUPPRESSED   any other reason                            suppressed
    SUBMITTED    any                                         pending
    DELIVERED    channel voice, or reason ``answered ...``   answered
    DELIVERED    otherwise                                   delivered
    UNDELIVERED  reason busy / no_answer / no_carrier /      as :func:`from_call`
                 rejected (voice)
    UNDELIVERED  the undelivered part's receipt stat + err   as :func:`from_receipt`
    UNDELIVERED  no receipt detail                           undelivered
    EXPIRED      any                                         expired
    UNKNOWN      any                                         unknown
    FAILED       error_code ``0x...`` (SMPP)                 as :func:`from_smpp_status`
    FAILED       error_code ``CMS<n>`` / ``CME<n>`` (modem)  as :func:`from_modem_error`
    FAILED       ``call_failed``, ``MODEM``, none            device-failed
    ===========  ==========================================  ===============================

    :param state: the ledger state
    :param reason: the row's reason (suppression reason, call outcome, error text)
    :param error_code: the row's error code
    :param channel: ``sms`` or ``voice``
    :param stat: receipt stat of the row's (worst) message part, if any
    :param err: receipt err of that part
    """
    state = (state or "").upper()
    reason_text = (reason or "").strip()
    if state in ("PLANNED", "CLAIMED"):
        return Outcome.PLANNED
    if state == "SUPPRESSED":
        return Outcome.OPTED_OUT if reason_text.startswith("opted_out") else Outcome.SUPPRESSED
    if state == "SUBMITTED":
        return Outcome.PENDING
    if state == "DELIVERED":
        if channel == "voice" or reason_text.startswith("answered"):
            return Outcome.ANSWERED
        return Outcome.DELIVERED
    if state == "UNDELIVERED":
        if reason_text in ("busy", "no_answer", "no_carrier", "rejected"):
            return from_call(reason_text)
        if stat:
            found = from_receipt(stat, err)
            if found not in (Outcome.DELIVERED, Outcome.PENDING, Outcome.UNKNOWN, Outcome.EXPIRED):
                return found
        return Outcome.UNDELIVERED
    if state == "EXPIRED":
        return Outcome.EXPIRED
    if state == "UNKNOWN":
        return Outcome.UNKNOWN
    if state == "FAILED":
        return from_error_code(error_code)
    return Outcome.UNKNOWN
