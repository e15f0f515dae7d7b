"""Dunning ladders as configuration: who is contacted when, on which channel, with which words.

A ladder is a YAML file per domain (``include/ladders/tax.yaml``, ``include/ladders/power.yaml``).
:func:`load_ladder` validates everything on load and refuses a bad file with a
:class:`LadderError` reading ``"<file>:<line>: <problem>"``, so a DAG stops before planning
anything: unknown keys, channels or kinds, overlapping stages, missing templates or templates
using unknown variables, bad sending windows, negative numbers, and an electricity cut-off
notice that breaks 条例 Art. 39 (only MORE than 30 days overdue, only with a logged 催交).

The selection helpers are pure: the as-of date or time is passed in, the clock is never read.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
import yaml
from jinja2 import meta

from include.dunning import calendar, templates
from include.paths import INCLUDE_ROOT, TEMPLATE_ROOT

__all__ = [
    "CHANNELS",
    "DOMAINS",
    "KINDS",
    "LADDER_ROOT",
    "POWER_SAMPLES",
    "POWER_VARIABLES",
    "TAX_SAMPLES",
    "TAX_VARIABLES",
    "ChannelRules",
    "ChannelStep",
    "ContactHistory",
    "Ladder",
    "LadderError",
    "Stage",
    "WeeklyCap",
    "load_ladder",
]

LADDER_ROOT = INCLUDE_ROOT / "ladders"

Channel = Literal["sms", "voice"]
Kind = Literal["before_deadline", "overdue", "balance", "not_filed"]
Priority = Literal["normal", "urgent"]


@dataclass(frozen=True, slots=True)
class ChannelRules:
    """How a channel's templates are checked.

    :param signature_required: the text must start with a 【signature】 (SMS). A voice text is
        read aloud, so it must not contain the brackets at all.
    """

    signature_required: bool


CHANNELS: Mapping[str, ChannelRules] = {
    "sms": ChannelRules(signature_required=True),
    "voice": ChannelRules(signature_required=False),
}
KINDS: tuple[str, ...] = ("before_deadline", "overdue", "balance", "not_filed")
PRIORITIES: tuple[str, ...] = ("normal", "urgent")
#: Stage kinds each domain may use.
DOMAINS: Mapping[str, tuple[str, ...]] = {
    "tax": ("before_deadline", "overdue", "not_filed"),
    "power": ("before_deadline", "overdue", "balance"),
}
#: Cut-off (中止供电) only when MORE than 30 days overdue (电力供应与使用条例 Art. 39).
CUTOFF_MIN_DAYS_OVERDUE = 31
#: The most SMS parts a worst-case message may take.
MAX_SMS_PARTS = 4

#: Variables the planner provides to tax templates. One message goes to one mobile number:
#: ``count`` liabilities of ``debtors`` taxpayers, ``names`` their names (as in planner.py).
TAX_VARIABLES: tuple[str, ...] = (
    "signature",
    "name",
    "names",
    "debtors",
    "period",
    "tax_type",
    "principal",
    "deadline",
    "as_of",
    "surcharge",
    "count",
)
#: Variables the planner provides to electricity templates: ``count`` accounts (户号, listed in
#: ``accounts``) of ``debtors`` account holders sharing one mobile number.
POWER_VARIABLES: tuple[str, ...] = (
    "signature",
    "name",
    "debtors",
    "account",
    "accounts",
    "amount",
    "penalty",
    "due_date",
    "as_of",
    "balance",
    "cutoff_date",
    "count",
)
_LONG_NAME = "新疆维吾尔自治区乌鲁木齐市天山区某某某某商贸有限责任公司"
# Worst-case values (long names, large amounts) every template is linted with: one liability,
# several liabilities of one debtor, several debtors sharing the number.
_TAX_BASE: dict[str, object] = {
    "signature": "示范市税务",
    "name": _LONG_NAME,
    "names": [_LONG_NAME],
    "debtors": 1,
    "period": "2026年12月",
    "tax_type": "城市维护建设税",
    "principal": "12,345,678.90",
    "deadline": "12月15日",
    "as_of": "12月31日",
    "surcharge": "1,234,567.89",
    "count": 1,
}
TAX_SAMPLES: tuple[Mapping[str, object], ...] = (
    _TAX_BASE,
    {**_TAX_BASE, "count": 9},
    {**_TAX_BASE, "count": 9, "debtors": 6, "names": [_LONG_NAME, "乌鲁木齐市某某建筑工程有限公司"]},
)
_POWER_BASE: dict[str, object] = {
    "signature": "示范供电公司",
    "name": _LONG_NAME,
    "debtors": 1,
    "account": "3300123456789",
    "accounts": ["3300123456789"],
    "amount": "1,234,567.89",
    "penalty": "123,456.78",
    "due_date": "12月25日",
    "as_of": "12月31日",
    "balance": "-1,234.56",
    "cutoff_date": "1月7日",
    "count": 1,
}
POWER_SAMPLES: tuple[Mapping[str, object], ...] = (
    _POWER_BASE,
    {**_POWER_BASE, "count": 9, "accounts": ["3300123456789", "3300123456790", "3300123456791"]},
    {
        **_POWER_BASE,
        "count": 9,
        "debtors": 3,
        "accounts": ["3300123456789", "3300123456790", "3300123456791"],
    },
)
_VARIABLES: Mapping[str, tuple[str, ...]] = {"tax": TAX_VARIABLES, "power": POWER_VARIABLES}
_SAMPLES: Mapping[str, tuple[Mapping[str, object], ...]] = {"tax": TAX_SAMPLES, "power": POWER_SAMPLES}

_WHEN = re.compile(r"^(first|undelivered|unanswered_after:([0-9]+))$")
_WINDOW = re.compile(r"^\s*([0-9]{1,2}):([0-9]{2})\s*-\s*([0-9]{1,2}):([0-9]{2})\s*$")


class LadderError(ValueError):
    """A ladder file that must not be used, naming the file and the line.

    :param file: the ladder file
    :param line: the 1-based line of the offending key
    :param problem: what is wrong
    """

    def __init__(self, file: str | Path, line: int, problem: str) -> None:
        self.file = str(file)
        self.line = line
        self.problem = problem
        super().__init__(f"{self.file}:{line}: {problem}")


@dataclass(frozen=True, slots=True)
class ChannelStep:
    """One rung of a stage's channel order.

    :param channel: ``"sms"`` or ``"voice"``
    :param when: ``"first"`` (always), ``"undelivered"`` (an SMS in this stage was not
        delivered) or ``"unanswered_after:N"`` (N delivered SMS in this stage went unanswered)
    :param max_attempts: the most contacts on this channel in the stage; ``None`` for no cap
    """

    channel: str
    when: str = "first"
    max_attempts: int | None = None

    @property
    def unanswered_threshold(self) -> int | None:
        """Return N of ``unanswered_after:N``, else ``None``."""
        if self.when.startswith("unanswered_after:"):
            return int(self.when.partition(":")[2])
        return None

    def applies(self, history: ContactHistory) -> bool:
        """Tell whether this step's condition holds for a debtor's history in the stage.

        :param history: the debtor's previous contacts in the stage
        """
        if self.when == "first":
            return True
        if self.when == "undelivered":
            return history.sms_undelivered > 0
        threshold = self.unanswered_threshold
        return threshold is not None and history.sms_unanswered >= threshold


@dataclass(frozen=True, slots=True)
class ContactHistory:
    """A debtor's previous contacts in one stage, as the collected receipts tell them.

    :param sms_delivered: SMS with a delivery receipt saying delivered
    :param sms_undelivered: SMS that failed, expired or were rejected
    :param sms_unanswered: delivered SMS followed by neither payment nor reply
    :param voice_attempts: calls placed, answered or not
    """

    sms_delivered: int = 0
    sms_undelivered: int = 0
    sms_unanswered: int = 0
    voice_attempts: int = 0

    def attempts(self, channel: str) -> int:
        """Return how many contacts went out on ``channel`` in the stage.

        :param channel: ``"sms"`` or ``"voice"``
        """
        if channel == "sms":
            return self.sms_delivered + self.sms_undelivered
        if channel == "voice":
            return self.voice_attempts
        raise ValueError(f"unknown channel {channel!r}")


@dataclass(frozen=True, slots=True)
class WeeklyCap:
    """At most ``contacts`` dunning contacts per debtor per ``days`` days, across channels.

    :param contacts: how many contacts the period allows
    :param days: the period's length in days
    """

    contacts: int = 1
    days: int = 7

    def allows(self, contact_dates: Iterable[dt.date], as_of: dt.date) -> bool:
        """Tell whether one more contact on ``as_of`` stays within the cap.

        A contact on day D blocks days D .. D + days - 1: with the default, the next contact
        may go out on D + 7.

        :param contact_dates: dates of this debtor's previous capped contacts, any channel
        :param as_of: the day of the contact being considered
        """
        since = as_of - dt.timedelta(days=self.days)
        recent = sum(1 for day in contact_dates if since < day <= as_of)
        return recent < self.contacts


@dataclass(frozen=True, slots=True)
class Stage:
    """One stage of a ladder.

    :param name: the stage's name, used in ledger keys
    :param kind: ``before_deadline``, ``overdue``, ``balance`` or ``not_filed``
    :param channels: the channel order, e.g. SMS first, voice when undelivered
    :param templates: template path under the template root, per channel
    :param working_days_before: for ``before_deadline``: the working-day offsets before the deadline
    :param min_days_overdue: for ``overdue``: the first day (0 = the due date itself)
    :param max_days_overdue: for ``overdue``: the last day, ``None`` for open-ended
    :param repeat_every_days: a new attempt every this many days; ``None`` for one attempt
    :param max_attempts: the most attempts in the stage; ``None`` for no cap
    :param requires_payment_demand: only for debtors with a logged payment demand (催交)
    :param balance_below: for ``balance``: alert thresholds in yuan, highest first
    :param priority: ``"normal"`` or ``"urgent"`` (sent first when capacity is short)
    :param line: the line of the stage in the ladder file
    :param months_not_filed: for ``not_filed``: consecutive months without a filing
    :param flag_for_staff: entering the stage flags the debtor for staff follow-up
    :param subject_to_weekly_cap: contacts of this stage count toward and obey the weekly cap
    :param cutoff_notice: the stage announces a cut-off (中止供电)
    """

    name: str
    kind: str
    channels: tuple[ChannelStep, ...]
    templates: Mapping[str, str]
    working_days_before: tuple[int, ...] | None = None
    min_days_overdue: int | None = None
    max_days_overdue: int | None = None
    repeat_every_days: int | None = None
    max_attempts: int | None = None
    requires_payment_demand: bool = False
    balance_below: tuple[Decimal, ...] | None = None
    priority: str = "normal"
    line: int = 0
    months_not_filed: int | None = None
    flag_for_staff: bool = False
    subject_to_weekly_cap: bool = True
    cutoff_notice: bool = False

    def covers_day(self, days_overdue: int) -> bool:
        """Tell whether an ``overdue`` stage's day range contains ``days_overdue``.

        :param days_overdue: days since the due date (0 = the due date)
        """
        if self.kind != "overdue" or self.min_days_overdue is None:
            return False
        upper = self.max_days_overdue
        return self.min_days_overdue <= days_overdue and (upper is None or days_overdue <= upper)

    def attempt(self, days_overdue: int) -> int | None:
        """Return the attempt number for a day of an ``overdue`` stage, or ``None`` for no contact.

        1 from the stage's first day, +1 every ``repeat_every_days``. The number is a period,
        not a single day: a run that missed the first day still finds attempt 1 pending, and the
        ledger's idempotency key (which carries the attempt) keeps it to one contact.
        ``None`` outside the stage's days or beyond ``max_attempts``.

        :param days_overdue: days since the due date (0 = the due date)
        """
        if self.kind != "overdue":
            raise ValueError(f"stage {self.name!r} is {self.kind}, attempts count overdue days only")
        if not self.covers_day(days_overdue):
            return None
        assert self.min_days_overdue is not None
        elapsed = days_overdue - self.min_days_overdue
        number = 1 if self.repeat_every_days is None else 1 + elapsed // self.repeat_every_days
        if self.max_attempts is not None and number > self.max_attempts:
            return None
        return number

    def reminder_attempt(self, as_of: dt.date, deadline: dt.date) -> int | None:
        """Return which reminder of a ``before_deadline`` stage falls on ``as_of``, or ``None``.

        The earliest offset is attempt 1 (with ``[5, 2]``: 5 working days before -> 1, 2 -> 2).

        :param as_of: the run's date
        :param deadline: the filing or payment deadline
        """
        if self.kind != "before_deadline" or not self.working_days_before:
            return None
        for number, offset in enumerate(sorted(self.working_days_before, reverse=True), start=1):
            if self.max_attempts is not None and number > self.max_attempts:
                return None
            if calendar.working_days_before(deadline, offset) == as_of:
                return number
        return None

    def balance_threshold(self, balance: Decimal) -> Decimal | None:
        """Return the lowest threshold of a ``balance`` stage that ``balance`` is below, or ``None``.

        "Below" is strict: a balance of exactly 0 is below 50 but not below 0.

        :param balance: the prepaid account's balance in yuan
        """
        if self.kind != "balance" or not self.balance_below:
            return None
        crossed = [limit for limit in self.balance_below if balance < limit]
        return min(crossed) if crossed else None


@dataclass(frozen=True, slots=True)
class Ladder:
    """A validated dunning ladder for one domain.

    :param domain: ``"tax"`` or ``"power"``
    :param campaign: the campaign name recorded on ledger rows
    :param timezone: the IANA zone the sending windows are in
    :param stages: the stages in file order
    :param weekly_cap: the frequency cap across channels
    :param sending_windows: per channel, the local start (inclusive) and end (exclusive) time
    :param no_voice_on_public_holidays: no calls on statutory public holidays
    :param flag_after_failed_contacts: failed contacts after which staff take over
    :param source_file: the file the ladder was loaded from
    """

    domain: str
    campaign: str
    timezone: str
    stages: tuple[Stage, ...]
    weekly_cap: WeeklyCap
    sending_windows: Mapping[str, tuple[dt.time, dt.time]]
    no_voice_on_public_holidays: bool
    flag_after_failed_contacts: int
    source_file: str = ""
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_zone", ZoneInfo(self.timezone))

    @property
    def zone(self) -> ZoneInfo:
        """Return the ladder's time zone."""
        return self._zone

    def stage(self, name: str) -> Stage:
        """Return the stage called ``name``.

        :param name: the stage's name
        :raises KeyError: if there is none
        """
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"{self.source_file}: no stage named {name!r}")

    def overdue_stage(self, days_overdue: int, *, payment_demand_logged: bool = False) -> Stage | None:
        """Return the ``overdue`` stage for a debtor ``days_overdue`` days past the due date.

        A stage that requires a payment demand (催交, the cut-off notice) is returned only when
        one is logged; without it the debtor gets no stage on those days.

        :param days_overdue: days since the due date (0 = the due date)
        :param payment_demand_logged: whether a payment demand to this debtor is on record
        """
        for stage in self.stages:
            if stage.covers_day(days_overdue):
                if stage.requires_payment_demand and not payment_demand_logged:
                    return None
                return stage
        return None

    def before_deadline_stage(self, as_of: dt.date, deadline: dt.date) -> Stage | None:
        """Return the ``before_deadline`` stage whose reminder falls on ``as_of``, if any.

        ``as_of`` must be exactly N working days before ``deadline`` for one of the stage's N
        (working days as in :mod:`include.dunning.calendar`: holidays and make-up days count).

        :param as_of: the run's date
        :param deadline: the filing or payment deadline
        """
        for stage in self.stages:
            if stage.reminder_attempt(as_of, deadline) is not None:
                return stage
        return None

    def balance_stage(self, balance: Decimal) -> Stage | None:
        """Return the ``balance`` stage whose lowest crossed threshold is lowest, if any.

        :param balance: the prepaid account's balance in yuan
        """
        best: tuple[Decimal, Stage] | None = None
        for stage in self.stages:
            threshold = stage.balance_threshold(balance)
            if threshold is not None and (best is None or threshold < best[0]):
                best = (threshold, stage)
        return best[1] if best else None

    def not_filed_stage(self, consecutive_months: int) -> Stage | None:
        """Return the ``not_filed`` stage (非正常户 escalation) a filing gap reaches, if any.

        :param consecutive_months: consecutive months without a filing
        """
        reached = [
            s
            for s in self.stages
            if s.kind == "not_filed"
            and s.months_not_filed is not None
            and consecutive_months >= s.months_not_filed
        ]
        return max(reached, key=lambda s: s.months_not_filed or 0) if reached else None

    def channel_for(self, stage: Stage, history: ContactHistory) -> str | None:
        """Return the channel for the next contact in ``stage``, or ``None`` when none is left.

        The latest step whose condition holds and whose channel cap is not reached wins: SMS
        first, voice once an SMS was undelivered or after N unanswered SMS; when the voice cap
        is reached it falls back to the earlier steps.

        :param stage: the debtor's stage
        :param history: the debtor's previous contacts in that stage
        """
        for step in reversed(stage.channels):
            if not step.applies(history):
                continue
            if step.max_attempts is not None and history.attempts(step.channel) >= step.max_attempts:
                continue
            return step.channel
        return None

    def within_weekly_cap(self, stage: Stage, contact_dates: Iterable[dt.date], as_of: dt.date) -> bool:
        """Tell whether a contact in ``stage`` on ``as_of`` respects the weekly cap.

        :param stage: the stage of the contact considered
        :param contact_dates: dates of this debtor's previous capped contacts, any channel
        :param as_of: the day of the contact considered
        """
        if not stage.subject_to_weekly_cap:
            return True
        return self.weekly_cap.allows(contact_dates, as_of)

    def should_flag(self, failed_contacts: int) -> bool:
        """Tell whether a debtor with ``failed_contacts`` failed contacts goes to staff.

        :param failed_contacts: undelivered SMS and unanswered calls so far
        """
        return failed_contacts >= self.flag_after_failed_contacts

    def _local(self, at: dt.datetime) -> dt.datetime:
        if not isinstance(at, dt.datetime) or at.tzinfo is None or at.utcoffset() is None:
            raise ValueError(f"an aware datetime is required, got {at!r}")
        return at.astimezone(self._zone)

    def _day_allowed(self, channel: str, day: dt.date) -> bool:
        if channel == "voice" and self.no_voice_on_public_holidays:
            return not calendar.is_public_holiday(day)
        return True

    def _window(self, channel: str) -> tuple[dt.time, dt.time]:
        try:
            return self.sending_windows[channel]
        except KeyError:
            raise ValueError(f"{self.source_file}: no sending window for channel {channel!r}") from None

    def in_window(self, channel: str, at: dt.datetime) -> bool:
        """Tell whether ``channel`` may be used at ``at`` (start inclusive, end exclusive).

        :param channel: ``"sms"`` or ``"voice"``
        :param at: an aware datetime; compared in the ladder's time zone
        """
        start, end = self._window(channel)
        local = self._local(at)
        if not self._day_allowed(channel, local.date()):
            return False
        return start <= local.time().replace(tzinfo=None) < end

    def next_window_start(self, channel: str, at: dt.datetime) -> dt.datetime:
        """Return ``at`` if ``channel`` is open then, else when its window next opens.

        :param channel: ``"sms"`` or ``"voice"``
        :param at: an aware datetime
        :return: an aware datetime in the ladder's time zone
        """
        if self.in_window(channel, at):
            return at.astimezone(self._zone)
        start, _ = self._window(channel)
        local = self._local(at)
        day = local.date()
        if local.time().replace(tzinfo=None) >= start or not self._day_allowed(channel, day):
            day += dt.timedelta(days=1)
        for _ in range(366):
            if self._day_allowed(channel, day):
                return dt.datetime.combine(day, start, tzinfo=self._zone)
            day += dt.timedelta(days=1)
        raise ValueError(f"no {channel} window within a year of {at.isoformat()}")  # pragma: no cover


# --- loading ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Node:
    """A YAML value with the line it was written on (a mapping entry: its key's line)."""

    value: Any
    line: int
    raw: str | None = None


class _Reader:
    """Turns composed YAML nodes into checked Python values, raising :class:`LadderError`."""

    def __init__(self, file: str) -> None:
        self.file = file

    def error(self, line: int, problem: str) -> LadderError:
        return LadderError(self.file, line, problem)

    def parse(self, text: str) -> _Node:
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
            if root is None:
                raise self.error(1, "the ladder file is empty")
            return self._convert(loader, root, root.start_mark.line + 1)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else 1
            raise self.error(line, f"not valid YAML: {exc.problem or exc.context}") from None
        finally:
            loader.dispose()

    def _convert(self, loader: yaml.SafeLoader, node: yaml.Node, line: int) -> _Node:
        if isinstance(node, yaml.MappingNode):
            items: dict[str, _Node] = {}
            for key_node, value_node in node.value:
                key_line = key_node.start_mark.line + 1
                if not isinstance(key_node, yaml.ScalarNode):
                    raise self.error(key_line, "keys must be plain names")
                key = str(key_node.value)
                if key in items:
                    raise self.error(key_line, f"{key!r} is given twice (first on line {items[key].line})")
                items[key] = self._convert(loader, value_node, key_line)
            return _Node(items, line)
        if isinstance(node, yaml.SequenceNode):
            return _Node([self._convert(loader, item, item.start_mark.line + 1) for item in node.value], line)
        return _Node(loader.construct_object(node, deep=True), line, str(node.value))

    # typed accessors

    def mapping(self, node: _Node, what: str, allowed: Iterable[str]) -> dict[str, _Node]:
        if not isinstance(node.value, dict):
            raise self.error(node.line, f"{what} must be a mapping")
        allowed = tuple(allowed)
        for key, child in node.value.items():
            if key not in allowed:
                raise self.error(child.line, f"unknown key {key!r} in {what} (allowed: {', '.join(allowed)})")
        return node.value

    def require(self, items: dict[str, _Node], key: str, what: str, line: int) -> _Node:
        if key not in items or items[key].value is None:
            raise self.error(line, f"{what} needs {key!r}")
        return items[key]

    def text(self, node: _Node, what: str) -> str:
        if not isinstance(node.value, str) or not node.value.strip():
            raise self.error(node.line, f"{what} must be a non-empty text, got {node.raw!r}")
        return node.value.strip()

    def boolean(self, node: _Node | None, what: str, default: bool) -> bool:
        if node is None or node.value is None:
            return default
        if not isinstance(node.value, bool):
            raise self.error(node.line, f"{what} must be true or false, got {node.raw!r}")
        return node.value

    def integer(
        self, node: _Node | None, what: str, *, minimum: int = 0, optional: bool = True
    ) -> int | None:
        if node is None or node.value is None:
            if optional:
                return None
            raise self.error(node.line if node else 0, f"{what} is required")
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(node.line, f"{what} must be a whole number, got {node.raw!r}")
        if value < minimum:
            if value < 0:
                raise self.error(node.line, f"{what} must not be negative, got {value}")
            raise self.error(node.line, f"{what} must be at least {minimum}, got {value}")
        return value

    def items(self, node: _Node) -> list[_Node]:
        """Return a list's items; a single scalar counts as a one-item list."""
        return node.value if isinstance(node.value, list) else [node]


_TOP_KEYS = (
    "domain",
    "campaign",
    "timezone",
    "sending_windows",
    "no_voice_on_public_holidays",
    "weekly_cap",
    "flag_after_failed_contacts",
    "stages",
)
_STAGE_KEYS = (
    "name",
    "kind",
    "channels",
    "templates",
    "working_days_before",
    "min_days_overdue",
    "max_days_overdue",
    "repeat_every_days",
    "max_attempts",
    "requires_payment_demand",
    "balance_below",
    "priority",
    "months_not_filed",
    "flag_for_staff",
    "subject_to_weekly_cap",
    "cutoff_notice",
)
# Keys meaningful for one kind only; anything else on a stage of another kind is a mistake.
_KIND_KEYS: Mapping[str, tuple[str, ...]] = {
    "before_deadline": ("working_days_before",),
    "overdue": ("min_days_overdue", "max_days_overdue", "repeat_every_days", "requires_payment_demand"),
    "balance": ("balance_below",),
    "not_filed": ("months_not_filed",),
}
_KIND_ONLY = {key for keys in _KIND_KEYS.values() for key in keys}


def _resolve(path_or_name: str | Path) -> Path:
    text = str(path_or_name)
    if isinstance(path_or_name, str) and re.fullmatch(r"[a-z][a-z0-9_]*", text):
        return LADDER_ROOT / f"{text}.yaml"
    return Path(path_or_name)


def load_ladder(path_or_name: str | Path, *, template_root: Path | None = None) -> Ladder:
    """Load and validate a ladder file.

    :param path_or_name: a path to a YAML file, or a packaged ladder's name (``"tax"``, ``"power"``)
    :param template_root: where the message templates are; ``include/templates`` by default
    :raises LadderError: ``"<file>:<line>: <problem>"`` for anything that must not run
    """
    path = _resolve(path_or_name)
    root = Path(template_root) if template_root is not None else TEMPLATE_ROOT
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LadderError(path, 0, f"cannot read the ladder file: {exc.strerror or exc}") from None
    reader = _Reader(str(path))
    document = reader.parse(text)
    top = reader.mapping(document, "the ladder", _TOP_KEYS)

    domain_node = reader.require(top, "domain", "the ladder", document.line)
    domain = reader.text(domain_node, "domain")
    if domain not in DOMAINS:
        raise reader.error(domain_node.line, f"unknown domain {domain!r} (known: {', '.join(DOMAINS)})")
    campaign = reader.text(reader.require(top, "campaign", "the ladder", document.line), "campaign")

    timezone = "Asia/Shanghai"
    if "timezone" in top:
        timezone = reader.text(top["timezone"], "timezone")
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise reader.error(top["timezone"].line, f"unknown time zone {timezone!r}") from None

    windows = _windows(reader, reader.require(top, "sending_windows", "the ladder", document.line))
    no_voice = reader.boolean(top.get("no_voice_on_public_holidays"), "no_voice_on_public_holidays", True)
    weekly_cap = _weekly_cap(reader, reader.require(top, "weekly_cap", "the ladder", document.line))
    flag_after = reader.integer(
        reader.require(top, "flag_after_failed_contacts", "the ladder", document.line),
        "flag_after_failed_contacts",
        minimum=1,
        optional=False,
    )
    stages_node = reader.require(top, "stages", "the ladder", document.line)
    if not isinstance(stages_node.value, list) or not stages_node.value:
        raise reader.error(stages_node.line, "stages must be a non-empty list")
    stages = tuple(
        _stage(reader, node, domain=domain, windows=windows, template_root=root) for node in stages_node.value
    )
    _check_overlaps(reader, stages)
    assert flag_after is not None
    return Ladder(
        domain=domain,
        campaign=campaign,
        timezone=timezone,
        stages=stages,
        weekly_cap=weekly_cap,
        sending_windows=windows,
        no_voice_on_public_holidays=no_voice,
        flag_after_failed_contacts=flag_after,
        source_file=str(path),
    )


def _windows(reader: _Reader, node: _Node) -> dict[str, tuple[dt.time, dt.time]]:
    if not isinstance(node.value, dict):
        raise reader.error(node.line, "sending_windows must map a channel to a window like '08:00-20:00'")
    windows: dict[str, tuple[dt.time, dt.time]] = {}
    for channel, child in node.value.items():
        if channel not in CHANNELS:
            raise reader.error(child.line, f"unknown channel {channel!r} (known: {', '.join(CHANNELS)})")
        raw = child.raw if child.raw is not None else ""
        match = _WINDOW.match(raw)
        if not match:
            raise reader.error(
                child.line, f"sending window for {channel} must look like '08:00-20:00', got {raw!r}"
            )
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
            raise reader.error(child.line, f"sending window for {channel} has an impossible time: {raw!r}")
        start, end = dt.time(h1, m1), dt.time(h2, m2)
        if start >= end:
            raise reader.error(
                child.line, f"sending window for {channel} must start before it ends (same day), got {raw!r}"
            )
        windows[channel] = (start, end)
    return windows


def _weekly_cap(reader: _Reader, node: _Node) -> WeeklyCap:
    items = reader.mapping(node, "weekly_cap", ("contacts", "days"))
    contacts = reader.integer(
        reader.require(items, "contacts", "weekly_cap", node.line), "weekly_cap.contacts", minimum=1
    )
    days = reader.integer(
        reader.require(items, "days", "weekly_cap", node.line), "weekly_cap.days", minimum=1
    )
    assert contacts is not None and days is not None
    return WeeklyCap(contacts=contacts, days=days)


def _stage(
    reader: _Reader,
    node: _Node,
    *,
    domain: str,
    windows: Mapping[str, tuple[dt.time, dt.time]],
    template_root: Path,
) -> Stage:
    items = reader.mapping(node, "a stage", _STAGE_KEYS)
    name = reader.text(reader.require(items, "name", "a stage", node.line), "stage name")
    what = f"stage {name!r}"
    kind_node = reader.require(items, "kind", what, node.line)
    kind = reader.text(kind_node, f"{what} kind")
    if kind not in KINDS:
        raise reader.error(kind_node.line, f"unknown kind {kind!r} in {what} (known: {', '.join(KINDS)})")
    if kind not in DOMAINS[domain]:
        raise reader.error(kind_node.line, f"kind {kind!r} does not apply to the {domain} domain")
    for key in _KIND_ONLY - set(_KIND_KEYS[kind]):
        if key in items and items[key].value is not None:
            raise reader.error(items[key].line, f"{key!r} does not apply to a {kind} stage ({what})")

    priority = "normal"
    if "priority" in items:
        priority = reader.text(items["priority"], f"{what} priority")
        if priority not in PRIORITIES:
            raise reader.error(items["priority"].line, f"priority must be one of {', '.join(PRIORITIES)}")

    flag_for_staff = reader.boolean(items.get("flag_for_staff"), f"{what} flag_for_staff", False)
    channels = _channels(reader, items.get("channels"), what, windows)
    if not channels and not flag_for_staff:
        raise reader.error(node.line, f"{what} needs channels (or flag_for_staff: true)")
    stage_templates = _templates(
        reader, items.get("templates"), what, channels, domain, template_root, node.line
    )

    working_days: tuple[int, ...] | None = None
    min_days = max_days = repeat = months = None
    balance_below: tuple[Decimal, ...] | None = None
    if kind == "before_deadline":
        wd_node = reader.require(items, "working_days_before", what, node.line)
        offsets = [
            reader.integer(item, f"{what} working_days_before", optional=False)
            for item in reader.items(wd_node)
        ]
        if not offsets:
            raise reader.error(wd_node.line, f"{what} needs at least one working_days_before offset")
        for item, offset in zip(reader.items(wd_node), offsets, strict=True):
            if offsets.count(offset) > 1:
                raise reader.error(item.line, f"{what} lists {offset} working days before twice")
        working_days = tuple(o for o in offsets if o is not None)
    elif kind == "overdue":
        min_days = reader.integer(
            reader.require(items, "min_days_overdue", what, node.line),
            f"{what} min_days_overdue",
            optional=False,
        )
        max_days = reader.integer(items.get("max_days_overdue"), f"{what} max_days_overdue")
        if max_days is not None and min_days is not None and max_days < min_days:
            raise reader.error(
                items["max_days_overdue"].line,
                f"{what}: max_days_overdue {max_days} is before min_days_overdue {min_days}",
            )
        repeat = reader.integer(items.get("repeat_every_days"), f"{what} repeat_every_days", minimum=1)
    elif kind == "balance":
        bb_node = reader.require(items, "balance_below", what, node.line)
        values = [_decimal(reader, item, f"{what} balance_below") for item in reader.items(bb_node)]
        for item, value in zip(reader.items(bb_node), values, strict=True):
            if values.count(value) > 1:
                raise reader.error(item.line, f"{what} lists the threshold {value} twice")
        balance_below = tuple(sorted(values, reverse=True))
    elif kind == "not_filed":
        months = reader.integer(
            reader.require(items, "months_not_filed", what, node.line),
            f"{what} months_not_filed",
            minimum=1,
            optional=False,
        )

    max_attempts = reader.integer(items.get("max_attempts"), f"{what} max_attempts", minimum=1)
    requires_demand = reader.boolean(
        items.get("requires_payment_demand"), f"{what} requires_payment_demand", False
    )
    cutoff_node = items.get("cutoff_notice")
    cutoff = reader.boolean(cutoff_node, f"{what} cutoff_notice", False)
    # A cut-off notice cannot slip past the rule by leaving the flag out.
    looks_like_cutoff = "cutoff" in name.lower() or any(
        "cutoff" in t.lower() for t in stage_templates.values()
    )
    if cutoff or looks_like_cutoff:
        where = cutoff_node.line if cutoff_node is not None else node.line
        if domain != "power":
            raise reader.error(where, f"{what}: cut-off notices exist only in the power domain")
        if kind != "overdue":
            raise reader.error(kind_node.line, f"{what}: a cut-off notice must be an overdue stage")
        if min_days is None or min_days < CUTOFF_MIN_DAYS_OVERDUE:
            line = items["min_days_overdue"].line if "min_days_overdue" in items else where
            raise reader.error(
                line,
                f"{what}: a cut-off notice may start only after day 30 overdue "
                f"(min_days_overdue >= {CUTOFF_MIN_DAYS_OVERDUE}, 条例 Art. 39), got {min_days}",
            )
        if not requires_demand:
            line = items["requires_payment_demand"].line if "requires_payment_demand" in items else where
            raise reader.error(
                line,
                f"{what}: a cut-off notice needs a logged payment demand (requires_payment_demand: true)",
            )
        cutoff = True

    return Stage(
        name=name,
        kind=kind,
        channels=channels,
        templates=stage_templates,
        working_days_before=working_days,
        min_days_overdue=min_days,
        max_days_overdue=max_days,
        repeat_every_days=repeat,
        max_attempts=max_attempts,
        requires_payment_demand=requires_demand,
        balance_below=balance_below,
        priority=priority,
        line=node.line,
        months_not_filed=months,
        flag_for_staff=flag_for_staff,
        subject_to_weekly_cap=reader.boolean(
            items.get("subject_to_weekly_cap"), f"{what} subject_to_weekly_cap", True
        ),
        cutoff_notice=cutoff,
    )


def _decimal(reader: _Reader, node: _Node, what: str) -> Decimal:
    raw = (node.raw or "").strip()
    if isinstance(node.value, bool) or not isinstance(node.value, int | float):
        raise reader.error(node.line, f"{what} must be an amount in yuan, got {raw!r}")
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise reader.error(node.line, f"{what} must be an amount in yuan, got {raw!r}") from None
    if not value.is_finite():
        raise reader.error(node.line, f"{what} must be a finite amount, got {raw!r}")
    return value


def _channels(
    reader: _Reader, node: _Node | None, what: str, windows: Mapping[str, tuple[dt.time, dt.time]]
) -> tuple[ChannelStep, ...]:
    if node is None or node.value is None:
        return ()
    if not isinstance(node.value, list):
        raise reader.error(node.line, f"{what} channels must be a list of steps")
    steps: list[ChannelStep] = []
    for index, item in enumerate(node.value):
        if isinstance(item.value, str):  # shorthand: "- sms"
            channel_node, when, cap = item, "first", None
        else:
            step = reader.mapping(item, f"a channel step of {what}", ("channel", "when", "max_attempts"))
            channel_node = reader.require(step, "channel", f"a channel step of {what}", item.line)
            when = reader.text(step["when"], "when") if "when" in step else "first"
            cap = reader.integer(step.get("max_attempts"), f"{what} channel max_attempts", minimum=1)
            when_line = step["when"].line if "when" in step else item.line
            if not _WHEN.match(when) or when == "unanswered_after:0":
                raise reader.error(
                    when_line, f"unknown condition {when!r} (use first, undelivered or unanswered_after:N)"
                )
            if (index == 0) != (when == "first"):
                raise reader.error(
                    when_line,
                    f"{what}: the first channel step must be 'when: first' and only the first"
                    if index == 0
                    else f"{what}: only the first channel step may be 'when: first'",
                )
        channel = reader.text(channel_node, "channel")
        if channel not in CHANNELS:
            raise reader.error(
                channel_node.line, f"unknown channel {channel!r} in {what} (known: {', '.join(CHANNELS)})"
            )
        if channel not in windows:
            raise reader.error(channel_node.line, f"channel {channel!r} has no sending window")
        if isinstance(item.value, str) and index > 0:
            raise reader.error(item.line, f"{what}: give a 'when' for every channel step after the first")
        steps.append(ChannelStep(channel=channel, when=when, max_attempts=cap))
    return tuple(steps)


def _templates(
    reader: _Reader,
    node: _Node | None,
    what: str,
    channels: tuple[ChannelStep, ...],
    domain: str,
    root: Path,
    stage_line: int,
) -> dict[str, str]:
    used = {step.channel for step in channels}
    if node is None or node.value is None:
        if used:
            raise reader.error(stage_line, f"{what} needs templates for {', '.join(sorted(used))}")
        return {}
    if not isinstance(node.value, dict):
        raise reader.error(node.line, f"{what} templates must map a channel to a template file")
    found: dict[str, str] = {}
    for channel, child in node.value.items():
        if channel not in CHANNELS:
            raise reader.error(child.line, f"unknown channel {channel!r} in {what} templates")
        if channel not in used:
            raise reader.error(child.line, f"{what} has a {channel} template but no {channel} channel step")
        name = reader.text(child, f"{what} {channel} template")
        _check_template(reader, child.line, name, channel, domain, root)
        found[channel] = name
    missing = sorted(used - set(found))
    if missing:
        raise reader.error(node.line, f"{what} has no template for {', '.join(missing)}")
    return found


def _check_template(reader: _Reader, line: int, name: str, channel: str, domain: str, root: Path) -> None:
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise reader.error(line, f"template {name!r} must be a path under the template root")
    if relative.parts[0] != channel:
        raise reader.error(line, f"a {channel} template must be under {channel}/, got {name!r}")
    if not (root / relative).is_file():
        raise reader.error(line, f"template {name} does not exist under {root}")
    allowed = _VARIABLES[domain]
    for sample in _SAMPLES[domain]:
        if CHANNELS[channel].signature_required:
            try:
                templates.lint_template(
                    name, allowed_variables=allowed, sample=dict(sample), max_parts=MAX_SMS_PARTS, root=root
                )
            except templates.TemplateProblem as exc:
                raise reader.error(line, f"template {name}: {exc}") from None
        else:
            _lint_read_aloud(reader, line, name, root, allowed, dict(sample))


def _lint_read_aloud(
    reader: _Reader, line: int, name: str, root: Path, allowed: Iterable[str], sample: dict[str, object]
) -> None:
    """Check a voice template: valid Jinja, known variables, no 【】 brackets, no legal claims."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root)), undefined=jinja2.StrictUndefined, autoescape=False
    )
    source = (root / name).read_text(encoding="utf-8")
    try:
        used = meta.find_undeclared_variables(env.parse(source))
    except jinja2.TemplateSyntaxError as exc:
        raise reader.error(line, f"template {name}:{exc.lineno}: {exc.message}") from None
    unknown = sorted(used - set(allowed))
    if unknown:
        raise reader.error(line, f"template {name}: unknown variables {', '.join(unknown)}")
    text = env.from_string(source).render(**sample).strip()
    if "【" in text or "】" in text:
        raise reader.error(line, f"template {name}: a voice text is read aloud, leave out the 【】 signature")
    claims = [c for c in templates.LEGAL_NOTICE_CLAIMS if c in text]
    if claims:
        raise reader.error(
            line, f"template {name}: a reminder must not claim legal service ({', '.join(claims)})"
        )


def _check_overlaps(reader: _Reader, stages: tuple[Stage, ...]) -> None:
    seen_names: dict[str, Stage] = {}
    for index, stage in enumerate(stages):
        if stage.name in seen_names:
            raise reader.error(
                stage.line,
                f"stage name {stage.name!r} is used twice (first on line {seen_names[stage.name].line})",
            )
        seen_names[stage.name] = stage
        for earlier in stages[:index]:
            problem = _overlap(earlier, stage)
            if problem:
                raise reader.error(
                    stage.line,
                    f"stage {stage.name!r} overlaps stage {earlier.name!r} (line {earlier.line}): {problem}",
                )


def _overlap(a: Stage, b: Stage) -> str | None:
    if a.kind != b.kind:
        return None
    if a.kind == "overdue":
        assert a.min_days_overdue is not None and b.min_days_overdue is not None
        a_end = a.max_days_overdue if a.max_days_overdue is not None else float("inf")
        b_end = b.max_days_overdue if b.max_days_overdue is not None else float("inf")
        low, high = max(a.min_days_overdue, b.min_days_overdue), min(a_end, b_end)
        if low <= high:
            upper = "on" if high == float("inf") else f"to {int(high)}"
            return f"both cover days overdue {low} {upper}"
    if a.kind == "before_deadline":
        shared = sorted(set(a.working_days_before or ()) & set(b.working_days_before or ()))
        if shared:
            return f"both remind {', '.join(map(str, shared))} working days before the deadline"
    if a.kind == "balance":
        shared_limits = sorted(set(a.balance_below or ()) & set(b.balance_below or ()))
        if shared_limits:
            return f"both alert below {', '.join(map(str, shared_limits))} yuan"
    if a.kind == "not_filed" and a.months_not_filed == b.months_not_filed:
        return f"both escalate after {a.months_not_filed} months not filed"
    return None
