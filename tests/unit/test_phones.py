"""Mobile number normalisation, quarantine reasons and masking."""

from __future__ import annotations

import random

import phonenumbers
import pytest

from include.dunning.phones import DATA_ONLY_PREFIXES, mask, mobile_problem, normalize_mobile


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("13800138000", id="clean"),
        pytest.param(" 13800138000\t", id="surrounding-blanks"),
        pytest.param("138 0013 8000", id="grouped"),
        pytest.param("138-0013-8000", id="hyphens"),
        pytest.param("138.0013.8000", id="dots"),
        pytest.param("(138)0013-8000", id="parentheses"),
        pytest.param("+86 138 0013 8000", id="plus-86"),
        pytest.param("+86-13800138000", id="plus-86-hyphen"),
        pytest.param("(+86) 13800138000", id="plus-86-in-parentheses"),
        pytest.param("0086 13800138000", id="0086"),
        pytest.param("8613800138000", id="86-without-plus"),
        pytest.param("１３８００１３８０００", id="full-width-digits"),
        pytest.param("＋８６ １３８－００１３－８０００", id="full-width-plus-and-hyphen"),
        pytest.param("（＋８６）13800138000", id="full-width-parentheses"),
        pytest.param("138\u00a00013\u30008000", id="nbsp-and-ideographic-space"),
        pytest.param(13800138000, id="integer-from-a-dataframe"),
    ],
)
def test_normalize_mobile_accepts_written_forms(raw: str) -> None:
    assert normalize_mobile(raw) == "13800138000"
    assert mobile_problem(raw) is None


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        pytest.param(None, "empty", id="none"),
        pytest.param("", "empty", id="empty"),
        pytest.param(" - ", "empty", id="only-separators"),
        pytest.param("1380013800", "not 11 digits after normalisation", id="10-digits"),
        pytest.param("138001380001", "not 11 digits after normalisation", id="12-digits"),
        pytest.param("1380013800O", "not 11 digits after normalisation", id="letter-O"),
        pytest.param("+1 415 555 0100", "not 11 digits after normalisation", id="foreign"),
        pytest.param("+852 6123 4567", "not 11 digits after normalisation", id="hong-kong"),
        pytest.param("13800138000 ext 1", "not 11 digits after normalisation", id="extension"),
        pytest.param(12.5, "not 11 digits after normalisation", id="float"),
        pytest.param("010-88886666", "not a mobile prefix", id="beijing-landline"),
        pytest.param("12800138000", "not a mobile prefix", id="12x"),
        pytest.param("86138001380", "not a mobile prefix", id="86-then-too-short"),
        pytest.param("10086000000", "not a mobile prefix", id="service-number-shape"),
        pytest.param("15400138000", "unallocated number range", id="154x"),
        pytest.param("19400138000", "unallocated number range", id="194x"),
        pytest.param("14000138000", "unallocated number range", id="140-iot"),
        pytest.param("14500138000", "data-only number range", id="145"),
        pytest.param("14700138000", "data-only number range", id="147"),
        pytest.param("14900138000", "data-only number range", id="149"),
        pytest.param("+86 147 0013 8000", "data-only number range", id="147-with-prefix"),
    ],
)
def test_mobile_problem_reasons(raw: object, problem: str) -> None:
    assert mobile_problem(raw) == problem  # type: ignore[arg-type]
    assert normalize_mobile(raw) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "number",
    ["13012345678", "15912345678", "16612345678", "17012345678", "18812345678", "19912345678", "19212345678"],
)
def test_common_ranges_are_accepted(number: str) -> None:
    assert normalize_mobile(number) == number


def test_data_only_ranges_are_rejected_even_where_libphonenumber_accepts_them() -> None:
    # libphonenumber calls 145/147 numbers valid mobiles, which is why the explicit rule exists.
    for prefix in sorted(DATA_ONLY_PREFIXES):
        number = prefix + "12345678"
        assert mobile_problem(number) == "data-only number range"
    accepted_by_libphonenumber = {
        p
        for p in DATA_ONLY_PREFIXES
        if phonenumbers.is_valid_number(phonenumbers.parse("+86" + p + "12345678"))
    }
    assert accepted_by_libphonenumber <= DATA_ONLY_PREFIXES


def test_validity_depends_only_on_the_5_digit_prefix() -> None:
    """The prefix cache is sound: libphonenumber's CN verdict never depends on digits 6-11."""
    rng = random.Random(86)
    for prefix in range(13000, 20000):
        suffixes = ("000000", "999999", f"{rng.randint(0, 999999):06d}", f"{rng.randint(0, 999999):06d}")
        verdicts = {
            phonenumbers.is_valid_number(phonenumbers.parse(f"+86{prefix}{suffix}")) for suffix in suffixes
        }
        assert len(verdicts) == 1, prefix


def test_normalize_mobile_agrees_with_libphonenumber_outside_data_only_ranges() -> None:
    rng = random.Random(11)
    for _ in range(3000):
        number = f"1{rng.randint(3, 9)}{rng.randint(0, 999999999):09d}"
        expected = phonenumbers.is_valid_number(phonenumbers.parse("+86" + number)) and (
            number[:3] not in DATA_ONLY_PREFIXES
        )
        assert (normalize_mobile(number) == number) is expected, number
        assert normalize_mobile("+86 " + number) == normalize_mobile(number)


# --- masking ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        pytest.param("13800138000", "138****8000", id="normalised"),
        pytest.param("+86 138-0013-8000", "138****8000", id="raw-with-prefix"),
        pytest.param(13800138000, "138****8000", id="integer"),
        pytest.param("15400138000", "154****8000", id="unallocated-still-masked"),
        pytest.param("1380013800", "13****00", id="10-chars"),
        pytest.param("12345678", "12****78", id="8-chars"),
        pytest.param("1234567", "****", id="7-chars"),
        pytest.param("123", "****", id="short"),
        pytest.param("", "<empty>", id="empty"),
        pytest.param("   ", "<empty>", id="blank"),
        pytest.param(None, "<empty>", id="none"),
    ],
)
def test_mask(raw: object, masked: str) -> None:
    assert mask(raw) == masked  # type: ignore[arg-type]


def test_mask_never_reveals_more_than_first_3_and_last_4() -> None:
    rng = random.Random(3)
    for length in range(0, 25):
        for _ in range(20):
            secret = "".join(rng.choices("0123456789", k=length))
            masked = mask(secret)
            if not secret:
                assert masked == "<empty>"
                continue
            visible = masked.replace("*", "")
            assert len(visible) <= 7
            assert length - len(visible) >= min(4, length), (secret, masked)  # at least 4 hidden
            head, _, tail = masked.partition("****")
            assert secret.startswith(head) and secret.endswith(tail)
