"""House rules every DAG must follow: imports cleanly, tags, retries, pools, no heavy imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
DAG_FILES = sorted(p for p in DAGS_DIR.glob("*.py") if not p.name.startswith("_"))
HEAVY = ("pandas", "great_expectations", "smpplib", "serial", "pyarrow", "numpy")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


def test_every_dag_file_imports_without_errors(dagbag):
    assert DAG_FILES, "no DAG files found"
    assert dagbag.import_errors == {}
    assert "tax_dunning" in dagbag.dags


def test_every_dag_has_tags_and_a_description(dagbag):
    for dag in dagbag.dags.values():
        assert dag.tags, f"{dag.dag_id} has no tags"
        assert dag.description, f"{dag.dag_id} has no description"


def test_every_task_retries_at_least_twice(dagbag):
    for dag in dagbag.dags.values():
        for task in dag.tasks:
            if task.task_type == "RunWatcherOperator":
                assert task.retries == 0 and task.trigger_rule == "one_failed"
                continue
            assert task.retries >= 2, f"{dag.dag_id}.{task.task_id} retries={task.retries}"


def test_every_dag_fails_when_a_task_fails(dagbag):
    """The report runs all_done; a watcher downstream of every task makes the run fail."""
    for dag in dagbag.dags.values():
        watchers = [t for t in dag.tasks if t.task_type == "RunWatcherOperator"]
        assert len(watchers) == 1, f"{dag.dag_id} has no watcher"
        others = {t.task_id for t in dag.tasks} - {watchers[0].task_id}
        assert watchers[0].upstream_task_ids == others


def test_every_send_task_runs_in_a_pool(dagbag):
    send_tasks = [
        (dag.dag_id, task)
        for dag in dagbag.dags.values()
        for task in dag.tasks
        if task.task_type in ("SmppSendOperator", "ModemVoiceOperator", "ModemSmsOperator")
    ]
    assert send_tasks, "no send task found"
    for dag_id, task in send_tasks:
        assert task.pool and task.pool != "default_pool", f"{dag_id}.{task.task_id} has no gateway pool"


def test_send_tasks_are_mapped_over_batches(dagbag):
    task = dagbag.dags["tax_dunning"].get_task("send_sms")
    assert task.is_mapped


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_imports_no_heavy_module_at_top_level(dag_file):
    """Parsing a DAG file must not pull pandas, GX, smpplib, ... (the scheduler parses continually)."""
    probe = (
        "import json, runpy, sys\n"
        "import airflow.sdk\n"
        "before = set(sys.modules)\n"
        f"runpy.run_path({str(dag_file)!r})\n"
        f"print(json.dumps(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in {HEAVY!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == [], f"{dag_file.name} imports {loaded} at parse time"
