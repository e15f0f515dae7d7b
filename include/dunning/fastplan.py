"""Columnar tax payment planning: the reference planner's decisions, computed per column.

:func:`include.dunning.planner.plan_tax_payment` decides one number at a time from row dicts;
at planning volume (a chunk is 100,000 liabilities) most of its time went into turning every
liability into a dict and into per-liability Decimal arithmetic. :func:`plan_tax_payment_table`
takes the chunk as an Arrow table instead and computes, with numpy over whole columns:

- each liability's amount in integer fen, its deadline and days overdue, its surcharge in fen
  (``cents * days * rate``, rounded half up exactly as :func:`include.dunning.fees.tax_surcharge`
  rounds the Decimal product), its deferral and promise flags, its ladder stage and attempt;
- per number (the table is sorted by phone, so a number's liabilities are one run of rows):
  the stage (the highest stage any liability reached), the liabilities the message shows
  (open ones, else undeferred ones, else all), their principal, surcharge, earliest deadline
  and count.

Python then only walks the numbers: the eligibility decision in the reference's order, the
debtor list, the rendered text, the ledger row (``planner._contact_row``'s, built inline) and
its preview CSV line.
The result is exactly ``list(plan_tax_payment(chunks.records(table), ...))``, Decimal exponents
included; tests/unit/test_tax_table_planner.py holds the two side by side. A column type this
path does not read exactly (amounts that are not decimal(…, ≤2)/float/integer, dates that are
not date32 or ISO text, a missing phone, a negative amount, a fen product beyond int64) sends
the whole table through the reference planner, which also raises its errors.

No library does this: it is the planner's own rule set, vectorised.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from datetime import date, datetime, timedelta
from decimal import Decimal
from hashlib import sha256
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["plan_tax_payment_table"]

_EPOCH = date(1970, 1, 1)
_FIRST_DAY, _LAST_DAY = (date.min - _EPOCH).days, (date.max - _EPOCH).days
_FAR = np.int64(2**62)
_LIMIT = 2**62  # products beyond this leave int64 arithmetic to the reference planner


class _Unsupported(Exception):
    """A column this path does not read exactly: plan the table with the reference planner."""


def plan_tax_payment_table(
    table: pa.Table,
    *,
    as_of: date,
    run_id: str,
    planned_at: datetime,
    campaign: Any,
    opted_out: Set[str] = frozenset(),
    last_contact: Mapping[str, datetime] | None = None,
    ladder: Any = None,
    history: Mapping[tuple[str, str, str], Mapping[str, Any]] | None = None,
    preview: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Return the tax payment planner's rows for a table sorted by phone, taxpayer, deadline.

    The same rows, in the same order, as :func:`include.dunning.planner.plan_tax_payment` over
    ``chunks.records(table)``; see that function for every decision and parameter.

    :param preview: when given, each row's preview CSV line is appended to it, the line
        :func:`include.dunning.planner.preview_csv` gives for the row
    """
    from include.dunning import chunks, fees, planner

    kwargs = dict(as_of=as_of, run_id=run_id, planned_at=planned_at, campaign=campaign,
                  opted_out=opted_out, last_contact=last_contact, ladder=ladder, history=history)  # fmt: skip
    if table.num_rows == 0:
        return []
    try:
        cols = _table_columns(table, as_of, fees.DEFAULT_TAX_RULES)
    except _Unsupported:
        rows = list(planner.plan_tax_payment(chunks.records(table), **kwargs))  # type: ignore[arg-type]
        if preview is not None and rows:
            preview.extend(planner.preview_csv(rows)[:-1].split("\n"))
        return rows
    return _plan(cols, preview=preview, **kwargs)


def _table_columns(table: pa.Table, as_of: date, rules: Any) -> dict[str, Any]:
    """Return the per-liability columns the planner decides on (numpy and Python lists).

    :raises _Unsupported: when a column cannot be read exactly here
    """
    n = table.num_rows
    names = set(table.column_names)
    phone = _column(table, "mobile_normalized")
    if phone.null_count or not pa.types.is_string(phone.type):
        raise _Unsupported("phone")
    cents = _fen(_column(table, "outstanding"))
    deadline = _epoch_days(_column(table, "deadline"))
    as_of_day = (as_of - _EPOCH).days
    days = as_of_day - deadline
    charged = np.maximum(days, 0)
    numerator, denominator = Decimal(rules.daily_rate).as_integer_ratio()
    if (cents < 0).any():
        raise _Unsupported("negative amount")  # the reference raises its ValueError
    if int(cents.max()) * (2 * numerator * int(charged.max()) + 2 * denominator) >= _LIMIT:
        raise _Unsupported("amount too large for int64 fen")
    exact = cents * charged * numerator  # the surcharge is exact / denominator fen
    surcharge = (2 * exact + denominator) // (2 * denominator)  # ROUND_HALF_UP (non-negative)
    if rules.cap_at_principal:
        surcharge = np.where(exact > cents * denominator, cents, surcharge)
    deferred = _on_or_after(table, "deferred_until", as_of_day) if "deferred_until" in names else None
    promised = _promise_days(table, as_of_day) if "promised_until" in names else None
    cut = np.flatnonzero(pc.not_equal(phone.slice(1), phone.slice(0, n - 1)).to_numpy(zero_copy_only=False))
    starts = np.concatenate(([0], cut + 1)).astype(np.int64)
    return {
        "n": n,
        "starts": starts,
        "phone": _pylist(phone),
        "taxpayer_id": _texts(_column(table, "taxpayer_id")),
        "taxpayer_name": _texts(_column(table, "taxpayer_name")),
        "tax_type": _pylist(_column(table, "tax_type")),
        "period": _pylist(_column(table, "period")),
        "cents": cents,
        "deadline": deadline,
        "days": days,
        "surcharge": surcharge,
        "deferred": np.zeros(n, dtype=bool) if deferred is None else deferred,
        "promised": np.full(n, -1, dtype=np.int64) if promised is None else promised,
    }


def _pylist(column: pa.Array) -> list[Any]:
    from include.dunning import chunks

    return chunks._pylist(column)


def _column(table: pa.Table, name: str) -> pa.Array:
    if name not in table.column_names:
        raise _Unsupported(name)  # the reference raises its KeyError
    column = table.column(name)
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _texts(column: pa.Array) -> list[str]:
    """Return the column as ``str(value)`` for every value (the reference's ``str(r[...])``)."""
    values = _pylist(column)
    if pa.types.is_string(column.type) and not column.null_count:
        return values
    return [str(v) for v in values]


def _fen(column: pa.Array) -> np.ndarray:
    """Return amounts as integer fen, exactly as ``to_money`` of the reference's value rounds them."""
    if column.null_count:
        raise _Unsupported("missing amount")
    kind = column.type
    if pa.types.is_decimal128(kind):
        words = np.frombuffer(column.buffers()[1], dtype=np.int64, count=2 * (column.offset + len(column)))
        low, high = words[2 * column.offset :: 2], words[2 * column.offset + 1 :: 2]
        if (high != (low >> 63)).any():
            raise _Unsupported("decimal beyond int64")
        scale = kind.scale
        if scale <= 2:
            if int(np.abs(low).max(initial=0)) * 10 ** (2 - scale) >= _LIMIT:
                raise _Unsupported("decimal beyond int64")
            return low * np.int64(10 ** (2 - scale))
        step = np.int64(10 ** (scale - 2))  # quantize to fen, half up (away from zero)
        if (low < 0).any():
            raise _Unsupported("negative amount")
        return (low + step // 2) // step
    if pa.types.is_floating(kind):
        values = column.to_numpy(zero_copy_only=False).astype(np.float64)
        if not np.isfinite(values).all() or np.abs(values).max(initial=0) >= 2**52 / 100:
            raise _Unsupported("float amount")
        fen = np.rint(values * 100)
        if (fen / 100 != values).any():  # the value's repr has more than two decimals
            raise _Unsupported("float amount with more than two decimals")
        return fen.astype(np.int64)
    if pa.types.is_integer(kind):
        values = column.to_numpy(zero_copy_only=False).astype(np.int64)
        if np.abs(values).max(initial=0) >= _LIMIT // 100:
            raise _Unsupported("integer amount")
        return values * 100
    raise _Unsupported(f"amount type {kind}")


def _epoch_days(column: pa.Array) -> np.ndarray:
    """Return dates as days since 1970-01-01 (the reference's ``_as_date``)."""
    if column.null_count:
        raise _Unsupported("missing date")
    return _days(column)


def _days(column: pa.Array) -> np.ndarray:
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        try:
            column = pc.cast(pc.utf8_slice_codeunits(column, 0, 10), pa.date32())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise _Unsupported("date text") from None
        kind = column.type
    if not pa.types.is_date32(kind):
        raise _Unsupported(f"date type {kind}")
    days = pc.fill_null(column.cast(pa.int32()), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    if len(days) and (days.min() < _FIRST_DAY or days.max() > _LAST_DAY):
        raise _Unsupported("date outside Python's date range")  # the reference raises on it
    return days


def _on_or_after(table: pa.Table, name: str, day: int) -> np.ndarray:
    """Return whether each value of a nullable date column is on or after ``day`` (nulls: no)."""
    column = _column(table, name)
    if pa.types.is_floating(column.type) or pa.types.is_null(column.type):
        return np.zeros(len(column), dtype=bool)  # the reference reads NaN and numbers as no date
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    return valid & (_days(column) >= day)


def _promise_days(table: pa.Table, day: int) -> np.ndarray:
    """Return each open promise's date (days since the epoch), -1 where none is open."""
    column = _column(table, "promised_until")
    if pa.types.is_null(column.type) or pa.types.is_floating(column.type) or column.null_count == len(column):
        return np.full(len(column), -1, dtype=np.int64)  # the reference reads NaN and numbers as none
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    values = _days(column)
    return np.where(valid & (values >= day), values, -1)


def _plan(
    cols: dict[str, Any],
    *,
    as_of: date,
    run_id: str,
    planned_at: datetime,
    campaign: Any,
    opted_out: Set[str],
    last_contact: Mapping[str, datetime] | None,
    ladder: Any,
    history: Mapping[tuple[str, str, str], Mapping[str, Any]] | None,
    preview: list[str] | None,
) -> list[dict[str, Any]]:
    from include.dunning import ledger, planner, templates
    from include.dunning.phones import mask

    n, starts = cols["n"], cols["starts"]
    last_contact = last_contact or {}
    ladder = ladder if ladder is not None else planner._packaged_ladder("tax")
    contacts = planner._index_history(history)
    week = planner.campaign_week(as_of)
    sizes = np.diff(np.append(starts, n))
    group = np.repeat(np.arange(len(starts)), sizes)
    index = np.arange(n)

    # Stage and attempt per distinct day count, as the reference's staged().
    stage_list: list[Any] = []
    unique_days, inverse = np.unique(cols["days"], return_inverse=True)
    stage_of_day = np.full(len(unique_days), -1, dtype=np.int64)
    due_of_day = np.zeros(len(unique_days), dtype=bool)
    for k, d in enumerate(unique_days.tolist()):
        found = ladder.overdue_stage(d)
        if found is None:
            continue
        at = next((i for i, s in enumerate(stage_list) if s is found), None)
        if at is None:
            at = len(stage_list)
            stage_list.append(found)
        stage_of_day[k] = at
        due_of_day[k] = found.attempt(d) is not None
    stage = stage_of_day[inverse]
    has_stage = stage >= 0
    ranks = np.array([s.min_days_overdue or 0 for s in stage_list] + [0], dtype=np.int64)
    rank = np.where(has_stage, ranks[stage], -_FAR)
    top = np.maximum.reduceat(rank, starts)
    first_top = np.minimum.reduceat(np.where(has_stage & (rank == top[group]), index, n), starts)

    undeferred = ~cols["deferred"]
    promise = cols["promised"]
    active = undeferred & (promise < 0)
    due = active & due_of_day[inverse]
    n_undeferred = np.add.reduceat(undeferred.astype(np.int64), starts)
    n_active = np.add.reduceat(active.astype(np.int64), starts)
    n_due = np.add.reduceat(due.astype(np.int64), starts)
    promise_max = np.maximum.reduceat(np.where(undeferred, promise, -1), starts)
    shown = np.where(
        (n_active > 0)[group], active, np.where((n_undeferred > 0)[group], undeferred, True)
    ).astype(bool)
    principal = np.add.reduceat(np.where(shown, cols["cents"], 0), starts)
    surcharge = np.add.reduceat(np.where(shown, cols["surcharge"], 0), starts)
    earliest = np.minimum.reduceat(np.where(shown, cols["deadline"], _FAR), starts)
    count = np.add.reduceat(shown.astype(np.int64), starts)
    first_shown = np.minimum.reduceat(np.where(shown, index, n), starts)

    phones, ids, names = cols["phone"], cols["taxpayer_id"], cols["taxpayer_name"]
    tax_types, periods = cols["tax_type"], cols["period"]
    shown_list = shown.tolist()
    day_of: dict[int, date] = {}

    def day(epoch: int) -> date:
        found = day_of.get(epoch)
        if found is None:
            found = day_of[epoch] = _EPOCH + timedelta(days=epoch)
        return found

    # Texts of the few distinct periods and deadlines of a chunk, made once each.
    period_text: dict[Any, str] = {}
    deadline_text: dict[int, str] = {}

    ends = np.append(starts[1:], n).tolist()
    group_stage = np.where(first_top < n, stage[np.minimum(first_top, n - 1)], -1).tolist()
    undeferred_in, active_in, due_in = n_undeferred.tolist(), n_active.tolist(), n_due.tolist()
    promise_in, principal_in, surcharge_in = promise_max.tolist(), principal.tolist(), surcharge.tolist()
    earliest_in, count_in = earliest.tolist(), count.tolist()
    rows: list[dict[str, Any]] = []
    no_history = planner._NO_HISTORY
    as_of_text = planner._day(as_of)
    voice_gateway = campaign.voice_gateway
    campaign_name, planned, sms_parts = campaign.campaign, ledger.PLANNED, templates.sms_parts
    suppressed, field = ledger.SUPPRESSED, planner._csv_field
    gateway = voice_gateway if voice_gateway else campaign.gateway
    for g, (start, end, stage_at, shown_at) in enumerate(
        zip(starts.tolist(), ends, group_stage, first_shown.tolist(), strict=True)
    ):
        if stage_at < 0:
            continue  # the ladder has nothing for these days overdue
        st = stage_list[stage_at]
        phone = phones[start]
        earliest_at = earliest_in[g]
        earliest_day = day(earliest_at)
        if phone in contacts:
            seen = planner._stage_history(contacts, phone, st.name, since=earliest_day)
            next_channel = ladder.channel_for(st, seen)
        else:
            seen, next_channel = no_history, st.channels[0].channel
        channel = next_channel or st.channels[0].channel
        attempt = seen.voice_attempts + 1 if channel == "voice" else 1
        taxpayers: dict[str, str] = {}
        for i in range(start, end):
            if shown_list[i]:
                taxpayers.setdefault(ids[i], names[i])
        reason = None
        if phone in opted_out:
            reason = "opted_out"
        elif not undeferred_in[g]:
            reason = "deferral"
        elif not active_in[g]:
            reason = f"promise_to_pay until {day(promise_in[g]).isoformat()}"
        elif not due_in[g]:
            reason = f"max_attempts: {st.name} allows {st.max_attempts}"
        elif campaign.holdout_share and planner._held_out_ids(set(taxpayers), campaign):
            reason = "holdout"
        elif next_channel is None:
            reason = f"channel attempts exhausted in {st.name}"
        elif channel == "voice" and voice_gateway is None:
            reason = "voice channel not configured: no modems"
        elif phone in last_contact and (as_of - last_contact[phone].date()).days < campaign.cap_days:
            reason = f"frequency_cap: last contact {last_contact[phone].date().isoformat()}"
        fen, charge = principal_in[g], surcharge_in[g]
        template = st.templates[channel]
        listed = list(taxpayers.values())
        period = period_text.get(periods[shown_at])
        if period is None:
            period = period_text[periods[shown_at]] = planner._period(periods[shown_at])
        deadline = deadline_text.get(earliest_at)
        if deadline is None:
            deadline = deadline_text[earliest_at] = planner._day(earliest_day)
        text = templates.render(
            template,
            {
                "signature": campaign.signature,
                "name": listed[0],
                "names": listed[: planner.MAX_NAMES_IN_MESSAGE],
                "debtors": len(taxpayers),
                "period": period,
                "tax_type": tax_types[shown_at],
                "principal": f"{fen // 100:,}.{fen % 100:02d}",  # f"{Decimal:,.2f}"
                "deadline": deadline,
                "as_of": as_of_text,
                "surcharge": f"{charge // 100:,}.{charge % 100:02d}",
                "count": count_in[g],
            },
        )
        first_id, first_name = next(iter(taxpayers.items()))
        # planner._contact_row's row, built inline (a keyword call per row costs a tenth here)
        row = {
            "idempotency_key": sha256(
                f"{campaign_name}|{week}|tel:{phone}|{st.name}|{channel}|{attempt}".encode()
            ).hexdigest()[:40],
            "campaign": campaign_name,
            "period": week,
            "as_of": as_of,
            "debtor_id": first_id,
            "debtor_ids": ",".join(taxpayers),
            "debtor_name": first_name,
            "stage": st.name,
            "channel": channel,
            "attempt": attempt,
            "phone": phone,
            "template": template,
            "message_text": text,
            "parts": sms_parts(text),
            "amount": Decimal(fen).scaleb(-2),
            "surcharge": Decimal(charge).scaleb(-2),
            "gateway": gateway if channel == "voice" else campaign.gateway,
            "state": planned,
            "reason": None,
            "planned_run_id": run_id,
            "planned_at": planned_at,
        }
        if reason:
            row.update(state=suppressed, reason=reason)
        rows.append(row)
        if preview is not None:  # planner.preview_csv's line, from the values at hand
            # An 11-digit number masks to its own first 3 and last 4 digits (as preview_csv).
            eleven = len(phone) == 11 and phone.isascii() and phone.isdigit()
            masked = f"{phone[:3]}****{phone[-4:]}" if eleven else field(mask(phone))
            preview.append(
                f"{field(row['debtor_ids'])},{field(first_name)},{field(st.name)},{channel},{row['state']},"
                f"{field(reason)},{row['parts']},{fen // 100}.{fen % 100:02d},{charge // 100}.{charge % 100:02d},"
                f"{field(text)},{masked}"
            )
    return rows
