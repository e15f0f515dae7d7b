"""Working days, public holidays and filing deadlines against DOMAIN.md's 2024/2026 tables."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pytest

from include.dunning import calendar as cal
from include.dunning.calendar import (
    CalendarOverride,
    CalendarYearNotCovered,
    WorkingCalendar,
    add_working_days,
    filing_deadline,
    filing_deadline_by_rule,
    is_public_holiday,
    is_working_day,
    load_calendar_overrides,
    load_published_deadlines,
    published_filing_deadline,
    working_days_before,
)

date = dt.date
ONE_DAY = dt.timedelta(days=1)


def _span(first: str, last: str) -> set[dt.date]:
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return {start + dt.timedelta(days=i) for i in range((end - start).days + 1)}


# DOMAIN.md §2, 国办发明电〔2025〕7号
HOLIDAYS_2026 = (
    _span("2026-01-01", "2026-01-03")
    | _span("2026-02-15", "2026-02-23")
    | _span("2026-04-04", "2026-04-06")
    | _span("2026-05-01", "2026-05-05")
    | _span("2026-06-19", "2026-06-21")
    | _span("2026-09-25", "2026-09-27")
    | _span("2026-10-01", "2026-10-07")
)
MAKEUP_WORKDAYS_2026 = {date(2026, m, d) for m, d in [(1, 4), (2, 14), (2, 28), (5, 9), (9, 20), (10, 10)]}

# DOMAIN.md §2: the published deadlines, month -> (2024, 2026)
DOMAIN_DEADLINES = {
    1: ("01-15", "01-20"),
    2: ("02-23", "02-24"),
    3: ("03-15", "03-16"),
    4: ("04-18", "04-20"),
    5: ("05-22", "05-22"),
    6: ("06-19", "06-15"),
    7: ("07-15", "07-15"),
    8: ("08-15", "08-17"),
    9: ("09-18", "09-15"),
    10: ("10-24", "10-26"),
    11: ("11-15", "11-16"),
    12: ("12-16", "12-15"),
}
PUBLISHED = {
    (year, month): date.fromisoformat(f"{year}-{mmdd}")
    for month, pair in DOMAIN_DEADLINES.items()
    for year, mmdd in zip((2024, 2026), pair, strict=True)
}


# --- working days --------------------------------------------------------------------------


def test_2026_matches_the_state_council_notice_day_by_day() -> None:
    wrong = []
    day = date(2026, 1, 1)
    while day.year == 2026:
        expected_holiday = day in HOLIDAYS_2026
        expected_working = day in MAKEUP_WORKDAYS_2026 or (day.weekday() < 5 and not expected_holiday)
        if is_public_holiday(day) != expected_holiday or is_working_day(day) != expected_working:
            wrong.append(day)
        day += ONE_DAY
    assert wrong == []


@pytest.mark.parametrize(
    ("day", "working", "holiday"),
    [
        pytest.param(date(2026, 1, 4), True, False, id="make-up-sunday"),
        pytest.param(date(2026, 2, 14), True, False, id="make-up-saturday-before-spring-festival"),
        pytest.param(date(2026, 10, 10), True, False, id="make-up-saturday-after-national-day"),
        pytest.param(date(2026, 1, 10), False, False, id="plain-saturday"),
        pytest.param(date(2026, 1, 3), False, True, id="saturday-inside-new-year-block"),
        pytest.param(date(2026, 2, 23), False, True, id="monday-spring-festival"),
        pytest.param(date(2026, 10, 8), True, False, id="day-after-national-day"),
        pytest.param(date(2026, 3, 16), True, False, id="plain-monday"),
        pytest.param(date(2024, 2, 18), True, False, id="2024-make-up-sunday"),
        pytest.param(date(2024, 2, 29), True, False, id="2024-leap-day"),
        pytest.param(date(2025, 10, 8), False, True, id="2025-national-day-8th"),
    ],
)
def test_working_day_and_public_holiday(day: dt.date, working: bool, holiday: bool) -> None:
    assert is_working_day(day) is working
    assert is_public_holiday(day) is holiday


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: is_working_day(date(2027, 3, 1)), id="is_working_day"),
        pytest.param(lambda: is_public_holiday(date(2027, 1, 1)), id="is_public_holiday"),
        pytest.param(lambda: add_working_days(date(2026, 12, 30), 5), id="add-working-days-into-2027"),
        pytest.param(lambda: filing_deadline(2027, 1), id="filing-deadline-unpublished-2027"),
        pytest.param(lambda: is_working_day(date(2003, 6, 2)), id="before-2004"),
    ],
)
def test_uncovered_year_raises_naming_the_year(call) -> None:
    with pytest.raises(CalendarYearNotCovered, match=r"year 20(27|03)") as info:
        call()
    assert info.value.year in (2027, 2003)


def test_datetime_is_refused() -> None:
    with pytest.raises(TypeError, match="day"):
        is_working_day(dt.datetime(2026, 3, 16, 9, 0))


# --- overrides -------------------------------------------------------------------------------


def test_overrides_change_working_days_and_holidays() -> None:
    local = WorkingCalendar(
        [
            CalendarOverride(date(2026, 9, 3), "holiday", "provincial day"),
            CalendarOverride(date(2026, 3, 14), "workday", "local make-up Saturday"),
        ]
    )
    assert local.is_working_day(date(2026, 9, 3)) is False
    assert local.is_public_holiday(date(2026, 9, 3)) is True
    assert local.is_working_day(date(2026, 3, 14)) is True
    assert local.is_public_holiday(date(2026, 3, 14)) is False
    # the national calendar is untouched
    assert is_working_day(date(2026, 9, 3)) is True
    assert local.add_working_days(date(2026, 9, 2), 1) == date(2026, 9, 4)


def test_override_csv_skips_comments_and_loads_rows(tmp_path: Path) -> None:
    path = tmp_path / "overrides.csv"
    path.write_text(
        "# provincial changes\ndate,kind,note\n2026-09-03,holiday,provincial day\n\n# another\n"
        "2026-03-14, Workday ,moved\n",
        encoding="utf-8",
    )
    overrides = load_calendar_overrides(path)
    assert overrides == {
        date(2026, 9, 3): CalendarOverride(date(2026, 9, 3), "holiday", "provincial day"),
        date(2026, 3, 14): CalendarOverride(date(2026, 3, 14), "workday", "moved"),
    }


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        pytest.param("2026-09-03,day_off,x\n", r"overrides.csv:2: kind", id="unknown-kind"),
        pytest.param("2026-13-03,holiday,x\n", r"overrides.csv:2: not an ISO date", id="bad-date"),
        pytest.param(
            "2026-09-03,holiday,x\n2026-09-03,workday,y\n", r"overrides.csv:3: .* twice", id="duplicate"
        ),
    ],
)
def test_override_csv_errors_name_the_line(tmp_path: Path, rows: str, match: str) -> None:
    path = tmp_path / "overrides.csv"
    path.write_text("date,kind,note\n" + rows, encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        load_calendar_overrides(path)


def test_packaged_override_table_is_found_and_valid() -> None:
    resource = cal._data_file("calendar_overrides.csv")
    assert resource.is_file()
    assert resource.read_text(encoding="utf-8").count("date,kind,note") == 1
    for day, override in load_calendar_overrides().items():
        assert override.day == day and override.kind in ("holiday", "workday")


# --- adding working days ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("deadline", "n", "expected"),
    [
        pytest.param(date(2026, 1, 20), 5, date(2026, 1, 13), id="jan-5-before"),
        pytest.param(date(2026, 1, 20), 2, date(2026, 1, 16), id="jan-2-before-over-weekend"),
        pytest.param(date(2026, 2, 24), 2, date(2026, 2, 13), id="feb-2-before-over-spring-festival"),
        pytest.param(date(2026, 2, 24), 1, date(2026, 2, 14), id="feb-1-before-is-make-up-saturday"),
        pytest.param(date(2026, 2, 24), 5, date(2026, 2, 10), id="feb-5-before"),
        pytest.param(date(2026, 5, 22), 5, date(2026, 5, 15), id="may-5-before"),
        pytest.param(date(2026, 10, 26), 5, date(2026, 10, 19), id="oct-5-before"),
        pytest.param(date(2026, 10, 26), 0, date(2026, 10, 26), id="zero"),
    ],
)
def test_working_days_before(deadline: dt.date, n: int, expected: dt.date) -> None:
    assert working_days_before(deadline, n) == expected


@pytest.mark.parametrize(
    ("day", "n", "expected"),
    [
        pytest.param(date(2026, 9, 30), 1, date(2026, 10, 8), id="over-national-day"),
        pytest.param(date(2026, 10, 9), 1, date(2026, 10, 10), id="onto-make-up-saturday"),
        pytest.param(date(2026, 3, 13), 1, date(2026, 3, 16), id="over-weekend"),
        pytest.param(date(2026, 3, 14), 0, date(2026, 3, 14), id="zero-keeps-non-working-day"),
        pytest.param(date(2026, 3, 16), -1, date(2026, 3, 13), id="negative"),
    ],
)
def test_add_working_days(day: dt.date, n: int, expected: dt.date) -> None:
    assert add_working_days(day, n) == expected


def test_add_working_days_round_trips_from_working_days() -> None:
    day = date(2026, 1, 5)
    while day < date(2026, 11, 30):
        if is_working_day(day):
            for n in (1, 2, 5, 9):
                forward = add_working_days(day, n)
                assert is_working_day(forward)
                assert add_working_days(forward, -n) == day
        day += dt.timedelta(days=3)


def test_working_days_before_rejects_negative() -> None:
    with pytest.raises(ValueError, match="n must not be negative"):
        working_days_before(date(2026, 1, 20), -1)


# --- filing deadlines ------------------------------------------------------------------------


@pytest.mark.parametrize(("year", "month"), sorted(PUBLISHED), ids=lambda v: str(v))
def test_published_table_matches_domain(year: int, month: int) -> None:
    assert published_filing_deadline(year, month) == PUBLISHED[(year, month)]
    assert filing_deadline(year, month) == PUBLISHED[(year, month)]


def test_published_table_lists_whole_years_only() -> None:
    table = load_published_deadlines()
    years = {year for year, _ in table}
    assert {2024, 2026} <= years
    for year in years:
        assert sorted(month for y, month in table if y == year) == list(range(1, 13))


def test_published_table_wins_over_the_rule(caplog: pytest.LogCaptureFixture) -> None:
    # A local holiday on Monday 2026-06-15 joins the weekend into a 3-day block, which would
    # move the rule's deadline by 3 working days; the published date stands.
    local = WorkingCalendar([CalendarOverride(date(2026, 6, 15), "holiday", "hypothetical")])
    assert filing_deadline_by_rule(2026, 6, calendar=local) == date(2026, 6, 18)
    with caplog.at_level(logging.WARNING, logger=cal.__name__):
        assert filing_deadline(2026, 6, calendar=local) == date(2026, 6, 15)
    assert caplog.records == []


def test_fallback_logs_a_warning_naming_the_month(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=cal.__name__):
        result = filing_deadline(2023, 10)
    assert result == filing_deadline_by_rule(2023, 10) == date(2023, 10, 23)
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "2023-10" in caplog.records[0].getMessage()
    assert "not in the published table" in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    "bad", [pytest.param((2026, 0), id="month-0"), pytest.param((2026, 13), id="month-13")]
)
def test_filing_deadline_validates_month(bad: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="month"):
        filing_deadline(*bad)


def test_fallback_rule_against_the_published_table() -> None:
    """Run the Art. 109 fallback over every published month and report how many match.

    With the reading in ``filing_deadline_by_rule`` (a block is rest days joined to a public
    holiday, weekends included, and only its days within 1-15 count), all 24 months of
    2024 and 2026 match, and so do the 12 of 2025. The naive readings of DOMAIN.md's rule
    do not; see ``test_naive_readings_of_the_rule_miss_known_months``.
    """
    table = load_published_deadlines()
    mismatches = {
        f"{year}-{month:02d}": (str(published), str(filing_deadline_by_rule(year, month)))
        for (year, month), published in sorted(table.items())
        if filing_deadline_by_rule(year, month) != published
    }
    matched = len(table) - len(mismatches)
    print(f"fallback rule matches {matched} of {len(table)} published months; mismatches: {mismatches}")
    assert mismatches == {}


def _naive_rule(year: int, month: int, *, weekends_join: bool, clip_to_first_half: bool) -> dt.date:
    """DOMAIN's rule read naively: statutory days only, and/or whole block length counted."""
    calendar = cal.default_calendar()
    fifteenth = date(year, month, 15)
    if weekends_join:
        blocks = calendar.holiday_blocks(
            date(year, month, 1) - dt.timedelta(days=15), fifteenth + ONE_DAY * 15
        )
    else:
        blocks, first, length = [], None, 0
        day = date(year, month, 1) - dt.timedelta(days=15)
        while day <= fifteenth + ONE_DAY * 15:
            if calendar.is_public_holiday(day):
                first, length = (first or day), length + 1
            elif first is not None:
                blocks.append((first, length))
                first, length = None, 0
            day += ONE_DAY
    postpone = 0
    for first, length in blocks:
        days = [first + dt.timedelta(days=i) for i in range(length)]
        inside = [d for d in days if d.year == year and d.month == month and d.day <= 15]
        counted = len(inside) if clip_to_first_half else (length if inside else 0)
        if counted >= 3:
            postpone += counted
    if postpone:
        return calendar.add_working_days(fifteenth, postpone)
    return calendar.working_day_on_or_after(fifteenth)


@pytest.mark.parametrize(
    ("weekends_join", "clip", "expected_misses"),
    [
        pytest.param(True, True, set(), id="implemented-reading"),
        # 2024 端午: only 06-10 is statutory ("与周末连休"), but the STA counted 06-08..06-10.
        pytest.param(False, True, {"2024-06"}, id="statutory-days-only"),
        # Counting whole blocks that reach into days 1-15: the New Year block 2023-12-30..
        # 2024-01-01, Spring Festival 2024 (8 days, 6 of them by the 15th; published 02-23),
        # Mid-Autumn 2024 (09-15..17, published 09-18), Spring Festival 2025 and 2026, and the
        # 2025 Dragon Boat block 05-31..06-02.
        pytest.param(
            True,
            False,
            {"2024-01", "2024-02", "2024-09", "2025-02", "2025-06", "2026-02"},
            id="whole-block-length",
        ),
    ],
)
def test_naive_readings_of_the_rule_miss_known_months(
    weekends_join: bool, clip: bool, expected_misses: set[str]
) -> None:
    table = load_published_deadlines()
    misses = {
        f"{year}-{month:02d}"
        for (year, month), published in table.items()
        if _naive_rule(year, month, weekends_join=weekends_join, clip_to_first_half=clip) != published
    }
    assert misses == expected_misses
