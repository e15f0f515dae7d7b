"""USCC, resident ID, legacy taxpayer IDs and account numbers, checked against DOMAIN.md's formulas."""

from __future__ import annotations

import random

import pytest

from include.dunning.identifiers import (
    USCC_ALPHABET,
    IdCheck,
    account_number,
    check_resident_id,
    check_taxpayer_id,
    check_uscc,
    organization_code_check_char,
)

# --- independent oracles, written from DOMAIN.md §4 rather than from the code under test --------


def uscc_check_char(first17: str) -> str:
    total = sum(USCC_ALPHABET.index(ch) * pow(3, i, 31) for i, ch in enumerate(first17))
    return USCC_ALPHABET[(31 - total % 31) % 31]


def ric_check_char(first17: str) -> str:
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return "10X98765432"[sum(int(d) * w for d, w in zip(first17, weights, strict=True)) % 11]


def org_check_char(body: str) -> str:
    values = [int(c) if c.isdigit() else ord(c) - ord("A") + 10 for c in body]
    c9 = 11 - sum(v * w for v, w in zip(values, (3, 7, 9, 10, 5, 8, 4, 2), strict=True)) % 11
    return "X" if c9 == 10 else "0" if c9 == 11 else str(c9)


def make_uscc(first8: str, org_body: str) -> str:
    first17 = first8 + org_body + org_check_char(org_body)
    return first17 + uscc_check_char(first17)


def make_ric(first17: str) -> str:
    return first17 + ric_check_char(first17)


def _wrong(ch: str, alphabet: str) -> str:
    return alphabet[(alphabet.index(ch) + 1) % len(alphabet)]


# --- USCC --------------------------------------------------------------------------------------

VALID_USCC = "91110000600037341L"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(VALID_USCC, id="stdnum-example"),
        pytest.param(" 91110000600037341l ", id="lower-case-and-blanks"),
        pytest.param("9111 0000 6000 3734 1L", id="grouped"),
        pytest.param("９１１１００００６０００３７３４１Ｌ", id="full-width"),
        pytest.param(make_uscc("N2330702", "MA2D3E4F"), id="agriculture-authority-letter-N"),
        pytest.param(make_uscc("Y1110105", "12345678"), id="other-authority-letter-Y"),
    ],
)
def test_valid_uscc(raw: str) -> None:
    result = check_uscc(raw)
    assert result.valid, result
    assert result.kind == "uscc"
    assert result.reason is None and result.review is False
    assert len(result.normalized) == 18 and result.normalized == result.normalized.upper()


def test_uscc_check_character_matches_the_gb32100_formula() -> None:
    rng = random.Random(32100)
    for _ in range(300):
        first8 = "9" + rng.choice("123") + "".join(rng.choices("0123456789", k=6))
        body = "".join(rng.choices("0123456789ABCDEFGHJKLMNPQRTUWXY", k=8))
        code = make_uscc(first8, body)
        assert check_uscc(code) == IdCheck(True, code, None, "uscc")
        broken = code[:17] + _wrong(code[17], USCC_ALPHABET)
        assert check_uscc(broken) == IdCheck(False, broken, "check character mismatch", "uscc", review=True)


def test_uscc_check_failure_is_flagged_for_review_not_dropped() -> None:
    result = check_uscc("91110000600037341A")
    assert (result.valid, result.review, result.reason) == (False, True, "check character mismatch")


@pytest.mark.parametrize(
    ("raw", "reason_part"),
    [
        pytest.param("9111000060003734", "length 16, expected 18", id="too-short"),
        pytest.param("91110000600037341LL", "length 19, expected 18", id="too-long"),
        pytest.param("91110000600O37341L", "invalid character 'O' at position 12", id="letter-O"),
        pytest.param("9111000060003734IL", "invalid character 'I'", id="letter-I"),
        pytest.param("91110000600037341S", "invalid character 'S'", id="letter-S"),
        pytest.param("91110000600037341V", "invalid character 'V'", id="letter-V"),
        pytest.param("91110000600037341Z", "invalid character 'Z'", id="letter-Z"),
        pytest.param("911100!0600037341L", "invalid character '!'", id="punctuation"),
        pytest.param("911A0000600037341L", "area code", id="letter-in-area-code"),
        pytest.param("", "empty", id="empty"),
        pytest.param(None, "empty", id="none"),
    ],
)
def test_uscc_format_errors_are_not_review_cases(raw: str | None, reason_part: str) -> None:
    result = check_uscc(raw)
    assert result.valid is False
    assert result.review is False
    assert result.reason is not None and reason_part in result.reason


def test_uscc_with_bad_embedded_organisation_code_is_valid_but_reviewed() -> None:
    body = "60003734"
    bad_org = body + _wrong(org_check_char(body), "0123456789")
    first17 = "91110000" + bad_org
    code = first17 + uscc_check_char(first17)
    result = check_uscc(code)
    assert (result.valid, result.review) == (True, True)
    assert result.reason == "embedded organisation code check mismatch"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param("60003734", "1", id="stdnum-example-org-code"),
        *(
            pytest.param(body, org_check_char(body), id=f"random-{body}")
            for body in (
                "".join(random.Random(n).choices("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", k=8))
                for n in range(8)
            )
        ),
    ],
)
def test_organization_code_check_char(body: str, expected: str) -> None:
    assert organization_code_check_char(body) == expected


def test_organization_code_check_char_covers_x_and_zero() -> None:
    seen = {organization_code_check_char(f"{n:08d}") for n in range(0, 2000)}
    assert {"X", "0"} <= seen
    for n in range(0, 2000, 7):
        assert organization_code_check_char(f"{n:08d}") == org_check_char(f"{n:08d}")


def test_organization_code_check_char_rejects_bad_body() -> None:
    with pytest.raises(ValueError, match="body"):
        organization_code_check_char("6000373")


# --- resident ID -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        pytest.param("11010519491231002X", "11010519491231002X", id="gb11643-example-X"),
        pytest.param("440524188001010014", "440524188001010014", id="gb11643-example-1880"),
        pytest.param("11010519491231002x", "11010519491231002X", id="lower-x"),
        pytest.param(" 110105 19491231 002X ", "11010519491231002X", id="blanks"),
        pytest.param(make_ric("11010520000229001"), make_ric("11010520000229001"), id="leap-day-2000"),
        pytest.param(make_ric("31011519960229123"), make_ric("31011519960229123"), id="leap-day-1996"),
    ],
)
def test_valid_resident_id(raw: str, normalized: str) -> None:
    assert check_resident_id(raw) == IdCheck(True, normalized, None, "resident_id")


def test_resident_id_check_digit_matches_iso7064() -> None:
    rng = random.Random(11643)
    for _ in range(300):
        first17 = "110105" + f"{rng.randint(1930, 2020)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        first17 += f"{rng.randint(0, 999):03d}"
        number = make_ric(first17)
        assert check_resident_id(number).valid, number
        broken = number[:17] + _wrong(number[17], "0123456789X")
        assert check_resident_id(broken) == IdCheck(False, broken, "check digit mismatch", "resident_id")


@pytest.mark.parametrize(
    ("raw", "reason_part"),
    [
        pytest.param("110105194912310021", "check digit mismatch", id="wrong-check-digit"),
        pytest.param(make_ric("11010519000229001"), "not a real date", id="1900-not-leap"),
        pytest.param(make_ric("11010520010229001"), "not a real date", id="2001-feb-29"),
        pytest.param(make_ric("11010519491331002"), "not a real date", id="month-13"),
        pytest.param(make_ric("11010519490100002"), "not a real date", id="day-0"),
        pytest.param(make_ric("11010517990101002"), "not a real date", id="implausible-year"),
        pytest.param("1101051949123100", "length 16, expected 18", id="short"),
        pytest.param("110105491231002", "first-generation 15-digit", id="first-generation"),
        pytest.param("1101051949123100X2", "invalid character", id="x-not-last"),
        pytest.param("", "empty", id="empty"),
    ],
)
def test_invalid_resident_id(raw: str, reason_part: str) -> None:
    result = check_resident_id(raw)
    assert result.valid is False and result.review is False
    assert result.reason is not None and reason_part in result.reason


def test_resident_id_birth_date_after_as_of_is_invalid() -> None:
    import datetime as dt

    number = make_ric("11010520260601001")
    assert check_resident_id(number).valid
    result = check_resident_id(number, as_of=dt.date(2026, 3, 16))
    assert result.valid is False and "after 2026-03-16" in (result.reason or "")


# --- taxpayer IDs ------------------------------------------------------------------------------

LEGACY_15 = "110105" + "60003734" + "1"


@pytest.mark.parametrize(
    ("raw", "kind", "valid", "review"),
    [
        pytest.param(LEGACY_15, "taxpayer_id_15", True, False, id="15-area-plus-org-code"),
        pytest.param("110105600037342", "taxpayer_id_15", False, False, id="15-bad-org-check"),
        pytest.param("110105491231002", "taxpayer_id_15", False, True, id="15-first-generation-id-card"),
        pytest.param("11010A600037341", "taxpayer_id_15", False, False, id="15-letter-in-area"),
        pytest.param(VALID_USCC, "uscc", True, False, id="18-uscc"),
        pytest.param("91110000600037341A", "uscc", False, True, id="18-uscc-check-failure-review"),
        pytest.param("11010519491231002X", "resident_id", True, False, id="18-resident-id"),
        pytest.param("440524188001010014", "resident_id", True, False, id="18-resident-id-1880"),
        pytest.param("110105194912310021", "resident_id", False, False, id="18-id-shaped-bad-check"),
        pytest.param("11010519491231002X01", "resident_id_suffixed", True, False, id="20-id-plus-suffix"),
        pytest.param("11010519491231002XAB", "resident_id_suffixed", False, False, id="20-letter-suffix"),
        pytest.param("11010519491231002101", "resident_id_suffixed", False, False, id="20-bad-id-part"),
        pytest.param("1234567890", "unknown", False, False, id="length-10"),
        pytest.param(None, "unknown", False, False, id="none"),
    ],
)
def test_check_taxpayer_id_dispatches_on_length(
    raw: str | None, kind: str, valid: bool, review: bool
) -> None:
    result = check_taxpayer_id(raw)
    assert (result.kind, result.valid, result.review) == (kind, valid, review), result
    assert (result.reason is None) == (valid and not review)


def test_every_valid_resident_id_is_a_valid_taxpayer_id() -> None:
    rng = random.Random(18)
    for _ in range(200):
        number = make_ric(
            f"{rng.randint(110000, 659999)}{rng.randint(1940, 2010)}0{rng.randint(1, 9)}1{rng.randint(0, 9)}"
            f"{rng.randint(0, 999):03d}"
        )
        result = check_taxpayer_id(number)
        assert result.valid, result
        assert result.kind in ("resident_id", "uscc")  # an all-digit string can pass both checks
        assert check_taxpayer_id(number + "07").valid


# --- electricity account numbers ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "allowed", "valid", "normalized", "reason"),
    [
        pytest.param("0123456789", (10, 13), True, "0123456789", None, id="10-digits-leading-zero"),
        pytest.param("1234567890123", (10, 13), True, "1234567890123", None, id="13-digits"),
        pytest.param(" 1234 567 890 ", (10, 13), True, "1234567890", None, id="blanks"),
        pytest.param("１２３４５６７８９０", (10, 13), True, "1234567890", None, id="full-width"),
        pytest.param("12345678901", (10, 13), False, "12345678901", "length 11, allowed 10 or 13", id="11"),
        pytest.param("123456789A", (10, 13), False, "123456789A", "non-digit character", id="letter"),
        pytest.param(
            "1234567890.0", (10, 13), False, "1234567890.0", "non-digit character", id="excel-float"
        ),
        pytest.param("12345678", (8,), True, "12345678", None, id="utility-specific-length"),
        pytest.param("", (10, 13), False, "", "empty", id="empty"),
        pytest.param(None, (10, 13), False, "", "empty", id="none"),
    ],
)
def test_account_number(
    raw: str | None, allowed: tuple[int, ...], valid: bool, normalized: str, reason: str | None
) -> None:
    assert account_number(raw, allowed) == IdCheck(valid, normalized, reason, "account_number")


def test_account_number_refuses_integers_which_lose_leading_zeros() -> None:
    result = account_number(123456789, (9, 10))  # type: ignore[arg-type]
    assert result.valid is False and "leading zeros" in (result.reason or "")
