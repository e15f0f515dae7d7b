"""The store's side of routing on SQLite: batches per priority, quota and balance, the monitor's figure."""

from __future__ import annotations

from datetime import date, datetime

import pytest
import sqlalchemy as sa

from include.dunning import ledger
from include.dunning.ledger import DunningStore
from include.dunning.routing import URGENT, BatchId

AS_OF = date(2026, 11, 23)


@pytest.fixture
def store(tmp_path) -> DunningStore:
    store = DunningStore(f"sqlite:///{tmp_path / 'store.sqlite'}")
    store.create_schema()
    return store


def row(n: int, stage: str, gateway: str) -> dict:
    phone = f"1391234{n:04d}"
    return {
        "idempotency_key": ledger.idempotency_key("power_dunning", "2026-11", phone, stage, "sms", 1),
        "campaign": "power_dunning",
        "period": "2026-11",
        "as_of": AS_OF,
        "debtor_id": f"A{n}",
        "debtor_name": "某用户",
        "stage": stage,
        "channel": "sms",
        "attempt": 1,
        "phone": phone,
        "template": "t",
        "message_text": "【示范供电】请缴费。",
        "parts": 1,
        "amount": None,
        "surcharge": None,
        "gateway": gateway,
        "state": ledger.PLANNED,
        "reason": None,
        "planned_run_id": "r1",
        "planned_at": datetime(2026, 11, 23),
    }


def test_batches_split_per_gateway_and_priority_urgent_first(store):
    rows = [row(n, "dunning", "smpp_default") for n in range(30)]
    rows += [row(100 + n, "dunning", "smpp_cmcc") for n in range(12)]
    rows += [row(200 + n, "cutoff_notice", "smpp_urgent") for n in range(7)]
    rows += [row(300 + n, "cutoff_notice", "smpp_default") for n in range(3)]  # no urgent gateway then
    store.upsert_planned(rows)
    batches = store.assign_batches(
        "power_dunning", AS_OF, "r1", batch_size=10, priorities={"cutoff_notice": URGENT}
    )
    parsed = [BatchId.parse(b) for b in batches]
    assert [p.priority for p in parsed] == ["urgent"] * 2 + ["normal"] * 5, "urgent batches first"
    assert [(p.gateway, p.priority) for p in parsed[:2]] == [
        ("smpp_default", URGENT),
        ("smpp_urgent", URGENT),
    ]
    with store.engine.connect() as conn:
        members = conn.execute(sa.text("SELECT batch_id, stage, gateway FROM contact_ledger")).all()
    for batch_id, stage, gateway in members:
        parsed_id = BatchId.parse(batch_id)
        assert parsed_id.gateway == gateway
        assert (parsed_id.priority == URGENT) == (stage == "cutoff_notice")


def test_without_priorities_batch_ids_are_as_before(store):
    store.upsert_planned([row(n, "cutoff_notice", "smpp_default") for n in range(3)])
    (batch,) = store.assign_batches("power_dunning", AS_OF, "r1")
    assert batch == "power_dunning:sms:smpp_default:r1:0000"


def test_the_batch_cap_holds_with_priority_groups(store):
    rows = [row(n, "dunning" if n % 3 else "cutoff_notice", f"gw{n % 4}") for n in range(400)]
    store.upsert_planned(rows)
    batches = store.assign_batches(
        "power_dunning", AS_OF, "r1", batch_size=1, max_batches=20, priorities={"cutoff_notice": URGENT}
    )
    assert len(batches) <= 20
    with store.engine.connect() as conn:
        unbatched = conn.execute(
            sa.text("SELECT COUNT(*) FROM contact_ledger WHERE batch_id IS NULL")
        ).scalar()
    assert unbatched == 0


def test_quota_reservation_takes_what_fits_and_release_gives_back(store):
    assert store.reserve_gateway_parts("gw", AS_OF, [2, 2, 2], daily_quota=5) == 2
    assert store.gateway_usage(AS_OF) == {"gw": (4, 5)}
    assert store.reserve_gateway_parts("gw", AS_OF, [2], daily_quota=5) == 0
    assert store.reserve_gateway_parts("gw", AS_OF, [1, 1], daily_quota=5) == 1
    store.release_gateway_parts("gw", AS_OF, 2)
    assert store.gateway_usage(AS_OF) == {"gw": (3, 5)}
    # Another day has its own count; no quota means tracking only.
    assert store.reserve_gateway_parts("gw", date(2026, 11, 24), [3] * 10) == 10
    assert store.gateway_usage(date(2026, 11, 24)) == {"gw": (30, None)}


def test_prepaid_balance_limits_across_days_and_top_ups(store):
    assert store.gateway_balance("gw") is None
    assert store.add_gateway_balance("gw", 5) == 5
    assert store.reserve_gateway_parts("gw", AS_OF, [2, 2, 2], daily_quota=100) == 2
    assert store.reserve_gateway_parts("gw", date(2026, 11, 24), [2]) == 0, "the balance is not per day"
    assert store.gateway_balance("gw") == 1
    store.release_gateway_parts("gw", AS_OF, 2)
    assert store.gateway_balance("gw") == 3
    assert store.add_gateway_balance("gw", 10) == 13


def test_monitor_reads_the_quota_table(store):
    from include.monitor import status as st

    store.reserve_gateway_parts("smpp_default", AS_OF, [1] * 7, daily_quota=10)
    figures = st.ledger_figures(
        store.engine,
        day_start=datetime(2026, 11, 22, 16),
        day_end=datetime(2026, 11, 23, 16),
        rate_since=datetime(2026, 11, 23, 15),
        usage_day=AS_OF,
    )
    # No quota extra on the connection: the table's copy of the daily quota is shown.
    gateway = st.gateway_status(st.GatewaySpec("smpp_default", "127.0.0.1", 2775), figures, None)
    assert (gateway["quota"], gateway["quota_used"], gateway["remaining"]) == (10, 7, 3)
