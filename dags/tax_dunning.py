"""Tax payment dunning (税款催缴): remind taxpayers whose tax is overdue, weekly, by SMS.

extract (levy system -> Parquet) -> validate (GX suite, quarantine) -> plan (surcharge, text,
ledger, batches) -> send (mapped over batches, one pool per gateway) -> collect (receipts,
replies) -> report (HTML + JSON + dunning_run). Thin on purpose: the logic is in operators/
and include/dunning/.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Param

from include.paths import SQL_ROOT
from operators.extract import SqlToParquetOperator
from operators.plan import PlanTaxPaymentOperator
from operators.report import RunReportOperator
from operators.smpp import SmppCollectReceiptsOperator, SmppSendOperator
from operators.validate import ValidateDebtorsOperator
from operators.watcher import RunWatcherOperator

with DAG(
    dag_id="tax_dunning",
    description="Weekly SMS reminders to taxpayers with overdue tax, with the late-payment surcharge",
    schedule="0 9 * * 1-5",
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Shanghai"),
    catchup=False,
    max_active_runs=1,
    template_searchpath=[str(SQL_ROOT)],
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2), "owner": "dunning"},
    params={
        "as_of": Param(
            None, type=["null", "string"], format="date", description="As-of date; default: the logical date"
        ),
        "max_bad_share": Param(
            0.2,
            type="number",
            minimum=0,
            maximum=1,
            description="Fail validation above this share of bad rows",
        ),
        "max_amount": Param(
            100_000_000, type="number", minimum=0, description="Amounts above this (yuan) are quarantined"
        ),
        "signature": Param(
            "示范市税务", type="string", minLength=2, maxLength=20, description="SMS signature 【...】"
        ),
        "receipt_wait_seconds": Param(
            120, type="integer", minimum=0, description="Longest wait for delivery receipts"
        ),
        "respect_sending_window": Param(
            True,
            type="boolean",
            description="Send SMS only 08:00-20:00 Asia/Shanghai; turn off only to rehearse on the simulator",
        ),
        "dry_run": Param(
            False,
            type="boolean",
            description="Plan and render into the ledger and a preview CSV; send nothing",
        ),
    },
    tags=["dunning", "tax", "sms"],
    doc_md=__doc__,
) as dag:
    extract = SqlToParquetOperator(
        task_id="extract_overdue_liabilities",
        sql="levy/overdue_liabilities.sql",
        conn_id="levy_source",
        dataset="overdue_liabilities",
    )
    validate = ValidateDebtorsOperator(
        task_id="validate",
        source_path="{{ ti.xcom_pull(task_ids='extract_overdue_liabilities')['path'] }}",
        suite="levy_overdue_liabilities",
        source="levy",
        key_column="liability_id",
        debtor_column="taxpayer_id",
        max_bad_share="{{ params.max_bad_share }}",
        max_amount="{{ params.max_amount }}",
    )
    plan = PlanTaxPaymentOperator(
        task_id="plan",
        valid_path="{{ ti.xcom_pull(task_ids='validate')['path'] }}",
        signature="{{ params.signature }}",
        gateway="smpp_default",
        dry_run="{{ params.dry_run }}",
    )
    send = SmppSendOperator.partial(
        task_id="send_sms",
        smpp_conn_id="smpp_default",
        pool="smpp_default",
        respect_sending_window="{{ params.respect_sending_window }}",
        max_active_tis_per_dagrun=4,
    ).expand(batch_id=plan.output)
    collect = SmppCollectReceiptsOperator(
        task_id="collect_receipts",
        smpp_conn_id="smpp_default",
        max_wait_seconds="{{ params.receipt_wait_seconds }}",
        trigger_rule="none_failed",
    )
    report = RunReportOperator(
        task_id="report",
        extract_task_id="extract_overdue_liabilities",
        validate_task_id="validate",
        plan_task_id="plan",
        trigger_rule="all_done",
    )
    extract >> validate >> plan >> send >> collect >> report
    [extract, validate, plan, send, collect, report] >> RunWatcherOperator(task_id="watcher")
