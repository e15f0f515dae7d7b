"""Tests for the synthetic source-system generator on SQLite."""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter, defaultdict
from datetime import date
from pathlib import Path

import phonenumbers
import pytest
import sqlalchemy as sa
from stdnum.cn import ric, uscc

from include.dunning.calendar import filing_deadline
from include.sources import generate as gen

AS_OF = date(2026, 11, 22)
AS_OF_S = AS_OF.isoformat()
N = 2_000
DIRTY = 0.03


def sqlite_engine(path: Path) -> sa.Engine:
    """Return an engine on a fresh SQLite file."""
    return sa.create_engine(f"sqlite:///{path}")


def fetch(engine: sa.Engine, sql: str, **params: object) -> list[tuple]:
    """Run a query and return its rows as tuples."""
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql), params)]


def dump(engine: sa.Engine, system: str) -> dict[str, list[tuple]]:
    """Return every table of a system, rows ordered by all columns."""
    out = {}
    for table, cols in gen.COLUMNS[system].items():
        out[table] = fetch(engine, f"SELECT {', '.join(cols)} FROM {table} ORDER BY {', '.join(cols)}")
    return out


def normalise_mobile(raw: str | None) -> str | None:
    """Return the 11-digit mobile number in a raw value, or None when it has none."""
    if raw is None:
        return None
    digits = re.sub(r"[\s\-]", "", unicodedata.normalize("NFKC", raw))
    for prefix in ("+86", "0086", "86"):
        if digits.startswith(prefix) and len(digits) == len(prefix) + 11:
            digits = digits[len(prefix) :]
            break
    return digits if re.fullmatch(r"1[3-9]\d{9}", digits) else None


def is_valid_mobile(raw: str | None) -> bool:
    """Return whether a raw value holds a mobile number libphonenumber accepts."""
    number = normalise_mobile(raw)
    return number is not None and phonenumbers.is_valid_number(phonenumbers.parse(number, "CN"))


def id_is_valid(taxpayer_id: str) -> bool:
    """Return whether a taxpayer id passes the check of its kind (dispatch on length)."""
    if len(taxpayer_id) == 18:
        return uscc.is_valid(taxpayer_id) if taxpayer_id[:2] in ("91", "92") else ric.is_valid(taxpayer_id)
    if len(taxpayer_id) == 20:
        return ric.is_valid(taxpayer_id[:18]) and taxpayer_id[18:].isdigit()
    if len(taxpayer_id) == 15:
        return org_code_is_valid(taxpayer_id[6:])
    return False


def org_code_is_valid(code: str) -> bool:
    """Return whether a 9-char organisation code (GB 11714) has the right check character."""
    weights = (3, 7, 9, 10, 5, 8, 4, 2)
    total = sum((int(c) if c.isdigit() else ord(c) - 55) * w for c, w in zip(code[:8], weights, strict=True))
    check = 11 - total % 11
    return code[8] == ("X" if check == 10 else "0" if check == 11 else str(check))


@pytest.fixture(scope="module")
def dbs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, sa.Engine]:
    """Generate the three systems once (2,000 units each, default dirt) for the module."""
    root = tmp_path_factory.mktemp("sources")
    engines = {}
    for system in gen.SYSTEMS:
        engine = sqlite_engine(root / f"{system}.db")
        gen.generate(engine, system, rows=N, as_of=AS_OF, chunk_rows=7_000)
        engines[system] = engine
    yield engines
    for engine in engines.values():
        engine.dispose()


@pytest.fixture(scope="module")
def clean_levy(tmp_path_factory: pytest.TempPathFactory) -> sa.Engine:
    """Generate a levy system without dirty rows."""
    engine = sqlite_engine(tmp_path_factory.mktemp("clean") / "levy.db")
    gen.generate_levy(engine, taxpayers=800, as_of=AS_OF, dirty_share=0.0)
    yield engine
    engine.dispose()


# ---------------------------------------------------------------- schema and plumbing


@pytest.mark.parametrize("system", gen.SYSTEMS)
def test_schema_is_idempotent_and_complete(tmp_path: Path, system: str) -> None:
    engine = sqlite_engine(tmp_path / "s.db")
    gen.create_schema(engine, system)
    gen.create_schema(engine, system)
    inspector = sa.inspect(engine)
    assert set(inspector.get_table_names()) == set(gen.COLUMNS[system])
    for table, cols in gen.COLUMNS[system].items():
        assert {c["name"] for c in inspector.get_columns(table)} == set(cols), table


def test_split_statements_drops_comments() -> None:
    sql = "-- head; not a statement\nCREATE TABLE a (x INTEGER); -- tail\n\nCREATE INDEX i ON a (x);\n"
    assert gen.split_statements(sql) == ["CREATE TABLE a (x INTEGER)", "CREATE INDEX i ON a (x)"]


def test_unknown_system_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown system"):
        gen.schema_path("gas")


@pytest.mark.parametrize("system", gen.SYSTEMS)
def test_counts_match_tables(tmp_path: Path, system: str) -> None:
    engine = sqlite_engine(tmp_path / "c.db")
    counts = gen.generate(engine, system, rows=300, as_of=AS_OF, chunk_rows=500)
    assert set(counts) == set(gen.COLUMNS[system])
    for table, count in counts.items():
        assert fetch(engine, f"SELECT COUNT(*) FROM {table}")[0][0] == count
    unit_table = {"levy": "taxpayer", "billing": "customer", "recharge": "card"}[system]
    assert counts[unit_table] == 300


def test_refuses_to_append_unless_replace(tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path / "r.db")
    first = gen.generate_recharge(engine, cards=50, as_of=AS_OF)
    with pytest.raises(ValueError, match="already holds rows"):
        gen.generate_recharge(engine, cards=50, as_of=AS_OF)
    assert gen.generate_recharge(engine, cards=50, as_of=AS_OF, replace=True) == first


@pytest.mark.parametrize("system", gen.SYSTEMS)
def test_same_seed_same_rows_whatever_the_chunk_size(
    tmp_path: Path, dbs: dict[str, sa.Engine], system: str
) -> None:
    engine = sqlite_engine(tmp_path / "again.db")
    gen.generate(engine, system, rows=N, as_of=AS_OF, chunk_rows=50_000)
    assert dump(engine, system) == dump(dbs[system], system)


def test_other_seed_other_rows(tmp_path: Path) -> None:
    a, b = sqlite_engine(tmp_path / "a.db"), sqlite_engine(tmp_path / "b.db")
    gen.generate_levy(a, taxpayers=100, as_of=AS_OF, seed=1)
    gen.generate_levy(b, taxpayers=100, as_of=AS_OF, seed=2)
    assert dump(a, "levy")["taxpayer"] != dump(b, "levy")["taxpayer"]


def test_cli_prints_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'sub' / 'levy.db'}"
    argv = ["--system", "levy", "--url", url, "--rows", "50", "--as-of", AS_OF_S, "--seed", "7", "--quiet"]
    assert gen.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["system"] == "levy"
    assert printed["counts"]["taxpayer"] == 50
    assert printed["total_rows"] == sum(printed["counts"].values())


# ---------------------------------------------------------------- levy


def test_phones_are_valid_varied_and_dirty_at_the_share(dbs: dict[str, sa.Engine]) -> None:
    mobiles = [m for (m,) in fetch(dbs["levy"], "SELECT mobile FROM taxpayer_contact")]
    invalid = sum(not is_valid_mobile(m) for m in mobiles) / len(mobiles)
    assert DIRTY * 0.5 <= invalid <= DIRTY * 1.6, invalid
    numbers = [normalise_mobile(m) for m in mobiles]
    assert not any(n and n[:3] in ("145", "147", "149", "194") for n in numbers)
    assert any(n and n.startswith("154") for n in numbers), "dirty 154x numbers expected"
    assert sum(m is not None and m.startswith("+86") for m in mobiles) > len(mobiles) * 0.05
    assert any(m is not None and m.startswith("0086") for m in mobiles)
    assert any(m is not None and " " in m.strip() for m in mobiles)
    assert (
        sum(m is not None and "１" in m or m is not None and "３" in m for m in mobiles) > len(mobiles) * 0.02
    )
    assert any(m is None or m == "" for m in mobiles)
    assert any(m is not None and re.search(r"[A-Za-z\u4e00-\u9fff]", m) for m in mobiles)


def test_clean_run_has_only_valid_phones_ids_and_names(clean_levy: sa.Engine) -> None:
    mobiles = [m for (m,) in fetch(clean_levy, "SELECT mobile FROM taxpayer_contact")]
    assert all(is_valid_mobile(m) for m in mobiles)
    ids = fetch(clean_levy, "SELECT taxpayer_id, name FROM taxpayer")
    assert all(id_is_valid(t) for t, _ in ids)
    assert all(name for _, name in ids)
    assert fetch(clean_levy, "SELECT COUNT(*) FROM tax_liability WHERE principal <= 0")[0][0] == 0
    dupes = fetch(
        clean_levy,
        "SELECT COUNT(*) FROM (SELECT taxpayer_id, role, person_name, mobile, is_primary, updated_at "
        "FROM taxpayer_contact GROUP BY 1, 2, 3, 4, 5, 6 HAVING COUNT(*) > 1) d",
    )
    assert dupes[0][0] == 0


def test_every_clean_uscc_and_ric_passes_stdnum(clean_levy: sa.Engine) -> None:
    rows = fetch(clean_levy, "SELECT taxpayer_id, taxpayer_type FROM taxpayer")
    usccs = [t for t, _ in rows if len(t) == 18 and t[:2] in ("91", "92")]
    rics = [t for t, _ in rows if len(t) == 18 and t[:2] not in ("91", "92")] + [
        t[:18] for t, _ in rows if len(t) == 20
    ]
    assert len(usccs) > 400 and len(rics) > 100
    assert all(uscc.is_valid(t) and org_code_is_valid(t[8:17]) for t in usccs)
    assert all(ric.is_valid(t) for t in rics)
    assert all(ric.get_birth_date(t) < AS_OF for t in rics)


def test_identifiers_kinds_and_dirty_share(dbs: dict[str, sa.Engine]) -> None:
    rows = fetch(dbs["levy"], "SELECT taxpayer_id, taxpayer_type, name FROM taxpayer")
    kinds = Counter((len(t), kind) for t, kind, _ in rows)
    assert kinds[(15, "enterprise")] > 0, "legacy 15-char ids expected"
    assert kinds[(20, "individual_business")] > 0, "legacy 20-char ids expected"
    assert set(kinds) <= {(18, "enterprise"), (15, "enterprise"), (18, "individual_business")} | {
        (20, "individual_business"),
        (18, "individual"),
    }
    bad_ids = sum(not id_is_valid(t) for t, _, _ in rows) / len(rows)
    assert DIRTY * 0.3 <= bad_ids <= DIRTY, bad_ids
    missing = sum(not name for _, _, name in rows) / len(rows)
    assert 0 < missing <= DIRTY * 0.8
    types = Counter(kind for _, kind, _ in rows)
    assert 0.5 <= types["enterprise"] / len(rows) <= 0.6


def test_names_look_chinese(dbs: dict[str, sa.Engine]) -> None:
    rows = fetch(dbs["levy"], "SELECT taxpayer_type, name, tax_office FROM taxpayer WHERE name <> ''")
    han = re.compile(r"^[\u4e00-\u9fff()（）]+$")
    for kind, name, office in rows:
        assert han.match(name), name
        assert re.fullmatch(r"国家税务总局\S+市\S+区税务局", office), office
        if kind == "enterprise":
            assert name.endswith("公司"), name
        if kind == "individual":
            assert 2 <= len(name) <= 4, name
    surnames = Counter(name[0] for kind, name, _ in rows if kind == "individual")
    assert surnames.most_common(1)[0][0] in "王李张刘陈"


def test_exactly_one_primary_and_shared_agent_phones(dbs: dict[str, sa.Engine]) -> None:
    distinct = fetch(
        dbs["levy"],
        "SELECT DISTINCT taxpayer_id, role, person_name, mobile, is_primary, updated_at FROM taxpayer_contact",
    )
    primaries = Counter(t for t, _, _, _, p, _ in distinct if p == 1)
    taxpayers = [t for (t,) in fetch(dbs["levy"], "SELECT taxpayer_id FROM taxpayer")]
    assert all(primaries[t] == 1 for t in taxpayers)
    total = fetch(dbs["levy"], "SELECT COUNT(*) FROM taxpayer_contact")[0][0]
    assert 0 < total - len(distinct) <= N * DIRTY, "a few exact duplicate contacts expected"
    owners: dict[str, set[str]] = defaultdict(set)
    roles: dict[str, set[str]] = defaultdict(set)
    for t, role, _, mobile, _, _ in distinct:
        number = normalise_mobile(mobile)
        if number:
            owners[number].add(t)
            roles[number].add(role)
    shared = {n: ts for n, ts in owners.items() if len(ts) > 1}
    assert 0.02 <= len(shared) / len(owners) <= 0.10
    assert max(len(ts) for ts in shared.values()) <= 6
    assert sum("tax_agent" in roles[n] for n in shared) >= 0.9 * len(shared)
    per_taxpayer = Counter(t for t, *_ in distinct)
    assert max(per_taxpayer.values()) >= 3, "several phones per taxpayer expected"


LIABILITY_OUTCOMES = """
WITH paid AS (
    SELECT liability_id, SUM(amount) AS total, MAX(paid_on) AS last_paid
    FROM tax_payment WHERE paid_on < :as_of GROUP BY liability_id
)
SELECT l.principal, l.deadline, COALESCE(p.total, 0), p.last_paid, d.approved, d.new_deadline
FROM tax_liability l
LEFT JOIN paid p ON p.liability_id = l.liability_id
LEFT JOIN deferral d ON d.liability_id = l.liability_id
WHERE l.deadline < :as_of AND l.principal > 0
"""


def test_liability_outcomes_and_debtor_share(dbs: dict[str, sa.Engine]) -> None:
    rows = fetch(dbs["levy"], LIABILITY_OUTCOMES, as_of=AS_OF_S)
    assert len(rows) > N
    outcome = Counter()
    for principal, deadline, paid, last_paid, approved, _new_deadline in rows:
        if approved is not None:
            outcome["deferral"] += 1
        elif paid >= principal:
            outcome["on_time" if last_paid <= deadline else "late"] += 1
        else:
            outcome["debtor"] += 1
            outcome["partial"] += paid > 0
    share = {k: v / len(rows) for k, v in outcome.items()}
    assert 0.50 <= share["on_time"] <= 0.60, share
    assert 0.06 <= share["late"] <= 0.14, share
    assert 0.26 <= share["debtor"] <= 0.34, share
    assert 0.03 <= share["deferral"] <= 0.07, share
    assert 0.03 <= share["partial"] <= 0.12, share
    negative = fetch(
        dbs["levy"],
        "SELECT COUNT(*), (SELECT COUNT(*) FROM tax_liability) FROM tax_liability WHERE principal < 0",
    )
    assert DIRTY * 0.5 <= negative[0][0] / negative[0][1] <= DIRTY * 1.5


def test_amounts_are_lognormal_around_a_few_thousand(dbs: dict[str, sa.Engine]) -> None:
    amounts = sorted(
        float(a) for (a,) in fetch(dbs["levy"], "SELECT principal FROM tax_liability WHERE principal > 0")
    )
    median = amounts[len(amounts) // 2]
    assert 500 <= median <= 5_000, median
    assert amounts[-1] > 100_000
    vat = fetch(
        dbs["levy"], "SELECT principal FROM tax_liability WHERE tax_type = '增值税' AND principal > 0"
    )
    assert len({a for (a,) in vat}) > len(vat) * 0.9


def test_filing_obligations_deadlines_and_abnormal_taxpayers(dbs: dict[str, sa.Engine]) -> None:
    rows = fetch(dbs["levy"], "SELECT DISTINCT period, deadline FROM filing_obligation ORDER BY period")
    periods = [p for p, _ in rows]
    assert periods == ["2026-07", "2026-08", "2026-09", "2026-10", "2026-11"]
    for period, deadline in rows:
        year, month = map(int, period.split("-"))
        ny, nm = (year + 1, 1) if month == 12 else (year, month + 1)
        assert deadline == filing_deadline(ny, nm).isoformat()
    not_filed = fetch(
        dbs["levy"], "SELECT AVG(filed_on IS NULL) FROM filing_obligation WHERE deadline < :a", a=AS_OF_S
    )
    assert 0.07 <= not_filed[0][0] <= 0.14
    assert (
        fetch(dbs["levy"], "SELECT COUNT(*) FROM filing_obligation WHERE filed_on >= :a", a=AS_OF_S)[0][0]
        == 0
    )
    statuses = Counter(s for (s,) in fetch(dbs["levy"], "SELECT status FROM taxpayer"))
    assert 0.015 <= statuses["abnormal"] / N <= 0.05
    filed_by_abnormal = fetch(
        dbs["levy"],
        "SELECT COUNT(*) FROM filing_obligation o JOIN taxpayer t ON t.taxpayer_id = o.taxpayer_id "
        "WHERE t.status = 'abnormal' AND o.period >= '2026-08' AND o.filed_on IS NOT NULL",
    )
    assert filed_by_abnormal[0][0] == 0, "abnormal taxpayers have not filed for 3 months"
    assert fetch(dbs["levy"], "SELECT COUNT(*) FROM tax_payment WHERE paid_on >= :a", a=AS_OF_S)[0][0] == 0


# ---------------------------------------------------------------- billing


def test_billing_customers(dbs: dict[str, sa.Engine]) -> None:
    rows = fetch(
        dbs["billing"], "SELECT account_no, customer_class, billing_mode, area, mobile FROM customer"
    )
    assert len(rows) == N
    assert 0.70 <= sum(r[1] == "residential" for r in rows) / N <= 0.80
    assert 0.15 <= sum(r[2] == "prepaid" for r in rows) / N <= 0.25
    assert {r[3] for r in rows} == {"town", "countryside"}
    lengths = Counter(len(r[0]) for r in rows)
    assert lengths[10] > lengths[13] > 0
    assert set(lengths) <= {10, 11, 13} and lengths[11] <= N * DIRTY
    assert all(r[0].isdigit() for r in rows)
    invalid = sum(not is_valid_mobile(r[4]) for r in rows) / N
    assert DIRTY * 0.3 <= invalid <= DIRTY * 1.3
    assert gen.billing_accounts(5) == gen.billing_accounts(5)


OVERDUE = """
WITH paid AS (SELECT bill_id, SUM(amount) AS total FROM bill_payment WHERE paid_on < :a GROUP BY bill_id)
SELECT c.account_no, MIN(b.due_date), COUNT(*)
FROM customer c JOIN bill b ON b.account_no = c.account_no LEFT JOIN paid p ON p.bill_id = b.bill_id
WHERE c.billing_mode = 'postpaid' AND b.due_date < :a AND COALESCE(p.total, 0) < b.amount
GROUP BY c.account_no
"""


def test_billing_arrears_demands_and_prepaid_balances(dbs: dict[str, sa.Engine]) -> None:
    engine = dbs["billing"]
    postpaid = fetch(engine, "SELECT COUNT(*) FROM customer WHERE billing_mode = 'postpaid'")[0][0]
    overdue = fetch(engine, OVERDUE, a=AS_OF_S)
    assert 0.18 <= len(overdue) / postpaid <= 0.32
    assert sum(first < "2026-10-22" for _, first, _ in overdue) > len(overdue) * 0.3, "> 30 days overdue"
    assert any(first < "2026-01-01" for _, first, _ in overdue), "arrears across the year end"
    assert (
        fetch(
            engine, "SELECT COUNT(*) FROM bill WHERE account_no IN (SELECT account_no FROM prepaid_balance)"
        )[0][0]
        == 0
    )
    demands = fetch(
        engine,
        "SELECT d.demanded_on, b.due_date, d.method FROM payment_demand d JOIN bill b ON b.bill_id = d.bill_id",
    )
    assert 0 < len(demands) <= len(overdue)
    assert all(due < on <= AS_OF_S for on, due, _ in demands)
    balances = [float(b) for (b,) in fetch(engine, "SELECT balance FROM prepaid_balance")]
    assert any(b < 0 for b in balances) and any(0 <= b < 50 for b in balances)
    assert sum(b < 50 for b in balances) / len(balances) <= 0.5
    assert fetch(engine, "SELECT COUNT(*) FROM bill_payment WHERE paid_on >= :a", a=AS_OF_S)[0][0] == 0


# ---------------------------------------------------------------- recharge


def test_recharge_lifecycle_and_accounts(dbs: dict[str, sa.Engine]) -> None:
    engine = dbs["recharge"]
    order = ["made", "stocked_county", "issued_station", "sold_seller", "sold_customer", "used"]
    events: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for serial, event, at in fetch(engine, "SELECT serial, event, at FROM card_event ORDER BY event_id"):
        events[serial].append((event, at))
    assert len(events) == N
    kinds = Counter(e for evs in events.values() for e, _ in evs)
    assert kinds["used"] > 0 and kinds["voided"] > 0 and kinds["returned"] > 0
    for evs in events.values():
        names = [e for e, _ in evs]
        assert names[0] == "made"
        main = [e for e in names if e not in ("voided", "returned")]
        first_used = main.index("used") if "used" in main else len(main)
        assert main[:first_used] == order[:first_used]
        assert [at for _, at in evs] == sorted(at for _, at in evs)
        assert max(at for _, at in evs) < AS_OF_S
    recharges = fetch(engine, "SELECT serial, account_no, amount FROM recharge")
    used = {s for s, evs in events.items() if any(e == "used" for e, _ in evs)}
    assert {s for s, _, _ in recharges} == used
    accounts = {a.account_no for a in gen.billing_accounts(N)}
    known = sum(a in accounts for _, a, _ in recharges) / len(recharges)
    assert 0.85 <= known < 1.0
    faces = {serial: value for serial, value in fetch(engine, "SELECT serial, face_value FROM card")}
    assert all(faces[s] == amount for s, _, amount in recharges)
