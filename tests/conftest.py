"""Test-wide setup: an isolated Airflow home so tests never touch a user's ~/airflow."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# Set before anything imports airflow (conftest is loaded first).
_home = tempfile.mkdtemp(prefix="dunning-test-airflow-")
os.environ["AIRFLOW_HOME"] = _home
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO_ROOT / "dags")
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_home}/airflow.db"
os.environ.setdefault("DUNNING_STAGING_ROOT", "file://" + os.path.join(_home, "staging"))
