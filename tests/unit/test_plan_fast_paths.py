"""The planning fast paths give exactly what the straightforward code gives.

Reference paths: Jinja renders every message (``templates.render_with_jinja``), SMS parts are
counted character by character (the original loop, copied here), the whole file is read into
pandas, sorted with ``sort_values`` and turned into records with ``to_dict``. Fast paths: slot
templates, the sms_parts shortcuts, phone-sorted Arrow chunks and column-wise records.
Outputs must be identical: same texts, same Decimal amounts (also their exponent), same keys,
same row order.
"""

from __future__ import annotations

import importlib.util
import os
import random
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from include.dunning import chunks, fees, planner, sms, templates
from include.dunning.ladder import load_ladder

REPO = Path(__file__).resolve().parents[2]
AS_OF = date(2026, 11, 23)
PLANNED_AT = datetime(2026, 11, 23, 1)
TAX_SORT = ("mobile_normalized", "taxpayer_id", "deadline")
POWER_SORT = ("mobile_normalized", "account_no", "kind", "due_date")


def _bench():
    spec = importlib.util.spec_from_file_location("bench_plan", REPO / "bench" / "plan.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference_sms_parts(text: str) -> int:
    """The original sms_parts: every character encoded, parts filled greedily."""
    coding = sms.DATA_CODING_GSM7 if all(ch in sms._GSM7_ENCODE for ch in text) else sms.DATA_CODING_UCS2
    single, per_part, _ = sms._limits(coding)
    chunks_ = [
        sms._GSM7_ENCODE[ch] if coding == sms.DATA_CODING_GSM7 else ch.encode("utf-16-be") for ch in text
    ]
    if sum(len(c) for c in chunks_) <= single:
        return 1
    parts, size = 1, 0
    for chunk in chunks_:
        if size + len(chunk) > per_part:
            parts += 1
            size = 0
        size += len(chunk)
    return parts


@pytest.fixture
def reference_paths(monkeypatch):
    """Swap the fast render and part count for the straightforward ones."""
    monkeypatch.setattr(templates, "render", templates.render_with_jinja)
    monkeypatch.setattr(templates, "sms_parts", reference_sms_parts)


def _edge_tax_rows(shape: str) -> pa.Table:
    """Liabilities the generator rarely makes: shared numbers, deferrals, long names, deadlines today."""
    long_name = "新疆维吾尔自治区乌鲁木齐市天山区某某某某商贸有限责任公司" * 2

    def day(d: date):
        return d.isoformat() if shape == "sqlite" else d

    def money(v: str):
        return float(v) if shape == "sqlite" else Decimal(v)

    rows = [
        # one number, three taxpayers (a tax agent): one message naming two, then 等
        ("13800000001", "91A", "甲公司", "2026-10", "100.05", date(2026, 11, 16), None),
        ("13800000001", "91B", "乙公司", "2026-09", "0.01", date(2026, 10, 26), None),
        ("13800000001", "91C", "丙公司", "2026-08", "99999999.99", date(2026, 8, 17), None),
        # deadline today and tomorrow: zero days (no stage) and negative days
        ("13800000002", "91D", "丁公司", "2026-10", "500.00", AS_OF, None),
        ("13800000003", "91E", "戊公司", "2026-10", "500.00", date(2026, 11, 24), None),
        # a deferral still running, and one past
        ("13800000004", "91F", long_name, "2026-10", "1234.56", date(2026, 12, 20), date(2026, 12, 20)),
        ("13800000004", "91F", long_name, "2026-09", "0.05", date(2026, 10, 26), None),
        ("13800000005", "91G", "己公司", "2026-10", "10.00", date(2026, 12, 1), date(2026, 12, 1)),
        # half-fen surcharges (ROUND_HALF_UP): 0.01 * 0.0005 * N
        ("13800000006", "91H", "庚", "2026-10", "1.00", date(2026, 11, 13), None),
        ("13800000006", "91H", "庚", "2026-09", "3.00", date(2026, 10, 23), None),
    ]
    return pa.table(
        {
            "liability_id": list(range(1, len(rows) + 1)),
            "taxpayer_id": [r[1] for r in rows],
            "taxpayer_name": [r[2] for r in rows],
            "tax_type": ["增值税"] * len(rows),
            "period": [r[3] for r in rows],
            "outstanding": [money(r[4]) for r in rows],
            "deadline": [day(r[5]) for r in rows],
            "deferred_until": [None if r[6] is None else day(r[6]) for r in rows],
            "mobile_normalized": [r[0] for r in rows],
        }
    )


def _tax_file(tmp_path: Path, shape: str, rows: int = 3000) -> Path:
    bench = _bench()
    generated = pa.concat_tables(list(bench.tax_blocks(rows, shape=shape)))
    edge = _edge_tax_rows(shape)
    edge = pa.table(
        {name: edge.column(name).cast(generated.schema.field(name).type) if name in edge.column_names
         else pa.nulls(len(edge), generated.schema.field(name).type) for name in generated.column_names}
    )  # fmt: skip
    path = tmp_path / f"tax_{shape}.parquet"
    pq.write_table(pa.concat_tables([edge, generated]), path, row_group_size=700)
    return path


def _power_file(tmp_path: Path, shape: str, rows: int = 3000, as_of: date = AS_OF) -> Path:
    bench = _bench()
    table = pa.concat_tables(list(bench.power_blocks(rows, shape=shape, as_of=as_of)))
    path = tmp_path / f"power_{shape}.parquet"
    pq.write_table(table, path, row_group_size=700)
    return path


def _reference_records(path: Path, sort: tuple[str, ...]) -> list[dict]:
    frame = pd.read_parquet(path).sort_values(list(sort), kind="stable")
    return frame.to_dict("records")


def _chunked(path: Path, sort: tuple[str, ...], plan, chunk_rows: int) -> list[dict]:
    out = []
    for table in chunks.phone_sorted_chunks(path, sort, chunk_rows=chunk_rows):
        out.extend(plan(chunks.records(table)))
    return out


def _same_rows(fast: list[dict], slow: list[dict]) -> None:
    assert len(fast) == len(slow)
    for a, b in zip(fast, slow, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == b[key], (key, a[key], b[key])
            assert type(a[key]) is type(b[key]), key
            if isinstance(a[key], Decimal):
                assert str(a[key]) == str(b[key]), key  # same exponent: 125.00, not 125.0


def _eligibility(phones):
    phones = sorted(phones)
    return {
        "opted_out": set(phones[::37]),
        "last_contact": {p: datetime(2026, 11, 20, 9) for p in phones[5::23]},
    }


@pytest.mark.parametrize("shape", ["postgres", "sqlite"])
def test_tax_plan_fast_equals_reference(tmp_path, monkeypatch, shape):
    path = _tax_file(tmp_path, shape)
    campaign = planner.TaxPaymentCampaign(voice_gateway="modem_pool")
    phones = set(pq.read_table(path, columns=["mobile_normalized"]).column(0).to_pylist())

    def plan(records):
        return list(planner.plan_tax_payment(records, as_of=AS_OF, run_id="r", planned_at=PLANNED_AT,
                                             campaign=campaign, **_eligibility(phones)))  # fmt: skip

    fast = _chunked(path, TAX_SORT, plan, chunk_rows=250)
    with monkeypatch.context() as m:
        m.setattr(templates, "render", templates.render_with_jinja)
        m.setattr(templates, "sms_parts", reference_sms_parts)
        slow = plan(_reference_records(path, TAX_SORT))
    _same_rows(fast, slow)
    assert len({r["phone"] for r in fast}) == len(fast)  # one row per number, none split by a chunk
    assert any(r["parts"] > 1 for r in fast) and any("等" in r["message_text"] for r in fast)
    assert {r["state"] for r in fast} == {"PLANNED", "SUPPRESSED"}


@pytest.mark.parametrize("shape", ["postgres", "sqlite"])
@pytest.mark.parametrize("cross_year", ["whole_period", "split_by_day"])
def test_power_plan_fast_equals_reference(tmp_path, monkeypatch, shape, cross_year):
    as_of = date(2027, 1, 5)  # bills of 2026 are carried across the year end
    path = _power_file(tmp_path, shape, as_of=as_of)
    ladder = load_ladder("power")
    campaign = planner.PowerCampaign(voice_gateway="modem_pool", grace_days=2, cross_year=cross_year)
    phones = set(pq.read_table(path, columns=["mobile_normalized"]).column(0).to_pylist())

    def plan(records):
        return list(planner.plan_power(records, as_of=as_of, run_id="r", planned_at=PLANNED_AT,
                                       campaign=campaign, ladder=ladder, **_eligibility(phones)))  # fmt: skip

    fast = _chunked(path, POWER_SORT, plan, chunk_rows=300)
    with monkeypatch.context() as m:
        m.setattr(templates, "render", templates.render_with_jinja)
        m.setattr(templates, "sms_parts", reference_sms_parts)
        slow = plan(_reference_records(path, POWER_SORT))
    _same_rows(fast, slow)
    assert {r["stage"] for r in fast} >= {"due_reminder", "overdue", "low_balance"}


def test_chunks_are_the_stable_sort_and_never_split_a_number(tmp_path):
    path = _tax_file(tmp_path, "postgres", rows=5000)
    reference = pd.read_parquet(path).sort_values(list(TAX_SORT), kind="stable")["liability_id"].tolist()
    seen: list[int] = []
    last_phones: set[str] = set()
    for table in chunks.phone_sorted_chunks(path, TAX_SORT, chunk_rows=400):
        phones = set(table.column("mobile_normalized").to_pylist())
        assert not phones & last_phones
        last_phones |= phones
        seen.extend(table.column("liability_id").to_pylist())
    assert seen == reference


def test_records_equal_to_pylist(tmp_path):
    for path in (_tax_file(tmp_path, "postgres", 800), _power_file(tmp_path, "sqlite", 800)):
        table = pq.read_table(path)

        def tidy(rows):  # NaN != NaN: compare it as text
            return [{k: "NaN" if isinstance(v, float) and v != v else v for k, v in r.items()} for r in rows]

        assert tidy(chunks.records(table)) == tidy(table.to_pylist())


# -- templates --------------------------------------------------------------------------------

PACKAGED = sorted(
    str(p.relative_to(templates.template_root())) for p in templates.template_root().rglob("*.j2") if "sms" in p.parts or "voice" in p.parts
)  # fmt: skip


def _variables(rng: random.Random) -> dict:
    names = [
        rng.choice(["甲公司", "乙商贸有限公司", "A&B {x}", "", "  空格  ", "【假】"])
        for _ in range(rng.randint(1, 5))
    ]
    accounts = [str(rng.randint(10**12, 10**13 - 1)) for _ in range(rng.randint(1, 6))]
    return {
        "signature": rng.choice(["示范市税务", "示范供电", "Tax"]),
        "name": rng.choice(names),
        "names": names[: rng.randint(1, 2)],
        "debtors": rng.randint(1, 4),
        "count": rng.choice([1, 1, 2, 3, 4, 7]),
        "period": "2026年10月",
        "tax_type": rng.choice(["增值税", "城市维护建设税、印花税"]),
        "principal": f"{rng.randint(0, 10**9) / 100:,.2f}",
        "surcharge": rng.choice(["0.00", "1,234.56", None, 5]),
        "deadline": "11月16日",
        "as_of": "11月23日",
        "account": accounts[0],
        "accounts": accounts,
        "amount": f"{rng.randint(0, 10**7) / 100:,.2f}",
        "penalty": "12.30",
        "balance": rng.choice(["-3.20", "0.00", "49.99"]),
        "due_date": "11月10日",
        "cutoff_date": "11月30日",
    }


@pytest.mark.parametrize("name", PACKAGED)
def test_packaged_templates_render_exactly_as_jinja(name):
    rng = random.Random(name)
    for _ in range(400):
        variables = _variables(rng)
        assert templates.render(name, variables) == templates.render_with_jinja(name, variables)


def test_slot_rendering_handles_unusual_templates(tmp_path):
    cases = {
        "filtered.j2": "【签名】{{ name|upper }}：{{ name }}{% if count > 1 %}共{{ count }}笔{% endif %}",
        "loop.j2": "【签名】{% for n in names %}{{ n }}、{% endfor %}{{ amount }}",
        "filterblock.j2": "【签名】{% filter upper %}{{ name }}{% endfilter %}{{ amount }}",
        "setblock.j2": "【签名】{% set x %}{{ name }}{% endset %}{{ x|length }}{{ amount }}",
        "spaces.j2": "  {{ name }}  {{ amount }}\n",
        "index.j2": "【签名】{{ names[0] }}{{ names|join('/') }}{{ names[:1]|join }}{{ names|length }}",
        "compare.j2": "【签名】{% if name == 'x' %}X{% endif %}{{ name }}",
    }
    for file, source in cases.items():
        (tmp_path / file).write_text(source, encoding="utf-8")
    rng = random.Random(1)
    for file in cases:
        for _ in range(200):
            variables = {
                "name": rng.choice(["x", "abc", " 甲 ", "", "\x00"]),
                "names": [rng.choice(["a", "b", "x"]) for _ in range(rng.randint(1, 3))],
                "count": rng.choice([1, 2, True]),
                "amount": rng.choice(["1.00", 2, None, Decimal("3.10")]),
            }
            fast = templates.render(file, variables, root=tmp_path)
            assert fast == templates.render_with_jinja(file, variables, root=tmp_path), (file, variables)


def test_missing_variable_still_fails(tmp_path):
    (tmp_path / "t.j2").write_text("【签名】{{ name }}{% if count %}x{% endif %}", encoding="utf-8")
    import jinja2

    with pytest.raises(jinja2.UndefinedError):
        templates.render("t.j2", {"count": 1}, root=tmp_path)
    with pytest.raises(jinja2.UndefinedError):
        templates.render("t.j2", {"name": "a"}, root=tmp_path)


# -- SMS parts --------------------------------------------------------------------------------


def test_gsm7_regex_matches_the_table():
    for code in range(0x10000):
        ch = chr(code)
        if 0xD800 <= code <= 0xDFFF:
            continue
        assert sms.is_gsm7(ch) == (ch in sms._GSM7_ENCODE), hex(code)
    assert sms.is_gsm7("") and not sms.is_gsm7("a\U0001f600")


def test_sms_parts_fast_equals_reference_around_every_boundary():
    alphabets = {
        "ascii": "abc XYZ 0123456789.,:;!?-+",
        "gsm_ext": "abc{}[]~^|\\€",
        "gsm_latin": "éèÄÖÑÜ§¿",
        "backtick": "ab`",  # not GSM-7: UCS2
        "cjk": "催缴税费电违约金【】，。：",
        "emoji": "缴费😀𠀀",
        "mixed": "Tax 税 {}",
    }
    rng = random.Random(7)
    for name, alphabet in alphabets.items():
        for length in (
            list(range(0, 12)) + list(range(60, 80)) + list(range(125, 170)) + list(range(300, 320))
        ):
            for _ in range(6):
                text = "".join(rng.choice(alphabet) for _ in range(length))
                assert sms.sms_parts(text) == reference_sms_parts(text), (name, length, text)
                assert sms.sms_parts(text) == len(sms.split_text(text).parts), (name, text)


def test_sms_parts_examples():
    assert sms.sms_parts("税" * 70) == 1 and sms.sms_parts("税" * 71) == 2
    assert sms.sms_parts("税" * 134) == 2 and sms.sms_parts("税" * 135) == 3
    assert sms.sms_parts("a" * 160) == 1 and sms.sms_parts("a" * 161) == 2
    assert sms.sms_parts("a" * 306) == 2 and sms.sms_parts("a" * 307) == 3
    assert sms.sms_parts("€" * 80) == 1 and sms.sms_parts("€" * 81) == 2  # 2 septets each
    assert sms.sms_parts("a" * 152 + "€" + "a" * 10) == 2  # the escape pair is not split
    assert sms.sms_parts("税" * 66 + "😀" + "税" * 10) == 2  # nor the surrogate pair


# -- fees and money ---------------------------------------------------------------------------


def _cents_reference(cents: int, rate_per_10000: int, days: int) -> Decimal:
    q, r = divmod(cents * rate_per_10000 * days, 10_000)
    if 2 * r >= 10_000:
        q += 1
    return Decimal(q).scaleb(-2)


def test_tax_surcharge_fast_path_equals_checked_path_and_integer_cents():
    rng = random.Random(3)
    for _ in range(5000):
        cents = rng.choice([0, 1, 5, 99, 100, 12345, rng.randint(0, 10**14)])
        days = rng.randint(-5, 4000)
        deadline = date(2026, 1, 1)
        paid = date.fromordinal(deadline.toordinal() + days)
        principal = Decimal(cents).scaleb(-2)
        fast = fees.tax_surcharge(principal, deadline, paid)
        checked = fees.tax_surcharge(str(principal), deadline, paid)  # a string takes the checked path
        assert fast == checked and str(fast) == str(checked)
        assert fast == _cents_reference(cents, 5, max(0, days))
        assert fast.as_tuple().exponent == -2
        capped = fees.tax_surcharge(principal, deadline, paid, cap_at_principal=True)
        assert capped == min(fast, principal.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def test_power_penalty_fast_path_equals_checked_path():
    rng = random.Random(4)
    for _ in range(4000):
        amount = Decimal(rng.randint(0, 10**9)).scaleb(-2)
        due = date(2026, rng.randint(1, 12), rng.randint(1, 28))
        paid = date.fromordinal(due.toordinal() + rng.randint(-3, 500))
        klass = rng.choice(["residential", "non_residential", fees.CustomerClass.NON_RESIDENTIAL])
        reading = rng.choice(["whole_period", "split_by_day", fees.CrossYear.SPLIT_BY_DAY])
        grace = rng.randint(0, 10)
        fast = fees.power_penalty(
            amount, due, paid, customer_class=klass, cross_year=reading, grace_days=grace
        )
        checked = fees.power_penalty(str(amount), due, paid, customer_class=str(klass), cross_year=str(reading),
                                     grace_days=grace)  # fmt: skip
        assert fast == checked and str(fast) == str(checked)


def test_power_penalty_still_refuses_bad_arguments():
    with pytest.raises(ValueError, match="customer_class"):
        fees.power_penalty(Decimal("1"), date(2026, 1, 1), date(2026, 2, 1), customer_class=["x"])
    with pytest.raises(ValueError, match="cross_year"):
        fees.power_penalty(Decimal("1"), date(2026, 1, 1), date(2026, 2, 1), customer_class="residential",
                           cross_year="both")  # fmt: skip
    with pytest.raises(ValueError, match="grace_days"):
        fees.power_penalty(Decimal("1"), date(2026, 1, 1), date(2026, 2, 1), customer_class="residential",
                           grace_days=True)  # fmt: skip
    with pytest.raises(ValueError, match="negative"):
        fees.power_penalty(Decimal("-1"), date(2026, 1, 1), date(2026, 2, 1), customer_class="residential")
    with pytest.raises(TypeError):
        fees.tax_surcharge(Decimal("1"), datetime(2026, 1, 1), date(2026, 2, 1))
    with pytest.raises(ValueError):
        fees.tax_surcharge(Decimal("NaN"), date(2026, 1, 1), date(2026, 2, 1))


def test_money_fast_paths_equal_the_checked_ones():
    from include.dunning import money

    for text in ["0", "1", "1.005", "-2.345", "+7.5", "1234567.125", "00012.50"]:
        assert money.parse_amount(text) == money.parse_amount(" " + text + " ")
        assert str(money.to_money(Decimal(text))) == str(money.to_money(text))
    for bad in ["1e3", "NaN", "1.", ".5", "１２"]:
        try:
            slow = money.parse_amount(bad)
        except ValueError:
            slow = "error"
        assert slow == "error" or slow == money.parse_amount(bad)
    with pytest.raises(ValueError):
        money.to_money(Decimal("Infinity"))


def test_preview_csv_equals_pandas_to_csv(tmp_path):
    from include.dunning.phones import mask

    path = _tax_file(tmp_path, "postgres", rows=1500)
    campaign = planner.TaxPaymentCampaign()
    phones = set(pq.read_table(path, columns=["mobile_normalized"]).column(0).to_pylist())
    rows = _chunked(path, TAX_SORT, lambda records: list(planner.plan_tax_payment(
        records, as_of=AS_OF, run_id="r", planned_at=PLANNED_AT, campaign=campaign, **_eligibility(phones))),
        chunk_rows=500)  # fmt: skip
    odd = dict(rows[0])
    odd.update(debtor_name='甲"乙",丙', debtor_ids="91A,91B", reason="x\ny", message_text="a\rb, c",
               amount=None, surcharge=Decimal("0E-6"), parts=3, phone="+86 138-0000-0001")  # fmt: skip
    rows = [*rows, odd, {**odd, "debtor_name": "", "reason": '"', "message_text": " 前后 "}]
    columns = list(planner.PREVIEW_COLUMNS[:-1])
    for header in (True, False):
        reference = (
            pd.DataFrame(rows, columns=columns)
            .assign(phone=[mask(r["phone"]) for r in rows])
            .to_csv(index=False, header=header)
        )
        assert planner.preview_csv(rows, header=header) == reference
    empty = pd.DataFrame([], columns=columns).assign(phone=[]).to_csv(index=False)
    assert planner.preview_csv([], header=True) == empty
    assert planner.preview_csv([]) == ""


def test_chunk_plan_reads_only_the_planner_columns_and_plans_the_same(tmp_path):
    path = _tax_file(tmp_path, "sqlite", rows=1200)
    ladder = load_ladder("tax")
    campaign = planner.TaxPaymentCampaign(voice_gateway="modem_pool")
    phones = set(pq.read_table(path, columns=["mobile_normalized"]).column(0).to_pylist())
    job = planner.ChunkPlan("tax_payment", campaign, ladder, AS_OF, "r", PLANNED_AT, preview=True)
    for table in chunks.phone_sorted_chunks(path, TAX_SORT, chunk_rows=400):
        rows, preview = job(table, **_eligibility(phones))
        full = list(planner.plan_tax_payment(chunks.records(table), as_of=AS_OF, run_id="r", planned_at=PLANNED_AT,
                                             campaign=campaign, ladder=ladder, **_eligibility(phones)))  # fmt: skip
        _same_rows(rows, full)
        assert preview == planner.preview_csv(full)


def _square(x: int, *, offset: int = 0, bad: int = 13) -> int:
    if x == bad:
        raise ValueError(f"chunk {bad} is bad")
    return x * x + offset


def _pid(x: int) -> int:
    return os.getpid()


def test_map_ordered_keeps_the_order_in_worker_processes():
    items = [(i, {"offset": i % 3}) for i in range(12)]
    serial = list(chunks.map_ordered(_square, items, processes=1))
    parallel = list(chunks.map_ordered(_square, iter(items), processes=2))
    three = list(chunks.map_ordered(_square, iter(items), processes=3))
    assert parallel == three == serial == [(i, i * i + i % 3) for i in range(12)]


@pytest.mark.parametrize("bad", [13, 12], ids=["in a worker", "here"])
def test_map_ordered_raises_a_worker_error_here(bad):
    with pytest.raises(ValueError, match=f"chunk {bad} is bad"):
        list(chunks.map_ordered(_square, [(i, {"bad": bad}) for i in range(20)], processes=2))


def test_map_ordered_sharing_plans_every_other_item_here():
    pids = [pid for _, pid in chunks.map_ordered(_pid, [(i, {}) for i in range(8)], processes=2)]
    here = os.getpid()
    assert [p == here for p in pids] == [True, False] * 4
    assert len(set(pids)) == 2  # one worker besides this process


def test_default_processes(monkeypatch):
    monkeypatch.setenv("DUNNING_PLAN_PROCESSES", "3")
    assert chunks.default_processes() == 3
    monkeypatch.setenv("DUNNING_PLAN_PROCESSES", "0")
    assert chunks.default_processes() == 1
    monkeypatch.setenv("DUNNING_PLAN_PROCESSES", "two")
    with pytest.raises(ValueError, match="DUNNING_PLAN_PROCESSES"):
        chunks.default_processes()
    monkeypatch.delenv("DUNNING_PLAN_PROCESSES")
    assert 1 <= chunks.default_processes() <= 2


def test_preview_masks_phones_as_mask_does():
    from include.dunning.phones import mask

    rng = random.Random(13)
    phones = ["13800000001", "86138000000", "00861380000", "14500000000", "19400000000", "12345678901",
              "1380000000", "138000000012", "+8613800000001", "１３８００００００００", "138 0000 0001", "", "abc"]  # fmt: skip
    phones += ["".join(rng.choice("0123456789") for _ in range(11)) for _ in range(3000)]
    row = {"debtor_ids": "1", "debtor_name": "甲", "stage": "s", "channel": "sms", "state": "PLANNED",
           "reason": None, "parts": 1, "amount": None, "surcharge": None, "message_text": "t"}  # fmt: skip
    lines = planner.preview_csv([{**row, "phone": p} for p in phones]).splitlines()
    assert [line.rsplit(",", 1)[1] for line in lines] == [mask(p) for p in phones]
