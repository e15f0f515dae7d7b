"""Contact ledger throughput on PostgreSQL: plan UPSERT, and the send path's claim + record.

Creates a throwaway database, writes N planned contacts (UPSERT), batches them, then claims
and records them the way the send task does (a window at a time, two message parts each),
and prints rows per second. The UPSERT is timed twice: into an empty ledger (every row new) and
again over the same rows (every row refreshed, as a second plan run of the same week does).
Nothing is asserted; figures go to docs/benchmarks.md.

    python bench/ledger.py --rows 200000 --window 100
    python bench/ledger.py --rows 1000000 --skip-send    # the plan UPSERT only (issue 4: < 30 s)
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import date, datetime
from decimal import Decimal

import sqlalchemy as sa

from include.dunning.ledger import DunningStore, SubmitOutcome, idempotency_key

AS_OF = date(2026, 11, 23)


def planned_rows(n: int) -> list[dict]:
    return [
        {
            "idempotency_key": idempotency_key("bench", "2026-W48", f"tel:138{i:08d}", "s", "sms", 1),
            "campaign": "bench",
            "period": "2026-W48",
            "as_of": AS_OF,
            "debtor_id": f"D{i}",
            "debtor_ids": f"D{i}",
            "debtor_name": "杭州示例贸易有限公司",
            "stage": "s",
            "channel": "sms",
            "attempt": 1,
            "phone": f"138{i:08d}",
            "template": "sms/tax/payment_overdue.j2",
            "message_text": "【示范市税务】杭州示例贸易有限公司：您2026年10月增值税12,345.00元已过缴款期限。"
            * 2,
            "parts": 2,
            "amount": Decimal("12345.00"),
            "surcharge": Decimal("43.21"),
            "gateway": "smpp_default",
            "state": "PLANNED",
            "reason": None,
            "planned_run_id": "bench",
            "planned_at": datetime(2026, 11, 23, 1),
        }
        for i in range(n)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=100, help="rows claimed and recorded per step")
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument(
        "--chunk", type=int, default=None, help="upsert_planned chunk size (default: its own)"
    )
    parser.add_argument("--skip-send", action="store_true", help="time the plan UPSERT only")
    args = parser.parse_args()

    name = "bench_ledger_" + uuid.uuid4().hex[:8]
    admin = sa.create_engine(args.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    store = DunningStore(args.url.rsplit("/", 1)[0] + "/" + name)
    try:
        store.create_schema()
        rows = planned_rows(args.rows)
        started = time.perf_counter()
        first = store.upsert_planned(rows, chunk_size=args.chunk)
        upsert = time.perf_counter() - started
        started = time.perf_counter()
        again = store.upsert_planned(rows, chunk_size=args.chunk)
        refresh = time.perf_counter() - started
        assert first.new == again.refreshed == args.rows, (first, again)  # the bench measured real work
        print(f"rows                  {args.rows:>10,}")
        print(f"plan UPSERT (new)     {args.rows / upsert:>10,.0f} rows/s ({upsert:.1f} s)")
        print(f"plan UPSERT (refresh) {args.rows / refresh:>10,.0f} rows/s ({refresh:.1f} s)")
        if args.skip_send:
            return
        started = time.perf_counter()
        batches = store.assign_batches("bench", AS_OF, "bench", batch_size=args.rows)
        batching = time.perf_counter() - started
        keys = [r.idempotency_key for b in batches for r in store.batch_rows(b)]
        claim = record = 0.0
        for start in range(0, len(keys), args.window):
            chunk = keys[start : start + args.window]
            t = time.perf_counter()
            store.claim(chunk, "bench")
            claim += time.perf_counter() - t
            t = time.perf_counter()
            store.record_submits(
                "smpp_default", [SubmitOutcome(k, [k[:16] + "a", k[:16] + "b"]) for k in chunk]
            )
            record += time.perf_counter() - t
        print(f"batching (+ANALYZE)   {batching:>10.1f} s")
        print(f"claim + record        {args.rows / (claim + record):>10,.0f} rows/s (window {args.window}; "
              f"claim {claim:.1f} s, record {record:.1f} s)")  # fmt: skip
    finally:
        store.engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


if __name__ == "__main__":
    main()
