"""Tests for the SMS codec: alphabet choice, part counts, splitting, UDH and decoding."""

from __future__ import annotations

import pytest

from include.dunning.sms import (
    ConcatInfo,
    MessageTooLong,
    choose_coding,
    concat_udh,
    decode_payload,
    encode_gsm7,
    gsm7_septets,
    parse_udh,
    reference_for,
    sms_parts,
    split_text,
)

SIGNATURE = "【12366】"


@pytest.mark.parametrize(
    ("text", "coding"),
    [
        pytest.param("Please pay your tax by 15 May.", 0, id="ascii-gsm7"),
        pytest.param("Prix: 10€ {ref} [a|b] ~x^ \\", 0, id="extension-chars-gsm7"),
        pytest.param("Ärger über Ñoño à 5£ §1 ¿?", 0, id="gsm-accented-gsm7"),
        pytest.param("您好，请缴税", 8, id="chinese-ucs2"),
        pytest.param("Pay now 😀", 8, id="emoji-ucs2"),
        pytest.param("back`tick", 8, id="backtick-not-gsm-ucs2"),
        pytest.param("café", 0, id="e-acute-gsm7"),
        pytest.param("garçon", 8, id="lower-c-cedilla-ucs2"),
    ],
)
def test_choose_coding(text: str, coding: int) -> None:
    assert choose_coding(text) == coding


@pytest.mark.parametrize(
    ("chinese_chars", "parts"),
    [
        pytest.param(70, 1, id="70-one-part"),
        pytest.param(71, 2, id="71-two-parts"),
        pytest.param(134, 2, id="134-two-parts"),
        pytest.param(135, 3, id="135-three-parts"),
    ],
)
def test_sms_parts_chinese_including_signature(chinese_chars: int, parts: int) -> None:
    text = SIGNATURE + "税" * (chinese_chars - len(SIGNATURE))
    assert len(text) == chinese_chars
    assert sms_parts(text) == parts
    assert len(split_text(text).parts) == parts


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        pytest.param("a" * 160, 1, id="160-septets-one"),
        pytest.param("a" * 161, 2, id="161-septets-two"),
        pytest.param("a" * 306, 2, id="306-septets-two"),
        pytest.param("a" * 307, 3, id="307-septets-three"),
        pytest.param("€" * 80, 1, id="80-euro-is-160-septets"),
        pytest.param("a" * 159 + "€", 2, id="euro-pushes-over-160"),
    ],
)
def test_sms_parts_gsm7(text: str, parts: int) -> None:
    assert sms_parts(text) == parts


def test_extension_chars_count_two_septets() -> None:
    assert gsm7_septets("^{}\\[~]|€") == 18
    assert encode_gsm7("€") == b"\x1b\x65"


def test_non_bmp_char_counts_two_units() -> None:
    assert sms_parts("😀" * 35) == 1
    assert sms_parts("😀" * 35 + "a") == 2


def test_split_never_cuts_a_gsm_escape_pair() -> None:
    text = "a" * 152 + "€" + "b" * 10  # the escape would land on octet 153
    encoded = split_text(text)
    assert encoded.data_coding == 0
    assert len(encoded.parts[0]) == 152
    assert encoded.parts[1].startswith(b"\x1b\x65")
    assert decode_payload(0, b"".join(encoded.parts)) == text
    assert all(decode_payload(0, p) for p in encoded.parts)


def test_split_never_cuts_a_surrogate_pair() -> None:
    text = "税" * 66 + "😀" + "税" * 10  # the emoji's high surrogate is unit 67
    encoded = split_text(text)
    assert encoded.data_coding == 8
    assert len(encoded.parts[0]) == 132
    for part in encoded.parts:
        part.decode("utf-16-be")  # each part decodes on its own
    assert decode_payload(8, b"".join(encoded.parts)) == text


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(
            SIGNATURE + "您好，您本月的电费尚未缴纳，请尽快缴费，逾期将产生违约金。" * 5, id="chinese"
        ),
        pytest.param("Reminder: pay {amount} [due] €5 | ref~1 ^_^ " * 9, id="gsm-extension"),
        pytest.param("x", id="tiny"),
        pytest.param("", id="empty"),
    ],
)
def test_split_round_trips(text: str) -> None:
    encoded = split_text(text)
    assert decode_payload(encoded.data_coding, b"".join(encoded.parts)) == text
    assert encoded.text == text


def test_max_parts_exceeded_names_counts() -> None:
    with pytest.raises(MessageTooLong, match=r"needs 3 SMS parts; the maximum is 2") as info:
        split_text("税" * 135, max_parts=2)
    assert isinstance(info.value, ValueError)
    assert (info.value.parts_needed, info.value.max_parts) == (3, 2)


def test_max_parts_not_exceeded() -> None:
    assert len(split_text("税" * 134, max_parts=2).parts) == 2


def test_concat_udh_layout() -> None:
    assert concat_udh(0xAB, 3, 2) == bytes([5, 0, 3, 0xAB, 3, 2])


@pytest.mark.parametrize(
    ("args"),
    [pytest.param((256, 2, 1), id="ref-too-big"), pytest.param((1, 2, 3), id="seq-after-total")],
)
def test_concat_udh_rejects_bad_values(args: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError):
        concat_udh(*args)


@pytest.mark.parametrize(
    ("payload", "info", "body"),
    [
        pytest.param(bytes([5, 0, 3, 7, 2, 1]) + b"hi", ConcatInfo(7, 2, 1, 8), b"hi", id="iei-00-8bit"),
        pytest.param(
            bytes([6, 8, 4, 0x12, 0x34, 3, 3]) + b"yo", ConcatInfo(0x1234, 3, 3, 16), b"yo", id="iei-08-16bit"
        ),
        pytest.param(bytes([4, 0x0A, 2, 0, 0]) + b"zz", None, b"zz", id="other-iei-only"),
        pytest.param(
            bytes([9, 0x0A, 2, 0, 0, 0, 3, 9, 4, 4]) + b"q",
            ConcatInfo(9, 4, 4, 8),
            b"q",
            id="concat-after-other",
        ),
    ],
)
def test_parse_udh(payload: bytes, info: ConcatInfo | None, body: bytes) -> None:
    assert parse_udh(payload) == (info, body)


def test_parse_udh_round_trips_concat_udh() -> None:
    info, body = parse_udh(concat_udh(200, 4, 3) + b"body")
    assert info == ConcatInfo(reference=200, total=4, sequence=3)
    assert body == b"body"


def test_parse_udh_rejects_truncated_header() -> None:
    with pytest.raises(ValueError):
        parse_udh(bytes([5, 0, 3, 1]))


@pytest.mark.parametrize(
    ("coding", "body", "text"),
    [
        pytest.param(0, b"\x00\x01\x1b\x65\x11", "@£€_", id="gsm7"),
        pytest.param(8, "税😀".encode("utf-16-be"), "税😀", id="ucs2"),
        pytest.param(3, "ñé".encode("latin-1"), "ñé", id="latin1"),
        pytest.param(1, b"id:1 stat", "id:1 stat", id="ascii"),
    ],
)
def test_decode_payload(coding: int, body: bytes, text: str) -> None:
    assert decode_payload(coding, body) == text


def test_decode_payload_rejects_unknown_coding() -> None:
    with pytest.raises(ValueError, match="0x04"):
        decode_payload(4, b"\x01")


def test_gsm_section_sign_is_not_backtick() -> None:
    assert encode_gsm7("§") == b"\x5f"
    with pytest.raises(ValueError):
        encode_gsm7("`")


def test_reference_for_is_stable_and_spread() -> None:
    assert reference_for("2026-05|TAX-1|step1|sms|1") == reference_for("2026-05|TAX-1|step1|sms|1")
    refs = {reference_for(f"key-{i}") for i in range(200)}
    assert all(0 <= r <= 255 for r in refs)
    assert len(refs) > 100
