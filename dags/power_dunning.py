"""Electricity dunning (电费催缴) on the power ladder: arrears with 违约金, cut-off notices, low balances.

extract (billing system -> Parquet: unpaid postpaid bills from their due date, prepaid balances
below the alert threshold) -> validate (GX suite, quarantine) -> plan (include/ladders/power.yaml:
due-date reminder, dunning at +7, cut-off notice after day 30 only with a logged 催交, prepaid
alerts; one message per number) -> send -> collect -> report. Thin on purpose.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param

from operators.extract import SqlToParquetOperator
from operators.pipeline import DAG_DEFAULTS, common_params, send_collect_report
from operators.plan import PlanPowerOperator
from operators.report import payments_extract
from operators.validate import ValidateDebtorsOperator

with DAG(
    dag_id="power_dunning",
    description="Daily SMS reminders to electricity customers: arrears, cut-off notices, low prepaid balances",
    schedule="0 10 * * *",
    params={
        **common_params(signature="示范供电"),
        "grace_days": Param(
            0, type="integer", minimum=0, description="Days after the due date before 违约金 runs"
        ),
        "cross_year": Param(
            "whole_period",
            enum=["whole_period", "split_by_day"],
            description="违约金 of bills carried across a year end: 3‰ for all days, or split by day",
        ),
        "holdout_share": Param(
            0.05,
            type="number",
            minimum=0,
            maximum=0.5,
            description="Share of accounts held out of dunning to measure recovery (stable per "
            "account; never cut-off notices or balance alerts); 0 turns the holdout off",
        ),
        "balance_alert_below": Param(
            50, type="number", description="Prepaid balances below this (yuan) are alerted"
        ),
        "modems": Param(
            [],
            type="array",
            items={"type": "string"},
            description="gsm_modem connection ids for voice calls (pool modem_pool, one slot each); "
            "none: voice stages are recorded as suppressed",
        ),
        "ring_timeout_seconds": Param(
            30,
            type="integer",
            minimum=5,
            maximum=120,
            description="Ring this long before a call counts as no answer",
        ),
    },
    tags=["dunning", "power", "sms"],
    doc_md=__doc__,
    **DAG_DEFAULTS,
) as dag:
    extract = SqlToParquetOperator(
        task_id="extract_dunning_items",
        sql="billing/dunning_items.sql",
        conn_id="billing_source",
        dataset="dunning_items",
        dtypes="billing/dunning_items.types.yaml",
        parameters={"balance_alert_below": "{{ params.balance_alert_below }}"},
    )
    validate = ValidateDebtorsOperator(
        task_id="validate",
        source_path="{{ ti.xcom_pull(task_ids='extract_dunning_items')['path'] }}",
        suite="billing_dunning_items",
        source="billing",
        key_column="item_id",
        debtor_column="account_no",
        max_bad_share="{{ params.max_bad_share }}",
        max_amount="{{ params.max_amount }}",
    )
    plan = PlanPowerOperator(
        task_id="plan",
        valid_path="{{ ti.xcom_pull(task_ids='validate')['path'] }}",
        signature="{{ params.signature }}",
        dry_run="{{ params.dry_run }}",
        grace_days="{{ params.grace_days }}",
        cross_year="{{ params.cross_year }}",
        voice_gateway="{{ 'modem_pool' if params.modems else '' }}",
        holdout_share="{{ params.holdout_share }}",
    )
    payments = payments_extract(sql="billing/payments.sql", conn_id="billing_source")
    send_collect_report(extract=extract, validate=validate, plan=plan, voice=True, payments=payments)
