"""The "Run report" button of the report task: an operator extra link to the monitor's report route.

Airflow 3 computes a link on the worker when the task finishes (``get_link`` with the task
instance) and keeps it in XCom; the UI shows it as a button on the task instance. The link points
at the monitor plugin (:mod:`include.monitor.app`), which serves the run's report behind Airflow's
auth. Only this module's Airflow import (the SDK's link base class) is loaded with the operator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

from include.monitor.plugin import URL_PREFIX

if TYPE_CHECKING:
    from airflow.sdk.types import TaskInstanceKey


def report_url(dag_id: str, run_id: str, *, base_url: str | None = None) -> str:
    """Return the URL of a run's report in the monitor: ``<base>/dunning-monitor/reports/<dag>/<run>``.

    :param base_url: the api-server's public URL (``[api] base_url``); without it the link is
        root-relative, which the UI resolves against its own host
    """
    base = (base_url or "").rstrip("/")
    return f"{base}{URL_PREFIX}/reports/{quote(dag_id, safe='')}/{quote(run_id, safe='')}"


def _base_url() -> str:
    from airflow.configuration import conf

    return conf.get("api", "base_url", fallback="") or ""


class RunReportLink(BaseOperatorLink):
    """The "Run report" button: opens the run's HTML report served by the monitor plugin."""

    name = "Run report"

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        """Return the report URL of the task instance's run."""
        return report_url(ti_key.dag_id, ti_key.run_id, base_url=_base_url())
