"""The planner: who is contacted, on which channel, with which words, under which key.

Pure domain logic: it takes validated debtor records and the as-of date and yields contact
ledger rows. It never reads the clock; the run's as-of date is passed in.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator, Mapping, Set
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from include.dunning import fees, ledger, templates
from include.dunning.ladder import ContactHistory
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
    :param voice_gateway: the modem pool voice contacts go out through; None: no modems, voice
        contacts (re-notification after an undelivered or unanswered SMS) are SUPPRESSED
    :param holdout_share: share of debtors held out of contact to measure recovery (0: none)
    :param history_days: how far back earlier contacts count for re-notification and staff flags
    """

    signature: str = "示范市税务"
    gateway: str = "smpp_default"
    template: str = "sms/tax/payment_overdue.j2"
    max_parts: int = 4
    cap_days: int = 7
    campaign: str = "tax_payment"
    stage: str = "payment_overdue"
    channel: str = "sms"
    voice_gateway: str | None = None
    holdout_share: float = 0.0
    history_days: int = 120

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
    ladder: Any = None,
    history: Mapping[tuple[str, str, str], Mapping[str, Any]] | None = None,
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
    :param ladder: the tax ladder (``load_ladder("tax")``, the packaged one when None): the
        stage by days overdue, its weekly repeats and ``max_attempts``, its channel order
    :param history: earlier contacts of the campaign (``DunningStore.contact_history``): an
        undelivered or unanswered SMS moves the number to the next channel of its stage

    Further decisions, each a SUPPRESSED row with its reason: a number whose remaining
    liabilities are all under an open promise to pay (``promised_until`` on or after the as-of
    date) gives ``promise_to_pay until <date>``; one whose liabilities are all past the stage's
    ``max_attempts`` gives ``max_attempts``; a number whose debtors are all in the campaign's
    holdout group gives ``holdout``; a voice contact without modems gives the channel's reason.
    """
    week = campaign_week(as_of)
    last_contact = last_contact or {}
    ladder = ladder if ladder is not None else _packaged_ladder("tax")
    contacts = _index_history(history)

    # Stage and attempt per days overdue, computed once per distinct day count.
    by_days: dict[int, tuple[Any, int | None]] = {}

    def staged(days: int) -> tuple[Any, int | None]:
        if days not in by_days:
            found = ladder.overdue_stage(days)
            by_days[days] = (found, found.attempt(days) if found is not None else None)
        return by_days[days]

    def decide(group: list[Mapping[str, Any]]) -> dict[str, Any] | None:
        phone = str(group[0]["mobile_normalized"])
        days = [(as_of - _as_date(r["deadline"])).days for r in group]
        stages = [staged(d) for d in days]
        found = [s for s, _ in stages if s is not None]
        if not found:
            return None  # the ladder has nothing for these days overdue
        stage = found[0]
        for other in found:
            if other is not stage and (other.min_days_overdue or 0) > (stage.min_days_overdue or 0):
                stage = other
        undeferred = [i for i, r in enumerate(group) if not _deferred(r, as_of)]
        promises = {i: _promised_until(group[i], as_of) for i in undeferred}
        active = [i for i in undeferred if promises[i] is None]
        due = [i for i in active if stages[i][1] is not None]
        shown = [group[i] for i in (active or undeferred)] or group
        if phone in contacts:
            since = min(_as_date(r["deadline"]) for r in shown)
            seen = _stage_history(contacts, phone, stage.name, since=since)
            next_channel = ladder.channel_for(stage, seen)
        else:  # no earlier contact: the stage's first channel
            seen, next_channel = _NO_HISTORY, stage.channels[0].channel
        channel = next_channel or stage.channels[0].channel
        attempt = seen.voice_attempts + 1 if channel == "voice" else 1
        reason = None
        if phone in opted_out:
            reason = "opted_out"
        elif not undeferred:
            reason = "deferral"
        elif not active:
            reason = f"promise_to_pay until {max(d for d in promises.values() if d).isoformat()}"
        elif not due:
            reason = f"max_attempts: {stage.name} allows {stage.max_attempts}"
        elif campaign.holdout_share and _held_out(shown, "taxpayer_id", campaign):
            reason = "holdout"
        elif next_channel is None:
            reason = f"channel attempts exhausted in {stage.name}"
        elif channel == "voice" and campaign.voice_gateway is None:
            reason = "voice channel not configured: no modems"
        elif phone in last_contact and (as_of - last_contact[phone].date()).days < campaign.cap_days:
            reason = f"frequency_cap: last contact {last_contact[phone].date().isoformat()}"
        row = _tax_payment_row(
            shown, as_of, week, run_id, planned_at, campaign,
            stage=stage.name, channel=channel, attempt=attempt, template=stage.templates[channel],
        )  # fmt: skip
        if reason:
            row.update(state=ledger.SUPPRESSED, reason=reason)
        return row

    group: list[Mapping[str, Any]] = []
    for record in records:
        if group and record["mobile_normalized"] != group[0]["mobile_normalized"]:
            row = decide(group)
            if row is not None:
                yield row
            group = []
        group.append(record)
    if group:
        row = decide(group)
        if row is not None:
            yield row


def plan_tax_payment_table(table: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """Return :func:`plan_tax_payment`'s rows for an Arrow table, computed column by column.

    The table must be sorted like the records (phone, taxpayer, deadline); the rows are exactly
    ``list(plan_tax_payment(chunks.records(table), **kwargs))``, several times faster
    (:mod:`include.dunning.fastplan`). The plan step plans its chunks this way.
    """
    from include.dunning.fastplan import plan_tax_payment_table as columnar

    return columnar(table, **kwargs)


_LADDERS: dict[str, Any] = {}
_NO_HISTORY = ContactHistory()


def _packaged_ladder(name: str) -> Any:
    """Return a packaged ladder, loaded (and validated) once per process."""
    if name not in _LADDERS:
        from include.dunning.ladder import load_ladder

        _LADDERS[name] = load_ladder(name)
    return _LADDERS[name]


def _promised_until(record: Mapping[str, Any], as_of: date) -> date | None:
    """Return the date of an open promise to pay (on or after ``as_of``), else None."""
    until = record.get("promised_until")
    if until is None or (isinstance(until, float) and until != until):  # None or NaN from pandas
        return None
    try:
        day = _as_date(until)
    except ValueError:
        return None
    return day if day >= as_of else None


def _held_out(items: list[Mapping[str, Any]], id_column: str, campaign: Any) -> bool:
    """Tell whether every debtor behind a message is in the campaign's holdout group.

    The group is :func:`include.dunning.reporting.holdout_group` seeded with the campaign name,
    so a debtor stays in (or out) on every run. A number shared with a debtor outside the group
    is contacted as usual (the message speaks for that debtor too).
    """
    return _held_out_ids({str(i[id_column]) for i in items}, campaign)


def _held_out_ids(ids: set[str], campaign: Any) -> bool:
    """Tell whether every one of these debtor ids is in the campaign's holdout group."""
    global _holdout_group
    if _holdout_group is None:
        from include.dunning.reporting import holdout_group as _holdout_group
    return len(_holdout_group(ids, share=campaign.holdout_share, seed=campaign.campaign)) == len(ids)


_holdout_group: Any = None


def _index_history(
    history: Mapping[tuple[str, str, str], Mapping[str, Any]] | None,
) -> dict[str, list[tuple[str, str, Mapping[str, Any]]]]:
    """Return the contact history per phone: (stage, period, counts) of each earlier period."""
    index: dict[str, list[tuple[str, str, Mapping[str, Any]]]] = {}
    for (phone, stage, period), counts in (history or {}).items():
        index.setdefault(phone, []).append((stage, period, counts))
    return index


def _stage_history(
    index: Mapping[str, list[tuple[str, str, Mapping[str, Any]]]],
    phone: str,
    stage: str,
    *,
    period: str | None = None,
    since: date | None = None,
) -> ContactHistory:
    """Return a number's earlier contacts in one stage: one period, or every period since a date."""
    totals = [0, 0, 0, 0]
    for name, per, counts in index.get(phone, ()):
        if name != stage or (period is not None and per != period):
            continue
        if since is not None and counts["last_as_of"] < since:
            continue
        totals[0] += counts["sms_delivered"]
        totals[1] += counts["sms_undelivered"]
        totals[2] += counts["sms_unanswered"]
        totals[3] += counts["voice_answered"] + counts["voice_unanswered"] + counts["voice_failed"]
    return ContactHistory(*totals)


def failed_contact_flags(
    records: Iterable[Mapping[str, Any]],
    *,
    history: Mapping[tuple[str, str, str], Mapping[str, Any]] | None,
    ladder: Any,
    as_of: date,
    run_id: str,
    campaign: str,
    debtor_column: str,
) -> list[dict[str, Any]]:
    """Return staff flags for debtors still in arrears behind a number with N failed contacts.

    A failed contact is an undelivered SMS or an unanswered call (``ledger.contact_history``);
    N is the ladder's ``flag_after_failed_contacts``. The detail says what was tried.

    :param records: today's validated records (the debtors still in arrears)
    :param debtor_column: the records' debtor id column (``taxpayer_id``, ``account_no``)
    """
    tried: dict[str, dict[str, Any]] = {}
    for (phone, stage, _period), counts in (history or {}).items():
        t = tried.setdefault(phone, {"sms_u": 0, "voice_u": 0, "sms_d": 0, "voice_a": 0, "stages": set(),
                                     "first": counts["first_as_of"]})  # fmt: skip
        t["sms_u"] += counts["sms_undelivered"]
        t["voice_u"] += counts["voice_unanswered"]
        t["sms_d"] += counts["sms_delivered"]
        t["voice_a"] += counts["voice_answered"]
        t["stages"].add(stage)
        t["first"] = min(t["first"], counts["first_as_of"])
    flags: dict[str, dict[str, Any]] = {}
    for record in records:
        phone = record.get("mobile_normalized")
        t = tried.get(str(phone)) if phone else None
        if t is None or not ladder.should_flag(t["sms_u"] + t["voice_u"]):
            continue
        debtor = str(record[debtor_column])
        detail = (
            f"{t['sms_u'] + t['voice_u']} failed contacts since {t['first'].isoformat()}: "
            f"{t['sms_u']} SMS undelivered, {t['voice_u']} calls unanswered "
            f"({t['sms_d']} SMS delivered, {t['voice_a']} calls answered); "
            f"stages {', '.join(sorted(t['stages']))}"
        )
        flags.setdefault(
            debtor,
            {"campaign": campaign, "debtor_id": debtor, "reason": "failed_contacts", "detail": detail[:300],
             "flagged_on": as_of, "run_id": run_id},
        )  # fmt: skip
    return list(flags.values())


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
    *,
    stage: str | None = None,
    channel: str | None = None,
    attempt: int = 1,
    template: str | None = None,
) -> dict[str, Any]:
    channel = channel or campaign.channel
    template = template or campaign.template
    first = group[0]
    phone = str(first["mobile_normalized"])
    # One pass (hot loop): each amount and date converted once; sums in the same order as sum().
    principal = surcharge = Decimal("0")
    earliest: date | None = None
    taxpayers: dict[str, str] = {}
    for r in group:
        owed = _exact_amount(r["outstanding"])
        deadline = _as_date(r["deadline"])
        principal += owed
        surcharge += fees.tax_surcharge(owed, deadline, as_of)
        if earliest is None or deadline < earliest:
            earliest = deadline
        taxpayers.setdefault(str(r["taxpayer_id"]), str(r["taxpayer_name"]))
    assert earliest is not None
    names = list(taxpayers.values())
    text = templates.render(
        template,
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
        stage=stage or campaign.stage,
        channel=channel,
        attempt=attempt,
        debtors=taxpayers,
        template=template,
        text=text,
        amount=principal,
        surcharge=surcharge,
        gateway=campaign.voice_gateway if channel == "voice" and campaign.voice_gateway else campaign.gateway,
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
    if type(value) is date:  # the common case first (hot loop)
        return value
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = str(value)[:10]
    day = _ISO_DATES.get(text)
    if day is None:
        day = date.fromisoformat(text)
        if len(_ISO_DATES) >= 100_000:
            _ISO_DATES.clear()
        _ISO_DATES[text] = day
    return day


_ISO_DATES: dict[str, date] = {}  # source dates as text (SQLite) repeat a lot: parse each once


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
    :param holdout_share: share of accounts held out of dunning to measure recovery (0: none);
        cut-off notices and prepaid balance alerts are never held out
    :param history_days: how far back earlier contacts count for re-notification and staff flags
    """

    signature: str = "示范供电"
    gateway: str = "smpp_default"
    grace_days: int = 0
    cross_year: str = "whole_period"
    cutoff_notice_days: int = 7
    cap_days: int = 7
    voice_gateway: str | None = None
    campaign: str = "power_dunning"
    holdout_share: float = 0.0
    history_days: int = 120


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
    history: Mapping[tuple[str, str, str], Mapping[str, Any]] | None = None,
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
    :param history: earlier contacts of the campaign (``DunningStore.contact_history``): an
        undelivered SMS moves the number to the next channel of its stage (same stage period)

    Stop rules (DOMAIN §3, §6): a bill under an open promise to pay (``promised_until`` on or
    after the as-of date) and a bill covered by top-ups made on or after its due date
    (``topup_amount``, applied to the oldest bills first) leave the message; when nothing is
    left the row is SUPPRESSED ``promise_to_pay until <date>`` or ``recharge: ...``. A prepaid
    balance lifted above the alert thresholds by a top-up after the balance snapshot is
    SUPPRESSED the same way. Accounts in the holdout group are SUPPRESSED ``holdout``.
    """
    last_contact = last_contact or {}
    contacts = _index_history(history)
    group: list[Mapping[str, Any]] = []
    for record in records:
        if group and record["mobile_normalized"] != group[0]["mobile_normalized"]:
            yield from _power_rows(
                group, as_of, run_id, planned_at, campaign, ladder, opted_out, last_contact, contacts
            )
            group = []
        group.append(record)
    if group:
        yield from _power_rows(
            group, as_of, run_id, planned_at, campaign, ladder, opted_out, last_contact, contacts
        )


def _money_or_none(value: Any) -> Decimal | None:
    if value is None or (isinstance(value, float) and value != value):  # None or NaN from pandas
        return None
    return _exact_amount(value)


def _open_bills(bills: list[Mapping[str, Any]], as_of: date) -> tuple[list[Mapping[str, Any]], str | None]:
    """Return the bills still to dun and, when none is left, why (promise or top-up).

    Top-ups are per account: the sum made on or after the oldest unpaid bill's due date (the
    largest ``topup_amount`` of the account's bills), applied to the oldest bills first. A bill
    fully covered leaves the message; a partly covered one stays with what is left (and its
    违约金 on that). A bill of an account with an open promise to pay leaves the message.
    """
    promised: dict[str, date] = {}
    available: dict[str, tuple[Decimal, Any]] = {}
    for bill in bills:
        account = str(bill["account_no"])
        until = _promised_until(bill, as_of)
        if until is not None:
            promised[account] = max(until, promised.get(account, until))
        topup = _money_or_none(bill.get("topup_amount"))
        if topup and topup > available.get(account, (Decimal("0"), None))[0]:
            available[account] = (topup, bill.get("topup_on"))
    if not promised and not available:
        return bills, None
    left = {account: amount for account, (amount, _) in available.items()}
    still: list[Mapping[str, Any]] = []
    for bill in sorted(bills, key=lambda b: _as_date(b["due_date"])):
        account = str(bill["account_no"])
        if account in promised:
            continue
        owed = _exact_amount(bill["outstanding"])
        cover = min(owed, left.get(account, Decimal("0")))
        if cover:
            left[account] -= cover
        if cover < owed:
            still.append(bill if not cover else {**bill, "outstanding": owed - cover})
    if still:
        still.sort(key=lambda b: (str(b["account_no"]), _as_date(b["due_date"])))
        return still, None
    if promised:
        return [], f"promise_to_pay until {max(promised.values()).isoformat()}"
    total = sum((amount for amount, _ in available.values()), Decimal("0"))
    last = max(_as_date(on) for _, on in available.values() if on is not None)
    return [], f"recharge: top-up {_amount(total)} by {last.isoformat()} covers the arrears"


def _power_rows(
    group: list[Mapping[str, Any]],
    as_of: date,
    run_id: str,
    planned_at: datetime,
    campaign: PowerCampaign,
    ladder: Any,
    opted_out: Set[str],
    last_contact: Mapping[str, datetime],
    contacts: Mapping[str, list[tuple[str, str, Mapping[str, Any]]]] | None = None,
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
    stopped = None
    if staged:
        open_bills, stopped = _open_bills(bills, as_of)
        open_ids = {str(b["item_id"]) for b in open_bills}
        if not stopped:
            staged = [(s, a, b) for s, a, b in staged if str(b["item_id"]) in open_ids]
            bills = open_bills
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
        period = f"{stage.name}:{anchor.isoformat()}"
        if contacts and phone in contacts:
            channel = ladder.channel_for(stage, _stage_history(contacts, phone, stage.name, period=period))
        else:  # no earlier contact: the stage's first channel
            channel = stage.channels[0].channel
        row = _power_row(
            phone, stage, attempt, period, bills, as_of, run_id, planned_at, campaign,
            {
                "amount": _amount(amount),
                "penalty": _amount(sum(penalties.values(), Decimal("0"))),
                "due_date": _day(earliest_due),
                "balance": None,
                "cutoff_date": _day(as_of + timedelta(days=campaign.cutoff_notice_days)),
            },
            amount, sum(penalties.values(), Decimal("0")), channel=channel,
        )  # fmt: skip
        capped = phone in last_contact and (as_of - last_contact[phone].date()).days < campaign.cap_days
        if phone in opted_out:
            row.update(state=ledger.SUPPRESSED, reason="opted_out")
        elif stopped:
            row.update(state=ledger.SUPPRESSED, reason=stopped)
        elif campaign.holdout_share and not stage.cutoff_notice and _held_out(bills, "account_no", campaign):
            row.update(state=ledger.SUPPRESSED, reason="holdout")
        elif channel is None:
            row.update(state=ledger.SUPPRESSED, reason=f"channel attempts exhausted in {stage.name}")
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
        # A top-up after the balance snapshot counts: alert on the balance it left.
        topped = min(
            _exact_amount(b["balance"]) + (_money_or_none(b.get("topup_amount")) or 0) for b in balances
        )
        stage = ladder.balance_stage(lowest)
        if stage is not None:
            recharged = ladder.balance_stage(topped) if topped != lowest else stage
            shown = topped if recharged is not None else lowest
            stage = recharged or stage
            threshold = stage.balance_threshold(shown)
            attempt = sorted(stage.balance_below, reverse=True).index(threshold) + 1
            row = _power_row(
                phone, stage, attempt, f"{stage.name}:{as_of:%Y-%m}", balances, as_of, run_id, planned_at, campaign,
                {"amount": None, "penalty": None, "due_date": None, "balance": _amount(shown), "cutoff_date": None},
                shown, None,
            )  # fmt: skip
            if phone in opted_out:
                row.update(state=ledger.SUPPRESSED, reason="opted_out")
            elif recharged is None:
                last = max(_as_date(b["topup_on"]) for b in balances if _money_or_none(b.get("topup_amount")))
                row.update(
                    state=ledger.SUPPRESSED,
                    reason=f"recharge: balance {_amount(topped)} after a top-up on {last.isoformat()}",
                )
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
    channel: str | None = None,
) -> dict[str, Any]:
    channel = channel or stage.channels[0].channel
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


# -- planning one chunk (in this process or a worker) ---------------------------------------------

#: The record fields each planner reads; a chunk is converted to records of these columns only.
PLANNER_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "tax_payment": ("mobile_normalized", "taxpayer_id", "taxpayer_name", "tax_type", "period",
                    "outstanding", "deadline", "deferred_until", "promised_until"),
    "power": ("mobile_normalized", "kind", "item_id", "account_no", "name", "customer_class",
              "outstanding", "due_date", "demand_logged", "balance", "promised_until",
              "topup_amount", "topup_on"),
    "filing": ("mobile_normalized", "taxpayer_id", "taxpayer_name", "tax_type", "period",
               "deadline", "filed"),
}  # fmt: skip
PREVIEW_COLUMNS = ("debtor_ids", "debtor_name", "stage", "channel", "state", "reason", "parts", "amount",
                   "surcharge", "message_text", "phone")  # fmt: skip


def preview_csv(rows: list[dict[str, Any]], *, header: bool = False) -> str:
    """Return the preview CSV lines of planned rows (phones masked), as the plan step writes them.

    The same text as ``pandas.DataFrame(rows, columns=...).to_csv(index=False)`` (what the
    preview was first written with; tests compare the two): values through ``str``, ``None``
    as an empty field, a field with a comma, a double quote or a newline quoted (``csv``'s
    minimal quoting with ``\n`` line ends). Joined here: several times faster than either.
    """
    from include.dunning.phones import mask

    lines = [",".join(PREVIEW_COLUMNS)] if header else []
    field = _csv_field
    for r in rows:
        phone = r["phone"]
        # An 11-digit number masks to its own first 3 and last 4 digits, whatever mask's checks say.
        masked = f"{phone[:3]}****{phone[-4:]}" if _is_11_digits(phone) else field(mask(phone))
        lines.append(
            f"{field(r['debtor_ids'])},{field(r['debtor_name'])},{field(r['stage'])},{field(r['channel'])},"
            f"{field(r['state'])},{field(r['reason'])},{field(r['parts'])},{field(r['amount'])},"
            f"{field(r['surcharge'])},{field(r['message_text'])},{masked}"
        )
    return "\n".join(lines) + "\n" if lines else ""


def _is_11_digits(phone: Any) -> bool:
    return type(phone) is str and len(phone) == 11 and phone.isascii() and phone.isdigit()


def _csv_field(value: Any) -> str:
    if value is None:
        return ""
    text = value if type(value) is str else str(value)
    if '"' in text:
        return '"' + text.replace('"', '""') + '"'
    if "," in text or "\n" in text:
        return '"' + text + '"'
    return text


@dataclass(frozen=True)
class ChunkPlan:
    """Plan one phone-sorted chunk of a run: everything a worker process needs, picklable.

    Called with an Arrow table (a chunk of :func:`include.dunning.chunks.phone_sorted_chunks`)
    and the chunk's eligibility lookups; returns the planner's rows and, with ``preview``, the
    chunk's preview CSV lines. The same object plans in the task's process and in workers.

    :param planner: ``tax_payment``, ``power`` or ``filing``
    :param inputs: further planner arguments of the whole run (e.g. ``history``)
    :param preview: also return the preview CSV lines (:func:`preview_csv`) of the rows
    """

    planner: str
    campaign: Any
    ladder: Any
    as_of: date
    run_id: str
    planned_at: datetime
    inputs: Mapping[str, Any] = field(default_factory=dict)
    preview: bool = False

    def records(self, table: Any) -> list[dict[str, Any]]:
        """Return a chunk's records: the columns the planner reads, as plain Python values."""
        from include.dunning import chunks

        wanted = PLANNER_COLUMNS[self.planner]
        return chunks.records(table.select([c for c in table.column_names if c in wanted]))

    def rows(
        self,
        records: Iterable[Mapping[str, Any]],
        *,
        opted_out: Set[str] = frozenset(),
        last_contact: Mapping[str, datetime] | None = None,
    ) -> list[dict[str, Any]]:
        """Return the planner's rows for records sorted by the operator's sort columns."""
        return list(_PLANNERS[self.planner](records, **self._arguments(opted_out, last_contact)))

    def _arguments(self, opted_out: Set[str], last_contact: Mapping[str, datetime] | None) -> dict[str, Any]:
        return {
            "as_of": self.as_of,
            "run_id": self.run_id,
            "planned_at": self.planned_at,
            "campaign": self.campaign,
            "ladder": self.ladder,
            "opted_out": opted_out,
            "last_contact": last_contact,
            **self.inputs,
        }

    def __call__(
        self,
        table: Any,
        *,
        opted_out: Set[str] = frozenset(),
        last_contact: Mapping[str, datetime] | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        # A chunk allocates some million objects and no reference cycle: the cyclic garbage
        # collector would rescan the growing heap again and again (a third of the time).
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._plan(table, opted_out=opted_out, last_contact=last_contact)
        finally:
            if collecting:
                gc.enable()

    def _plan(
        self, table: Any, *, opted_out: Set[str], last_contact: Mapping[str, datetime] | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        columnar = _TABLE_PLANNERS.get(self.planner)
        if columnar is None:
            rows = self.rows(self.records(table), opted_out=opted_out, last_contact=last_contact)
            return rows, (preview_csv(rows) if self.preview else None)
        lines: list[str] | None = [] if self.preview else None
        rows = columnar(table, preview=lines, **self._arguments(opted_out, last_contact))
        if lines is None:
            return rows, None
        return rows, "\n".join(lines) + "\n" if lines else ""


_PLANNERS: Mapping[str, Any] = {
    "tax_payment": plan_tax_payment,
    "power": plan_power,
    "filing": plan_filing_reminders,
}
#: Planners that take the chunk as an Arrow table (same rows as the record planner).
_TABLE_PLANNERS: Mapping[str, Any] = {"tax_payment": plan_tax_payment_table}
