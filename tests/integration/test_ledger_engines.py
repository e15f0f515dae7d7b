"""The contact ledger on the production engines: PostgreSQL (and MariaDB, which the DDL also serves)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa

from include.dunning import ledger
from include.dunning.ledger import DunningStore, Receipt, SubmitOutcome

pytestmark = pytest.mark.integration

AS_OF = date(2026, 11, 23)


def planned(n: int) -> dict:
    debtor = f"D{n:05d}"
    return {
        "idempotency_key": ledger.idempotency_key(
            "tax_payment", "2026-W48", debtor, "payment_overdue", "sms", 1
        ),
        "campaign": "tax_payment",
        "period": "2026-W48",
        "as_of": AS_OF,
        "debtor_id": debtor,
        "debtor_name": "杭州示例贸易有限公司",
        "stage": "payment_overdue",
        "channel": "sms",
        "attempt": 1,
        "phone": f"138{n:08d}",
        "template": "sms/tax/payment_overdue.j2",
        "message_text": "【示范市税务】您的税款已逾期，请尽快缴纳。" * 3,
        "parts": 2,
        "amount": Decimal("12345678.90"),
        "surcharge": Decimal("0.01"),
        "gateway": "smpp_default",
        "state": ledger.PLANNED,
        "reason": None,
        "planned_run_id": "run-1",
        "planned_at": datetime(2026, 11, 23, 1, 0),
    }


@pytest.fixture(params=["postgresql", "mariadb"])
def store(request):
    url = request.getfixturevalue("pg_url" if request.param == "postgresql" else "mariadb_url")
    store = DunningStore(url)
    store.create_schema()
    with store.engine.begin() as conn:
        for table in ("contact_ledger", "message_part", "receipt_unmatched", "opt_out"):
            conn.execute(sa.text(f"DELETE FROM {table}"))
    yield store
    store.engine.dispose()


def test_full_cycle_on_the_engine(store):
    rows = [planned(n) for n in range(1200)]
    assert store.upsert_planned(rows) == ledger.UpsertCounts(new=1200, refreshed=0, planned=1200)
    again = store.upsert_planned(rows)  # still PLANNED: refreshed
    assert again == ledger.UpsertCounts(new=0, refreshed=1200, planned=1200)
    batches = store.assign_batches("tax_payment", AS_OF, "run-1", batch_size=500)
    assert len(batches) == 3
    sent = 0
    for batch in batches:
        keys = [r.idempotency_key for r in store.batch_rows(batch)]
        assert store.claim(keys, "run-1") == len(keys)
        outcomes = [SubmitOutcome(k, [f"{k[:8]}a", f"{k[:8]}b"]) for k in keys]
        assert store.record_submits("smpp_default", outcomes)["submitted"] == len(keys)
        sent += len(keys)
        assert store.batch_rows(batch) == []
    assert sent == 1200
    receipts = [Receipt(f"{r['idempotency_key'][:8]}{p}", "DELIVRD") for r in rows for p in "ab"]
    receipts[1] = Receipt(receipts[1].message_id, "UNDELIV", "001")
    result = store.apply_receipts("smpp_default", receipts)
    assert result["matched"] == 2400 and result["settled"] == 1200
    counts = store.ledger_counts(sent_run_id="run-1")
    assert counts == {"DELIVERED": 1199, "UNDELIVERED": 1}
    changed = [
        {**r, "message_text": "changed", "state": ledger.SUPPRESSED, "reason": "opted_out"} for r in rows
    ]
    assert store.upsert_planned(changed) == ledger.UpsertCounts(new=0, refreshed=0)  # sent rows untouched
    with store.engine.connect() as conn:
        assert (
            conn.execute(
                sa.text("SELECT COUNT(*) FROM contact_ledger WHERE message_text = 'changed'")
            ).scalar_one()
            == 0
        )
    with store.engine.connect() as conn:
        amount = conn.execute(sa.text("SELECT amount FROM contact_ledger LIMIT 1")).scalar_one()
        text = conn.execute(sa.text("SELECT message_text FROM contact_ledger LIMIT 1")).scalar_one()
    assert Decimal(str(amount)) == Decimal("12345678.90")
    assert text.startswith("【示范市税务】")


def test_save_run_replaces_the_runs_row(store):
    figures = {"run_id": "r", "dag_id": "tax_dunning", "as_of": AS_OF, "planned": 1}
    store.save_run(figures)
    store.save_run({**figures, "planned": 2})
    with store.engine.connect() as conn:
        assert conn.execute(
            sa.text("SELECT planned FROM dunning_run WHERE run_id = 'r'")
        ).scalars().all() == [2]
