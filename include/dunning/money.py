"""Money as ``Decimal``: parse amounts exactly, round to the fen only at the end.

Floats never enter: ``0.1 + 0.2`` is not money, and ``Decimal(1.005)`` is
``1.00499999...``, which rounds to the wrong fen. Strings are parsed strictly:
plain decimal notation, optional thousands separators and a currency marker, but
no exponent (``"1e3"``), ``NaN`` or ``Infinity`` that ``Decimal()`` would accept.
"""

from __future__ import annotations

import re
import unicodedata
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

__all__ = ["CENT", "AmountLike", "as_amount", "parse_amount", "parse_money", "to_money"]

CENT = Decimal("0.01")

AmountLike = Decimal | int | str

# After clean-up: optional sign, digits with optional well-formed thousands groups, optional fraction.
_AMOUNT_RE = re.compile(r"[+-]?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?", re.ASCII)
_PLAIN_RE = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?", re.ASCII)
_CURRENCY_MARKERS = ("CNY", "RMB", "¥", "元")


def parse_amount(text: str) -> Decimal:
    """Parse a decimal amount string exactly, without rounding.

    Accepts ``"1234.5"``, ``"1,234.50"``, ``"¥1,234.50"``, ``"1234.50元"``, ``"RMB 12"``
    and full-width digits (NFKC). Rejects exponents, ``NaN``/``Infinity``, empty
    strings and malformed thousands separators such as ``"12,34"`` (a decimal comma?).

    :param text: the amount as written in the source data.
    :raises TypeError: if ``text`` is not a ``str``.
    :raises ValueError: if ``text`` is not a plain decimal amount.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_amount expects str, got {type(text).__name__}")
    if _PLAIN_RE.fullmatch(text):  # plain ASCII "1234.50": nothing to clean up
        return Decimal(text)
    cleaned = unicodedata.normalize("NFKC", text).strip().replace("，", ",")
    upper = cleaned.upper()
    for marker in _CURRENCY_MARKERS:
        if upper.startswith(marker):
            upper = upper[len(marker) :].strip()
        if upper.endswith(marker):
            upper = upper[: -len(marker)].strip()
    # a sign before the currency marker: "-¥12.00"
    if upper[:1] in "+-" and upper[1:2] == "¥":
        upper = upper[0] + upper[2:].strip()
    if not _AMOUNT_RE.fullmatch(upper):
        raise ValueError(f"not a plain decimal amount: {text!r}")
    return Decimal(upper.replace(",", ""))


def as_amount(value: AmountLike, *, name: str = "amount") -> Decimal:
    """Convert ``value`` to an exact finite ``Decimal``, naming ``name`` in errors.

    :param value: a ``Decimal``, ``int`` or amount string (see :func:`parse_amount`).
    :param name: the argument name to put in error messages.
    :raises TypeError: for floats, bools and other types.
    :raises ValueError: for unparsable strings and non-finite decimals.
    """
    if isinstance(value, bool) or isinstance(value, float):
        raise TypeError(
            f"{name} must be Decimal, int or str, not {type(value).__name__} (floats cannot hold fen exactly)"
        )
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{name} must be a finite amount, got {value}")
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str):
        try:
            return parse_amount(value)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    raise TypeError(f"{name} must be Decimal, int or str, not {type(value).__name__}")


def to_money(x: AmountLike) -> Decimal:
    """Round an amount to 0.01 yuan (fen), ROUND_HALF_UP.

    :param x: a ``Decimal``, ``int`` or amount string; floats are refused.
    """
    if type(x) is Decimal and x.is_finite():  # the common case, without the checks below
        amount = x
    else:
        amount = as_amount(x, name="x")
    try:
        return amount.quantize(CENT, rounding=ROUND_HALF_UP)
    except InvalidOperation:  # pragma: no cover - only for amounts beyond the context precision
        raise ValueError(f"amount too large to round to fen: {amount}") from None


def parse_money(text: str, *, max_places: int = 2) -> Decimal:
    """Parse a money string that must already be in fen, returned quantized to 0.01.

    Use this for amounts read from ledgers and bills, where a third decimal place
    signals a data error rather than something to round silently.

    :param text: the amount as written in the source data.
    :param max_places: the most decimal places accepted.
    :raises ValueError: if the string is malformed or has more than ``max_places`` decimals.
    """
    amount = parse_amount(text)
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > max_places:
        raise ValueError(f"more than {max_places} decimal places: {text!r}")
    return to_money(amount)
