"""Receipts into the ledger on PostgreSQL: ``apply_receipts`` (per receipt) against ``apply_receipts_bulk``.

Creates a throwaway database per method, writes N/2 submitted two-part SMS rows straight with SQL,
then feeds one receipt per part (5% undelivered, 2% for ids not known yet) in chunks the size a
collect task drains at once, and prints receipts per second. Nothing is asserted.

    python bench/receipts.py --receipts 100000 --chunk 10000
"""

from __future__ import annotations

import argparse
import time
import uuid

import sqlalchemy as sa

from include.dunning.ledger import DunningStore, Receipt

SEED = """
INSERT INTO contact_ledger (idempotency_key, campaign, period, as_of, debtor_id, stage, channel, attempt,
    phone, template, message_text, parts, gateway, state, planned_run_id, sent_run_id, planned_at, submitted_at)
SELECT 'k' || g, 'bench', '2026-W48', DATE '2026-11-23', 'D' || g, 'overdue', 'sms', 1,
    '138' || lpad(g::text, 8, '0'), 'sms/tax/payment_overdue.j2', 'x', 2, 'gw', 'SUBMITTED', 'bench', 'bench',
    now(), now()
FROM generate_series(1, :rows) AS g;
INSERT INTO message_part (gateway, message_id, idempotency_key, part_no, state)
SELECT 'gw', 'm' || g || p.s, 'k' || g, p.n, 'SUBMITTED'
FROM generate_series(1, :rows) AS g CROSS JOIN (VALUES ('a', 1), ('b', 2)) AS p(s, n);
ANALYZE contact_ledger;
ANALYZE message_part
"""


def receipts(rows: int) -> list[Receipt]:
    out = []
    for g in range(1, rows + 1):
        for part in "ab":
            mid = f"m{g}{part}" if g % 50 else f"late{g}{part}"  # 2% not known (yet)
            out.append(Receipt(mid, "UNDELIV" if g % 20 == 0 else "DELIVRD", "001" if g % 20 == 0 else "000"))
    return out


def run(url: str, method: str, n: int, chunk: int) -> tuple[float, dict[str, int]]:
    name = "bench_receipts_" + uuid.uuid4().hex[:8]
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    store = DunningStore(url.rsplit("/", 1)[0] + "/" + name)
    try:
        store.create_schema()
        with store.engine.begin() as conn:
            for statement in SEED.split(";"):
                conn.execute(sa.text(statement), {"rows": n // 2})
        feed = receipts(n // 2)
        apply = getattr(store, method)
        totals = {"matched": 0, "unmatched": 0, "settled": 0}
        started = time.perf_counter()
        for start in range(0, len(feed), chunk):
            result = apply("gw", feed[start : start + chunk])
            for k in totals:
                totals[k] += result[k]
        return time.perf_counter() - started, totals
    finally:
        store.engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--receipts", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=10_000, help="receipts per call (one collect drain)")
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--methods", default="apply_receipts_bulk,apply_receipts")
    args = parser.parse_args()
    print(f"receipts              {args.receipts:>10,} (chunk {args.chunk:,})")
    for method in args.methods.split(","):
        seconds, totals = run(args.url, method, args.receipts, args.chunk)
        print(f"{method:<22}{args.receipts / seconds:>10,.0f} receipts/s ({seconds:.1f} s; {totals})")


if __name__ == "__main__":
    main()
