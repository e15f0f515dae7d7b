"""Write the run report: one self-contained HTML file per run, its figures as JSON and in the store.

Also the staff follow-up export (:class:`StaffFollowupOperator`): the .xlsx of debtors with N
failed contacts, with what was tried, written beside the report.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from typing import Any

from airflow.sdk import BaseOperator

from include.monitor.links import RunReportLink
from include.monitor.reports import report_stem
from operators.common import DEFAULT_STORE_CONN_ID, display_path, dunning_store, resolve_as_of, staging_root

FUNNEL = (
    ("Debtors extracted", "debtors"),
    ("Overdue items extracted", "extracted"),
    ("Rows quarantined", "quarantined"),
    ("Contacts planned", "planned"),
    ("Contacts suppressed", "suppressed"),
    ("SMS submitted", "submitted"),
    ("Delivered", "delivered"),
    ("Undelivered", "undelivered"),
)

# Earlier runs whose 30-day recovery window is still open get their recovery refreshed.
RECOVERY_REFRESH_DAYS = 30


def payments_extract(*, sql: str, conn_id: str, task_id: str = "extract_payments") -> Any:
    """Return the task extracting the payments of the last 30 days up to the as-of date, for the report.

    :param sql: the query under include/sql/ (``levy/payments.sql``, ``billing/payments.sql``):
        ``debtor_id``, ``paid_on``, ``amount`` between ``:window_start`` and ``:window_end``; its
        Parquet types in ``<query>.types.yaml`` beside it (the same schema from every engine)
    :param conn_id: the source system's connection
    """
    from operators.extract import SqlToParquetOperator

    return SqlToParquetOperator(
        task_id=task_id,
        sql=sql,
        conn_id=conn_id,
        dataset="payments",
        as_of_window=(-RECOVERY_REFRESH_DAYS, 0),
        dtypes=sql.removesuffix(".sql") + ".types.yaml",
    )


def report_root() -> Any:
    """Return the folder of all run reports (``<dag_id>/<stem>.*`` below it).

    ``DUNNING_REPORT_ROOT`` (any fsspec URL) when set, else ``<staging root>/reports``. The
    monitor plugin serves reports from the same root, so the api-server needs the same setting.
    """
    root = os.environ.get("DUNNING_REPORT_ROOT")
    if root:
        from airflow.sdk import ObjectStoragePath

        return ObjectStoragePath(root if "://" in root else "file://" + os.path.abspath(root))
    return staging_root() / "reports"


def read_payments(path: str | None) -> Any:
    """Return the extracted payments (``debtor_id``, ``paid_on``, ``amount``) from a Parquet file, or None."""
    if not path:
        return None
    import pandas as pd
    from airflow.sdk import ObjectStoragePath

    with ObjectStoragePath(path).open("rb") as fh:
        return pd.read_parquet(fh, columns=["debtor_id", "paid_on", "amount"])


def write_run_report(
    store: Any,
    *,
    folder: Any,
    dag_id: str,
    run_id: str,
    as_of: date,
    extract: Mapping[str, Any] | None = None,
    validate: Mapping[str, Any] | None = None,
    plan: Mapping[str, Any] | None = None,
    payments: Any = None,
    timings: dict[str, float] | None = None,
    log: Any = None,
) -> dict[str, Any]:
    """Load the reporting tables of one run and write its HTML, JSON and CSV reports into ``folder``.

    The operator's whole path as a plain function (the benchmark calls it too): ledger counts,
    ``load_reporting`` (with the payments, when given, and the recovery of the DAG's earlier
    runs still in their 30-day window refreshed from them), ``report_tables``, CSV, HTML, JSON and
    the ``dunning_run`` row.

    :param folder: where the files go (a ``pathlib.Path`` or an ``ObjectStoragePath``)
    :param extract: the extract task's XCom (``rows``)
    :param validate: the validate task's XCom (``debtors``, ``quarantined``)
    :param plan: the plan task's ``counts`` XCom (``planned``, ``suppressed``)
    :param payments: payments as a frame (``debtor_id``, ``paid_on``, ``amount``), or None
    :param timings: filled with seconds per step
    :return: the run figures (``report_path`` included)
    """
    import sqlalchemy as sa

    from include.dunning import ledger, reporting

    extract, validate, plan = extract or {}, validate or {}, plan or {}
    timings = timings if timings is not None else {}
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[step] = timings.get(step, 0.0) + now - clock
        clock = now

    sent = store.ledger_counts(sent_run_id=run_id)
    with store.engine.connect() as conn:
        reasons = conn.execute(
            sa.text(
                "SELECT reason, COUNT(*) FROM quarantine WHERE run_id = :run GROUP BY reason ORDER BY 2 DESC"
            ),
            {"run": run_id},
        ).all()
    submitted_states = (
        ledger.SUBMITTED,
        ledger.DELIVERED,
        ledger.UNDELIVERED,
        ledger.EXPIRED,
        ledger.UNKNOWN,
    )
    figures: dict[str, Any] = {
        "run_id": run_id,
        "dag_id": dag_id,
        "as_of": as_of,
        "debtors": int(validate.get("debtors", 0)),
        "extracted": int(extract.get("rows", 0)),
        "quarantined": int(validate.get("quarantined", 0)),
        "planned": int(plan.get("planned", 0)),
        "suppressed": int(plan.get("suppressed", 0)) + sent.get(ledger.SUPPRESSED, 0),
        "submitted": sum(sent.get(s, 0) for s in submitted_states),
        "failed": sent.get(ledger.FAILED, 0),
        "delivered": sent.get(ledger.DELIVERED, 0),
        "undelivered": sent.get(ledger.UNDELIVERED, 0) + sent.get(ledger.EXPIRED, 0),
        "pending": sent.get(ledger.SUBMITTED, 0),
    }
    lap("ledger counts")
    folder.mkdir(parents=True, exist_ok=True)
    stem = report_stem(run_id)
    html_path = folder / f"{stem}.html"
    json_path = folder / f"{stem}.json"
    loaded = reporting.load_reporting(store, run_id=run_id, dag_id=dag_id, payments=payments, timings=timings)
    if log is not None:
        log.info("reporting tables loaded: %s", loaded)
    clock = time.perf_counter()
    if payments is not None:
        with store.engine.connect() as conn:
            earlier = [
                r
                for (r,) in conn.execute(
                    sa.text(
                        "SELECT run_id FROM dunning_run WHERE dag_id = :dag_id AND run_id <> :run_id "
                        "AND as_of >= :since"
                    ),
                    {
                        "dag_id": dag_id,
                        "run_id": run_id,
                        "since": as_of - timedelta(days=RECOVERY_REFRESH_DAYS),
                    },
                ).all()
            ]
        if earlier:
            rows = reporting.refresh_recovery(store, dag_id=dag_id, run_ids=earlier, payments=payments)
            if log is not None:
                log.info("recovery refreshed for %d earlier run(s): %d rows", len(earlier), rows)
        lap("refresh earlier recovery")
    tables = reporting.report_tables(store, dag_id=dag_id, run_id=run_id)
    lap("report_tables")
    csv_names = reporting.write_report_csv(
        tables, lambda name: (folder / name).open("w", encoding="utf-8", newline=""), stem
    )
    lap("csv")
    html = reporting.render_run_report(
        store,
        dag_id=dag_id,
        run_id=run_id,
        as_of=as_of,
        generated_at=ledger.utcnow().strftime("%Y-%m-%d %H:%M:%S"),
        figures=figures,
        funnel=FUNNEL,
        sent_states=sent,
        quarantine_reasons=reasons,
        json_name=json_path.name,
        csv_names=csv_names,
        tables=tables,
    )
    with html_path.open("w", encoding="utf-8") as fh:
        fh.write(html)
    lap("html")
    figures["report_path"] = _shown(html_path)
    figures["finished_at"] = ledger.utcnow()
    with json_path.open("w", encoding="utf-8") as fh:
        json.dump(figures, fh, default=str, ensure_ascii=False, indent=2)
    store.save_run(figures)
    lap("json + dunning_run")
    return figures


def _shown(path: Any) -> str:
    return display_path(path) if hasattr(path, "protocol") else str(path)


class RunReportOperator(BaseOperator):
    """Gather the run's figures, load the reporting tables, write the HTML, JSON and CSV reports.

    The report goes to ``<staging root>/reports/<dag_id>/<run_id>.html`` (self-contained: inline
    SVG charts, no scripts, readable offline) with a ``.json`` of the run figures and
    ``<run_id>.<table>.csv`` files of its tables beside it, and a row in the store's
    ``dunning_run`` table. ``report_contact``, ``report_summary`` and ``report_recovery`` are
    (re)loaded for the run first (``include.dunning.reporting.load_reporting``); with a payments
    extract, recovery is measured (paid within 3 / 7 / 30 days, contacted against the holdout)
    and the recovery of the DAG's runs of the last 30 days is refreshed from the same payments.
    Runs even when an upstream task failed, so operators always see what happened. The task
    instance has a "Run report" button (an extra link) that opens the report through the
    monitor plugin.

    :param extract_task_id: task whose XCom has the extracted row count
    :param validate_task_id: task whose XCom has the quarantined row count
    :param plan_task_id: task whose ``counts`` XCom has the planned count
    :param payments_task_id: extract task of the payments (XCom ``path`` of a Parquet file with
        ``debtor_id``, ``paid_on``, ``amount``); None: no recovery figures
    :param store_conn_id: Airflow connection of the dunning store
    """

    template_fields: Sequence[str] = ()
    ui_color = "#f3f3f3"
    operator_extra_links = (RunReportLink(),)

    def __init__(
        self,
        *,
        extract_task_id: str,
        validate_task_id: str,
        plan_task_id: str,
        payments_task_id: str | None = None,
        store_conn_id: str = DEFAULT_STORE_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.extract_task_id = extract_task_id
        self.validate_task_id = validate_task_id
        self.plan_task_id = plan_task_id
        self.payments_task_id = payments_task_id
        self.store_conn_id = store_conn_id

    def execute(self, context: Any) -> str:
        ti = context["ti"]
        payments = None
        if self.payments_task_id:
            extracted = ti.xcom_pull(task_ids=self.payments_task_id) or {}
            if extracted.get("path"):
                payments = read_payments(extracted["path"])
                self.log.info("payments: %d rows from %s", len(payments), extracted["path"])
            else:
                self.log.warning(
                    "no payments extract (task %s): recovery is not measured", self.payments_task_id
                )
        timings: dict[str, float] = {}
        figures = write_run_report(
            dunning_store(self.store_conn_id),
            folder=report_root() / ti.dag_id,
            dag_id=ti.dag_id,
            run_id=context["run_id"],
            as_of=resolve_as_of(context),
            extract=ti.xcom_pull(task_ids=self.extract_task_id),
            validate=ti.xcom_pull(task_ids=self.validate_task_id),
            plan=ti.xcom_pull(task_ids=self.plan_task_id, key="counts"),
            payments=payments,
            timings=timings,
            log=self.log,
        )
        self.log.info("run report: %s", figures["report_path"])
        self.log.info("report steps (s): %s", ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))
        for label, key in FUNNEL:
            self.log.info("%-18s %d", label, figures[key])
        return figures["report_path"]


class StaffFollowupOperator(BaseOperator):
    """Write the staff follow-up list of the run's campaigns as .xlsx beside the run report.

    Debtors with at least ``failed_contacts_at_least`` failed contacts (undelivered, expired,
    failed) in the ledger, one row each with their latest number in full (staff dial it) and what
    was tried (date, channel, masked number, outcome), from
    :func:`include.dunning.reporting.staff_followup`. The file is
    ``<staging root>/reports/<dag_id>/<run_id>.followup.xlsx``, written under a temporary name
    and renamed, so a retry rewrites it whole. The campaigns are those of the run's ledger rows
    (a run with no contacts writes the header only).

    :param failed_contacts_at_least: the threshold N (the ladders' ``flag_after_failed_contacts``)
    :param store_conn_id: Airflow connection of the dunning store
    """

    template_fields: Sequence[str] = ("failed_contacts_at_least",)
    ui_color = "#f3f3f3"

    def __init__(
        self, *, failed_contacts_at_least: int = 3, store_conn_id: str = DEFAULT_STORE_CONN_ID, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.failed_contacts_at_least = failed_contacts_at_least
        self.store_conn_id = store_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        ti = context["ti"]
        result = write_followup(
            dunning_store(self.store_conn_id),
            folder=report_root() / ti.dag_id,
            run_id=context["run_id"],
            failed_contacts_at_least=int(self.failed_contacts_at_least),
        )
        self.log.info("staff follow-up: %d debtor(s) in %s", result["debtors"], result["path"])
        return result


def write_followup(
    store: Any, *, folder: Any, run_id: str, failed_contacts_at_least: int = 3
) -> dict[str, Any]:
    """Write ``<folder>/<stem>.followup.xlsx`` for the campaigns of the run's ledger rows; return path and count."""
    import tempfile
    from pathlib import Path

    import sqlalchemy as sa

    from include.dunning import reporting

    with store.engine.connect() as conn:
        campaigns = [
            c
            for (c,) in conn.execute(
                sa.text(
                    "SELECT DISTINCT campaign FROM contact_ledger WHERE planned_run_id = :run OR sent_run_id = :run"
                ),
                {"run": run_id},
            ).all()
        ]
    frame = reporting.staff_followup(
        store, failed_contacts_at_least=failed_contacts_at_least, campaigns=campaigns
    )
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{report_stem(run_id)}.followup.xlsx"
    partial = folder / f".{report_stem(run_id)}.followup.xlsx.partial"
    with tempfile.TemporaryDirectory() as tmp:
        local = reporting.export_followup_xlsx(frame, Path(tmp) / "followup.xlsx")
        partial.write_bytes(local.read_bytes())
    partial.rename(target)
    return {"path": _shown(target), "debtors": len(frame), "campaigns": campaigns}
