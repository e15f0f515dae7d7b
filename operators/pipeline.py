"""The shared shape of a dunning DAG: its common params, and send -> collect -> report -> watcher."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import BaseOperator, Param

from include.paths import SQL_ROOT
from operators.report import RunReportOperator
from operators.smpp import SmppCollectReceiptsOperator, SmppSendOperator
from operators.watcher import RunWatcherOperator

# What every dunning DAG is: local-time schedule, one run at a time, SQL from include/sql/,
# native template rendering (numbers stay numbers), two retries per task.
DAG_DEFAULTS: dict[str, Any] = {
    "start_date": pendulum.datetime(2026, 1, 1, tz="Asia/Shanghai"),
    "catchup": False,
    "max_active_runs": 1,
    "render_template_as_native_obj": True,
    "template_searchpath": [str(SQL_ROOT)],
    "default_args": {"retries": 2, "retry_delay": timedelta(minutes=2), "owner": "dunning"},
}


def common_params(*, signature: str) -> dict[str, Param]:
    """Return the params every dunning DAG offers in the trigger form."""
    return {
        "as_of": Param(None, type=["null", "string"], format="date", description="As-of date; default: the logical date"),
        "max_bad_share": Param(
            0.2, type="number", minimum=0, maximum=1, description="Fail validation above this share of bad rows"
        ),
        "max_amount": Param(
            100_000_000, type="number", minimum=0, description="Amounts above this (yuan) are quarantined"
        ),
        "signature": Param(signature, type="string", minLength=2, maxLength=20, description="SMS signature 【...】"),
        "receipt_wait_seconds": Param(120, type="integer", minimum=0, description="Longest wait for delivery receipts"),
        "respect_sending_window": Param(
            True,
            type="boolean",
            description="Send SMS only 08:00-20:00 Asia/Shanghai; turn off only to rehearse on the simulator",
        ),
        "dry_run": Param(
            False, type="boolean", description="Plan and render into the ledger and a preview CSV; send nothing"
        ),
    }  # fmt: skip


def send_collect_report(
    *, extract: Any, validate: Any, plan: Any, gateway: str = "smpp_default", voice: bool = False
) -> None:
    """Wire the send, collect, report and watcher tasks after ``plan`` in the current DAG.

    :param extract: the extract task (its XCom has the row count)
    :param validate: the validate task (its XCom has the quarantined and debtor counts)
    :param plan: the plan task (its XCom is the list of SMS batch ids; ``voice_batches`` the rest)
    :param gateway: the SMPP connection id, also the name of the pool that caps its binds
    :param voice: also place the voice calls: one mapped task per modem in the ``modems`` param
        (pool ``modem_pool``, worker queue ``modem``); no modems, no task instances
    """
    send = SmppSendOperator.partial(
        task_id="send_sms",
        smpp_conn_id=gateway,
        pool=gateway,
        respect_sending_window="{{ params.respect_sending_window }}",
        max_active_tis_per_dagrun=4,
    ).expand(batch_id=plan.output)
    collect = SmppCollectReceiptsOperator(
        task_id="collect_receipts",
        smpp_conn_id=gateway,
        max_wait_seconds="{{ params.receipt_wait_seconds }}",
        trigger_rule="none_failed",
    )
    report = RunReportOperator(
        task_id="report",
        extract_task_id=extract.task_id,
        validate_task_id=validate.task_id,
        plan_task_id=plan.task_id,
        trigger_rule="all_done",
    )
    extract >> validate >> plan >> send >> collect >> report
    tasks = [extract, validate, plan, send, collect, report]
    if voice:
        from operators.modem import MODEM_POOL, MODEM_QUEUE, ModemVoiceOperator

        modems = ModemListOperator(task_id="modem_list")
        # A mapped task takes pool and queue from partial(), not from the operator's defaults.
        calls = ModemVoiceOperator.partial(
            task_id="call_voice",
            pool=MODEM_POOL,
            queue=MODEM_QUEUE,
            batch_ids="{{ ti.xcom_pull(task_ids='" + plan.task_id + "', key='voice_batches') }}",
            respect_calling_window="{{ params.respect_sending_window }}",
            ring_timeout="{{ params.ring_timeout_seconds }}",
        ).expand(modem_conn_id=modems.output)
        plan >> modems >> calls >> report
        tasks += [modems, calls]
    tasks >> RunWatcherOperator(task_id="watcher")


class ModemListOperator(BaseOperator):
    """Return the run's modems (the ``modems`` param) for the mapped voice task to expand over."""

    ui_color = "#f3f3f3"

    def execute(self, context: Any) -> list[str]:
        modems = list(context["params"].get("modems") or [])
        self.log.info("modems for this run: %s", ", ".join(modems) or "none (voice stages are suppressed)")
        return modems
