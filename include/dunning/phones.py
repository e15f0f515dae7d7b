"""Mainland China mobile numbers: normalise, explain rejections, mask for logs.

``normalize_mobile`` runs over millions of rows, so a clean 11-digit string takes a fast
path, and the libphonenumber check (the slow part) runs only after the hard gate
``^1[3-9][0-9]{9}$`` passes and is cached per 5-digit prefix: CN mobile validity in
libphonenumber's metadata depends on the first five digits at most (``1740[0-5]``), so
at most 7,000 verdicts are ever computed (tests/unit/test_phones.py guards this).

Carrier cannot be derived from the prefix (number portability since 2019-12-01), so this
module does not try.
"""

from __future__ import annotations

import functools
import re
import unicodedata

import phonenumbers

__all__ = ["DATA_ONLY_PREFIXES", "mask", "mobile_problem", "normalize_mobile"]

#: Data-only (上网卡) number ranges: not SMS-capable dunning targets. libphonenumber accepts
#: 145 and 147 as mobile numbers, so they are rejected here explicitly.
DATA_ONLY_PREFIXES = frozenset({"145", "147", "149"})

_HARD_GATE = re.compile(r"1[3-9][0-9]{9}", re.ASCII)
_ALL_DIGITS = re.compile(r"[0-9]+", re.ASCII)
# Separators people type: blanks, hyphens (and their Unicode cousins), dots, parentheses.
_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015\u2212.()\[\]]+")
_SEGMENT_LENGTH = 5

EMPTY = "empty"
NOT_11_DIGITS = "not 11 digits after normalisation"
NOT_MOBILE_PREFIX = "not a mobile prefix"
UNALLOCATED = "unallocated number range"
DATA_ONLY = "data-only number range"


@functools.lru_cache(maxsize=8192)
def _segment_problem(segment: str) -> str | None:
    """Return the soft-gate problem of a 5-digit prefix, or None if numbers under it are usable."""
    if segment[:3] in DATA_ONLY_PREFIXES:
        return DATA_ONLY
    sample = phonenumbers.PhoneNumber(country_code=86, national_number=int(segment.ljust(11, "0")))
    if not phonenumbers.is_valid_number_for_region(sample, "CN"):
        return UNALLOCATED
    return None


def _strip_country_code(digits: str) -> str:
    if digits.startswith("+"):
        digits = digits[1:]
        if digits.startswith("86"):
            return digits[2:]
        return "+" + digits  # another country code: fails the digit check below
    if digits.startswith("0086"):
        return digits[4:]
    if len(digits) == 13 and digits.startswith("86"):
        return digits[2:]
    return digits


def _classify(raw: object) -> tuple[str | None, str | None]:
    """Return ``(number, None)`` for a usable mobile number, else ``(None, problem)``."""
    if not isinstance(raw, str):
        if raw is None:
            return None, EMPTY
        if not isinstance(raw, int) or isinstance(raw, bool):
            return None, NOT_11_DIGITS
        raw = str(raw)  # spreadsheets and dataframes deliver phone columns as integers
    if len(raw) == 11 and _HARD_GATE.fullmatch(raw):  # fast path: already clean
        number = raw
    else:
        cleaned = _SEPARATORS.sub("", unicodedata.normalize("NFKC", raw))
        if not cleaned:
            return None, EMPTY
        number = _strip_country_code(cleaned)
        if len(number) != 11 or not _ALL_DIGITS.fullmatch(number):
            return None, NOT_11_DIGITS
        if not _HARD_GATE.fullmatch(number):
            return None, NOT_MOBILE_PREFIX
    problem = _segment_problem(number[:_SEGMENT_LENGTH])
    if problem is not None:
        return None, problem
    return number, None


def normalize_mobile(raw: str | int | None) -> str | None:
    """Return the 11-digit mainland mobile number in ``raw``, or ``None`` if it is not one.

    Strips ``+86`` / ``0086`` / ``86``, blanks, hyphens, dots and parentheses, and folds
    full-width digits and plus (NFKC). Rejects numbers failing ``^1[3-9][0-9]{9}$``,
    ranges libphonenumber does not know as allocated (154x, 194x, ...) and data-only
    ranges (145, 147, 149). :func:`mobile_problem` says why.

    :param raw: the phone number as found in the data (an ``int`` is read as its digits).
    """
    return _classify(raw)[0]


def mobile_problem(raw: str | int | None) -> str | None:
    """Return why ``raw`` is not a usable mobile number, or ``None`` if it is one.

    One of ``"empty"``, ``"not 11 digits after normalisation"``, ``"not a mobile prefix"``,
    ``"unallocated number range"``, ``"data-only number range"``.

    :param raw: the phone number as found in the data.
    """
    return _classify(raw)[1]


def mask(phone: str | int | None) -> str:
    """Mask a phone number for logs: ``"138****8000"``.

    Never shows more than the first 3 and last 4 characters and always hides at least 4:
    8-10 characters show 2 + 2, shorter values nothing. ``None`` and blank strings become
    ``"<empty>"``. A value that normalises to a mobile number is masked in its 11-digit form.

    :param phone: a normalised or raw phone number.
    """
    if isinstance(phone, int) and not isinstance(phone, bool):
        phone = str(phone)
    if not phone or not isinstance(phone, str):
        return "<empty>"
    text = normalize_mobile(phone) or _SEPARATORS.sub("", unicodedata.normalize("NFKC", phone))
    if not text:
        return "<empty>"
    if len(text) >= 11:
        return f"{text[:3]}****{text[-4:]}"
    if len(text) >= 8:
        return f"{text[:2]}****{text[-2:]}"
    return "****"
