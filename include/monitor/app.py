"""The dunning monitor's web app, mounted into Airflow's api-server by :mod:`include.monitor.plugin`.

Routes (under the plugin's prefix, ``/dunning-monitor``):

- ``GET /``: a self-contained HTML page (no CDN) that polls ``status`` and renders tables
- ``GET /status``: the JSON document built by :func:`include.monitor.status.build_status`
- ``GET /reports/{dag_id}/{run_id}``: the run's HTML report (the report task's "Run report"
  button links here), and ``/reports/{dag_id}/{file}`` the CSV / JSON / .xlsx files beside it;
  read only from the report root (:mod:`include.monitor.reports`), authorised per DAG

Airflow does not authenticate a plugin's FastAPI app (a mounted app inherits none of the core
API's dependencies), so this app declares Airflow's own dependency on every route:
``requires_access_dag("GET", DagAccessEntity.RUN)`` resolves the user from the
``Authorization: Bearer`` JWT or the UI's session cookie (``GetUserDep``) and asks the configured
auth manager whether that user may read DAG runs. No token: 401; a bad token or no permission:
403. OpenAPI docs of the app are switched off so no route escapes the dependency.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import requires_access_dag
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import HTMLResponse, Response

from include.monitor import status as st

if TYPE_CHECKING:
    import sqlalchemy as sa

log = logging.getLogger(__name__)

STORE_CONN_ID = "dunning_store"

_engines: dict[str, sa.Engine] = {}
_engines_lock = threading.Lock()


def _store_engine(url: str) -> sa.Engine:
    """Return one pooled engine per store URL (kept for the life of the api-server worker)."""
    import sqlalchemy as sa

    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = sa.create_engine(url, pool_pre_ping=True)
            _engines[url] = engine
        return engine


def _describe(exc: BaseException) -> str:
    """Return a one-line reason for a failure (secrets are redacted later, in build_status)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _extras(conn: Any, conn_type: str) -> dict[str, Any]:
    """Return a connection's extras, ``extra__<type>__x`` keys also readable as ``x`` (as the hooks do)."""
    raw = dict(conn.extra_dejson or {})
    prefix = f"extra__{conn_type}__"
    for key in list(raw):
        if key.startswith(prefix):
            raw.setdefault(key.removeprefix(prefix), raw[key])
    return raw


def load_config() -> st.MonitorConfig:
    """Return the monitor's configuration from the environment and the ``dunning_monitor`` Variable."""
    from airflow.sdk import Variable

    variable: str | None = None
    try:
        variable = Variable.get(st.VARIABLE_NAME, default=None)
    except Exception as exc:  # a secrets backend that is down must not take the page with it
        log.warning("Variable %s could not be read: %s", st.VARIABLE_NAME, _describe(exc))
    return st.parse_config(variable, os.environ)


def _gateway_spec(conn_id: str, secrets: list[str]) -> st.GatewaySpec:
    from airflow.sdk import BaseHook

    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception as exc:
        return st.GatewaySpec(conn_id, error=f"connection not readable: {_describe(exc)}")
    secrets.append(conn.password or "")
    extras = _extras(conn, "smpp")
    return st.GatewaySpec(
        conn_id,
        host=conn.host or "127.0.0.1",
        port=int(conn.port or 2775),
        quota=st.parse_quota(extras.get("daily_quota", extras.get("quota"))),
    )


def _modem_status(conn_id: str, secrets: list[str]) -> dict[str, Any]:
    from airflow.sdk import BaseHook

    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception as exc:
        return {
            "conn_id": conn_id,
            "state": st.UNKNOWN,
            "detail": f"connection not readable: {_describe(exc)}",
        }
    extras = _extras(conn, "gsm_modem")
    secrets.extend([conn.password or "", str(extras.get("sim_pin") or "")])
    lock_dir = str(extras.get("lock_dir") or tempfile.gettempdir())
    return {"conn_id": conn_id, **st.probe_modem((conn.host or "").strip() or None, lock_dir)}


def scheduled_runs(dag_tag: str) -> list[dict[str, Any]]:
    """Return the next run of every DAG with ``dag_tag``, from Airflow's own database (one query)."""
    from airflow.models.dag import DagModel, DagTag
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(
                DagModel.dag_id,
                DagModel.is_paused,
                DagModel.timetable_summary,
                DagModel.next_dagrun,
                DagModel.next_dagrun_create_after,
            )
            .join(DagTag, DagTag.dag_id == DagModel.dag_id)
            .where(DagTag.name == dag_tag, DagModel.is_stale.is_(False))
            .order_by(DagModel.next_dagrun_create_after, DagModel.dag_id)
        ).all()
    return [
        {
            "dag_id": dag_id,
            "paused": bool(paused),
            "schedule": summary,
            "next_logical_date": st._plain(next_run),
            "next_run_after": st._plain(after),
        }
        for dag_id, paused, summary, next_run, after in rows
    ]


def collect_status() -> dict[str, Any]:
    """Gather everything the page shows; every source that fails is reported, not raised."""
    from operators.common import LOCAL_TZ

    now = datetime.now(UTC)
    local_day, day_start, day_end = st.local_day_window(now, LOCAL_TZ)
    config = load_config()
    secrets: list[str] = []

    figures: dict[str, Any] | None = None
    store_error: str | None = None
    try:
        from airflow.sdk import BaseHook

        from operators.common import sqlalchemy_url

        secrets.append(BaseHook.get_connection(STORE_CONN_ID).password or "")
        figures = st.ledger_figures(
            _store_engine(sqlalchemy_url(STORE_CONN_ID)),
            day_start=day_start,
            day_end=day_end,
            rate_since=now.replace(tzinfo=None) - st.RATE_WINDOW,
            usage_day=local_day,
        )
    except Exception as exc:
        store_error = f"dunning store not readable: {_describe(exc)}"
        log.warning("%s", store_error)

    specs = [_gateway_spec(conn_id, secrets) for conn_id in config.gateways]
    probes = st.probe_all({s.conn_id: st.tcp_target(s) for s in specs})
    gateways = [st.gateway_status(s, figures or {}, probes[s.conn_id]) for s in specs]
    modems = [_modem_status(conn_id, secrets) for conn_id in config.modems]

    scheduled: list[dict[str, Any]] | None = None
    scheduled_error: str | None = None
    try:
        scheduled = scheduled_runs(config.dag_tag)
    except Exception as exc:
        scheduled_error = f"Airflow's database not readable: {_describe(exc)}"
        log.warning("%s", scheduled_error)

    return st.build_status(
        now=now,
        local_day=local_day,
        config=config,
        figures=figures,
        store_error=store_error,
        gateways=gateways,
        modems=modems,
        scheduled=scheduled,
        scheduled_error=scheduled_error,
        secrets=secrets,
    )


# The report is self-contained (inline CSS and SVG, no scripts): the browser may load nothing else.
REPORT_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def report_response(dag_id: str, name: str) -> Response:
    """Return a run's report file from the report root, or 404 (never a file outside it)."""
    from include.monitor.reports import MEDIA_TYPES, ReportNotFound, find_report
    from operators.report import report_root

    try:
        path, media_type = find_report(report_root(), dag_id, name)
    except ReportNotFound as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    with path.open("rb") as fh:
        content = fh.read()
    headers = dict(REPORT_HEADERS)
    if not media_type.startswith("text/html"):
        disposition = "attachment" if media_type == MEDIA_TYPES[".xlsx"] else "inline"
        headers["Content-Disposition"] = f'{disposition}; filename="{path.name}"'
    return Response(content, media_type=media_type, headers=headers)


def page_html() -> str:
    """Return the monitor page (HTML, CSS and script in one document)."""
    from include.monitor.page import PAGE_HTML

    return PAGE_HTML


def create_app() -> FastAPI:
    """Return the monitor's FastAPI app; every route requires a user allowed to read DAG runs."""
    app = FastAPI(
        title="Dunning monitor",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.RUN))],
    )

    @app.get("/", response_class=HTMLResponse)
    def monitor_page() -> HTMLResponse:
        return HTMLResponse(page_html(), headers={"Cache-Control": "no-store"})

    @app.get("/status")
    def monitor_status() -> dict[str, Any]:
        # A sync route: FastAPI runs it in its thread pool, so the 1 s probes never block the loop.
        return collect_status()

    @app.get("/reports/{dag_id}/{name}")
    def run_report(dag_id: str, name: str) -> Response:
        # The app-wide dependency reads ``dag_id`` from the path: access is checked for this DAG.
        return report_response(dag_id, name)

    return app


_app: FastAPI | None = None
_app_lock = threading.Lock()


def get_app() -> FastAPI:
    """Return the app, created on first use (only the api-server ever asks for it)."""
    global _app
    with _app_lock:
        if _app is None:
            _app = create_app()
        return _app
