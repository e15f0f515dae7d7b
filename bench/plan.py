"""Planning throughput and peak memory: fees, stage, eligibility, render, parts, ledger rows.

Writes a synthetic *validated* Parquet file shaped like the validate step's output (the levy
``overdue_liabilities`` or billing ``dunning_items`` columns, in extract order, not sorted by
phone), then plans it with the plan task's own loop (``PlanContactsOperator.plan_chunks``):
phone-sorted chunks (``include.dunning.chunks``), opt-out and recent-contact lookups per chunk
(deterministic stand-ins for the store's), the real planner (``plan_tax_payment`` /
``plan_power``) in the operator's processes (``--processes``, the task's own included: 2 is
the task and one worker; default as the operator),
routing, counts, ``after_plan`` and the preview CSV; the ledger UPSERT only with ``--store``
(bench/ledger.py measures it). Prints records per second end to end, the peak RSS of the task
process and of the largest worker, and CPU time. Nothing is asserted; figures go to
docs/benchmarks.md.

    python bench/plan.py --campaign tax --debtors 1000000
    python bench/plan.py --campaign power --debtors 1000000
    python bench/plan.py --campaign tax --debtors 10000000          # memory at 10M
    python bench/plan.py --campaign tax --debtors 1000000 --processes 1   # in the task's process
    python bench/plan.py --campaign tax --debtors 200000 --mode pandas   # the old whole-frame path

``--shape sqlite`` writes amounts as doubles and dates as strings (what SQLite sources give);
the default ``postgres`` writes decimal(14,2) and date32 (what PostgreSQL COPY gives).
``--store URL`` also UPSERTs every chunk into a dunning store (e.g. a throwaway PostgreSQL db).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

AS_OF = date(2026, 11, 23)
BLOCK = 100_000
TAX_SORT = ("mobile_normalized", "taxpayer_id", "deadline")
POWER_SORT = ("mobile_normalized", "account_no", "kind", "due_date")

_SURNAMES = list(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
)
_GIVEN = list("伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华建国红梅志强玉兰春")
_CITIES = [
    "杭州",
    "宁波",
    "温州",
    "绍兴",
    "湖州",
    "嘉兴",
    "金华",
    "衢州",
    "舟山",
    "台州",
    "丽水",
    "乌鲁木齐市天山区",
]
_ZIHAO = ["示例", "恒通", "永利", "华信", "鑫源", "宏达", "瑞丰", "东方", "新世纪", "金桥", "博远", "汇泽"]
_TRADE = ["贸易", "服装", "建筑工程", "电子科技", "餐饮管理", "物流", "信息技术", "五金机电", "房地产开发"]
_SUFFIX = ["有限公司", "有限责任公司", "股份有限公司", "商行", "经营部"]
_TAX_TYPES = ["增值税", "企业所得税", "个人所得税", "印花税", "房产税", "城市维护建设税"]
_PREFIXES = [
    "138",
    "139",
    "137",
    "136",
    "135",
    "150",
    "151",
    "158",
    "186",
    "187",
    "188",
    "130",
    "131",
    "133",
    "189",
]


def _pick(rng: np.random.Generator, values: list[str], n: int) -> pa.Array:
    return pa.array(values).take(pa.array(rng.integers(0, len(values), n)))


def _digits(values: np.ndarray, width: int) -> pa.Array:
    return pc.utf8_lpad(pa.array(values).cast(pa.string()), width=width, padding="0")


def _names(rng: np.random.Generator, n: int, company_share: float) -> pa.Array:
    person = pc.binary_join_element_wise(
        _pick(rng, _SURNAMES, n), _pick(rng, _GIVEN, n), _pick(rng, _GIVEN, n), ""
    )
    company = pc.binary_join_element_wise(
        _pick(rng, _CITIES, n), _pick(rng, _ZIHAO, n), _pick(rng, _TRADE, n), _pick(rng, _SUFFIX, n), ""
    )
    return pc.if_else(pa.array(rng.random(n) < company_share), company, person)


def _phones(rng: np.random.Generator, n: int) -> pa.Array:
    return pc.binary_join_element_wise(_pick(rng, _PREFIXES, n), _digits(rng.integers(0, 10**8, n), 8), "")


def _money(cents: np.ndarray, shape: str) -> pa.Array:
    if shape == "sqlite":
        return pa.array(cents / 100.0)
    text = pc.binary_join_element_wise(_digits(cents // 100, 1), _digits(cents % 100, 2), ".")
    return text.cast(pa.decimal128(14, 2))


def _dates(days: np.ndarray, shape: str, valid: np.ndarray | None = None) -> pa.Array:
    epoch = (days - (date(1970, 1, 1) - date(1, 1, 1)).days).astype(np.int32)
    arr = pa.array(epoch, mask=None if valid is None else ~valid).cast(pa.date32())
    return arr.cast(pa.string()) if shape == "sqlite" else arr


def _group_sizes(rng: np.random.Generator, n: int, sizes: list[int], weights: list[float]) -> np.ndarray:
    """Return how many rows each unit (taxpayer, account) has, adding up to n."""
    p = np.array(weights) / sum(weights)
    counts = rng.choice(sizes, size=n, p=p)  # at most n units
    cut = int(np.searchsorted(np.cumsum(counts), n)) + 1
    counts = counts[:cut].copy()
    counts[-1] -= int(counts.sum()) - n
    return counts


def _share_phones(rng: np.random.Generator, phones: pa.Array, share: float) -> pa.Array:
    """Give ``share`` of the units an agent's number shared with about two other units."""
    n = len(phones)
    agents = max(1, int(n * share / 3))
    shared = rng.random(n) < share
    pool = _phones(rng, agents)
    return pc.if_else(pa.array(shared), pool.take(pa.array(rng.integers(0, agents, n))), phones)


def tax_blocks(rows: int, *, shape: str, seed: int = 7) -> Iterator[pa.Table]:
    """Yield validated overdue liabilities (levy shape) in blocks of about 100,000 rows."""
    as_of_ord = AS_OF.toordinal()
    period_deadlines = [("2026-07", date(2026, 8, 17)), ("2026-08", date(2026, 9, 15)),
                        ("2026-09", date(2026, 10, 26)), ("2026-10", date(2026, 11, 16))]  # fmt: skip
    next_id = 1
    for start in range(0, rows, BLOCK):
        n = min(BLOCK, rows - start)
        rng = np.random.default_rng([seed, start // BLOCK])
        sizes = _group_sizes(rng, n, [1, 2, 3, 4, 5, 6, 7, 9], [22, 24, 18, 16, 10, 6, 3, 1])
        units = len(sizes)
        unit = np.repeat(np.arange(units), sizes)
        tp_ids = pc.binary_join_element_wise(
            pa.array(np.where(rng.random(units) < 0.6, "91", "92")),
            _digits(rng.integers(0, 10**16, units), 16),
            "",
        )
        tp_names = _names(rng, units, company_share=0.7)
        tp_phones = _share_phones(rng, _phones(rng, units), share=0.03)
        take = pa.array(unit)
        which = rng.integers(0, len(period_deadlines), n)
        deadline = np.array([d.toordinal() for _, d in period_deadlines])[which]
        deferred = rng.random(n) < 0.035
        new_deadline = as_of_ord + rng.integers(-10, 40, n)
        effective = np.where(deferred, np.maximum(new_deadline, deadline), deadline)
        deferred_until = deferred & (effective >= as_of_ord)
        cents = np.maximum(100, np.round(120_000 * np.exp(rng.normal(0.0, 1.4, n)))).astype(np.int64)
        paid = np.where(rng.random(n) < 0.2, (cents * rng.uniform(0.1, 0.9, n)).astype(np.int64), 0)
        outstanding = cents - paid
        ids = np.arange(next_id, next_id + n, dtype=np.int64)
        next_id += n
        yield pa.table(
            {
                "liability_id": ids,
                "taxpayer_id": tp_ids.take(take),
                "taxpayer_name": tp_names.take(take),
                "taxpayer_type": pa.array(np.where(rng.random(n) < 0.8, "enterprise", "individual")),
                "taxpayer_status": pa.array(["normal"] * n),
                "tax_type": _pick(rng, _TAX_TYPES, n),
                "period": pa.array([period_deadlines[i][0] for i in which.tolist()]),
                "principal": _money(cents, shape),
                "paid": _money(paid, shape),
                "outstanding": _money(outstanding, shape),
                "deadline": _dates(effective, shape),
                "original_deadline": _dates(deadline, shape),
                "deferred_until": _dates(effective, shape, valid=deferred_until),
                "mobile": tp_phones.take(take),
                "contact_role": pa.array(["legal_rep"] * n),
                "mobile_normalized": tp_phones.take(take),
                "taxpayer_id_ok": pa.array(np.ones(n, dtype=bool)),
                "taxpayer_id_review": pa.array(np.zeros(n, dtype=bool)),
                "taxpayer_id_reason": pa.nulls(n, pa.string()),
                "outstanding_yuan": pa.array(outstanding / 100.0),
                "days_overdue": pa.array(as_of_ord - deadline),
            }
        )


def power_blocks(rows: int, *, shape: str, seed: int = 11, as_of: date = AS_OF) -> Iterator[pa.Table]:
    """Yield validated dunning items (billing shape: bills and prepaid balances) in blocks."""
    as_of_ord = as_of.toordinal()
    next_bill = 1
    for start in range(0, rows, BLOCK):
        n = min(BLOCK, rows - start)
        rng = np.random.default_rng([seed, start // BLOCK])
        sizes = _group_sizes(rng, n, [1, 2, 3, 4, 6, 10, 14], [60, 14, 10, 5, 4, 4, 3])
        units = len(sizes)
        prepaid_unit = rng.random(units) < 0.1
        sizes = np.where(prepaid_unit, 1, sizes)
        n = int(sizes.sum())
        unit = np.repeat(np.arange(units), sizes)
        take = pa.array(unit)
        accounts = _digits(rng.integers(0, 10**13, units), 13)
        names = _names(rng, units, company_share=0.27)
        phones = _share_phones(rng, _phones(rng, units), share=0.02)
        klass = pa.array(np.where(rng.random(units) < 0.73, "residential", "non_residential"))
        due_day = rng.choice([10, 15, 20, 25], units)
        # The k-th unpaid bill of an account is k months before its latest due date; the latest
        # due date falls anywhere in the last ~40 days, so every ladder stage is reached.
        latest = as_of_ord - rng.integers(0, 40, units)
        within = np.arange(n) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        due = latest[unit] - 30 * within + (due_day[unit] - 15) // 5
        prepaid = prepaid_unit[unit]
        cents = np.maximum(500, np.round(18_000 * np.exp(rng.normal(0.0, 1.2, n)))).astype(np.int64)
        balance_cents = rng.integers(-3_000, 5_000, n)
        demand = (~prepaid) & (as_of_ord - due > 30) & (rng.random(n) < 0.4)
        bill_ids = np.arange(next_bill, next_bill + n)
        next_bill += n
        item = pc.if_else(pa.array(prepaid), accounts.take(take), bill_ids.astype(str))
        money = _money(cents, shape)
        bal = _money(balance_cents, shape)
        nulls_money = pa.nulls(n, money.type)
        yield pa.table(
            {
                "kind": pa.array(np.where(prepaid, "balance", "bill")),
                "item_id": item,
                "account_no": accounts.take(take),
                "name": names.take(take),
                "customer_class": klass.take(take),
                "mobile": phones.take(take),
                "period": pa.array(np.where(prepaid, None, "2026-10"), pa.string()),
                "outstanding": pc.if_else(pa.array(prepaid), nulls_money, money),
                "due_date": _dates(due, shape, valid=~prepaid),
                "demand_logged": pa.array(demand.astype(np.int64)),
                "balance": pc.if_else(pa.array(prepaid), bal, nulls_money),
                "promised_until": pa.nulls(n, pa.string()),
                "topup_amount": pa.nulls(n, pa.string()),
                "topup_on": pa.nulls(n, pa.string()),
                "mobile_normalized": phones.take(take),
                "account_ok": pa.array(np.ones(n, dtype=bool)),
                "outstanding_yuan": pa.array(np.where(prepaid, np.nan, cents / 100.0)),
                "balance_yuan": pa.array(np.where(prepaid, balance_cents / 100.0, np.nan)),
                "days_overdue": pa.array(np.where(prepaid, np.nan, as_of_ord - due).astype(float)),
                "item_complete": pa.array(np.ones(n, dtype=bool)),
            }
        )


def write_file(path: Path, campaign: str, rows: int, shape: str) -> None:
    """Write the synthetic validated file, a block (row group) at a time."""
    blocks = tax_blocks(rows, shape=shape) if campaign == "tax" else power_blocks(rows, shape=shape)
    writer = None
    for block in blocks:
        if writer is None:
            writer = pq.ParquetWriter(path, block.schema)
        writer.write_table(block)
    if writer is not None:
        writer.close()


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--campaign", choices=("tax", "power"), default="tax")
    parser.add_argument("--debtors", type=int, default=1_000_000, help="validated records in the file")
    parser.add_argument("--shape", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--mode", choices=("chunked", "pandas"), default="chunked",
                        help="chunked: the plan step's loop; pandas: whole frame, sort_values, to_dict")  # fmt: skip
    parser.add_argument("--file", type=Path, help="reuse or keep the generated Parquet file here")
    parser.add_argument("--store", help="also UPSERT each chunk into this dunning store (SQLAlchemy URL)")
    parser.add_argument("--processes", type=int, help="planning processes (default: the operator's default)")
    parser.add_argument("--opted-out-share", type=float, default=0.01)
    parser.add_argument("--recent-share", type=float, default=0.02)
    parser.add_argument(
        "--reference",
        action="store_true",
        help="render every text with Jinja and count SMS parts character by character (the slow path)",
    )
    parser.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    path = (
        args.file
        or Path(tempfile.gettempdir()) / f"bench_plan_{args.campaign}_{args.shape}_{args.debtors}.parquet"
    )
    if args.generate_only:
        write_file(path, args.campaign, args.debtors, args.shape)
        return
    if not path.exists():
        started = time.perf_counter()
        # a child process writes the file, so its memory does not count toward the plan's peak
        subprocess.run(
            [sys.executable, __file__, "--generate-only", "--campaign", args.campaign, "--debtors",
             str(args.debtors), "--shape", args.shape, "--file", str(path)],
            check=True,
        )  # fmt: skip
        print(
            f"generated {path} ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - started:.1f} s"
        )
    try:
        run(args, path)
    finally:
        if args.file is None:
            os.unlink(path)


class BenchStore:
    """The dunning store as the plan step uses it, with deterministic opt-outs and recent contacts.

    ``opted_out`` and ``recent_contacts`` answer from a hash of the number (about
    ``--opted-out-share`` and ``--recent-share`` of them); with ``--store`` the rows are really
    UPSERTed into that store, else the ledger write (measured by bench/ledger.py) is skipped.
    """

    def __init__(self, opted_out_share: float, recent_share: float, real: Any = None) -> None:
        self.opted_share = int(opted_out_share * 10_000)
        self.recent_share = int(recent_share * 10_000)
        self.real = real
        self.upsert_seconds = 0.0

    def opted_out(self, phones: list[str]) -> set[str]:
        return {p for p in phones if zlib.crc32(p.encode()) % 10_000 < self.opted_share}

    def recent_contacts(self, phones: list[str], since: datetime) -> dict[str, datetime]:
        last = datetime(2026, 11, 20, 9)
        return {p: last for p in phones if zlib.crc32(p[::-1].encode()) % 10_000 < self.recent_share}

    def contact_history(self, campaign: str, since: date) -> dict:
        return self.real.contact_history(campaign, since=since) if self.real is not None else {}

    def flag_for_staff(self, flags: list) -> int:
        return self.real.flag_for_staff(flags) if self.real is not None else 0

    def upsert_planned(self, rows: list[dict]) -> Any:
        from include.dunning.ledger import UpsertCounts

        if self.real is None:
            return UpsertCounts()
        t = time.perf_counter()
        counts = self.real.upsert_planned(rows)
        self.upsert_seconds += time.perf_counter() - t
        return counts


def run(args: argparse.Namespace, path: Path) -> None:
    if args.mode == "pandas":
        run_pandas(args, path)
        return
    from include.dunning import chunks
    from operators.plan import PlanPowerOperator, PlanTaxPaymentOperator

    processes = args.processes  # None: the operator's default
    if args.reference:
        reference_paths()
        processes = 1  # the swapped functions live in this process only
    real = None
    if args.store:
        from include.dunning.ledger import DunningStore

        real = DunningStore(args.store)
        real.create_schema()
    store = BenchStore(args.opted_out_share, args.recent_share, real)
    if args.campaign == "tax":
        op = PlanTaxPaymentOperator(task_id="plan", valid_path=str(path), chunk_rows=args.chunk_rows,
                                    plan_processes=processes)  # fmt: skip
    else:
        op = PlanPowerOperator(task_id="plan", valid_path=str(path), voice_gateway="modem_pool",
                               chunk_rows=args.chunk_rows, plan_processes=processes)  # fmt: skip
    processes = op.processes()
    preview = Path(tempfile.gettempdir()) / f"bench_plan_preview_{os.getpid()}.csv"
    planned_at = datetime(2026, 11, 23, 1)

    records_in = messages = suppressed = parts = 0
    started = time.perf_counter()
    cpu_started = time.process_time()
    # What PlanContactsOperator.execute does per chunk, minus the ledger write (unless --store):
    # campaign (lint, ladder), history, chunked planning in the operator's processes, routing,
    # counts, after_plan, preview CSV.
    campaign = op.make_campaign()
    inputs = op.extra_inputs(store, campaign, AS_OF)
    records_in = pq.ParquetFile(path).metadata.num_rows
    with path.open("rb") as fh, preview.open("w", encoding="utf-8-sig") as out:
        out.write(templates_preview_header())
        for rows, summary in op.plan_chunks(
            fh, campaign, store, as_of=AS_OF, run_id="bench", planned_at=planned_at, inputs=inputs
        ):
            store.upsert_planned(rows)
            if summary["preview"]:
                out.write(summary["preview"])
            messages += len(rows)
            suppressed += sum(summary["decided"].values())
            parts += sum(r["parts"] for r in rows)
            del rows
    total = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_children = children.ru_utime + children.ru_stime
    preview.unlink()
    print(
        f"{args.campaign} ({args.shape}, chunked, {processes} process{'es' if processes > 1 else ''}"
        f"{', reference' if args.reference else ''}): {records_in:,} records -> {messages:,} ledger rows "
        f"({suppressed:,} suppressed, {parts:,} SMS parts)"
    )
    print(
        f"  total {total:.1f} s"
        + (f" (upsert {store.upsert_seconds:.1f} s)" if real is not None else "")
        + f": {records_in / total:,.0f} records/s end to end, {messages / total:,.0f} ledger rows/s"
    )
    print(
        f"  peak RSS {peak_rss_mib():,.0f} MiB (task process)"
        + (
            f" + {chunks.worker_peak_rss_mib():,.0f} MiB (largest worker) x {processes - 1}"
            if processes > 1
            else ""
        )
    )
    print(
        f"  CPU time {cpu + cpu_children:.1f} s (task process {cpu:.1f} s, workers {cpu_children:.1f} s): "
        f"{records_in / (cpu + cpu_children):,.0f} records per CPU-second (busy machines: compare these)"
    )


def templates_preview_header() -> str:
    from include.dunning import planner

    return planner.preview_csv([], header=True)


def reference_paths() -> None:
    """Swap in the straightforward render (Jinja) and part count (character by character)."""
    from include.dunning import sms, templates

    templates.render = templates.render_with_jinja
    templates.sms_parts = lambda text: sms._greedy_parts(text, sms.choose_coding(text))


def run_pandas(args: argparse.Namespace, path: Path) -> None:
    """Plan the old way: the whole file in pandas, ``sort_values``, ``to_dict``, one planner call."""
    import pandas as pd

    from include.dunning import planner
    from include.dunning.ladder import load_ladder

    if args.reference:
        reference_paths()
    sort = TAX_SORT if args.campaign == "tax" else POWER_SORT
    planned_at = datetime(2026, 11, 23, 1)
    store = BenchStore(args.opted_out_share, args.recent_share)
    started = time.perf_counter()
    cpu_started = time.process_time()
    if args.campaign == "tax":
        campaign = planner.TaxPaymentCampaign()
        campaign.lint()
        ladder = load_ladder("tax")
        plan = planner.plan_tax_payment
    else:
        campaign = planner.PowerCampaign(voice_gateway="modem_pool")
        ladder = load_ladder("power")
        plan = planner.plan_power
    frame = pd.read_parquet(path).sort_values(list(sort), kind="stable")
    recs = frame.to_dict("records")
    del frame
    phones = list({r["mobile_normalized"] for r in recs})
    rows = list(
        plan(recs, as_of=AS_OF, run_id="bench", planned_at=planned_at, campaign=campaign, ladder=ladder,
             opted_out=store.opted_out(phones), last_contact=store.recent_contacts(phones, planned_at))
    )  # fmt: skip
    total = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    print(f"{args.campaign} ({args.shape}, pandas{', reference' if args.reference else ''}): "
          f"{len(recs):,} records -> {len(rows):,} ledger rows")  # fmt: skip
    print(
        f"  total {total:.1f} s: {len(recs) / total:,.0f} records/s end to end; peak RSS {peak_rss_mib():,.0f} MiB"
    )
    print(f"  CPU time {cpu:.1f} s: {len(recs) / cpu:,.0f} records per CPU-second")


if __name__ == "__main__":
    main()
