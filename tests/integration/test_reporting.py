"""Reporting tables, holdout, staff follow-up and bulk receipts on SQLite and PostgreSQL.

A small ledger is seeded through the store's own API (plan, claim, submit, receipts, calls), so
every figure below can be counted by hand from ``seed_run``.
"""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from openpyxl import load_workbook

from include.dunning.ledger import DunningStore, Receipt, SubmitOutcome, idempotency_key
from include.dunning.reporting import (
    export_followup_xlsx,
    holdout_group,
    load_reporting,
    refresh_recovery,
    staff_followup,
)

pytestmark = pytest.mark.integration

AS_OF = date(2026, 11, 23)
RUN = "manual__2026-11-23T09:00:00+00:00"
DAG = "tax_dunning"


def _row(debtor: str, phone: str, *, channel: str = "sms", state: str = "PLANNED", reason=None, parts=1,
         amount="100.00", stage="overdue"):  # fmt: skip
    return {
        "idempotency_key": idempotency_key("tax_payment", "2026-W48", debtor, stage, channel, 1),
        "campaign": "tax_payment",
        "period": "2026-W48",
        "as_of": AS_OF,
        "debtor_id": debtor,
        "debtor_ids": debtor,
        "debtor_name": f"纳税人{debtor}",
        "stage": stage,
        "channel": channel,
        "attempt": 1,
        "phone": phone,
        "template": f"{channel}/tax/payment_overdue.j2",
        "message_text": "请缴税",
        "parts": parts,
        "amount": Decimal(amount),
        "surcharge": Decimal("0.50"),
        "gateway": "smsc_main" if channel == "sms" else "modem1",
        "state": state,
        "reason": reason,
        "planned_run_id": RUN,
        "planned_at": datetime(2026, 11, 23, 1, 0),
    }


ROWS = [
    _row("D1", "13800000001"),  # delivered
    _row("D2", "13900000002"),  # UNDELIV err 001: bad number
    _row("D3", "13800000003", parts=2),  # one part delivered, one waiting: pending
    _row("D4", "13800000004", state="SUPPRESSED", reason="opted_out"),
    _row("D5", "15000000005", state="SUPPRESSED", reason="holdout"),
    _row("D6", "13800000006"),  # refused by the SMSC: 0x0B, bad number
    _row("D7", "13800000007", channel="voice"),  # answered 42 s
    _row("D8", "13800000008", channel="voice"),  # busy
]
KEY = {r["debtor_id"]: r["idempotency_key"] for r in ROWS}


def seed_run(store: DunningStore) -> None:
    """Plan, send and settle the eight contacts of ``ROWS``."""
    store.create_schema()
    store.upsert_planned(ROWS)
    sms = [KEY[d] for d in ("D1", "D2", "D3", "D6")]
    store.claim([*sms, KEY["D7"], KEY["D8"]], RUN)
    store.record_submits(
        "smsc_main",
        [
            SubmitOutcome(KEY["D1"], ["m1"]),
            SubmitOutcome(KEY["D2"], ["m2"]),
            SubmitOutcome(KEY["D3"], ["m3a", "m3b"]),
            SubmitOutcome(KEY["D6"], [], "0x0000000B", "invalid destination", permanent=True),
        ],
    )
    store.apply_receipts_bulk(
        "smsc_main",
        [Receipt("m1", "DELIVRD", "000"), Receipt("m2", "UNDELIV", "001"), Receipt("m3a", "DELIVRD")],
    )
    store.record_call(KEY["D7"], "answered", 42.4, "spoken 2 time(s)", modem="modem1")
    store.record_call(KEY["D8"], "busy", 0.0, "", modem="modem1")
    store.add_opt_out("13800000001", "reply")  # D1 replied TD after the SMS


PAYMENTS = [
    ("D1", AS_OF + timedelta(days=2), Decimal("100.00")),
    ("D5", AS_OF + timedelta(days=10), Decimal("50.00")),
    ("D2", AS_OF + timedelta(days=40), Decimal("80.00")),  # too late to count
]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store(request, tmp_path_factory):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('reporting') / 'store.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    store = DunningStore(url)
    seed_run(store)
    yield store
    store.engine.dispose()


def table(store, sql, **params):
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql), params).all()]


def test_report_contact_has_one_row_per_contact_with_outcome_and_no_phone(store):
    counts = load_reporting(store, run_id=RUN, dag_id=DAG, payments=PAYMENTS, flag_after_failed_contacts=1)
    assert counts["contacts"] == 8
    rows = dict(table(store, "SELECT debtor_id, outcome FROM report_contact WHERE run_id = :r", r=RUN))
    assert rows == {
        "D1": "delivered",
        "D2": "undelivered-bad-number",
        "D3": "pending",
        "D4": "opted-out",
        "D5": "suppressed",
        "D6": "undelivered-bad-number",
        "D7": "answered",
        "D8": "busy",
    }
    prefixes = table(store, "SELECT DISTINCT prefix FROM report_contact")
    assert sorted(p for (p,) in prefixes) == ["138", "139", "150"]
    (answer,) = table(store, "SELECT answer_seconds FROM report_contact WHERE debtor_id = 'D7'")
    assert answer == (42,)


def test_summary_figures_equal_the_hand_counted_ones(store):
    load_reporting(store, run_id=RUN, dag_id=DAG, payments=PAYMENTS, flag_after_failed_contacts=1)
    rows = table(
        store,
        "SELECT channel, SUM(planned), SUM(suppressed), SUM(suppressed_opted_out), SUM(suppressed_holdout), "
        "SUM(submitted), SUM(delivered), SUM(undelivered), SUM(pending), SUM(failed), SUM(answered), "
        "SUM(answer_seconds), SUM(opt_outs), SUM(flagged) FROM report_summary WHERE run_id = :r "
        "GROUP BY channel ORDER BY channel",
        r=RUN,
    )
    assert [tuple(int(v) if not isinstance(v, str) else v for v in r) for r in rows] == [
        ("sms", 6, 2, 1, 1, 3, 1, 1, 1, 1, 0, 0, 1, 2),
        ("voice", 2, 0, 0, 0, 2, 1, 1, 0, 0, 1, 42, 0, 1),
    ]
    (rate,) = table(
        store, "SELECT arrival_rate FROM report_summary WHERE run_id = :r AND prefix = '139'", r=RUN
    )
    assert float(rate[0]) == 0.0
    (connect,) = table(
        store, "SELECT SUM(answered), SUM(submitted) FROM report_summary WHERE channel = 'voice'"
    )
    assert connect == (1, 2)


def test_recovery_compares_holdout_with_contacted(store):
    load_reporting(store, run_id=RUN, dag_id=DAG, payments=PAYMENTS)
    rows = table(
        store,
        "SELECT cohort, debtors, paid_3d, paid_7d, paid_30d, amount_recovered FROM report_recovery "
        "WHERE run_id = :r ORDER BY cohort",
        r=RUN,
    )
    assert [(c, d, p3, p7, p30, Decimal(str(a))) for c, d, p3, p7, p30, a in rows] == [
        ("contacted", 5, 1, 1, 1, Decimal("100.00")),
        ("holdout", 1, 0, 0, 1, Decimal("50.00")),
    ]


def test_recovery_without_payments_has_nulls(store):
    counts = load_reporting(store, run_id=RUN, dag_id=DAG)
    assert counts["payments"] is False
    rows = table(
        store, "SELECT cohort, debtors, paid_30d, amount_recovered FROM report_recovery ORDER BY cohort"
    )
    assert rows == [("contacted", 5, None, None), ("holdout", 1, None, None)]


def test_reload_is_idempotent(store):
    for _ in range(3):
        load_reporting(store, run_id=RUN, dag_id=DAG, payments=PAYMENTS)
    assert table(store, "SELECT COUNT(*) FROM report_contact") == [(8,)]
    assert table(store, "SELECT SUM(planned) FROM report_summary")[0][0] == 8
    assert table(store, "SELECT COUNT(*) FROM report_recovery") == [(2,)]


def test_extra_holdout_set_marks_debtors(store):
    load_reporting(store, run_id=RUN, dag_id=DAG, holdout={"D4"})
    rows = table(store, "SELECT debtor_id FROM report_contact WHERE holdout = 1 ORDER BY debtor_id")
    assert rows == [("D4",), ("D5",)]


def test_empty_run_loads_nothing(store):
    counts = load_reporting(store, run_id="no-such-run", dag_id=DAG)
    assert counts == {"contacts": 0, "summary_rows": 0, "recovery_rows": 0, "payments": False}


def test_followup_list_and_xlsx(store, tmp_path):
    frame = staff_followup(store, failed_contacts_at_least=1)
    assert sorted(frame["debtor_id"]) == ["D2", "D6", "D8"]
    d8 = frame.set_index("debtor_id").loc["D8"]
    assert d8["channels"] == "voice" and "busy" in d8["tried"] and d8["phone"] == "13800000008"
    assert "13800000008" not in d8["tried"], "the history masks numbers"
    assert staff_followup(store, failed_contacts_at_least=2).empty
    path = export_followup_xlsx(frame, tmp_path / "followup.xlsx")
    sheet = load_workbook(path).active
    header = [c.value for c in sheet[1]]
    assert header[0] == "债务人编号 Debtor ID" and any("Phone" in h and "电话" in h for h in header)
    values = {row[0]: row for row in sheet.iter_rows(min_row=2, values_only=True)}
    assert set(values) == {"D2", "D6", "D8"}
    assert values["D6"][header.index("联系电话 Phone (full, to call)")] == "13800000006"


def test_holdout_group_is_deterministic_and_near_its_share():
    ids = [f"D{i}" for i in range(20000)]
    group = holdout_group(ids, share=0.1, seed="tax-2026")
    assert group == holdout_group(list(reversed(ids)), share=0.1, seed="tax-2026")
    assert group & set(ids[:100]) == holdout_group(ids[:100], share=0.1, seed="tax-2026")
    assert 1800 < len(group) < 2200
    assert group != holdout_group(ids, share=0.1, seed="tax-2027")
    assert holdout_group(ids, share=0.0, seed=1) == set()
    with pytest.raises(ValueError):
        holdout_group(ids, share=1.0, seed=1)


# -- apply_receipts_bulk == apply_receipts -------------------------------------------------------

RECEIPT_ROUNDS = [
    # receipts for rows submitted below; an id nobody knows yet; intermediate ones
    [
        Receipt("a1", "DELIVRD", "000"),
        Receipt("b1", "delivrd"),  # lower case stat
        Receipt("c1", "UNDELIV", "001"),
        Receipt("d1", "ENROUTE"),
        Receipt("late1", "DELIVRD"),  # submit recorded only later
        Receipt("late1", "UNDELIV", "027"),  # a second receipt for the same unknown id: first kept
        Receipt("e1", "EXPIRED"),
        Receipt("f1", "UNDELIV"),
        Receipt("f1", "DELIVRD"),  # the last receipt for a known id wins
    ],
    [Receipt("b2", "DELIVRD"), Receipt("ghost", "REJECTD", "002"), Receipt("d1", "ACCEPTD")],
    [],  # nothing new: the late submit is matched from receipt_unmatched
    [Receipt("g1", "UNKNOWN"), Receipt("h1", "DELIVRD"), Receipt("h2", "UNDELIV", "005")],
    [Receipt("d1", "DELIVRD")],  # the row made UNKNOWN by expire_unknown is settled late
]


def _submit(store, keys_ids):
    keys = [k for k, _ in keys_ids]
    store.claim(keys, RUN)
    store.record_submits("smsc_main", [SubmitOutcome(k, ids) for k, ids in keys_ids])


def _run_receipt_scenario(store, apply):
    store.create_schema()
    rows = [_row(f"R{i}", f"1380000{i:04d}", parts=2 if i in (1, 7) else 1) for i in range(9)]
    store.upsert_planned(rows)
    k = [r["idempotency_key"] for r in rows]
    _submit(store, [(k[0], ["a1"]), (k[1], ["b1", "b2"]), (k[2], ["c1"]), (k[3], ["d1"]), (k[4], ["e1"]),
                    (k[5], ["f1"]), (k[6], ["g1"]), (k[7], ["h1", "h2"])])  # fmt: skip
    results = [apply(store, "smsc_main", RECEIPT_ROUNDS[0]), apply(store, "smsc_main", RECEIPT_ROUNDS[1])]
    _submit(store, [(k[8], ["late1"])])
    results.append(apply(store, "smsc_main", RECEIPT_ROUNDS[2]))
    results.append(apply(store, "smsc_main", RECEIPT_ROUNDS[3]))
    store.expire_unknown(datetime(2100, 1, 1))
    results.append(apply(store, "smsc_main", RECEIPT_ROUNDS[4]))
    results.append(apply(store, "other_gateway", [Receipt("a1", "UNDELIV")]))  # another gateway's id space
    ledger = table(
        store,
        "SELECT idempotency_key, state, reason, final_at IS NULL FROM contact_ledger ORDER BY idempotency_key",
    )
    parts = table(
        store,
        "SELECT gateway, message_id, idempotency_key, part_no, state, stat, err, receipt_at IS NULL "
        "FROM message_part ORDER BY gateway, message_id",
    )
    unmatched = table(store, "SELECT gateway, message_id, stat, err FROM receipt_unmatched ORDER BY 1, 2")
    return results, ledger, parts, unmatched


def _engine_url(kind, tmp_path, request):
    if kind == "sqlite":
        return [f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"]
    base = request.getfixturevalue("pg_url" if kind == "postgresql" else "mariadb_url")
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    urls = []
    for suffix in ("_a", "_b"):
        name = f"{sa.engine.make_url(base).database}{suffix}"[:60]
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        urls.append(sa.engine.make_url(base).set(database=name).render_as_string(hide_password=False))
    request.addfinalizer(lambda: _drop(admin, urls))
    return urls


def _drop(admin, urls):
    with admin.connect() as conn:
        for url in urls:
            name = sa.engine.make_url(url).database
            force = " WITH (FORCE)" if admin.dialect.name == "postgresql" else ""
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}{force}")
    admin.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mariadb"])
def test_bulk_receipts_leave_the_same_tables_as_per_receipt(kind, tmp_path, request):
    url_a, url_b = _engine_url(kind, tmp_path, request)
    one, bulk = DunningStore(url_a), DunningStore(url_b)
    try:
        expected = _run_receipt_scenario(one, DunningStore.apply_receipts)
        got = _run_receipt_scenario(bulk, DunningStore.apply_receipts_bulk)
    finally:
        one.engine.dispose()
        bulk.engine.dispose()
    results, ledger, parts, unmatched = expected
    assert got[0] == results, "counts differ"
    assert got[1] == ledger, "contact_ledger differs"
    assert got[2] == parts, "message_part differs"
    assert got[3] == unmatched, "receipt_unmatched differs"
    # the scenario exercises what it claims to
    states = Counter(state for _, state, _, _ in ledger)
    assert states["DELIVERED"] >= 3 and states["UNDELIVERED"] >= 2 and states["EXPIRED"] == 1
    assert ("smsc_main", "ghost", "REJECTD", "002") in unmatched
    assert ("other_gateway", "a1", "UNDELIV", None) in unmatched
    assert all(mid != "late1" for _, mid, *_ in unmatched), "the late submit was rematched"


SHARED_RUN = "manual__2026-11-30T09:00:00+00:00"


def _seed_shared_number(store: DunningStore) -> None:
    """An agent's number shared by A1, A2, A3 (one delivered message), B1 alone, H1 held out."""
    store.create_schema()
    rows = []
    for debtor, ids, phone, state, reason in (
        ("A1", "A1,A2,A3", "13700000001", "PLANNED", None),
        ("B1", "B1", "13700000002", "PLANNED", None),
        ("H1", "H1", "13700000003", "SUPPRESSED", "holdout"),
    ):
        row = _row(debtor, phone, state=state, reason=reason, amount="300.00" if debtor == "A1" else "100.00")
        rows.append({**row, "campaign": "agent_test", "debtor_ids": ids, "planned_run_id": SHARED_RUN})
    store.upsert_planned(rows)
    keys = [r["idempotency_key"] for r in rows[:2]]
    store.claim(keys, SHARED_RUN)
    store.record_submits("smsc_main", [SubmitOutcome(keys[0], ["s1"]), SubmitOutcome(keys[1], ["s2"])])
    store.apply_receipts_bulk("smsc_main", [Receipt("s1", "DELIVRD", "000"), Receipt("s2", "UNDELIV", "001")])


SHARED_PAYMENTS = [
    ("A2", AS_OF + timedelta(days=5), Decimal("120.00")),  # a co-debtor of the shared message pays
    ("A3", AS_OF + timedelta(days=1), Decimal("30.00")),
    ("A3", AS_OF + timedelta(days=20), Decimal("20.00")),  # same debtor again: counted once, summed
    ("B1", AS_OF - timedelta(days=1), Decimal("99.00")),  # before the contact: not recovery
    ("H1", AS_OF + timedelta(days=6), Decimal("70.00")),
]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mariadb"])
def test_recovery_credits_every_debtor_of_a_shared_number_message(kind, tmp_path, request):
    url, _ = _engine_url(kind, tmp_path, request)
    store = DunningStore(url)
    try:
        _seed_shared_number(store)
        counts = load_reporting(store, run_id=SHARED_RUN, dag_id=DAG, payments=SHARED_PAYMENTS)
        assert counts["contacts"] == 3
        rows = table(
            store,
            "SELECT cohort, debtors, amount_owed, paid_3d, paid_7d, paid_30d, amount_recovered FROM report_recovery "
            "WHERE run_id = :r ORDER BY cohort",
            r=SHARED_RUN,
        )
        got = [(c, d, Decimal(str(o)), p3, p7, p30, Decimal(str(a))) for c, d, o, p3, p7, p30, a in rows]
        assert got == [
            # A1, A2, A3 and B1 were contacted; the shared message's amount is owed once
            ("contacted", 4, Decimal("400.00"), 1, 2, 2, Decimal("170.00")),
            ("holdout", 1, Decimal("100.00"), 0, 1, 1, Decimal("70.00")),
        ]
        # Without payments: the same debtors, no paid figures.
        load_reporting(store, run_id=SHARED_RUN, dag_id=DAG)
        assert table(
            store,
            "SELECT cohort, debtors, paid_30d FROM report_recovery WHERE run_id = :r ORDER BY cohort",
            r=SHARED_RUN,
        ) == [("contacted", 4, None), ("holdout", 1, None)]
        # Later payments refresh only the recovery rows of an already loaded run.
        assert refresh_recovery(store, dag_id=DAG, run_ids=[SHARED_RUN], payments=SHARED_PAYMENTS) == 2
        assert table(
            store,
            "SELECT cohort, paid_7d FROM report_recovery WHERE run_id = :r ORDER BY cohort",
            r=SHARED_RUN,
        ) == [("contacted", 2), ("holdout", 1)]
        assert table(store, "SELECT COUNT(*) FROM report_contact WHERE run_id = :r", r=SHARED_RUN) == [(3,)]
    finally:
        store.engine.dispose()


def test_followup_is_limited_to_campaigns(store):
    assert staff_followup(store, failed_contacts_at_least=1, campaigns=["no_such_campaign"]).empty
    assert sorted(
        staff_followup(store, failed_contacts_at_least=1, campaigns=["tax_payment"])["debtor_id"]
    ) == [
        "D2",
        "D6",
        "D8",
    ]


def test_report_and_followup_files_of_a_run(store, tmp_path):
    """The report task's own code path (as the benchmark runs it) and the follow-up task's."""
    from operators.report import write_followup, write_run_report

    timings: dict[str, float] = {}
    figures = write_run_report(
        store,
        folder=tmp_path,
        dag_id=DAG,
        run_id=RUN,
        as_of=AS_OF,
        payments=_payments_frame(),
        timings=timings,
    )
    html = (tmp_path / figures["report_path"].rsplit("/", 1)[1]).read_text(encoding="utf-8")
    assert 'id="no-payments"' not in html and "paid ≤30d" in html
    assert {"load: report_contact", "load: report_recovery", "report_tables", "html"} <= set(timings)
    result = write_followup(store, folder=tmp_path, run_id=RUN, failed_contacts_at_least=1)
    assert result["debtors"] == 3 and result["campaigns"] == ["tax_payment"]
    sheet = load_workbook(result["path"]).active
    assert sorted(row[0] for row in sheet.iter_rows(min_row=2, values_only=True)) == ["D2", "D6", "D8"]
    empty = write_followup(store, folder=tmp_path, run_id="no-such-run")
    assert empty["debtors"] == 0 and load_workbook(empty["path"]).active.max_row == 1


def _payments_frame():
    import pandas as pd

    return pd.DataFrame(PAYMENTS, columns=["debtor_id", "paid_on", "amount"])


# -- report_contact's layout: per-run index, no unique key; tables of the old layout keep working --


def _old_layout(store: DunningStore) -> None:
    """Create report_contact as earlier versions did: primary key and a debtor index."""
    from importlib import resources

    ddl = resources.files("include.sql").joinpath("dunning_store/reporting.sql").read_text("utf-8")
    create = ddl[ddl.index("CREATE TABLE IF NOT EXISTS report_contact") :]
    create = create[: create.index(");")]
    with store.engine.begin() as conn:
        conn.exec_driver_sql(create + ",\n    PRIMARY KEY (dag_id, run_id, idempotency_key)\n)")
        conn.exec_driver_sql("CREATE INDEX ix_report_contact_debtor ON report_contact (debtor_id)")


CONTACT_COLUMNS = [
    "dag_id", "run_id", "idempotency_key", "campaign", "period", "as_of", "debtor_id", "stage", "channel",
    "attempt", "gateway", "prefix", "template", "state", "reason", "error_code", "stat", "err", "outcome",
    "parts", "amount", "answer_seconds", "opted_out", "flagged", "holdout", "planned_at",
]  # fmt: skip


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mariadb"])
def test_report_contact_layout_new_and_old_give_the_same_rows(kind, tmp_path, request):
    url_new, url_old = _engine_url(kind, tmp_path, request)
    new, old = DunningStore(url_new), DunningStore(url_old)
    try:
        loaded = []
        for store in (new, old):
            seed_run(store)
            if store is old:
                _old_layout(store)
            for _ in range(2):  # a reload replaces the rows
                load_reporting(store, run_id=RUN, dag_id=DAG, payments=PAYMENTS)
            loaded.append(
                (
                    # all but the send and receipt times (the seeding's clock)
                    table(
                        store,
                        f"SELECT {', '.join(CONTACT_COLUMNS)} FROM report_contact ORDER BY idempotency_key",
                    ),
                    table(store, "SELECT * FROM report_summary ORDER BY stage, channel, gateway, prefix"),
                    table(store, "SELECT * FROM report_recovery ORDER BY stage, cohort"),
                )
            )
            inspector = sa.inspect(store.engine)
            names = {ix["name"] for ix in inspector.get_indexes("report_contact")}
            pk = inspector.get_pk_constraint("report_contact")["constrained_columns"]
            assert "ix_report_contact_debtor" not in names, "the retired index is dropped"
            if store is new:
                assert "ix_report_contact_run" in names and not pk
            else:
                assert "ix_report_contact_run" not in names and pk == ["dag_id", "run_id", "idempotency_key"]
        assert len(loaded[0][0]) == 8
        assert loaded[0] == loaded[1]
    finally:
        new.engine.dispose()
        old.engine.dispose()


def test_a_second_load_of_a_run_waits_for_the_first(pg_url):
    """Without a unique key, two interleaved loads of a run would both insert: the lock orders them."""
    import threading

    from include.dunning.reporting import _lock_run

    store = DunningStore(pg_url)
    holder = DunningStore(pg_url)
    try:
        seed_run(store)
        load_reporting(store, run_id=RUN, dag_id=DAG)
        done: list[dict] = []
        with holder.engine.connect() as conn, conn.begin():
            _lock_run("postgresql", conn, {"dag_id": DAG, "run_id": RUN})
            worker = threading.Thread(
                target=lambda: done.append(load_reporting(store, run_id=RUN, dag_id=DAG)), daemon=True
            )
            worker.start()
            waiting = False
            for _ in range(300):
                waiting = bool(
                    conn.execute(
                        sa.text(
                            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
                        )
                    ).scalar()
                )
                if waiting or not worker.is_alive():
                    break
                worker.join(0.1)
            assert waiting, "the second load did not wait for the run's lock"
            assert not done
        worker.join(60)
        assert done and done[0]["contacts"] == 8
        assert table(store, "SELECT COUNT(*) FROM report_contact WHERE run_id = :r", r=RUN) == [(8,)]
    finally:
        store.engine.dispose()
        holder.engine.dispose()
