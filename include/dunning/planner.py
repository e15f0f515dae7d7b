"""The planner: who is contacted, on which channel, with which words, under which key.

Pure domain logic: it takes validated debtor records and the as-of date and yields contact
ledger rows. It never reads the clock; the run's as-of date is passed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Set
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from include.dunning import fees, ledger, templates
from include.dunning.money import to_money

# A message to a number shared by several taxpayers names at most this many of them (then 等).
MAX_NAMES_IN_MESSAGE = 2

TAX_PAYMENT_VARIABLES = (
    "names",
    "debtors",
    "signature",
    "name",
    "period",
    "tax_type",
    "principal",
    "deadline",
    "as_of",
    "surcharge",
    "count",
)


@dataclass(frozen=True)
class TaxPaymentCampaign:
    """Settings of the tax payment-dunning campaign (after the payment deadline).

    :param signature: the 【signature】 text, e.g. the bureau's short name
    :param gateway: the SMS gateway (Airflow connection id) the contacts go out through
    :param template: the message template under ``include/templates``
    :param max_parts: the most SMS parts a message may take
    :param cap_days: at most one dunning contact per number within this many days (all campaigns)
    """

    signature: str = "示范市税务"
    gateway: str = "smpp_default"
    template: str = "sms/tax/payment_overdue.j2"
    max_parts: int = 4
    cap_days: int = 7
    campaign: str = "tax_payment"
    stage: str = "payment_overdue"
    channel: str = "sms"

    def lint(self) -> None:
        """Refuse to plan with a template that would send something wrong.

        Every branch of the template is rendered with a worst-case sample (long names, large
        amounts) and must fit ``max_parts``.
        """
        long_name = "新疆维吾尔自治区乌鲁木齐市天山区某某某某商贸有限责任公司"
        base = {
            "signature": self.signature,
            "name": long_name,
            "names": [long_name],
            "debtors": 1,
            "period": "2026年12月",
            "tax_type": "城市维护建设税",
            "principal": "12,345,678.90",
            "deadline": "12月15日",
            "as_of": "12月31日",
            "surcharge": "1,234,567.89",
            "count": 1,
        }
        samples = (
            base,
            {**base, "count": 9},
            {**base, "count": 9, "debtors": 6, "names": [long_name, "乌鲁木齐市某某建筑工程有限公司"]},
        )
        for sample in samples:
            templates.lint_template(
                self.template,
                allowed_variables=TAX_PAYMENT_VARIABLES,
                sample=sample,
                max_parts=self.max_parts,
            )


def campaign_week(as_of: date) -> str:
    """Return the ISO week an as-of date falls in, e.g. ``2026-W47``.

    Payment dunning is weekly (DOMAIN §6): the week is the key's period, so every run in the
    same week finds the contact already planned and sends nothing twice.
    """
    iso = as_of.isocalendar()
    return f"{iso.year}-W{iso.week:02d}"


def _day(d: date) -> str:
    return f"{d.month}月{d.day}日"


def _period(p: str) -> str:
    year, month = p.split("-")
    return f"{year}年{int(month)}月"


def _amount(value: Decimal) -> str:
    return f"{value:,.2f}"


def plan_tax_payment(
    records: Iterable[Mapping[str, Any]],
    *,
    as_of: date,
    run_id: str,
    planned_at: datetime,
    campaign: TaxPaymentCampaign,
    opted_out: Set[str] = frozenset(),
    last_contact: Mapping[str, datetime] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield one ledger row per mobile number, listing every overdue liability behind it.

    Eligibility is decided here and every decision is a row: a number on the opt-out list or
    blacklist, a number whose liabilities are all under an approved deferral (``deferred_until``
    on or after the as-of date), or a number contacted less than ``campaign.cap_days`` ago by
    any campaign (the frequency cap) gives a SUPPRESSED row with the reason. The next plan of
    the same period decides again, so a contact held by the cap goes out once the cap passes.

    Several taxpayers sharing one number (a tax agent, a finance officer serving several
    companies) get ONE message (DOMAIN §5-6), keyed by the number, so the weekly cap holds per
    person. Each record is one overdue liability with ``taxpayer_id``, ``taxpayer_name``,
    ``tax_type``, ``period`` (YYYY-MM), ``outstanding``, ``deadline`` and ``mobile_normalized``;
    records must be sorted by ``mobile_normalized``. The surcharge runs from the day after the
    deadline to the as-of date inclusive at 0.05% a day on the unpaid tax (DOMAIN §1).

    :param records: validated overdue liabilities, sorted by ``mobile_normalized``
    :param as_of: the run's as-of date
    :param run_id: the Airflow run that plans (recorded on new rows)
    :param planned_at: the timestamp recorded on new rows
    :param campaign: campaign settings
    :param opted_out: numbers on the opt-out list or blacklist
    :param last_contact: per number, when a message to it was last submitted (any campaign)
    """
    week = campaign_week(as_of)
    last_contact = last_contact or {}

    def decide(group: list[Mapping[str, Any]]) -> dict[str, Any]:
        phone = str(group[0]["mobile_normalized"])
        active = [r for r in group if not _deferred(r, as_of)]
        reason = None
        if phone in opted_out:
            reason = "opted_out"
        elif not active:
            reason = "deferral"
        elif phone in last_contact and (as_of - last_contact[phone].date()).days < campaign.cap_days:
            reason = f"frequency_cap: last contact {last_contact[phone].date().isoformat()}"
        row = _tax_payment_row(active or group, as_of, week, run_id, planned_at, campaign)
        if reason:
            row.update(state=ledger.SUPPRESSED, reason=reason)
        return row

    group: list[Mapping[str, Any]] = []
    for record in records:
        if group and record["mobile_normalized"] != group[0]["mobile_normalized"]:
            yield decide(group)
            group = []
        group.append(record)
    if group:
        yield decide(group)


def _deferred(record: Mapping[str, Any], as_of: date) -> bool:
    until = record.get("deferred_until")
    if until is None or (isinstance(until, float) and until != until):  # None or NaN from pandas
        return False
    try:
        return _as_date(until) >= as_of
    except ValueError:
        return False


def _tax_payment_row(
    group: list[Mapping[str, Any]],
    as_of: date,
    week: str,
    run_id: str,
    planned_at: datetime,
    campaign: TaxPaymentCampaign,
) -> dict[str, Any]:
    first = group[0]
    phone = str(first["mobile_normalized"])
    principal = sum((_exact_amount(r["outstanding"]) for r in group), Decimal("0"))
    surcharge = sum(
        (fees.tax_surcharge(_exact_amount(r["outstanding"]), _as_date(r["deadline"]), as_of) for r in group),
        Decimal("0"),
    )
    earliest = min(_as_date(r["deadline"]) for r in group)
    taxpayers: dict[str, str] = {}
    for r in group:
        taxpayers.setdefault(str(r["taxpayer_id"]), str(r["taxpayer_name"]))
    names = list(taxpayers.values())
    text = templates.render(
        campaign.template,
        {
            "signature": campaign.signature,
            "name": names[0],
            "names": names[:MAX_NAMES_IN_MESSAGE],
            "debtors": len(taxpayers),
            "period": _period(first["period"]),
            "tax_type": first["tax_type"],
            "principal": _amount(principal),
            "deadline": _day(earliest),
            "as_of": _day(as_of),
            "surcharge": _amount(surcharge),
            "count": len(group),
        },
    )
    return _contact_row(
        campaign=campaign.campaign,
        period=week,
        phone=phone,
        stage=campaign.stage,
        channel=campaign.channel,
        attempt=1,
        debtors=taxpayers,
        template=campaign.template,
        text=text,
        amount=principal,
        surcharge=surcharge,
        gateway=campaign.gateway,
        as_of=as_of,
        run_id=run_id,
        planned_at=planned_at,
    )


def _contact_row(
    *,
    campaign: str,
    period: str,
    phone: str,
    stage: str,
    channel: str,
    attempt: int,
    debtors: Mapping[str, str],
    template: str,
    text: str,
    amount: Decimal | None,
    surcharge: Decimal | None,
    gateway: str,
    as_of: date,
    run_id: str,
    planned_at: datetime,
) -> dict[str, Any]:
    """Return one PLANNED ledger row for a message to ``phone``, keyed by the number.

    :param debtors: debtor id -> name of everyone the message speaks for, in message order
    """
    first_id, first_name = next(iter(debtors.items()))
    return {
        "idempotency_key": ledger.idempotency_key(campaign, period, f"tel:{phone}", stage, channel, attempt),
        "campaign": campaign,
        "period": period,
        "as_of": as_of,
        "debtor_id": first_id,
        "debtor_ids": ",".join(debtors),
        "debtor_name": first_name,
        "stage": stage,
        "channel": channel,
        "attempt": attempt,
        "phone": phone,
        "template": template,
        "message_text": text,
        "parts": templates.sms_parts(text),
        "amount": amount,
        "surcharge": surcharge,
        "gateway": gateway,
        "state": ledger.PLANNED,
        "reason": None,
        "planned_run_id": run_id,
        "planned_at": planned_at,
    }


def _exact_amount(value: Any) -> Decimal:
    """Return a source amount as an exact Decimal.

    SQLite hands NUMERIC(14,2) columns back as floats; their shortest repr is the two-decimal
    value that was stored, so it converts exactly. Other engines deliver Decimal already.
    """
    if isinstance(value, float):
        return to_money(repr(value))
    return to_money(value)


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


# -- electricity ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PowerCampaign:
    """Settings of the electricity dunning campaign (postpaid arrears, cut-off notices, prepaid alerts).

    :param signature: the 【signature】 text, e.g. the supplier's short name
    :param gateway: the SMS gateway (Airflow connection id)
    :param grace_days: days after the contractual due date before the penalty clock starts
    :param cross_year: ``whole_period`` or ``split_by_day`` (DOMAIN §3, configurable)
    :param cutoff_notice_days: the cut-off date a notice announces, days after the as-of date
    :param cap_days: at most one dunning contact per number within this many days (all campaigns)
    :param voice_gateway: the modem pool voice calls go out through; None: no modems, voice
        stages are recorded as SUPPRESSED
    """

    signature: str = "示范供电"
    gateway: str = "smpp_default"
    grace_days: int = 0
    cross_year: str = "whole_period"
    cutoff_notice_days: int = 7
    cap_days: int = 7
    voice_gateway: str | None = None
    campaign: str = "power_dunning"


def plan_power(
    records: Iterable[Mapping[str, Any]],
    *,
    as_of: date,
    run_id: str,
    planned_at: datetime,
    campaign: PowerCampaign,
    ladder: Any,
    opted_out: Set[str] = frozenset(),
    last_contact: Mapping[str, datetime] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield the electricity contacts of one day, one message per mobile number and purpose.

    Records are the billing system's dunning items (``kind`` ``bill`` or ``balance``), sorted by
    ``mobile_normalized``. For the bills behind a number, the ladder's stage of the most overdue
    bill decides the message (due-date reminder, dunning, voice, cut-off notice); the message
    lists every unpaid bill with its 违约金 (DOMAIN §3). A cut-off notice needs more than 30 days
    overdue AND a logged payment demand (催交): the ladder refuses anything else, and bills
    without a demand never reach that stage. Prepaid accounts below a threshold get one alert
    per threshold per month. Opt-outs, the frequency cap and channels not available here are
    SUPPRESSED rows with the reason.

    :param records: validated dunning items, sorted by ``mobile_normalized``
    :param as_of: the run's as-of date
    :param run_id: the Airflow run that plans
    :param planned_at: the timestamp recorded on new rows
    :param campaign: campaign settings
    :param ladder: the loaded power ladder (``include.dunning.ladder.load_ladder("power")``)
    :param opted_out: numbers on the opt-out list or blacklist
    :param last_contact: per number, when a message to it was last submitted (any campaign)
    """
    last_contact = last_contact or {}
    group: list[Mapping[str, Any]] = []
    for record in records:
        if group and record["mobile_normalized"] != group[0]["mobile_normalized"]:
            yield from _power_rows(
                group, as_of, run_id, planned_at, campaign, ladder, opted_out, last_contact
            )
            group = []
        group.append(record)
    if group:
        yield from _power_rows(group, as_of, run_id, planned_at, campaign, ladder, opted_out, last_contact)


def _power_rows(
    group: list[Mapping[str, Any]],
    as_of: date,
    run_id: str,
    planned_at: datetime,
    campaign: PowerCampaign,
    ladder: Any,
    opted_out: Set[str],
    last_contact: Mapping[str, datetime],
) -> Iterator[dict[str, Any]]:
    phone = str(group[0]["mobile_normalized"])
    bills = [r for r in group if r["kind"] == "bill"]
    balances = [r for r in group if r["kind"] == "balance"]

    staged = []
    for bill in bills:
        days = (as_of - _as_date(bill["due_date"])).days - campaign.grace_days
        stage = ladder.overdue_stage(days, payment_demand_logged=bool(bill["demand_logged"]))
        attempt = stage.attempt(days) if stage is not None else None
        if attempt is not None:
            staged.append((stage, attempt, bill))
    if staged:
        stage = max((s for s, _, _ in staged), key=lambda s: s.min_days_overdue or 0)
        in_stage = [(a, b) for s, a, b in staged if s is stage]
        anchor = min(_as_date(b["due_date"]) for _, b in in_stage)
        attempt = max(a for a, _ in in_stage)
        penalties = {
            str(b["item_id"]): fees.power_penalty(
                _exact_amount(b["outstanding"]),
                _as_date(b["due_date"]),
                as_of,
                customer_class=str(b["customer_class"]),
                cross_year=campaign.cross_year,
                grace_days=campaign.grace_days,
            )
            for b in bills
        }
        amount = sum((_exact_amount(b["outstanding"]) for b in bills), Decimal("0"))
        earliest_due = min(_as_date(b["due_date"]) for b in bills)
        row = _power_row(
            phone, stage, attempt, f"{stage.name}:{anchor.isoformat()}", bills, as_of, run_id, planned_at, campaign,
            {
                "amount": _amount(amount),
                "penalty": _amount(sum(penalties.values(), Decimal("0"))),
                "due_date": _day(earliest_due),
                "balance": None,
                "cutoff_date": _day(as_of + timedelta(days=campaign.cutoff_notice_days)),
            },
            amount, sum(penalties.values(), Decimal("0")),
        )  # fmt: skip
        capped = phone in last_contact and (as_of - last_contact[phone].date()).days < campaign.cap_days
        if phone in opted_out:
            row.update(state=ledger.SUPPRESSED, reason="opted_out")
        elif row["channel"] == "voice" and campaign.voice_gateway is None:
            row.update(state=ledger.SUPPRESSED, reason="voice channel not configured: no modems")
        elif stage.subject_to_weekly_cap and capped:
            row.update(
                state=ledger.SUPPRESSED,
                reason=f"frequency_cap: last contact {last_contact[phone].date().isoformat()}",
            )
        yield row

    if balances:
        lowest = min(_exact_amount(b["balance"]) for b in balances)
        stage = ladder.balance_stage(lowest)
        if stage is not None:
            threshold = stage.balance_threshold(lowest)
            attempt = sorted(stage.balance_below, reverse=True).index(threshold) + 1
            row = _power_row(
                phone, stage, attempt, f"{stage.name}:{as_of:%Y-%m}", balances, as_of, run_id, planned_at, campaign,
                {"amount": None, "penalty": None, "due_date": None, "balance": _amount(lowest), "cutoff_date": None},
                lowest, None,
            )  # fmt: skip
            if phone in opted_out:
                row.update(state=ledger.SUPPRESSED, reason="opted_out")
            yield row


def _power_row(
    phone: str,
    stage: Any,
    attempt: int,
    period: str,
    items: list[Mapping[str, Any]],
    as_of: date,
    run_id: str,
    planned_at: datetime,
    campaign: PowerCampaign,
    figures: dict[str, Any],
    amount: Decimal | None,
    penalty: Decimal | None,
) -> dict[str, Any]:
    channel = stage.channels[0].channel
    holders: dict[str, str] = {}
    for item in items:
        holders.setdefault(str(item["name"]), str(item["account_no"]))
    accounts = list(dict.fromkeys(str(i["account_no"]) for i in items))
    template = stage.templates[channel]
    text = templates.render(
        template,
        {
            "signature": campaign.signature,
            "name": next(iter(holders)),
            "debtors": len(holders),
            "account": accounts[0],
            "accounts": accounts,
            "count": len(accounts),
            "as_of": _day(as_of),
            **figures,
        },
    )
    return _contact_row(
        campaign=campaign.campaign,
        period=period,
        phone=phone,
        stage=stage.name,
        channel=channel,
        attempt=attempt,
        debtors={str(i["account_no"]): str(i["name"]) for i in items},
        template=template,
        text=text,
        amount=amount,
        surcharge=penalty,
        gateway=campaign.voice_gateway if channel == "voice" and campaign.voice_gateway else campaign.gateway,
        as_of=as_of,
        run_id=run_id,
        planned_at=planned_at,
    )


# -- tax filing reminders and 非正常户 escalation -------------------------------------------------


@dataclass(frozen=True)
class TaxFilingCampaign:
    """Settings of the tax filing-reminder campaign (before each filing deadline).

    :param signature: the 【signature】 text
    :param gateway: the SMS gateway (Airflow connection id)
    :param cap_days: unused by reminders (the ladder exempts them from the weekly cap); kept
        so every campaign answers the same questions
    """

    signature: str = "示范市税务"
    gateway: str = "smpp_default"
    cap_days: int = 7
    campaign: str = "tax_filing"


def plan_filing_reminders(
    records: Iterable[Mapping[str, Any]],
    *,
    as_of: date,
    run_id: str,
    planned_at: datetime,
    campaign: TaxFilingCampaign,
    ladder: Any,
    opted_out: Set[str] = frozenset(),
    last_contact: Mapping[str, datetime] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield filing reminders due today: one message per number and deadline, to those not filed.

    A reminder goes out when the as-of date is exactly one of the ladder's working-day offsets
    (5 and 2 by default) before an upcoming filing deadline (DOMAIN §2, §6), for obligations not
    filed by the as-of date. Taxpayers sharing a number are named in one message.

    :param records: validated filing obligations, sorted by ``mobile_normalized``
    :param ladder: the loaded tax ladder (``load_ladder("tax")``)
    """
    due: dict[tuple[str, date], list[Mapping[str, Any]]] = {}
    stage_of: dict[tuple[str, date], tuple[Any, int]] = {}
    for record in records:
        if int(record["filed"]):
            continue
        deadline = _as_date(record["deadline"])
        if deadline < as_of:
            continue
        stage = ladder.before_deadline_stage(as_of, deadline)
        if stage is None:
            continue
        key = (str(record["mobile_normalized"]), deadline)
        due.setdefault(key, []).append(record)
        stage_of[key] = (stage, stage.reminder_attempt(as_of, deadline))
    for (phone, deadline), group in due.items():
        stage, attempt = stage_of[(phone, deadline)]
        taxpayers: dict[str, str] = {}
        for r in group:
            taxpayers.setdefault(str(r["taxpayer_id"]), str(r["taxpayer_name"]))
        names = list(taxpayers.values())
        template = stage.templates["sms"]
        text = templates.render(
            template,
            {
                "signature": campaign.signature,
                "name": names[0],
                "names": names[:MAX_NAMES_IN_MESSAGE],
                "debtors": len(taxpayers),
                "period": _period(str(group[0]["period"])),
                "tax_type": "、".join(dict.fromkeys(str(r["tax_type"]) for r in group)),
                "deadline": _day(deadline),
                "as_of": _day(as_of),
                "count": len(group),
            },
        )
        row = _contact_row(
            campaign=campaign.campaign,
            period=deadline.isoformat(),
            phone=phone,
            stage=stage.name,
            channel="sms",
            attempt=attempt,
            debtors=taxpayers,
            template=template,
            text=text,
            amount=None,
            surcharge=None,
            gateway=campaign.gateway,
            as_of=as_of,
            run_id=run_id,
            planned_at=planned_at,
        )
        if phone in opted_out:
            row.update(state=ledger.SUPPRESSED, reason="opted_out")
        yield row


def abnormal_taxpayers(
    records: Iterable[Mapping[str, Any]],
    *,
    as_of: date,
    ladder: Any,
    run_id: str,
    campaign: str = "tax_filing",
) -> list[dict[str, Any]]:
    """Return staff flags for taxpayers whose last N months in a row went unfiled (非正常户, DOMAIN §1).

    A month counts as unfiled when any return of that period with a deadline before the as-of
    date is not filed; months are counted back from the latest past period without a gap.
    """
    periods: dict[str, dict[str, bool]] = {}
    for r in records:
        if _as_date(r["deadline"]) >= as_of:
            continue
        filed = periods.setdefault(str(r["taxpayer_id"]), {})
        period = str(r["period"])
        filed[period] = filed.get(period, True) and bool(int(r["filed"]))
    flags = []
    for taxpayer, by_period in periods.items():
        run = 0
        for period in sorted(by_period, reverse=True):
            if by_period[period]:
                break
            run += 1
        stage = ladder.not_filed_stage(run)
        if stage is not None and stage.flag_for_staff:
            flags.append(
                {
                    "campaign": campaign,
                    "debtor_id": taxpayer,
                    "reason": stage.name,
                    "detail": f"{run} consecutive months without a filing (latest {max(by_period)})",
                    "flagged_on": as_of,
                    "run_id": run_id,
                }
            )
    return flags
