"""What every operator of the project shares: connections to stores, staging paths, the as-of date."""

from __future__ import annotations

import os
import re
from datetime import date, datetime, time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from airflow.sdk import BaseHook, ObjectStoragePath

if TYPE_CHECKING:
    import sqlalchemy as sa

    from include.dunning.ledger import DunningStore

LOCAL_TZ = ZoneInfo("Asia/Shanghai")
DEFAULT_STORE_CONN_ID = "dunning_store"


def sqlalchemy_url(conn_id: str) -> str:
    """Return a SQLAlchemy URL for an Airflow connection to a SQL database.

    Supports the connection types ``sqlite`` (host = file path), ``postgres`` and ``mysql``
    (MariaDB, through the pure-Python PyMySQL driver, so no compiler is needed).

    :param conn_id: the Airflow connection id
    """
    conn = BaseHook.get_connection(conn_id)
    kind = (conn.conn_type or "").lower()
    if kind == "sqlite":
        path = conn.host or conn.schema or ""
        return f"sqlite:///{path}"
    drivers = {"postgres": "postgresql+psycopg", "postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql"}
    if kind not in drivers:
        raise ValueError(
            f"connection {conn_id!r} has type {kind!r}; use sqlite, postgres or mysql for a SQL database"
        )
    auth = ""
    if conn.login:
        auth = quote(conn.login, safe="")
        if conn.password:
            auth += ":" + quote(conn.password, safe="")
        auth += "@"
    port = f":{conn.port}" if conn.port else ""
    return f"{drivers[kind]}://{auth}{conn.host or 'localhost'}{port}/{conn.schema or ''}"


def sql_engine(conn_id: str) -> sa.Engine:
    """Return a SQLAlchemy engine for an Airflow connection (see ``sqlalchemy_url``)."""
    import sqlalchemy as sa

    return sa.create_engine(sqlalchemy_url(conn_id), pool_pre_ping=True)


def dunning_store(conn_id: str = DEFAULT_STORE_CONN_ID) -> DunningStore:
    """Return the dunning store behind an Airflow connection, with its tables created."""
    from include.dunning.ledger import DunningStore

    store = DunningStore(sql_engine(conn_id))
    store.create_schema()
    return store


def staging_root() -> ObjectStoragePath:
    """Return the staging root: ``DUNNING_STAGING_ROOT`` (any fsspec URL), else ``$AIRFLOW_HOME/staging``.

    Workers on several machines need shared storage here (s3://, gs://, a shared mount).
    """
    root = os.environ.get("DUNNING_STAGING_ROOT")
    if not root:
        home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
        root = "file://" + os.path.join(os.path.abspath(home), "staging")
    return ObjectStoragePath(root)


def run_partition(context: Any) -> ObjectStoragePath:
    """Return the staging folder of this DAG run: ``<root>/<dag_id>/<run_id>/``.

    Every try of every task of one run reads and writes the same partition.
    """
    ti = context["ti"]
    safe_run = re.sub(r"[^A-Za-z0-9_.-]+", "_", context["run_id"])
    return staging_root() / ti.dag_id / safe_run


def resolve_as_of(context: Any) -> date:
    """Return the run's as-of date: the ``as_of`` param, else the logical date, else today (Shanghai).

    Business logic never reads the clock itself; it is given this date.
    """
    params = context.get("params") or {}
    if params.get("as_of"):
        return date.fromisoformat(str(params["as_of"]))
    logical = context.get("logical_date")
    day = logical.astimezone(LOCAL_TZ) if logical is not None else datetime.now(LOCAL_TZ)
    # A plain date: pendulum's Date subclass is not something every DB driver can bind.
    return date(day.year, day.month, day.day)


def display_path(path: ObjectStoragePath) -> str:
    """Return a path as a person would open it: a plain path for local files, else the URL."""
    if path.protocol in ("file", "local"):
        return "/" + path.path.lstrip("/")
    return str(path)


def in_window(at: datetime, window: tuple[str, str]) -> bool:
    """Return True when the local time of ``at`` is inside ``window`` ("HH:MM", "HH:MM"), end excluded."""
    start, end = (time.fromisoformat(t) for t in window)
    return start <= at.time().replace(tzinfo=None) < end
