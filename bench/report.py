"""The run report of a 1M-contact run on PostgreSQL: load_reporting + tables + CSV + HTML.

Creates a throwaway database, writes N ledger rows of one run straight with set-based SQL on the
server (SMS on two gateways and voice calls; 5% holdout, some frequency-capped; 3% of messages to
numbers shared by three debtors; a fifth of the SMS in two parts; receipts and call outcomes in
the usual mix, spread over two hours), payments for a third of the debtors as a frame (what the
report task reads from the payments extract), then runs the report task's own code path
(``operators.report.write_run_report``) and prints the seconds per step and the peak RSS.
Nothing is asserted; figures go to docs/benchmarks.md.

    python bench/report.py --contacts 1000000
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

import sqlalchemy as sa

from include.dunning.ledger import DunningStore

AS_OF = date(2026, 11, 23)
RUN = "scheduled__2026-11-23T01:00:00+00:00"
DAG = "tax_dunning"

# g is the row number; h a pseudo-random 0..99 per row, fixed by g.
SEED = """
INSERT INTO contact_ledger (idempotency_key, campaign, period, as_of, debtor_id, debtor_ids, debtor_name,
    stage, channel, attempt, phone, template, message_text, parts, amount, surcharge, gateway, state, reason,
    error_code, planned_run_id, sent_run_id, planned_at, claimed_at, submitted_at, final_at)
SELECT 'k' || g, 'tax_payment', '2026-W48', DATE '2026-11-23', 'D' || g,
    CASE WHEN g % 33 = 0 THEN 'D' || g || ',S' || g || ',T' || g ELSE 'D' || g END, '纳税人' || g,
    CASE WHEN g % 10 < 7 THEN 'overdue' WHEN g % 10 < 9 THEN 'overdue_2' ELSE 'final' END,
    CASE WHEN g % 10 = 9 THEN 'voice' ELSE 'sms' END, 1,
    (ARRAY['130','131','132','133','135','136','137','138','139','150','151','152','155','158','159',
           '166','176','177','180','181','186','187','188','189','199'])[1 + g % 25]
        || lpad(((g::bigint * 7919) % 100000000)::text, 8, '0'),
    CASE WHEN g % 10 = 9 THEN 'voice/tax/payment_overdue.j2' ELSE 'sms/tax/payment_overdue.j2' END,
    '【示范市税务】您有税款逾期未缴', CASE WHEN g % 5 = 0 AND g % 10 <> 9 THEN 2 ELSE 1 END,
    (g % 5000) + 0.5, 0.25,
    CASE WHEN g % 10 = 9 THEN 'modem_pool' WHEN g % 3 = 0 THEN 'smpp_backup' ELSE 'smpp_default' END,
    s.state,
    CASE WHEN s.state = 'SUPPRESSED' AND g % 20 = 0 THEN 'holdout'
         WHEN s.state = 'SUPPRESSED' THEN 'frequency_cap: contacted 2026-11-20'
         WHEN g % 10 = 9 AND s.state = 'DELIVERED' THEN 'answered ' || (5 + g % 50) || 's, spoken 2 time(s)'
         WHEN g % 10 = 9 AND s.state = 'UNDELIVERED' THEN (ARRAY['busy','no_answer'])[1 + g % 2]
         WHEN s.state = 'FAILED' THEN 'invalid destination' END,
    CASE WHEN s.state = 'FAILED' THEN '0x0000000B' END,
    CAST(:run AS VARCHAR), CASE WHEN s.state <> 'SUPPRESSED' THEN CAST(:run AS VARCHAR) END,
    TIMESTAMP '2026-11-23 01:00:00',
    CASE WHEN s.state <> 'SUPPRESSED' THEN TIMESTAMP '2026-11-23 01:05:00' + (g % 7200) * INTERVAL '1 second' END,
    CASE WHEN s.state NOT IN ('SUPPRESSED', 'FAILED') THEN TIMESTAMP '2026-11-23 01:05:00' + (g % 7200) * INTERVAL '1 second' END,
    CASE WHEN s.state NOT IN ('SUPPRESSED', 'SUBMITTED')
         THEN TIMESTAMP '2026-11-23 01:06:00' + (g % 7200 + g % 600) * INTERVAL '1 second' END
FROM generate_series(1, :contacts) AS g
CROSS JOIN LATERAL (SELECT CASE
    WHEN g % 20 = 0 OR g % 50 = 1 THEN 'SUPPRESSED'
    WHEN (g * 37) % 100 < 86 THEN 'DELIVERED'
    WHEN (g * 37) % 100 < 92 THEN 'UNDELIVERED'
    WHEN (g * 37) % 100 < 94 THEN 'EXPIRED'
    WHEN (g * 37) % 100 < 96 THEN 'UNKNOWN'
    WHEN (g * 37) % 100 < 99 THEN 'SUBMITTED'
    ELSE 'FAILED' END AS state) AS s;

INSERT INTO message_part (gateway, message_id, idempotency_key, part_no, state, stat, err, receipt_at)
SELECT c.gateway, 'm' || c.idempotency_key || '-' || n, c.idempotency_key, n,
    CASE c.state WHEN 'UNKNOWN' THEN 'SUBMITTED' ELSE c.state END,
    CASE c.state WHEN 'DELIVERED' THEN 'DELIVRD' WHEN 'UNDELIVERED' THEN 'UNDELIV' WHEN 'EXPIRED' THEN 'EXPIRED' END,
    CASE c.state WHEN 'DELIVERED' THEN '000' WHEN 'UNDELIVERED' THEN (ARRAY['001','011','045'])[1 + n % 3]
        WHEN 'EXPIRED' THEN '000' END,
    CASE WHEN c.state IN ('DELIVERED', 'UNDELIVERED', 'EXPIRED') THEN c.final_at END
FROM contact_ledger c CROSS JOIN generate_series(1, 2) AS n
WHERE c.channel = 'sms' AND c.state IN ('SUBMITTED', 'DELIVERED', 'UNDELIVERED', 'EXPIRED', 'UNKNOWN')
  AND n <= c.parts;

INSERT INTO opt_out (phone, reason, created_at)
SELECT phone, 'reply TD', TIMESTAMP '2026-11-23 05:00:00' FROM contact_ledger
WHERE state = 'DELIVERED' AND channel = 'sms' AND debtor_id LIKE '%77';

ANALYZE contact_ledger;
ANALYZE message_part;
ANALYZE opt_out
"""


def payments_frame(contacts: int):
    """Payments for about a third of the debtors, 0..40 days after the as-of date (numpy, vectorised)."""
    import numpy as np
    import pandas as pd

    g = np.arange(1, contacts + 1)
    payers = g[(g * 13) % 100 < 33]
    return pd.DataFrame(
        {
            "debtor_id": np.char.add("D", payers.astype(str)),
            "paid_on": pd.Timestamp(AS_OF) + pd.to_timedelta(payers % 41, unit="D"),
            "amount": (payers % 5000) + 0.5,
        }
    )


def backend_cpu(store: DunningStore) -> dict[int, float]:
    """Return CPU seconds used so far by each PostgreSQL backend of the store's database (from /proc)."""
    import os

    with store.engine.connect() as conn:
        pids = conn.execute(
            sa.text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        ).scalars()
        out = {}
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--keep", action="store_true", help="keep the database (its name is printed)")
    args = parser.parse_args()

    from operators.report import write_run_report

    name = "bench_report_" + uuid.uuid4().hex[:8]
    admin = sa.create_engine(args.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    store = DunningStore(args.url.rsplit("/", 1)[0] + "/" + name)
    try:
        store.create_schema()
        started = time.perf_counter()
        with store.engine.begin() as conn:
            for statement in SEED.split(";"):
                conn.execute(sa.text(statement), {"contacts": args.contacts, "run": RUN})
        with store.engine.connect() as conn:
            parts = conn.execute(sa.text("SELECT COUNT(*) FROM message_part")).scalar_one()
        print(f"contacts              {args.contacts:>10,}")
        print(f"message parts         {parts:>10,}")
        print(f"seed (server-side SQL){time.perf_counter() - started:>10.1f} s")
        payments = payments_frame(args.contacts)
        print(f"payments              {len(payments):>10,}")
        timings: dict[str, float] = {}
        cpu_before, own_before = backend_cpu(store), time.process_time()
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            figures = write_run_report(
                store,
                folder=Path(tmp),
                dag_id=DAG,
                run_id=RUN,
                as_of=AS_OF,
                plan={"planned": args.contacts},
                payments=payments,
                timings=timings,
            )
            total = time.perf_counter() - started
            own_cpu = time.process_time() - own_before
            cpu_after = backend_cpu(store)
            size = Path(figures["report_path"]).stat().st_size
        db_cpu = sum(v - cpu_before.get(pid, 0.0) for pid, v in cpu_after.items())
        for step, seconds in timings.items():
            print(f"  {step:<24}{seconds:>8.2f} s")
        print(f"report total          {total:>10.2f} s (HTML {size / 1024:,.0f} KiB)")
        # On a busy machine wall time mostly waits for a core; CPU time is what the work costs.
        print(
            f"CPU: python {own_cpu:.1f} s + PostgreSQL backend {db_cpu:.1f} s (parallel workers not counted)"
        )
        print(
            f"peak RSS              {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:>10,.0f} MiB"
        )
    finally:
        store.engine.dispose()
        if args.keep:
            print(f"database kept: {name}")
        else:
            with admin.connect() as conn:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


if __name__ == "__main__":
    main()
