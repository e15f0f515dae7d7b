"""Tax filing reminders (申报提醒): 5 and 2 working days before each filing deadline, by SMS.

extract (levy filing obligations around the as-of date) -> validate (GX suite, quarantine) ->
plan (include/ladders/tax.yaml: reminders to those not filed, one message per number; taxpayers
with 3 consecutive months unfiled flagged for staff as 非正常户) -> send -> collect -> report.
Deadlines come from the published table with the holiday rule as fallback. Thin on purpose.
"""

from __future__ import annotations

from airflow.sdk import DAG

from operators.extract import SqlToParquetOperator
from operators.pipeline import DAG_DEFAULTS, common_params, send_collect_report
from operators.plan import PlanFilingRemindersOperator
from operators.validate import ValidateDebtorsOperator

with DAG(
    dag_id="tax_filing_reminders",
    description="SMS filing reminders before each tax deadline; 非正常户 flagged for staff",
    schedule="30 9 * * *",
    params=common_params(signature="示范市税务"),
    tags=["dunning", "tax", "sms", "filing"],
    doc_md=__doc__,
    **DAG_DEFAULTS,
) as dag:
    extract = SqlToParquetOperator(
        task_id="extract_filing_status",
        sql="levy/filing_status.sql",
        conn_id="levy_source",
        dataset="filing_status",
        dtypes="levy/filing_status.types.yaml",
        as_of_window=(-200, 21),
    )
    validate = ValidateDebtorsOperator(
        task_id="validate",
        source_path="{{ ti.xcom_pull(task_ids='extract_filing_status')['path'] }}",
        suite="levy_filing_status",
        source="levy",
        key_column="obligation_id",
        debtor_column="taxpayer_id",
        max_bad_share="{{ params.max_bad_share }}",
    )
    plan = PlanFilingRemindersOperator(
        task_id="plan",
        valid_path="{{ ti.xcom_pull(task_ids='validate')['path'] }}",
        signature="{{ params.signature }}",
        dry_run="{{ params.dry_run }}",
    )
    send_collect_report(extract=extract, validate=validate, plan=plan)
