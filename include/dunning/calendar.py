"""Chinese working days and filing deadlines (申报纳税期限).

Working days come from the ``chinese-calendar`` package (the State Council's yearly
holiday notices, including make-up workdays 调休), patched by a local override table for
provincial changes (``data/calendar_overrides.csv``). A year the package does not cover
raises :class:`CalendarYearNotCovered` instead of guessing from weekdays.

Filing deadlines come from the published table (``data/filing_deadlines.csv``) first; the
实施细则 Art. 109 rule is only a fallback, logged as a warning.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import io
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from os import PathLike
from pathlib import Path
from typing import Literal

import chinese_calendar

__all__ = [
    "CalendarOverride",
    "CalendarYearNotCovered",
    "WorkingCalendar",
    "add_working_days",
    "default_calendar",
    "filing_deadline",
    "filing_deadline_by_rule",
    "is_public_holiday",
    "is_working_day",
    "load_calendar_overrides",
    "load_published_deadlines",
    "published_filing_deadline",
    "working_days_before",
]

logger = logging.getLogger(__name__)

OverrideKind = Literal["holiday", "workday"]
_OVERRIDE_KINDS: tuple[str, ...] = ("holiday", "workday")

#: Art. 109: a holiday block of at least this many days inside days 1-15 postpones by its length.
MIN_POSTPONING_BLOCK = 3
#: The statutory filing day: the 15th of the month after the period.
FILING_DAY = 15

CsvSource = str | PathLike[str] | Traversable


class CalendarYearNotCovered(LookupError):
    """The holiday data has no entry for a year, so working days cannot be decided."""

    def __init__(self, year: int, detail: str = "") -> None:
        self.year = year
        message = (
            f"no Chinese holiday data for year {year}: chinese-calendar "
            f"{getattr(chinese_calendar, '__version__', '?')} does not cover it; "
            "upgrade chinese-calendar once the State Council has published that year's holidays"
        )
        if detail:
            message = f"{message} ({detail})"
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class CalendarOverride:
    """A local change to the national calendar for one date.

    :param day: the date changed.
    :param kind: ``"holiday"`` (a public holiday, not a working day) or ``"workday"``.
    :param note: why, for people reading the table.
    """

    day: dt.date
    kind: OverrideKind
    note: str = ""

    def __post_init__(self) -> None:
        if self.kind not in _OVERRIDE_KINDS:
            raise ValueError(f"kind must be one of {_OVERRIDE_KINDS}, got {self.kind!r}")


def _data_file(name: str) -> Traversable:
    return resources.files(__package__ or __name__.rpartition(".")[0]).joinpath("data", name)


def _read_csv_rows(source: CsvSource) -> Iterable[tuple[int, dict[str, str]]]:
    """Yield ``(line_number, row)`` from a CSV file, skipping blank and ``#`` comment lines."""
    text = (
        source.read_text(encoding="utf-8")
        if isinstance(source, Traversable)
        else Path(source).read_text("utf-8")
    )
    numbered = [
        (number, line)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not numbered:
        return
    reader = csv.DictReader(io.StringIO("\n".join(line for _, line in numbered)))
    for (number, _), row in zip(numbered[1:], reader, strict=True):
        yield number, {key.strip(): (value or "").strip() for key, value in row.items() if key is not None}


def _parse_iso_date(value: str, *, where: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{where}: not an ISO date: {value!r}") from None


def load_calendar_overrides(source: CsvSource | None = None) -> dict[dt.date, CalendarOverride]:
    """Load a ``date,kind,note`` override table.

    :param source: a path or resource; the packaged ``data/calendar_overrides.csv`` by default.
    :raises ValueError: on a malformed row or a date listed twice, naming the line.
    """
    source = _data_file("calendar_overrides.csv") if source is None else source
    overrides: dict[dt.date, CalendarOverride] = {}
    for number, row in _read_csv_rows(source):
        where = f"{source}:{number}"
        day = _parse_iso_date(row.get("date", ""), where=where)
        kind = row.get("kind", "").lower()
        if kind not in _OVERRIDE_KINDS:
            raise ValueError(f"{where}: kind must be one of {_OVERRIDE_KINDS}, got {kind!r}")
        if day in overrides:
            raise ValueError(f"{where}: {day} is listed twice")
        overrides[day] = CalendarOverride(day=day, kind=kind, note=row.get("note", ""))  # type: ignore[arg-type]
    return overrides


def _check_day(day: object, name: str = "day") -> dt.date:
    if not isinstance(day, dt.date) or isinstance(day, dt.datetime):
        raise TypeError(f"{name} must be a datetime.date, got {type(day).__name__}")
    return day


class WorkingCalendar:
    """The national working-day calendar with local overrides applied.

    :param overrides: dates changed locally, e.g. from :func:`load_calendar_overrides`.
    """

    def __init__(
        self, overrides: Mapping[dt.date, CalendarOverride] | Iterable[CalendarOverride] = ()
    ) -> None:
        items = overrides.values() if isinstance(overrides, Mapping) else overrides
        self._overrides: dict[dt.date, CalendarOverride] = {o.day: o for o in items}

    @property
    def overrides(self) -> Mapping[dt.date, CalendarOverride]:
        """Return the local overrides by date."""
        return dict(self._overrides)

    def is_working_day(self, day: dt.date) -> bool:
        """Tell whether ``day`` is a working day (Mon-Fri not a holiday, or a make-up workday).

        :param day: the date.
        :raises CalendarYearNotCovered: if no holiday data covers the year.
        """
        _check_day(day)
        override = self._overrides.get(day)
        if override is not None:
            return override.kind == "workday"
        try:
            return bool(chinese_calendar.is_workday(day))
        except NotImplementedError as exc:
            raise CalendarYearNotCovered(day.year, str(exc)) from None

    def is_public_holiday(self, day: dt.date) -> bool:
        """Tell whether ``day`` is a statutory public holiday (not merely a weekend).

        Days of an announced holiday block count, weekend days inside the block included;
        make-up workdays and ordinary weekends do not.

        :param day: the date.
        :raises CalendarYearNotCovered: if no holiday data covers the year.
        """
        _check_day(day)
        override = self._overrides.get(day)
        if override is not None:
            return override.kind == "holiday"
        try:
            is_holiday, name = chinese_calendar.get_holiday_detail(day)
        except NotImplementedError as exc:
            raise CalendarYearNotCovered(day.year, str(exc)) from None
        return bool(is_holiday) and name is not None

    def add_working_days(self, day: dt.date, n: int) -> dt.date:
        """Return the date ``n`` working days after ``day`` (before it when ``n`` is negative).

        ``day`` itself is never counted; ``n == 0`` returns ``day`` unchanged.

        :param day: the starting date.
        :param n: how many working days to move.
        """
        _check_day(day)
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"n must be an int, got {type(n).__name__}")
        step = dt.timedelta(days=1 if n > 0 else -1)
        remaining = abs(n)
        current = day
        while remaining:
            current += step
            if self.is_working_day(current):
                remaining -= 1
        return current

    def working_days_before(self, deadline: dt.date, n: int) -> dt.date:
        """Return the date ``n`` working days before ``deadline`` (for reminders ahead of it).

        :param deadline: the deadline.
        :param n: how many working days ahead, non-negative.
        :raises ValueError: if ``n`` is negative.
        """
        if isinstance(n, int) and not isinstance(n, bool) and n < 0:
            raise ValueError(f"n must not be negative, got {n}")
        return self.add_working_days(deadline, -n)

    def working_day_on_or_after(self, day: dt.date) -> dt.date:
        """Return ``day`` if it is a working day, else the next working day.

        :param day: the date.
        """
        return day if self.is_working_day(day) else self.add_working_days(day, 1)

    def holiday_blocks(self, start: dt.date, end: dt.date) -> list[tuple[dt.date, int]]:
        """Return the holiday blocks within ``start..end`` as (first day, length in days).

        A block is a run of consecutive non-working days containing at least one public
        holiday: weekends joined to a holiday ("与周末连休") count, as in the STA's notices
        (2024: "6月8日至10日放假3天" although only 06-10 is the statutory day). Runs are
        clipped to the window; a run of plain weekend days is not a block.

        :param start: the first date looked at.
        :param end: the last date looked at, inclusive.
        """
        blocks: list[tuple[dt.date, int]] = []
        first: dt.date | None = None
        length = 0
        has_holiday = False
        day = start
        while day <= end + dt.timedelta(days=1):
            resting = day <= end and not self.is_working_day(day)
            if resting:
                if first is None:
                    first, length, has_holiday = day, 0, False
                length += 1
                has_holiday = has_holiday or self.is_public_holiday(day)
            elif first is not None:
                if has_holiday:
                    blocks.append((first, length))
                first = None
            day += dt.timedelta(days=1)
        return blocks


@functools.cache
def default_calendar() -> WorkingCalendar:
    """Return the calendar with the packaged override table (loaded once)."""
    return WorkingCalendar(load_calendar_overrides())


def is_working_day(day: dt.date) -> bool:
    """Tell whether ``day`` is a working day in the default calendar.

    :param day: the date.
    :raises CalendarYearNotCovered: if no holiday data covers the year.
    """
    return default_calendar().is_working_day(day)


def is_public_holiday(day: dt.date) -> bool:
    """Tell whether ``day`` is a public holiday in the default calendar (no voice calls then).

    :param day: the date.
    :raises CalendarYearNotCovered: if no holiday data covers the year.
    """
    return default_calendar().is_public_holiday(day)


def add_working_days(day: dt.date, n: int) -> dt.date:
    """Return the date ``n`` working days after ``day`` in the default calendar.

    :param day: the starting date (not counted).
    :param n: how many working days to move; negative moves backwards.
    """
    return default_calendar().add_working_days(day, n)


def working_days_before(deadline: dt.date, n: int) -> dt.date:
    """Return the date ``n`` working days before ``deadline`` in the default calendar.

    :param deadline: the deadline.
    :param n: how many working days ahead, non-negative.
    """
    return default_calendar().working_days_before(deadline, n)


def _check_year_month(year: int, month: int) -> None:
    if isinstance(year, bool) or not isinstance(year, int) or not 1 <= year <= 9999:
        raise ValueError(f"year must be an int year, got {year!r}")
    if isinstance(month, bool) or not isinstance(month, int) or not 1 <= month <= 12:
        raise ValueError(f"month must be 1..12, got {month!r}")


def load_published_deadlines(source: CsvSource | None = None) -> dict[tuple[int, int], dt.date]:
    """Load a ``year,month,deadline`` table of published filing deadlines.

    :param source: a path or resource; the packaged ``data/filing_deadlines.csv`` by default.
    :raises ValueError: on a malformed row, a duplicate month or a deadline outside its month.
    """
    source = _data_file("filing_deadlines.csv") if source is None else source
    table: dict[tuple[int, int], dt.date] = {}
    for number, row in _read_csv_rows(source):
        where = f"{source}:{number}"
        try:
            key = (int(row.get("year", "")), int(row.get("month", "")))
        except ValueError:
            raise ValueError(f"{where}: year and month must be integers, got {row!r}") from None
        _check_year_month(*key)
        deadline = _parse_iso_date(row.get("deadline", ""), where=where)
        if (deadline.year, deadline.month) != key or deadline.day < FILING_DAY:
            raise ValueError(
                f"{where}: deadline {deadline} is not on or after the 15th of {key[0]}-{key[1]:02d}"
            )
        if key in table:
            raise ValueError(f"{where}: {key[0]}-{key[1]:02d} is listed twice")
        table[key] = deadline
    return table


@functools.cache
def _published() -> Mapping[tuple[int, int], dt.date]:
    return load_published_deadlines()


def published_filing_deadline(year: int, month: int) -> dt.date | None:
    """Return the published deadline for filings due in ``year``-``month``, or ``None``.

    :param year: the calendar year the deadline falls in.
    :param month: the month the deadline falls in (the month after the tax period).
    """
    _check_year_month(year, month)
    return _published().get((year, month))


def filing_deadline_by_rule(year: int, month: int, *, calendar: WorkingCalendar | None = None) -> dt.date:
    """Compute a filing deadline with the 实施细则 Art. 109 postponement rule.

    Start from the 15th. If a holiday block (see :meth:`WorkingCalendar.holiday_blocks`:
    rest days joined to a public holiday, weekends included) has at least 3 days within
    days 1-15 of the month, postpone by that many working days after the 15th. Only the
    block's days within 1-15 count: the 2024 Spring Festival block 02-10..02-17 postpones by
    6 (-> 02-23), the 2026 one 02-15..02-23 by 1, which is below 3, so its 15th simply moves
    to the next working day (-> 02-24). Otherwise a 15th that is not a working day moves to
    the next working day. This reproduces the published 2024, 2025 and 2026 tables, but the
    published table is the source of truth and this rule only a fallback.

    :param year: the calendar year of the deadline.
    :param month: the month of the deadline.
    :param calendar: the working calendar; the default one when ``None``.
    :raises CalendarYearNotCovered: if no holiday data covers the year.
    """
    _check_year_month(year, month)
    cal = calendar or default_calendar()
    fifteenth = dt.date(year, month, FILING_DAY)
    blocks = cal.holiday_blocks(dt.date(year, month, 1), fifteenth)
    postpone = sum(length for _, length in blocks if length >= MIN_POSTPONING_BLOCK)
    if postpone:
        return cal.add_working_days(fifteenth, postpone)
    return cal.working_day_on_or_after(fifteenth)


def filing_deadline(year: int, month: int, *, calendar: WorkingCalendar | None = None) -> dt.date:
    """Return the monthly/quarterly filing and payment deadline falling in ``year``-``month``.

    The published table wins; for a month it does not list, the Art. 109 rule
    (:func:`filing_deadline_by_rule`) is used and a warning logged.

    :param year: the calendar year of the deadline.
    :param month: the month of the deadline (filings for the previous month or quarter).
    :param calendar: the working calendar for the fallback; the default one when ``None``.
    :raises CalendarYearNotCovered: if the month is not published and no holiday data covers the year.
    """
    published = published_filing_deadline(year, month)
    if published is not None:
        return published
    deadline = filing_deadline_by_rule(year, month, calendar=calendar)
    logger.warning(
        "Filing deadline %04d-%02d is not in the published table; the Art. 109 fallback rule gives %s",
        year,
        month,
        deadline,
    )
    return deadline
