"""Write the run report: one self-contained HTML file per run, its figures as JSON and in the store."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

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


class RunReportOperator(BaseOperator):
    """Gather the run's figures, load the reporting tables, write the HTML, JSON and CSV reports.

    The report goes to ``<staging root>/reports/<dag_id>/<run_id>.html`` (self-contained: inline
    SVG charts, no scripts, readable offline) with a ``.json`` of the run figures and
    ``<run_id>.<table>.csv`` files of its tables beside it, and a row in the store's
    ``dunning_run`` table. ``report_contact``, ``report_summary`` and ``report_recovery`` are
    (re)loaded for the run first (``include.dunning.reporting.load_reporting``, without payment
    data). Runs even when an upstream task failed, so operators always see what happened.

    :param extract_task_id: task whose XCom has the extracted row count
    :param validate_task_id: task whose XCom has the quarantined row count
    :param plan_task_id: task whose ``counts`` XCom has the planned count
    :param store_conn_id: Airflow connection of the dunning store
    """

    template_fields: Sequence[str] = ()
    ui_color = "#f3f3f3"

    def __init__(
        self,
        *,
        extract_task_id: str,
        validate_task_id: str,
        plan_task_id: str,
        store_conn_id: str = DEFAULT_STORE_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.extract_task_id = extract_task_id
        self.validate_task_id = validate_task_id
        self.plan_task_id = plan_task_id
        self.store_conn_id = store_conn_id

    def execute(self, context: Any) -> str:
        import sqlalchemy as sa

        from include.dunning import ledger, reporting

        ti = context["ti"]
        run_id = context["run_id"]
        extract = ti.xcom_pull(task_ids=self.extract_task_id) or {}
        validate = ti.xcom_pull(task_ids=self.validate_task_id) or {}
        plan = ti.xcom_pull(task_ids=self.plan_task_id, key="counts") or {}
        store = dunning_store(self.store_conn_id)
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
        figures = {
            "run_id": run_id,
            "dag_id": ti.dag_id,
            "as_of": resolve_as_of(context),
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
        folder = staging_root() / "reports" / ti.dag_id
        folder.mkdir(parents=True, exist_ok=True)
        safe_run = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)
        html_path = folder / f"{safe_run}.html"
        json_path = folder / f"{safe_run}.json"
        loaded = reporting.load_reporting(store, run_id=run_id, dag_id=ti.dag_id)
        self.log.info("reporting tables loaded: %s", loaded)
        tables = reporting.report_tables(store, dag_id=ti.dag_id, run_id=run_id)
        csv_names = reporting.write_report_csv(
            tables, lambda name: (folder / name).open("w", encoding="utf-8", newline=""), safe_run
        )
        html = reporting.render_run_report(
            store,
            dag_id=ti.dag_id,
            run_id=run_id,
            as_of=figures["as_of"],
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
        figures["report_path"] = display_path(html_path)
        figures["finished_at"] = ledger.utcnow()
        with json_path.open("w", encoding="utf-8") as fh:
            json.dump(figures, fh, default=str, ensure_ascii=False, indent=2)
        store.save_run(figures)
        self.log.info("run report: %s", figures["report_path"])
        for label, key in FUNNEL:
            self.log.info("%-18s %d", label, figures[key])
        return figures["report_path"]
