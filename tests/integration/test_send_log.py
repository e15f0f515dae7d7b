"""The send log (PostgreSQL) settles into exactly the ledger the per-row path writes.

Two copies of the same batch: one claimed and recorded row by row (``claim``,
``record_submits``, the SQLite/MariaDB path), one logged (``log_claim``, ``log_responses``) and
settled in bulk (``settle_sends``). Accepted one- and two-part messages, permanent and
transient refusals and rows claimed with no answer must end the same, column by column, with
the same message parts; a second settle changes nothing.
"""

from __future__ import annotations

from datetime import date

import pytest
import sqlalchemy as sa
from ledger_rows import sms_contact

from include.dunning import ledger
from include.dunning.ledger import DunningStore, SubmitOutcome

pytestmark = pytest.mark.integration

AS_OF = date(2026, 11, 23)
COLUMNS = (
    "state, reason, error_code, send_tries, message_ids, sent_run_id, "
    "claimed_at IS NULL, submitted_at IS NULL, final_at IS NULL"
)


@pytest.fixture(scope="module")
def store(pg_url: str) -> DunningStore:
    store = DunningStore(pg_url)
    store.create_schema()
    return store


def new_batch(store: DunningStore, tag: str, rows: int) -> list[ledger.LedgerRow]:
    store.upsert_planned(
        sms_contact(n, campaign=tag, text=f"请缴税，编号{n}。", parts=2 if n % 5 == 0 else 1)
        for n in range(rows)
    )
    (batch_id,) = store.assign_batches(tag, AS_OF, "r1", batch_size=rows)
    return store.batch_rows(batch_id)


def outcomes(rows: list[ledger.LedgerRow], tag: str) -> list[SubmitOutcome]:
    """Answer all but the last ten rows: accepted, permanent refusal, transient refusal."""
    answers = []
    for n, row in enumerate(rows[:-10]):
        if n % 7 == 3:
            answers.append(SubmitOutcome(row.idempotency_key, [], "0x0000000B", "bad number", permanent=True))
        elif n % 7 == 5:
            answers.append(SubmitOutcome(row.idempotency_key, [], "0x00000058", "throttled"))
        else:
            answers.append(SubmitOutcome(row.idempotency_key, [f"{tag}{n}-{p}" for p in range(row.parts)]))
    return answers


def ledger_of(store: DunningStore, tag: str) -> dict[str, tuple]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.text(f"SELECT phone, {COLUMNS} FROM contact_ledger WHERE campaign = :tag"),
            {"tag": tag},
        ).all()
    # Message ids differ between the copies only by their tag prefix.
    return {r[0]: tuple(v.replace(tag, "") if isinstance(v, str) else v for v in r[1:]) for r in rows}


def parts_of(store: DunningStore, tag: str) -> set[tuple]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT c.phone, p.gateway, p.message_id, p.part_no, p.state FROM message_part p "
                "JOIN contact_ledger c ON c.idempotency_key = p.idempotency_key WHERE c.campaign = :tag"
            ),
            {"tag": tag},
        ).all()
    return {(phone, gw, mid.replace(tag, ""), n, state) for phone, gw, mid, n, state in rows}


def test_settled_log_matches_the_row_by_row_ledger(store: DunningStore) -> None:
    assert store.send_log
    reference, logged = new_batch(store, "rowwise", 120), new_batch(store, "logged", 120)

    for chunk in (reference[:50], reference[50:]):
        store.claim([r.idempotency_key for r in chunk], "r2")
    answers = outcomes(reference, "rowwise")
    for start in range(0, len(answers), 30):
        store.record_submits("smpp_default", answers[start : start + 30])

    batch_id = "logged-batch"
    claims: dict[str, str] = {}
    for n, chunk in enumerate((logged[:50], logged[50:])):
        keys = [r.idempotency_key for r in chunk]
        store.log_claim(f"claim-{n}", batch_id, keys, "r2", "smpp_default")
        claims.update(dict.fromkeys(keys, f"claim-{n}"))
    answers = outcomes(logged, "logged")
    counts = {"submitted": 0, "failed": 0, "transient": 0}
    for start in range(0, len(answers), 30):
        for name, n in store.log_responses(answers[start : start + 30], claims).items():
            counts[name] += n
    assert counts == {"submitted": 79, "failed": 16, "transient": 15}
    # Nothing reaches the ledger before the settle: the log alone holds the answers.
    assert {row[0] for row in ledger_of(store, "logged").values()} == {ledger.PLANNED}
    assert store.unsettled_sends() == len(answers)

    assert store.settle_sends(claim_ids=["claim-0"]) == 50
    assert store.settle_sends(batch_id=batch_id) == 70
    assert store.unsettled_sends() == 0
    assert store.settle_sends(batch_id=batch_id) == 0  # settling again changes nothing

    expected = ledger_of(store, "rowwise")
    assert ledger_of(store, "logged") == expected
    assert {row[0] for row in expected.values()} == {
        ledger.SUBMITTED, ledger.FAILED, ledger.PLANNED, ledger.CLAIMED,
    }  # fmt: skip
    assert parts_of(store, "logged") == parts_of(store, "rowwise")
    assert len(parts_of(store, "logged")) > 79  # two-part messages have a part each


def test_a_second_claim_of_a_row_counts_as_another_try(store: DunningStore) -> None:
    rows = new_batch(store, "twice", 3)
    keys = [r.idempotency_key for r in rows]
    store.log_claim("first", "twice-batch", keys, "r1", "smpp_default")
    store.settle_sends(batch_id="twice-batch")  # killed before any answer: CLAIMED, one try
    store.log_claim("second", "twice-batch", keys, "r2", "smpp_default")
    store.log_responses([SubmitOutcome(keys[0], ["twice-a"])], {keys[0]: "second"})
    store.settle_sends(batch_id="twice-batch")
    got = ledger_of(store, "twice")
    assert sorted((state, tries, run) for state, _, _, tries, _, run, *_ in got.values()) == [
        (ledger.CLAIMED, 2, "r2"),
        (ledger.CLAIMED, 2, "r2"),
        (ledger.SUBMITTED, 2, "r2"),
    ]


def test_answers_with_separator_characters_are_logged_intact(store: DunningStore) -> None:
    rows = new_batch(store, "odd", 2)
    keys = [r.idempotency_key for r in rows]
    store.log_claim("odd-claim", "odd-batch", keys, "r1", "smpp_default")
    odd = [
        SubmitOutcome(keys[0], ["odd\x1f1"]),  # an SMSC message id with a unit separator
        SubmitOutcome(keys[1], [], "0x00000045", "refused:\x1e\x1fsee SMSC", permanent=True),
    ]
    assert store.log_responses(odd, dict.fromkeys(keys, "odd-claim")) == {
        "submitted": 1, "failed": 1, "transient": 0,
    }  # fmt: skip
    assert store.settle_sends(batch_id="odd-batch") == 2
    with store.engine.connect() as conn:
        got = dict(
            conn.execute(
                sa.text(
                    "SELECT phone, COALESCE(message_ids, reason) FROM contact_ledger WHERE campaign = 'odd'"
                )
            ).all()
        )
    assert got == {rows[0].phone: "odd\x1f1", rows[1].phone: "refused:\x1e\x1fsee SMSC"}


def test_the_next_plan_settles_what_a_dead_send_task_left_of_its_campaign(store: DunningStore) -> None:
    """A send task that died for good leaves its log unsettled: rows it sent still look PLANNED
    in the ledger. Settling the campaign's log before planning again keeps the plan's refresh
    (and ``supersede_stale``) off them; another campaign's log is left alone."""
    rows = new_batch(store, "orphan", 4)
    other = new_batch(store, "busy", 2)
    with store.engine.connect() as conn:
        batch_of = dict(conn.execute(sa.text("SELECT campaign, batch_id FROM contact_ledger")).all())
    keys = [r.idempotency_key for r in rows]
    store.log_claim("orphan-claim", batch_of["orphan"], keys, "r1", "smpp_default")
    store.log_responses([SubmitOutcome(keys[0], ["orphan-1"])], {keys[0]: "orphan-claim"})
    busy = [r.idempotency_key for r in other]
    store.log_claim("busy-claim", batch_of["busy"], busy, "r1", "smpp_default")

    assert store.settle_sends(campaign="orphan") == 4
    assert store.unsettled_sends() == 0  # the busy claim has no answer yet
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT claim_id FROM send_claim")).scalars().all() == ["busy-claim"]

    new_batch(store, "orphan", 4)  # the next plan of the period: same keys, refresh
    assert store.supersede_stale("orphan", date(2026, 11, 30)) == 0
    states = sorted(state for state, *_ in ledger_of(store, "orphan").values())
    assert states == [ledger.CLAIMED, ledger.CLAIMED, ledger.CLAIMED, ledger.SUBMITTED]
