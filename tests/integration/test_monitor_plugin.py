"""The dunning monitor through a real ``airflow api-server``: behind Airflow's auth, live figures.

One api-server (core app only, one worker) on a free port with its own Airflow home and SQLite
metadata database, the simple auth manager with a known user (all-admins mode off: in that mode
a middleware signs every request in as admin, so nothing would prove the auth), a SQLite dunning
store seeded through DunningStore, the SMSC simulator as the live gateway and a closed port as
the dead one.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

from include.dunning import ledger
from include.dunning.ledger import DunningStore, Receipt, SubmitOutcome
from include.simulators.smsc import SmscSimulator

pytestmark = pytest.mark.integration

VENV_BIN = Path(sys.executable).parent
SMSC_LOGIN, SMSC_PASSWORD = "esme-login-77", "smsc-Secret-4711"
BACKUP_PASSWORD = "backup-Secret-0815"
USER, USER_PASSWORD = "monitor", "monitor-Pass-2931"
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def seed_store(path: Path) -> None:
    """Five contacts today: 1 planned, 1 claimed, 1 submitted (2 parts, one receipt), 1 delivered, 1 failed."""
    store = DunningStore(f"sqlite:///{path}")
    store.create_schema()
    as_of = date.today()
    rows = []
    for n in range(5):
        debtor = f"91110000MA00000{n:03d}"
        rows.append(
            {
                "idempotency_key": ledger.idempotency_key("tax_payment", "p", debtor, "overdue", "sms", 1),
                "campaign": "tax_payment",
                "period": "p",
                "as_of": as_of,
                "debtor_id": debtor,
                "stage": "overdue",
                "channel": "sms",
                "attempt": 1,
                "phone": f"1380013{n:04d}",
                "template": "t.j2",
                "message_text": "【示范市税务】您的税款已逾期。",
                "parts": 2 if n == 0 else 1,
                "gateway": "smpp_default",
                "state": ledger.PLANNED,
                "planned_run_id": "run-1",
                "planned_at": ledger.utcnow(),
            }
        )
    store.upsert_planned(rows)
    (batch,) = store.assign_batches("tax_payment", as_of, "run-1")
    k = [r.idempotency_key for r in store.batch_rows(batch)]
    store.claim(k[:4], "run-1")
    store.record_submits(
        "smpp_default",
        [
            SubmitOutcome(k[0], ["m1", "m2"]),
            SubmitOutcome(k[1], ["m3"]),
            SubmitOutcome(k[2], [], error_code="0x0000000B", error="invalid destination", permanent=True),
        ],
    )  # k[3] stays CLAIMED, k[4] PLANNED
    store.apply_receipts("smpp_default", [Receipt("m1", "DELIVRD"), Receipt("m3", "DELIVRD")])
    store.save_run({"run_id": "run-1", "dag_id": "tax_dunning", "as_of": as_of, "planned": 5, "submitted": 2})
    store.engine.dispose()


REPORT_DAG, REPORT_RUN = "tax_dunning", "manual__2026-11-23T09:00:00.123456+00:00"
REPORT_MARK = "report of the seeded run 运行报告"
OUTSIDE_MARK = "outside the report root: never served"


def seed_reports(tmp: Path) -> Path:
    """A report root with one run's HTML + CSV, and files outside it the server must never serve."""
    from operators.report import report_stem

    root = tmp / "reports"
    folder = root / REPORT_DAG
    folder.mkdir(parents=True)
    stem = report_stem(REPORT_RUN)
    (folder / f"{stem}.html").write_text(
        f"<!DOCTYPE html><title>r</title><p>{REPORT_MARK}</p>", encoding="utf-8"
    )
    (folder / f"{stem}.summary.csv").write_text("stage,planned\noverdue,5\n", encoding="utf-8")
    (tmp / "outside.html").write_text(OUTSIDE_MARK, encoding="utf-8")
    (root / "outside.html").write_text(OUTSIDE_MARK, encoding="utf-8")  # a file, not a DAG folder
    (folder / "escape.html").symlink_to(tmp / "outside.html")  # a link out of the root
    return root


@dataclass
class Server:
    url: str
    log: Path


def _tail(log: Path, lines: int = 40) -> str:
    if not log.exists():
        return "(no log)"
    return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def _stop(process: subprocess.Popen) -> None:
    """SIGINT (what stops Airflow's servers cleanly), then kill the group if it hangs."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("monitor")
    home = tmp / "airflow"
    home.mkdir()
    store_path = tmp / "dunning.sqlite"
    seed_store(store_path)
    passwords = tmp / "passwords.json"
    passwords.write_text(json.dumps({USER: USER_PASSWORD}), encoding="utf-8")

    smsc = SmscSimulator(port=0)
    smsc.start()
    port = free_port()
    env = {
        **os.environ,
        "PATH": str(VENV_BIN) + os.pathsep + os.environ.get("PATH", ""),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(tmp / "dags"),
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
        "AIRFLOW_CONN_DUNNING_STORE": json.dumps({"conn_type": "sqlite", "host": str(store_path)}),
        "AIRFLOW_CONN_SMPP_DEFAULT": json.dumps(
            {
                "conn_type": "smpp",
                "host": "127.0.0.1",
                "port": smsc.port,
                "login": SMSC_LOGIN,
                "password": SMSC_PASSWORD,
                "extra": {"quota": "1000"},
            }
        ),
        "AIRFLOW_CONN_SMPP_BACKUP": json.dumps(
            {"conn_type": "smpp", "host": "127.0.0.1", "port": free_port(), "password": BACKUP_PASSWORD}
        ),
        "DUNNING_MONITOR_GATEWAYS": "smpp_default,smpp_backup",
        "DUNNING_REPORT_ROOT": str(seed_reports(tmp)),
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
    }
    log = tmp / "api-server.log"
    airflow = str(VENV_BIN / "airflow")
    migrate = subprocess.run(
        [airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if migrate.returncode != 0:
        smsc.stop()
        pytest.fail(f"airflow db migrate failed:\n{migrate.stdout[-2000:]}\n{migrate.stderr[-2000:]}")
    with log.open("w", encoding="utf-8") as out:
        process = subprocess.Popen(
            [
                airflow,
                "api-server",
                "--apps",
                "core",
                "--workers",
                "1",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"api-server exited with {process.returncode}; log tail:\n{_tail(log)}")
            try:
                with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"api-server not healthy within {START_TIMEOUT:g} s; log tail:\n{_tail(log)}")
            time.sleep(0.5)
        yield Server(url, log)
    finally:
        _stop(process)
        smsc.stop()


def request(url: str, *, token: str | None = None, data: dict | None = None) -> tuple[int, str, str]:
    """Return (status, content type, body); HTTP errors are answers too."""
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = json.dumps(data).encode() if data is not None else None
    req = urllib.request.Request(
        url, data=body, headers=headers, method="POST" if data is not None else "GET"
    )
    try:
        with urllib.request.urlopen(req, timeout=15) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


@pytest.fixture(scope="module")
def token(server: Server) -> str:
    code, _, body = request(f"{server.url}/auth/token", data={"username": USER, "password": USER_PASSWORD})
    assert code == 201, f"login failed ({code}): {body}\n{_tail(server.log)}"
    return json.loads(body)["access_token"]


@pytest.mark.parametrize("path", ["/dunning-monitor/", "/dunning-monitor/status"])
def test_monitor_refuses_requests_without_a_valid_token(server: Server, path: str):
    assert request(server.url + path)[0] == 401
    assert request(server.url + path, token="not-a-jwt")[0] in (401, 403)


def test_status_shows_the_ledger_the_live_gateway_and_the_dead_one(server: Server, token: str):
    code, content_type, body = request(f"{server.url}/dunning-monitor/status", token=token)
    assert code == 200, f"{code}: {body}\n{_tail(server.log)}"
    assert content_type.startswith("application/json")
    status = json.loads(body)
    assert status["store_error"] is None, status["store_error"]
    assert {k: status["ledger"][k] for k in ("planned", "claimed", "queued")} == {
        "planned": 1,
        "claimed": 1,
        "queued": 2,
    }
    assert status["ledger"]["submitted_today"] == 2
    assert (status["ledger"]["delivered_today"], status["ledger"]["failed_today"]) == (1, 1)
    assert status["ledger"]["receipts_outstanding"] == 1  # part m2

    gateways = {g["conn_id"]: g for g in status["gateways"]}
    assert gateways["smpp_default"]["state"] == "up"
    assert gateways["smpp_default"]["submitted_today"] == 3  # parts: 2 + 1
    assert gateways["smpp_default"]["remaining"] == 997
    assert gateways["smpp_default"]["parts_recent"] == 3
    assert gateways["smpp_backup"]["state"] == "down"
    assert gateways["smpp_backup"]["quota"] is None
    assert [r["run_id"] for r in status["recent_runs"]] == ["run-1"]
    assert status["scheduled"] == []  # no DAG parsed into this metadata database
    for secret in (SMSC_PASSWORD, BACKUP_PASSWORD, USER_PASSWORD, SMSC_LOGIN):
        assert secret not in body


def test_page_is_served_and_loads_the_status(server: Server, token: str):
    code, content_type, body = request(f"{server.url}/dunning-monitor/", token=token)
    assert code == 200
    assert content_type.startswith("text/html")
    assert "Dunning monitor" in body
    assert '"status"' in body  # fetched relative to the page
    assert '"reports/"' in body  # recent runs link to their reports, relative to the page
    assert "http://" not in body and "https://" not in body  # nothing from a CDN


def test_plugin_is_listed_with_its_menu_entry(server: Server, token: str):
    code, _, body = request(f"{server.url}/api/v2/plugins", token=token)
    assert code == 200, body
    (plugin,) = [p for p in json.loads(body)["plugins"] if p["name"] == "dunning_monitor"]
    assert plugin["fastapi_apps"][0]["url_prefix"] == "/dunning-monitor"
    assert plugin["external_views"][0]["url_route"] == "dunning-monitor"


def test_run_report_is_served_behind_auth_at_the_extra_links_url(server: Server, token: str):
    from include.monitor.links import report_url

    url = server.url + report_url(REPORT_DAG, REPORT_RUN)  # what the "Run report" button opens
    assert request(url)[0] == 401
    assert request(url, token="not-a-jwt")[0] in (401, 403)
    code, content_type, body = request(url, token=token)
    assert code == 200, f"{code}: {body}\n{_tail(server.log)}"
    assert content_type.startswith("text/html") and REPORT_MARK in body
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=15) as response:
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    # The CSV the page links to, relative to the page's own URL.
    from operators.report import report_stem

    code, content_type, body = request(
        f"{server.url}/dunning-monitor/reports/{REPORT_DAG}/{report_stem(REPORT_RUN)}.summary.csv",
        token=token,
    )
    assert (code, content_type.split(";")[0], body.splitlines()[0]) == (200, "text/csv", "stage,planned")


@pytest.mark.parametrize(
    "path",
    [
        "/dunning-monitor/reports/tax_dunning/..%2F..%2Foutside.html",
        "/dunning-monitor/reports/tax_dunning/%2E%2E%2Foutside.html",
        "/dunning-monitor/reports/..%2F..%2Foutside.html/x",
        "/dunning-monitor/reports/%2E%2E/outside.html",
        "/dunning-monitor/reports/outside.html/x",
        "/dunning-monitor/reports/tax_dunning/escape.html",
        "/dunning-monitor/reports/tax_dunning/..",
        "/dunning-monitor/reports/tax_dunning/no-such-run",
        "/dunning-monitor/reports/tax_dunning/%2Fetc%2Fpasswd",
    ],
)
def test_report_route_serves_nothing_outside_the_report_root(server: Server, token: str, path: str):
    code, _, body = request(server.url + path, token=token)
    assert code == 404, f"{path}: {code} {body[:200]}"
    assert OUTSIDE_MARK not in body and "root:" not in body
