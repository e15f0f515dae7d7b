"""A live monitor of the dunning platform inside the Airflow UI (an Airflow 3 plugin).

- :mod:`include.monitor.plugin`: the ``AirflowPlugin``, registered through the ``airflow.plugins``
  entry point; cheap to import (DAG parsing and workers load plugins too)
- :mod:`include.monitor.app`: the FastAPI app the api-server mounts under ``/dunning-monitor``
- :mod:`include.monitor.status`: the figures, probes and the status document (no FastAPI)

See docs/monitor.md.
"""
