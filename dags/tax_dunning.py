"""Tax payment dunning (税款催缴): remind taxpayers whose tax is overdue, weekly, by SMS.

extract (levy system -> Parquet) -> validate (GX suite, quarantine) -> plan (eligibility,
surcharge, one message per number, ledger, batches) -> send (mapped over batches, one pool per
gateway) -> collect (receipts, replies) -> report (HTML + JSON + dunning_run). Thin on purpose:
the logic is in operators/ and include/dunning/.
"""

from __future__ import annotations

from airflow.sdk import DAG

from operators.extract import SqlToParquetOperator
from operators.pipeline import DAG_DEFAULTS, common_params, send_collect_report
from operators.plan import PlanTaxPaymentOperator
from operators.validate import ValidateDebtorsOperator

with DAG(
    dag_id="tax_dunning",
    description="Weekly SMS reminders to taxpayers with overdue tax, with the late-payment surcharge",
    schedule="0 9 * * 1-5",
    params=common_params(signature="示范市税务"),
    tags=["dunning", "tax", "sms"],
    doc_md=__doc__,
    **DAG_DEFAULTS,
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
        dry_run="{{ params.dry_run }}",
    )
    send_collect_report(extract=extract, validate=validate, plan=plan)
