"""Tests for the SMS PDU codec (3GPP TS 23.040 / 23.038): reference vectors, round trips, refusals."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from include.dunning.pdu import (
    MessageTooLong,
    PduError,
    SmsDeliver,
    SmsStatusReport,
    SmsSubmit,
    UnencodableText,
    decode_address,
    decode_pdu,
    decode_scts,
    encode_address,
    encode_deliver,
    encode_scts,
    encode_status_report,
    encode_submit,
    pack_septets,
    relative_validity,
    unpack_septets,
)
from include.dunning.sms import concat_udh, encode_gsm7, reference_for

CST = timezone(timedelta(hours=8))
SIGNATURE = "【12366】"


def test_pack_septets_hellohello_example() -> None:
    # TS 23.038 §6.1.2.1.1 packing; "hellohello" is the classic worked example.
    assert pack_septets(encode_gsm7("hellohello")).hex().upper() == "E8329BFD4697D9EC37"
    assert unpack_septets(bytes.fromhex("E8329BFD4697D9EC37"), 10) == encode_gsm7("hellohello")


@pytest.mark.parametrize("fill", [0, 1, 6], ids=["no-fill", "fill-1", "fill-6"])
def test_unpack_reverses_pack_with_fill_bits(fill: int) -> None:
    septets = encode_gsm7("Pay {now} 10€")
    assert unpack_septets(pack_septets(septets, fill), len(septets), fill) == septets


def test_encode_submit_matches_reference_pdu() -> None:
    # Reference SMS-SUBMIT: no SMSC, to +46708251358, relative validity 0xAA (4 days), "hellohello".
    pdus = encode_submit("+46708251358", "hellohello", status_report=False, validity_minutes=4 * 1440)
    assert [(p.hex, p.tpdu_length) for p in pdus] == [
        ("0011000B916407281553F80000AA0AE8329BFD4697D9EC37", 23)
    ]


def test_status_report_request_sets_tp_srr() -> None:
    (pdu,) = encode_submit("13812348000", "hi", status_report=True, validity_minutes=None)
    first_octet = bytes.fromhex(pdu.hex)[1]
    assert first_octet & 0x20
    assert first_octet & 0x18 == 0  # no validity period field
    decoded = decode_pdu(pdu.hex)
    assert isinstance(decoded, SmsSubmit) and decoded.status_report


def test_decode_reference_deliver() -> None:
    decoded = decode_pdu("07917283010010F5040BC87238880900F10000993092516195800AE8329BFD4697D9EC37")
    assert isinstance(decoded, SmsDeliver)
    assert (decoded.sender, decoded.text, decoded.smsc) == ("27838890001", "hellohello", "+27381000015")
    assert decoded.timestamp == datetime(1999, 3, 29, 15, 16, 59, tzinfo=timezone(timedelta(hours=2)))


def test_decode_public_status_report() -> None:
    decoded = decode_pdu("0006D60B911326880736F4111011719551401110117195714000")
    assert isinstance(decoded, SmsStatusReport)
    assert (decoded.reference, decoded.recipient, decoded.status) == (214, "+31628870634", 0)
    assert decoded.delivered and decoded.final and decoded.stat == "DELIVRD"
    assert decoded.discharged - decoded.submitted == timedelta(seconds=2)


@pytest.mark.parametrize(
    ("text", "parts", "coding"),
    [
        pytest.param(SIGNATURE + "您好，您的增值税尚未缴纳。", 1, 8, id="chinese-one-part"),
        pytest.param(SIGNATURE + "税" * 64, 2, 8, id="chinese-71-two-parts"),
        pytest.param(SIGNATURE + "税" * 128, 3, 8, id="chinese-135-three-parts"),
        pytest.param("a" * 160, 1, 0, id="gsm7-160-one"),
        pytest.param("a" * 161, 2, 0, id="gsm7-161-two"),
        pytest.param("Pay {ref} [now] 10€ | ~x^ \\ " * 12, 3, 0, id="gsm7-extension-chars"),
        pytest.param("税务提醒 😀 𠀀𠀁 " * 10, 2, 8, id="emoji-and-cjk-ext-b"),
    ],
)
def test_submit_round_trip(text: str, parts: int, coding: int) -> None:
    reference = reference_for("2026-05|debtor-1|step1|sms|1")
    pdus = encode_submit("13812348000", text, concat_reference=reference)
    assert len(pdus) == parts
    decoded = [decode_pdu(p.hex) for p in pdus]
    assert all(isinstance(d, SmsSubmit) for d in decoded)
    assert "".join(d.text for d in decoded) == text
    assert {d.data_coding for d in decoded} == {coding}
    assert [(d.part, d.total) for d in decoded] == [(i, parts) for i in range(1, parts + 1)]
    assert {d.destination for d in decoded} == {"13812348000"}
    if parts > 1:
        assert {d.concat_reference for d in decoded} == {reference}
    for pdu in pdus:
        assert len(bytes.fromhex(pdu.hex)) == pdu.tpdu_length + 1  # "00": the SIM's SMSC
        assert pdu.tpdu_length <= 164


def test_concatenated_gsm7_udl_counts_header_septets() -> None:
    pdus = encode_submit("13812348000", "b" * 200, concat_reference=1, validity_minutes=None)
    tpdu = bytes.fromhex(pdus[0].hex)[1:]
    udl_pos = 2 + 2 + 6 + 2  # first octet, MR, address (len, type, 6 octets), PID, DCS
    assert tpdu[udl_pos] == 160  # 7 septets of UDH (6 octets + 1 fill bit) + 153 of text
    assert tpdu[udl_pos + 1 : udl_pos + 7] == concat_udh(1, 2, 1)


def test_surrogate_pair_never_split_across_parts() -> None:
    text = "税" * 66 + "😀" + "尾" * 10
    decoded = [decode_pdu(p.hex) for p in encode_submit("13812348000", text)]
    assert [d.text for d in decoded] == ["税" * 66, "😀" + "尾" * 10]


def test_non_bmp_refused_with_reason_when_not_allowed() -> None:
    with pytest.raises(UnencodableText, match=r"character 4 \(U\+1F600\) is outside UCS2") as info:
        encode_submit("13812348000", "税务提醒😀", allow_surrogates=False)
    assert info.value.position == 4


def test_lone_surrogate_refused() -> None:
    with pytest.raises(UnencodableText, match="lone surrogate"):
        encode_submit("13812348000", "abc\ud800")


def test_too_many_parts_refused() -> None:
    with pytest.raises(MessageTooLong):
        encode_submit("13812348000", "税" * 400, max_parts=3)


@pytest.mark.parametrize(
    ("number", "encoded"),
    [
        pytest.param("13812348000", "0B813118328400F0", id="national-odd"),
        pytest.param("+8613812348000", "0D91683118328400F0", id="international"),
        pytest.param("12366", "05812163F6", id="service-code"),
    ],
)
def test_address_round_trip(number: str, encoded: str) -> None:
    assert encode_address(number).hex().upper() == encoded
    assert decode_address(bytes.fromhex(encoded), 0) == (number, len(encoded) // 2)


def test_address_refuses_letters() -> None:
    with pytest.raises(ValueError, match="not a dialable number"):
        encode_address("1381234abcd")


@pytest.mark.parametrize(
    ("minutes", "octet"),
    [
        pytest.param(5, 0, id="5-min"),
        pytest.param(720, 143, id="12-hours"),
        pytest.param(1440, 167, id="1-day"),
        pytest.param(4 * 1440, 170, id="4-days"),
        pytest.param(35 * 1440, 197, id="5-weeks"),
    ],
)
def test_relative_validity(minutes: int, octet: int) -> None:
    assert relative_validity(minutes) == octet


def test_scts_round_trip_keeps_time_zone() -> None:
    moment = datetime(2026, 5, 14, 9, 30, 5, tzinfo=CST)
    assert decode_scts(encode_scts(moment)) == moment
    west = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5)))
    assert decode_scts(encode_scts(west)) == west


def test_deliver_round_trip_chinese_reply_and_long_part() -> None:
    moment = datetime(2026, 5, 14, 9, 30, 0, tzinfo=CST)
    decoded = decode_pdu(encode_deliver("13812348000", "退订", moment))
    assert isinstance(decoded, SmsDeliver)
    assert (decoded.sender, decoded.text, decoded.timestamp, decoded.total) == (
        "13812348000",
        "退订",
        moment,
        1,
    )
    part = decode_pdu(encode_deliver("+8613812348000", "TD please", moment, udh=concat_udh(9, 2, 2)))
    assert (part.text, part.concat_reference, part.part, part.total) == ("TD please", 9, 2, 2)


@pytest.mark.parametrize(
    ("status", "stat", "final"),
    [
        pytest.param(0x00, "DELIVRD", True, id="delivered"),
        pytest.param(0x21, "ENROUTE", False, id="busy-still-trying"),
        pytest.param(0x46, "EXPIRED", True, id="expired"),
        pytest.param(0x41, "REJECTD", True, id="incompatible"),
        pytest.param(0x62, "UNDELIV", True, id="no-response-stopped"),
    ],
)
def test_status_report_round_trip(status: int, stat: str, final: bool) -> None:
    sent = datetime(2026, 5, 14, 9, 30, 0, tzinfo=CST)
    pdu_hex, length = encode_status_report(42, "13812348000", status, sent, sent + timedelta(seconds=4))
    assert len(bytes.fromhex(pdu_hex)) > length
    decoded = decode_pdu(pdu_hex)
    assert isinstance(decoded, SmsStatusReport)
    assert (decoded.reference, decoded.recipient, decoded.stat, decoded.final) == (
        42,
        "13812348000",
        stat,
        final,
    )


@pytest.mark.parametrize(
    ("pdu_hex", "message"),
    [
        pytest.param("zz", "not hexadecimal", id="not-hex"),
        pytest.param("", "empty PDU", id="empty"),
        pytest.param("0791727301", "SMSC information is longer", id="short-smsc"),
        pytest.param("00040BC8723888", "truncated", id="truncated-address"),
        pytest.param("0003", "reserved", id="reserved-mti"),
    ],
)
def test_malformed_pdus_raise_pdu_error(pdu_hex: str, message: str) -> None:
    with pytest.raises(PduError, match=message):
        decode_pdu(pdu_hex)
