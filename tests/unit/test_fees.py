"""Tax surcharge and electricity penalty: every DOMAIN.md example plus the edges around them."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from include.dunning.fees import (
    CrossYear,
    CustomerClass,
    PowerTariffRules,
    TaxSurchargeRules,
    days_overdue,
    power_penalty,
    tax_surcharge,
)
from include.dunning.money import parse_amount, parse_money, to_money

D = Decimal
date = dt.date


# --- money -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(D("1.005"), D("1.01"), id="half-up-not-bankers"),
        pytest.param(D("2.675"), D("2.68"), id="half-up-2.675"),
        pytest.param(D("-1.005"), D("-1.01"), id="negative-half-away-from-zero"),
        pytest.param(D("0.004999"), D("0.00"), id="below-half"),
        pytest.param(7, D("7.00"), id="int"),
        pytest.param("1,234.565", D("1234.57"), id="string-with-thousands"),
    ],
)
def test_to_money_rounds_half_up_to_fen(value: object, expected: Decimal) -> None:
    result = to_money(value)  # type: ignore[arg-type]
    assert result == expected
    assert result.as_tuple().exponent == -2


@pytest.mark.parametrize("value", [1.005, True], ids=["float", "bool"])
def test_to_money_refuses_floats_and_bools(value: object) -> None:
    with pytest.raises(TypeError):
        to_money(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("1234.5", D("1234.5"), id="plain"),
        pytest.param("1,234.50", D("1234.50"), id="thousands"),
        pytest.param("¥1,234.50", D("1234.50"), id="yen-sign"),
        pytest.param("￥ 1,234.50", D("1234.50"), id="full-width-yen"),
        pytest.param("1234.50元", D("1234.50"), id="yuan-suffix"),
        pytest.param("RMB 12", D("12"), id="rmb-prefix"),
        pytest.param("-¥12.00", D("-12.00"), id="sign-before-currency"),
        pytest.param("１２３.４５", D("123.45"), id="full-width-digits"),
    ],
)
def test_parse_amount_accepts_plain_decimal_notation(text: str, expected: Decimal) -> None:
    assert parse_amount(text) == expected


@pytest.mark.parametrize(
    "text",
    ["1e3", "1E-2", "NaN", "inf", "Infinity", "", "   ", "12,34", "1,2345", "1.2.3", "0x10", "12.", ".5"],
)
def test_parse_amount_rejects_non_plain_notation(text: str) -> None:
    with pytest.raises(ValueError, match="not a plain decimal amount"):
        parse_amount(text)


def test_parse_money_rejects_a_third_decimal_place() -> None:
    assert parse_money("12.3") == D("12.30")
    with pytest.raises(ValueError, match="more than 2 decimal places"):
        parse_money("12.345")


# --- tax surcharge -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("principal", "deadline", "paid_on", "expected"),
    [
        pytest.param("10000.00", date(2026, 3, 16), date(2026, 4, 10), D("125.00"), id="domain-example-N25"),
        pytest.param("10000.00", date(2026, 3, 16), date(2026, 3, 16), D("0.00"), id="paid-on-deadline"),
        pytest.param("10000.00", date(2026, 3, 16), date(2026, 3, 1), D("0.00"), id="paid-early"),
        pytest.param("10000.00", date(2026, 3, 16), date(2026, 3, 17), D("5.00"), id="one-day-late"),
        pytest.param("10000.00", date(2026, 1, 30), date(2026, 2, 2), D("15.00"), id="weekend-not-skipped"),
        pytest.param(
            "10000.00", date(2026, 2, 13), date(2026, 2, 24), D("55.00"), id="spring-festival-not-skipped"
        ),
        pytest.param(
            "10000.00", date(2024, 2, 28), date(2024, 3, 1), D("10.00"), id="leap-year-feb-29-counts"
        ),
        pytest.param("10000.00", date(2026, 2, 28), date(2026, 3, 1), D("5.00"), id="non-leap-feb"),
        pytest.param("10000.00", date(2025, 12, 31), date(2026, 1, 1), D("5.00"), id="across-year-end"),
        pytest.param("1.00", date(2026, 3, 16), date(2026, 3, 26), D("0.01"), id="half-fen-rounds-up"),
        pytest.param("33.33", date(2026, 3, 16), date(2026, 3, 19), D("0.05"), id="rounded-once-at-end"),
        pytest.param(0, date(2026, 3, 16), date(2026, 4, 10), D("0.00"), id="zero-principal"),
    ],
)
def test_tax_surcharge(principal: str, deadline: dt.date, paid_on: dt.date, expected: Decimal) -> None:
    assert tax_surcharge(principal, deadline, paid_on) == expected


def test_tax_surcharge_is_simple_and_linear_in_days() -> None:
    principal = D("12345.67")
    deadline = date(2026, 3, 16)
    previous = D("0")
    for n in range(0, 800, 7):
        surcharge = tax_surcharge(principal, deadline, deadline + dt.timedelta(days=n))
        assert surcharge == to_money(principal * D("0.0005") * n)
        assert surcharge >= previous
        previous = surcharge


@pytest.mark.parametrize(
    ("cap", "expected"),
    [pytest.param(False, D("1096.00"), id="uncapped-default"), pytest.param(True, D("1000.00"), id="capped")],
)
def test_tax_surcharge_cap_at_principal(cap: bool, expected: Decimal) -> None:
    # 2020-01-01 -> 2026-01-01 is 2192 days: 1000 * 0.0005 * 2192 = 1096 > principal.
    assert tax_surcharge("1000.00", date(2020, 1, 1), date(2026, 1, 1), cap_at_principal=cap) == expected


def test_tax_surcharge_cap_does_not_bind_below_principal() -> None:
    capped = tax_surcharge("10000.00", date(2026, 3, 16), date(2026, 4, 10), cap_at_principal=True)
    assert capped == D("125.00")


def test_tax_surcharge_rules_configure_rate_and_cap() -> None:
    rules = TaxSurchargeRules(daily_rate=D("0.0003"), cap_at_principal=True)
    assert tax_surcharge("10000.00", date(2026, 3, 16), date(2026, 4, 10), rules=rules) == D("75.00")
    assert tax_surcharge("100.00", date(2010, 1, 1), date(2026, 1, 1), rules=rules) == D("100.00")
    # an explicit keyword wins over the rules
    assert tax_surcharge(
        "100.00", date(2010, 1, 1), date(2026, 1, 1), rules=rules, cap_at_principal=False
    ) > D("100.00")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        pytest.param({"principal": "-1.00"}, ValueError, "principal", id="negative-principal"),
        pytest.param({"principal": "abc"}, ValueError, "principal", id="garbage-principal"),
        pytest.param({"principal": 100.0}, TypeError, "principal", id="float-principal"),
        pytest.param({"deadline": dt.datetime(2026, 3, 16)}, TypeError, "deadline", id="datetime-deadline"),
        pytest.param({"paid_on": "2026-04-10"}, TypeError, "paid_on", id="string-paid-on"),
    ],
)
def test_tax_surcharge_rejects_bad_input(kwargs: dict, error: type[Exception], match: str) -> None:
    args = {"principal": "10000.00", "deadline": date(2026, 3, 16), "paid_on": date(2026, 4, 10)} | kwargs
    with pytest.raises(error, match=match):
        tax_surcharge(**args)


def test_tax_rules_reject_negative_rate() -> None:
    with pytest.raises(ValueError, match="daily_rate"):
        TaxSurchargeRules(daily_rate=D("-0.0005"))


def test_days_overdue() -> None:
    assert days_overdue(date(2026, 3, 16), date(2026, 4, 10)) == 25
    assert days_overdue(date(2026, 3, 16), date(2026, 3, 16)) == 0
    assert days_overdue(date(2026, 3, 16), date(2026, 3, 15)) == 0


# --- electricity penalty ---------------------------------------------------------------------

NON_RES = "non_residential"
RES = "residential"


@pytest.mark.parametrize(
    ("amount", "customer_class", "due", "paid_on", "cross_year", "expected"),
    [
        pytest.param(
            "20000.00", NON_RES, date(2026, 12, 20), date(2027, 1, 9), "whole_period", D("1200.00"),
            id="domain-cross-year-whole-period",
        ),
        pytest.param(
            "20000.00", NON_RES, date(2026, 12, 20), date(2027, 1, 9), "split_by_day", D("980.00"),
            id="domain-cross-year-split-by-day",
        ),
        pytest.param(
            "300.00", RES, date(2026, 3, 25), date(2026, 4, 9), "whole_period", D("4.50"),
            id="domain-residential-300",
        ),
        pytest.param(
            "50.00", RES, date(2026, 3, 25), date(2026, 3, 30), "whole_period", D("1.00"),
            id="domain-residential-minimum",
        ),
        # same-year bills: both readings charge 2 per mille
        pytest.param(
            "10000.00", NON_RES, date(2026, 3, 1), date(2026, 3, 11), "whole_period", D("200.00"),
            id="non-res-same-year-whole",
        ),
        pytest.param(
            "10000.00", NON_RES, date(2026, 3, 1), date(2026, 3, 11), "split_by_day", D("200.00"),
            id="non-res-same-year-split",
        ),
        # paid on 31 December: nothing crossed yet
        pytest.param(
            "20000.00", NON_RES, date(2026, 12, 20), date(2026, 12, 31), "split_by_day", D("440.00"),
            id="paid-dec-31-split",
        ),
        pytest.param(
            "20000.00", NON_RES, date(2026, 12, 20), date(2026, 12, 31), "whole_period", D("440.00"),
            id="paid-dec-31-whole",
        ),
        # paid on 1 January: one day after the year end
        pytest.param(
            "20000.00", NON_RES, date(2026, 12, 20), date(2027, 1, 1), "split_by_day", D("500.00"),
            id="paid-jan-1-split",
        ),
        pytest.param(
            "20000.00", NON_RES, date(2026, 12, 20), date(2027, 1, 1), "whole_period", D("720.00"),
            id="paid-jan-1-whole",
        ),
        # a bill two year ends old: 11 days of 2025 at 2 per mille, 374 days at 3 per mille
        pytest.param(
            "1000.00", NON_RES, date(2025, 12, 20), date(2027, 1, 9), "split_by_day", D("1144.00"),
            id="two-year-ends-split",
        ),
        pytest.param(
            "1000.00", NON_RES, date(2025, 12, 20), date(2027, 1, 9), "whole_period", D("1155.00"),
            id="two-year-ends-whole",
        ),
        # a leap day is an overdue day like any other
        pytest.param(
            "1000.00", NON_RES, date(2024, 2, 28), date(2024, 3, 1), "split_by_day", D("4.00"),
            id="leap-year",
        ),
        # residential customers have no cross-year rate
        pytest.param(
            "20000.00", RES, date(2026, 12, 20), date(2027, 1, 9), "split_by_day", D("400.00"),
            id="residential-cross-year-split",
        ),
        pytest.param(
            "20000.00", RES, date(2026, 12, 20), date(2027, 1, 9), "whole_period", D("400.00"),
            id="residential-cross-year-whole",
        ),
        # no overdue day: no penalty and no minimum
        pytest.param("50.00", RES, date(2026, 3, 25), date(2026, 3, 25), "whole_period", D("0.00"), id="paid-on-due"),
        pytest.param("50.00", RES, date(2026, 3, 25), date(2026, 3, 1), "whole_period", D("0.00"), id="paid-early"),
        pytest.param("0.00", RES, date(2026, 3, 25), date(2026, 4, 25), "whole_period", D("0.00"), id="zero-amount"),
        # at and just above the minimum
        pytest.param("1000.00", RES, date(2026, 3, 25), date(2026, 3, 26), "whole_period", D("1.00"), id="exactly-1"),
        pytest.param("1010.00", RES, date(2026, 3, 25), date(2026, 3, 26), "whole_period", D("1.01"), id="above-min"),
        pytest.param("0.01", RES, date(2026, 3, 25), date(2026, 3, 26), "whole_period", D("1.00"), id="one-fen-bill"),
    ],
)  # fmt: skip
def test_power_penalty(
    amount: str, customer_class: str, due: dt.date, paid_on: dt.date, cross_year: str, expected: Decimal
) -> None:
    result = power_penalty(amount, due, paid_on, customer_class=customer_class, cross_year=cross_year)
    assert result == expected


@pytest.mark.parametrize(
    ("amount", "customer_class", "due", "grace_days", "paid_on", "cross_year", "expected"),
    [
        pytest.param("300.00", RES, date(2026, 3, 25), 5, date(2026, 4, 9), "whole_period", D("3.00"), id="shifts-N"),
        pytest.param("300.00", RES, date(2026, 3, 25), 15, date(2026, 4, 9), "whole_period", D("0.00"), id="covers"),
        pytest.param("300.00", RES, date(2026, 3, 25), 14, date(2026, 4, 9), "whole_period", D("1.00"), id="last-day"),
        # grace carries the effective due date over the year end: every overdue day is after
        # the bill's year (2026), so both readings charge 3 per mille.
        pytest.param(
            "20000.00", NON_RES, date(2026, 12, 28), 7, date(2027, 1, 9), "split_by_day", D("300.00"),
            id="grace-over-year-end-split",
        ),
        pytest.param(
            "20000.00", NON_RES, date(2026, 12, 28), 7, date(2027, 1, 9), "whole_period", D("300.00"),
            id="grace-over-year-end-whole",
        ),
        # grace inside the year: split counts from the effective due date
        pytest.param(
            "20000.00", NON_RES, date(2026, 12, 15), 5, date(2027, 1, 9), "split_by_day", D("980.00"),
            id="grace-within-year-split",
        ),
    ],
)  # fmt: skip
def test_power_penalty_grace_days(
    amount: str,
    customer_class: str,
    due: dt.date,
    grace_days: int,
    paid_on: dt.date,
    cross_year: str,
    expected: Decimal,
) -> None:
    result = power_penalty(
        amount, due, paid_on, customer_class=customer_class, cross_year=cross_year, grace_days=grace_days
    )
    assert result == expected


def test_power_penalty_accepts_enums() -> None:
    result = power_penalty(
        D("20000.00"),
        date(2026, 12, 20),
        date(2027, 1, 9),
        customer_class=CustomerClass.NON_RESIDENTIAL,
        cross_year=CrossYear.SPLIT_BY_DAY,
    )
    assert result == D("980.00")


def test_split_by_day_lies_between_current_year_and_whole_period() -> None:
    amount = D("7777.77")
    due = date(2026, 11, 20)
    for days in range(1, 120):
        paid_on = due + dt.timedelta(days=days)
        split = power_penalty(amount, due, paid_on, customer_class=NON_RES, cross_year="split_by_day")
        whole = power_penalty(amount, due, paid_on, customer_class=NON_RES, cross_year="whole_period")
        current_year_only = to_money(amount * D("0.002") * days)
        assert current_year_only <= split <= whole
        if paid_on.year == due.year:
            assert split == whole == current_year_only


def test_power_tariff_rules_are_configurable() -> None:
    no_minimum = PowerTariffRules(minimum_penalty=D("0"))
    assert power_penalty(
        "50.00", date(2026, 3, 25), date(2026, 3, 30), customer_class=RES, rules=no_minimum
    ) == D("0.25")
    lower = PowerTariffRules(current_year_daily_rate=D("0.001"), cross_year_daily_rate=D("0.0015"))
    assert power_penalty(
        "20000.00", date(2026, 12, 20), date(2027, 1, 9), customer_class=NON_RES, rules=lower
    ) == D("600.00")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"amount": "-0.01"}, "amount", id="negative-amount"),
        pytest.param({"customer_class": "industrial"}, "customer_class", id="unknown-class"),
        pytest.param({"customer_class": "Residential "}, "customer_class", id="class-not-normalised"),
        pytest.param({"cross_year": "pro_rata"}, "cross_year", id="unknown-cross-year"),
        pytest.param({"grace_days": -1}, "grace_days", id="negative-grace"),
        pytest.param({"grace_days": 1.5}, "grace_days", id="fractional-grace"),
    ],
)
def test_power_penalty_rejects_bad_input(kwargs: dict, match: str) -> None:
    args = {
        "amount": "300.00",
        "due": date(2026, 3, 25),
        "paid_on": date(2026, 4, 9),
        "customer_class": RES,
    } | kwargs
    with pytest.raises(ValueError, match=match):
        power_penalty(**args)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("residential_daily_rate", D("-0.001"), id="negative-rate"),
        pytest.param("cross_year_daily_rate", 0.003, id="float-rate"),
        pytest.param("minimum_penalty", D("-1"), id="negative-minimum"),
    ],
)
def test_power_tariff_rules_validate(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        PowerTariffRules(**{field: value})
