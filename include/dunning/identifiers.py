"""Identifier checks: USCC, resident ID, legacy taxpayer IDs, electricity account numbers.

Every check returns an :class:`IdCheck` and never raises on bad data, so it can run over
millions of rows; the ``reason`` goes into quarantine messages. ``review=True`` marks a
value that fails a check yet may be legal (early pilot USCCs): keep the row and flag it
for a person instead of dropping it.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass

from stdnum.cn import ric, uscc

__all__ = [
    "USCC_ALPHABET",
    "IdCheck",
    "account_number",
    "check_resident_id",
    "check_taxpayer_id",
    "check_uscc",
    "organization_code_check_char",
]

#: GB 32100-2015 character set: digits and capitals without I, O, S, V, Z.
USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_CHARS = frozenset(USCC_ALPHABET)
_ORG_CODE_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
_ORG_CODE_BODY = re.compile(r"[0-9A-Z]{8}", re.ASCII)
_DIGITS = re.compile(r"[0-9]+", re.ASCII)
_SEPARATORS = re.compile(r"[\s\-]+")
#: The earliest birth year accepted on a resident ID (GB 11643 examples go back to 1880).
MIN_BIRTH_YEAR = 1850


@dataclass(frozen=True, slots=True)
class IdCheck:
    """The outcome of checking one identifier.

    :param valid: the value passed every check that decides validity.
    :param normalized: the cleaned value (also when invalid, for quarantine output).
    :param reason: why it failed or needs review; ``None`` when clean.
    :param kind: what the value was checked as: ``uscc``, ``resident_id``,
        ``taxpayer_id_15``, ``resident_id_suffixed``, ``account_number`` or ``unknown``.
    :param review: a person should look at it: it failed a check but may be legal.
    """

    valid: bool
    normalized: str
    reason: str | None
    kind: str
    review: bool = False


def _normalize(raw: object) -> str | None:
    """Return the NFKC-normalised, upper-cased value without blanks and hyphens, or None."""
    if not isinstance(raw, str):
        return None
    return _SEPARATORS.sub("", unicodedata.normalize("NFKC", raw)).upper()


def _not_a_string(raw: object, kind: str) -> IdCheck:
    if raw is None:
        return IdCheck(False, "", "empty", kind)
    return IdCheck(False, "", f"not a string ({type(raw).__name__}; leading zeros may be lost)", kind)


def organization_code_check_char(body: str) -> str:
    """Return the GB 11714 check character for an 8-character organisation code body.

    :param body: the first 8 characters, digits and capital letters.
    :raises ValueError: if ``body`` is not 8 characters of ``[0-9A-Z]``.
    """
    if not _ORG_CODE_BODY.fullmatch(body):
        raise ValueError(f"body must be 8 characters of 0-9/A-Z, got {body!r}")
    total = sum(int(ch, 36) * weight for ch, weight in zip(body, _ORG_CODE_WEIGHTS, strict=True))
    check = 11 - total % 11
    return {10: "X", 11: "0"}.get(check, str(check))


def _org_code_ok(code: str) -> bool:
    return bool(_ORG_CODE_BODY.fullmatch(code[:8])) and organization_code_check_char(code[:8]) == code[8]


def check_uscc(code: str | None) -> IdCheck:
    """Check a Unified Social Credit Code (统一社会信用代码, GB 32100-2015).

    Format errors (length, characters outside the GB 32100 set, a non-numeric area code)
    are invalid without review. A check character mismatch is invalid *with* review,
    reason ``"check character mismatch"``: a few early pilot codes fail the check yet are
    legal. A correct check character over an organisation code (positions 9-17) that fails
    its own GB 11714 check is valid with review. Unlike ``stdnum.cn.uscc.validate``, letters
    are accepted in positions 1-2 (registration authorities A, N, Y exist).

    :param code: the code as found in the data.
    """
    kind = "uscc"
    value = _normalize(code)
    if value is None:
        return _not_a_string(code, kind)
    if not value:
        return IdCheck(False, value, "empty", kind)
    if len(value) != 18:
        return IdCheck(False, value, f"length {len(value)}, expected 18", kind)
    for position, ch in enumerate(value, start=1):
        if ch not in _USCC_CHARS:
            return IdCheck(
                False, value, f"invalid character {ch!r} at position {position} (not in GB 32100 set)", kind
            )
    if not value[2:8].isdigit():
        return IdCheck(False, value, "area code (positions 3-8) is not numeric", kind)
    if uscc.calc_check_digit(value[:17]) != value[17]:
        return IdCheck(False, value, "check character mismatch", kind, review=True)
    if not _org_code_ok(value[8:17]):
        return IdCheck(True, value, "embedded organisation code check mismatch", kind, review=True)
    return IdCheck(True, value, None, kind)


def _birth_date(value: str) -> dt.date | None:
    try:
        born = dt.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return None
    return born if born.year >= MIN_BIRTH_YEAR else None


def check_resident_id(number: str | None, *, as_of: dt.date | None = None) -> IdCheck:
    """Check an 18-digit resident ID number (居民身份证号码, GB 11643-1999).

    ISO 7064 MOD 11-2 check character (``x`` is read as ``X``) and a real birth date
    (positions 7-14, not before 1850, not after ``as_of`` when given). The area code is
    not checked against the county list: ``stdnum.cn.ric.validate`` does, and rejects the
    standard's own example 440524188001010014 because that county code postdates 1880.

    :param number: the number as found in the data.
    :param as_of: reject birth dates after this day (pass the run's date, not ``today()``).
    """
    kind = "resident_id"
    value = _normalize(number)
    if value is None:
        return _not_a_string(number, kind)
    if not value:
        return IdCheck(False, value, "empty", kind)
    if len(value) == 15 and value.isdigit():
        return IdCheck(False, value, "first-generation 15-digit ID number (no check digit)", kind)
    if len(value) != 18:
        return IdCheck(False, value, f"length {len(value)}, expected 18", kind)
    if not _DIGITS.fullmatch(value[:17]) or not (value[17] == "X" or value[17].isdigit()):
        return IdCheck(False, value, "invalid character (17 digits and a digit or X expected)", kind)
    born = _birth_date(value)
    if born is None:
        return IdCheck(False, value, f"birth date {value[6:14]} is not a real date", kind)
    if as_of is not None and born > as_of:
        return IdCheck(False, value, f"birth date {born} is after {as_of}", kind)
    if ric.calc_check_digit(value) != value[17]:
        return IdCheck(False, value, "check digit mismatch", kind)
    return IdCheck(True, value, None, kind)


def _looks_like_resident_id(value: str) -> bool:
    return (
        bool(_DIGITS.fullmatch(value[:17]))
        and (value[17] == "X" or value[17].isdigit())
        and _birth_date(value) is not None
        and value[6:8] in ("18", "19", "20")
    )


def _check_legacy_15(value: str) -> IdCheck:
    kind = "taxpayer_id_15"
    if not value[:6].isdigit():
        return IdCheck(False, value, "area code (positions 1-6) is not numeric", kind)
    org = value[6:]
    if not _ORG_CODE_BODY.fullmatch(org[:8]) or not (org[8].isdigit() or org[8] == "X"):
        return IdCheck(False, value, "organisation code (positions 7-15) has invalid characters", kind)
    if organization_code_check_char(org[:8]) != org[8]:
        if value.isdigit() and _birth_date(value[:6] + "19" + value[6:12] + "0000") is not None:
            return IdCheck(
                False,
                value,
                "organisation code check mismatch; may be a first-generation 15-digit ID number",
                kind,
                review=True,
            )
        return IdCheck(False, value, "organisation code check mismatch", kind)
    return IdCheck(True, value, None, kind)


def check_taxpayer_id(raw: str | None) -> IdCheck:
    """Check a taxpayer identification number (纳税人识别号), dispatching on its length.

    * 15: legacy code, a 6-digit area code and a 9-character GB 11714 organisation code;
    * 18: a USCC if it passes as one, else a resident ID; when both fail, an ID-shaped value
      (digits, real birth date) is reported as a resident ID, anything else as a USCC
      (whose check failures carry ``review=True``);
    * 20: an 18-digit resident ID followed by a 2-digit suffix.

    :param raw: the number as found in the data.
    """
    value = _normalize(raw)
    if value is None:
        return _not_a_string(raw, "unknown")
    if not value:
        return IdCheck(False, value, "empty", "unknown")
    if len(value) == 15:
        return _check_legacy_15(value)
    if len(value) == 18:
        as_uscc = check_uscc(value)
        if as_uscc.valid:
            return as_uscc
        as_id = check_resident_id(value)
        if as_id.valid or _looks_like_resident_id(value):
            return as_id
        return as_uscc
    if len(value) == 20:
        kind = "resident_id_suffixed"
        as_id = check_resident_id(value[:18])
        if not as_id.valid:
            return IdCheck(False, value, f"ID part: {as_id.reason}", kind)
        if not value[18:].isdigit():
            return IdCheck(False, value, "suffix (positions 19-20) is not 2 digits", kind)
        return IdCheck(True, value, None, kind)
    return IdCheck(False, value, f"length {len(value)}, expected 15, 18 or 20", "unknown")


def account_number(raw: str | None, allowed_lengths: Collection[int] = (10, 13)) -> IdCheck:
    """Check an electricity account number (户号): digits only, of an allowed length.

    There is no national checksum. Pass strings: an integer has lost its leading zeros.

    :param raw: the number as found in the data.
    :param allowed_lengths: the lengths this utility issues.
    """
    kind = "account_number"
    if not isinstance(raw, str):
        return _not_a_string(raw, kind)
    value = _SEPARATORS.sub("", unicodedata.normalize("NFKC", raw))
    if not value:
        return IdCheck(False, value, "empty", kind)
    if not _DIGITS.fullmatch(value):
        return IdCheck(False, value, "non-digit character", kind)
    if len(value) not in allowed_lengths:
        allowed = " or ".join(str(n) for n in sorted(allowed_lengths))
        return IdCheck(False, value, f"length {len(value)}, allowed {allowed}", kind)
    return IdCheck(True, value, None, kind)
