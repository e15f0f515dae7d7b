"""Reporting tables, the holdout group and the staff follow-up list (no Airflow).

``load_reporting`` turns one run's ledger rows into ``report_contact`` (one row per contact, the
outcome from :mod:`include.dunning.outcomes`, the phone reduced to its first 3 digits),
``report_summary`` (per stage / channel / gateway / prefix / template) and ``report_recovery``
(holdout against contacted: who paid within 3 / 7 / 30 days). The run's ledger rows are read
once, with the receipt detail of their parts, into a temporary staging table; the three tables
are filled from it by set-based SQL on every engine. Idempotent per run (delete + insert in one
transaction), so it can be re-run as receipts and payments arrive.

The holdout: ``holdout_group`` picks a stable, seeded share of debtors. A DAG keeps them from
being contacted by planning their rows as ``SUPPRESSED`` with reason ``holdout`` (so the ledger
shows the decision and the recovery table finds the group by itself), or passes the same set as
``holdout=`` here.
"""

from __future__ import annotations

import hashlib
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

# Temporary tables of the loading connection (dropped at the end of each load).
_STAGE_TABLE = "report_stage_tmp"  # the run's rows, as report_contact will hold them
_CODEBTOR_TABLE = "report_codebtor_tmp"  # every debtor named by a shared-number message
_DEBTOR_TABLE = "report_debtor_tmp"  # recovery: one row per stage, cohort and debtor
_PAID_TABLE = "report_paid_tmp"  # recovery: who paid, per stage and cohort
_PAYMENTS_TABLE = "report_payment_tmp"  # the payments given to the load

_SENT_SQL = ", ".join(f"'{s}'" for s in SENT_STATES)

# What decides a row's outcome, besides channel and state (the columns of the outcome key), on
# the staging table's columns (``stat`` / ``err``: those of the row's worst part).
_K_REASON = "CASE WHEN s.state IN ('SUPPRESSED', 'UNDELIVERED') THEN COALESCE(s.reason, '') ELSE '' END"
_K_CODE = "CASE WHEN s.state = 'FAILED' THEN COALESCE(s.error_code, '') ELSE '' END"
_K_STAT = "CASE WHEN s.state = 'UNDELIVERED' THEN COALESCE(s.stat, '') ELSE '' END"
_K_ERR = "CASE WHEN s.state = 'UNDELIVERED' THEN COALESCE(s.err, '') ELSE '' END"
_KEY_SEP = "|"

# The report_contact columns the staging table holds as they are (all but dag_id, run_id, outcome).
_CONTACT_COLUMNS = (
    "idempotency_key", "campaign", "period", "as_of", "debtor_id", "stage", "channel", "attempt",
    "gateway", "prefix", "template", "state", "reason", "error_code", "stat", "err", "parts", "amount",
    "answer_seconds", "opted_out", "flagged", "holdout", "planned_at", "submitted_at", "receipt_at",
    "final_at",
)  # fmt: skip


def _outcome_key(channel: str, state: str, reason: str, code: str, stat: str, err: str) -> str:
    """Return the one-column key of an outcome combination (``report_outcome_key.okey``)."""
    return _KEY_SEP.join((channel, state, reason, code, stat, err))


def _outcome_key_sql(dialect: str) -> str:
    parts = ["s.channel", "s.state", _K_REASON, _K_CODE, _K_STAT, _K_ERR]
    if dialect == "mysql":
        return f"CONCAT_WS('{_KEY_SEP}', {', '.join(parts)})"
    return f" || '{_KEY_SEP}' || ".join(f"({p})" for p in parts)


def _stage_sql(dialect: str) -> str:
    """Return the SELECT of the staging table: the run's rows with the receipt detail of their
    worst part (an undelivered one when there is one), opt-out after the send, whether the debtor
    has reached the failed-contacts threshold (``:flag_after``), the outcome key, and the debtor
    list of a shared-number message (``co_debtors``, NULL for a single debtor)."""
    failed = ", ".join(f"'{s}'" for s in outcomes.FAILED_CONTACT_STATES)
    answered = _answer_seconds_sql(dialect, "s.reason")
    # Only debtors at the threshold matter (``flagged``), so the failed contacts of the whole
    # ledger are counted per debtor and only those at the threshold are joined: a small hash
    # table, where a join of every run debtor would build one the size of the run.
    return f"""
SELECT s.idempotency_key, s.campaign, s.period, s.as_of, s.debtor_id, s.stage, s.channel, s.attempt,
    s.gateway, s.prefix, s.template, s.state, s.reason, s.error_code, s.stat, s.err, s.parts, s.amount,
    CASE WHEN s.channel = 'voice' AND s.state = '{DELIVERED}' THEN {answered} END AS answer_seconds,
    s.opted_out, s.flagged,
    CASE WHEN s.state = 'SUPPRESSED' AND s.reason = '{HOLDOUT_REASON}' THEN 1 ELSE 0 END AS holdout,
    s.planned_at, s.submitted_at, s.receipt_at, s.final_at, s.co_debtors,
    {_outcome_key_sql(dialect)} AS okey
FROM (
    SELECT c.idempotency_key, c.campaign, c.period, c.as_of, c.debtor_id, c.stage, c.channel, c.attempt,
        c.gateway, SUBSTR(c.phone, 1, 3) AS prefix, c.template, c.state, c.reason, c.error_code,
        COALESCE(pa.bad_stat, pa.any_stat) AS stat, COALESCE(pa.bad_err, pa.any_err) AS err, c.parts,
        c.amount,
        CASE WHEN o.phone IS NOT NULL AND c.submitted_at IS NOT NULL AND o.created_at >= c.submitted_at
             THEN 1 ELSE 0 END AS opted_out,
        CASE WHEN COALESCE(f.failed, 0) >= :flag_after THEN 1 ELSE 0 END AS flagged,
        c.planned_at, c.submitted_at, pa.receipt_at, c.final_at,
        CASE WHEN c.debtor_ids LIKE '%,%' THEN c.debtor_ids END AS co_debtors
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
    LEFT JOIN opt_out o ON o.phone = c.phone
    LEFT JOIN (
        SELECT c.debtor_id, COUNT(*) AS failed FROM contact_ledger c
        WHERE c.state IN ({failed})
        GROUP BY c.debtor_id
        HAVING COUNT(*) >= :flag_after
    ) f ON f.debtor_id = c.debtor_id
    WHERE {_RUN_ROWS}
) s
"""  # noqa: S608 - constants only


def create_reporting_schema(store: DunningStore) -> None:
    """Create the reporting tables when they do not exist (idempotent)."""
    ddl = resources.files("include.sql").joinpath("dunning_store/reporting.sql").read_text("utf-8")
    with store.engine.begin() as conn:
        for statement in split_sql(ddl):
            conn.exec_driver_sql(statement)
        _migrate_indexes(store.dialect, conn)


# Indexes earlier versions of reporting.sql created, dropped where they still exist.
_RETIRED_INDEXES = (("report_contact", "ix_report_contact_debtor"),)
_RUN_INDEX = "ix_report_contact_run"


def _migrate_indexes(dialect: str, conn: sa.Connection) -> None:
    """Drop the retired indexes, and give report_contact its per-run index unless it has the old
    primary key (whose prefix serves the same reads). Looked up first: no DDL when in place."""
    inspector = sa.inspect(conn)
    names = {ix["name"] for ix in inspector.get_indexes("report_contact")}
    for table, index in _RETIRED_INDEXES:
        if index in names:
            conn.exec_driver_sql(
                f"DROP INDEX {index} ON {table}" if dialect == "mysql" else f"DROP INDEX {index}"
            )
    if _RUN_INDEX not in names and not inspector.get_pk_constraint("report_contact")["constrained_columns"]:
        conn.exec_driver_sql(f"CREATE INDEX {_RUN_INDEX} ON report_contact (dag_id, run_id)")


def _lock_run(dialect: str, conn: sa.Connection, run: Mapping[str, str]) -> str | None:
    """Take this run's load lock for the transaction, so two loads of one run never interleave.

    report_contact declares no unique key: a second load of the run started before the first
    commits would otherwise not see the first's rows to delete them. PostgreSQL: a transaction
    advisory lock. MariaDB: a named lock, returned to be released after the commit. SQLite runs
    one writer at a time anyway.
    """
    digest = hashlib.sha256(f"report_contact\x1f{run['dag_id']}\x1f{run['run_id']}".encode()).digest()
    if dialect == "postgresql":
        conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(:key)"),
            {"key": int.from_bytes(digest[:8], "big", signed=True)},
        )
    elif dialect == "mysql":
        name = "dunning_report_" + digest.hex()[:40]
        got = conn.execute(
            sa.text("SELECT GET_LOCK(:name, :wait)"), {"name": name, "wait": _LOCK_WAIT_SECONDS}
        ).scalar()
        if got != 1:
            raise TimeoutError(
                f"report load of {run['dag_id']} / {run['run_id']}: another load of this run held the lock "
                f"{name} for more than {_LOCK_WAIT_SECONDS} s"
            )
        return name
    return None


_LOCK_WAIT_SECONDS = 600


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


def _answer_seconds_sql(dialect: str, column: str) -> str:
    """Return SQL for the seconds in an ``answered 12s`` reason (NULL for any other reason)."""
    if dialect == "postgresql":
        number = f"CAST(substring({column} from '^answered ([0-9]+)s') AS INTEGER)"
    elif dialect == "mysql":
        number = f"CAST(REGEXP_SUBSTR({column}, '[0-9]+') AS SIGNED)"
    else:  # SQLite: CAST takes the leading digits of '12s'
        number = f"CAST(SUBSTR({column}, 10) AS INTEGER)"
    return f"CASE WHEN {column} LIKE 'answered %' THEN {number} END"


def load_reporting(
    store: DunningStore,
    *,
    run_id: str,
    dag_id: str,
    payments: Iterable[tuple[str, date, Decimal | float | str]] | pd.DataFrame | None = None,
    holdout: Iterable[str] | None = None,
    flag_after_failed_contacts: int = 3,
    timings: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Load one run's reporting rows: contacts, summary and recovery (idempotent per run).

    Everything of the run is deleted and inserted again in one transaction, under a per-run lock
    (:func:`_lock_run`), so a reload after late receipts or new payments replaces the figures
    instead of adding to them, and a second load of the run waits for the first. The ledger and
    its parts are read once, into a temporary staging table of the run's rows; the contacts, the
    summary and the recovery are each filled from it by set-based statements (no per-row
    Python), so a run of a million contacts loads in seconds.

    :param store: the dunning store
    :param run_id: the Airflow run id
    :param dag_id: the DAG id (report rows are keyed by both)
    :param payments: ``(debtor_id, paid_on, amount)`` rows (or a frame with those columns); None
        when no payment data is available: recovery rows then have NULL paid_* and amounts
    :param holdout: debtor ids held out of contact, in addition to rows SUPPRESSED as ``holdout``
    :param flag_after_failed_contacts: a contact is ``flagged`` when its debtor has at least this
        many failed contacts in the ledger (the staff follow-up threshold)
    :param timings: filled with seconds per step (``load: ...`` keys)
    :return: counts: ``contacts``, ``summary_rows``, ``recovery_rows``, ``payments`` (bool)
    """
    lap = _Laps(timings)
    create_reporting_schema(store)
    dialect = store.dialect
    run = {"run_id": run_id, "dag_id": dag_id}
    with store.engine.connect() as conn:
        lock = None
        try:
            with conn.begin():
                lock = _lock_run(dialect, conn, run)
                counts = _load(store, conn, run, payments, holdout, flag_after_failed_contacts, lap)
        finally:
            if lock is not None:
                conn.execute(sa.text("SELECT RELEASE_LOCK(:name)"), {"name": lock})
                conn.commit()
    lap("load: commit")
    return counts


def _load(
    store: DunningStore,
    conn: sa.Connection,
    run: Mapping[str, str],
    payments: Any,
    holdout: Iterable[str] | None,
    flag_after: int,
    lap: _Laps,
) -> dict[str, Any]:
    """Replace the run's rows of the three reporting tables (in the caller's transaction)."""
    dialect = store.dialect
    _roomy_sorts(dialect, conn)
    for table in ("report_contact", "report_summary", "report_recovery"):
        conn.execute(
            sa.text(f"DELETE FROM {table} WHERE dag_id = :dag_id AND run_id = :run_id"),  # noqa: S608
            run,
        )
    lap("load: delete old rows")
    _drop_temps(dialect, conn)
    _stage_contacts(dialect, conn, run, flag_after)
    if holdout:
        _mark_holdout(conn, holdout)
    lap("load: staging")
    _fill_outcome_map(store, conn)
    lap("load: outcome keys")
    contacts = _insert_contacts(conn, run)
    lap("load: report_contact")
    summary_rows = _insert_summary(conn, run)
    lap("load: report_summary")
    if payments is not None:
        _load_payments(store, conn, payments)
        lap("load: payments")
    recovery_rows = _insert_recovery(dialect, conn, run, with_payments=payments is not None)
    _drop_temps(dialect, conn)
    lap("load: report_recovery")
    return {
        "contacts": contacts,
        "summary_rows": summary_rows,
        "recovery_rows": recovery_rows,
        "payments": payments is not None,
    }


class _Laps:
    """Add the seconds since the previous call to ``timings[step]`` (nothing without a dict)."""

    def __init__(self, timings: dict[str, float] | None) -> None:
        import time

        self._timings, self._clock, self._last = timings, time.perf_counter, time.perf_counter()

    def __call__(self, step: str) -> None:
        now = self._clock()
        if self._timings is not None:
            self._timings[step] = self._timings.get(step, 0.0) + now - self._last
        self._last = now


def refresh_recovery(
    store: DunningStore,
    *,
    dag_id: str,
    run_ids: Iterable[str],
    payments: Iterable[tuple[str, date, Decimal | float | str]] | pd.DataFrame,
) -> int:
    """Recompute ``report_recovery`` of runs already loaded, from newer payment data.

    A run's recovery is only known 30 days after it: the report task of each run calls this for
    the earlier runs of its DAG whose 30-day window is still open, so their figures fill in as
    payments arrive. The payments are loaded once for all the runs; one transaction. Each run's
    contacted and held-out rows are staged from ``report_contact`` (the co-debtors of its
    shared-number messages from the ledger) and go through the same recovery statements as a load.

    :param run_ids: runs of ``dag_id`` whose ``report_contact`` rows are loaded
    :param payments: ``(debtor_id, paid_on, amount)`` rows or a frame with those columns
    :return: recovery rows written
    """
    runs = sorted(set(run_ids))
    if not runs:
        return 0
    create_reporting_schema(store)
    dialect = store.dialect
    written = 0
    with store.engine.begin() as conn:
        _roomy_sorts(dialect, conn)
        _drop_temps(dialect, conn)
        _load_payments(store, conn, payments)
        for run_id in runs:
            run = {"dag_id": dag_id, "run_id": run_id}
            conn.execute(
                sa.text("DELETE FROM report_recovery WHERE dag_id = :dag_id AND run_id = :run_id"), run
            )
            _create_stage(conn)
            conn.execute(
                sa.text(
                    f"INSERT INTO {_STAGE_TABLE} (idempotency_key, debtor_id, stage, as_of, amount, state, "  # noqa: S608
                    "holdout, co_debtors) "
                    "SELECT rc.idempotency_key, rc.debtor_id, rc.stage, rc.as_of, rc.amount, rc.state, "
                    "rc.holdout, c.debtor_ids FROM report_contact rc LEFT JOIN contact_ledger c "
                    f"ON c.idempotency_key = rc.idempotency_key AND c.debtor_ids LIKE '%,%' AND {_RUN_ROWS} "
                    "WHERE rc.dag_id = :dag_id AND rc.run_id = :run_id "
                    f"AND (rc.state IN ({_SENT_SQL}) OR rc.holdout = 1)"
                ),
                run,
            )
            written += _insert_recovery(dialect, conn, run, with_payments=True)
            _drop_temps(dialect, conn, keep_payments=True)
        _drop_temps(dialect, conn)
    return written


# PostgreSQL's default work_mem (4 MB) sends the sorts and hashes of a million-contact run to disk.
_REPORT_WORK_MEM = "128MB"


def _roomy_sorts(dialect: str, conn: sa.Connection) -> None:
    """Give this transaction's sorts and hashes room in memory (PostgreSQL; ends with the transaction)."""
    if dialect == "postgresql":
        conn.exec_driver_sql(f"SET LOCAL work_mem = '{_REPORT_WORK_MEM}'")


def _drop_temp(dialect: str, conn: sa.Connection, table: str) -> None:
    """Drop a temporary table of this connection when it exists (left by a failed earlier load)."""
    if dialect == "mysql":
        conn.exec_driver_sql(f"DROP TEMPORARY TABLE IF EXISTS {table}")
    elif dialect == "sqlite":
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{table}")
    else:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS pg_temp.{table}")


def _drop_temps(dialect: str, conn: sa.Connection, *, keep_payments: bool = False) -> None:
    """Drop the load's temporary tables (MariaDB keeps them past a rollback: drop before use too)."""
    for table in (_STAGE_TABLE, _CODEBTOR_TABLE, _DEBTOR_TABLE, _PAID_TABLE):
        _drop_temp(dialect, conn, table)
    if not keep_payments:
        _drop_temp(dialect, conn, _PAYMENTS_TABLE)


def _create_stage(conn: sa.Connection) -> None:
    """Create the (empty) staging table: report_contact's columns, the outcome key and ``co_debtors``."""
    conn.exec_driver_sql(f"""
CREATE TEMPORARY TABLE {_STAGE_TABLE} (
    idempotency_key VARCHAR(64) NOT NULL, campaign VARCHAR(40), period VARCHAR(20), as_of DATE,
    debtor_id VARCHAR(40), stage VARCHAR(40), channel VARCHAR(10), attempt INTEGER, gateway VARCHAR(40),
    prefix VARCHAR(3), template VARCHAR(120), state VARCHAR(12), reason VARCHAR(200),
    error_code VARCHAR(20), stat VARCHAR(10), err VARCHAR(10), parts INTEGER, amount NUMERIC(14,2),
    answer_seconds INTEGER, opted_out INTEGER, flagged INTEGER, holdout INTEGER, planned_at TIMESTAMP NULL,
    submitted_at TIMESTAMP NULL, receipt_at TIMESTAMP NULL, final_at TIMESTAMP NULL, co_debtors TEXT,
    okey VARCHAR(500))""")


def _stage_contacts(dialect: str, conn: sa.Connection, run: Mapping[str, str], flag_after: int) -> None:
    """Read the run's ledger rows, with everything the reporting tables need, into the staging table."""
    _create_stage(conn)
    columns = ", ".join((*_CONTACT_COLUMNS, "co_debtors", "okey"))
    conn.execute(
        sa.text(f"INSERT INTO {_STAGE_TABLE} ({columns}) {_stage_sql(dialect)}"),
        {**run, "flag_after": flag_after},
    )


def _mark_holdout(conn: sa.Connection, holdout: Iterable[str]) -> None:
    ids = sorted(set(holdout))
    for start in range(0, len(ids), 900):
        conn.execute(
            sa.text(f"UPDATE {_STAGE_TABLE} SET holdout = 1 WHERE debtor_id IN :ids").bindparams(  # noqa: S608
                sa.bindparam("ids", expanding=True)
            ),
            {"ids": ids[start : start + 900]},
        )


def _fill_outcome_map(store: DunningStore, conn: sa.Connection) -> None:
    """Add the outcome of every combination the staged rows show to ``report_outcome_key``.

    The distinct (channel, state, reason, code, receipt stat, receipt err) of the run, computed
    by :func:`include.dunning.outcomes.from_ledger`, so SQL joins one column instead of
    re-implementing the map.
    """
    combos = conn.execute(
        sa.text(
            f"SELECT DISTINCT s.channel, s.state, {_K_REASON}, {_K_CODE}, {_K_STAT}, {_K_ERR} "  # noqa: S608
            f"FROM {_STAGE_TABLE} s"
        )
    ).all()
    if not combos:
        return
    conn.execute(
        store._insert_ignore("report_outcome_key", ("okey", "outcome"), ("okey",)),
        [
            {
                "okey": _outcome_key(channel, state, reason, code, stat, err),
                "outcome": outcomes.from_ledger(
                    state, reason or None, code or None, channel=channel, stat=stat or None, err=err or None
                ).value,
            }
            for channel, state, reason, code, stat, err in sorted(combos)
        ],
    )


def _insert_contacts(conn: sa.Connection, run: Mapping[str, str]) -> int:
    columns = ", ".join(_CONTACT_COLUMNS)
    staged = ", ".join(f"s.{c}" for c in _CONTACT_COLUMNS)
    sql = f"""
INSERT INTO report_contact (dag_id, run_id, {columns}, outcome)
SELECT :dag_id, :run_id, {staged}, m.outcome
FROM {_STAGE_TABLE} s JOIN report_outcome_key m ON m.okey = s.okey
"""  # noqa: S608 - constants only
    return conn.execute(sa.text(sql), run).rowcount or 0


def _sum_n(condition: str) -> str:
    return f"SUM(CASE WHEN {condition} THEN g.n ELSE 0 END)"


def _insert_summary(conn: sa.Connection, run: Mapping[str, str]) -> int:
    """Insert the run's summary rows: the staged rows counted per state, suppression reason and
    outcome key first (a handful of aggregates over the run's rows), then those cells summed into
    the report's columns."""
    sent = f"g.state IN ({_SENT_SQL})"
    reason_class = f"""CASE WHEN s.state = 'SUPPRESSED' THEN CASE
        WHEN s.reason LIKE 'opted_out%' THEN 'opted_out' WHEN s.reason LIKE 'frequency_cap%' THEN 'frequency_cap'
        WHEN s.reason LIKE 'deferral%' THEN 'deferral' WHEN s.reason = 'superseded' THEN 'superseded'
        WHEN s.reason = '{HOLDOUT_REASON}' THEN 'holdout' ELSE 'other' END END"""
    suppressed = "g.state = 'SUPPRESSED'"
    cell_keys = "s.stage, s.channel, s.gateway, s.prefix, s.template, s.state, s.okey"
    sql = f"""
INSERT INTO report_summary (
    dag_id, run_id, stage, channel, gateway, prefix, template, planned, suppressed,
    suppressed_opted_out, suppressed_frequency_cap, suppressed_deferral, suppressed_superseded,
    suppressed_holdout, suppressed_other, submitted, delivered, undelivered, expired, unknown,
    pending, failed, answered, arrival_rate, connect_rate, answer_seconds, opt_outs, flagged, amount)
SELECT :dag_id, :run_id, g.stage, g.channel, g.gateway, g.prefix, g.template, SUM(g.n), {_sum_n(suppressed)},
    {_sum_n("g.reason_class = 'opted_out'")}, {_sum_n("g.reason_class = 'frequency_cap'")},
    {_sum_n("g.reason_class = 'deferral'")}, {_sum_n("g.reason_class = 'superseded'")},
    {_sum_n("g.reason_class = 'holdout'")}, {_sum_n("g.reason_class = 'other'")},
    {_sum_n(sent)}, {_sum_n("g.state = 'DELIVERED'")}, {_sum_n("g.state = 'UNDELIVERED'")},
    {_sum_n("g.state = 'EXPIRED'")}, {_sum_n("g.state = 'UNKNOWN'")}, {_sum_n("g.state = 'SUBMITTED'")},
    {_sum_n("g.state = 'FAILED'")}, {_sum_n("m.outcome = 'answered'")},
    CASE WHEN g.channel = 'sms' AND {_sum_n(sent)} > 0
         THEN 1.0 * {_sum_n("g.state = 'DELIVERED'")} / {_sum_n(sent)} END,
    CASE WHEN g.channel = 'voice' AND {_sum_n(sent)} > 0
         THEN 1.0 * {_sum_n("m.outcome = 'answered'")} / {_sum_n(sent)} END,
    COALESCE(SUM(g.answer_seconds), 0), SUM(g.opted_out), SUM(g.flagged), SUM(g.amount)
FROM (
    SELECT {cell_keys}, {reason_class} AS reason_class, COUNT(*) AS n,
        SUM(s.answer_seconds) AS answer_seconds, SUM(s.opted_out) AS opted_out, SUM(s.flagged) AS flagged,
        SUM(s.amount) AS amount
    FROM {_STAGE_TABLE} s
    GROUP BY {cell_keys}, {reason_class}
) g
JOIN report_outcome_key m ON m.okey = g.okey
GROUP BY g.stage, g.channel, g.gateway, g.prefix, g.template
"""  # noqa: S608 - constants only
    return conn.execute(sa.text(sql), run).rowcount or 0


# -- recovery: payments against the contacted and the holdout debtors ---------------------------


def _payments_frame(payments: Any) -> pd.DataFrame:
    """Return the payments as a frame of strings (debtor_id, paid_on ISO date, amount); vectorised."""
    import pandas as pd

    if isinstance(payments, pd.DataFrame):
        missing = {"debtor_id", "paid_on", "amount"} - set(payments.columns)
        if missing:
            raise ValueError(f"payments: missing column(s) {', '.join(sorted(missing))}")
        frame = payments.loc[:, ["debtor_id", "paid_on", "amount"]].copy()
    else:
        frame = pd.DataFrame(list(payments), columns=["debtor_id", "paid_on", "amount"])
    frame = frame.dropna()
    frame["debtor_id"] = frame["debtor_id"].astype(str).str.strip()
    frame["paid_on"] = pd.to_datetime(frame["paid_on"]).dt.strftime("%Y-%m-%d")
    frame["amount"] = frame["amount"].astype(str)
    return frame


def _load_payments(store: DunningStore, conn: sa.Connection, payments: Any) -> int:
    """Load the payments into a temporary table of this connection (PostgreSQL: COPY)."""
    frame = _payments_frame(payments)
    _drop_temp(store.dialect, conn, _PAYMENTS_TABLE)
    conn.exec_driver_sql(
        f"CREATE TEMPORARY TABLE {_PAYMENTS_TABLE} "
        "(debtor_id VARCHAR(40) NOT NULL, paid_on DATE NOT NULL, amount NUMERIC(16,2) NOT NULL)"
    )
    if store.dialect == "postgresql":
        import io

        buffer = io.StringIO()
        frame.to_csv(buffer, header=False, index=False)
        raw = conn.connection.driver_connection
        with raw.cursor() as cur:  # type: ignore[union-attr]
            with cur.copy(
                f"COPY {_PAYMENTS_TABLE} (debtor_id, paid_on, amount) FROM STDIN WITH (FORMAT csv)"
            ) as copy:
                copy.write(buffer.getvalue())
        conn.exec_driver_sql(f"ANALYZE {_PAYMENTS_TABLE}")
    else:
        if not frame.empty:
            conn.execute(
                sa.text(f"INSERT INTO {_PAYMENTS_TABLE} (debtor_id, paid_on, amount) VALUES (:d, :p, :a)"),  # noqa: S608
                [{"d": d, "p": p, "a": a} for d, p, a in frame.itertuples(index=False)],
            )
        conn.exec_driver_sql(f"CREATE INDEX ix_{_PAYMENTS_TABLE} ON {_PAYMENTS_TABLE} (debtor_id)")
    return len(frame)


def _debtors_of(dialect: str, ids: str) -> tuple[str, str]:
    """Return (join clause, column) listing every debtor of a comma-separated list ``ids``.

    A message to a number shared by several debtors (a tax agent) names them all in ``debtor_ids``;
    each of them was reminded, so recovery credits each of them.
    """
    if dialect == "postgresql":
        return f"CROSS JOIN LATERAL unnest(string_to_array({ids}, ',')) AS x(debtor)", "TRIM(x.debtor)"
    if dialect == "mysql":
        doc = f"CONCAT('[\"', REPLACE({ids}, ',', '\",\"'), '\"]')"
        return (
            f"JOIN JSON_TABLE({doc}, '$[*]' COLUMNS (debtor VARCHAR(40) PATH '$')) AS x ON 1 = 1",
            "TRIM(x.debtor)",
        )
    doc = f"'[\"' || REPLACE({ids}, ',', '\",\"') || '\"]'"
    return f"JOIN json_each({doc}) AS x", "TRIM(x.value)"


def _days_between(dialect: str, later: str, earlier: str) -> str:
    if dialect == "postgresql":
        return f"({later} - {earlier})"
    if dialect == "mysql":
        return f"DATEDIFF({later}, {earlier})"
    return f"CAST(julianday({later}) - julianday({earlier}) AS INTEGER)"


_COHORT = f"CASE WHEN s.state IN ({_SENT_SQL}) THEN 'contacted' WHEN s.holdout = 1 THEN 'holdout' END"


def _insert_recovery(
    dialect: str, conn: sa.Connection, run: Mapping[str, str], *, with_payments: bool
) -> int:
    """Insert the run's recovery rows per stage and cohort (contacted / holdout) from the staged rows.

    Debtors are counted once per stage and cohort, every debtor of a shared-number message
    included; paid_* count those with a payment 0..N days after the contact's as-of date,
    ``amount_recovered`` sums their payments within the longest window.

    The debtors (one row per stage, cohort and debtor) go to a temporary table, so each
    statement reads each temporary table once (MariaDB cannot open one twice in a statement),
    and only small aggregates per stage and cohort are joined at the end: never the debtors of
    the run against their payments row by row in one plan that a misestimate could turn into a
    nested loop.
    """
    debtor_columns = "stage VARCHAR(40) NOT NULL, cohort VARCHAR(10) NOT NULL, debtor_id VARCHAR(40) NOT NULL, as_of DATE NOT NULL"
    join, debtor = _debtors_of(dialect, "s.co_debtors")
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {_CODEBTOR_TABLE} ({debtor_columns})")
    conn.execute(
        sa.text(
            f"INSERT INTO {_CODEBTOR_TABLE} (stage, cohort, debtor_id, as_of) "  # noqa: S608
            f"SELECT s.stage, {_COHORT}, {debtor}, s.as_of FROM {_STAGE_TABLE} s {join} "
            f"WHERE s.co_debtors IS NOT NULL AND {_COHORT} IS NOT NULL"
        )
    )
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {_DEBTOR_TABLE} ({debtor_columns})")
    conn.execute(
        sa.text(f"""
INSERT INTO {_DEBTOR_TABLE} (stage, cohort, debtor_id, as_of)
SELECT a.stage, a.cohort, a.debtor_id, MIN(a.as_of)
FROM (
    SELECT s.stage, {_COHORT} AS cohort, s.debtor_id, s.as_of FROM {_STAGE_TABLE} s WHERE {_COHORT} IS NOT NULL
    UNION ALL
    SELECT k.stage, k.cohort, k.debtor_id, k.as_of FROM {_CODEBTOR_TABLE} k
) a
GROUP BY a.stage, a.cohort, a.debtor_id""")  # noqa: S608 - constants only
    )
    if with_payments:
        days = _days_between(dialect, "t.paid_on", "d.as_of")
        windows = ", ".join(f"SUM(CASE WHEN p.first_day <= {w} THEN 1 ELSE 0 END)" for w in RECOVERY_WINDOWS)
        paid_columns = ", ".join(f"paid_{w}d" for w in RECOVERY_WINDOWS)
        conn.exec_driver_sql(
            f"CREATE TEMPORARY TABLE {_PAID_TABLE} (stage VARCHAR(40) NOT NULL, cohort VARCHAR(10) NOT NULL, "
            + "".join(f"paid_{w}d INTEGER NOT NULL, " for w in RECOVERY_WINDOWS)
            + "paid NUMERIC(16,2))"
        )
        conn.execute(
            sa.text(f"""
INSERT INTO {_PAID_TABLE} (stage, cohort, {paid_columns}, paid)
SELECT p.stage, p.cohort, {windows}, SUM(p.paid)
FROM (
    SELECT d.stage, d.cohort, d.debtor_id, MIN({days}) AS first_day, SUM(t.amount) AS paid
    FROM {_DEBTOR_TABLE} d JOIN {_PAYMENTS_TABLE} t ON t.debtor_id = d.debtor_id
    WHERE {days} >= 0 AND {days} <= {max(RECOVERY_WINDOWS)}
    GROUP BY d.stage, d.cohort, d.debtor_id
) p
GROUP BY p.stage, p.cohort""")  # noqa: S608 - constants only
        )
        figures = "".join(f"COALESCE(pc.paid_{w}d, 0), " for w in RECOVERY_WINDOWS) + "COALESCE(pc.paid, 0)"
        paid_join = f"LEFT JOIN {_PAID_TABLE} pc ON pc.stage = n.stage AND pc.cohort = n.cohort"
    else:
        # Typed NULLs: PostgreSQL would read a bare NULL in the select list as text.
        figures = "".join("CASE WHEN 1 = 0 THEN 0 END, " for _ in RECOVERY_WINDOWS)
        figures += "CASE WHEN 1 = 0 THEN o.owed END"
        paid_join = ""
    sql = f"""
INSERT INTO report_recovery (dag_id, run_id, stage, cohort, debtors, amount_owed, paid_3d, paid_7d,
    paid_30d, amount_recovered)
SELECT :dag_id, :run_id, n.stage, n.cohort, n.debtors, o.owed, {figures}
FROM (SELECT d.stage, d.cohort, COUNT(*) AS debtors FROM {_DEBTOR_TABLE} d GROUP BY d.stage, d.cohort) n
JOIN (
    SELECT s.stage, {_COHORT} AS cohort, SUM(s.amount) AS owed FROM {_STAGE_TABLE} s
    WHERE {_COHORT} IS NOT NULL GROUP BY s.stage, {_COHORT}
) o ON o.stage = n.stage AND o.cohort = n.cohort
{paid_join}
"""  # noqa: S608 - constants only
    return conn.execute(sa.text(sql), run).rowcount or 0


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


def staff_followup(
    store: DunningStore, *, failed_contacts_at_least: int = 3, campaigns: Iterable[str] | None = None
) -> pd.DataFrame:
    """Return the debtors with at least N failed contacts, with what was tried, for staff to call.

    A failed contact is a ledger row UNDELIVERED, EXPIRED or FAILED (``outcomes.FAILED_CONTACT``:
    bad number, barred, phone off, busy, no answer, refused, device failure). UNKNOWN rows are not
    counted: the message may well have arrived.

    One row per debtor, columns as ``FOLLOWUP_COLUMNS``. ``phone`` is the debtor's latest number in
    full, because staff have to dial it; in ``tried`` the numbers used are masked (138****8000), as
    everywhere else, so the list names a number once and the history does not spread it further.

    :param store: the dunning store
    :param failed_contacts_at_least: the threshold N (the ladder's ``flag_after_failed_contacts``)
    :param campaigns: only these campaigns (e.g. those of one DAG); None: all
    """
    import pandas as pd

    states = outcomes.FAILED_CONTACT_STATES
    attempted = (*SENT_STATES, FAILED)
    only = None if campaigns is None else sorted(set(campaigns))
    if only == []:
        return pd.DataFrame(columns=list(FOLLOWUP_COLUMNS))
    in_campaigns = "" if only is None else " AND campaign IN :campaigns"
    binds = [sa.bindparam("attempted", expanding=True), sa.bindparam("failed", expanding=True)]
    params: dict[str, Any] = {
        "attempted": list(attempted),
        "failed": list(states),
        "n": failed_contacts_at_least,
    }
    if only is not None:
        binds.append(sa.bindparam("campaigns", expanding=True))
        params["campaigns"] = only
    ledger_campaign = in_campaigns.replace(" campaign", " c.campaign")
    sql = f"""
SELECT c.debtor_id, c.debtor_name, c.phone, c.campaign, c.stage, c.channel, c.state, c.reason,
    c.error_code, c.amount, COALESCE(c.submitted_at, c.final_at, c.planned_at),
    (SELECT MAX(p.stat) FROM message_part p WHERE p.idempotency_key = c.idempotency_key
     AND p.state <> 'DELIVERED'),
    (SELECT MAX(p.err) FROM message_part p WHERE p.idempotency_key = c.idempotency_key
     AND p.state <> 'DELIVERED')
FROM contact_ledger c WHERE c.state IN :attempted{ledger_campaign} AND c.debtor_id IN (
    SELECT debtor_id FROM contact_ledger WHERE state IN :failed{in_campaigns} GROUP BY debtor_id
    HAVING COUNT(*) >= :n)
ORDER BY c.debtor_id, 11
"""  # noqa: S608 - constants and bind parameters only
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.text(sql).bindparams(*binds),
            params,
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
    if dialect == "postgresql":  # formatted in Python: to_char on every row costs more than the grouping
        return f"date_trunc('minute', {column})"
    if dialect == "mysql":
        return f"DATE_FORMAT({column}, '%Y-%m-%d %H:%i')"
    return f"strftime('%Y-%m-%d %H:%M', {column})"


def _bucket(value: Any) -> str:
    """Return a minute bucket as ``YYYY-MM-DD HH:MM`` (a datetime from PostgreSQL, text elsewhere)."""
    return value.strftime("%Y-%m-%d %H:%M") if isinstance(value, datetime) else str(value)


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
        # The breakdowns by gateway and by prefix are summed from the (gateway, prefix, outcome)
        # cells, a few hundred rows; PostgreSQL reads the contacts once for cells and timelines.
        if store.dialect == "postgresql":
            sent_minute, receipt_minute = (
                _minute("postgresql", "submitted_at"),
                _minute("postgresql", "receipt_at"),
            )
            cells, sent, received = [], [], []
            for gateway, prefix, outcome, s_min, r_min, n, g_cell, g_sent in q(
                f"SELECT gateway, prefix, outcome, {sent_minute}, {receipt_minute}, COUNT(*), "  # noqa: S608
                f"GROUPING(gateway, prefix, outcome), GROUPING({sent_minute}) FROM report_contact {where} "
                f"GROUP BY GROUPING SETS ((gateway, prefix, outcome), ({sent_minute}), ({receipt_minute}))"
            ):
                if g_cell == 0:
                    cells.append((gateway, prefix, outcome, n))
                elif g_sent == 0:
                    if s_min is not None:
                        sent.append((s_min, n))
                elif r_min is not None:
                    received.append((r_min, n))
        else:
            cells = q(
                f"SELECT gateway, prefix, outcome, COUNT(*) FROM report_contact {where} "  # noqa: S608
                "GROUP BY gateway, prefix, outcome"
            )
            sent = q(
                f"SELECT {_minute(store.dialect, 'submitted_at')}, COUNT(*) FROM report_contact {where} "  # noqa: S608
                f"AND submitted_at IS NOT NULL GROUP BY 1"
            )
            received = q(
                f"SELECT {_minute(store.dialect, 'receipt_at')}, COUNT(*) FROM report_contact {where} "  # noqa: S608
                f"AND receipt_at IS NOT NULL GROUP BY 1"
            )
        gateway_counts: Counter[tuple[str, str]] = Counter()
        prefix_counts: Counter[tuple[str, str]] = Counter()
        for gateway, prefix, outcome, n in cells:
            gateway_counts[(gateway, outcome)] += int(n)
            prefix_counts[(prefix, outcome)] += int(n)
        by_gateway = [(g, o, n) for (g, o), n in sorted(gateway_counts.items())]
        by_prefix = [(p, o, n) for (p, o), n in sorted(prefix_counts.items())]
    return {
        "summary_columns": summary_columns,
        "summary": summary,
        "recovery_columns": recovery_columns,
        "recovery": recovery,
        "by_gateway": by_gateway,
        "by_prefix": by_prefix,
        "sent": [(_bucket(b), int(n)) for b, n in sent],
        "received": [(_bucket(b), int(n)) for b, n in received],
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
