"""Benchmark: how fast the synthetic generator fills a database (no assertions, prints figures).

Two generators: the levy system (``generate_levy``, one Python unit per taxpayer, about 31 rows
per taxpayer over six tables; COPY on PostgreSQL) and the wide debtor table
(``generate_debtor_table``, vectorised, one row per debtor). A throwaway database
``bench_generate`` is created and dropped (unless ``--keep``).

    .venv/bin/python bench/generate.py                                  # PostgreSQL, 100k taxpayers, 1M debtors
    .venv/bin/python bench/generate.py --taxpayers 0 --debtors 10000000     # the 10M debtor load only
    .venv/bin/python bench/generate.py --taxpayers 1000000 --debtors 10000000
    .venv/bin/python bench/generate.py --url sqlite:////tmp/gen.db --taxpayers 20000 --debtors 1000000
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa

from include.sources import generate as gen

AS_OF = date(2026, 11, 22)
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DB = "bench_generate"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="target database (default: a throwaway PostgreSQL database)")
    parser.add_argument("--taxpayers", type=int, default=100_000, help="levy taxpayers (0: skip)")
    parser.add_argument("--debtors", type=int, default=1_000_000, help="debtor table rows (0: skip)")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    admin = None
    url = args.url
    if url is None:
        admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
            conn.exec_driver_sql(f"CREATE DATABASE {DB} ENCODING 'UTF8' TEMPLATE template0")
        url = sa.engine.make_url(PG_ADMIN).set(database=DB).render_as_string(hide_password=False)
    engine = sa.create_engine(url)
    lines = []
    try:
        if args.taxpayers:
            started = time.perf_counter()
            counts = gen.generate_levy(engine, taxpayers=args.taxpayers, as_of=AS_OF, replace=True)
            seconds = time.perf_counter() - started
            rows = sum(counts.values())
            lines.append(
                f"levy      {args.taxpayers:>12,} taxpayers {rows:>12,} rows {seconds:>8.1f} s "
                f"{args.taxpayers / seconds:>10,.0f} taxpayers/s {rows / seconds:>10,.0f} rows/s "
                f"({counts['tax_liability']:,} liabilities)"
            )
        if args.debtors:
            with engine.begin() as conn:
                conn.exec_driver_sql("DROP TABLE IF EXISTS debtor")
            started = time.perf_counter()
            rows = gen.generate_debtor_table(engine, args.debtors, as_of=AS_OF)
            seconds = time.perf_counter() - started
            lines.append(
                f"debtor    {rows:>12,} debtors   {rows:>12,} rows {seconds:>8.1f} s {rows / seconds:>10,.0f} rows/s"
            )
            if rows >= 10_000_000:
                verdict = "met" if seconds < 300 else "MISSED"
                lines.append(f"target: 10M debtors in under 5 minutes (300 s): {verdict} ({seconds:.0f} s)")
    finally:
        engine.dispose()
        if admin is not None:
            if not args.keep:
                with admin.connect() as conn:
                    conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
            admin.dispose()
    print(f"\ngenerator fill rate into {sa.engine.make_url(url).get_backend_name()}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
