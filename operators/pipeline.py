"""The shared shape of a dunning DAG: its common params, and send -> collect -> report -> watcher."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import BaseOperator, Param

from include.paths import SQL_ROOT
from operators.common import DEFAULT_STORE_CONN_ID, dunning_store
from operators.report import RunReportOperator, StaffFollowupOperator
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


GATEWAYS_ENV = "DUNNING_SMPP_GATEWAYS"


def smpp_gateways(default: str = "smpp_default") -> list[str]:
    """Return the dunning DAGs' SMPP gateways (connection ids) in routing order.

    From the environment variable ``DUNNING_SMPP_GATEWAYS`` (comma-separated, e.g.
    ``smpp_cmcc,smpp_default,smpp_urgent``; read when the DAG file is parsed, so it must be the
    same on the scheduler, the DAG processor and every worker), else the one ``default``
    gateway. Each gateway gets its own send task and pool; lanes, prefixes and quotas are the
    connections' extras (docs/connections/smpp.md).
    """
    names = [n.strip() for n in os.environ.get(GATEWAYS_ENV, "").split(",") if n.strip()]
    return list(dict.fromkeys(names)) or [default]


def send_collect_report(
    *,
    extract: Any,
    validate: Any,
    plan: Any,
    gateway: str = "smpp_default",
    gateways: Sequence[str] | None = None,
    voice: bool = False,
    payments: Any = None,
) -> None:
    """Wire the send, collect, report and watcher tasks after ``plan`` in the current DAG.

    One gateway: one ``send_sms`` task mapped over the plan's SMS batches (pool = the gateway)
    and one ``collect_receipts`` task, as always. Several gateways: the plan routes the
    contacts among them, and each gateway gets its own mapped send task over its batches
    (``send_sms`` for the first, ``send_sms__<gateway>`` for the others; pool = the gateway)
    that fails over to the next gateway of the same lane when its own cannot bind; then
    ``collect_gateways`` lists the gateways the run sent through (or with receipts still due)
    and ``collect_receipts`` is mapped over them.

    :param extract: the extract task (its XCom has the row count)
    :param validate: the validate task (its XCom has the quarantined and debtor counts)
    :param plan: the plan task (its XCom is the list of SMS batch ids, ``sms_batches__<gateway>``
        per gateway; ``voice_batches`` the rest)
    :param gateway: the SMPP connection id when there is one gateway, also its pool's name
    :param gateways: the gateways in routing order; default :func:`smpp_gateways` (``gateway``
        unless ``DUNNING_SMPP_GATEWAYS`` lists several)
    :param voice: also place the voice calls: one mapped task per modem in the ``modems`` param
        (pool ``modem_pool``, worker queue ``modem``); no modems, no task instances
    :param payments: the payments extract task (recovery against the holdout in the report);
        after the report, ``staff_followup`` writes the .xlsx of debtors flagged for staff
    """
    names = list(gateways) if gateways else smpp_gateways(gateway)
    collect: Any
    if len(names) == 1:
        send: Any = SmppSendOperator.partial(
            task_id="send_sms",
            smpp_conn_id=names[0],
            pool=names[0],
            respect_sending_window="{{ params.respect_sending_window }}",
            max_active_tis_per_dagrun=4,
        ).expand(batch_id=plan.output)
        collect = SmppCollectReceiptsOperator(
            task_id="collect_receipts",
            smpp_conn_id=names[0],
            max_wait_seconds="{{ params.receipt_wait_seconds }}",
            trigger_rule="none_failed",
        )
        send >> collect
        sends = [send]
        collect_tasks = [collect]
    else:
        if getattr(plan, "gateways", None) is None:
            plan.gateways = names  # the plan routes among the same gateways, in the same order
        sends = []
        for n, name in enumerate(names):
            # Airflow maps only over return values: a small task hands on the gateway's batch ids.
            batches = GatewayBatchesOperator(
                task_id=f"sms_batches__{name}", plan_task_id=plan.task_id, gateway=name
            )
            plan >> batches
            sends.append(batches)
            sends.append(
                SmppSendOperator.partial(
                    task_id="send_sms" if n == 0 else f"send_sms__{name}",
                    smpp_conn_id=name,
                    gateways=names,
                    pool=name,
                    respect_sending_window="{{ params.respect_sending_window }}",
                    max_active_tis_per_dagrun=4,
                ).expand(batch_id=batches.output)
            )
        targets = CollectGatewaysOperator(
            task_id="collect_gateways", gateways=names, trigger_rule="none_failed"
        )
        collect = SmppCollectReceiptsOperator.partial(
            task_id="collect_receipts",
            max_wait_seconds="{{ params.receipt_wait_seconds }}",
            trigger_rule="none_failed",
        ).expand(smpp_conn_id=targets.output)
        sends[1::2] >> targets >> collect
        collect_tasks = [targets, collect]
    report = RunReportOperator(
        task_id="report",
        extract_task_id=extract.task_id,
        validate_task_id=validate.task_id,
        plan_task_id=plan.task_id,
        payments_task_id=payments.task_id if payments is not None else None,
        trigger_rule="all_done",
    )
    followup = StaffFollowupOperator(task_id="staff_followup", trigger_rule="all_done")
    extract >> validate >> plan >> sends
    collect >> report >> followup
    tasks = [extract, validate, plan, *sends, *collect_tasks, report, followup]
    if payments is not None:
        payments >> report
        tasks.append(payments)
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


class GatewayBatchesOperator(BaseOperator):
    """Return one gateway's SMS batch ids from the plan (XCom ``sms_batches__<gateway>``) to map over.

    :param plan_task_id: the plan task
    :param gateway: the gateway (connection id)
    """

    ui_color = "#f3f3f3"

    def __init__(self, *, plan_task_id: str, gateway: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan_task_id = plan_task_id
        self.gateway = gateway

    def execute(self, context: Any) -> list[str]:
        batches = context["ti"].xcom_pull(task_ids=self.plan_task_id, key=f"sms_batches__{self.gateway}")
        batches = list(batches or [])
        self.log.info("gateway %s: %d SMS batches", self.gateway, len(batches))
        return batches


class CollectGatewaysOperator(BaseOperator):
    """Return the gateways to collect receipts from: those the run sent through or still awaiting receipts.

    Receipts are matched by (gateway, message id), so every gateway a batch failed over to must
    be collected from. A gateway neither used by the run nor owing receipts is left alone (its
    replies wait at the SMSC for a later run); with nothing to collect anywhere, the first
    gateway is still read for replies.

    :param gateways: the DAG's gateways in routing order
    :param store_conn_id: Airflow connection of the dunning store
    """

    ui_color = "#ede7f6"

    def __init__(
        self, *, gateways: Sequence[str], store_conn_id: str = DEFAULT_STORE_CONN_ID, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.gateways = list(gateways)
        self.store_conn_id = store_conn_id

    def execute(self, context: Any) -> list[str]:
        used = set(dunning_store(self.store_conn_id).gateways_to_collect(context["run_id"]))
        targets = [g for g in self.gateways if g in used] or self.gateways[:1]
        self.log.info("collecting receipts and replies from %s", ", ".join(targets))
        return targets


class ModemListOperator(BaseOperator):
    """Return the run's modems (the ``modems`` param) for the mapped voice task to expand over."""

    ui_color = "#f3f3f3"

    def execute(self, context: Any) -> list[str]:
        modems = list(context["params"].get("modems") or [])
        self.log.info("modems for this run: %s", ", ".join(modems) or "none (voice stages are suppressed)")
        return modems
