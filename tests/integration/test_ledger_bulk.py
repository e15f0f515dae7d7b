"""The ledger's bulk paths on every engine: the plan UPSERT and the set-based receipts.

PostgreSQL loads both with COPY into a temporary table; SQLite and MariaDB run statements per
row or through a temporary table. Each test runs the same scenario on the three engines and
checks the exact counts and the exact rows: odd text survives the COPY format, chunk boundaries
do not change what is written, and the receipts leave the same tables as ``apply_receipts``.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa

from include.dunning import ledger
from include.dunning.ledger import DunningStore, Receipt, SubmitOutcome, UpsertCounts

pytestmark = pytest.mark.integration

AS_OF = date(2026, 11, 23)
ODD_TEXT = "【示范市税务】\"引号\" 'single' tab\there\nnew line\r\nCRLF back\\slash \\N \\. 末尾\\"


def row(n: int, **changes) -> dict:
    debtor = f"D{n:04d}"
    base = {
        "idempotency_key": ledger.idempotency_key("tax_payment", "2026-W48", debtor, "overdue", "sms", 1),
        "campaign": "tax_payment",
        "period": "2026-W48",
        "as_of": AS_OF,
        "debtor_id": debtor,
        "debtor_ids": debtor,
        "debtor_name": f"纳税人{n}",
        "stage": "overdue",
        "channel": "sms",
        "attempt": 1,
        "phone": f"138{n:08d}",
        "template": "sms/tax/payment_overdue.j2",
        "message_text": f"【示范市税务】纳税人{n}：您的税款已逾期。",
        "parts": 1,
        "amount": Decimal("1234.50"),
        "surcharge": Decimal("6.17"),
        "gateway": "smsc_main",
        "state": ledger.PLANNED,
        "reason": None,
        "planned_run_id": "run-1",
        "planned_at": datetime(2026, 11, 23, 1, 0),
    }
    return {**base, **changes}


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def store(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    else:
        url = request.getfixturevalue("pg_url" if request.param == "postgresql" else "mariadb_url")
    store = DunningStore(url)
    store.create_schema()
    with store.engine.begin() as conn:
        for table in ("contact_ledger", "message_part", "receipt_unmatched"):
            conn.execute(sa.text(f"DELETE FROM {table}"))
    yield store
    store.engine.dispose()


def ledger_rows(store: DunningStore) -> dict[str, dict]:
    columns = ", ".join(ledger.LEDGER_COLUMNS)
    with store.engine.connect() as conn:
        found = conn.execute(sa.text(f"SELECT {columns} FROM contact_ledger")).mappings().all()
    out = {}
    for r in found:
        r = dict(r)
        for money in ("amount", "surcharge"):
            r[money] = None if r[money] is None else Decimal(str(r[money])).quantize(Decimal("0.01"))
        r["as_of"] = r["as_of"] if isinstance(r["as_of"], date) else date.fromisoformat(r["as_of"])
        if not isinstance(r["planned_at"], datetime):
            r["planned_at"] = datetime.fromisoformat(r["planned_at"])
        out[r["idempotency_key"]] = r
    return out


def test_odd_text_and_null_amounts_are_stored_exactly(store):
    odd = [
        row(1, message_text=ODD_TEXT, debtor_name='王\t小\n明 \\ "公司"', amount=None, surcharge=None),
        row(2, debtor_ids="", reason="a\\b", amount=Decimal("0.00"), surcharge=Decimal("12345678.90")),
        row(3, state=ledger.SUPPRESSED, reason="opted_out: 用户回复 TD\t退订", debtor_ids=None),
        row(4, message_text="\\N", debtor_name=""),  # the COPY null marker as text, and empty text
    ]
    assert store.upsert_planned(odd, chunk_size=3) == UpsertCounts(new=4, planned=3, suppressed=1)
    stored = ledger_rows(store)
    assert stored == {r["idempotency_key"]: r for r in odd}
    assert stored[odd[3]["idempotency_key"]]["debtor_name"] == ""  # empty text is not NULL
    assert stored[odd[0]["idempotency_key"]]["amount"] is None


@pytest.mark.parametrize("chunk_size", [1, 3, 4, None])
def test_chunks_write_the_same_rows_and_counts(store, chunk_size):
    first = [row(n) for n in range(10)]
    assert store.upsert_planned(first, chunk_size=chunk_size) == UpsertCounts(new=10, planned=10)
    keys = [r["idempotency_key"] for r in first]
    store.claim(keys[:2], "run-1")  # 0, 1 claimed
    store.record_submits("smsc_main", [SubmitOutcome(keys[1], ["m1"])])  # 1 submitted
    store.suppress([keys[2]], "opted_out", run_id="run-1")  # 2 suppressed: replannable
    second = [
        row(0, message_text="changed"),  # claimed: untouched
        row(1, message_text="changed"),  # submitted: untouched
        row(2, message_text="again", state=ledger.PLANNED),  # suppressed -> planned
        row(3, message_text="first of two"),
        row(3, message_text="second of two"),  # the same key again (same chunk or the next)
        row(4, state=ledger.SUPPRESSED, reason="cap"),
        row(10),  # new
        row(11, state=ledger.SUPPRESSED, reason="paid"),  # new, suppressed
        row(10, message_text="new then refreshed"),
    ]
    counts = store.upsert_planned(second, chunk_size=chunk_size)
    stored = ledger_rows(store)
    assert stored[keys[0]]["message_text"] != "changed" and stored[keys[1]]["message_text"] != "changed"
    assert stored[keys[2]]["message_text"] == "again" and stored[keys[2]]["state"] == ledger.PLANNED
    assert stored[keys[3]]["message_text"] == "second of two"
    assert stored[keys[4]]["state"] == ledger.SUPPRESSED and stored[keys[4]]["reason"] == "cap"
    assert stored[row(10)["idempotency_key"]]["message_text"] == "new then refreshed"
    assert len(stored) == 12
    # A key given twice counts once within a chunk, twice (new, then refreshed) across chunks.
    split = {1: (2, 2), 3: (1, 1), 4: (2, 2), None: (1, 1)}[chunk_size]  # (key 3, key 10) rows counted
    assert counts == UpsertCounts(
        new=2,
        refreshed=3 + split[0] + split[1] - 2,
        planned=1 + split[0] + split[1],
        suppressed=2,
    )


def test_mixed_input_types_are_stored_like_the_per_row_path(store):
    """Strings for dates and amounts, ints for ids: what a caller may pass still lands the same."""
    loose = row(5, as_of="2026-11-23", amount="99.90", surcharge=1, attempt="1", debtor_id=12345)
    assert store.upsert_planned([loose]) == UpsertCounts(new=1, planned=1)
    stored = ledger_rows(store)[loose["idempotency_key"]]
    assert stored["as_of"] == AS_OF and stored["amount"] == Decimal("99.90")
    assert (
        stored["surcharge"] == Decimal("1.00") and stored["attempt"] == 1 and stored["debtor_id"] == "12345"
    )


def test_a_bad_row_fails_the_whole_upsert(store):
    good = [row(n) for n in range(5)]
    bad = row(5, phone=None)  # NOT NULL
    with pytest.raises(sa.exc.IntegrityError):
        store.upsert_planned([*good, bad], chunk_size=2)
    assert ledger_rows(store) == {}  # never a partial load


def test_odd_text_survives_the_refresh_too(store):
    """The second plan of odd rows goes through the staged upsert (PostgreSQL: tmp_plan)."""
    odd = [row(1, message_text=ODD_TEXT, amount=None), row(2, message_text="\\N", reason="a\tb\\c")]
    store.upsert_planned(odd)
    again = [{**r, "message_text": r["message_text"] + "\n再次", "debtor_name": "\\N\t"} for r in odd]
    assert store.upsert_planned(again) == UpsertCounts(refreshed=2, planned=2)
    assert ledger_rows(store) == {r["idempotency_key"]: r for r in again}


def test_a_key_the_sample_misses_falls_back_to_the_upsert(store, caplog):
    """A chunk whose sampled keys are all new but which holds a known key still upserts it."""
    rows = [row(n) for n in range(1000)]
    # Rows 1 and 2 are never sampled (every 3rd key of a 1,000-row chunk is probed): 1 is
    # replannable, 2 is claimed, so a plain COPY of the chunk fails and the upsert takes it.
    store.upsert_planned([rows[1], rows[2]])
    store.claim([rows[2]["idempotency_key"]], "run-1")
    changed = [{**r, "message_text": "today"} for r in rows]
    with caplog.at_level("INFO", logger="include.dunning.ledger"):
        counts = store.upsert_planned(changed, chunk_size=1000)
    assert counts == UpsertCounts(new=998, refreshed=1, planned=999)
    stored = ledger_rows(store)
    assert len(stored) == 1000
    assert stored[rows[1]["idempotency_key"]]["message_text"] == "today"
    assert stored[rows[2]["idempotency_key"]]["message_text"] != "today"  # claimed: untouched
    assert all(stored[r["idempotency_key"]]["message_text"] == "today" for r in rows[3:])
    if store.dialect == "postgresql":
        assert "a key is in the ledger already" in caplog.text  # the COPY was tried and rolled back


def _submit(store, pairs):
    keys = [k for k, _ in pairs]
    store.claim(keys, "run-1")
    store.record_submits("smsc_main", [SubmitOutcome(k, ids) for k, ids in pairs])


def _tables(store):
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT idempotency_key, state, final_at IS NULL FROM contact_ledger ORDER BY 1")
        ).all()
        parts = conn.execute(
            sa.text("SELECT gateway, message_id, state, stat, err FROM message_part ORDER BY 1, 2")
        ).all()
        waiting = conn.execute(
            sa.text("SELECT gateway, message_id, stat, err FROM receipt_unmatched ORDER BY 1, 2")
        ).all()
    return [tuple(r) for r in rows], [tuple(p) for p in parts], [tuple(w) for w in waiting]


ODD_ID = "id with\ttab\\and\nnewline"


def _waiting_receipts_scenario(store, apply):
    rows = [row(n, parts=2 if n == 1 else 1) for n in range(4)]
    store.upsert_planned(rows)
    k = [r["idempotency_key"] for r in rows]
    _submit(store, [(k[0], ["a"]), (k[1], ["b1", "b2"])])
    results = [
        apply(store, "smsc_main", [Receipt("x", "DELIVRD", "000"), Receipt("a", "ENROUTE")]),
        apply(store, "smsc_main", [Receipt("x", "undeliv", "001"), Receipt(ODD_ID, "DELIVRD")]),
        apply(store, "smsc_main", [Receipt("b1", "DELIVRD"), Receipt("y", "EXPIRED")]),
    ]
    _submit(store, [(k[2], ["x"]), (k[3], [ODD_ID])])
    results += [
        apply(store, "smsc_main", [Receipt("x", "EXPIRED", "003"), Receipt("a", "DELIVRD")]),
        apply(store, "smsc_main", [Receipt("b2", "DELIVRD"), Receipt("ghost", "ACCEPTD")]),
        apply(store, "smsc_main", []),
    ]
    return results, _tables(store)


def test_bulk_receipts_match_per_receipt_with_waiting_ids(store):
    expected = _waiting_receipts_scenario(store, DunningStore.apply_receipts)
    with store.engine.begin() as conn:
        for table in ("contact_ledger", "message_part", "receipt_unmatched"):
            conn.execute(sa.text(f"DELETE FROM {table}"))
    got = _waiting_receipts_scenario(store, DunningStore.apply_receipts_bulk)
    assert got == expected
    results, (rows, parts, waiting) = got
    assert results == [
        {"matched": 0, "unmatched": 1, "settled": 0},  # x waits; ENROUTE ignored
        {"matched": 0, "unmatched": 3, "settled": 0},  # x again (first kept) + the odd id
        {"matched": 1, "unmatched": 3, "settled": 0},  # b1: row 1 still open; y waits too
        {"matched": 4, "unmatched": 1, "settled": 3},  # waiting x + new x, odd id, a; y still waits
        {"matched": 1, "unmatched": 1, "settled": 1},  # b2 settles row 1
        {"matched": 0, "unmatched": 1, "settled": 0},
    ]
    assert waiting == [("smsc_main", "y", "EXPIRED", None)]
    assert ("smsc_main", "x", "EXPIRED", "EXPIRED", "003") in parts  # the last receipt wins
    assert ("smsc_main", ODD_ID, "DELIVERED", "DELIVRD", None) in parts
    assert sorted(state for _, state, _ in rows) == ["DELIVERED", "DELIVERED", "DELIVERED", "EXPIRED"]


def test_bulk_receipts_settle_a_thousand_multipart_rows(store):
    rows = [row(n, parts=2) for n in range(1000)]
    store.upsert_planned(rows)
    keys = [r["idempotency_key"] for r in rows]
    _submit(store, [(k, [f"{n}a", f"{n}b"]) for n, k in enumerate(keys)])
    first = [Receipt(f"{n}a", "DELIVRD") for n in range(1000)]
    assert store.apply_receipts_bulk("smsc_main", first) == {"matched": 1000, "unmatched": 0, "settled": 0}
    second = [Receipt(f"{n}b", "UNDELIV" if n % 100 == 0 else "DELIVRD") for n in range(1000)]
    assert store.apply_receipts_bulk("smsc_main", second) == {
        "matched": 1000,
        "unmatched": 0,
        "settled": 1000,
    }
    assert store.ledger_counts(sent_run_id="run-1") == {"DELIVERED": 990, "UNDELIVERED": 10}
