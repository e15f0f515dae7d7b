"""Register the dunning monitor with Airflow: a FastAPI app in the api-server and a UI menu entry.

Loaded through the ``airflow.plugins`` entry point of this distribution (pyproject.toml), by
every Airflow process that loads plugins, DAG parsing and task runners included. So this module
imports nothing but Airflow's plugin base class: the FastAPI app (and Airflow's API security
modules, several seconds to import) is built only when the api-server reads ``fastapi_apps``.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk.plugins_manager import AirflowPlugin

URL_PREFIX = "/dunning-monitor"


class DunningMonitorPlugin(AirflowPlugin):
    """The dunning monitor: ``/dunning-monitor/`` (page) and ``/dunning-monitor/status`` (JSON)."""

    name = "dunning_monitor"
    # Shown in the UI under Browse; the UI frames ``href`` at /plugin/dunning-monitor. The href is
    # relative (no leading slash) so it resolves against the UI's base URL behind a proxy.
    external_views = [
        {
            "name": "Dunning monitor",
            "href": URL_PREFIX.lstrip("/") + "/",
            "url_route": "dunning-monitor",
            "destination": "nav",
            "category": "browse",
        }
    ]

    @property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]
        """Return the monitor app, built on first access (only the api-server asks)."""
        from include.monitor.app import get_app

        return [{"app": get_app(), "url_prefix": URL_PREFIX, "name": "Dunning monitor"}]
