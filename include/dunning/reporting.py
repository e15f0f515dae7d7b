"""Reporting tables, the holdout group and the staff follow-up list (no Airflow).

``load_reporting`` turns one run's ledger rows into ``report_contact`` (one row per contact, the
outcome from :mod:`include.dunning.outcomes`, the phone reduced to its first 3 digits),
``report_summary`` (per stage / channel / gateway / prefix / template) and ``report_recovery``
(holdout against contacted: who paid within 3 / 7 / 30 days). Set-based SQL on every engine;
idempotent per run (delete + insert in one transaction), so it can be re-run as receipts and
payments arrive.

The holdout: ``holdout_group`` picks a stable, seeded share of debtors. A DAG keeps them from
being contacted by planning their rows as ``SUPPRESSED`` with reason ``holdout`` (so the ledger
shows the decision and the recovery table finds the group by itself), or passes the same set as
``holdout=`` here.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from include.dunning import outcomes
from include.dunning.ledger import (
    DELIVERED,
    EXPIRED,
    FAILED,
    SUBMITTED,
    UNDELIVERED,
    UNKNOWN,
    DunningStore,
    split_sql,
)
from include.dunning.phones import mask

if TYPE_CHECKING:
    import pandas as pd

SENT_STATES = (SUBMITTED, DELIVERED, UNDELIVERED, EXPIRED, UNKNOWN)
HOLDOUT_REASON = "holdout"
RECOVERY_WINDOWS = (3, 7, 30)

# A ledger row belongs to the run that sent it, or (never sent) to the run that planned it.
_RUN_ROWS = "(c.sent_run_id = :run_id OR (c.sent_run_id IS NULL AND c.planned_run_id = :run_id))"

# The run's rows with the receipt detail of their worst part (an undelivered one when there is one).
_SOURCE = f"""
SELECT c.idempotency_key, c.campaign, c.period, c.as_of, c.debtor_id, c.stage, c.channel, c.attempt,
       c.gateway, c.phone, c.template, c.state, c.reason, c.error_code, c.parts, c.amount,
       c.planned_at, c.submitted_at, c.final_at,
       COALESCE(pa.bad_stat, pa.any_stat) AS stat, COALESCE(pa.bad_err, pa.any_err) AS err,
       pa.receipt_at,
       CASE WHEN c.state IN ('SUPPRESSED', 'UNDELIVERED') THEN COALESCE(c.reason, '') ELSE '' END AS k_reason,
       CASE WHEN c.state = 'FAILED' THEN COALESCE(c.error_code, '') ELSE '' END AS k_code,
       CASE WHEN c.state = 'UNDELIVERED' THEN COALESCE(pa.bad_stat, pa.any_stat, '') ELSE '' END AS k_stat,
       CASE WHEN c.state = 'UNDELIVERED' THEN COALESCE(pa.bad_err, pa.any_err, '') ELSE '' END AS k_err
FROM contact_ledger c
LEFT JOIN (
    SELECT p.idempotency_key,
           MAX(CASE WHEN p.state <> 'DELIVERED' THEN p.stat END) AS bad_stat,
           MAX(CASE WHEN p.state <> 'DELIVERED' THEN p.err END) AS bad_err,
           MAX(p.stat) AS any_stat, MAX(p.err) AS any_err, MAX(p.receipt_at) AS receipt_at
    FROM message_part p
    WHERE p.idempotency_key IN (SELECT c.idempotency_key FROM contact_ledger c WHERE {_RUN_ROWS})
    GROUP BY p.idempotency_key
) pa ON pa.idempotency_key = c.idempotency_key
WHERE {_RUN_ROWS}
"""  # noqa: S608 - constants only


def create_reporting_schema(store: DunningStore) -> None:
    """Create the reporting tables when they do not exist (idempotent)."""
    ddl = resources.files("include.sql").joinpath("dunning_store/reporting.sql").read_text("utf-8")
    with store.engine.begin() as conn:
        for statement in split_sql(ddl):
            conn.exec_driver_sql(statement)


def holdout_group(debtor_ids: Iterable[str], *, share: float, seed: str | int) -> set[str]:
    """Return the debtors in the holdout group: a stable, seeded random share of them.

    A debtor is in the group when ``sha256(seed, debtor_id)`` read as a fraction of 1 is below
    ``share``, so membership depends on nothing but the seed and the id: the same debtor stays in
    (or out) on every run, every machine and whatever other debtors are in the list. Change the
    seed to draw a new group (e.g. per campaign year).

    :param debtor_ids: the debtors eligible for contact
    :param share: the fraction to hold out, 0 <= share < 1 (e.g. 0.05)
    :param seed: the draw's seed, e.g. ``"tax_payment-2026"``
    """
    if not 0 <= share < 1:
        raise ValueError(f"holdout share must be in [0, 1), got {share!r}")
    limit = int(share * 2**64)
    chosen: set[str] = set()
    for debtor_id in debtor_ids:
        digest = hashlib.sha256(f"{seed}\x1f{debtor_id}".encode()).digest()
        if int.from_bytes(digest[:8], "big") < limit:
            chosen.add(debtor_id)
    return chosen


def _answer_seconds(reason: str | None) -> int | None:
    match = re.match(r"answered (\d+)s", reason or "")
    return int(match.group(1)) if match else None


def load_reporting(
    store: DunningStore,
    *,
    run_id: str,
    dag_id: str,
    payments: Iterable[tuple[str, date, Decimal | float | str]] | pd.DataFrame | None = None,
    holdout: Iterable[str] | None = None,
    flag_after_failed_contacts: int = 3,
) -> dict[str, Any]:
    """Load one run's reporting rows: contacts, summary and recovery (idempotent per run).

    Everything of the run is deleted and inserted again in one transaction, so a reload after
    late receipts or new payments replaces the figures instead of adding to them.

    :param store: the dunning store
    :param run_id: the Airflow run id
    :param dag_id: the DAG id (report rows are keyed by both)
    :param payments: ``(debtor_id, paid_on, amount)`` rows (or a frame with those columns); None
        when no payment data is available: recovery rows then have NULL paid_* and amounts
    :param holdout: debtor ids held out of contact, in addition to rows SUPPRESSED as ``holdout``
    :param flag_after_failed_contacts: a contact is ``flagged`` when its debtor has at least this
        many failed contacts in the ledger (the staff follow-up threshold)
    :return: counts: ``contacts``, ``summary_rows``, ``recovery_rows``, ``payments`` (bool)
    """
    create_reporting_schema(store)
    run = {"run_id": run_id, "dag_id": dag_id}
    with store.engine.begin() as conn:
        for table in ("report_contact", "report_summary", "report_recovery"):
            conn.execute(
                sa.text(f"DELETE FROM {table} WHERE dag_id = :dag_id AND run_id = :run_id"),  # noqa: S608
                run,
            )
        _fill_outcome_map(store, conn, run)
        contacts = _insert_contacts(conn, run, flag_after_failed_contacts)
        if holdout:
            _mark_holdout(conn, run, holdout)
        _fill_answer_seconds(conn, run)
        summary_rows = _insert_summary(conn, run)
        recovery_rows = _insert_recovery(conn, run, payments)
    return {
        "contacts": contacts,
        "summary_rows": summary_rows,
        "recovery_rows": recovery_rows,
        "payments": payments is not None,
    }


def _fill_outcome_map(store: DunningStore, conn: sa.Connection, run: Mapping[str, str]) -> None:
    combos = conn.execute(
        sa.text(f"SELECT DISTINCT channel, state, k_reason, k_code, k_stat, k_err FROM ({_SOURCE}) s"),  # noqa: S608
        run,
    ).all()
    if not combos:
        return
    columns = ("channel", "state", "reason_key", "error_code", "stat", "err", "outcome")
    conn.execute(
        store._insert_ignore("report_outcome_map", columns, columns[:-1]),
        [
            {
                "channel": channel,
                "state": state,
                "reason_key": reason,
                "error_code": code,
                "stat": stat,
                "err": err,
                "outcome": outcomes.from_ledger(
                    state, reason or None, code or None, channel=channel, stat=stat or None, err=err or None
                ).value,
            }
            for channel, state, reason, code, stat, err in combos
        ],
    )


def _insert_contacts(conn: sa.Connection, run: Mapping[str, str], flag_after: int) -> int:
    failed_states = ", ".join(f"'{s}'" for s in outcomes.FAILED_CONTACT_STATES)
    sql = f"""
INSERT INTO report_contact (
    dag_id, run_id, idempotency_key, campaign, period, as_of, debtor_id, stage, channel, attempt,
    gateway, prefix, template, state, reason, error_code, stat, err, outcome, parts, amount,
    answer_seconds, opted_out, flagged, holdout, planned_at, submitted_at, receipt_at, final_at)
SELECT :dag_id, :run_id, s.idempotency_key, s.campaign, s.period, s.as_of, s.debtor_id, s.stage,
    s.channel, s.attempt, s.gateway, SUBSTR(s.phone, 1, 3), s.template, s.state, s.reason,
    s.error_code, s.stat, s.err, m.outcome, s.parts, s.amount, NULL,
    CASE WHEN o.phone IS NOT NULL AND s.submitted_at IS NOT NULL AND o.created_at >= s.submitted_at
         THEN 1 ELSE 0 END,
    CASE WHEN f.failed >= :flag_after THEN 1 ELSE 0 END,
    CASE WHEN s.state = 'SUPPRESSED' AND s.reason = '{HOLDOUT_REASON}' THEN 1 ELSE 0 END,
    s.planned_at, s.submitted_at, s.receipt_at, s.final_at
FROM ({_SOURCE}) s
JOIN report_outcome_map m ON m.channel = s.channel AND m.state = s.state AND m.reason_key = s.k_reason
    AND m.error_code = s.k_code AND m.stat = s.k_stat AND m.err = s.k_err
LEFT JOIN opt_out o ON o.phone = s.phone
LEFT JOIN (
    SELECT c.debtor_id, COUNT(*) AS failed FROM contact_ledger c
    WHERE c.state IN ({failed_states})
      AND c.debtor_id IN (SELECT c.debtor_id FROM contact_ledger c WHERE {_RUN_ROWS})
    GROUP BY c.debtor_id
) f ON f.debtor_id = s.debtor_id
"""  # noqa: S608 - constants only
    return conn.execute(sa.text(sql), {**run, "flag_after": flag_after}).rowcount or 0


def _mark_holdout(conn: sa.Connection, run: Mapping[str, str], holdout: Iterable[str]) -> None:
    ids = sorted(set(holdout))
    for start in range(0, len(ids), 900):
        conn.execute(
            sa.text(
                "UPDATE report_contact SET holdout = 1 WHERE dag_id = :dag_id AND run_id = :run_id "
                "AND debtor_id IN :ids"
            ).bindparams(sa.bindparam("ids", expanding=True)),
            {**run, "ids": ids[start : start + 900]},
        )


def _fill_answer_seconds(conn: sa.Connection, run: Mapping[str, str]) -> None:
    rows = conn.execute(
        sa.text(
            "SELECT idempotency_key, reason FROM report_contact WHERE dag_id = :dag_id AND run_id = :run_id "
            "AND channel = 'voice' AND state = :delivered"
        ),
        {**run, "delivered": DELIVERED},
    ).all()
    updates = [
        {**run, "key": key, "seconds": seconds}
        for key, reason in rows
        if (seconds := _answer_seconds(reason)) is not None
    ]
    if updates:
        conn.execute(
            sa.text(
                "UPDATE report_contact SET answer_seconds = :seconds "
                "WHERE dag_id = :dag_id AND run_id = :run_id AND idempotency_key = :key"
            ),
            updates,
        )


def _sum_if(condition: str) -> str:
    return f"SUM(CASE WHEN {condition} THEN 1 ELSE 0 END)"


def _insert_summary(conn: sa.Connection, run: Mapping[str, str]) -> int:
    sent = "state IN ('SUBMITTED', 'DELIVERED', 'UNDELIVERED', 'EXPIRED', 'UNKNOWN')"
    suppressed = "state = 'SUPPRESSED'"
    known = "(reason LIKE 'opted_out%' OR reason LIKE 'frequency_cap%' OR reason LIKE 'deferral%' "
    known += f"OR reason = 'superseded' OR reason = '{HOLDOUT_REASON}')"
    sql = f"""
INSERT INTO report_summary (
    dag_id, run_id, stage, channel, gateway, prefix, template, planned, suppressed,
    suppressed_opted_out, suppressed_frequency_cap, suppressed_deferral, suppressed_superseded,
    suppressed_holdout, suppressed_other, submitted, delivered, undelivered, expired, unknown,
    pending, failed, answered, arrival_rate, connect_rate, answer_seconds, opt_outs, flagged, amount)
SELECT dag_id, run_id, stage, channel, gateway, prefix, template, COUNT(*), {_sum_if(suppressed)},
    {_sum_if(suppressed + " AND reason LIKE 'opted_out%'")},
    {_sum_if(suppressed + " AND reason LIKE 'frequency_cap%'")},
    {_sum_if(suppressed + " AND reason LIKE 'deferral%'")},
    {_sum_if(suppressed + " AND reason = 'superseded'")},
    {_sum_if(suppressed + f" AND reason = '{HOLDOUT_REASON}'")},
    {_sum_if(suppressed + f" AND (reason IS NULL OR NOT {known})")},
    {_sum_if(sent)}, {_sum_if("state = 'DELIVERED'")}, {_sum_if("state = 'UNDELIVERED'")},
    {_sum_if("state = 'EXPIRED'")}, {_sum_if("state = 'UNKNOWN'")}, {_sum_if("state = 'SUBMITTED'")},
    {_sum_if("state = 'FAILED'")}, {_sum_if("outcome = 'answered'")},
    CASE WHEN channel = 'sms' AND {_sum_if(sent)} > 0
         THEN 1.0 * {_sum_if("state = 'DELIVERED'")} / {_sum_if(sent)} END,
    CASE WHEN channel = 'voice' AND {_sum_if(sent)} > 0
         THEN 1.0 * {_sum_if("outcome = 'answered'")} / {_sum_if(sent)} END,
    COALESCE(SUM(answer_seconds), 0), SUM(opted_out), SUM(flagged), SUM(amount)
FROM report_contact WHERE dag_id = :dag_id AND run_id = :run_id
GROUP BY dag_id, run_id, stage, channel, gateway, prefix, template
"""  # noqa: S608 - constants only
    return conn.execute(sa.text(sql), run).rowcount or 0


def _payments_frame(payments: Any) -> pd.DataFrame:
    import pandas as pd

    if isinstance(payments, pd.DataFrame):
        frame = payments.loc[:, ["debtor_id", "paid_on", "amount"]].copy()
    else:
        frame = pd.DataFrame(list(payments), columns=["debtor_id", "paid_on", "amount"])
    frame["debtor_id"] = frame["debtor_id"].astype(str)
    frame["paid_on"] = pd.to_datetime(frame["paid_on"]).dt.normalize()
    frame["amount"] = frame["amount"].map(lambda v: Decimal(str(v)))
    return frame


def _insert_recovery(conn: sa.Connection, run: Mapping[str, str], payments: Any) -> int:
    cohort = "CASE WHEN state IN ('SUBMITTED', 'DELIVERED', 'UNDELIVERED', 'EXPIRED', 'UNKNOWN') "
    cohort += "THEN 'contacted' WHEN holdout = 1 THEN 'holdout' END"
    debtors_sql = f"""
SELECT stage, {cohort} AS cohort, debtor_id, MIN(as_of) AS as_of, SUM(amount) AS owed
FROM report_contact WHERE dag_id = :dag_id AND run_id = :run_id AND {cohort} IS NOT NULL
GROUP BY stage, {cohort}, debtor_id
"""  # noqa: S608 - constants only
    insert = sa.text(
        "INSERT INTO report_recovery (dag_id, run_id, stage, cohort, debtors, amount_owed, paid_3d, "
        "paid_7d, paid_30d, amount_recovered) VALUES (:dag_id, :run_id, :stage, :cohort, :debtors, "
        ":amount_owed, :paid_3d, :paid_7d, :paid_30d, :amount_recovered)"
    )
    if payments is None:
        rows = conn.execute(
            sa.text(
                f"SELECT stage, cohort, COUNT(*), SUM(owed) FROM ({debtors_sql}) d GROUP BY stage, cohort"  # noqa: S608
            ),
            run,
        ).all()
        params = [
            {
                **run,
                "stage": stage,
                "cohort": group,
                "debtors": n,
                "amount_owed": None if owed is None else str(owed),
                "paid_3d": None,
                "paid_7d": None,
                "paid_30d": None,
                "amount_recovered": None,
            }
            for stage, group, n, owed in rows
        ]
    else:
        params = _recovery_with_payments(conn, run, debtors_sql, _payments_frame(payments))
    if params:
        conn.execute(insert, params)
    return len(params)


def _recovery_with_payments(
    conn: sa.Connection, run: Mapping[str, str], debtors_sql: str, payments: pd.DataFrame
) -> list[dict[str, Any]]:
    import pandas as pd

    result = conn.execute(sa.text(debtors_sql), run)
    debtors = pd.DataFrame(result.all(), columns=["stage", "cohort", "debtor_id", "as_of", "owed"])
    if debtors.empty:
        return []
    debtors["as_of"] = pd.to_datetime(debtors["as_of"]).dt.normalize()
    debtors["owed"] = debtors["owed"].map(lambda v: None if v is None else Decimal(str(v)))
    joined = debtors.merge(payments, on="debtor_id", how="inner")
    joined["days"] = (joined["paid_on"] - joined["as_of"]).dt.days
    joined = joined[(joined["days"] >= 0) & (joined["days"] <= max(RECOVERY_WINDOWS))]
    keys = ["stage", "cohort", "debtor_id"]
    first_paid = joined.groupby(keys)["days"].min()
    recovered = joined.groupby(keys)["amount"].sum()
    params = []
    for (stage, group), frame in debtors.groupby(["stage", "cohort"]):
        index = pd.MultiIndex.from_frame(frame[keys])
        days = first_paid.reindex(index)
        owed = [v for v in frame["owed"] if v is not None]
        paid = [v for v in recovered.reindex(index).dropna()]
        row = {
            **run,
            "stage": stage,
            "cohort": group,
            "debtors": len(frame),
            "amount_owed": str(sum(owed, Decimal(0))) if owed else None,
            "amount_recovered": str(sum(paid, Decimal(0))),
        }
        for window in RECOVERY_WINDOWS:
            row[f"paid_{window}d"] = int((days <= window).sum())
        params.append(row)
    return params


# -- staff follow-up ---------------------------------------------------------------------------

FOLLOWUP_COLUMNS = {
    "debtor_id": "债务人编号 Debtor ID",
    "debtor_name": "名称 Name",
    "phone": "联系电话 Phone (full, to call)",
    "campaign": "催缴项目 Campaign",
    "last_stage": "最近阶段 Last stage",
    "amount": "欠款金额 Amount owed",
    "failed_contacts": "失败次数 Failed contacts",
    "attempts": "尝试次数 Attempts",
    "channels": "渠道 Channels tried",
    "first_tried": "首次联系 First tried",
    "last_tried": "最近联系 Last tried",
    "outcomes": "结果汇总 Outcomes",
    "tried": "联系记录 What was tried (date channel number outcome)",
}


def staff_followup(store: DunningStore, *, failed_contacts_at_least: int = 3) -> pd.DataFrame:
    """Return the debtors with at least N failed contacts, with what was tried, for staff to call.

    A failed contact is a ledger row UNDELIVERED, EXPIRED or FAILED (``outcomes.FAILED_CONTACT``:
    bad number, barred, phone off, busy, no answer, refused, device failure). UNKNOWN rows are not
    counted: the message may well have arrived.

    One row per debtor, columns as ``FOLLOWUP_COLUMNS``. ``phone`` is the debtor's latest number in
    full, because staff have to dial it; in ``tried`` the numbers used are masked (138****8000), as
    everywhere else, so the list names a number once and the history does not spread it further.

    :param store: the dunning store
    :param failed_contacts_at_least: the threshold N (the ladder's ``flag_after_failed_contacts``)
    """
    import pandas as pd

    states = outcomes.FAILED_CONTACT_STATES
    attempted = (*SENT_STATES, FAILED)
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT c.debtor_id, c.debtor_name, c.phone, c.campaign, c.stage, c.channel, c.state, "
                "c.reason, c.error_code, c.amount, COALESCE(c.submitted_at, c.final_at, c.planned_at), "
                "(SELECT MAX(p.stat) FROM message_part p WHERE p.idempotency_key = c.idempotency_key "
                " AND p.state <> 'DELIVERED'), "
                "(SELECT MAX(p.err) FROM message_part p WHERE p.idempotency_key = c.idempotency_key "
                " AND p.state <> 'DELIVERED') "
                "FROM contact_ledger c WHERE c.state IN :attempted AND c.debtor_id IN ("
                " SELECT debtor_id FROM contact_ledger WHERE state IN :failed GROUP BY debtor_id"
                " HAVING COUNT(*) >= :n) "
                "ORDER BY c.debtor_id, 11"
            ).bindparams(sa.bindparam("attempted", expanding=True), sa.bindparam("failed", expanding=True)),
            {"attempted": list(attempted), "failed": list(states), "n": failed_contacts_at_least},
        ).all()
    records: dict[str, dict[str, Any]] = {}
    for debtor_id, name, phone, campaign, stage, channel, state, reason, code, amount, at, stat, err in rows:
        when = at if isinstance(at, datetime) else datetime.fromisoformat(str(at))
        outcome = outcomes.from_ledger(state, reason, code, channel=channel, stat=stat, err=err)
        rec = records.setdefault(
            debtor_id,
            {
                "debtor_id": debtor_id,
                "failed_contacts": 0,
                "attempts": 0,
                "history": [],
                "outcomes": Counter(),
            },
        )
        rec.update(debtor_name=name, phone=phone, campaign=campaign, last_stage=stage, last_tried=when)
        rec["amount"] = None if amount is None else Decimal(str(amount))
        rec.setdefault("first_tried", when)
        rec["attempts"] += 1
        rec["failed_contacts"] += state in states
        rec["outcomes"][outcome.value] += 1
        rec["history"].append((when, channel, phone, outcome.value))
    out = []
    for rec in records.values():
        history = rec.pop("history")
        rec["channels"] = ", ".join(sorted({channel for _, channel, _, _ in history}))
        rec["outcomes"] = ", ".join(f"{k} ×{n}" for k, n in rec["outcomes"].most_common())
        rec["tried"] = "; ".join(
            f"{when:%Y-%m-%d %H:%M} {channel} {mask(phone)} {outcome}"
            for when, channel, phone, outcome in history
        )
        out.append(rec)
    frame = pd.DataFrame(out, columns=list(FOLLOWUP_COLUMNS))
    return frame.sort_values(["failed_contacts", "debtor_id"], ascending=[False, True], ignore_index=True)


def export_followup_xlsx(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write the follow-up list as .xlsx: bilingual header (中文 English), frozen, filterable.

    :param frame: the frame from :func:`staff_followup`
    :param path: the .xlsx file to write (replaced)
    """
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Font, PatternFill
    from openpyxl.utils import get_column_letter

    path = Path(path)
    book = Workbook()
    sheet = book.active
    sheet.title = "跟进名单 Follow-up"
    columns = [c for c in FOLLOWUP_COLUMNS if c in frame.columns]
    sheet.append([FOLLOWUP_COLUMNS[c] for c in columns])
    for cell in sheet[1]:
        cell.font = Font(bold=True)
        cell.fill = PatternFill("solid", fgColor="DDE6F5")
        cell.alignment = Alignment(wrap_text=True, vertical="top")
    for record in frame[columns].itertuples(index=False):
        values = []
        for value in record:
            if isinstance(value, Decimal):
                value = float(value)
            elif hasattr(value, "to_pydatetime"):
                value = value.to_pydatetime()
            values.append(None if value is None or value != value else value)  # NaN -> empty
        sheet.append(values)
    widths = {"tried": 80, "outcomes": 40, "debtor_name": 28, "phone": 16}
    for n, column in enumerate(columns, start=1):
        letter = get_column_letter(n)
        sheet.column_dimensions[letter].width = widths.get(column, 16)
        if column in ("phone", "debtor_id"):
            for cell in sheet[letter][1:]:
                cell.number_format = "@"  # keep leading digits as text, never 1.38E+10
        if column in ("first_tried", "last_tried"):
            for cell in sheet[letter][1:]:
                cell.number_format = "yyyy-mm-dd hh:mm"
        if column == "amount":
            for cell in sheet[letter][1:]:
                cell.number_format = "#,##0.00"
    sheet.freeze_panes = "B2"
    sheet.auto_filter.ref = sheet.dimensions
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    book.save(tmp)
    tmp.replace(path)
    return path


# -- the run report: figures, inline SVG charts, CSV -------------------------------------------

PALETTE = {
    "delivered": "#2e7d32",
    "answered": "#43a047",
    "pending": "#90a4ae",
    "planned": "#cfd8dc",
    "unknown": "#b0bec5",
    "expired": "#ffb300",
    "undelivered-transient": "#fb8c00",
    "undelivered-bad-number": "#c62828",
    "undelivered-barred": "#8e24aa",
    "undelivered": "#e53935",
    "submit-rejected": "#6d4c41",
    "gateway-transient": "#f4511e",
    "device-failed": "#37474f",
    "busy": "#fdd835",
    "no-answer": "#ffa726",
    "not-connected": "#8d6e63",
    "call-rejected": "#d81b60",
    "opted-out": "#5e35b1",
    "suppressed": "#9e9e9e",
    "replied": "#1e88e5",
}


def _esc(text: object) -> str:
    from markupsafe import escape

    return str(escape(str(text)))


def svg_bars(items: list[tuple[str, int]], *, title: str, width: int = 640, color: str = "#4a7bd0") -> str:
    """Return a horizontal bar chart as an inline SVG element (no script, no external resources)."""
    bar, gap, label_w = 22, 8, 170
    height = max(1, len(items)) * (bar + gap) + 30
    top = max([n for _, n in items] + [1])
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" aria-label="{_esc(title)}" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        f"<title>{_esc(title)}</title>",
    ]
    for i, (label, n) in enumerate(items):
        y = 10 + i * (bar + gap)
        w = round((width - label_w - 90) * n / top)
        out.append(
            f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end" font-size="13">{_esc(label)}</text>'
        )
        out.append(
            f'<rect x="{label_w}" y="{y}" width="{max(w, 1 if n else 0)}" height="{bar}" fill="{color}"/>'
        )
        out.append(f'<text x="{label_w + w + 6}" y="{y + 16}" font-size="13">{n:,}</text>')
    out.append("</svg>")
    return "".join(out)


def svg_stacked(rows: list[tuple[str, dict[str, int]]], *, title: str, width: int = 760) -> str:
    """Return stacked 100% bars (one per label, segments per outcome) with a legend, as inline SVG."""
    bar, gap, label_w = 20, 8, 90
    used = sorted(
        {o for _, counts in rows for o in counts},
        key=lambda o: list(PALETTE).index(o) if o in PALETTE else 99,
    )
    legend_rows = -(-len(used) // 4)
    height = max(1, len(rows)) * (bar + gap) + 20 + legend_rows * 20
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" aria-label="{_esc(title)}" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        f"<title>{_esc(title)}</title>",
    ]
    span = width - label_w - 80
    for i, (label, counts) in enumerate(rows):
        y = 6 + i * (bar + gap)
        total = sum(counts.values()) or 1
        x = float(label_w)
        out.append(
            f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" font-size="13">{_esc(label)}</text>'
        )
        for outcome in used:
            n = counts.get(outcome, 0)
            if not n:
                continue
            w = span * n / total
            out.append(
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar}" fill="{PALETTE.get(outcome, "#777")}">'
                f"<title>{_esc(label)} · {_esc(outcome)}: {n:,} ({100 * n / total:.1f}%)</title></rect>"
            )
            x += w
        out.append(
            f'<text x="{label_w + span + 6}" y="{y + 15}" font-size="12">{sum(counts.values()):,}</text>'
        )
    base = 6 + len(rows) * (bar + gap) + 6
    for j, outcome in enumerate(used):
        lx, ly = label_w + (j % 4) * 160, base + (j // 4) * 20
        out.append(f'<rect x="{lx}" y="{ly}" width="12" height="12" fill="{PALETTE.get(outcome, "#777")}"/>')
        out.append(f'<text x="{lx + 16}" y="{ly + 11}" font-size="12">{_esc(outcome)}</text>')
    out.append("</svg>")
    return "".join(out)


def svg_timeline(
    series: dict[str, list[tuple[str, int]]], *, title: str, width: int = 760, height: int = 220
) -> str:
    """Return a line chart of counts per time bucket (sends and receipts), as inline SVG."""
    buckets = sorted({b for points in series.values() for b, _ in points})
    top = max([n for points in series.values() for _, n in points] + [1])
    left, bottom, plot_w, plot_h = 50, height - 40, width - 70, height - 70
    colors = {"sent": "#4a7bd0", "receipts": "#2e7d32"}
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" aria-label="{_esc(title)}" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        f"<title>{_esc(title)}</title>",
        f'<line x1="{left}" y1="{bottom}" x2="{left + plot_w}" y2="{bottom}" stroke="#999"/>',
        f'<text x="{left - 6}" y="{bottom - plot_h + 4}" text-anchor="end" font-size="11">{top:,}</text>',
        f'<text x="{left - 6}" y="{bottom}" text-anchor="end" font-size="11">0</text>',
    ]
    index = {b: i for i, b in enumerate(buckets)}
    step = plot_w / max(1, len(buckets) - 1)
    for k, (name, points) in enumerate(series.items()):
        coords = " ".join(
            f"{left + index[b] * step:.1f},{bottom - plot_h * n / top:.1f}" for b, n in sorted(points)
        )
        color = colors.get(name, "#777")
        if coords:
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{coords}"/>')
            for b, n in points:
                cx, cy = left + index[b] * step, bottom - plot_h * n / top
                out.append(
                    f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="2.5" fill="{color}"><title>{_esc(b)}: {n:,}</title></circle>'
                )
        out.append(f'<rect x="{left + k * 120}" y="{height - 16}" width="12" height="12" fill="{color}"/>')
        out.append(f'<text x="{left + 16 + k * 120}" y="{height - 6}" font-size="12">{_esc(name)}</text>')
    if buckets:
        out.append(f'<text x="{left}" y="{bottom + 14}" font-size="11">{_esc(buckets[0])}</text>')
        out.append(
            f'<text x="{left + plot_w}" y="{bottom + 14}" text-anchor="end" font-size="11">{_esc(buckets[-1])}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _minute(dialect: str, column: str) -> str:
    if dialect == "postgresql":
        return f"to_char(date_trunc('minute', {column}), 'YYYY-MM-DD HH24:MI')"
    if dialect == "mysql":
        return f"DATE_FORMAT({column}, '%Y-%m-%d %H:%i')"
    return f"strftime('%Y-%m-%d %H:%M', {column})"


def _rebucket(points: list[tuple[str, int]], width: int) -> list[tuple[str, int]]:
    merged: Counter[str] = Counter()
    for bucket, n in points:
        merged[bucket[:width]] += n
    return sorted(merged.items())


def report_tables(store: DunningStore, *, dag_id: str, run_id: str) -> dict[str, Any]:
    """Read what the run report shows from the reporting tables (load them first)."""
    run = {"dag_id": dag_id, "run_id": run_id}
    where = "WHERE dag_id = :dag_id AND run_id = :run_id"
    with store.engine.connect() as conn:

        def q(sql: str) -> list[tuple[Any, ...]]:
            return [tuple(r) for r in conn.execute(sa.text(sql), run).all()]

        summary_columns = [
            "stage", "channel", "gateway", "prefix", "template", "planned", "suppressed", "suppressed_opted_out",
            "suppressed_frequency_cap", "suppressed_deferral", "suppressed_superseded", "suppressed_holdout",
            "suppressed_other", "submitted", "delivered", "undelivered", "expired", "unknown", "pending", "failed",
            "answered", "arrival_rate", "connect_rate", "answer_seconds", "opt_outs", "flagged", "amount",
        ]  # fmt: skip
        summary = q(f"SELECT {', '.join(summary_columns)} FROM report_summary {where} ORDER BY 1, 2, 3, 4, 5")  # noqa: S608
        recovery_columns = ["stage", "cohort", "debtors", "amount_owed", "paid_3d", "paid_7d", "paid_30d",
                            "amount_recovered"]  # fmt: skip
        recovery = q(f"SELECT {', '.join(recovery_columns)} FROM report_recovery {where} ORDER BY 1, 2")  # noqa: S608
        by_gateway = q(
            f"SELECT gateway, outcome, COUNT(*) FROM report_contact {where} GROUP BY gateway, outcome"  # noqa: S608
        )
        by_prefix = q(
            f"SELECT prefix, outcome, COUNT(*) FROM report_contact {where} GROUP BY prefix, outcome"  # noqa: S608
        )
        sent = q(
            f"SELECT {_minute(store.dialect, 'submitted_at')}, COUNT(*) FROM report_contact {where} "  # noqa: S608
            f"AND submitted_at IS NOT NULL GROUP BY 1"
        )
        received = q(
            f"SELECT {_minute(store.dialect, 'receipt_at')}, COUNT(*) FROM report_contact {where} "  # noqa: S608
            f"AND receipt_at IS NOT NULL GROUP BY 1"
        )
    return {
        "summary_columns": summary_columns,
        "summary": summary,
        "recovery_columns": recovery_columns,
        "recovery": recovery,
        "by_gateway": by_gateway,
        "by_prefix": by_prefix,
        "sent": [(str(b), int(n)) for b, n in sent],
        "received": [(str(b), int(n)) for b, n in received],
    }


def _grouped(rows: list[tuple[Any, ...]], limit: int) -> list[tuple[str, dict[str, int]]]:
    groups: dict[str, dict[str, int]] = {}
    for label, outcome, n in rows:
        groups.setdefault(str(label), {})[outcome] = int(n)
    ranked = sorted(groups.items(), key=lambda kv: -sum(kv[1].values()))
    if len(ranked) > limit:
        rest: Counter[str] = Counter()
        for _, counts in ranked[limit:]:
            rest.update(counts)
        ranked = [*ranked[:limit], (f"other ({len(ranked) - limit})", dict(rest))]
    return ranked


def _num(value: Any) -> float:
    return 0.0 if value is None else float(value)


def report_view(tables: Mapping[str, Any]) -> dict[str, Any]:
    """Turn ``report_tables`` into what the template shows: totals, rates and the SVG charts."""
    cols = tables["summary_columns"]
    totals = {c: sum(_num(r[i]) for r in tables["summary"]) for i, c in enumerate(cols) if i >= 5}
    contacts = int(totals.get("planned", 0))
    submitted, delivered = int(totals.get("submitted", 0)), int(totals.get("delivered", 0))
    recovery = [dict(zip(tables["recovery_columns"], r, strict=True)) for r in tables["recovery"]]
    has_payments = any(r["paid_30d"] is not None for r in recovery)
    paid = sum(int(r["paid_30d"] or 0) for r in recovery if r["cohort"] == "contacted")
    funnel = [("planned 计划", contacts), ("submitted 已发送", submitted), ("delivered 已送达", delivered)]
    if has_payments:
        funnel.append(("paid ≤30d 已缴", paid))
    cohorts: dict[str, dict[str, float]] = {}
    for r in recovery:
        c = cohorts.setdefault(
            r["cohort"], {"debtors": 0, "paid_3d": 0, "paid_7d": 0, "paid_30d": 0, "amount": 0.0}
        )
        c["debtors"] += int(r["debtors"])
        for w in RECOVERY_WINDOWS:
            c[f"paid_{w}d"] += int(r[f"paid_{w}d"] or 0)
        c["amount"] += _num(r["amount_recovered"])
    rates = {
        name: {w: (c[f"paid_{w}d"] / c["debtors"] if c["debtors"] else None) for w in RECOVERY_WINDOWS}
        for name, c in cohorts.items()
    }
    lift = None
    if has_payments and "contacted" in rates and "holdout" in rates:
        lift = {
            w: None if rates["contacted"][w] is None or rates["holdout"][w] is None
            else rates["contacted"][w] - rates["holdout"][w]
            for w in RECOVERY_WINDOWS
        }  # fmt: skip
    sent, received = tables["sent"], tables["received"]
    stamps = sorted(b for b, _ in sent + received)
    width = 16
    if stamps:
        first, last = datetime.fromisoformat(stamps[0]), datetime.fromisoformat(stamps[-1])
        width = 16 if last - first <= timedelta(hours=6) else 13 if last - first <= timedelta(days=3) else 10
    charts = {
        "funnel": svg_bars(funnel, title="Funnel: planned → submitted → delivered → paid"),
        "gateway": svg_stacked(_grouped(tables["by_gateway"], 10), title="Outcomes by gateway"),
        "prefix": svg_stacked(_grouped(tables["by_prefix"], 15), title="Outcomes by number prefix"),
        "timeline": svg_timeline(
            {"sent": _rebucket(sent, width), "receipts": _rebucket(received, width)},
            title="Sends and receipts over time (UTC)",
        ),
    }
    outcome_totals: Counter[str] = Counter()
    for _, outcome, n in tables["by_gateway"]:
        outcome_totals[outcome] += int(n)
    sms_sent = sum(_num(r[cols.index("submitted")]) for r in tables["summary"] if r[1] == "sms")
    sms_delivered = sum(_num(r[cols.index("delivered")]) for r in tables["summary"] if r[1] == "sms")
    calls = sum(_num(r[cols.index("submitted")]) for r in tables["summary"] if r[1] == "voice")
    return {
        "contacts": contacts,
        "totals": totals,
        "arrival_rate": sms_delivered / sms_sent if sms_sent else None,
        "connect_rate": totals.get("answered", 0) / calls if calls else None,
        "outcome_totals": outcome_totals.most_common(),
        "recovery": recovery,
        "has_payments": has_payments,
        "rates": rates,
        "lift": lift,
        "charts": charts,
    }


def write_report_csv(tables: Mapping[str, Any], open_file: Any, stem: str) -> list[str]:
    """Write the report's tables as CSV files ``<stem>.<table>.csv`` through ``open_file(name)``.

    :param open_file: called with a file name, returns a writable text file
    :return: the names written
    """
    import csv

    outputs = {
        "summary": (tables["summary_columns"], tables["summary"]),
        "recovery": (tables["recovery_columns"], tables["recovery"]),
        "outcomes_by_gateway": (["gateway", "outcome", "contacts"], tables["by_gateway"]),
        "outcomes_by_prefix": (["prefix", "outcome", "contacts"], tables["by_prefix"]),
        "timeline": (
            ["minute_utc", "series", "count"],
            [(b, "sent", n) for b, n in tables["sent"]] + [(b, "receipts", n) for b, n in tables["received"]],
        ),
    }
    names = []
    for table_name, (header, rows) in outputs.items():
        name = f"{stem}.{table_name}.csv"
        with open_file(name) as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(rows)
        names.append(name)
    return names


def render_run_report(
    store: DunningStore,
    *,
    dag_id: str,
    run_id: str,
    as_of: date | str,
    figures: Mapping[str, Any],
    funnel: Any,
    sent_states: Mapping[str, int],
    quarantine_reasons: Any,
    json_name: str,
    csv_names: list[str],
    tables: Mapping[str, Any] | None = None,
    generated_at: str,
) -> str:
    """Render the self-contained HTML run report (inline SVG charts, no scripts, no external files)."""
    import jinja2

    from include.dunning.templates import template_root

    tables = tables if tables is not None else report_tables(store, dag_id=dag_id, run_id=run_id)
    view = report_view(tables)
    cols = tables["summary_columns"]
    merged: dict[tuple[str, ...], dict[str, float]] = {}
    for row in tables["summary"]:
        key = tuple(str(row[cols.index(c)]) for c in ("stage", "channel", "gateway", "template"))
        acc = merged.setdefault(key, Counter())
        for c in ("planned", "suppressed", "submitted", "delivered", "undelivered", "failed", "pending"):
            acc[c] += int(_num(row[cols.index(c)]))
    summary_rows = [
        {"stage": k[0], "channel": k[1], "gateway": k[2], "template": k[3], **v}
        for k, v in sorted(merged.items())
    ]
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_root())), autoescape=True)
    return env.get_template("report/run_report.html.j2").render(
        dag_id=dag_id,
        run_id=run_id,
        as_of=as_of,
        generated_at=generated_at,
        figures=figures,
        funnel=funnel,
        funnel_max=max(1, *(figures[k] for _, k in funnel)),
        sent_states=sent_states,
        quarantine_reasons=quarantine_reasons,
        json_name=json_name,
        csv_names=csv_names,
        view=view,
        summary_rows=summary_rows,
    )
