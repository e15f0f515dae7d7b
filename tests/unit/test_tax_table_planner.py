"""The columnar tax payment planner gives exactly what the reference planner gives.

``planner.plan_tax_payment_table(table, ...)`` must return, for any Arrow table sorted by
(mobile_normalized, taxpayer_id, deadline), exactly
``list(planner.plan_tax_payment(chunks.records(table), ...))`` with the same arguments: the same
rows in the same order, the same keys (in the same order), the same values of the same types
(Decimal amounts with the same exponent), the same texts, parts, keys, states and reasons.

Tables are built here in the shape of the validated levy data (and in the shapes other sources
give: floats from SQLite, ISO strings, four-decimal amounts, dictionary-encoded or chunked
columns), from a seeded generator and by hand. Every comparison also checks that the reference
gives rows at all (and, for the generated tables, every kind of decision), so no test passes
vacuously.
"""

from __future__ import annotations

import copy
import dataclasses
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from include.dunning import chunks, planner, reporting
from include.dunning.ladder import load_ladder

AS_OF = date(2026, 11, 23)
PLANNED_AT = datetime(2026, 11, 23, 1)
RUN_ID = "scheduled__2026-11-23T01:00:00+00:00"
SORT_KEYS = [("mobile_normalized", "ascending"), ("taxpayer_id", "ascending"), ("deadline", "ascending")]
TAX_LADDER = load_ladder("tax")
STAGE = "payment_overdue"  # the packaged ladder's only overdue stage: day 1 on, weekly, 8 attempts

COMPANIES = (
    "示范市东城商贸有限公司",
    "示范市西岭建筑工程有限公司",
    "新疆维吾尔自治区乌鲁木齐市天山区某某某某商贸有限责任公司",
    "示范市南湖餐饮管理有限公司",
    "示范市北山物流有限公司",
    "示范市春晖文化传媒有限公司",
    "示范市恒达机械设备租赁有限公司",
)
PEOPLE = ("张伟", "王芳", "李娜", "刘洋", "陈静", "杨磊", "赵敏", "黄丽", "周杰", "吴刚")
TAX_TYPES = ("增值税", "企业所得税", "个人所得税", "城市维护建设税", "印花税", "房产税", "城镇土地使用税")

# ---------------------------------------------------------------------------------------------
# comparing


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 240 else text[:240] + "..."


def _row_problems(fast: Any, ref: dict[str, Any]) -> list[str]:
    if type(fast) is not dict:
        return [f"fast row is a {type(fast).__name__}, not a dict: {_short(fast)}"]
    problems = []
    if list(fast) != list(ref):
        missing = [k for k in ref if k not in fast]
        extra = [k for k in fast if k not in ref]
        if missing or extra:
            problems.append(f"keys: missing {missing}, extra {extra}")
        else:
            problems.append(f"key order: fast {list(fast)} vs reference {list(ref)}")
    for key, want in ref.items():
        if key not in fast:
            continue
        got = fast[key]
        if type(got) is not type(want):
            problems.append(
                f"{key}: type {type(got).__name__} {_short(got)} != reference {type(want).__name__} {_short(want)}"
            )
        elif got != want or (isinstance(want, Decimal) and str(got) != str(want)):
            problems.append(f"{key}: fast {_short(got)} != reference {_short(want)}")
    return problems


def assert_same_rows(fast: Any, ref: list[dict[str, Any]]) -> None:
    """Fail with the first differing row and its differing keys (not a dump of every row)."""
    assert type(fast) is list, f"plan_tax_payment_table returned a {type(fast).__name__}, not a list"
    for i, (got, want) in enumerate(zip(fast, ref, strict=False)):
        problems = _row_problems(got, want)
        if problems and isinstance(got, dict) and got.get("phone") != want["phone"]:
            problems.insert(0, "different numbers: a row is missing or extra here (or out of order)")
        if problems:
            pytest.fail(
                f"row {i} of {len(ref)} (reference phone {want['phone']}, fast phone "
                f"{got.get('phone') if isinstance(got, dict) else '?'}) differs:\n  " + "\n  ".join(problems),
                pytrace=False,
            )
    if len(fast) != len(ref):
        n = min(len(fast), len(ref))
        longer, name = (fast, "fast") if len(fast) > len(ref) else (ref, "reference")
        extra = longer[n]
        phone = extra.get("phone") if isinstance(extra, dict) else extra
        pytest.fail(
            f"fast gives {len(fast)} rows, reference {len(ref)}: the first {n} agree; "
            f"{name} row {n} is for phone {phone}",
            pytrace=False,
        )


def plan_both(table: pa.Table, **kwargs: Any) -> list[dict[str, Any]]:
    """Plan ``table`` both ways, assert the fast rows equal the reference rows, return the latter."""
    kwargs.setdefault("as_of", AS_OF)
    kwargs.setdefault("run_id", RUN_ID)
    kwargs.setdefault("planned_at", PLANNED_AT)
    kwargs.setdefault("campaign", planner.TaxPaymentCampaign())
    # Each path gets its own copies of the lookups: neither can see what the other did to them.
    ref = list(planner.plan_tax_payment(chunks.records(table), **copy.deepcopy(kwargs)))
    lines: list[str] = []
    fast = planner.plan_tax_payment_table(table, **copy.deepcopy(kwargs), preview=lines)
    assert_same_rows(fast, ref)
    # The preview lines written on the way are preview_csv's lines of the same rows.
    expected = planner.preview_csv(ref)
    written = "\n".join(lines) + "\n" if lines else ""
    if written != expected:
        for n, (got, want) in enumerate(zip(written.split("\n"), expected.split("\n"), strict=False)):
            assert got == want, f"preview line {n}: fast {got!r} != reference {want!r}"
        assert written == expected, f"preview: {len(lines)} lines, reference {len(ref)} rows"
    return ref


def check(table: pa.Table, **kwargs: Any) -> list[dict[str, Any]]:
    """Like :func:`plan_both`, and the reference must give at least one row."""
    ref = plan_both(table, **kwargs)
    assert len(ref) > 0, "the reference planned nothing: the case would pass vacuously"
    return ref


# ---------------------------------------------------------------------------------------------
# building tables

#: Column types per variant: (outstanding, dates, strings)
VARIANTS = {
    "decimal": "validated Parquet: decimal128(14,2), date32",
    "float64": "SQLite: outstanding as float64",
    "decimal18_4": "decimal128(18,4) with third and fourth decimals (rounded half up to the fen)",
    "iso_strings": "deadline, deferred_until and promised_until as ISO strings",
    "no_promised_until": "no promised_until column",
    "chunked": "decimal/date32 split into many record batches",
}


def sort_table(table: pa.Table) -> pa.Table:
    return table.take(pc.sort_indices(table, sort_keys=SORT_KEYS))


def _amounts(units: list[int], variant: str) -> pa.Array:
    """Amounts from ten-thousandths of a yuan (the two-decimal variants drop the sub-fen digits)."""
    if variant == "decimal18_4":
        return pa.array([Decimal(u).scaleb(-4) for u in units], pa.decimal128(18, 4))
    cents = [u // 100 if u >= 0 else -((-u) // 100) for u in units]
    if variant == "float64":
        return pa.array([c / 100 for c in cents], pa.float64())
    return pa.array([Decimal(c).scaleb(-2) for c in cents], pa.decimal128(14, 2))


def _dates(values: list[date | None], variant: str) -> pa.Array:
    if variant == "iso_strings":
        return pa.array([None if d is None else d.isoformat() for d in values], pa.string())
    return pa.array(values, pa.date32())


def build_table(rows: list[dict[str, Any]], variant: str = "decimal", extra: bool = False) -> pa.Table:
    """Return the sorted levy table of ``rows`` (dicts with ``units`` = amount in 1/10000 yuan)."""
    columns: dict[str, pa.Array] = {}
    if extra:
        columns["liability_id"] = pa.array(range(1, len(rows) + 1), pa.int64())
    columns["taxpayer_id"] = pa.array([r["taxpayer_id"] for r in rows], pa.string())
    columns["taxpayer_name"] = pa.array([r["taxpayer_name"] for r in rows], pa.string())
    columns["tax_type"] = pa.array([r["tax_type"] for r in rows], pa.string())
    columns["period"] = pa.array([r["period"] for r in rows], pa.string())
    columns["outstanding"] = _amounts([r["units"] for r in rows], variant)
    columns["deadline"] = _dates([r["deadline"] for r in rows], variant)
    columns["deferred_until"] = _dates([r["deferred_until"] for r in rows], variant)
    if variant != "no_promised_until":
        columns["promised_until"] = _dates([r["promised_until"] for r in rows], variant)
    columns["mobile_normalized"] = pa.array([r["phone"] for r in rows], pa.string())
    if extra:
        columns["taxpayer_id_ok"] = pa.array([True] * len(rows))
        columns["outstanding_yuan"] = pa.array([r["units"] / 10000 for r in rows], pa.float64())
        columns["contact_role"] = pa.array(["legal_rep"] * len(rows), pa.string())
        columns["days_overdue"] = pa.array([(AS_OF - r["deadline"]).days for r in rows], pa.int64())
    table = sort_table(pa.table(columns))
    if variant == "chunked":
        table = pa.Table.from_batches(table.to_batches(max_chunksize=97), schema=table.schema)
    return table


def liability(
    phone: str = "13800000001",
    taxpayer_id: str = "91110000000000001A",
    name: str = "示范市东城商贸有限公司",
    *,
    days: int = 10,
    amount: str = "1000.00",
    tax_type: str = "增值税",
    period: str = "2026-10",
    deferred_until: date | None = None,
    promised_until: date | None = None,
) -> dict[str, Any]:
    """One hand-made liability ``days`` overdue on AS_OF (``amount`` with up to four decimals)."""
    return {
        "phone": phone,
        "taxpayer_id": taxpayer_id,
        "taxpayer_name": name,
        "tax_type": tax_type,
        "period": period,
        "units": int(Decimal(amount).scaleb(4)),
        "deadline": AS_OF - timedelta(days=days),
        "deferred_until": deferred_until,
        "promised_until": promised_until,
    }


def _days_overdue(rng: np.random.Generator) -> int:
    bucket = rng.random()
    if bucket < 0.10:
        return int(rng.integers(-40, 1))  # not yet overdue (deadline today or later): no stage
    if bucket < 0.55:
        return int(rng.integers(1, 57))  # attempts 1..8
    if bucket < 0.70:
        return int(rng.choice([1, 2, 7, 8, 14, 15, 49, 50, 56, 57, 58]))  # attempt boundaries
    if bucket < 0.92:
        return int(rng.integers(57, 400))  # past max_attempts
    return int(rng.integers(1000, 6000))  # very long overdue: surcharge above the principal


def _units(rng: np.random.Generator) -> int:
    bucket = rng.random()
    if bucket < 0.03:
        return 0
    if bucket < 0.04:
        return 99_999_999_999_999  # 9,999,999,999.99 (and .9999 with four decimals)
    if bucket < 0.06:
        return int(rng.integers(1, 100))  # below one fen
    cents = max(1, int(round(120_000 * float(np.exp(rng.normal(0.0, 1.6))))))
    sub = int(rng.choice([0, 0, 0, 50, 49, 51, int(rng.integers(0, 100))]))  # half-up cases
    return cents * 100 + sub


def random_rows(seed: int, phones: int = 650) -> list[dict[str, Any]]:
    """Generate liabilities for ``phones`` numbers: shared numbers, many liabilities, every decision.

    A number's ``mode`` steers its group: all not yet overdue (no row), all deferred, all under
    a promise, all past ``max_attempts``, deferrals and promises mixed, or the usual mixture.
    """
    rng = np.random.default_rng(seed)
    numbers = sorted({f"1{rng.integers(3, 10)}{rng.integers(0, 10**9):09d}" for _ in range(phones)})
    modes = ["usual"] * 12 + ["future", "deferred", "promised", "past_max", "deferred_promised",
                               "some_deferred", "past_stops"]  # fmt: skip
    rows: list[dict[str, Any]] = []
    taxpayer_pool: list[tuple[str, str]] = []
    for phone in numbers:
        mode = str(rng.choice(modes))
        shared = rng.random()
        n_taxpayers = 1 if shared < 0.75 else 2 if shared < 0.85 else int(rng.integers(3, 7))
        for _ in range(n_taxpayers):
            if taxpayer_pool and rng.random() < 0.05:  # a taxpayer known under another number too
                tp_id, name = taxpayer_pool[int(rng.integers(0, len(taxpayer_pool)))]
            else:
                tp_id = f"{rng.choice(['91', '92'])}{rng.integers(0, 10**16):016d}"
                pool = COMPANIES if rng.random() < 0.7 else PEOPLE
                name = str(pool[int(rng.integers(0, len(pool)))])
                taxpayer_pool.append((tp_id, name))
            many = rng.random()
            n_liabilities = int(rng.integers(1, 4)) if many < 0.8 else int(rng.integers(4, 13))
            for _ in range(n_liabilities):
                days = _days_overdue(rng)
                if mode == "future":
                    days = int(rng.integers(-40, 1))
                elif mode == "past_max":
                    days = int(rng.integers(57, 3000))
                deferred = promised = None
                if mode == "deferred" or (mode == "some_deferred" and rng.random() < 0.5):
                    deferred = AS_OF + timedelta(days=int(rng.integers(0, 60)))
                elif mode == "promised":
                    promised = AS_OF + timedelta(days=int(rng.integers(0, 30)))
                elif mode == "deferred_promised":
                    if rng.random() < 0.4:
                        deferred = AS_OF + timedelta(days=int(rng.integers(0, 60)))
                    else:
                        promised = AS_OF + timedelta(days=int(rng.integers(0, 30)))
                elif mode == "past_stops":
                    deferred = AS_OF - timedelta(days=int(rng.integers(1, 40)))
                    promised = AS_OF - timedelta(days=int(rng.integers(1, 40)))
                else:
                    r = rng.random()
                    if r < 0.05:
                        deferred = AS_OF + timedelta(days=int(rng.integers(0, 60)))
                    elif r < 0.10:
                        deferred = AS_OF - timedelta(days=int(rng.integers(1, 60)))
                    elif r < 0.14:
                        promised = AS_OF + timedelta(days=int(rng.integers(0, 30)))
                    elif r < 0.18:
                        promised = AS_OF - timedelta(days=int(rng.integers(1, 30)))
                # The same taxpayer now and then spelled differently: the first name wins.
                shown = name if rng.random() > 0.03 else name + "（分公司）"
                year, month = divmod(int(rng.integers(2024 * 12, 2026 * 12 + 10)), 12)
                rows.append(
                    {
                        "phone": phone,
                        "taxpayer_id": tp_id,
                        "taxpayer_name": shown,
                        "tax_type": str(TAX_TYPES[int(rng.integers(0, len(TAX_TYPES)))]),
                        "period": f"{year}-{month + 1:02d}",
                        "units": _units(rng),
                        "deadline": AS_OF - timedelta(days=days),
                        "deferred_until": deferred,
                        "promised_until": promised,
                    }
                )
    order = rng.permutation(len(rows))  # the table is sorted by build_table, not by the generator
    return [rows[i] for i in order.tolist()]


def eligibility(
    rows: list[dict[str, Any]], seed: int, stages: tuple[str, ...] = (STAGE,), as_of: date = AS_OF
) -> dict[str, Any]:
    """Opt-outs, last contacts (inside and outside the cap) and contact history for some numbers."""
    rng = np.random.default_rng(seed)
    phones = sorted({r["phone"] for r in rows})
    opted_out = {p for p in phones if rng.random() < 0.04}
    last_contact = {}
    for p in phones:
        if rng.random() < 0.2:
            ago = int(rng.integers(-1, 16))  # -1: a contact dated after the as-of date
            last_contact[p] = datetime.combine(as_of - timedelta(days=ago), datetime.min.time()) + timedelta(
                hours=int(rng.integers(0, 24)), minutes=int(rng.integers(0, 60))
            )
    history: dict[tuple[str, str, str], dict[str, Any]] = {}
    for p in [*phones, "13999999999"]:  # and a number not in the table
        if rng.random() >= 0.3:
            continue
        for _ in range(int(rng.integers(1, 4))):
            other = rng.random() < 0.15
            stage = "some_other_stage" if other else str(stages[int(rng.integers(0, len(stages)))])
            last = as_of - timedelta(days=int(rng.integers(0, 21 if rng.random() < 0.5 else 160)))
            first = last - timedelta(days=int(rng.integers(0, 30)))
            iso = last.isocalendar()
            kind = rng.random()
            counts = {
                "sms_delivered": int(rng.integers(0, 5)),
                "sms_undelivered": int(kind < 0.35) * int(rng.integers(1, 3)),
                "sms_unanswered": int(rng.integers(0, 4)) if kind > 0.5 else 0,
                "voice_answered": int(rng.integers(0, 2)) if kind > 0.6 else 0,
                "voice_unanswered": int(rng.integers(0, 2)) if kind > 0.7 else 0,
                "voice_failed": int(rng.integers(0, 2)) if kind > 0.9 else 0,
            }
            history[(p, stage, f"{iso.year}-W{iso.week:02d}")] = {
                "first_as_of": first,
                "last_as_of": last,
                **counts,
            }
    return {"opted_out": opted_out, "last_contact": last_contact, "history": history}


def _reason_kinds(rows: list[dict[str, Any]]) -> set[str]:
    kinds = set()
    for r in rows:
        reason = r["reason"]
        kinds.add("planned" if reason is None else reason.split(" ")[0].split(":")[0])
    return kinds


CAMPAIGNS = {
    "defaults": planner.TaxPaymentCampaign(),
    "voice_holdout": planner.TaxPaymentCampaign(voice_gateway="modem_pool", holdout_share=0.3),
    "custom": planner.TaxPaymentCampaign(
        signature="某某区税务局",
        gateway="smpp_backup",
        cap_days=14,
        campaign="tax_payment_2027",
        voice_gateway="modem_pool",
        holdout_share=0.05,
    ),
}


# ---------------------------------------------------------------------------------------------
# generated tables


@pytest.fixture(scope="module")
def generated() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows = random_rows(2026)
    return rows, eligibility(rows, 11)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("campaign", list(CAMPAIGNS))
def test_generated_levy_table_equals_reference(generated, variant, campaign):
    rows, lookups = generated
    table = build_table(rows, variant, extra=variant in ("decimal", "float64"))
    assert table.num_rows > 2000
    ref = check(table, campaign=CAMPAIGNS[campaign], ladder=TAX_LADDER, **lookups)

    # The generated data reaches every decision (else the comparison would prove little).
    kinds = _reason_kinds(ref)
    assert kinds >= {"planned", "opted_out", "deferral", "max_attempts", "frequency_cap"}
    assert ("promise_to_pay" in kinds) is (variant != "no_promised_until")
    if CAMPAIGNS[campaign].holdout_share >= 0.3:
        assert "holdout" in kinds
    if CAMPAIGNS[campaign].voice_gateway is None:
        assert "voice" in kinds  # voice channel not configured: no modems
    else:
        assert any(r["channel"] == "voice" and r["state"] == "PLANNED" for r in ref)
        assert {r["attempt"] for r in ref if r["channel"] == "voice"} >= {1, 2}
    assert len(ref) < len({r["phone"] for r in rows})  # some numbers have no stage at all
    assert any(r["amount"] == 0 for r in ref) and any(r["amount"] >= Decimal("9999999999.99") for r in ref)
    assert any(r["surcharge"] > r["amount"] > 0 for r in ref)  # thousands of days: uncapped
    assert any("等" in r["message_text"] for r in ref) and any(r["parts"] > 1 for r in ref)


@pytest.mark.parametrize("as_of", [date(2026, 12, 31), date(2027, 1, 4)], ids=["2026-W53", "2027-W01"])
def test_generated_table_other_as_of_dates(generated, as_of):
    rows, _ = generated
    lookups = eligibility(rows, 5, as_of=as_of)
    table = build_table(rows, "decimal")
    ref = check(
        table,
        as_of=as_of,
        planned_at=datetime.combine(as_of, datetime.min.time()),
        campaign=CAMPAIGNS["voice_holdout"],
        **lookups,
    )
    assert {r["period"] for r in ref} == {planner.campaign_week(as_of)}


def test_generated_table_with_the_default_arguments(generated):
    """ladder None (the packaged one), no opt-outs, no last contacts, no history."""
    rows, _ = generated
    table = build_table(rows, "decimal")
    ref = list(
        planner.plan_tax_payment(
            chunks.records(table), as_of=AS_OF, run_id=RUN_ID, planned_at=PLANNED_AT,
            campaign=planner.TaxPaymentCampaign(),
        )
    )  # fmt: skip
    fast = planner.plan_tax_payment_table(
        table, as_of=AS_OF, run_id=RUN_ID, planned_at=PLANNED_AT, campaign=planner.TaxPaymentCampaign()
    )
    assert len(ref) > 0
    assert_same_rows(fast, ref)


def test_generated_table_in_slices_equals_the_whole(generated):
    """Planning phone-complete slices of the table gives the rows of the whole table, in order."""
    rows, lookups = generated
    table = build_table(rows, "decimal")
    phones = table.column("mobile_normalized").to_pylist()
    cuts = (
        [0]
        + [i for i in range(1, len(phones)) if phones[i] != phones[i - 1] and i % 400 < 12]
        + [len(phones)]
    )
    kwargs = dict(as_of=AS_OF, run_id=RUN_ID, planned_at=PLANNED_AT, campaign=CAMPAIGNS["custom"], **lookups)
    whole = list(planner.plan_tax_payment(chunks.records(table), **kwargs))
    pieces = []
    for start, end in zip(cuts, cuts[1:], strict=False):
        piece = table.slice(start, end - start)
        pieces.extend(plan_both(piece, **kwargs))
    assert len(cuts) > 5 and len(whole) > 0
    assert_same_rows(pieces, whole)


CUSTOM_LADDER = """\
domain: tax
campaign: tax_dunning
timezone: Asia/Shanghai
sending_windows:
  sms: "08:00-20:00"
  voice: "09:00-20:00"
weekly_cap:
  contacts: 1
  days: 7
flag_after_failed_contacts: 3
stages:
  - name: early
    kind: overdue
    min_days_overdue: 0
    max_days_overdue: 14
    repeat_every_days: 7
    max_attempts: 2
    channels:
      - channel: sms
        when: first
        max_attempts: 2
    templates:
      sms: sms/tax/payment_overdue.j2
  # days 15..29: no stage
  - name: firm
    kind: overdue
    min_days_overdue: 30
    max_days_overdue: 120
    repeat_every_days: 14
    max_attempts: 4
    channels:
      - channel: sms
        when: first
        max_attempts: 3
      - channel: voice
        when: undelivered
        max_attempts: 1
      - channel: voice
        when: unanswered_after:1
        max_attempts: 2
    templates:
      sms: sms/tax/payment_overdue.j2
      voice: voice/tax/payment_overdue.j2
  - name: final
    kind: overdue
    min_days_overdue: 121
    channels:
      - channel: sms
        when: first
      - channel: voice
        when: undelivered
        max_attempts: 1
    templates:
      sms: sms/tax/payment_overdue.j2
      voice: voice/tax/payment_overdue.j2
"""


@pytest.fixture(scope="module")
def custom_ladder(tmp_path_factory):
    path: Path = tmp_path_factory.mktemp("ladder") / "tax_custom.yaml"
    path.write_text(CUSTOM_LADDER, encoding="utf-8")
    return load_ladder(path)


@pytest.mark.parametrize("variant", ["decimal", "float64", "iso_strings"])
def test_generated_table_with_a_three_stage_ladder(custom_ladder, variant):
    """Stages with gaps, per-stage attempts, channel caps (exhausted) and a one-attempt stage."""
    rows = random_rows(77, phones=500)
    lookups = eligibility(rows, 3, stages=("early", "firm", "final"))
    table = build_table(rows, variant)
    ref = check(table, campaign=CAMPAIGNS["voice_holdout"], ladder=custom_ladder, **lookups)
    assert {r["stage"] for r in ref} == {"early", "firm", "final"}
    kinds = _reason_kinds(ref)
    assert {"channel", "max_attempts", "planned"} <= kinds  # channel attempts exhausted in ...
    assert {r["channel"] for r in ref} == {"sms", "voice"}


EXOTIC_TYPES = {
    "timestamp_deadline": lambda t: _cast(t, "deadline", pa.timestamp("us")),
    "date64_dates": lambda t: _cast(_cast(t, "deadline", pa.date64()), "deferred_until", pa.date64()),
    "datetime_strings": lambda t: _replace(
        t, "deadline", pc.binary_join_element_wise(t.column("deadline").cast(pa.string()), " 00:00:00", "")
    ),
    "large_strings": lambda t: _cast_all(t, pa.string(), pa.large_string()),
    "dictionary_strings": lambda t: _dictionary(t),
    "decimal256": lambda t: _cast(t, "outstanding", pa.decimal256(40, 2)),
    "decimal_scale_0": lambda t: _cast(t, "outstanding", pa.decimal128(20, 0), safe=False),
    "int64_outstanding": lambda t: _cast(t, "outstanding", pa.int64(), safe=False),
    "null_typed_promises": lambda t: _replace(t, "promised_until", pa.nulls(t.num_rows)),
    "no_stop_columns": lambda t: t.drop_columns(["deferred_until", "promised_until"]),
    "int64_phones": lambda t: _cast(t, "mobile_normalized", pa.int64()),
    "sliced": lambda t: t.slice(0, t.num_rows),
}


def _replace(table: pa.Table, name: str, column: Any) -> pa.Table:
    return table.set_column(table.column_names.index(name), name, column)


def _cast(table: pa.Table, name: str, kind: pa.DataType, safe: bool = True) -> pa.Table:
    return _replace(table, name, pc.cast(table.column(name), kind, safe=safe))


def _cast_all(table: pa.Table, kind: pa.DataType, to: pa.DataType) -> pa.Table:
    for name in table.column_names:
        if table.schema.field(name).type == kind:
            table = _cast(table, name, to)
    return table


def _dictionary(table: pa.Table) -> pa.Table:
    for name in ("taxpayer_id", "taxpayer_name", "tax_type", "period", "mobile_normalized"):
        table = _replace(table, name, pc.dictionary_encode(table.column(name)))
    return table


@pytest.mark.parametrize("kind", list(EXOTIC_TYPES))
def test_other_column_types_give_the_same_rows(kind):
    """Column types the fast path may not handle itself: it may fall back, the rows stay equal."""
    rows = random_rows(99, phones=120)
    table = EXOTIC_TYPES[kind](build_table(rows, "decimal"))
    lookups = eligibility(rows, 8)
    check(table, campaign=CAMPAIGNS["voice_holdout"], **lookups)


# ---------------------------------------------------------------------------------------------
# small hand-made cases

TYPE_VARIANTS = ["decimal", "float64", "decimal18_4", "iso_strings"]


def test_empty_table_gives_no_rows():
    for variant in VARIANTS:
        table = build_table([], variant)
        assert table.num_rows == 0
        assert plan_both(table) == []
    assert plan_both(build_table([], "decimal", extra=True)) == []


@pytest.mark.parametrize("variant", TYPE_VARIANTS)
def test_single_row(variant):
    (row,) = check(build_table([liability(days=25, amount="10000.00")], variant))
    assert row["state"] == "PLANNED" and row["surcharge"] == Decimal("125.00")


@pytest.mark.parametrize("variant", TYPE_VARIANTS)
def test_extra_unrelated_columns_are_ignored(variant):
    rows = [liability(days=3), liability(days=40, taxpayer_id="91110000000000002B", name="乙公司")]
    table = build_table(rows, variant, extra=True)
    more = table.append_column("note", pa.array(["备注"] * table.num_rows)).append_column(
        "score", pa.array([0.5] * table.num_rows)
    )
    check(more)


@pytest.mark.parametrize("variant", TYPE_VARIANTS)
def test_shared_number_names_two_taxpayers_then_etc(variant):
    """More taxpayers behind one number than MAX_NAMES_IN_MESSAGE; the first spelling of a name wins."""
    rows = [
        liability(taxpayer_id=f"9111000000000000{i:02d}", name=name, days=5 + i, amount=f"{100 + i}.05")
        for i, name in enumerate(["甲公司", "乙公司", "丙公司", "丁公司"])
    ]
    rows.append(liability(taxpayer_id="911100000000000000", name="甲公司（旧名）", days=60, amount="7.77"))
    rows.append(liability(phone="13800000002", taxpayer_id="92X", name="张伟", days=9))
    rows.append(liability(phone="13800000002", taxpayer_id="92X", name="张伟", days=16, tax_type="房产税"))
    ref = check(build_table(rows, variant))
    assert len(ref) == 2
    assert planner.MAX_NAMES_IN_MESSAGE < 4
    assert "等" in ref[0]["message_text"] and ref[0]["debtor_name"] == "甲公司（旧名）"  # earliest deadline
    assert ref[0]["debtor_ids"].count(",") == 3


@pytest.mark.parametrize("variant", TYPE_VARIANTS)
def test_same_taxpayer_many_liabilities(variant):
    rows = [
        liability(days=d, amount=f"{d * 37}.{d % 100:02d}", period=f"2026-{(d % 12) + 1:02d}", tax_type=t)
        for d, t in zip(range(1, 200, 9), TAX_TYPES * 5, strict=False)
    ]
    (row,) = check(build_table(rows, variant))
    assert row["reason"] is None and "笔税款" in row["message_text"]


@pytest.mark.parametrize("variant", TYPE_VARIANTS)
def test_deferrals(variant):
    rows = [
        # all deferred (one until today: still deferred) -> deferral
        liability("13800000001", days=10, deferred_until=AS_OF),
        liability("13800000001", days=70, deferred_until=AS_OF + timedelta(days=30)),
        # some deferred -> the message lists the others only
        liability("13800000002", days=10, amount="500.00", deferred_until=AS_OF + timedelta(days=3)),
        liability("13800000002", taxpayer_id="91B", days=12, amount="40.00"),
        # a deferral that ended yesterday does not count
        liability("13800000003", days=20, deferred_until=AS_OF - timedelta(days=1)),
        # all deferred and opted out: opted_out wins
        liability("13800000004", days=20, deferred_until=AS_OF + timedelta(days=1)),
    ]
    ref = check(build_table(rows, variant), opted_out={"13800000004"})
    by_phone = {r["phone"]: r for r in ref}
    assert by_phone["13800000001"]["reason"] == "deferral"
    assert by_phone["13800000002"]["reason"] is None and by_phone["13800000002"]["amount"] == Decimal("40.00")
    assert by_phone["13800000003"]["reason"] is None
    assert by_phone["13800000004"]["reason"] == "opted_out"


@pytest.mark.parametrize("variant", ["decimal", "float64", "decimal18_4", "iso_strings"])
def test_promises(variant):
    rows = [
        # every undeferred liability under a promise -> promise_to_pay until the latest date
        liability("13800000001", days=10, promised_until=AS_OF + timedelta(days=4)),
        liability("13800000001", days=30, promised_until=AS_OF + timedelta(days=9)),
        liability("13800000001", days=40, deferred_until=AS_OF + timedelta(days=20)),
        # a promise until today still holds
        liability("13800000002", days=10, promised_until=AS_OF),
        # a broken promise (in the past) does not
        liability("13800000003", days=10, promised_until=AS_OF - timedelta(days=1)),
        # one promised, one not: contacted for the other
        liability("13800000004", days=10, amount="1.00", promised_until=AS_OF + timedelta(days=2)),
        liability("13800000004", taxpayer_id="91B", days=11, amount="2.00"),
        # promised, but also past max attempts
        liability("13800000005", days=100, promised_until=AS_OF + timedelta(days=5)),
    ]
    ref = check(build_table(rows, variant))
    reasons = {r["phone"]: r["reason"] for r in ref}
    assert reasons["13800000001"] == f"promise_to_pay until {(AS_OF + timedelta(days=9)).isoformat()}"
    assert reasons["13800000002"] == f"promise_to_pay until {AS_OF.isoformat()}"
    assert reasons["13800000003"] is None and reasons["13800000004"] is None
    assert reasons["13800000005"].startswith("promise_to_pay")


def test_promises_without_a_promised_until_column():
    rows = [liability("13800000001", days=10, promised_until=AS_OF + timedelta(days=4))]
    (row,) = check(build_table(rows, "no_promised_until"))
    assert row["reason"] is None


@pytest.mark.parametrize("variant", TYPE_VARIANTS)
def test_stages_attempts_and_no_stage(variant):
    rows = [
        # not yet overdue: deadline today and tomorrow -> no row
        liability("13800000001", days=0),
        liability("13800000001", taxpayer_id="91B", days=-1),
        # not yet overdue together with an overdue one: one row listing both
        liability("13800000002", days=0, amount="300.00"),
        liability("13800000002", taxpayer_id="91B", days=1, amount="200.00"),
        # past max_attempts (day 57 on) -> max_attempts; one liability still due -> planned
        liability("13800000003", days=57),
        liability("13800000003", taxpayer_id="91B", days=3000),
        liability("13800000004", days=57),
        liability("13800000004", taxpayer_id="91B", days=56),
        # the last day of an attempt and the first of the next
        liability("13800000005", days=7),
        liability("13800000006", days=8),
    ]
    ref = check(build_table(rows, variant))
    by_phone = {r["phone"]: r for r in ref}
    assert "13800000001" not in by_phone
    assert by_phone["13800000002"]["amount"] == Decimal("500.00")
    assert by_phone["13800000003"]["reason"] == f"max_attempts: {STAGE} allows 8"
    assert by_phone["13800000004"]["reason"] is None


@pytest.mark.parametrize("variant", TYPE_VARIANTS)
def test_opt_out_and_frequency_cap(variant):
    phones = [f"1380000000{i}" for i in range(7)]
    rows = [liability(p, days=10 + i) for i, p in enumerate(phones)]
    last_contact = {
        phones[1]: datetime(2026, 11, 17, 23, 59),  # 6 days ago: capped
        phones[2]: datetime(2026, 11, 16, 0, 0),  # 7 days ago: the cap has passed
        phones[3]: datetime(2026, 11, 23, 0, 30),  # today
        phones[4]: datetime(2026, 11, 24, 8),  # after the as-of date
        phones[5]: datetime(2026, 10, 1),
        "13999999999": datetime(2026, 11, 22),  # not in the table
    }
    ref = check(build_table(rows, variant), opted_out={phones[0], phones[1], "13999999998"},
                last_contact=last_contact)  # fmt: skip
    reasons = [r["reason"] for r in ref]
    assert reasons[0] == "opted_out" and reasons[1] == "opted_out"
    assert reasons[2] is None and reasons[3] == "frequency_cap: last contact 2026-11-23"
    assert reasons[4].startswith("frequency_cap") and reasons[5] is None and reasons[6] is None
    # a longer cap (custom campaign) catches the contact of 7 days ago too
    longer = dataclasses.replace(planner.TaxPaymentCampaign(), cap_days=14)
    capped = check(build_table(rows, variant), campaign=longer, last_contact=last_contact)
    assert capped[2]["reason"] == "frequency_cap: last contact 2026-11-16"


def _held_out_ids(share: float, seed: str, count: int, inside: bool) -> list[str]:
    found = []
    for i in range(10_000):
        candidate = f"9111000000{i:08d}"
        if bool(reporting.holdout_group([candidate], share=share, seed=seed)) is inside:
            found.append(candidate)
            if len(found) == count:
                return found
    raise AssertionError("no such ids")


@pytest.mark.parametrize("variant", TYPE_VARIANTS)
def test_holdout(variant):
    campaign = CAMPAIGNS["voice_holdout"]
    held = _held_out_ids(campaign.holdout_share, campaign.campaign, 3, inside=True)
    kept = _held_out_ids(campaign.holdout_share, campaign.campaign, 2, inside=False)
    rows = [
        liability("13800000001", held[0], days=10),  # held out
        liability("13800000002", held[1], days=10),  # two held-out taxpayers: held out
        liability("13800000002", held[2], days=12),
        liability("13800000003", held[0], days=10),  # shared with one outside the group: contacted
        liability("13800000003", kept[0], days=10),
        liability("13800000004", kept[1], days=10),
        liability("13800000005", held[1], days=10, deferred_until=AS_OF),  # deferral before holdout
    ]
    ref = check(build_table(rows, variant), campaign=campaign)
    assert [r["reason"] for r in ref] == ["holdout", "holdout", None, None, "deferral"]


def _history(phone: str, stage: str = STAGE, last: date = AS_OF - timedelta(days=7), **counts: int):
    base = dict.fromkeys(
        ("sms_delivered", "sms_undelivered", "sms_unanswered", "voice_answered", "voice_unanswered",
         "voice_failed"), 0,
    )  # fmt: skip
    iso = last.isocalendar()
    return {(phone, stage, f"{iso.year}-W{iso.week:02d}"): {"first_as_of": last, "last_as_of": last, **base,
                                                             **counts}}  # fmt: skip


def _voice_case_rows() -> tuple[list[dict[str, Any]], dict]:
    rows = [liability(f"1380000000{i}", days=20) for i in range(8)]
    history = {
        **_history("13800000000", sms_delivered=1, sms_undelivered=1),  # undelivered -> voice 1
        **_history("13800000001", sms_delivered=2, sms_unanswered=2),  # unanswered twice -> voice
        **_history("13800000002", sms_delivered=2, sms_unanswered=2, voice_unanswered=1),  # voice 2
        **_history("13800000003", sms_undelivered=1, voice_answered=1, voice_failed=1),  # voice cap -> sms
        **_history("13800000004", sms_undelivered=1, last=AS_OF - timedelta(days=30)),  # before the deadline
        **_history("13800000005", stage="another_stage", sms_undelivered=3),  # another stage
        **_history("13800000006", sms_delivered=1, sms_unanswered=1),  # one unanswered: still sms
        **_history("13800000007", sms_undelivered=1),
        **_history("13800000007", sms_unanswered=1, last=AS_OF - timedelta(days=14)),
    }
    return rows, history


@pytest.mark.parametrize("variant", TYPE_VARIANTS)
def test_history_moves_numbers_to_voice_without_modems(variant):
    rows, history = _voice_case_rows()
    ref = check(build_table(rows, variant), history=history, ladder=TAX_LADDER)
    channels = [(r["channel"], r["attempt"], r["reason"]) for r in ref]
    no_modems = "voice channel not configured: no modems"
    assert channels[:3] == [("voice", 1, no_modems), ("voice", 1, no_modems), ("voice", 2, no_modems)]
    assert channels[3:7] == [("sms", 1, None)] * 4
    assert ref[0]["gateway"] == "smpp_default" and ref[0]["template"].startswith("voice/")


@pytest.mark.parametrize("variant", TYPE_VARIANTS)
def test_history_moves_numbers_to_voice_with_modems(variant):
    rows, history = _voice_case_rows()
    campaign = planner.TaxPaymentCampaign(voice_gateway="modem_pool")
    ref = check(build_table(rows, variant), history=history, campaign=campaign,
                last_contact={"13800000002": datetime(2026, 11, 20, 10)})  # fmt: skip
    assert [(r["channel"], r["attempt"]) for r in ref[:4]] == [
        ("voice", 1),
        ("voice", 1),
        ("voice", 2),
        ("sms", 1),
    ]
    assert ref[0]["gateway"] == "modem_pool" and ref[0]["state"] == "PLANNED"
    assert ref[2]["reason"] == "frequency_cap: last contact 2026-11-20"
    assert ref[3]["gateway"] == "smpp_default"


def test_exhausted_channel_attempts(custom_ladder):
    rows = [
        liability("13800000001", days=3),  # early: sms capped at 2
        liability("13800000002", days=40),  # firm: sms capped at 3, voice needs a reason
        liability("13800000003", days=40),  # firm: undelivered -> voice (cap 1) used -> sms
        liability("13800000004", days=20),  # between stages: no row
        liability("13800000005", days=200),  # final: one attempt, no repeats
        liability("13800000005", taxpayer_id="91B", days=5),
    ]
    history = {
        **_history("13800000001", stage="early", sms_delivered=1, sms_undelivered=1, last=AS_OF),
        **_history("13800000002", stage="firm", sms_delivered=3, last=AS_OF - timedelta(days=14)),
        **_history("13800000003", stage="firm", sms_delivered=1, sms_undelivered=1, voice_failed=1),
    }
    ref = check(build_table(rows), ladder=custom_ladder, history=history,
                campaign=planner.TaxPaymentCampaign(voice_gateway="modem_pool"))  # fmt: skip
    assert [(r["phone"][-1], r["stage"], r["channel"], r["reason"]) for r in ref] == [
        ("1", "early", "sms", "channel attempts exhausted in early"),
        ("2", "firm", "sms", "channel attempts exhausted in firm"),
        ("3", "firm", "sms", None),
        ("5", "final", "sms", None),
    ]


@pytest.mark.parametrize("variant", TYPE_VARIANTS)
def test_large_zero_and_long_overdue_amounts(variant):
    rows = [
        liability("13800000001", days=5000, amount="9999999999.99"),
        liability("13800000001", days=4000, amount="9999999999.99", taxpayer_id="91B"),
        liability("13800000002", days=10, amount="0.00"),
        liability("13800000002", days=11, amount="0.00", taxpayer_id="91B"),
        liability("13800000003", days=3, amount="0.01"),  # surcharge 0.000015 -> 0.00
        liability("13800000004", days=1, amount="10.00"),  # 0.005 -> 0.01 (half up)
        liability("13800000005", days=2500, amount="123456.78"),
    ]
    ref = check(build_table(rows, variant))
    assert ref[0]["amount"] == Decimal("19999999999.98") and ref[0]["surcharge"] > ref[0]["amount"]
    assert ref[1]["amount"] == 0 and ref[1]["surcharge"] == 0
    assert ref[3]["surcharge"] == Decimal("0.01")


@pytest.mark.parametrize("huge", [False, True], ids=["fen_in_int64", "beyond_int64_fen"])
def test_four_decimal_amounts_round_half_up_per_liability(huge):
    amounts = ["1.0050", "1.0049", "2.6750", "0.0050", "0.0049", "0.1250", "10.0051", "1234567.8950"]
    if huge:  # an amount (and its surcharge) too large for fen in int64
        amounts.append("99999999999999.9950")
    rows = [liability(f"138000000{i:02d}", days=7 + i, amount=a) for i, a in enumerate(amounts)]
    rows += [liability("13800000099", taxpayer_id=f"91{i}", days=9, amount="0.0050") for i in range(3)]
    ref = check(build_table(rows, "decimal18_4"))
    assert [str(r["amount"]) for r in ref[:6]] == ["1.01", "1.00", "2.68", "0.01", "0.00", "0.13"]
    assert ref[-1]["amount"] == Decimal("0.03")  # rounded per liability, then summed


def test_float_amounts_convert_through_their_shortest_repr():
    """SQLite floats: 1.005 is 1.00499999... in binary, but its repr '1.005' rounds half up to 1.01."""
    amounts = [1.005, 2.675, 0.125, 0.001, 1234567.895, 0.1 + 0.2, 9999999999.99, 0.0, 0.015, -0.0, 12.3]
    rows = [liability(f"138000000{i:02d}", days=5 + i) for i in range(len(amounts))]
    table = build_table(rows, "float64")
    table = _replace(table, "outstanding", pa.array(amounts, pa.float64()))  # one row per phone: order kept
    ref = check(table)
    assert [str(r["amount"]) for r in ref[:3]] == ["1.01", "2.68", "0.13"]


def test_two_decimal_floats_whose_fen_product_is_inexact():
    """0.29 * 100 is 28.999999999999996 in binary: the fen are still 29."""
    amounts = [0.29, 1.15, 4.35, 0.07, 8.2, 19.99, 1234567.89, 9999999999.99, 0.01, 0.0, -0.0, 100.0]
    rows = [liability(f"138000000{i:02d}", days=20 + i) for i in range(len(amounts))]
    rows += [liability("13800000099", taxpayer_id=f"91{i}", days=30 + i) for i in range(len(amounts))]
    table = build_table(rows, "float64")
    column = [*amounts, *amounts]  # rows sorted by phone: the shared number's twelve come last
    table = _replace(table, "outstanding", pa.array(column, pa.float64()))
    ref = check(table)
    assert [str(r["amount"]) for r in ref[:4]] == ["0.29", "1.15", "4.35", "0.07"]


def test_first_record_after_sorting_gives_period_and_tax_type():
    rows = [
        liability(taxpayer_id="91Z", name="后公司", days=100, period="2025-01", tax_type="印花税"),
        liability(taxpayer_id="91A", name="先公司", days=5, period="2026-10", tax_type="增值税"),
        liability(taxpayer_id="91A", name="先公司", days=30, period="2026-09", tax_type="房产税"),
    ]
    (row,) = check(build_table(rows))
    assert row["debtor_id"] == "91A" and row["debtor_ids"] == "91A,91Z"


def test_the_argument_values_reach_the_rows():
    rows = [liability(days=10), liability("13800000002", days=90)]
    ref = check(build_table(rows), run_id="manual__x", planned_at=datetime(2026, 11, 23, 7, 45, 12),
                campaign=CAMPAIGNS["custom"])  # fmt: skip
    assert ref[0]["planned_run_id"] == "manual__x" and ref[0]["campaign"] == "tax_payment_2027"
    assert ref[0]["message_text"].startswith("【某某区税务局】") and ref[0]["gateway"] == "smpp_backup"


def test_unusable_stop_dates_count_as_none():
    """ISO-string stop dates from a loose source: empty or unparsable text is no deferral or promise."""
    rows = [liability(f"1380000000{i}", days=10 + i) for i in range(4)]
    table = build_table(rows, "iso_strings")
    table = _replace(table, "deferred_until", pa.array(["", "n/a", None, "2026-12-01T00:00:00"]))
    table = _replace(table, "promised_until", pa.array(["n/a", "", "2026-11-30 12:00:00", None]))
    ref = check(table)
    assert [r["reason"] for r in ref] == [None, None, "promise_to_pay until 2026-11-30", "deferral"]


@pytest.mark.parametrize("variant", TYPE_VARIANTS)
def test_negative_amount_raises_like_the_reference(variant):
    table = build_table([liability(days=5), liability("13800000002", days=10, amount="-5.00")], variant)
    kwargs = dict(as_of=AS_OF, run_id=RUN_ID, planned_at=PLANNED_AT, campaign=planner.TaxPaymentCampaign())
    with pytest.raises(ValueError) as ref_error:
        list(planner.plan_tax_payment(chunks.records(table), **kwargs))
    with pytest.raises(ValueError) as fast_error:
        planner.plan_tax_payment_table(table, **kwargs)
    assert type(fast_error.value) is type(ref_error.value)


def test_missing_texts_and_phones_plan_as_the_reference_does():
    """Nulls the validation would not let through: both paths read them the same way ("None")."""
    rows = [liability(f"1380000000{i}", taxpayer_id=f"91{i}", days=10 + i) for i in range(3)]
    table = build_table(rows)
    table = _replace(table, "taxpayer_name", pa.array(["甲公司", None, "丙公司"]))
    table = _replace(table, "tax_type", pa.array([None, "增值税", "印花税"]))
    table = _replace(table, "mobile_normalized", pa.array(["13800000000", "13800000001", None]))
    ref = check(table)
    assert [r["phone"] for r in ref] == ["13800000000", "13800000001", "None"]


def test_a_stage_from_the_deadline_day(custom_ladder):
    """A stage starting on day 0 (the deadline itself): the deadline day gets a message."""
    rows = [
        liability("13800000001", days=0),
        liability("13800000002", days=0),
        liability("13800000002", days=-3),
    ]
    ref = check(build_table(rows), ladder=custom_ladder)
    assert [(r["stage"], r["reason"]) for r in ref] == [("early", None), ("early", None)]
