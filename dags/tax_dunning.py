"""Tax payment dunning (税款催缴): remind taxpayers whose tax is overdue, weekly, by SMS.

extract (levy system -> Parquet) -> validate (GX suite, quarantine) -> plan (include/ladders/
tax.yaml: eligibility incl. deferrals, promises to pay and a holdout group, surcharge, one
message per number, a call through the modem pool after an undelivered or twice unanswered SMS,
ledger, batches; numbers with 3 failed contacts flagged for staff) -> send (mapped over batches,
one pool per gateway; calls one task per modem) -> collect (receipts, replies) -> report (HTML +
JSON + dunning_run). Thin on purpose: the logic is in operators/ and include/dunning/.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param

from operators.extract import SqlToParquetOperator
from operators.pipeline import DAG_DEFAULTS, common_params, send_collect_report
from operators.plan import PlanTaxPaymentOperator
from operators.report import payments_extract
from operators.validate import ValidateDebtorsOperator

with DAG(
    dag_id="tax_dunning",
    description="Weekly SMS reminders to taxpayers with overdue tax, with the late-payment surcharge",
    schedule="0 9 * * 1-5",
    params={
        **common_params(signature="示范市税务"),
        "holdout_share": Param(
            0.05,
            type="number",
            minimum=0,
            maximum=0.5,
            description="Share of taxpayers held out of reminders to measure recovery (stable per "
            "taxpayer); 0 turns the holdout off",
        ),
        "modems": Param(
            [],
            type="array",
            items={"type": "string"},
            description="gsm_modem connection ids for voice re-notification (an SMS undelivered or "
            "unanswered twice); none: those contacts are recorded as suppressed",
        ),
        "ring_timeout_seconds": Param(
            30,
            type="integer",
            minimum=5,
            maximum=120,
            description="Ring this long before a call counts as no answer",
        ),
    },
    tags=["dunning", "tax", "sms"],
    doc_md=__doc__,
    **DAG_DEFAULTS,
) as dag:
    extract = SqlToParquetOperator(
        task_id="extract_overdue_liabilities",
        sql="levy/overdue_liabilities.sql",
        conn_id="levy_source",
        dataset="overdue_liabilities",
        dtypes="levy/overdue_liabilities.types.yaml",
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
        voice_gateway="{{ 'modem_pool' if params.modems else '' }}",
        holdout_share="{{ params.holdout_share }}",
    )
    payments = payments_extract(sql="levy/payments.sql", conn_id="levy_source")
    send_collect_report(extract=extract, validate=validate, plan=plan, voice=True, payments=payments)
