"""Ladders as configuration: the packaged defaults (DOMAIN §6), refusal of bad files, selection."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from include.dunning.ladder import (
    LADDER_ROOT,
    ContactHistory,
    Ladder,
    LadderError,
    WeeklyCap,
    load_ladder,
)
from include.paths import TEMPLATE_ROOT

SHANGHAI = ZoneInfo("Asia/Shanghai")
date = dt.date


def at(day: str, clock: str, zone: dt.tzinfo = SHANGHAI) -> dt.datetime:
    hour, minute = (int(x) for x in clock.split(":"))
    return dt.datetime.combine(date.fromisoformat(day), dt.time(hour, minute), tzinfo=zone)


@pytest.fixture(scope="module")
def tax() -> Ladder:
    return load_ladder("tax")


@pytest.fixture(scope="module")
def power() -> Ladder:
    return load_ladder("power")


# --- the packaged ladders ------------------------------------------------------------------------


def _line_of(path: Path, text: str) -> int:
    for number, line in enumerate(path.read_text("utf-8").splitlines(), start=1):
        if text in line:
            return number
    raise AssertionError(f"{text!r} not in {path}")


def test_tax_ladder_has_the_domain_defaults(tax: Ladder) -> None:
    assert tax.domain == "tax" and tax.timezone == "Asia/Shanghai"
    assert [s.name for s in tax.stages] == ["filing_reminder", "payment_overdue", "abnormal_escalation"]
    assert tax.sending_windows == {
        "sms": (dt.time(8, 0), dt.time(20, 0)),
        "voice": (dt.time(9, 0), dt.time(20, 0)),
    }
    assert tax.no_voice_on_public_holidays is True
    assert tax.weekly_cap == WeeklyCap(contacts=1, days=7)
    reminder = tax.stage("filing_reminder")
    assert reminder.kind == "before_deadline" and reminder.working_days_before == (5, 2)
    dunning = tax.stage("payment_overdue")
    assert (dunning.min_days_overdue, dunning.max_days_overdue, dunning.repeat_every_days) == (1, None, 7)
    assert [(c.channel, c.when) for c in dunning.channels] == [
        ("sms", "first"),
        ("voice", "undelivered"),
        ("voice", "unanswered_after:2"),
    ]
    assert dunning.templates == {"sms": "sms/tax/payment_overdue.j2", "voice": "voice/tax/payment_overdue.j2"}
    escalation = tax.stage("abnormal_escalation")
    assert escalation.months_not_filed == 3 and escalation.flag_for_staff and not escalation.channels


def test_power_ladder_has_the_domain_defaults(power: Ladder) -> None:
    assert [s.name for s in power.stages] == [
        "due_reminder",
        "overdue",
        "overdue_voice",
        "cutoff_notice",
        "low_balance",
    ]
    cutoff = power.stage("cutoff_notice")
    assert cutoff.cutoff_notice and cutoff.requires_payment_demand and cutoff.min_days_overdue == 31
    assert cutoff.priority == "urgent"
    assert power.stage("low_balance").balance_below == (Decimal("50"), Decimal("0"))
    assert power.stage("overdue_voice").channels[0].channel == "voice"


@pytest.mark.parametrize(
    ("name", "stage"),
    [("tax", "payment_overdue"), ("tax", "abnormal_escalation"), ("power", "cutoff_notice")],
    ids=["tax-payment_overdue", "tax-abnormal_escalation", "power-cutoff_notice"],
)
def test_stage_line_points_at_the_stage_in_the_file(name: str, stage: str) -> None:
    ladder = load_ladder(name)
    path = LADDER_ROOT / f"{name}.yaml"
    assert ladder.source_file == str(path)
    assert ladder.stage(stage).line == _line_of(path, f"- name: {stage}")


def test_a_ladder_loads_from_a_path_too() -> None:
    assert load_ladder(LADDER_ROOT / "power.yaml").domain == "power"


# --- bad input: the file and the line --------------------------------------------------------------

TEMPLATES = {
    "sms/tax/filing_reminder.j2": "【{{ signature }}】{{ name }}：请于{{ deadline }}前申报。",
    "sms/tax/payment_overdue.j2": "【{{ signature }}】{{ name }}：税款{{ principal }}元已逾期。",
    "voice/tax/payment_overdue.j2": "您好，这里是{{ signature }}。{{ name }}，税款{{ principal }}元已逾期。",
    "sms/tax/uses_iban.j2": "【{{ signature }}】{{ name }}：请汇至{{ iban }}。",
    "sms/tax/unsigned.j2": "{{ name }}：税款{{ principal }}元已逾期。",
    "sms/tax/legal_claim.j2": "【{{ signature }}】{{ name }}：本短信视为送达。",
    "voice/tax/uses_iban.j2": "您好，请汇至{{ iban }}。",
    "voice/tax/bracketed.j2": "【{{ signature }}】{{ name }}，税款已逾期。",
    "sms/power/overdue.j2": "【{{ signature }}】{{ name }}：户号{{ account }}电费{{ amount }}元已逾期。",
    "sms/power/cutoff_notice.j2": "【{{ signature }}】{{ name }}：户号{{ account }}将于{{ cutoff_date }}中止供电。",
}

TAX_YAML = """\
domain: tax
campaign: tax_test
timezone: Asia/Shanghai
sending_windows:
  sms: "08:00-20:00"
  voice: "09:00-20:00"
weekly_cap: {contacts: 1, days: 7}
flag_after_failed_contacts: 3
stages:
  - name: filing_reminder
    kind: before_deadline
    working_days_before: [5, 2]
    channels:
      - channel: sms
    templates:
      sms: sms/tax/filing_reminder.j2
  - name: payment_overdue
    kind: overdue
    min_days_overdue: 1
    repeat_every_days: 7
    max_attempts: 8
    channels:
      - channel: sms
        when: first
      - channel: voice
        when: undelivered
    templates:
      sms: sms/tax/payment_overdue.j2
      voice: voice/tax/payment_overdue.j2
"""

POWER_YAML = """\
domain: power
campaign: power_test
sending_windows:
  sms: "08:00-20:00"
weekly_cap: {contacts: 1, days: 7}
flag_after_failed_contacts: 3
stages:
  - name: overdue
    kind: overdue
    min_days_overdue: 7
    max_days_overdue: 28
    channels:
      - channel: sms
    templates:
      sms: sms/power/overdue.j2
  - name: cutoff_notice
    kind: overdue
    cutoff_notice: true
    min_days_overdue: 31
    requires_payment_demand: true
    channels:
      - channel: sms
    templates:
      sms: sms/power/cutoff_notice.j2
"""

EXTRA_OVERDUE_STAGE = """\
  - name: second_dunning  # HERE
    kind: overdue
    min_days_overdue: 30
    max_days_overdue: 40
    channels:
      - channel: sms
    templates:
      sms: sms/tax/payment_overdue.j2
"""

# (id, base, old text, new text with "# HERE" on the line the error must name, words in the error)
BAD_CASES = [
    ("unknown-channel", TAX_YAML, "- channel: voice", "- channel: fax  # HERE", "unknown channel 'fax'"),
    (
        "unknown-channel-in-templates",
        TAX_YAML,
        "      voice: voice/tax/payment_overdue.j2\n",
        "      voice: voice/tax/payment_overdue.j2\n      fax: sms/tax/payment_overdue.j2  # HERE\n",
        "unknown channel 'fax'",
    ),
    (
        "unknown-window-channel",
        TAX_YAML,
        '  voice: "09:00-20:00"\n',
        '  voice: "09:00-20:00"\n  pigeon: "09:00-17:00"  # HERE\n',
        "unknown channel 'pigeon'",
    ),
    ("unknown-kind", TAX_YAML, "kind: overdue", "kind: overdew  # HERE", "unknown kind 'overdew'"),
    ("unknown-key", TAX_YAML, "max_attempts: 8", "max_attemps: 8  # HERE", "unknown key 'max_attemps'"),
    ("duplicate-key", TAX_YAML, "max_attempts: 8", "max_attempts: 8\n    max_attempts: 9  # HERE", "twice"),
    ("unknown-domain", TAX_YAML, "domain: tax", "domain: water  # HERE", "unknown domain 'water'"),
    (
        "unknown-condition",
        TAX_YAML,
        "when: undelivered",
        "when: unread  # HERE",
        "unknown condition 'unread'",
    ),
    (
        "overlapping-overdue-stages",
        TAX_YAML,
        "      voice: voice/tax/payment_overdue.j2\n",
        "      voice: voice/tax/payment_overdue.j2\n" + EXTRA_OVERDUE_STAGE,
        "overlaps stage 'payment_overdue'",
    ),
    (
        "overlapping-before-deadline-offsets",
        TAX_YAML,
        "      voice: voice/tax/payment_overdue.j2\n",
        "      voice: voice/tax/payment_overdue.j2\n"
        "  - name: last_call  # HERE\n"
        "    kind: before_deadline\n"
        "    working_days_before: [2, 1]\n"
        "    channels: [sms]\n"
        "    templates: {sms: sms/tax/filing_reminder.j2}\n",
        "both remind 2 working days before",
    ),
    (
        "missing-template",
        TAX_YAML,
        "sms: sms/tax/payment_overdue.j2",
        "sms: sms/tax/nope.j2  # HERE",
        "sms/tax/nope.j2 does not exist",
    ),
    (
        "sms-template-unknown-variable",
        TAX_YAML,
        "sms: sms/tax/payment_overdue.j2",
        "sms: sms/tax/uses_iban.j2  # HERE",
        "unknown variables iban",
    ),
    (
        "voice-template-unknown-variable",
        TAX_YAML,
        "voice: voice/tax/payment_overdue.j2",
        "voice: voice/tax/uses_iban.j2  # HERE",
        "unknown variables iban",
    ),
    (
        "sms-template-without-signature",
        TAX_YAML,
        "sms: sms/tax/payment_overdue.j2",
        "sms: sms/tax/unsigned.j2  # HERE",
        "signature",
    ),
    (
        "sms-template-claims-legal-service",
        TAX_YAML,
        "sms: sms/tax/payment_overdue.j2",
        "sms: sms/tax/legal_claim.j2  # HERE",
        "must not claim legal service",
    ),
    (
        "voice-template-with-brackets",
        TAX_YAML,
        "voice: voice/tax/payment_overdue.j2",
        "voice: voice/tax/bracketed.j2  # HERE",
        "read aloud",
    ),
    (
        "sms-template-as-voice",
        TAX_YAML,
        "voice: voice/tax/payment_overdue.j2",
        "voice: sms/tax/payment_overdue.j2  # HERE",
        "must be under voice/",
    ),
    (
        "channel-without-template",
        TAX_YAML,
        "    templates:\n      sms: sms/tax/payment_overdue.j2\n      voice: voice/tax/payment_overdue.j2\n",
        "    templates:  # HERE\n      sms: sms/tax/payment_overdue.j2\n",
        "no template for voice",
    ),
    ("impossible-window-time", TAX_YAML, 'sms: "08:00-20:00"', 'sms: "25:00-20:00"  # HERE', "impossible"),
    (
        "window-ends-before-start",
        TAX_YAML,
        'sms: "08:00-20:00"',
        'sms: "20:00-08:00"  # HERE',
        "start before",
    ),
    ("window-not-a-range", TAX_YAML, 'voice: "09:00-20:00"', "voice: 9am  # HERE", "must look like"),
    (
        "negative-max-attempts",
        TAX_YAML,
        "max_attempts: 8",
        "max_attempts: -1  # HERE",
        "must not be negative",
    ),
    (
        "negative-min-days",
        TAX_YAML,
        "min_days_overdue: 1",
        "min_days_overdue: -3  # HERE",
        "must not be negative",
    ),
    (
        "negative-working-days",
        TAX_YAML,
        "working_days_before: [5, 2]",
        "working_days_before: [5, -2]  # HERE",
        "must not be negative",
    ),
    (
        "negative-weekly-cap",
        TAX_YAML,
        "weekly_cap: {contacts: 1, days: 7}",
        "weekly_cap: {contacts: 1, days: -7}  # HERE",
        "must not be negative",
    ),
    (
        "negative-flag-after",
        TAX_YAML,
        "flag_after_failed_contacts: 3",
        "flag_after_failed_contacts: -1  # HERE",
        "must not be negative",
    ),
    (
        "max-before-min",
        TAX_YAML,
        "min_days_overdue: 1\n",
        "min_days_overdue: 10\n    max_days_overdue: 5  # HERE\n",
        "before min_days_overdue",
    ),
    (
        "not-yaml",
        TAX_YAML,
        "    kind: before_deadline",
        "    kind: before: deadline  # HERE",
        "not valid YAML",
    ),
    (
        "balance-stage-in-tax",
        TAX_YAML,
        "kind: before_deadline\n    working_days_before: [5, 2]",
        "kind: balance  # HERE\n    balance_below: [50]",
        "does not apply to the tax domain",
    ),
    (
        "cutoff-before-day-31",
        POWER_YAML,
        "min_days_overdue: 31",
        "min_days_overdue: 30  # HERE",
        "only after day 30",
    ),
    (
        "cutoff-without-payment-demand",
        POWER_YAML,
        "requires_payment_demand: true",
        "requires_payment_demand: false  # HERE",
        "payment demand",
    ),
    (
        "cutoff-demand-missing",
        POWER_YAML,
        "    cutoff_notice: true\n    min_days_overdue: 31\n    requires_payment_demand: true\n",
        "    cutoff_notice: true  # HERE\n    min_days_overdue: 31\n",
        "payment demand",
    ),
    (
        "cutoff-named-stage-without-flag",
        POWER_YAML,
        "    cutoff_notice: true\n    min_days_overdue: 31\n",
        "    min_days_overdue: 29  # HERE\n",
        "only after day 30",
    ),
    (
        "cutoff-in-tax",
        TAX_YAML,
        "    min_days_overdue: 1\n",
        "    min_days_overdue: 1\n    cutoff_notice: true  # HERE\n",
        "only in the power domain",
    ),
]


@pytest.fixture
def template_root(tmp_path: Path) -> Path:
    root = tmp_path / "templates"
    for name, text in TEMPLATES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


@pytest.mark.parametrize("base", [TAX_YAML, POWER_YAML], ids=["tax", "power"])
def test_the_bad_case_bases_are_valid(base: str, tmp_path: Path, template_root: Path) -> None:
    path = tmp_path / "ladder.yaml"
    path.write_text(base, encoding="utf-8")
    assert load_ladder(path, template_root=template_root).stages


@pytest.mark.parametrize(
    ("base", "old", "new", "words"),
    [case[1:] for case in BAD_CASES],
    ids=[case[0] for case in BAD_CASES],
)
def test_bad_ladder_is_refused_naming_file_and_line(
    base: str, old: str, new: str, words: str, tmp_path: Path, template_root: Path
) -> None:
    assert old in base
    text = base.replace(old, new, 1)
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    (expected_line,) = [n for n, line in enumerate(text.splitlines(), start=1) if "# HERE" in line]
    with pytest.raises(LadderError) as caught:
        load_ladder(path, template_root=template_root)
    error = caught.value
    assert (error.file, error.line) == (str(path), expected_line), str(error)
    assert str(error).startswith(f"{path}:{expected_line}: ")
    assert words in str(error)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("min_days_overdue: 31", "min_days_overdue: 30"),
        ("requires_payment_demand: true", "requires_payment_demand: false"),
    ],
    ids=["day-30", "no-payment-demand"],
)
def test_the_packaged_power_ladder_refuses_an_early_or_undemanded_cutoff(
    old: str, new: str, tmp_path: Path
) -> None:
    text = (LADDER_ROOT / "power.yaml").read_text("utf-8")
    assert old in text
    path = tmp_path / "power.yaml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    with pytest.raises(LadderError, match=rf"^{path}:{_line_of(path, new)}: "):
        load_ladder(path, template_root=TEMPLATE_ROOT)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(LadderError, match="nowhere.yaml"):
        load_ladder(tmp_path / "nowhere.yaml")


# --- stage selection ---------------------------------------------------------------------------------

# Filing reminders 5 and 2 WORKING days before the deadline, counted by hand from DOMAIN §2's 2026
# calendar. 2026-10-26 is a Monday: back over the weekend 10-24/25 -> 10-23 (1), 10-22 (2), 10-21,
# 10-20, 10-19 (5). 2026-02-24 is a Tuesday after the Spring Festival block 02-15..02-23; Saturday
# 02-14 is a make-up workday (1), then 02-13 (2), 02-12, 02-11, 02-10 (5).
FILING_REMINDERS = [
    ("2026-10-26", "2026-10-19", 1),
    ("2026-10-26", "2026-10-22", 2),
    ("2026-10-26", "2026-10-16", None),
    ("2026-10-26", "2026-10-20", None),
    ("2026-10-26", "2026-10-23", None),
    ("2026-10-26", "2026-10-24", None),
    ("2026-10-26", "2026-10-26", None),
    ("2026-02-24", "2026-02-10", 1),
    ("2026-02-24", "2026-02-13", 2),
    ("2026-02-24", "2026-02-09", None),
    ("2026-02-24", "2026-02-11", None),
    ("2026-02-24", "2026-02-14", None),
    ("2026-02-24", "2026-02-17", None),
    ("2026-02-24", "2026-02-23", None),
]


@pytest.mark.parametrize(
    ("deadline", "as_of", "attempt"),
    FILING_REMINDERS,
    ids=[f"deadline-{d}-on-{a}-{'reminder-' + str(n) if n else 'none'}" for d, a, n in FILING_REMINDERS],
)
def test_filing_reminders_fall_exactly_5_and_2_working_days_before(
    tax: Ladder, deadline: str, as_of: str, attempt: int | None
) -> None:
    stage = tax.before_deadline_stage(date.fromisoformat(as_of), date.fromisoformat(deadline))
    if attempt is None:
        assert stage is None
    else:
        assert stage is not None and stage.name == "filing_reminder"
        assert stage.reminder_attempt(date.fromisoformat(as_of), date.fromisoformat(deadline)) == attempt


TAX_OVERDUE = [
    (0, None, None),
    (1, "payment_overdue", 1),
    (7, "payment_overdue", 1),
    (8, "payment_overdue", 2),
]
TAX_OVERDUE += [(14, "payment_overdue", 2), (15, "payment_overdue", 3), (56, "payment_overdue", 8)]
TAX_OVERDUE += [(57, "payment_overdue", None)]


@pytest.mark.parametrize(
    ("days", "stage_name", "attempt"), TAX_OVERDUE, ids=[f"day-{d}" for d, _, _ in TAX_OVERDUE]
)
def test_tax_payment_dunning_from_the_day_after_then_weekly(
    tax: Ladder, days: int, stage_name: str | None, attempt: int | None
) -> None:
    stage = tax.overdue_stage(days)
    assert (stage.name if stage else None) == stage_name
    if stage is not None:
        assert stage.attempt(days) == attempt


POWER_OVERDUE = [
    (0, False, "due_reminder", 1),
    (1, False, None, None),
    (6, False, None, None),
    (7, False, "overdue", 1),
    (14, False, "overdue", 1),
    (15, False, "overdue_voice", 1),
    (21, False, "overdue_voice", 1),
    (22, False, "overdue_voice", 2),
    (29, True, None, None),
    (30, True, None, None),
    (31, False, None, None),
    (31, True, "cutoff_notice", 1),
    (60, True, "cutoff_notice", 1),
]


@pytest.mark.parametrize(
    ("days", "demand", "stage_name", "attempt"),
    POWER_OVERDUE,
    ids=[f"day-{d}-{'demand' if m else 'no-demand'}" for d, m, _, _ in POWER_OVERDUE],
)
def test_power_stages_and_cutoff_only_from_day_31_with_a_demand(
    power: Ladder, days: int, demand: bool, stage_name: str | None, attempt: int | None
) -> None:
    stage = power.overdue_stage(days, payment_demand_logged=demand)
    assert (stage.name if stage else None) == stage_name
    if stage is not None:
        assert stage.attempt(days) == attempt


def test_attempt_is_none_outside_the_stage_and_refused_for_other_kinds(tax: Ladder) -> None:
    assert tax.stage("payment_overdue").attempt(0) is None
    with pytest.raises(ValueError, match="before_deadline"):
        tax.stage("filing_reminder").attempt(3)


@pytest.mark.parametrize(
    ("balance", "threshold"),
    [("50.00", None), ("49.99", "50"), ("0", "50"), ("-0.01", "0"), ("-500", "0")],
    ids=["at-50-no-alert", "below-50", "exactly-0-is-below-50-only", "below-0", "deep-below-0"],
)
def test_prepaid_balance_alerts_below_50_and_below_0(
    power: Ladder, balance: str, threshold: str | None
) -> None:
    stage = power.balance_stage(Decimal(balance))
    if threshold is None:
        assert stage is None
    else:
        assert stage is not None and stage.name == "low_balance"
        assert stage.balance_threshold(Decimal(balance)) == Decimal(threshold)


def test_three_months_not_filed_escalates_to_staff(tax: Ladder) -> None:
    assert tax.not_filed_stage(2) is None
    stage = tax.not_filed_stage(3)
    assert stage is not None and stage.name == "abnormal_escalation" and stage.flag_for_staff


CHANNELS = [
    ("fresh", ContactHistory(), "sms"),
    ("one-unanswered", ContactHistory(sms_delivered=1, sms_unanswered=1), "sms"),
    ("two-unanswered", ContactHistory(sms_delivered=2, sms_unanswered=2), "voice"),
    ("undelivered", ContactHistory(sms_undelivered=1), "voice"),
    ("voice-cap-reached", ContactHistory(sms_delivered=2, sms_unanswered=2, voice_attempts=2), "sms"),
]


@pytest.mark.parametrize(("history", "channel"), [c[1:] for c in CHANNELS], ids=[c[0] for c in CHANNELS])
def test_tax_sms_first_voice_when_undelivered_or_after_two_unanswered(
    tax: Ladder, history: ContactHistory, channel: str
) -> None:
    assert tax.channel_for(tax.stage("payment_overdue"), history) == channel


def test_power_voice_stage_calls_and_overdue_stage_falls_back(power: Ladder) -> None:
    assert power.channel_for(power.stage("overdue_voice"), ContactHistory()) == "voice"
    overdue = power.stage("overdue")
    assert power.channel_for(overdue, ContactHistory(sms_undelivered=1)) == "voice"
    assert power.channel_for(overdue, ContactHistory(sms_undelivered=1, voice_attempts=1)) == "sms"


# --- sending windows ---------------------------------------------------------------------------------

WINDOW_EDGES = [
    ("sms", "07:59", False),
    ("sms", "08:00", True),
    ("sms", "19:59", True),
    ("sms", "20:00", False),
    ("voice", "08:59", False),
    ("voice", "09:00", True),
    ("voice", "19:59", True),
    ("voice", "20:00", False),
]


@pytest.mark.parametrize(
    ("channel", "clock", "open_"), WINDOW_EDGES, ids=[f"{c}-{t}" for c, t, _ in WINDOW_EDGES]
)
def test_window_edges(tax: Ladder, channel: str, clock: str, open_: bool) -> None:
    assert tax.in_window(channel, at("2026-04-10", clock)) is open_


def test_window_is_judged_in_shanghai_time(tax: Ladder) -> None:
    assert tax.in_window("sms", at("2026-04-10", "00:00", dt.UTC)) is True  # 08:00 in Shanghai
    assert tax.in_window("sms", at("2026-04-09", "23:59", dt.UTC)) is False  # 07:59 in Shanghai


NATIONAL_DAY = [f"2026-10-0{d}" for d in range(1, 8)]


@pytest.mark.parametrize("day", NATIONAL_DAY, ids=NATIONAL_DAY)
@pytest.mark.parametrize("name", ["tax", "power"])
def test_no_voice_on_national_day_but_sms_goes(name: str, day: str) -> None:
    ladder = load_ladder(name)
    assert ladder.in_window("voice", at(day, "12:00")) is False
    assert ladder.in_window("sms", at(day, "12:00")) is True


@pytest.mark.parametrize("day", ["2026-10-10", "2026-10-11"], ids=["make-up-saturday", "ordinary-sunday"])
def test_voice_on_days_that_are_not_public_holidays(tax: Ladder, day: str) -> None:
    assert tax.in_window("voice", at(day, "12:00")) is True


NEXT_START = [
    ("voice", "2026-09-30", "20:30", "2026-10-08", "09:00"),
    ("voice", "2026-10-03", "10:00", "2026-10-08", "09:00"),
    ("voice", "2026-09-30", "08:00", "2026-09-30", "09:00"),
    ("sms", "2026-10-03", "07:00", "2026-10-03", "08:00"),
    ("sms", "2026-04-10", "20:00", "2026-04-11", "08:00"),
    ("sms", "2026-04-10", "12:34", "2026-04-10", "12:34"),
]


@pytest.mark.parametrize(
    ("channel", "day", "clock", "next_day", "next_clock"),
    NEXT_START,
    ids=[f"{c}-{d}-{t}" for c, d, t, _, _ in NEXT_START],
)
def test_next_window_start(
    tax: Ladder, channel: str, day: str, clock: str, next_day: str, next_clock: str
) -> None:
    result = tax.next_window_start(channel, at(day, clock))
    assert result == at(next_day, next_clock)
    assert result.tzinfo is not None and result.utcoffset() == dt.timedelta(hours=8)


def test_naive_datetimes_are_refused(tax: Ladder) -> None:
    with pytest.raises(ValueError, match="aware"):
        tax.in_window("sms", dt.datetime(2026, 4, 10, 12))


# --- frequency cap and flagging -------------------------------------------------------------------------

CAP = [
    ("no-previous-contact", [], "2026-04-08", True),
    ("six-days-after", ["2026-04-01"], "2026-04-07", False),
    ("seven-days-after", ["2026-04-01"], "2026-04-08", True),
    ("same-day", ["2026-04-08"], "2026-04-08", False),
    ("old-contacts-only", ["2026-03-01", "2026-03-20"], "2026-04-08", True),
]


@pytest.mark.parametrize(("previous", "as_of", "allowed"), [c[1:] for c in CAP], ids=[c[0] for c in CAP])
def test_one_dunning_contact_per_7_days(tax: Ladder, previous: list[str], as_of: str, allowed: bool) -> None:
    dates = [date.fromisoformat(d) for d in previous]
    assert tax.within_weekly_cap(tax.stage("payment_overdue"), dates, date.fromisoformat(as_of)) is allowed


def test_filing_reminders_are_not_dunning_and_skip_the_cap(tax: Ladder) -> None:
    yesterday = [date(2026, 10, 18)]
    assert tax.within_weekly_cap(tax.stage("filing_reminder"), yesterday, date(2026, 10, 19)) is True


def test_the_power_ladder_spacing_respects_its_own_cap(power: Ladder) -> None:
    # A planner in miniature: each day, the stage's pending attempt goes out once if the cap allows.
    due = date(2026, 3, 25)
    sent_on: list[dt.date] = []
    sent_keys: set[tuple[str, int]] = set()
    for days in range(40):
        stage = power.overdue_stage(days, payment_demand_logged=True)
        attempt = stage.attempt(days) if stage else None
        if stage is None or attempt is None or (stage.name, attempt) in sent_keys:
            continue
        day = due + dt.timedelta(days=days)
        if power.within_weekly_cap(stage, sent_on, day):
            sent_on.append(day)
            sent_keys.add((stage.name, attempt))
    assert [(d - due).days for d in sent_on] == [0, 7, 15, 22, 31]


@pytest.mark.parametrize(("failed", "flag"), [(0, False), (2, False), (3, True), (9, True)], ids=str)
def test_flag_for_staff_after_3_failed_contacts(tax: Ladder, failed: int, flag: bool) -> None:
    assert tax.should_flag(failed) is flag
