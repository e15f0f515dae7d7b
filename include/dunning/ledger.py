"""The contact ledger: one row per intended contact, the record that makes sending idempotent.

Every contact the planner decides on is written once under a deterministic idempotency key
(campaign, period, debtor, stage, channel, attempt). Sending moves rows through
``PLANNED -> CLAIMED -> SUBMITTED -> DELIVERED | UNDELIVERED | EXPIRED | UNKNOWN``; rows that are
not sent end as ``SUPPRESSED`` (with a reason) or ``FAILED`` (permanent, with a code).

Rules that keep "nothing lost, nothing sent twice" true under Airflow retries:

- A row with a recorded submit response (SUBMITTED or later) is never sent again.
- Rows are claimed a window at a time, just before they are sent. A CLAIMED row without a
  response is the only uncertain kind (the worker died between claim and record); a retry
  resends it, so duplicates are bounded by the window and counted.
- A transient rejection puts the row back to PLANNED with its error code, to be resent by the
  task's next try.
- On PostgreSQL the send task writes claims and answers to a send log (``send_claim``,
  ``send_response``) instead of updating the ledger row per message, and settles the log into
  the ledger in bulk (``settle_sends``) as it goes, when it ends and when a retry starts: a row
  with a logged answer counts as answered, and the ledger ends exactly as above.

The store works on any SQLAlchemy engine: SQLite (embedded default), PostgreSQL, MariaDB.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from importlib import resources
from typing import Any

import sqlalchemy as sa

log = logging.getLogger(__name__)

PLANNED = "PLANNED"
CLAIMED = "CLAIMED"
SUBMITTED = "SUBMITTED"
DELIVERED = "DELIVERED"
UNDELIVERED = "UNDELIVERED"
EXPIRED = "EXPIRED"
UNKNOWN = "UNKNOWN"
SUPPRESSED = "SUPPRESSED"
FAILED = "FAILED"

SENDABLE = (PLANNED, CLAIMED)
FINAL = (DELIVERED, UNDELIVERED, EXPIRED, UNKNOWN, SUPPRESSED, FAILED)

# Receipt ``stat`` values (SMPP 3.4 appendix B) and the part state each one means.
RECEIPT_STAT_STATE = {
    "DELIVRD": DELIVERED,
    "UNDELIV": UNDELIVERED,
    "REJECTD": UNDELIVERED,
    "DELETED": UNDELIVERED,
    "EXPIRED": EXPIRED,
    "UNKNOWN": UNKNOWN,
}

# Voice call outcomes (hooks.gsm_modem.CallOutcome) and the row state each one means.
CALL_ANSWERED = "answered"
CALL_UNDELIVERED = ("busy", "no_answer", "no_carrier", "rejected")
CALL_FAILED = "failed"

# What a new plan of a still-PLANNED row brings up to date (amounts, surcharge, text, batchable day).
REFRESHED_COLUMNS = (
    "as_of",
    "debtor_id",
    "debtor_ids",
    "debtor_name",
    "phone",
    "template",
    "message_text",
    "parts",
    "amount",
    "surcharge",
    "gateway",
    "state",
    "reason",
)

# Rows a new plan may still change: never sent. SUPPRESSED rows are re-evaluated by every plan
# of their period (a frequency cap that has passed, a deferral that ended), so none is lost.
REPLANNABLE = (PLANNED, SUPPRESSED)

LEDGER_COLUMNS = (
    "idempotency_key",
    "campaign",
    "period",
    "as_of",
    "debtor_id",
    "debtor_ids",
    "debtor_name",
    "stage",
    "channel",
    "attempt",
    "phone",
    "template",
    "message_text",
    "parts",
    "amount",
    "surcharge",
    "gateway",
    "state",
    "reason",
    "planned_run_id",
    "planned_at",
)


# The send log's statements (PostgreSQL, psycopg parameters): see DunningStore.log_claim,
# log_responses and settle_sends.
_LOG_CLAIM_PG = (
    "INSERT INTO send_claim (claim_id, batch_id, run_id, gateway, claimed_at, claimed_keys) "
    "VALUES (%(claim_id)s, %(batch_id)s, %(run_id)s, %(gateway)s, %(now)s, %(keys)s)"
)
_LOG_RESPONSES_PG = (
    "INSERT INTO send_response (claim_id, idempotency_key, outcome, message_ids, error_code, reason, "
    "logged_at) SELECT r.*, %(now)s FROM unnest(%(claims)s::text[], %(keys)s::text[], %(states)s::text[], "
    "%(ids)s::text[], %(codes)s::text[], %(reasons)s::text[]) AS r"
)
_LOG_RESPONSES_TEXT_PG = (
    "INSERT INTO send_response (claim_id, idempotency_key, outcome, message_ids, error_code, reason, "
    "logged_at) SELECT f[1], f[2], f[3], CASE WHEN f[3] = 'SUBMITTED' THEN f[4] END, "
    "CASE WHEN f[3] <> 'SUBMITTED' THEN f[5] END, CASE WHEN f[3] <> 'SUBMITTED' THEN f[6] END, %(now)s "
    "FROM (SELECT string_to_array(r, E'\\x1f') AS f "
    "FROM unnest(string_to_array(%(rows)s, E'\\x1e')) AS r) AS t"
)
# One statement settles a set of claims: it takes their rows out of the log, writes the
# accepted parts to message_part, and updates each claimed ledger row once. A row claimed more
# than once in the set counts every claim in send_tries; an accepted answer wins over others.
_SETTLE_SENDS_PG = f"""
WITH c AS (
    DELETE FROM send_claim WHERE claim_id = ANY(%(ids)s::text[])
    RETURNING claim_id, run_id, gateway, claimed_at, claimed_keys
), ck AS (
    SELECT k.key, c.claim_id, c.run_id, c.gateway, c.claimed_at
    FROM c CROSS JOIN LATERAL unnest(string_to_array(c.claimed_keys, ',')) AS k(key)
), r AS (
    DELETE FROM send_response WHERE claim_id = ANY(%(ids)s::text[])
    RETURNING claim_id, idempotency_key, outcome, message_ids, error_code, reason, logged_at
), parts AS (
    INSERT INTO message_part (gateway, message_id, idempotency_key, part_no, state)
    SELECT ck.gateway, m.mid, r.idempotency_key, m.n, '{SUBMITTED}'
    FROM r JOIN ck ON ck.claim_id = r.claim_id AND ck.key = r.idempotency_key
    CROSS JOIN LATERAL unnest(string_to_array(r.message_ids, ',')) WITH ORDINALITY AS m(mid, n)
    WHERE r.outcome = '{SUBMITTED}'
    ON CONFLICT (gateway, message_id) DO NOTHING
), tries AS (
    SELECT key, COUNT(*) AS n, (array_agg(run_id ORDER BY claimed_at DESC))[1] AS run_id,
           MAX(claimed_at) AS claimed_at
    FROM ck GROUP BY key
), answer AS (
    SELECT DISTINCT ON (idempotency_key) idempotency_key AS key, outcome, message_ids, error_code,
           reason, logged_at
    FROM r ORDER BY idempotency_key, (outcome = '{SUBMITTED}') DESC, logged_at DESC
)
UPDATE contact_ledger AS l SET
    state = COALESCE(a.outcome, '{CLAIMED}'),
    send_tries = l.send_tries + t.n,
    sent_run_id = t.run_id,
    claimed_at = t.claimed_at,
    message_ids = CASE WHEN a.outcome = '{SUBMITTED}' THEN a.message_ids ELSE l.message_ids END,
    submitted_at = CASE WHEN a.outcome = '{SUBMITTED}' THEN a.logged_at ELSE l.submitted_at END,
    error_code = CASE WHEN a.outcome IS NULL THEN l.error_code ELSE a.error_code END,
    reason = CASE WHEN a.outcome IN ('{FAILED}', '{PLANNED}') THEN a.reason ELSE l.reason END,
    final_at = CASE WHEN a.outcome = '{FAILED}' THEN a.logged_at
                    WHEN a.outcome = '{PLANNED}' THEN NULL ELSE l.final_at END
FROM tries AS t LEFT JOIN answer AS a ON a.key = t.key
WHERE l.idempotency_key = t.key AND l.state IN ('{PLANNED}', '{CLAIMED}')
"""  # noqa: S608 - only this module's state constants are formatted in


def idempotency_key(
    campaign: str, period: str, debtor_id: str, stage: str, channel: str, attempt: int
) -> str:
    """Return the deterministic key of one intended contact.

    :param campaign: campaign name, e.g. ``tax_payment``
    :param period: the campaign period the contact belongs to, e.g. the tax period ``2026-10``
    :param debtor_id: the debtor's identifier in the source system
    :param stage: ladder stage
    :param channel: ``sms`` or ``voice``
    :param attempt: attempt number within the stage (1-based)
    """
    raw = "|".join((campaign, period, debtor_id, stage, channel, str(attempt)))
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:40]


def utcnow() -> datetime:
    """Return the current UTC time as a naive datetime (how the store keeps timestamps)."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class UpsertCounts:
    """What ``upsert_planned`` wrote: rows inserted, unsent rows refreshed, and by state."""

    new: int = 0
    refreshed: int = 0
    planned: int = 0
    suppressed: int = 0

    def __add__(self, other: UpsertCounts) -> UpsertCounts:
        return UpsertCounts(
            self.new + other.new,
            self.refreshed + other.refreshed,
            self.planned + other.planned,
            self.suppressed + other.suppressed,
        )


@dataclass(frozen=True)
class LedgerRow:
    """A ledger row as the send step needs it."""

    idempotency_key: str
    debtor_id: str
    phone: str
    message_text: str
    parts: int
    state: str
    send_tries: int


@dataclass(frozen=True)
class SubmitOutcome:
    """What the gateway answered for one ledger row.

    :param key: the row's idempotency key
    :param message_ids: normalised message id of each part, in order (empty when rejected)
    :param error_code: the gateway's error code when rejected, e.g. ``0x0000000B``
    :param error: human-readable reason when rejected
    :param permanent: a rejection that a resend cannot fix
    """

    key: str
    message_ids: Sequence[str]
    error_code: str | None = None
    error: str | None = None
    permanent: bool = False

    @property
    def accepted(self) -> bool:
        return bool(self.message_ids) and self.error_code is None


@dataclass(frozen=True)
class Receipt:
    """A delivery receipt reduced to what the ledger needs."""

    message_id: str
    stat: str
    err: str | None = None


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _money(value: Decimal | None) -> str | None:
    # Bound as text: sqlite3 cannot bind Decimal, and text keeps the exact cents everywhere.
    return None if value is None else str(value)


class DunningStore:
    """The dunning store: contact ledger, message parts, receipts, quarantine, opt-outs.

    :param engine: a SQLAlchemy engine (or a URL string)
    """

    def __init__(self, engine: sa.Engine | str) -> None:
        self.engine = sa.create_engine(engine) if isinstance(engine, str) else engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    # -- schema ---------------------------------------------------------------------------

    def create_schema(self) -> None:
        """Create the store's tables when they do not exist (idempotent)."""
        ddl = resources.files("include.sql").joinpath("dunning_store/schema.sql").read_text("utf-8")
        with self.engine.begin() as conn:
            for statement in split_sql(ddl):
                conn.exec_driver_sql(statement)
            if self.dialect == "postgresql":
                self._tune_storage_pg(conn)

    @staticmethod
    def _tune_storage_pg(conn: sa.Connection) -> None:
        """Set what the portable DDL cannot say: PostgreSQL storage parameters (once, idempotent).

        A ``message_part`` row is written at submit and updated once by its receipt. Keeping half
        of each page free lets that update stay on its page as a HOT update, without new entries
        in the table's two indexes, which is most of the cost of applying receipts. The setting
        applies to pages written from then on.
        """
        options = conn.exec_driver_sql(
            "SELECT reloptions FROM pg_class WHERE oid = CAST('message_part' AS regclass)"
        ).scalar_one()
        if "fillfactor=50" not in (options or []):
            conn.exec_driver_sql("ALTER TABLE message_part SET (fillfactor = 50)")

    def _insert_ignore(self, table: str, columns: Sequence[str], conflict: Sequence[str]) -> sa.TextClause:
        cols = ", ".join(columns)
        binds = ", ".join(f":{c}" for c in columns)
        if self.dialect == "mysql":
            # Table and column names come from this module's constants, never from input.
            return sa.text(f"INSERT IGNORE INTO {table} ({cols}) VALUES ({binds})")  # noqa: S608
        return sa.text(
            f"INSERT INTO {table} ({cols}) VALUES ({binds}) ON CONFLICT ({', '.join(conflict)}) DO NOTHING"  # noqa: S608
        )

    # -- plan -----------------------------------------------------------------------------

    def _upsert_refresh(self) -> sa.TextClause:
        """Return an INSERT that refreshes a conflicting row only while it is still PLANNED."""
        cols = ", ".join(LEDGER_COLUMNS)
        binds = ", ".join(f":{c}" for c in LEDGER_COLUMNS)
        if self.dialect == "mysql":
            # MariaDB applies the assignments left to right: ``state`` must be the last one changed.
            ordered = [c for c in REFRESHED_COLUMNS if c != "state"] + ["state"]
            sets = ", ".join(
                f"{c} = IF(state IN ('PLANNED', 'SUPPRESSED'), VALUES({c}), {c})" for c in ordered
            )
            return sa.text(
                f"INSERT INTO contact_ledger ({cols}) VALUES ({binds}) ON DUPLICATE KEY UPDATE {sets}"  # noqa: S608
            )
        sets = ", ".join(f"{c} = excluded.{c}" for c in REFRESHED_COLUMNS)
        return sa.text(
            f"INSERT INTO contact_ledger ({cols}) VALUES ({binds}) ON CONFLICT (idempotency_key) "  # noqa: S608
            f"DO UPDATE SET {sets} WHERE contact_ledger.state IN ('PLANNED', 'SUPPRESSED')"
        )

    def upsert_planned(
        self, rows: Iterable[Mapping[str, Any]], *, chunk_size: int | None = None
    ) -> UpsertCounts:
        """Write planned (or suppressed) contacts: new keys are inserted, unsent ones refreshed.

        A row already claimed, sent or settled is never touched: a retry or a second run of
        the same period cannot resend it. A row planned or suppressed earlier and never sent
        gets today's decision, amounts, surcharge and text, so it is sent by today's batches
        (or stays suppressed with today's reason) instead of being lost. All rows are written
        in one transaction, a chunk at a time (memory stays bounded for any number of rows).
        PostgreSQL COPYs a chunk of new keys straight into the ledger, and loads any other chunk
        with COPY into a temporary table and upserts it in one statement (see
        ``_upsert_planned_pg``); SQLite and MariaDB run the upsert for each row of a chunk
        (executemany).

        :param rows: mappings with the ledger columns (see ``LEDGER_COLUMNS``)
        :param chunk_size: rows per chunk (default 50,000 on PostgreSQL, 5,000 elsewhere)
        :return: how many rows were new and how many refreshed
        """
        if self.dialect == "postgresql":
            return self._upsert_planned_pg(rows, chunk_size or 50_000)
        chunk_size = chunk_size or 5000
        stmt = self._upsert_refresh()
        counts = UpsertCounts()
        batch: list[dict[str, Any]] = []
        with self.engine.begin() as conn:
            for row in rows:
                params = {c: row.get(c) for c in LEDGER_COLUMNS}
                params["amount"] = _money(params["amount"])
                params["surcharge"] = _money(params["surcharge"])
                batch.append(params)
                if len(batch) >= chunk_size:
                    counts += self._write_counted(conn, stmt, batch)
                    batch = []
            if batch:
                counts += self._write_counted(conn, stmt, batch)
        return counts

    @staticmethod
    def _write_counted(conn: sa.Connection, stmt: sa.TextClause, batch: list[dict[str, Any]]) -> UpsertCounts:
        keys = {b["idempotency_key"] for b in batch}
        existing = dict(
            conn.execute(
                sa.text(
                    "SELECT idempotency_key, state FROM contact_ledger WHERE idempotency_key IN :keys"
                ).bindparams(sa.bindparam("keys", expanding=True)),
                {"keys": list(keys)},
            ).all()
        )
        conn.execute(stmt, batch)
        written = {
            b["idempotency_key"]: b["state"]
            for b in batch
            if b["idempotency_key"] not in existing or existing[b["idempotency_key"]] in REPLANNABLE
        }
        return UpsertCounts(
            new=len(keys) - len(existing),
            refreshed=sum(1 for state in existing.values() if state in REPLANNABLE),
            planned=sum(1 for state in written.values() if state == PLANNED),
            suppressed=sum(1 for state in written.values() if state == SUPPRESSED),
        )

    def _upsert_planned_pg(self, rows: Iterable[Mapping[str, Any]], chunk_size: int) -> UpsertCounts:
        """PostgreSQL ``upsert_planned``: COPY new chunks straight into the ledger, upsert the others.

        A chunk none of whose sampled keys the ledger holds (the first plan of a period: all of
        them) is loaded with a plain COPY into ``contact_ledger``: the server fills whole heap
        pages, the client formats while the server inserts, and there is no staging table and no
        ``ON CONFLICT`` probe per row. That COPY runs in a savepoint; when a key is there after
        all (missed by the sample, or inserted meanwhile by another transaction) it fails on the
        primary key, and the chunk takes the staged upsert instead (``_copy_upsert_pg``), as does
        every chunk whose sample finds a key. The upsert waits for such a transaction and
        refreshes or keeps each row as the rules say, so both ways write the same rows.

        A key given twice within a chunk is written once, as the per-row path leaves it: the later
        row wins while the earlier one is still replannable.
        """
        key_at, state_at = LEDGER_COLUMNS.index("idempotency_key"), LEDGER_COLUMNS.index("state")
        money_at = (LEDGER_COLUMNS.index("amount"), LEDGER_COLUMNS.index("surcharge"))
        counts = UpsertCounts()
        with self.engine.begin() as conn:
            staged = False
            # Chunks of input rows, as the per-row path cuts them, so the counts agree on every engine.
            chunk: dict[Any, list[Any]] = {}
            taken = 0
            for row in rows:
                values = list(map(row.get, LEDGER_COLUMNS))
                for at in money_at:
                    values[at] = _money(values[at])
                kept = chunk.get(values[key_at])
                if kept is None or kept[state_at] in REPLANNABLE:
                    chunk[values[key_at]] = values
                taken += 1
                if taken >= chunk_size:
                    written, staged = self._write_chunk_pg(conn, chunk, staged)
                    counts += written
                    chunk, taken = {}, 0
            if chunk:
                counts += self._write_chunk_pg(conn, chunk, staged)[0]
        return counts

    @classmethod
    def _write_chunk_pg(
        cls, conn: sa.Connection, chunk: Mapping[Any, Sequence[Any]], staged: bool
    ) -> tuple[UpsertCounts, bool]:
        """Write one deduplicated chunk (key -> values); return its counts and whether ``tmp_plan`` exists."""
        import psycopg

        rows = list(chunk.values())
        if not cls._holds_any_key_pg(conn, list(chunk)):
            try:
                with conn.begin_nested():
                    return cls._copy_new_pg(conn, rows), staged
            except sa.exc.IntegrityError as exc:
                if not isinstance(exc.orig, psycopg.errors.UniqueViolation):
                    raise
                log.info("%d planned rows: a key is in the ledger already; upserting them instead", len(rows))
        if not staged:
            cols = ", ".join(LEDGER_COLUMNS)
            conn.exec_driver_sql(
                f"CREATE TEMPORARY TABLE tmp_plan ON COMMIT DROP AS SELECT {cols} FROM contact_ledger WITH NO DATA"  # noqa: S608
            )
        return cls._copy_upsert_pg(conn, rows), True

    @staticmethod
    def _holds_any_key_pg(conn: sa.Connection, keys: Sequence[Any], probes: int = 256) -> bool:
        """Tell whether the ledger holds any of ``probes`` keys taken evenly across ``keys``.

        A hint only, a few index lookups: a chunk whose sample is all new is COPYed straight in
        (a key missed here fails that COPY, which then falls back to the upsert). Checking every
        key would cost as much as the upsert's own probe, and for tens of thousands of keys the
        planner turns an ``= ANY`` list into a scan of the whole ledger.
        """
        step = max(1, len(keys) // probes)
        sample = [None if key is None else str(key) for key in keys[::step]]
        # Binary array parameter: no per-element quoting on either side.
        return conn.exec_driver_sql(
            "SELECT EXISTS (SELECT 1 FROM contact_ledger WHERE idempotency_key = ANY(%b::text[]))",
            (sample,),
        ).scalar_one()

    @staticmethod
    def _copy_rows_pg(conn: sa.Connection, table: str, rows: Iterable[Sequence[Any]]) -> None:
        """COPY rows of ``LEDGER_COLUMNS`` values into ``table``; errors are raised as SQLAlchemy's.

        Text format: the server parses each value as a bound string would be, so dates, amounts
        and ids given as text or numbers load the same as through the per-row path.
        """
        import psycopg

        # The table name and columns come from this module, never from input.
        statement = f"COPY {table} ({', '.join(LEDGER_COLUMNS)}) FROM STDIN"
        try:
            with conn.connection.driver_connection.cursor() as cursor:
                with cursor.copy(statement) as copy:
                    for values in rows:
                        copy.write_row(values)
        except psycopg.Error as exc:
            raise sa.exc.DBAPIError.instance(
                statement, None, exc, psycopg.Error, dialect=conn.dialect
            ) from exc

    @classmethod
    def _copy_new_pg(cls, conn: sa.Connection, rows: Sequence[Sequence[Any]]) -> UpsertCounts:
        """COPY rows whose keys the ledger does not hold straight into ``contact_ledger``; count them."""
        cls._copy_rows_pg(conn, "contact_ledger", rows)
        state_at = LEDGER_COLUMNS.index("state")
        return UpsertCounts(
            new=len(rows),
            planned=sum(1 for values in rows if values[state_at] == PLANNED),
            suppressed=sum(1 for values in rows if values[state_at] == SUPPRESSED),
        )

    @classmethod
    def _copy_upsert_pg(cls, conn: sa.Connection, rows: Iterable[Sequence[Any]]) -> UpsertCounts:
        """Load rows into ``tmp_plan`` with COPY and upsert them into the ledger in one statement.

        New and refreshed rows are told apart by ``xmax`` of the written row version (0 when it
        was inserted, the locking transaction when ``ON CONFLICT DO UPDATE`` refreshed it).
        """
        cols = ", ".join(LEDGER_COLUMNS)
        sets = ", ".join(f"{c} = excluded.{c}" for c in REFRESHED_COLUMNS)
        replannable = ", ".join(f"'{s}'" for s in REPLANNABLE)
        # Column names and states come from this module's constants, never from input.
        upsert = (
            f"WITH w AS (INSERT INTO contact_ledger ({cols}) SELECT {cols} FROM tmp_plan "  # noqa: S608
            f"ON CONFLICT (idempotency_key) DO UPDATE SET {sets} "
            f"WHERE contact_ledger.state IN ({replannable}) RETURNING xmax = 0 AS inserted, state) "
            "SELECT COUNT(*) FILTER (WHERE inserted), COUNT(*) FILTER (WHERE NOT inserted), "
            f"COUNT(*) FILTER (WHERE state = '{PLANNED}'), COUNT(*) FILTER (WHERE state = '{SUPPRESSED}') "
            "FROM w"
        )
        conn.exec_driver_sql("TRUNCATE tmp_plan")
        cls._copy_rows_pg(conn, "tmp_plan", rows)
        new, refreshed, planned, suppressed = conn.exec_driver_sql(upsert).one()
        return UpsertCounts(new=new, refreshed=refreshed, planned=planned, suppressed=suppressed)

    def supersede_stale(self, campaign: str, as_of: date) -> int:
        """Suppress rows planned on an earlier day that today's plan did not refresh.

        Call after ``upsert_planned``: a still-PLANNED row with an older as-of date is one the
        debtor no longer qualifies for (paid, deferred, or a new period's key replaced it).
        """
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.text(
                    "UPDATE contact_ledger SET state = :suppressed, reason = 'superseded', final_at = :now "
                    "WHERE campaign = :campaign AND state = :planned AND as_of < :as_of"
                ),
                {
                    "suppressed": SUPPRESSED,
                    "now": utcnow(),
                    "campaign": campaign,
                    "planned": PLANNED,
                    "as_of": as_of,
                },
            )
        return result.rowcount or 0

    def assign_batches(
        self,
        campaign: str,
        as_of: date,
        run_id: str,
        *,
        batch_size: int = 500,
        max_batches: int = 1000,
        priorities: Mapping[str, str] | None = None,
    ) -> list[str]:
        """Split today's sendable rows of a campaign into send batches per channel, gateway and priority.

        Rows still PLANNED or CLAIMED from an earlier run of the same day are included, so a
        failed run's leftovers are sent by the next one. The batch size grows when needed so
        that there are never more than ``max_batches`` batches (Airflow caps a mapping).
        Urgent batches come first and carry a ``u`` before their number
        (``<campaign>:<channel>:<gateway>:<run>:u0000``, see ``include.dunning.routing.BatchId``).

        :param priorities: stage -> ``normal`` | ``urgent`` (the ladder's stage priorities);
            stages not named are normal
        :return: the batch ids, in send order (urgent first)
        """
        from include.dunning.routing import NORMAL, URGENT, batch_suffix

        if not 1 <= max_batches <= 9999:
            raise ValueError(
                f"max_batches must be 1..9999 (batch numbers have four digits), got {max_batches}"
            )
        priorities = priorities or {}
        if self.dialect == "postgresql":
            # Fresh statistics first: on a just-loaded ledger PostgreSQL otherwise scans every
            # PLANNED row for each keyed UPDATE here and for each claim later (measured: 26 ms per
            # 100-row claim at 20k rows, growing with the table) instead of using the primary key.
            with self.engine.connect() as conn:
                conn.exec_driver_sql("ANALYZE contact_ledger")
                conn.exec_driver_sql("ANALYZE message_part")
                conn.commit()
        with self.engine.begin() as conn:
            by_stage = conn.execute(
                sa.text(
                    "SELECT channel, gateway, stage, COUNT(*) FROM contact_ledger "
                    "WHERE campaign = :campaign AND as_of = :as_of AND state IN (:planned, :claimed) "
                    "GROUP BY channel, gateway, stage"
                ),
                {"campaign": campaign, "as_of": as_of, "planned": PLANNED, "claimed": CLAIMED},
            ).all()
            merged: dict[tuple[str, str, str], tuple[list[str], int]] = {}
            for channel, gateway, stage, count in by_stage:
                priority = URGENT if priorities.get(stage) == URGENT else NORMAL
                stages, n = merged.get((priority, channel, gateway), ([], 0))
                merged[(priority, channel, gateway)] = ([*stages, stage], n + count)
            # Urgent first, then channel and gateway as before.
            groups = sorted(merged.items(), key=lambda kv: (kv[0][0] != URGENT, kv[0][1], kv[0][2]))
            total = sum(n for _, (_, n) in groups)
            if total == 0:
                return []
            size = max(batch_size, -(-total // max(1, max_batches - len(groups))))
            batch_ids: list[str] = []
            safe_run = run_id.replace(":", "").replace("+", "")[:80]
            for (priority, channel, gateway), (stages, count) in groups:
                prefix = f"{campaign}:{channel}:{gateway}:{safe_run}:{batch_suffix(priority, 0)[:-4]}"
                params = {
                    "campaign": campaign,
                    "as_of": as_of,
                    "channel": channel,
                    "gateway": gateway,
                    "stages": sorted(stages),
                    "planned": PLANNED,
                    "claimed": CLAIMED,
                }
                if self.dialect == "postgresql":
                    # One set-based statement: numbering a million rows key by key took 81 s.
                    conn.execute(
                        sa.text(
                            "UPDATE contact_ledger AS c SET batch_id = :prefix || "
                            "LPAD(CAST((r.rn - 1) / :size AS TEXT), 4, '0') FROM ("
                            "SELECT idempotency_key, ROW_NUMBER() OVER (ORDER BY phone, idempotency_key) AS rn "
                            "FROM contact_ledger WHERE campaign = :campaign AND as_of = :as_of "
                            "AND channel = :channel AND gateway = :gateway AND stage IN :stages "
                            "AND state IN (:planned, :claimed)) AS r WHERE c.idempotency_key = r.idempotency_key"
                        ).bindparams(sa.bindparam("stages", expanding=True)),
                        {**params, "prefix": prefix, "size": size},
                    )
                    batch_ids.extend(f"{prefix}{n:04d}" for n in range(-(-count // size)))
                    continue
                keys = list(
                    conn.execute(
                        sa.text(
                            "SELECT idempotency_key FROM contact_ledger WHERE campaign = :campaign "
                            "AND as_of = :as_of AND channel = :channel AND gateway = :gateway "
                            "AND stage IN :stages AND state IN (:planned, :claimed) "
                            "ORDER BY phone, idempotency_key"
                        ).bindparams(sa.bindparam("stages", expanding=True)),
                        params,
                    ).scalars()
                )
                for n, chunk in enumerate(_chunks(keys, size)):
                    batch_id = f"{prefix}{n:04d}"
                    for part in _chunks(chunk, 900):
                        conn.execute(
                            sa.text(
                                "UPDATE contact_ledger SET batch_id = :batch_id WHERE idempotency_key IN :keys"
                            ).bindparams(sa.bindparam("keys", expanding=True)),
                            {"batch_id": batch_id, "keys": list(part)},
                        )
                    batch_ids.append(batch_id)
        return batch_ids

    # -- send -----------------------------------------------------------------------------

    def batch_rows(self, batch_id: str) -> list[LedgerRow]:
        """Return the rows of a batch that may still be sent (PLANNED or CLAIMED)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT idempotency_key, debtor_id, phone, message_text, parts, state, send_tries "
                    "FROM contact_ledger WHERE batch_id = :batch_id AND state IN (:planned, :claimed) "
                    "ORDER BY phone, idempotency_key"
                ),
                {"batch_id": batch_id, "planned": PLANNED, "claimed": CLAIMED},
            ).all()
        return [LedgerRow(*r) for r in rows]

    def batch_opted_out(self, batch_id: str) -> set[str]:
        """Return the numbers of a batch's sendable rows that are on the opt-out list.

        What ``opted_out`` answers for the phones of ``batch_rows``, in one join on the server
        rather than a statement per 900 numbers.
        """
        with self.engine.connect() as conn:
            return set(
                conn.execute(
                    sa.text(
                        "SELECT DISTINCT c.phone FROM contact_ledger c JOIN opt_out o ON o.phone = c.phone "
                        "WHERE c.batch_id = :batch_id AND c.state IN (:planned, :claimed)"
                    ),
                    {"batch_id": batch_id, "planned": PLANNED, "claimed": CLAIMED},
                ).scalars()
            )

    def claim(self, keys: Sequence[str], run_id: str) -> int:
        """Mark rows CLAIMED just before they are sent; return how many were claimable.

        One statement for the whole chunk: on PostgreSQL the keys travel as one array
        parameter (``= ANY``), so a chunk of thousands plans and binds as cheaply as one row.
        """
        if not keys:
            return 0
        if self.dialect == "postgresql":
            stmt = sa.text(
                "UPDATE contact_ledger SET state = :claimed, claimed_at = :now, sent_run_id = :run_id, "
                "send_tries = send_tries + 1 "
                "WHERE idempotency_key = ANY(CAST(:keys AS text[])) AND state IN (:planned, :claimed)"
            )
        else:
            stmt = sa.text(
                "UPDATE contact_ledger SET state = :claimed, claimed_at = :now, sent_run_id = :run_id, "
                "send_tries = send_tries + 1 "
                "WHERE idempotency_key IN :keys AND state IN (:planned, :claimed)"
            ).bindparams(sa.bindparam("keys", expanding=True))
        with self.engine.begin() as conn:
            result = conn.execute(
                stmt,
                {
                    "claimed": CLAIMED,
                    "planned": PLANNED,
                    "now": utcnow(),
                    "run_id": run_id,
                    "keys": list(keys),
                },
            )
        return result.rowcount or 0

    def suppress(self, keys: Sequence[str], reason: str, *, run_id: str) -> int:
        """Suppress sendable rows with a reason (opted out, paid, ...), on behalf of a run."""
        if not keys:
            return 0
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.text(
                    "UPDATE contact_ledger SET state = :suppressed, reason = :reason, final_at = :now, "
                    "sent_run_id = :run_id WHERE idempotency_key IN :keys AND state IN (:planned, :claimed)"
                ).bindparams(sa.bindparam("keys", expanding=True)),
                {
                    "suppressed": SUPPRESSED,
                    "reason": reason,
                    "run_id": run_id,
                    "now": utcnow(),
                    "keys": list(keys),
                    "planned": PLANNED,
                    "claimed": CLAIMED,
                },
            )
        return result.rowcount or 0

    def record_submits(self, gateway: str, outcomes: Sequence[SubmitOutcome]) -> dict[str, int]:
        """Record the gateway's answers for claimed rows, in one transaction.

        Accepted rows become SUBMITTED with one ``message_part`` row per part; permanent
        rejections become FAILED; transient rejections go back to PLANNED with the code.

        :return: counts of ``submitted``, ``failed`` and ``transient``
        """
        now = utcnow()
        counts = {"submitted": 0, "failed": 0, "transient": 0}
        submitted = [o for o in outcomes if o.accepted]
        with self.engine.begin() as conn:
            if submitted:
                if self.dialect == "postgresql":
                    self._record_submitted_pg(conn, gateway, submitted, now)
                else:
                    self._record_submitted(conn, gateway, submitted, now)
                counts["submitted"] = len(submitted)
            rejected = [o for o in outcomes if not o.accepted]
            if rejected:
                self._record_rejected(conn, rejected, now)
            for outcome in rejected:
                counts["failed" if outcome.permanent else "transient"] += 1
        return counts

    @staticmethod
    def _record_rejected(conn: sa.Connection, rejected: Sequence[SubmitOutcome], now: datetime) -> None:
        """Mark refused rows FAILED (permanent) or back to PLANNED (transient), in one executemany."""
        conn.execute(
            sa.text(
                "UPDATE contact_ledger SET state = :state, error_code = :code, reason = :reason, "
                "final_at = :final WHERE idempotency_key = :key AND state = :claimed"
            ),
            [
                {
                    "state": FAILED if outcome.permanent else PLANNED,
                    "code": outcome.error_code,
                    "reason": (outcome.error or "")[:200],
                    "final": now if outcome.permanent else None,
                    "key": outcome.key,
                    "claimed": CLAIMED,
                }
                for outcome in rejected
            ],
        )

    @staticmethod
    def _record_submitted_pg(
        conn: sa.Connection, gateway: str, submitted: Sequence[SubmitOutcome], now: datetime
    ) -> None:
        """Record accepted rows and their parts in two set-based statements (PostgreSQL)."""
        conn.execute(
            sa.text(
                "UPDATE contact_ledger AS c SET state = :state, message_ids = v.ids, submitted_at = :now, "
                "error_code = NULL FROM unnest(CAST(:keys AS text[]), CAST(:ids AS text[])) AS v(key, ids) "
                "WHERE c.idempotency_key = v.key AND c.state = :claimed"
            ),
            {
                "state": SUBMITTED,
                "now": now,
                "claimed": CLAIMED,
                "keys": [o.key for o in submitted],
                "ids": [",".join(o.message_ids) for o in submitted],
            },
        )
        parts = [(o.key, n, mid) for o in submitted for n, mid in enumerate(o.message_ids, start=1)]
        conn.execute(
            sa.text(
                "INSERT INTO message_part (gateway, message_id, idempotency_key, part_no, state) "
                "SELECT :gateway, p.mid, p.key, p.n, :state FROM unnest(CAST(:keys AS text[]), "
                "CAST(:ns AS integer[]), CAST(:mids AS text[])) AS p(key, n, mid) "
                "ON CONFLICT (gateway, message_id) DO NOTHING"
            ),
            {
                "gateway": gateway,
                "state": SUBMITTED,
                "keys": [p[0] for p in parts],
                "ns": [p[1] for p in parts],
                "mids": [p[2] for p in parts],
            },
        )

    def _record_submitted(
        self, conn: sa.Connection, gateway: str, submitted: Sequence[SubmitOutcome], now: datetime
    ) -> None:
        """Record accepted rows and their parts row by row (SQLite, MariaDB)."""
        conn.execute(
            sa.text(
                "UPDATE contact_ledger SET state = :state, message_ids = :ids, submitted_at = :now, "
                "error_code = NULL WHERE idempotency_key = :key AND state = :claimed"
            ),
            [
                {
                    "state": SUBMITTED,
                    "ids": ",".join(o.message_ids),
                    "now": now,
                    "key": o.key,
                    "claimed": CLAIMED,
                }
                for o in submitted
            ],
        )
        conn.execute(
            self._insert_ignore(
                "message_part",
                ("gateway", "message_id", "idempotency_key", "part_no", "state"),
                ("gateway", "message_id"),
            ),
            [
                {
                    "gateway": gateway,
                    "message_id": mid,
                    "idempotency_key": o.key,
                    "part_no": n,
                    "state": SUBMITTED,
                }
                for o in submitted
                for n, mid in enumerate(o.message_ids, start=1)
            ],
        )

    # -- send log (PostgreSQL; see schema.sql) --------------------------------------------

    @property
    def send_log(self) -> bool:
        """Return whether send tasks log claims and answers and settle them in bulk (PostgreSQL).

        SQLite and MariaDB update the ledger row per claim and per answer (``claim``,
        ``record_submits``); the ledger ends the same either way.
        """
        return self.dialect == "postgresql"

    def _log_cursor(self, synchronous: bool = True) -> Any:
        """Return this thread's cursor for the send log's writes, on a connection of its own.

        The writes sit on the bind's critical path, in the process whose bind thread is busy
        with the SMSC: each is one statement in autocommit (one round trip, no BEGIN/COMMIT),
        on a driver connection the thread keeps (no pool checkout and SQLAlchemy execution per
        write, which cost several times the statement). ``synchronous`` false: the session has
        ``synchronous_commit = off`` (see ``log_responses``). ``close_log_connections`` ends them.
        """
        if getattr(self, "_log_lock", None) is None:
            self._log_lock = threading.Lock()
            self._log_conns: dict[tuple[int, bool], Any] = {}
        slot = (threading.get_ident(), synchronous)
        opened = self._log_conns.get(slot)
        if opened is None:
            fairy = self.engine.raw_connection()
            driver = fairy.driver_connection
            driver.autocommit = True
            if not synchronous:
                driver.execute("SET synchronous_commit = off")
            opened = (driver.cursor(), fairy)
            with self._log_lock:
                self._log_conns[slot] = opened
        return opened[0]

    def close_log_connections(self) -> None:
        """Close the connections ``_log_cursor`` opened (they are not handed back to the pool)."""
        with getattr(self, "_log_lock", None) or threading.Lock():
            opened = list(getattr(self, "_log_conns", {}).values())
            self._log_conns = {}
        for _, fairy in opened:
            fairy.invalidate()  # closes the driver connection: its session settings go with it

    def log_claim(self, claim_id: str, batch_id: str, keys: Sequence[str], run_id: str, gateway: str) -> None:
        """Log that ``keys`` (a chunk of ``batch_id``) are about to be sent: one row, one index entry.

        Until a response is logged for one of them, such a row is "claimed, no response": a
        retry resends it (once), which is what the ledger's CLAIMED state means.
        """
        self._log_cursor().execute(_LOG_CLAIM_PG, {
            "claim_id": claim_id, "batch_id": batch_id, "run_id": run_id, "gateway": gateway,
            "now": utcnow(), "keys": ",".join(keys),
        })  # fmt: skip

    def log_responses(
        self, outcomes: Sequence[SubmitOutcome], claims: Mapping[str, str], *, synchronous: bool = True
    ) -> dict[str, int]:
        """Append the gateway's answers to the send log in one statement; settled later in bulk.

        Once committed, a row with an answer here is never resubmitted (``settle_sends`` turns
        it into SUBMITTED with its message ids, FAILED, or PLANNED for a transient refusal).

        :param outcomes: the answers, each for a row of a logged claim
        :param claims: claim id of each outcome's key
        :param synchronous: false: commit without waiting for the WAL flush
            (``synchronous_commit = off`` for this session only). A worker killed after the
            commit loses nothing: the server has the row. A crash of the PostgreSQL server
            itself can lose the last few hundred milliseconds of such commits (up to three
            ``wal_writer_delay``); their rows then count as claimed with no response and are
            resent once, as in doubt. Any later durable commit (a claim, a settle) flushes
            them too, so a send task that ended has them all on disk.
        :return: counts of ``submitted``, ``failed`` and ``transient``
        """
        counts = {"submitted": 0, "failed": 0, "transient": 0}
        lines = []
        for o in outcomes:
            if o.accepted:
                counts["submitted"] += 1
                lines.append(
                    f"{claims[o.key]}\x1f{o.key}\x1f{SUBMITTED}\x1f{','.join(o.message_ids)}\x1f\x1f"
                )
            else:
                counts["failed" if o.permanent else "transient"] += 1
                state = FAILED if o.permanent else PLANNED
                reason = (o.error or "")[:200]
                lines.append(f"{claims[o.key]}\x1f{o.key}\x1f{state}\x1f\x1f{o.error_code or ''}\x1f{reason}")
        if not outcomes:
            return counts
        # The answers travel as one text parameter, split on the server (one row per record
        # separator, one field per unit separator): far less work in this process than one
        # array parameter per column. A field holding a separator (an odd SMSC message id or
        # error text) falls back to the array form.
        text = "\x1e".join(lines)
        if text.count("\x1e") == len(lines) - 1 and text.count("\x1f") == 5 * len(lines):
            stmt, params = _LOG_RESPONSES_TEXT_PG, {"rows": text}
        else:
            stmt, params = _LOG_RESPONSES_PG, {
                "claims": [claims[o.key] for o in outcomes], "keys": [o.key for o in outcomes],
                "states": [SUBMITTED if o.accepted else FAILED if o.permanent else PLANNED for o in outcomes],
                "ids": [",".join(o.message_ids) if o.accepted else None for o in outcomes],
                "codes": [None if o.accepted else o.error_code for o in outcomes],
                "reasons": [None if o.accepted else (o.error or "")[:200] for o in outcomes],
            }  # fmt: skip
        params["now"] = utcnow()
        self._log_cursor(synchronous).execute(stmt, params)
        return counts

    def settle_sends(
        self,
        *,
        batch_id: str | None = None,
        claim_ids: Sequence[str] | None = None,
        campaign: str | None = None,
    ) -> int:
        """Apply logged claims and answers to the ledger in one statement; return the rows settled.

        Each claimed row becomes what ``claim`` and ``record_submits`` would have made it:
        SUBMITTED with its message ids and one ``message_part`` per part, FAILED with the code,
        PLANNED again after a transient refusal, or CLAIMED (``send_tries`` counted, no response:
        in doubt) when no answer was logged. What is applied leaves the log. Give ``claim_ids``
        (claims whose answers are all logged), ``batch_id`` (everything logged for the batch,
        e.g. before a retry reads it) or ``campaign`` (everything logged for the campaign's
        batches: what a send task that died for good left behind, settled before the next plan
        of the campaign so that a row already sent is never refreshed or superseded as if it
        were still PLANNED; call it only while none of the campaign's send tasks runs). A no-op
        without the send log.
        """
        if not self.send_log:
            return 0
        with self.engine.begin() as conn:
            if claim_ids is None and campaign is not None:
                claim_ids = list(
                    conn.exec_driver_sql(
                        "SELECT s.claim_id FROM send_claim AS s WHERE EXISTS (SELECT 1 FROM contact_ledger "
                        "AS l WHERE l.batch_id = s.batch_id AND l.campaign = %(campaign)s)",
                        {"campaign": campaign},
                    ).scalars()
                )
            elif claim_ids is None:
                claim_ids = list(
                    conn.exec_driver_sql(
                        "SELECT claim_id FROM send_claim WHERE batch_id = %(batch_id)s",
                        {"batch_id": batch_id},
                    ).scalars()
                )
            if not claim_ids:
                return 0
            return conn.exec_driver_sql(_SETTLE_SENDS_PG, {"ids": list(claim_ids)}).rowcount or 0

    def unsettled_sends(self) -> int:
        """Return how many logged answers wait to be settled into the ledger (0 without the log)."""
        if not self.send_log:
            return 0
        with self.engine.connect() as conn:
            return conn.exec_driver_sql("SELECT COUNT(*) FROM send_response").scalar_one()

    # -- receipts -------------------------------------------------------------------------

    def apply_receipts(self, gateway: str, receipts: Sequence[Receipt]) -> dict[str, int]:
        """Match receipts to message parts and settle the rows whose parts are all known.

        A receipt for an unknown message id is kept in ``receipt_unmatched`` and matched again
        on every later call, so a receipt that overtakes its submit record is not lost.

        :return: counts of ``matched`` receipts (including earlier unmatched ones matched now),
            receipts still ``unmatched`` after this call, and ``settled`` rows
        """
        now = utcnow()
        matched = unmatched = 0
        touched: set[str] = set()
        with self.engine.begin() as conn:
            pending = conn.execute(
                sa.text("SELECT message_id, stat, err FROM receipt_unmatched WHERE gateway = :gateway"),
                {"gateway": gateway},
            ).all()
            candidates = [Receipt(m, s, e) for m, s, e in pending] + list(receipts)
            for receipt in candidates:
                state = RECEIPT_STAT_STATE.get(receipt.stat.upper())
                if state is None:  # ENROUTE / ACCEPTD: intermediate, nothing to settle
                    continue
                key = conn.execute(
                    sa.text(
                        "SELECT idempotency_key FROM message_part WHERE gateway = :gateway "
                        "AND message_id = :mid"
                    ),
                    {"gateway": gateway, "mid": receipt.message_id},
                ).scalar_one_or_none()
                if key is None:
                    unmatched += 1
                    conn.execute(
                        self._insert_ignore(
                            "receipt_unmatched",
                            ("gateway", "message_id", "stat", "err", "received_at"),
                            ("gateway", "message_id"),
                        ),
                        {
                            "gateway": gateway,
                            "message_id": receipt.message_id,
                            "stat": receipt.stat.upper(),
                            "err": receipt.err,
                            "received_at": now,
                        },
                    )
                    continue
                matched += 1
                touched.add(key)
                conn.execute(
                    sa.text(
                        "UPDATE message_part SET state = :state, stat = :stat, err = :err, receipt_at = :now "
                        "WHERE gateway = :gateway AND message_id = :mid"
                    ),
                    {
                        "state": state,
                        "stat": receipt.stat.upper(),
                        "err": receipt.err,
                        "now": now,
                        "gateway": gateway,
                        "mid": receipt.message_id,
                    },
                )
                conn.execute(
                    sa.text("DELETE FROM receipt_unmatched WHERE gateway = :gateway AND message_id = :mid"),
                    {"gateway": gateway, "mid": receipt.message_id},
                )
            settled = self._settle(conn, sorted(touched), now)
        return {"matched": matched, "unmatched": unmatched, "settled": settled}

    @staticmethod
    def _settle(conn: sa.Connection, keys: Sequence[str], now: datetime) -> int:
        """Set each row's state from its parts: DELIVERED only when every part is."""
        settled = 0
        for chunk in _chunks(list(keys), 900):
            parts = conn.execute(
                sa.text(
                    "SELECT idempotency_key, state FROM message_part WHERE idempotency_key IN :keys"
                ).bindparams(sa.bindparam("keys", expanding=True)),
                {"keys": list(chunk)},
            ).all()
            by_key: dict[str, list[str]] = {}
            for key, state in parts:
                by_key.setdefault(key, []).append(state)
            for key, states in by_key.items():
                final = row_state_from_parts(states)
                if final is None:
                    continue
                result = conn.execute(
                    sa.text(
                        "UPDATE contact_ledger SET state = :state, final_at = :now "
                        "WHERE idempotency_key = :key AND state IN (:submitted, :unknown)"
                    ),
                    {"state": final, "now": now, "key": key, "submitted": SUBMITTED, "unknown": UNKNOWN},
                )
                settled += result.rowcount or 0
        return settled

    def outstanding_parts(self, gateway: str) -> int:
        """Return how many submitted parts on a gateway still wait for a receipt."""
        with self.engine.connect() as conn:
            return conn.execute(
                sa.text("SELECT COUNT(*) FROM message_part WHERE gateway = :gateway AND state = :submitted"),
                {"gateway": gateway, "submitted": SUBMITTED},
            ).scalar_one()

    def expire_unknown(self, older_than: datetime) -> int:
        """Turn rows submitted before ``older_than`` that never got a receipt into UNKNOWN."""
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.text(
                    "UPDATE contact_ledger SET state = :unknown, reason = 'no receipt within validity', "
                    "final_at = :now WHERE state = :submitted AND submitted_at < :cutoff"
                ),
                {"unknown": UNKNOWN, "now": utcnow(), "submitted": SUBMITTED, "cutoff": older_than},
            )
        return result.rowcount or 0

    # -- inbound and opt-outs -------------------------------------------------------------

    def add_opt_out(self, phone: str, reason: str) -> None:
        """Put a number on the opt-out list (idempotent)."""
        with self.engine.begin() as conn:
            conn.execute(
                self._insert_ignore("opt_out", ("phone", "reason", "created_at"), ("phone",)),
                {"phone": phone, "reason": reason, "created_at": utcnow()},
            )

    def recent_contacts(self, phones: Iterable[str], since: datetime) -> dict[str, datetime]:
        """Return, per number, the last time a message to it was submitted since ``since`` (any campaign)."""
        phones = list(set(phones))
        found: dict[str, datetime] = {}
        sent = (SUBMITTED, DELIVERED, UNDELIVERED, EXPIRED, UNKNOWN)
        with self.engine.connect() as conn:
            for chunk in _chunks(phones, 900):
                rows = conn.execute(
                    sa.text(
                        "SELECT phone, MAX(submitted_at) FROM contact_ledger WHERE phone IN :phones "
                        "AND state IN :sent AND submitted_at >= :since GROUP BY phone"
                    ).bindparams(
                        sa.bindparam("phones", expanding=True), sa.bindparam("sent", expanding=True)
                    ),
                    {"phones": list(chunk), "sent": list(sent), "since": since},
                ).all()
                for phone, last in rows:
                    found[phone] = last if isinstance(last, datetime) else datetime.fromisoformat(str(last))
        return found

    def opted_out(self, phones: Iterable[str]) -> set[str]:
        """Return which of the numbers are on the opt-out list."""
        phones = list(set(phones))
        found: set[str] = set()
        with self.engine.connect() as conn:
            for chunk in _chunks(phones, 900):
                found.update(
                    conn.execute(
                        sa.text("SELECT phone FROM opt_out WHERE phone IN :phones").bindparams(
                            sa.bindparam("phones", expanding=True)
                        ),
                        {"phones": list(chunk)},
                    ).scalars()
                )
        return found

    def record_inbound(self, gateway: str, source: str, destination: str | None, text: str) -> None:
        """Store a mobile-originated reply."""
        with self.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO inbound_message (gateway, source, destination, message_text, received_at) "
                    "VALUES (:gateway, :source, :destination, :text, :now)"
                ),
                {
                    "gateway": gateway,
                    "source": source,
                    "destination": destination,
                    "text": text,
                    "now": utcnow(),
                },
            )

    def flag_for_staff(self, flags: Sequence[Mapping[str, Any]]) -> int:
        """Record debtors for staff follow-up; a debtor already flagged for a reason stays as it was.

        :param flags: mappings with campaign, debtor_id, reason, detail, flagged_on, run_id
        :return: how many flags are new
        """
        if not flags:
            return 0
        columns = ("campaign", "debtor_id", "reason", "detail", "flagged_on", "run_id")
        with self.engine.begin() as conn:
            before = conn.execute(sa.text("SELECT COUNT(*) FROM staff_flag")).scalar_one()
            conn.execute(
                self._insert_ignore("staff_flag", columns, ("campaign", "debtor_id", "reason")),
                [{c: f.get(c) for c in columns} for f in flags],
            )
            after = conn.execute(sa.text("SELECT COUNT(*) FROM staff_flag")).scalar_one()
        return after - before

    # -- quarantine and run figures -------------------------------------------------------

    def quarantine(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Store rejected source rows with the failed expectation (idempotent per run)."""
        if not rows:
            return 0
        columns = (
            "run_id",
            "source",
            "record_key",
            "field",
            "expectation",
            "bad_value",
            "reason",
            "quarantined_at",
        )
        now = utcnow()
        stmt = self._insert_ignore(
            "quarantine", columns, ("run_id", "source", "record_key", "field", "expectation")
        )
        with self.engine.begin() as conn:
            for chunk in _chunks(list(rows), 5000):
                conn.execute(stmt, [{**{c: r.get(c) for c in columns}, "quarantined_at": now} for r in chunk])
        return len(rows)

    def ledger_counts(
        self, *, planned_run_id: str | None = None, sent_run_id: str | None = None
    ) -> dict[str, int]:
        """Count ledger rows by state, for rows planned or sent by one run."""
        if (planned_run_id is None) == (sent_run_id is None):
            raise ValueError("give exactly one of planned_run_id and sent_run_id")
        column = "planned_run_id" if planned_run_id is not None else "sent_run_id"
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text(f"SELECT state, COUNT(*) FROM contact_ledger WHERE {column} = :run GROUP BY state"),  # noqa: S608
                {"run": planned_run_id or sent_run_id},
            ).all()
        return {state: n for state, n in rows}

    def save_run(self, figures: Mapping[str, Any]) -> None:
        """Write (or rewrite) one run's figures into ``dunning_run``."""
        columns = (
            "run_id", "dag_id", "as_of", "debtors", "extracted", "quarantined", "planned", "suppressed",
            "submitted", "failed", "delivered", "undelivered", "pending", "report_path", "finished_at",
        )  # fmt: skip
        params = {c: figures.get(c) for c in columns}
        with self.engine.begin() as conn:
            conn.execute(
                sa.text("DELETE FROM dunning_run WHERE dag_id = :dag_id AND run_id = :run_id"),
                {"dag_id": params["dag_id"], "run_id": params["run_id"]},
            )
            conn.execute(
                sa.text(
                    f"INSERT INTO dunning_run ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})"  # noqa: S608
                ),
                params,
            )

    # -- modem queue: one row at a time, shared by every modem of a run --------------------------

    def claim_next(self, batch_ids: Sequence[str], run_id: str, *, gateway: str) -> LedgerRow | None:
        """Atomically move one PLANNED row of the batches to CLAIMED and return it (None when none is left).

        Modem tasks (one per modem) call this in a loop, so a run's rows spread over the modems
        and a dead modem's share is taken by the others. Concurrent callers never get the same
        row: PostgreSQL and MariaDB skip rows another transaction has locked (``FOR UPDATE SKIP
        LOCKED``), SQLite serialises writers. Rows already CLAIMED (a try that died) are not
        taken again: whether their call or message went out is unknown.

        :param batch_ids: the run's modem batches, drained in order
        :param run_id: the run that sends (stored as ``sent_run_id``)
        :param gateway: who takes the row (a modem's connection id), for the log
        """
        for batch_id in batch_ids:
            row = self._claim_one(batch_id, run_id)
            if row is not None:
                log.debug("row %s of batch %s claimed by %s", row.idempotency_key, batch_id, gateway)
                return row
        return None

    def _claim_one(self, batch_id: str, run_id: str) -> LedgerRow | None:
        params = {
            "batch_id": batch_id,
            "planned": PLANNED,
            "claimed": CLAIMED,
            "now": utcnow(),
            "run_id": run_id,
        }
        columns = "idempotency_key, debtor_id, phone, message_text, parts, state, send_tries"
        update = (
            "UPDATE contact_ledger SET state = :claimed, claimed_at = :now, sent_run_id = :run_id, "
            "send_tries = send_tries + 1 "
        )
        # Equality on both columns of ix_ledger_batch: the scan stops at the first unlocked row
        # (InnoDB locks every row a locking read scans, so a sort would lock the whole batch).
        pick = (
            "SELECT idempotency_key FROM contact_ledger WHERE batch_id = :batch_id AND state = :planned "
            "ORDER BY idempotency_key LIMIT 1"
        )
        if self.dialect == "postgresql" or (self.dialect == "sqlite" and _sqlite_returning()):
            lock = " FOR UPDATE SKIP LOCKED" if self.dialect == "postgresql" else ""
            with self.engine.begin() as conn:
                found = conn.execute(
                    sa.text(
                        f"{update}WHERE idempotency_key = ({pick}{lock}) AND state = :planned "
                        f"RETURNING {columns}"
                    ),
                    params,
                ).first()
            return None if found is None else LedgerRow(*found)
        lock = ""
        options: dict[str, Any] = {}
        if self.dialect == "mysql":
            # READ COMMITTED: no gap locks, which deadlock concurrent claimers when the UPDATE
            # moves the row within ix_ledger_batch; a deadlock that still happens is retried.
            lock, options = " FOR UPDATE SKIP LOCKED", {"isolation_level": "READ COMMITTED"}
        for _attempt in range(100):
            try:
                with self.engine.connect().execution_options(**options) as conn, conn.begin():
                    key = conn.execute(sa.text(pick + lock), params).scalar_one_or_none()
                    if key is None:
                        return None
                    done = conn.execute(
                        sa.text(f"{update}WHERE idempotency_key = :key AND state = :planned"),
                        {**params, "key": key},
                    )
                    if done.rowcount == 1:
                        found = conn.execute(
                            sa.text(f"SELECT {columns} FROM contact_ledger WHERE idempotency_key = :key"),  # noqa: S608
                            {"key": key},
                        ).one()
                        return LedgerRow(*found)
            except sa.exc.OperationalError as exc:
                if _deadlock_code(exc) is None:
                    raise
                log.info("claim in batch %s hit a deadlock (%s); retrying", batch_id, _deadlock_code(exc))
            # old SQLite without row locks: another claimer won this row; pick again
        raise RuntimeError(f"could not claim a row of batch {batch_id} after 100 attempts")

    def release_claim(self, key: str) -> bool:
        """Put a CLAIMED row back to PLANNED: its modem failed before dialling or sending (certainly not sent).

        :return: whether the row was CLAIMED (and is now PLANNED again)
        """
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.text(
                    "UPDATE contact_ledger SET state = :planned, claimed_at = NULL "
                    "WHERE idempotency_key = :key AND state = :claimed"
                ),
                {"planned": PLANNED, "key": key, "claimed": CLAIMED},
            )
        return (result.rowcount or 0) == 1

    def record_call(
        self, key: str, outcome: str, answered_seconds: float, detail: str, *, modem: str | None = None
    ) -> str | None:
        """Record how a voice reminder ended on its CLAIMED row.

        ``answered`` makes the row DELIVERED (reason ``answered 12s``); ``busy``, ``no_answer``,
        ``no_carrier`` and ``rejected`` UNDELIVERED (reason = the outcome); ``failed`` FAILED
        (reason = ``detail``). A placed call counts as a contact (``submitted_at``) for
        frequency caps; a failed one does not.

        :param key: the row's idempotency key
        :param outcome: answered, busy, no_answer, no_carrier, rejected or failed
        :param answered_seconds: seconds connected (answered calls)
        :param detail: what happened, e.g. ``spoken 2 time(s)``
        :param modem: connection id of the modem that called, kept in ``message_ids``
        :return: the new state, or None when the row was not CLAIMED (nothing changed)
        """
        if outcome == CALL_ANSWERED:
            state, reason = DELIVERED, f"answered {round(answered_seconds)}s"
            if detail:
                reason = f"{reason}, {detail}"
        elif outcome in CALL_UNDELIVERED:
            state, reason = UNDELIVERED, outcome
        elif outcome == CALL_FAILED:
            state, reason = FAILED, detail or "call failed"
        else:
            raise ValueError(f"unknown call outcome {outcome!r}")
        now = utcnow()
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.text(
                    "UPDATE contact_ledger SET state = :state, reason = :reason, final_at = :now, "
                    "submitted_at = :submitted, message_ids = :modem, error_code = :code "
                    "WHERE idempotency_key = :key AND state = :claimed"
                ),
                {
                    "state": state,
                    "reason": reason[:200],
                    "now": now,
                    "submitted": None if state == FAILED else now,
                    "modem": modem,
                    "code": "call_failed" if state == FAILED else None,
                    "key": key,
                    "claimed": CLAIMED,
                },
            )
        return state if (result.rowcount or 0) == 1 else None

    def sendable_count(self, batch_ids: Sequence[str]) -> dict[str, int]:
        """Return how many rows of the batches are still PLANNED and how many CLAIMED."""
        counts = {PLANNED: 0, CLAIMED: 0}
        if not batch_ids:
            return counts
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT state, COUNT(*) FROM contact_ledger WHERE batch_id IN :batches "
                    "AND state IN (:planned, :claimed) GROUP BY state"
                ).bindparams(sa.bindparam("batches", expanding=True)),
                {"batches": list(batch_ids), "planned": PLANNED, "claimed": CLAIMED},
            ).all()
        counts.update({state: n for state, n in rows})
        return counts

    # -- receipts, set-based ----------------------------------------------------------------------

    def apply_receipts_bulk(self, gateway: str, receipts: Sequence[Receipt]) -> dict[str, int]:
        """Do what ``apply_receipts`` does, with a few set-based statements instead of three per receipt.

        Same semantics, same counts: receipts for unknown message ids wait in ``receipt_unmatched``
        (the first one kept) and earlier ones are matched again; intermediate receipts (ENROUTE,
        ACCEPTD) are ignored; when one message id gets several receipts the last one wins; a row
        settles from all its parts (``row_state_from_parts``), also when it is already UNKNOWN.
        PostgreSQL loads the receipts with COPY and matches, keeps and settles in a few statements
        (``_apply_receipts_pg``); SQLite and MariaDB load a temporary table and update through it.

        :return: counts of ``matched`` receipts (including earlier unmatched ones matched now),
            receipts still ``unmatched`` after this call, and ``settled`` rows
        """
        now = utcnow()
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                return self._apply_receipts_pg(conn, gateway, receipts, now)
            pending = conn.execute(
                sa.text("SELECT message_id, stat, err FROM receipt_unmatched WHERE gateway = :gateway"),
                {"gateway": gateway},
            ).all()
            candidates = [(m, s.upper(), e) for m, s, e in pending]
            candidates += [(r.message_id, r.stat.upper(), r.err) for r in receipts]
            first: dict[str, tuple[str, str | None]] = {}
            last: dict[str, tuple[str, str | None]] = {}
            seen: dict[str, int] = {}
            for mid, stat, err in candidates:
                if stat not in RECEIPT_STAT_STATE:  # ENROUTE / ACCEPTD: intermediate, nothing to settle
                    continue
                first.setdefault(mid, (stat, err))
                last[mid] = (stat, err)
                seen[mid] = seen.get(mid, 0) + 1
            if not last:
                return {"matched": 0, "unmatched": 0, "settled": 0}
            keys_by_mid = self._bulk_parts_tmp(conn, gateway, last, now)
            unmatched_ids = [mid for mid in last if mid not in keys_by_mid]
            if unmatched_ids:
                conn.execute(
                    self._insert_ignore(
                        "receipt_unmatched",
                        ("gateway", "message_id", "stat", "err", "received_at"),
                        ("gateway", "message_id"),
                    ),
                    [
                        {
                            "gateway": gateway,
                            "message_id": mid,
                            "stat": first[mid][0],
                            "err": first[mid][1],
                            "received_at": now,
                        }
                        for mid in unmatched_ids
                    ],
                )
            rematched = [m for m, _s, _e in pending if m in keys_by_mid]
            for chunk in _chunks(rematched, 900):
                conn.execute(
                    sa.text(
                        "DELETE FROM receipt_unmatched WHERE gateway = :gateway AND message_id IN :mids"
                    ).bindparams(sa.bindparam("mids", expanding=True)),
                    {"gateway": gateway, "mids": list(chunk)},
                )
            settled = self._settle_bulk(conn, sorted(set(keys_by_mid.values())), now)
        matched = sum(n for mid, n in seen.items() if mid in keys_by_mid)
        return {"matched": matched, "unmatched": sum(seen.values()) - matched, "settled": settled}

    def _apply_receipts_pg(
        self, conn: sa.Connection, gateway: str, receipts: Sequence[Receipt], now: datetime
    ) -> dict[str, int]:
        """PostgreSQL ``apply_receipts_bulk``: COPY the receipts into a temporary table, then set-based.

        Only the waiting receipts that match a part now are read back (the others are counted),
        so a long ``receipt_unmatched`` list is not shipped to Python on every call. The rows are
        settled by one UPDATE that derives each row's state from its parts in SQL, by the same
        rule as ``row_state_from_parts``.
        """
        finals = tuple(RECEIPT_STAT_STATE)
        params = {"gateway": gateway, "finals": finals}
        waiting = conn.execute(
            sa.text(
                "SELECT COUNT(*) FROM receipt_unmatched WHERE gateway = :gateway AND UPPER(stat) IN :finals"
            ).bindparams(sa.bindparam("finals", expanding=True)),
            params,
        ).scalar_one()
        known = []
        if waiting:
            known = conn.execute(
                sa.text(
                    "SELECT u.message_id, UPPER(u.stat), u.err FROM receipt_unmatched u "
                    "WHERE u.gateway = :gateway AND UPPER(u.stat) IN :finals AND EXISTS ("
                    "SELECT 1 FROM message_part p WHERE p.gateway = u.gateway AND p.message_id = u.message_id)"
                ).bindparams(sa.bindparam("finals", expanding=True)),
                params,
            ).all()
        # The same reduction as the other engines: waiting receipts first, then the new ones in
        # order; the first one is what ``receipt_unmatched`` keeps, the last one what a part gets.
        first: dict[str, tuple[str, str | None]] = {}
        last: dict[str, tuple[str, str | None]] = {}
        seen: dict[str, int] = {}
        for mid, stat, err in [*known, *((r.message_id, r.stat.upper(), r.err) for r in receipts)]:
            if stat not in RECEIPT_STAT_STATE:  # ENROUTE / ACCEPTD: intermediate, nothing to settle
                continue
            first.setdefault(mid, (stat, err))
            last[mid] = (stat, err)
            seen[mid] = seen.get(mid, 0) + 1
        still_waiting = waiting - len(known)
        if not last:
            return {"matched": 0, "unmatched": still_waiting, "settled": 0}
        # A receipt batch is small next to the tables: probe the indexes for it instead of hashing
        # the whole of message_part and contact_ledger (which the planner prefers up to a few
        # million rows, at ten times the cost), and compile nothing (JIT costs ~0.1 s a statement).
        conn.exec_driver_sql(
            "SELECT set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true), "
            "set_config('jit', 'off', true)"
        )
        conn.exec_driver_sql(
            "CREATE TEMPORARY TABLE tmp_receipt_pg (message_id TEXT NOT NULL, state TEXT NOT NULL, "
            "stat TEXT NOT NULL, err TEXT) ON COMMIT DROP"
        )
        with conn.connection.driver_connection.cursor() as cursor:
            with cursor.copy("COPY tmp_receipt_pg (message_id, state, stat, err) FROM STDIN") as copy:
                for mid, (stat, err) in last.items():
                    copy.write_row((mid, RECEIPT_STAT_STATE[stat], stat, err))
        found = dict(
            conn.execute(
                sa.text(
                    "UPDATE message_part AS p SET state = t.state, stat = t.stat, err = t.err, receipt_at = :now "
                    "FROM tmp_receipt_pg AS t WHERE p.gateway = :gateway AND p.message_id = t.message_id "
                    "RETURNING p.message_id, p.idempotency_key"
                ),
                {"now": now, "gateway": gateway},
            ).all()
        )
        unmatched_ids = [mid for mid in last if mid not in found]
        if unmatched_ids:
            conn.execute(
                sa.text(
                    "INSERT INTO receipt_unmatched (gateway, message_id, stat, err, received_at) "
                    "SELECT :gateway, u.mid, u.stat, u.err, :now FROM unnest(CAST(:mids AS text[]), "
                    "CAST(:stats AS text[]), CAST(:errs AS text[])) AS u(mid, stat, err) "
                    "ON CONFLICT (gateway, message_id) DO NOTHING"
                ),
                {
                    "gateway": gateway,
                    "now": now,
                    "mids": unmatched_ids,
                    "stats": [first[mid][0] for mid in unmatched_ids],
                    "errs": [first[mid][1] for mid in unmatched_ids],
                },
            )
        rematched = [mid for mid, _stat, _err in known if mid in found]
        if rematched:
            conn.execute(
                sa.text(
                    "DELETE FROM receipt_unmatched WHERE gateway = :gateway "
                    "AND message_id = ANY(CAST(:mids AS text[]))"
                ),
                {"gateway": gateway, "mids": rematched},
            )
        # row_state_from_parts in SQL: any UNDELIVERED part, else any EXPIRED, else all DELIVERED,
        # else still open while a part is SUBMITTED (NULL: not settled), else UNKNOWN.
        row_state = (
            f"CASE WHEN bool_or(p.state = '{UNDELIVERED}') THEN '{UNDELIVERED}' "
            f"WHEN bool_or(p.state = '{EXPIRED}') THEN '{EXPIRED}' "
            f"WHEN bool_and(p.state = '{DELIVERED}') THEN '{DELIVERED}' "
            f"WHEN bool_or(p.state = '{SUBMITTED}') THEN NULL ELSE '{UNKNOWN}' END"
        )
        settled = 0
        keys = sorted(set(found.values()))
        if keys:
            # Driven by the touched keys: one index probe per key into message_part and one
            # into contact_ledger, however large the tables grow.
            settled = (
                conn.execute(
                    sa.text(
                        "UPDATE contact_ledger AS c SET state = s.state, final_at = :now "  # noqa: S608
                        "FROM unnest(CAST(:keys AS text[])) AS k(key) CROSS JOIN LATERAL ("
                        f"SELECT {row_state} AS state FROM message_part AS p WHERE p.idempotency_key = k.key) AS s "
                        "WHERE c.idempotency_key = k.key AND s.state IS NOT NULL "
                        "AND c.state IN (:submitted, :unknown)"
                    ),
                    {"now": now, "keys": keys, "submitted": SUBMITTED, "unknown": UNKNOWN},
                ).rowcount
                or 0
            )
        matched = sum(n for mid, n in seen.items() if mid in found)
        unmatched = sum(seen.values()) - matched + still_waiting
        return {"matched": matched, "unmatched": unmatched, "settled": settled}

    def _bulk_parts_tmp(
        self, conn: sa.Connection, gateway: str, last: Mapping[str, tuple[str, str | None]], now: datetime
    ) -> dict[str, str]:
        """Update the known parts through a temporary table (SQLite, MariaDB); return message id -> row key."""
        self._tmp_table(conn, "tmp_receipt", "message_id VARCHAR(80) NOT NULL PRIMARY KEY, stat VARCHAR(10), "
                        "err VARCHAR(10), state VARCHAR(12)")  # fmt: skip
        conn.execute(
            sa.text(
                "INSERT INTO tmp_receipt (message_id, stat, err, state) VALUES (:mid, :stat, :err, :state)"
            ),
            [
                {"mid": mid, "stat": stat, "err": err, "state": RECEIPT_STAT_STATE[stat]}
                for mid, (stat, err) in last.items()
            ],
        )
        found = conn.execute(
            sa.text(
                "SELECT p.message_id, p.idempotency_key FROM message_part p "
                "JOIN tmp_receipt t ON t.message_id = p.message_id WHERE p.gateway = :gateway"
            ),
            {"gateway": gateway},
        ).all()
        if self.dialect == "mysql":
            conn.execute(
                sa.text(
                    "UPDATE message_part p JOIN tmp_receipt t ON t.message_id = p.message_id "
                    "SET p.state = t.state, p.stat = t.stat, p.err = t.err, p.receipt_at = :now "
                    "WHERE p.gateway = :gateway"
                ),
                {"now": now, "gateway": gateway},
            )
        else:
            conn.execute(
                sa.text(
                    "UPDATE message_part SET "
                    "state = (SELECT t.state FROM tmp_receipt t WHERE t.message_id = message_part.message_id), "
                    "stat = (SELECT t.stat FROM tmp_receipt t WHERE t.message_id = message_part.message_id), "
                    "err = (SELECT t.err FROM tmp_receipt t WHERE t.message_id = message_part.message_id), "
                    "receipt_at = :now "
                    "WHERE gateway = :gateway AND message_id IN (SELECT message_id FROM tmp_receipt)"
                ),
                {"now": now, "gateway": gateway},
            )
        self._drop_tmp_table(conn, "tmp_receipt")
        return {mid: key for mid, key in found}

    def _tmp_table(self, conn: sa.Connection, name: str, columns: str) -> None:
        """Create (or empty) a connection-local temporary table."""
        conn.exec_driver_sql(f"CREATE TEMPORARY TABLE IF NOT EXISTS {name} ({columns})")
        conn.exec_driver_sql(f"DELETE FROM {name}")  # noqa: S608 - a name from this module

    def _drop_tmp_table(self, conn: sa.Connection, name: str) -> None:
        if self.dialect == "mysql":
            conn.exec_driver_sql(f"DROP TEMPORARY TABLE IF EXISTS {name}")
        else:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{name}")

    def _settle_bulk(self, conn: sa.Connection, keys: Sequence[str], now: datetime) -> int:
        """Set-based ``_settle`` (SQLite, MariaDB): read the touched rows' parts at once, update the rows at once.

        PostgreSQL settles in SQL instead (``_apply_receipts_pg``).
        """
        if not keys:
            return 0
        self._tmp_table(
            conn, "tmp_settle", "idempotency_key VARCHAR(64) NOT NULL PRIMARY KEY, state VARCHAR(12)"
        )
        conn.execute(
            sa.text("INSERT INTO tmp_settle (idempotency_key) VALUES (:key)"), [{"key": k} for k in keys]
        )
        parts = conn.execute(
            sa.text(
                "SELECT p.idempotency_key, p.state FROM message_part p "
                "JOIN tmp_settle s ON s.idempotency_key = p.idempotency_key"
            )
        ).all()
        by_key: dict[str, list[str]] = {}
        for key, state in parts:
            by_key.setdefault(key, []).append(state)
        finals = {key: row_state_from_parts(states) for key, states in by_key.items()}
        finals = {key: state for key, state in finals.items() if state is not None}
        params = {"now": now, "submitted": SUBMITTED, "unknown": UNKNOWN}
        if not finals:
            settled = 0
        else:
            conn.exec_driver_sql("DELETE FROM tmp_settle")
            conn.execute(
                sa.text("INSERT INTO tmp_settle (idempotency_key, state) VALUES (:key, :state)"),
                [{"key": k, "state": s} for k, s in finals.items()],
            )
            if self.dialect == "mysql":
                sql = (
                    "UPDATE contact_ledger c JOIN tmp_settle s ON s.idempotency_key = c.idempotency_key "
                    "SET c.state = s.state, c.final_at = :now WHERE c.state IN (:submitted, :unknown)"
                )
            else:
                sql = (
                    "UPDATE contact_ledger SET state = (SELECT s.state FROM tmp_settle s "
                    "WHERE s.idempotency_key = contact_ledger.idempotency_key), final_at = :now "
                    "WHERE idempotency_key IN (SELECT idempotency_key FROM tmp_settle) "
                    "AND state IN (:submitted, :unknown)"
                )
            settled = conn.execute(sa.text(sql), params).rowcount or 0
        self._drop_tmp_table(conn, "tmp_settle")
        return settled

    # -- gateways: routing, daily quota, prepaid balance (see include/dunning/routing.py) -----------

    def reroute(self, keys: Sequence[str], gateway: str) -> int:
        """Record the gateway rows actually go through (failover), while they are still unsent.

        :return: how many rows (PLANNED or CLAIMED) now name ``gateway``
        """
        changed = 0
        with self.engine.begin() as conn:
            for part in _chunks(list(keys), 900):
                result = conn.execute(
                    sa.text(
                        "UPDATE contact_ledger SET gateway = :gateway WHERE idempotency_key IN :keys "
                        "AND state IN (:planned, :claimed)"
                    ).bindparams(sa.bindparam("keys", expanding=True)),
                    {"gateway": gateway, "keys": list(part), "planned": PLANNED, "claimed": CLAIMED},
                )
                changed += result.rowcount or 0
        return changed

    def reserve_gateway_parts(
        self,
        gateway: str,
        day: date,
        parts: Sequence[int],
        *,
        daily_quota: int | None = None,
        ensure_row: bool = True,
    ) -> int:
        """Reserve a chunk's parts on a gateway's daily quota (and prepaid balance) before sending it.

        The reservation is one conditional ``UPDATE ... SET used = used + n WHERE used + n <=
        quota`` (and ``balance >= n`` for a prepaid gateway, in the same transaction), so any
        number of concurrent send tasks never exceed the quota or the balance. When the whole
        chunk does not fit, the longest leading run of messages that does is reserved.

        :param gateway: the gateway's connection id
        :param day: the local day the quota counts
        :param parts: the SMS parts of each message of the chunk, in send order
        :param daily_quota: parts per day, None for no daily limit (the connection's ``daily_quota``)
        :param ensure_row: create the day's usage row first (False when this caller already did)
        :return: how many leading messages of the chunk are reserved (0: quota or balance used up)
        """
        from include.dunning.routing import fit_parts

        parts = [int(p) for p in parts]
        if not parts:
            return 0
        now = utcnow()
        # The usage row first, in its own transaction: on MariaDB an INSERT IGNORE that meets an
        # existing row takes a shared lock, and two such locks upgraded by the UPDATE deadlock.
        if ensure_row:
            with self.engine.begin() as conn:
                conn.execute(
                    self._insert_ignore(
                        "gateway_usage",
                        ("gateway", "usage_day", "used", "daily_quota", "updated_at"),
                        ("gateway", "usage_day"),
                    ),
                    {
                        "gateway": gateway,
                        "usage_day": day,
                        "used": 0,
                        "daily_quota": daily_quota,
                        "updated_at": now,
                    },
                )
        key = {"gateway": gateway, "day": day}
        for _attempt in range(50):
            try:
                with self.engine.connect() as conn:
                    trans = conn.begin()
                    used = 0
                    if daily_quota is not None:  # without a quota the count is only tracked
                        used = conn.execute(
                            sa.text(
                                "SELECT used FROM gateway_usage WHERE gateway = :gateway AND usage_day = :day"
                            ),
                            key,
                        ).scalar_one()
                    balance = conn.execute(
                        sa.text("SELECT balance FROM gateway_balance WHERE gateway = :gateway"), key
                    ).scalar_one_or_none()
                    room = sum(parts)
                    if daily_quota is not None:
                        room = min(room, daily_quota - int(used))
                    if balance is not None:
                        room = min(room, int(balance))
                    n = fit_parts(parts, max(0, room))
                    if n == 0:
                        trans.rollback()
                        return 0
                    want = sum(parts[:n])
                    guard = "" if daily_quota is None else " AND used + :n <= :quota"
                    ok = (
                        conn.execute(
                            sa.text(
                                "UPDATE gateway_usage SET used = used + :n, daily_quota = :quota, "  # noqa: S608
                                f"updated_at = :now WHERE gateway = :gateway AND usage_day = :day{guard}"
                            ),
                            {**key, "n": want, "quota": daily_quota, "now": now},
                        ).rowcount
                        == 1
                    )
                    if ok and balance is not None:
                        ok = (
                            conn.execute(
                                sa.text(
                                    "UPDATE gateway_balance SET balance = balance - :n, updated_at = :now "
                                    "WHERE gateway = :gateway AND balance >= :n"
                                ),
                                {**key, "n": want, "now": now},
                            ).rowcount
                            == 1
                        )
                    if ok:
                        trans.commit()
                        return n
                    trans.rollback()  # another task took the room between the read and the update
            except sa.exc.OperationalError as exc:
                if _deadlock_code(exc) is None:
                    raise
                log.info(
                    "quota reservation on %s hit a deadlock (%s); retrying", gateway, _deadlock_code(exc)
                )
        raise RuntimeError(f"could not reserve parts on gateway {gateway} after 50 attempts")

    def release_gateway_parts(self, gateway: str, day: date, parts: int) -> None:
        """Give back reserved parts that were not sent (rejected messages): quota and balance."""
        if parts <= 0:
            return
        params = {"gateway": gateway, "day": day, "n": int(parts), "now": utcnow()}
        with self.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE gateway_usage SET used = CASE WHEN used >= :n THEN used - :n ELSE 0 END, "
                    "updated_at = :now WHERE gateway = :gateway AND usage_day = :day"
                ),
                params,
            )
            conn.execute(
                sa.text(
                    "UPDATE gateway_balance SET balance = balance + :n, updated_at = :now WHERE gateway = :gateway"
                ),
                params,
            )

    def gateway_usage(self, day: date) -> dict[str, tuple[int, int | None]]:
        """Return, per gateway, the parts used (sent or reserved) on a local day and its daily quota."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT gateway, used, daily_quota FROM gateway_usage WHERE usage_day = :day"),
                {"day": day},
            ).all()
        return {g: (int(used), None if quota is None else int(quota)) for g, used, quota in rows}

    def add_gateway_balance(self, gateway: str, parts: int) -> int:
        """Top up a prepaid gateway by ``parts`` (the first top-up makes it prepaid); return the balance."""
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(
                self._insert_ignore("gateway_balance", ("gateway", "balance", "updated_at"), ("gateway",)),
                {"gateway": gateway, "balance": 0, "updated_at": now},
            )
        with self.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE gateway_balance SET balance = balance + :n, updated_at = :now WHERE gateway = :gateway"
                ),
                {"gateway": gateway, "n": int(parts), "now": now},
            )
            return conn.execute(
                sa.text("SELECT balance FROM gateway_balance WHERE gateway = :gateway"), {"gateway": gateway}
            ).scalar_one()

    def gateway_balance(self, gateway: str) -> int | None:
        """Return a prepaid gateway's balance in parts, None when the gateway is not prepaid."""
        with self.engine.connect() as conn:
            value = conn.execute(
                sa.text("SELECT balance FROM gateway_balance WHERE gateway = :gateway"), {"gateway": gateway}
            ).scalar_one_or_none()
        return None if value is None else int(value)

    def gateways_to_collect(self, run_id: str) -> list[str]:
        """Return the SMS gateways a run sent through, and those with parts still awaiting a receipt."""
        with self.engine.connect() as conn:
            sent = conn.execute(
                sa.text(
                    "SELECT DISTINCT gateway FROM contact_ledger WHERE sent_run_id = :run AND channel = 'sms' "
                    "AND message_ids IS NOT NULL"
                ),
                {"run": run_id},
            ).scalars()
            outstanding = conn.execute(
                sa.text("SELECT DISTINCT gateway FROM message_part WHERE state = :submitted"),
                {"submitted": SUBMITTED},
            ).scalars()
            return sorted(set(sent) | set(outstanding))

    # -- contact history for re-notification ---------------------------------------------------

    def contact_history(
        self, campaign: str, since: date, phones: Iterable[str] | None = None
    ) -> dict[tuple[str, str, str], dict[str, Any]]:
        """Return what earlier contacts of a campaign achieved, per (phone, stage, period).

        One aggregate query over the campaign's rows planned on or after ``since`` (plus one for
        the replies), so the planner can move a debtor to the next channel of its stage: SMS
        delivered / undelivered (UNDELIVERED, EXPIRED or FAILED) / unanswered (delivered, and no
        reply from the number since the first of them), calls answered / unanswered (busy, no
        answer, rejected) / failed (the modem failed). UNKNOWN rows count as neither: whether
        they arrived is not known. Rows never sent (PLANNED, CLAIMED, SUPPRESSED) are left out.

        :param campaign: the campaign, e.g. ``tax_payment``
        :param since: the first as-of date to look at
        :param phones: only these numbers (all of the campaign's when None)
        :return: (phone, stage, period) -> counts ``sms_delivered``, ``sms_undelivered``,
            ``sms_unanswered``, ``voice_answered``, ``voice_unanswered``, ``voice_failed`` and
            the dates ``first_as_of`` and ``last_as_of``
        """
        sent = (DELIVERED, UNDELIVERED, EXPIRED, FAILED)
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT phone, stage, period, MIN(as_of), MAX(as_of), "
                    "SUM(CASE WHEN channel = 'sms' AND state = 'DELIVERED' THEN 1 ELSE 0 END), "
                    "SUM(CASE WHEN channel = 'sms' AND state <> 'DELIVERED' THEN 1 ELSE 0 END), "
                    "MIN(CASE WHEN channel = 'sms' AND state = 'DELIVERED' THEN submitted_at END), "
                    "SUM(CASE WHEN channel = 'voice' AND state = 'DELIVERED' THEN 1 ELSE 0 END), "
                    "SUM(CASE WHEN channel = 'voice' AND state = 'UNDELIVERED' THEN 1 ELSE 0 END), "
                    "SUM(CASE WHEN channel = 'voice' AND state = 'FAILED' THEN 1 ELSE 0 END) "
                    "FROM contact_ledger WHERE campaign = :campaign AND as_of >= :since AND state IN :sent "
                    "GROUP BY phone, stage, period"
                ).bindparams(sa.bindparam("sent", expanding=True)),
                {"campaign": campaign, "since": since, "sent": list(sent)},
            ).all()
            replies = dict(
                conn.execute(
                    sa.text(
                        "SELECT source, MAX(received_at) FROM inbound_message WHERE received_at >= :since "
                        "GROUP BY source"
                    ),
                    {"since": datetime.combine(since, datetime.min.time())},
                ).all()
            )
        wanted = None if phones is None else set(phones)

        def moment(value: Any) -> datetime | None:
            if value is None or isinstance(value, datetime):
                return value
            return datetime.fromisoformat(str(value))

        def day(value: Any) -> date:
            return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])

        history: dict[tuple[str, str, str], dict[str, Any]] = {}
        for phone, stage, period, first, last, delivered, undelivered, first_delivered, *voice in rows:
            if wanted is not None and phone not in wanted:
                continue
            reply = moment(replies.get(phone))
            first_sms = moment(first_delivered)
            answered = reply is not None and first_sms is not None and reply >= first_sms
            history[(phone, stage, period)] = {
                "first_as_of": day(first),
                "last_as_of": day(last),
                "sms_delivered": int(delivered or 0),
                "sms_undelivered": int(undelivered or 0),
                "sms_unanswered": 0 if answered else int(delivered or 0),
                "voice_answered": int(voice[0] or 0),
                "voice_unanswered": int(voice[1] or 0),
                "voice_failed": int(voice[2] or 0),
            }
        return history


def row_state_from_parts(states: Sequence[str]) -> str | None:
    """Return a row's final state from its parts' states, or None while it is still open.

    A multipart message is DELIVERED only when every part is; one undelivered part makes the
    whole message UNDELIVERED, one expired part EXPIRED.
    """
    if UNDELIVERED in states:
        return UNDELIVERED
    if EXPIRED in states:
        return EXPIRED
    if all(s == DELIVERED for s in states):
        return DELIVERED
    if SUBMITTED in states:
        return None
    return UNKNOWN


def split_sql(script: str) -> list[str]:
    """Split a DDL script into statements, dropping ``--`` comments and blanks."""
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def validity_cutoff(now: datetime, validity_minutes: int) -> datetime:
    """Return the submit time before which a row without a receipt counts as UNKNOWN."""
    return now - timedelta(minutes=validity_minutes)


def _sqlite_returning() -> bool:
    """Tell whether the SQLite library supports ``UPDATE ... RETURNING`` (3.35 and later)."""
    import sqlite3

    return sqlite3.sqlite_version_info >= (3, 35, 0)


def _deadlock_code(exc: Exception) -> int | None:
    """Return MariaDB's error code when ``exc`` is a deadlock (1213) or lock wait timeout (1205)."""
    args = getattr(getattr(exc, "orig", None), "args", ())
    code = args[0] if args else None
    return code if code in (1205, 1213) else None
