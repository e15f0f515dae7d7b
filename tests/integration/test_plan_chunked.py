"""The plan step works in chunks: any chunk size writes the same ledger, preview and counts.

Runs ``PlanTaxPaymentOperator.execute`` and ``PlanPowerOperator.execute`` against a real
SQLite dunning store (an Airflow connection from the environment) on a validated Parquet file
of a few thousand generated rows, once in many small chunks and once in one chunk.
"""

from __future__ import annotations

import importlib.util
import json
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
AS_OF = date(2026, 11, 23)


def _bench():
    spec = importlib.util.spec_from_file_location("bench_plan", REPO / "bench" / "plan.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeTI:
    def __init__(self, dag_id: str) -> None:
        self.dag_id = dag_id
        self.xcom: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.xcom[key] = value


def _run(operator_cls, valid: Path, store: Path, staging: Path, monkeypatch, chunk_rows: int, **kwargs):
    monkeypatch.setenv("AIRFLOW_CONN_DUNNING_STORE", json.dumps({"conn_type": "sqlite", "host": str(store)}))
    monkeypatch.setenv("DUNNING_STAGING_ROOT", "file://" + str(staging))
    op = operator_cls(task_id="plan", valid_path=str(valid), dry_run=True, chunk_rows=chunk_rows, **kwargs)
    ti = FakeTI("bench_dag")
    batches = op.execute({"run_id": "run-1", "params": {"as_of": AS_OF.isoformat()}, "ti": ti})
    engine = sa.create_engine(f"sqlite:///{store}")
    with engine.connect() as conn:
        ledger = conn.execute(
            sa.text(
                "SELECT idempotency_key, campaign, period, debtor_ids, stage, channel, attempt, phone, "
                "message_text, parts, amount, surcharge, gateway, state, reason FROM contact_ledger "
                "ORDER BY idempotency_key"
            )
        ).all()
    engine.dispose()
    preview = (staging / "bench_dag" / "run-1" / "plan" / "messages.csv").read_text(encoding="utf-8-sig")
    counts = dict(ti.xcom["counts"])
    counts.pop("preview")
    return batches, ledger, preview, counts


@pytest.mark.parametrize("campaign", ["tax", "power"])
def test_chunk_size_does_not_change_the_plan(tmp_path, monkeypatch, campaign):
    from operators.plan import PlanPowerOperator, PlanTaxPaymentOperator

    bench = _bench()
    blocks = (
        bench.tax_blocks(2500, shape="sqlite")
        if campaign == "tax"
        else bench.power_blocks(2500, shape="sqlite")
    )
    valid = tmp_path / "valid.parquet"
    pq.write_table(pa.concat_tables(list(blocks)), valid, row_group_size=500)
    operator_cls = PlanTaxPaymentOperator if campaign == "tax" else PlanPowerOperator
    kwargs = {} if campaign == "tax" else {"voice_gateway": "modem_pool"}
    small = _run(
        operator_cls, valid, tmp_path / "a.db", tmp_path / "sa", monkeypatch, chunk_rows=97, **kwargs
    )
    whole = _run(
        operator_cls, valid, tmp_path / "b.db", tmp_path / "sb", monkeypatch, chunk_rows=10**7, **kwargs
    )
    assert small[1] == whole[1] and len(small[1]) > 300
    assert small[2] == whole[2]  # the preview CSV, in the same order
    assert small[3] == whole[3]
    assert small[3]["planned"] + small[3]["suppressed"] == len(small[1])
    # one ledger row per number and purpose: no number was split between two chunks
    keys = {(r.phone, r.stage if campaign == "tax" else r.stage == "low_balance") for r in small[1]}
    assert len(keys) == len(small[1])


@pytest.mark.parametrize("campaign", ["tax", "power"])
def test_worker_processes_do_not_change_the_plan(tmp_path, monkeypatch, campaign):
    """Chunks planned in two worker processes give the ledger, preview and counts of one process."""
    from operators.plan import PlanPowerOperator, PlanTaxPaymentOperator

    bench = _bench()
    blocks = (
        bench.tax_blocks(3000, shape="postgres")
        if campaign == "tax"
        else bench.power_blocks(3000, shape="postgres")
    )
    valid = tmp_path / "valid.parquet"
    pq.write_table(pa.concat_tables(list(blocks)), valid, row_group_size=400)
    operator_cls = PlanTaxPaymentOperator if campaign == "tax" else PlanPowerOperator
    kwargs = {} if campaign == "tax" else {"voice_gateway": "modem_pool"}
    one = _run(operator_cls, valid, tmp_path / "a.db", tmp_path / "sa", monkeypatch, chunk_rows=300,
               plan_processes=1, **kwargs)  # fmt: skip
    two = _run(operator_cls, valid, tmp_path / "b.db", tmp_path / "sb", monkeypatch, chunk_rows=300,
               plan_processes=2, **kwargs)  # fmt: skip
    assert one[1] == two[1] and len(one[1]) > 300
    assert one[2] == two[2] and one[2].count("\n") == len(one[1]) + 1
    assert one[3] == two[3]


def test_the_plan_reads_only_the_columns_it_uses():
    from operators.plan import PlanFilingRemindersOperator, PlanTaxPaymentOperator

    levy = ["liability_id", "taxpayer_id", "taxpayer_name", "tax_type", "period", "principal", "paid",
            "outstanding", "deadline", "deferred_until", "mobile", "mobile_normalized", "taxpayer_id_ok"]  # fmt: skip
    unread = PlanTaxPaymentOperator(task_id="plan", valid_path="x").unread_columns(levy)
    assert unread >= {"liability_id", "principal", "paid", "mobile", "taxpayer_id_ok"}
    assert not unread & {"taxpayer_id", "taxpayer_name", "tax_type", "period", "outstanding", "deadline",
                         "deferred_until", "mobile_normalized"}  # fmt: skip
    # The filing plan's after_plan reads whole rows (非正常户 escalation): it keeps every column.
    filing = PlanFilingRemindersOperator(task_id="plan", valid_path="x").unread_columns(levy)
    assert filing & set(levy) == {"taxpayer_id_ok"}

    class OwnFlags(PlanTaxPaymentOperator):
        def after_plan(self, store, table, *, as_of, run_id):
            return {"columns": len(table.column_names)}

    assert "principal" not in OwnFlags(task_id="plan", valid_path="x").unread_columns(levy)
