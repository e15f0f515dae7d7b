"""The contact ledger's promises: nothing lost, nothing sent twice, multipart settles correctly."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa

from include.dunning import ledger
from include.dunning.ledger import DunningStore, Receipt, SubmitOutcome

AS_OF = date(2026, 11, 23)


def planned_row(n: int, *, as_of: date = AS_OF, phone: str | None = None, run_id: str = "run-1") -> dict:
    debtor = f"91110000MA00000{n:03d}"
    return {
        "idempotency_key": ledger.idempotency_key(
            "tax_payment", "2026-W48", debtor, "payment_overdue", "sms", 1
        ),
        "campaign": "tax_payment",
        "period": "2026-W48",
        "as_of": as_of,
        "debtor_id": debtor,
        "debtor_name": f"纳税人{n}",
        "stage": "payment_overdue",
        "channel": "sms",
        "attempt": 1,
        "phone": phone or f"1380013{n:04d}",
        "template": "sms/tax/payment_overdue.j2",
        "message_text": f"【示范市税务】纳税人{n}：您的税款已逾期。",
        "parts": 1,
        "amount": Decimal("1234.50"),
        "surcharge": Decimal("6.17"),
        "gateway": "smpp_default",
        "state": ledger.PLANNED,
        "reason": None,
        "planned_run_id": run_id,
        "planned_at": datetime(2026, 11, 23, 1, 0),
    }


@pytest.fixture
def store(tmp_path):
    s = DunningStore(f"sqlite:///{tmp_path / 'store.sqlite'}")
    s.create_schema()
    return s


def states(store: DunningStore) -> dict[str, str]:
    with store.engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT idempotency_key, state FROM contact_ledger")).all())


def test_key_is_deterministic_and_distinguishes_every_part():
    base = ("tax_payment", "2026-W48", "D1", "payment_overdue", "sms", 1)
    assert ledger.idempotency_key(*base) == ledger.idempotency_key(*base)
    variants = {ledger.idempotency_key(*base[:i], "x", *base[i + 1 :]) for i in range(5)}
    variants.add(ledger.idempotency_key(*base[:5], 2))
    assert len(variants) == 6 and ledger.idempotency_key(*base) not in variants


def test_create_schema_is_idempotent(store):
    store.create_schema()
    store.create_schema()


def test_upsert_inserts_new_rows_and_refreshes_only_planned_ones(store):
    rows = [planned_row(n) for n in range(10)]
    assert store.upsert_planned(rows) == ledger.UpsertCounts(new=10, refreshed=0, planned=10)
    assert store.upsert_planned(rows + [planned_row(10)]) == ledger.UpsertCounts(
        new=1, refreshed=10, planned=11
    )
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM contact_ledger")).scalar_one() == 11
        amount = conn.execute(sa.text("SELECT amount FROM contact_ledger LIMIT 1")).scalar_one()
    assert Decimal(str(amount)) == Decimal("1234.50")


def test_refresh_updates_planned_text_and_never_touches_a_sent_row(store):
    first, second = planned_row(1), planned_row(2)
    store.upsert_planned([first, second])
    (batch,) = store.assign_batches("tax_payment", AS_OF, "run-1")
    store.claim([first["idempotency_key"]], "run-1")
    store.record_submits("gw", [SubmitOutcome(first["idempotency_key"], ["m1"])])
    later = date(2026, 11, 25)
    new_text = "【示范市税务】滞纳金已更新。"
    counts = store.upsert_planned(
        [
            {**r, "as_of": later, "message_text": new_text, "surcharge": Decimal("9.99")}
            for r in (first, second)
        ]
    )
    assert counts == ledger.UpsertCounts(new=0, refreshed=1, planned=1)
    with store.engine.connect() as conn:
        got = dict(conn.execute(sa.text("SELECT idempotency_key, message_text FROM contact_ledger")).all())
    assert got[first["idempotency_key"]] == first["message_text"]  # already sent: untouched
    assert got[second["idempotency_key"]] == new_text
    # the refreshed row is today's and gets batched; nothing is superseded
    assert store.supersede_stale("tax_payment", later) == 0
    (batch,) = store.assign_batches("tax_payment", later, "run-2")
    assert [r.idempotency_key for r in store.batch_rows(batch)] == [second["idempotency_key"]]


def test_batches_cover_every_sendable_row_once_and_respect_the_cap(store):
    store.upsert_planned(planned_row(n) for n in range(25))
    batches = store.assign_batches("tax_payment", AS_OF, "run-1", batch_size=10, max_batches=1000)
    assert len(batches) == 3
    seen = [r.idempotency_key for b in batches for r in store.batch_rows(b)]
    assert len(seen) == len(set(seen)) == 25
    capped = store.assign_batches("tax_payment", AS_OF, "run-2", batch_size=1, max_batches=4)
    assert 1 <= len(capped) <= 4
    assert sum(len(store.batch_rows(b)) for b in capped) == 25


def test_submitted_rows_are_never_offered_for_sending_again(store):
    rows = [planned_row(n) for n in range(3)]
    store.upsert_planned(rows)
    (batch,) = store.assign_batches("tax_payment", AS_OF, "run-1")
    keys = [r.idempotency_key for r in store.batch_rows(batch)]
    store.claim(keys, "run-1")
    store.record_submits("smpp_default", [SubmitOutcome(k, [f"id{i}"]) for i, k in enumerate(keys)])
    assert store.batch_rows(batch) == []
    # A second plan of the same rows on the same day adds nothing and batches nothing.
    assert store.upsert_planned(rows) == ledger.UpsertCounts(new=0, refreshed=0)
    assert store.assign_batches("tax_payment", AS_OF, "run-2") == []


def test_claimed_rows_without_a_response_are_resent_by_the_retry(store):
    store.upsert_planned(planned_row(n) for n in range(4))
    (batch,) = store.assign_batches("tax_payment", AS_OF, "run-1")
    rows = store.batch_rows(batch)
    store.claim([r.idempotency_key for r in rows[:2]], "run-1")  # worker dies here
    retry = store.batch_rows(batch)
    assert len(retry) == 4
    assert sorted(r.state for r in retry) == ["CLAIMED", "CLAIMED", "PLANNED", "PLANNED"]


def test_rejections_permanent_fail_transient_return_to_planned(store):
    store.upsert_planned(planned_row(n) for n in range(3))
    (batch,) = store.assign_batches("tax_payment", AS_OF, "run-1")
    k = [r.idempotency_key for r in store.batch_rows(batch)]
    store.claim(k, "run-1")
    counts = store.record_submits(
        "smpp_default",
        [
            SubmitOutcome(k[0], ["a1"]),
            SubmitOutcome(k[1], [], error_code="0x0000000B", error="invalid destination", permanent=True),
            SubmitOutcome(k[2], [], error_code="0x00000008", error="system error", permanent=False),
        ],
    )
    assert counts == {"submitted": 1, "failed": 1, "transient": 1}
    assert states(store) == {k[0]: "SUBMITTED", k[1]: "FAILED", k[2]: "PLANNED"}
    assert [r.idempotency_key for r in store.batch_rows(batch)] == [k[2]]


def test_multipart_row_is_delivered_only_when_every_part_is(store):
    store.upsert_planned([planned_row(1), planned_row(2)])
    (batch,) = store.assign_batches("tax_payment", AS_OF, "run-1")
    k1, k2 = (r.idempotency_key for r in store.batch_rows(batch))
    store.claim([k1, k2], "run-1")
    store.record_submits("gw", [SubmitOutcome(k1, ["a", "b", "c"]), SubmitOutcome(k2, ["d", "e"])])
    store.apply_receipts("gw", [Receipt("a", "DELIVRD"), Receipt("b", "DELIVRD"), Receipt("d", "DELIVRD")])
    assert states(store) == {k1: "SUBMITTED", k2: "SUBMITTED"}
    store.apply_receipts("gw", [Receipt("c", "DELIVRD"), Receipt("e", "UNDELIV", "001")])
    assert states(store) == {k1: "DELIVERED", k2: "UNDELIVERED"}
    assert store.outstanding_parts("gw") == 0


def test_receipt_for_unknown_id_is_kept_and_matched_later(store):
    store.upsert_planned([planned_row(1)])
    (batch,) = store.assign_batches("tax_payment", AS_OF, "run-1")
    (row,) = store.batch_rows(batch)
    result = store.apply_receipts("gw", [Receipt("early", "DELIVRD")])
    assert result["unmatched"] == 1
    store.claim([row.idempotency_key], "run-1")
    store.record_submits("gw", [SubmitOutcome(row.idempotency_key, ["early"])])
    result = store.apply_receipts("gw", [])
    assert result["matched"] == 1 and result["unmatched"] == 0
    assert states(store) == {row.idempotency_key: "DELIVERED"}


def test_intermediate_receipts_do_not_settle(store):
    store.upsert_planned([planned_row(1)])
    (batch,) = store.assign_batches("tax_payment", AS_OF, "run-1")
    (row,) = store.batch_rows(batch)
    store.claim([row.idempotency_key], "run-1")
    store.record_submits("gw", [SubmitOutcome(row.idempotency_key, ["m1"])])
    store.apply_receipts("gw", [Receipt("m1", "ENROUTE"), Receipt("m1", "ACCEPTD")])
    assert states(store) == {row.idempotency_key: "SUBMITTED"}


def test_rows_without_receipt_past_validity_become_unknown(store):
    store.upsert_planned([planned_row(1)])
    (batch,) = store.assign_batches("tax_payment", AS_OF, "run-1")
    (row,) = store.batch_rows(batch)
    store.claim([row.idempotency_key], "run-1")
    store.record_submits("gw", [SubmitOutcome(row.idempotency_key, ["m1"])])
    assert store.expire_unknown(datetime(2000, 1, 1)) == 0
    assert store.expire_unknown(datetime(2999, 1, 1)) == 1
    assert states(store) == {row.idempotency_key: "UNKNOWN"}
    # A late receipt still settles an UNKNOWN row.
    store.apply_receipts("gw", [Receipt("m1", "DELIVRD")])
    assert states(store) == {row.idempotency_key: "DELIVERED"}


def test_stale_planned_rows_from_an_earlier_day_are_superseded(store):
    store.upsert_planned([planned_row(1, as_of=date(2026, 11, 20))])
    assert store.supersede_stale("tax_payment", AS_OF) == 1
    (state,) = states(store).values()
    assert state == "SUPPRESSED"


def test_opt_out_and_suppress(store):
    store.upsert_planned([planned_row(1, phone="13800138000"), planned_row(2, phone="13900139000")])
    store.add_opt_out("13800138000", "reply")
    store.add_opt_out("13800138000", "reply")  # idempotent
    assert store.opted_out(["13800138000", "13900139000"]) == {"13800138000"}
    (batch,) = store.assign_batches("tax_payment", AS_OF, "run-1")
    keys = [r.idempotency_key for r in store.batch_rows(batch) if r.phone == "13800138000"]
    assert store.suppress(keys, "opted_out", run_id="run-1") == 1
    assert store.ledger_counts(sent_run_id="run-1") == {"SUPPRESSED": 1}


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (["DELIVERED"], "DELIVERED"),
        (["DELIVERED", "DELIVERED"], "DELIVERED"),
        (["DELIVERED", "SUBMITTED"], None),
        (["DELIVERED", "UNDELIVERED"], "UNDELIVERED"),
        (["SUBMITTED", "UNDELIVERED"], "UNDELIVERED"),
        (["EXPIRED", "DELIVERED"], "EXPIRED"),
        (["UNKNOWN", "DELIVERED"], "UNKNOWN"),
    ],
    ids=lambda v: "+".join(v) if isinstance(v, list) else str(v),
)
def test_row_state_from_parts(parts, expected):
    assert ledger.row_state_from_parts(parts) == expected


def test_a_suppressed_row_is_decided_again_by_the_next_plan(store):
    held = {**planned_row(1), "state": ledger.SUPPRESSED, "reason": "frequency_cap: last contact 2026-11-20"}
    assert store.upsert_planned([held]) == ledger.UpsertCounts(new=1, suppressed=1)
    assert store.assign_batches("tax_payment", AS_OF, "run-1") == []
    # two days later the cap has passed: the same key becomes PLANNED and is batched
    later = date(2026, 11, 27)
    counts = store.upsert_planned([{**planned_row(1), "as_of": later}])
    assert counts == ledger.UpsertCounts(refreshed=1, planned=1)
    (batch,) = store.assign_batches("tax_payment", later, "run-2")
    assert len(store.batch_rows(batch)) == 1


def test_recent_contacts_finds_the_last_submit_per_number(store):
    store.upsert_planned([planned_row(1, phone="13800138000"), planned_row(2, phone="13900139000")])
    (batch,) = store.assign_batches("tax_payment", AS_OF, "run-1")
    rows = store.batch_rows(batch)
    store.claim([r.idempotency_key for r in rows], "run-1")
    store.record_submits("gw", [SubmitOutcome(rows[0].idempotency_key, ["m1"])])
    recent = store.recent_contacts(["13800138000", "13900139000", "13700137000"], since=datetime(2000, 1, 1))
    assert set(recent) == {rows[0].phone}
    assert store.recent_contacts([rows[0].phone], since=datetime(2999, 1, 1)) == {}
