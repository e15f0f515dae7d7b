"""Late-payment charges: the tax surcharge (税款滞纳金) and the electricity penalty (电费违约金).

Both count ``N = paid_on - deadline`` calendar days (the day after the deadline up to and
including the payment day; weekends and holidays are not skipped, only deadlines move
for holidays). For a debt still unpaid, pass the as-of date as ``paid_on``. Amounts are
computed exactly in ``Decimal`` and rounded ROUND_HALF_UP to the fen once, at the end.
Rates, minimum and the cap are configuration (:class:`TaxSurchargeRules`,
:class:`PowerTariffRules`), because the statutes leave them open or have been revised.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from .money import AmountLike, as_amount, to_money

__all__ = [
    "CrossYear",
    "CustomerClass",
    "PowerTariffRules",
    "TaxSurchargeRules",
    "days_overdue",
    "power_penalty",
    "tax_surcharge",
]


def _check_rate(rate: object, name: str) -> None:
    if not isinstance(rate, Decimal) or not rate.is_finite() or rate < 0:
        raise ValueError(f"{name} must be a finite non-negative Decimal, got {rate!r}")


class CustomerClass(StrEnum):
    """Electricity customer class as far as the penalty rate is concerned."""

    RESIDENTIAL = "residential"
    NON_RESIDENTIAL = "non_residential"


class CrossYear(StrEnum):
    """How non-residential arrears carried across a year end are charged."""

    WHOLE_PERIOD = "whole_period"
    SPLIT_BY_DAY = "split_by_day"


@dataclass(frozen=True, slots=True)
class TaxSurchargeRules:
    """Configuration of the tax late-payment surcharge.

    :param daily_rate: simple daily rate on the unpaid tax (税收征收管理法 Art. 32: 万分之五).
    :param cap_at_principal: cap the surcharge at the principal (行政强制法 Art. 45 reading);
        off by default because tax authorities hold the surcharge is not capped.
    """

    daily_rate: Decimal = Decimal("0.0005")
    cap_at_principal: bool = False

    def __post_init__(self) -> None:
        _check_rate(self.daily_rate, "daily_rate")


@dataclass(frozen=True, slots=True)
class PowerTariffRules:
    """Configuration of the electricity late-payment penalty (供电营业规则 Art. 98 of 1996).

    :param residential_daily_rate: daily rate for residential customers (1‰).
    :param current_year_daily_rate: non-residential rate for arrears of the current year (2‰).
    :param cross_year_daily_rate: non-residential rate for arrears carried across a year end (3‰).
    :param minimum_penalty: a positive penalty below this is charged as this (1 yuan).
    """

    residential_daily_rate: Decimal = Decimal("0.001")
    current_year_daily_rate: Decimal = Decimal("0.002")
    cross_year_daily_rate: Decimal = Decimal("0.003")
    minimum_penalty: Decimal = Decimal("1.00")

    def __post_init__(self) -> None:
        _check_rate(self.residential_daily_rate, "residential_daily_rate")
        _check_rate(self.current_year_daily_rate, "current_year_daily_rate")
        _check_rate(self.cross_year_daily_rate, "cross_year_daily_rate")
        if not isinstance(self.minimum_penalty, Decimal) or self.minimum_penalty < 0:
            raise ValueError(f"minimum_penalty must be a non-negative Decimal, got {self.minimum_penalty!r}")


# Lookups for the common arguments (plain strings and the enum members themselves).
_CUSTOMER_CLASSES: dict[object, CustomerClass] = {c.value: c for c in CustomerClass}
_CROSS_YEAR: dict[object, CrossYear] = {c.value: c for c in CrossYear}


def _lookup(table: dict[object, Any], key: object) -> Any:
    try:
        return table.get(key)
    except TypeError:  # unhashable: let the enum refuse it
        return None


DEFAULT_TAX_RULES = TaxSurchargeRules()
DEFAULT_POWER_RULES = PowerTariffRules()


def _check_date(value: object, name: str) -> dt.date:
    # datetime is a date subclass, but mixing it in would make day counts depend on the clock.
    if not isinstance(value, dt.date) or isinstance(value, dt.datetime):
        raise TypeError(f"{name} must be a datetime.date, got {type(value).__name__}")
    return value


def _non_negative(value: AmountLike, name: str) -> Decimal:
    amount = as_amount(value, name=name)
    if amount < 0:
        raise ValueError(f"{name} must not be negative, got {amount}")
    return amount


def days_overdue(deadline: dt.date, paid_on: dt.date) -> int:
    """Return the number of charged days: from the day after ``deadline`` to ``paid_on`` inclusive.

    :param deadline: the last day to pay without a charge.
    :param paid_on: the payment day, or the as-of date for a debt still unpaid.
    """
    _check_date(deadline, "deadline")
    _check_date(paid_on, "paid_on")
    return max(0, (paid_on - deadline).days)


def tax_surcharge(
    principal: AmountLike,
    deadline: dt.date,
    paid_on: dt.date,
    *,
    cap_at_principal: bool | None = None,
    rules: TaxSurchargeRules = DEFAULT_TAX_RULES,
) -> Decimal:
    """Compute the tax late-payment surcharge (税款滞纳金), rounded to the fen.

    Simple interest, never compounding: ``principal * daily_rate * N`` with
    ``N = (paid_on - deadline).days`` and 0 if paid on or before the deadline
    (实施细则 Art. 75). Calendar days count; weekends and holidays are not skipped.
    For an approved deferral (延期缴纳) pass the new deadline; for a refused one, the
    original. Example: 10,000.00 due 2026-03-16 paid 2026-04-10 -> N = 25 -> 125.00.

    :param principal: the unpaid tax (not including earlier surcharges).
    :param deadline: the payment deadline, already moved for holidays.
    :param paid_on: the payment day, or the as-of date for a debt still unpaid.
    :param cap_at_principal: cap the surcharge at the principal; ``None`` uses ``rules``.
    :param rules: the rate and cap configuration.
    :raises ValueError: if ``principal`` is negative or not an amount.
    :raises TypeError: if a date is not a ``datetime.date`` or ``principal`` is a float.
    """
    if (
        type(principal) is Decimal
        and type(deadline) is dt.date
        and type(paid_on) is dt.date
        and principal.is_finite()
        and principal >= 0
    ):  # the planner's case: the checks below would all pass
        amount = principal
        n = max(0, (paid_on - deadline).days)
    else:
        amount = _non_negative(principal, "principal")
        n = days_overdue(deadline, paid_on)
    surcharge = amount * rules.daily_rate * n
    cap = rules.cap_at_principal if cap_at_principal is None else cap_at_principal
    if cap and surcharge > amount:
        surcharge = amount
    return to_money(surcharge)


def power_penalty(
    amount: AmountLike,
    due: dt.date,
    paid_on: dt.date,
    *,
    customer_class: CustomerClass | str,
    cross_year: CrossYear | str = CrossYear.WHOLE_PERIOD,
    grace_days: int = 0,
    rules: PowerTariffRules = DEFAULT_POWER_RULES,
) -> Decimal:
    """Compute the electricity late-payment penalty (电费违约金), rounded to the fen.

    Charged days run from the day after the effective due date (``due + grace_days``) to
    ``paid_on`` inclusive. Residential customers pay ``residential_daily_rate`` per day.
    Non-residential customers pay ``current_year_daily_rate`` for arrears of the current
    year and ``cross_year_daily_rate`` for arrears carried across a year end, read as:

    * ``whole_period``: a bill from an earlier calendar year than ``paid_on`` is charged
      the cross-year rate for all its overdue days;
    * ``split_by_day``: overdue days in the bill's own year at the current-year rate, days
      after that year's 31 December at the cross-year rate.

    "The bill's year" is the year of the contractual ``due`` date, before ``grace_days``
    is applied: a grace period postpones the penalty clock, it does not turn a December
    bill into a January one. (With a grace period that carries the effective due date
    over the year end, every overdue day is therefore after the bill's year and both
    readings charge the cross-year rate.) A bill whose overdue days all fall in its own
    year is charged the current-year rate under both readings.

    A positive penalty below ``minimum_penalty`` is charged as the minimum; with no
    overdue day (or a zero amount) the penalty is 0.

    Examples: 20,000.00 non-residential due 2026-12-20 paid 2027-01-09 -> 1,200.00
    (whole_period) or 980.00 (split_by_day); residential 300.00 due 2026-03-25 paid
    2026-04-09 -> 4.50; residential 50.00 due 2026-03-25 paid 2026-03-30 -> 0.25 -> 1.00.

    :param amount: the overdue amount (欠费总额) of the bill.
    :param due: the contractual due date of the bill.
    :param paid_on: the payment day, or the as-of date for a bill still unpaid.
    :param customer_class: ``"residential"`` or ``"non_residential"``.
    :param cross_year: ``"whole_period"`` or ``"split_by_day"`` (see above).
    :param grace_days: the utility's grace period in days, added to ``due``.
    :param rules: rates and minimum.
    :raises ValueError: for a negative amount or grace period, or an unknown
        ``customer_class`` / ``cross_year``; the message names the argument.
    """
    if type(amount) is Decimal and amount.is_finite() and amount >= 0:
        principal = amount
    else:
        principal = _non_negative(amount, "amount")
    if type(due) is not dt.date or type(paid_on) is not dt.date:
        _check_date(due, "due")
        _check_date(paid_on, "paid_on")
    klass = _lookup(_CUSTOMER_CLASSES, customer_class)
    if klass is None:
        try:
            klass = CustomerClass(customer_class)
        except ValueError:
            raise ValueError(
                f"customer_class must be one of {[c.value for c in CustomerClass]}, got {customer_class!r}"
            ) from None
    reading = _lookup(_CROSS_YEAR, cross_year)
    if reading is None:
        try:
            reading = CrossYear(cross_year)
        except ValueError:
            raise ValueError(
                f"cross_year must be one of {[c.value for c in CrossYear]}, got {cross_year!r}"
            ) from None
    if (
        type(grace_days) is not int and (isinstance(grace_days, bool) or not isinstance(grace_days, int))
    ) or (grace_days < 0):
        raise ValueError(f"grace_days must be a non-negative int, got {grace_days!r}")

    effective_due = due + dt.timedelta(days=grace_days)
    n = days_overdue(effective_due, paid_on)
    if n == 0:
        return to_money(0)

    if klass is CustomerClass.RESIDENTIAL:
        penalty = principal * rules.residential_daily_rate * n
    elif reading is CrossYear.WHOLE_PERIOD:
        rate = rules.cross_year_daily_rate if due.year < paid_on.year else rules.current_year_daily_rate
        penalty = principal * rate * n
    else:
        bill_year_end = dt.date(due.year, 12, 31)
        days_in_bill_year = max(0, min(n, (bill_year_end - effective_due).days))
        days_after = n - days_in_bill_year
        penalty = principal * (
            rules.current_year_daily_rate * days_in_bill_year + rules.cross_year_daily_rate * days_after
        )

    if 0 < penalty < rules.minimum_penalty:
        penalty = rules.minimum_penalty
    return to_money(penalty)
