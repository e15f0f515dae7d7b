"""Tests for delivery receipt parsing and message id normalisation."""

from __future__ import annotations

from datetime import datetime

import pytest

from include.dunning.receipts import (
    DeliveryReceipt,
    merge_receipt_tlvs,
    message_state_name,
    normalize_message_id,
    parse_receipt_text,
)

STANDARD = (
    "id:0000A1B2C3 sub:001 dlvrd:001 submit date:2605151030 done date:2605151031 "
    "stat:DELIVRD err:000 text:您好，请于本月15日前缴"
)


def test_parse_standard_receipt() -> None:
    receipt = parse_receipt_text(STANDARD)
    assert receipt == DeliveryReceipt(
        message_id="a1b2c3",
        stat="DELIVRD",
        err="000",
        dlvrd="001",
        sub="001",
        submit_date=datetime(2026, 5, 15, 10, 30),
        done_date=datetime(2026, 5, 15, 10, 31),
        text="您好，请于本月15日前缴",
    )
    assert receipt.delivered and receipt.final
    assert receipt.state_name == "DELIVERED"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "ID:42 SUB:001 DLVRD:000 SUBMIT DATE:2605151030 DONE DATE:2605151031 STAT:undeliv ERR:001 TEXT:x",
            {"message_id": "42", "stat": "UNDELIV", "err": "001", "dlvrd": "000"},
            id="upper-case-keys-lower-stat",
        ),
        pytest.param(
            "id:7 submit date:260515103045 done date:260515103159 stat:EXPIRED err:0",
            {
                "message_id": "7",
                "stat": "EXPIRED",
                "submit_date": datetime(2026, 5, 15, 10, 30, 45),
                "done_date": datetime(2026, 5, 15, 10, 31, 59),
                "text": "",
            },
            id="12-digit-dates-no-text",
        ),
        pytest.param(
            "id:abc stat:DELIVRD", {"message_id": "abc", "sub": "", "submit_date": None}, id="minimal"
        ),
        pytest.param(
            "id:9 stat:REJECTD err:0B text:stat:DELIVRD id:1",
            {"message_id": "9", "stat": "REJECTD", "text": "stat:DELIVRD id:1"},
            id="text-field-holds-field-names",
        ),
        pytest.param(
            "id:9 submit date:2613991030 stat:DELIVRD",
            {"submit_date": None, "stat": "DELIVRD"},
            id="impossible-date-is-none",
        ),
    ],
)
def test_parse_tolerates_variants(text: str, expected: dict[str, object]) -> None:
    receipt = parse_receipt_text(text)
    assert receipt is not None
    for name, value in expected.items():
        assert getattr(receipt, name) == value, name


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("TD", id="opt-out-reply"),
        pytest.param("stat:DELIVRD err:000", id="no-id"),
        pytest.param("", id="empty"),
    ],
)
def test_not_a_receipt(text: str) -> None:
    assert parse_receipt_text(text) is None


def test_parse_bytes() -> None:
    receipt = parse_receipt_text(b"id:0001 stat:DELIVRD")
    assert receipt is not None and receipt.message_id == "1"


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        pytest.param(" 00A1B2 ", "a1b2", id="strip-zeros-lower"),
        pytest.param(b"0000000042\x00", "42", id="bytes-nul"),
        pytest.param("000", "0", id="all-zeros"),
        pytest.param(42, "42", id="int"),
        pytest.param(None, "", id="none"),
    ],
)
def test_normalize_message_id(raw: object, normalised: str) -> None:
    assert normalize_message_id(raw) == normalised  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("decimal", "hexa"),
    [
        pytest.param("6699", "1A2B", id="plain"),
        pytest.param("0000000042", "000000002a", id="padded"),
        pytest.param("255", "ff", id="ff"),
    ],
)
def test_mixed_bases_decimal_and_hex_agree(decimal: str, hexa: str) -> None:
    assert normalize_message_id(decimal, mixed_bases=True) == normalize_message_id(hexa, mixed_bases=True)
    assert normalize_message_id(decimal) != normalize_message_id(hexa)


@pytest.mark.parametrize(
    ("state", "name"),
    [
        pytest.param(1, "ENROUTE", id="1"),
        pytest.param(2, "DELIVERED", id="2"),
        pytest.param(3, "EXPIRED", id="3"),
        pytest.param(4, "DELETED", id="4"),
        pytest.param(5, "UNDELIVERABLE", id="5"),
        pytest.param(6, "ACCEPTED", id="6"),
        pytest.param(7, "UNKNOWN", id="7"),
        pytest.param(8, "REJECTED", id="8"),
        pytest.param(99, "STATE_99", id="unknown-value"),
    ],
)
def test_message_state_name(state: int, name: str) -> None:
    assert message_state_name(state) == name


def test_tlvs_win_over_text() -> None:
    text = parse_receipt_text("id:0000000042 stat:DELIVRD err:000")
    merged = merge_receipt_tlvs(text, receipted_message_id=b"000000002a", message_state=5)
    assert merged is not None
    assert (merged.message_id, merged.stat, merged.message_state) == ("2a", "UNDELIV", 5)
    assert not merged.delivered


def test_tlvs_alone_make_a_receipt() -> None:
    merged = merge_receipt_tlvs(None, receipted_message_id="00ff", message_state=2)
    assert merged is not None and merged.message_id == "ff" and merged.delivered


def test_no_text_no_tlv_is_none() -> None:
    assert merge_receipt_tlvs(None, receipted_message_id=None, message_state=2) is None
