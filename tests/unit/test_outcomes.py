"""The outcome taxonomy: every source code maps to the documented outcome."""

from __future__ import annotations

import pytest

from include.dunning import outcomes
from include.dunning.outcomes import (
    Outcome,
    from_call,
    from_error_code,
    from_ledger,
    from_modem_error,
    from_receipt,
    from_reply,
    from_smpp_status,
)
from include.dunning.replies import OPT_OUT_WORDS


@pytest.mark.parametrize(
    ("stat", "err", "expected"),
    [
        ("DELIVRD", "000", Outcome.DELIVERED),
        ("delivrd", None, Outcome.DELIVERED),
        ("UNDELIV", "001", Outcome.UNDELIVERED_BAD_NUMBER),
        ("UNDELIV", "013", Outcome.UNDELIVERED_BARRED),
        ("UNDELIV", "027", Outcome.UNDELIVERED_TRANSIENT),
        ("UNDELIV", "999", Outcome.UNDELIVERED),
        ("UNDELIV", "x", Outcome.UNDELIVERED),
        ("REJECTD", "002", Outcome.UNDELIVERED_BARRED),
        ("DELETED", None, Outcome.UNDELIVERED),
        ("EXPIRED", "000", Outcome.EXPIRED),
        ("UNKNOWN", None, Outcome.UNKNOWN),
        ("ENROUTE", None, Outcome.PENDING),
        ("ACCEPTD", None, Outcome.PENDING),
        ("", None, Outcome.UNKNOWN),
    ],
    ids=lambda v: str(v),
)
def test_receipts(stat, err, expected):
    assert from_receipt(stat, err) is expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (0, Outcome.PENDING),
        (0x0B, Outcome.UNDELIVERED_BAD_NUMBER),
        ("0x0000000B", Outcome.UNDELIVERED_BAD_NUMBER),
        (0x01, Outcome.SUBMIT_REJECTED),
        (0x58, Outcome.GATEWAY_TRANSIENT),
        (0x14, Outcome.GATEWAY_TRANSIENT),
        (0x08, Outcome.GATEWAY_TRANSIENT),
    ],
    ids=str,
)
def test_smpp_status(status, expected):
    assert from_smpp_status(status) is expected


def test_smpp_table_agrees_with_the_hook():
    from hooks.smpp import PERMANENT_STATUSES, RETRY_LATER_STATUSES

    for status in PERMANENT_STATUSES:
        assert from_smpp_status(status) in (Outcome.SUBMIT_REJECTED, Outcome.UNDELIVERED_BAD_NUMBER)
    for status in RETRY_LATER_STATUSES:
        assert from_smpp_status(status) is Outcome.GATEWAY_TRANSIENT


@pytest.mark.parametrize(
    ("kind", "code", "expected"),
    [
        ("CMS", 1, Outcome.UNDELIVERED_BAD_NUMBER),
        ("CMS", 30, Outcome.UNDELIVERED_BAD_NUMBER),
        ("CMS", 10, Outcome.UNDELIVERED_BARRED),
        ("CMS", 42, Outcome.GATEWAY_TRANSIENT),
        ("CMS", 500, Outcome.GATEWAY_TRANSIENT),
        ("CMS", 310, Outcome.DEVICE_FAILED),
        ("CMS", 304, Outcome.SUBMIT_REJECTED),
        ("CMS", 200, Outcome.SUBMIT_REJECTED),
        ("CME", 11, Outcome.DEVICE_FAILED),
        ("CME", 30, Outcome.GATEWAY_TRANSIENT),
        ("CME", 3, Outcome.SUBMIT_REJECTED),
        (None, None, Outcome.DEVICE_FAILED),
    ],
    ids=str,
)
def test_modem_errors(kind, code, expected):
    assert from_modem_error(kind, code) is expected


def test_modem_permanent_sim_errors_are_device_failures():
    from hooks.gsm_modem_protocol import PERMANENT_CME

    for code in (10, 11, 12, 13, 16):
        assert code in PERMANENT_CME
        assert from_modem_error("CME", code) is Outcome.DEVICE_FAILED


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        ("answered", Outcome.ANSWERED),
        ("busy", Outcome.BUSY),
        ("no_answer", Outcome.NO_ANSWER),
        ("no_carrier", Outcome.NOT_CONNECTED),
        ("rejected", Outcome.CALL_REJECTED),
        ("failed", Outcome.DEVICE_FAILED),
        ("weird", Outcome.UNKNOWN),
    ],
    ids=str,
)
def test_calls(call, expected):
    assert from_call(call) is expected


@pytest.mark.parametrize(("text", "expected"), [("TD", Outcome.OPTED_OUT), (" ｔｄ ", Outcome.OPTED_OUT),
    ("退订。", Outcome.OPTED_OUT), ("已缴", Outcome.REPLIED), ("", Outcome.REPLIED)], ids=str)  # fmt: skip
def test_replies(text, expected):
    assert from_reply(text) is expected


def test_opt_out_words_match_the_reply_parser():
    assert outcomes.OPT_OUT_WORDS == OPT_OUT_WORDS


@pytest.mark.parametrize(
    ("args", "kwargs", "expected"),
    [
        (("PLANNED",), {}, Outcome.PLANNED),
        (("CLAIMED",), {}, Outcome.PLANNED),
        (("SUPPRESSED", "opted_out"), {}, Outcome.OPTED_OUT),
        (("SUPPRESSED", "frequency_cap: last contact 2026-11-20"), {}, Outcome.SUPPRESSED),
        (("SUBMITTED",), {}, Outcome.PENDING),
        (("DELIVERED",), {"channel": "sms"}, Outcome.DELIVERED),
        (("DELIVERED", "answered 12s, spoken 2 time(s)"), {"channel": "voice"}, Outcome.ANSWERED),
        (("UNDELIVERED", "busy"), {"channel": "voice"}, Outcome.BUSY),
        (("UNDELIVERED", "no_answer"), {"channel": "voice"}, Outcome.NO_ANSWER),
        (("UNDELIVERED",), {"stat": "UNDELIV", "err": "001"}, Outcome.UNDELIVERED_BAD_NUMBER),
        (("UNDELIVERED",), {"stat": "REJECTD", "err": "002"}, Outcome.UNDELIVERED_BARRED),
        (("UNDELIVERED",), {}, Outcome.UNDELIVERED),
        (("EXPIRED",), {}, Outcome.EXPIRED),
        (("UNKNOWN", "no receipt within validity"), {}, Outcome.UNKNOWN),
        (("FAILED", "invalid dest", "0x0000000B"), {}, Outcome.UNDELIVERED_BAD_NUMBER),
        (("FAILED", "+CMS ERROR: 310", "CMS310"), {}, Outcome.DEVICE_FAILED),
        (("FAILED", "no tts", "call_failed"), {}, Outcome.DEVICE_FAILED),
    ],
    ids=lambda v: str(v),
)
def test_ledger_rows(args, kwargs, expected):
    assert from_ledger(*args, **kwargs) is expected


def test_failed_contact_states_and_outcomes_agree():
    samples = {
        "UNDELIVERED": [from_ledger("UNDELIVERED", r, channel="voice") for r in ("busy", "no_answer")]
        + [from_ledger("UNDELIVERED", stat="UNDELIV", err=e) for e in ("001", "013", "027", None)],
        "EXPIRED": [from_ledger("EXPIRED")],
        "FAILED": [from_error_code(c) for c in ("0x0000000B", "0x00000058", "CMS1", "CME11", "call_failed")],
    }
    for state in outcomes.FAILED_CONTACT_STATES:
        assert all(o.failed_contact for o in samples[state]), state
    for state in ("PLANNED", "SUPPRESSED", "SUBMITTED", "DELIVERED", "UNKNOWN"):
        assert not from_ledger(state).failed_contact, state
    assert Outcome.DELIVERED.reached and Outcome.ANSWERED.reached and not Outcome.UNKNOWN.reached
