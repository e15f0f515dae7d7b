"""Benchmark: validate an extract of overdue tax liabilities (1M rows by default) with the real path.

Builds a Parquet file shaped like ``include/sql/levy/overdue_liabilities.sql``'s output (row
groups of 100,000 rows, like the extract writes), then runs
``include.dunning.validation.validate_parquet`` on it with the ``levy_overdue_liabilities``
suite in a child process (the code ``ValidateDebtorsOperator`` runs: derived columns, GX per
chunk, the next chunk read and derived meanwhile by a second thread, good rows streamed to
Parquet by a third, quarantine rows handed over per chunk) and the GX data docs, and prints
seconds, rows/s and the child's peak resident memory. The quarantine rows are counted, not
written to a database (``bench/ledger.py`` measures the store).

The rows: taxpayers (USCC, resident ID, legacy 15/20-char ids, names, raw phones as a clerk
typed them) come from the project's generator (``include.sources.generate``: the helpers
``generate_levy`` uses, with ``--dirty-share`` bad phones, broken check characters and missing
names); about 3 liabilities per taxpayer with amounts, deadlines, tax types and periods from
``generate.debtor_blocks``; then per liability: negative amounts (0.5%), absurd amounts
(0.05%), missing deadlines (0.1%), orphans without a taxpayer (0.2%) and duplicate keys
(0.1%, 150,000 rows apart so they straddle chunks). Above ``--tile-above`` rows (1M) the first
million are repeated with new keys: the per-taxpayer Python generation is the slow part.

    .venv/bin/python bench/validate.py                     # 1M rows
    .venv/bin/python bench/validate.py --rows 10000000     # peak memory at 10M
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

AS_OF = date(2026, 11, 22)
ROW_GROUP = 100_000


def taxpayer_pool(size: int, *, dirty_share: float, seed: int) -> dict[str, list]:
    """Return ``size`` taxpayers as columns: id, name, type, phone as typed (dirty at ``dirty_share``)."""
    from include.sources import generate as g

    rng = random.Random(f"{seed}:bench-validate")
    ids, names, types, mobiles = [], [], [], []
    seen: set[str] = set()
    while len(ids) < size:
        district = rng.choice(g._DISTRICTS)
        u = rng.random()
        born = g._birth_date(rng, AS_OF)
        if u < 0.45:
            ttype, tid = "enterprise", g._uscc(rng, district, "1")
            name: str | None = g._company_name(rng, district.city)
        elif u < 0.47:
            ttype, tid = "enterprise", district.code + g._org_code(rng)  # legacy 15
            name = g._company_name(rng, district.city)
        elif u < 0.70:
            ttype, tid = "individual_business", g._uscc(rng, district, "2")
            name = g._shop_name(rng, district)
        elif u < 0.72:
            ttype = "individual_business"
            tid = g._ric(rng, born, district) + f"{rng.randint(1, 3):02d}"  # legacy 20
            name = g._shop_name(rng, district)
        else:
            ttype, tid, name = "individual", g._ric(rng, born, district), g._person_name(rng)
        if tid in seen:
            continue
        seen.add(tid)
        if rng.random() < dirty_share:
            if rng.random() < 0.6:
                tid = g._break_check(rng, tid)
            else:
                name = None if rng.random() < 0.5 else ""
        mobile = g._bad_mobile(rng) if rng.random() < dirty_share else g._raw_mobile(rng, g._mobile(rng))
        ids.append(tid)
        names.append(name)
        types.append(ttype)
        mobiles.append(mobile)
    return {"taxpayer_id": ids, "taxpayer_name": names, "taxpayer_type": types, "mobile": mobiles}


def build_extract(path: Path, rows: int, *, dirty_share: float, seed: int) -> float:
    """Write the benchmark extract to ``path``; return the seconds it took."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from include.sources.generate import debtor_blocks

    started = time.perf_counter()
    pool = taxpayer_pool(min(max(1000, rows // 3), 1_000_000), dirty_share=dirty_share, seed=seed)
    pool_table = pa.table(pool)
    size = pool_table.num_rows
    writer = None
    for block in debtor_blocks(rows, as_of=AS_OF, seed=seed):
        n = block.num_rows
        start = block["debtor_id"][0].as_py() - 1
        rng = np.random.default_rng([seed, start])
        who = pool_table.take(pa.array(rng.integers(0, size, n)))
        ids = np.arange(start + 1, start + n + 1, dtype=np.int64)
        dup = (rng.random(n) < 0.001) & (ids > 150_000)
        ids[dup] -= 150_000
        principal = block["principal"]
        outstanding = pc.subtract(principal, block["paid"]).cast(pa.decimal128(14, 2))
        u = rng.random(n)
        negative = pa.array(u < 0.005)
        absurd = pa.array((u >= 0.005) & (u < 0.0055))
        outstanding = pc.if_else(
            negative,
            pc.negate(outstanding),
            pc.if_else(absurd, pa.scalar(5_000_000_000, pa.decimal128(14, 2)), outstanding),
        )
        deadline = pc.if_else(
            pa.array(rng.random(n) < 0.001), pa.scalar(None, pa.date32()), block["deadline"]
        )
        orphan = pa.array(rng.random(n) < 0.002)
        null_text = pa.scalar(None, pa.string())
        table = pa.table(
            {
                "liability_id": pa.array(ids),
                "taxpayer_id": who["taxpayer_id"],
                "taxpayer_name": pc.if_else(orphan, null_text, who["taxpayer_name"]),
                "taxpayer_type": pc.if_else(orphan, null_text, who["taxpayer_type"]),
                "taxpayer_status": pc.if_else(orphan, null_text, pa.array(["normal"] * n)),
                "taxpayer_ref": pc.if_else(orphan, null_text, who["taxpayer_id"]),
                "tax_type": block["tax_type"],
                "period": block["period"],
                "principal": principal,
                "paid": block["paid"],
                "outstanding": outstanding,
                "deadline": deadline,
                "original_deadline": deadline,
                "deferred_until": pa.nulls(n, pa.date32()),
                "promised_until": pa.nulls(n, pa.date32()),
                "mobile": who["mobile"],
                "contact_role": pa.array(["legal_rep"] * n),
            }
        )
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema, compression="snappy")
        writer.write_table(table, row_group_size=ROW_GROUP)
    writer.close()
    return time.perf_counter() - started


def tile_extract(base: Path, path: Path, rows: int) -> float:
    """Write ``rows`` rows to ``path`` by repeating ``base`` with new keys; return the seconds."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    started = time.perf_counter()
    source = pq.ParquetFile(base)
    size = source.metadata.num_rows
    written = 0
    with pq.ParquetWriter(path, source.schema_arrow, compression="snappy") as writer:
        while written < rows:
            offset = written // size * size
            for batch in source.iter_batches(batch_size=ROW_GROUP):
                take = min(batch.num_rows, rows - written)
                if take <= 0:
                    break
                table = pa.Table.from_batches([batch.slice(0, take)])
                ids = pc.add(table["liability_id"], offset)
                table = table.set_column(0, "liability_id", ids)
                writer.write_table(table, row_group_size=ROW_GROUP)
                written += take
    return time.perf_counter() - started


def child(path: str, chunk_rows: int, docs: bool) -> None:
    """Validate ``path`` as the operator does; print the figures as JSON."""
    from include.dunning.validation import SuiteRunner, load_suite, validate_parquet

    suite = load_suite("levy_overdue_liabilities")
    rejected = 0

    def on_rejected(rows: list) -> None:
        nonlocal rejected
        rejected += len(rows)

    out_dir = Path(tempfile.mkdtemp(prefix="bench_validate_out_"))
    import great_expectations  # noqa: F401 - imported before the baseline memory is taken

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    cpu = time.process_time()
    runner = SuiteRunner(suite, key_column="liability_id")
    outcome = validate_parquet(
        path,
        suite,
        as_of=AS_OF,
        key_column="liability_id",
        debtor_column="taxpayer_id",
        good_sink=str(out_dir / "valid.parquet"),
        on_rejected=on_rejected,
        chunk_rows=chunk_rows,
        runner=runner,
    )
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    docs_seconds = None
    if docs:
        t = time.perf_counter()
        runner.write_data_docs(out_dir / "data_docs", run_name="bench")
        docs_seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        json.dumps(
            {
                "rows": outcome.rows,
                "good": outcome.good_rows,
                "bad": outcome.bad_rows,
                "quarantine_rows": rejected,
                "chunks": outcome.chunks,
                "seconds": seconds,
                "cpu_seconds": cpu,
                "base_rss": base_rss,
                "docs_seconds": docs_seconds,
                "peak_rss": peak,
                "out_dir": str(out_dir),
            }
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=250_000)
    parser.add_argument("--dirty-share", type=float, default=0.03)
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument(
        "--tile-above",
        type=int,
        default=1_000_000,
        help="above this many rows, generate this many and repeat them with new keys",
    )
    parser.add_argument("--no-docs", action="store_true", help="skip the GX data docs")
    parser.add_argument("--keep", action="store_true", help="keep the extract and the output")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.chunk_rows, not args.no_docs)
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench_validate_"))
    path = work / f"overdue_liabilities_{args.rows}.parquet"
    if args.rows > args.tile_above:
        base = work / f"overdue_liabilities_{args.tile_above}.parquet"
        built = build_extract(base, args.tile_above, dirty_share=args.dirty_share, seed=args.seed)
        built += tile_extract(base, path, args.rows)
        print(f"extract: the first {args.tile_above:,} rows repeated with new keys")
    else:
        built = build_extract(path, args.rows, dirty_share=args.dirty_share, seed=args.seed)
    print(
        f"extract: {args.rows:,} rows, {path.stat().st_size / 2**20:.0f} MiB Parquet, built in {built:.1f} s"
    )
    cmd = [sys.executable, __file__, "--child", str(path), "--chunk-rows", str(args.chunk_rows)]
    if args.no_docs:
        cmd.append("--no-docs")
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ})
    if result.returncode:
        print(result.stderr, file=sys.stderr)
        return result.returncode
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    print(
        f"validate: {figures['rows']:,} rows in {figures['seconds']:.2f} s "
        f"({figures['rows'] / figures['seconds']:,.0f} rows/s), {figures['chunks']} chunks of "
        f"{args.chunk_rows:,}; good {figures['good']:,}, bad {figures['bad']:,} "
        f"({figures['quarantine_rows']:,} quarantine rows)"
    )
    if figures["docs_seconds"] is not None:
        print(
            f"data docs: {figures['docs_seconds']:.2f} s "
            f"(validate + data docs: {figures['seconds'] + figures['docs_seconds']:.2f} s)"
        )
    print(f"CPU time (validating child): {figures['cpu_seconds']:.2f} s (on a busy machine: wall >> CPU)")
    print(
        f"peak RSS (validating child): {figures['peak_rss'] / 2**20:,.0f} MiB "
        f"(after imports: {figures['base_rss'] / 2**20:,.0f} MiB)"
    )
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(figures["out_dir"], ignore_errors=True)
    else:
        print(f"kept: {path} and {figures['out_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
