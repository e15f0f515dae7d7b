"""Fail the DAG run when any task failed, even though the report (all_done) succeeded."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException


class RunWatcherOperator(BaseOperator):
    """Fail the run when any upstream task failed.

    A DAG run's state follows its leaf tasks; the report task runs ``all_done`` so it succeeds
    even after a failure upstream. This task, downstream of every task with trigger rule
    ``one_failed``, runs only then and fails, so the run is marked failed. It never retries.
    """

    ui_color = "#ffcdd2"

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trigger_rule", "one_failed")
        kwargs["retries"] = 0
        super().__init__(**kwargs)

    def execute(self, context: Any) -> None:
        raise AirflowFailException(
            "a task of this run failed; see the tasks marked failed and the run report"
        )
