"""The dunning monitor's figures and probes, without FastAPI or a running Airflow."""

from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from include.dunning import ledger
from include.dunning.ledger import DunningStore, Receipt, SubmitOutcome
from include.monitor import status as st

SHANGHAI = ZoneInfo("Asia/Shanghai")
AS_OF = date(2026, 11, 23)
# 10:00 in Shanghai on AS_OF; the local day is [2026-11-22 16:00, 2026-11-23 16:00) UTC.
TODAY_2AM_UTC = datetime(2026, 11, 23, 2, 0)
DAY_START, DAY_END = datetime(2026, 11, 22, 16, 0), datetime(2026, 11, 23, 16, 0)


def planned_row(n: int, *, parts: int = 1) -> dict:
    debtor = f"91110000MA00000{n:03d}"
    return {
        "idempotency_key": ledger.idempotency_key("tax_payment", "2026-W48", debtor, "overdue", "sms", 1),
        "campaign": "tax_payment",
        "period": "2026-W48",
        "as_of": AS_OF,
        "debtor_id": debtor,
        "debtor_name": f"纳税人{n}",
        "stage": "overdue",
        "channel": "sms",
        "attempt": 1,
        "phone": f"1380013{n:04d}",
        "template": "sms/tax/payment_overdue.j2",
        "message_text": "【示范市税务】您的税款已逾期。",
        "parts": parts,
        "amount": None,
        "surcharge": None,
        "gateway": "smpp_default",
        "state": ledger.PLANNED,
        "reason": None,
        "planned_run_id": "run-1",
        "planned_at": datetime(2026, 11, 23, 1, 0),
    }


def seed(store: DunningStore) -> list[str]:
    """Ten contacts: 4 planned, 1 claimed, 2 submitted, 2 delivered, 1 failed; 6 parts sent, 2 outstanding."""
    store.upsert_planned(planned_row(n, parts=2 if n < 2 else 1) for n in range(10))
    (batch,) = store.assign_batches("tax_payment", AS_OF, "run-1")
    k = [r.idempotency_key for r in store.batch_rows(batch)]
    store.claim(k[:6], "run-1")
    store.record_submits(
        "smpp_default",
        [
            SubmitOutcome(k[0], ["a", "b"]),
            SubmitOutcome(k[1], ["c", "d"]),
            SubmitOutcome(k[2], ["e"]),
            SubmitOutcome(k[3], ["f"]),
            SubmitOutcome(k[4], [], error_code="0x0000000B", error="invalid destination", permanent=True),
        ],
    )  # k[5] stays CLAIMED: its worker died before the answer
    store.apply_receipts("smpp_default", [Receipt(m, "DELIVRD") for m in ("a", "b", "c", "e")])
    store.save_run(
        {"run_id": "run-1", "dag_id": "tax_dunning", "as_of": AS_OF, "planned": 10, "submitted": 4}
    )
    return k


@pytest.fixture
def store(tmp_path):
    s = DunningStore(f"sqlite:///{tmp_path / 'store.sqlite'}")
    s.create_schema()
    return s


def figures_at(store: DunningStore, submitted_at: datetime) -> dict:
    with store.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE contact_ledger SET submitted_at = :t WHERE submitted_at IS NOT NULL"),
            {"t": submitted_at},
        )
        conn.execute(
            sa.text("UPDATE contact_ledger SET final_at = :t WHERE final_at IS NOT NULL"), {"t": submitted_at}
        )
    return st.ledger_figures(
        store.engine,
        day_start=DAY_START,
        day_end=DAY_END,
        rate_since=TODAY_2AM_UTC - st.RATE_WINDOW + timedelta(minutes=1),
    )


# -- configuration ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "env", "gateways", "modems", "problems"),
    [
        pytest.param(None, {}, ("smpp_default",), (), 0, id="defaults"),
        pytest.param(
            json.dumps({"gateways": ["smpp_a", "smpp_b"], "modems": ["modem_1"]}),
            {},
            ("smpp_a", "smpp_b"),
            ("modem_1",),
            0,
            id="variable",
        ),
        pytest.param(
            json.dumps({"gateways": ["smpp_a"], "modems": ["modem_1"]}),
            {"DUNNING_MONITOR_GATEWAYS": " smpp_x, smpp_y ,,smpp_x"},
            ("smpp_x", "smpp_y"),
            ("modem_1",),
            0,
            id="environment-wins-per-list",
        ),
        pytest.param(
            "{not json", {"DUNNING_MONITOR_MODEMS": "m1"}, ("smpp_default",), ("m1",), 1, id="bad-json"
        ),
        pytest.param(json.dumps(["smpp_a"]), {}, ("smpp_default",), (), 1, id="not-an-object"),
        pytest.param(json.dumps({"gateways": 3}), {}, ("smpp_default",), (), 1, id="not-a-list"),
    ],
)
def test_config_comes_from_environment_then_variable_then_defaults(variable, env, gateways, modems, problems):
    config = st.parse_config(variable, env)
    assert (config.gateways, config.modems, len(config.problems)) == (gateways, modems, problems)


def test_local_day_is_the_shanghai_day_in_utc():
    just_after_midnight = datetime(2026, 11, 22, 16, 30, tzinfo=UTC)  # 00:30 on the 23rd in Shanghai
    assert st.local_day_window(just_after_midnight, SHANGHAI) == (AS_OF, DAY_START, DAY_END)


# -- the store --------------------------------------------------------------------------------------


def test_figures_count_the_queue_todays_outcomes_and_outstanding_receipts(store):
    seed(store)
    figures = figures_at(store, TODAY_2AM_UTC)
    assert (figures["planned"], figures["claimed"], figures["queued"]) == (4, 1, 5)
    assert figures["submitted_today"] == 4  # contacts: 2 delivered + 2 still submitted
    assert (figures["delivered_today"], figures["failed_today"]) == (2, 1)
    assert figures["receipts_outstanding"] == 2  # parts "d" and "f"
    assert figures["by_gateway"]["smpp_default"] == {
        "rows_today": 4,
        "submitted_today": 6,  # parts: 2 + 2 + 1 + 1
        "rows_recent": 4,
        "parts_recent": 6,
    }
    assert [(r["dag_id"], r["run_id"], r["as_of"]) for r in figures["recent_runs"]] == [
        ("tax_dunning", "run-1", "2026-11-23")
    ]


def test_figures_of_yesterday_do_not_count_today(store):
    seed(store)
    figures = figures_at(store, DAY_START - timedelta(minutes=1))
    assert (figures["submitted_today"], figures["delivered_today"], figures["failed_today"]) == (0, 0, 0)
    assert figures["by_gateway"] == {}
    assert figures["queued"] == 5  # the queue is not a per-day figure
    assert figures["receipts_outstanding"] == 2


# -- gateways ---------------------------------------------------------------------------------------


def test_gateway_row_has_rate_today_and_remaining_quota():
    figures = {
        "by_gateway": {"smpp_default": {"rows_recent": 4, "parts_recent": 6, "submitted_today": 6}},
        "receipts_outstanding_by_gateway": {"smpp_default": 2},
    }
    spec = st.GatewaySpec("smpp_default", host="10.0.0.5", port=2775, quota=10)
    row = st.gateway_status(spec, figures, (st.UP, "TCP connect ok"))
    assert row["state"] == "up"
    assert row["address"] == "10.0.0.5:2775"
    assert row["rate_per_minute"] == 1.2  # 6 parts in 5 minutes
    assert (row["submitted_today"], row["quota"], row["remaining"]) == (6, 10, 4)
    assert row["receipts_outstanding"] == 2


def test_gateway_over_quota_has_none_left_and_no_quota_means_unknown_remaining():
    figures = {"by_gateway": {"gw": {"submitted_today": 12}}}
    assert st.gateway_status(st.GatewaySpec("gw", "h", 1, quota=10), figures, None)["remaining"] == 0
    assert st.gateway_status(st.GatewaySpec("gw", "h", 1), figures, None)["remaining"] is None


def test_unreadable_gateway_connection_is_unknown_not_probed():
    spec = st.GatewaySpec("smpp_missing", error="connection not readable: not defined")
    assert st.tcp_target(spec) is None
    row = st.gateway_status(spec, {}, st.probe_all({"smpp_missing": None})["smpp_missing"])
    assert (row["state"], row["address"]) == ("unknown", None)
    assert "not defined" in row["detail"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("50000", 50000),
        (1200, 1200),
        ("1200.0", 1200),
        ("", None),
        (None, None),
        ("lots", None),
        ("-5", None),
    ],
)
def test_quota_extra_is_read_string_safe(value, expected):
    assert st.parse_quota(value) == expected


def test_probe_tells_a_listening_port_from_a_closed_one():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        open_port = listener.getsockname()[1]
        with socket.socket() as spare:
            spare.bind(("127.0.0.1", 0))
            closed_port = spare.getsockname()[1]  # bound, never listening: connections are refused
            results = st.probe_all({"live": ("127.0.0.1", open_port), "dead": ("127.0.0.1", closed_port)})
    assert results["live"] == ("up", "TCP connect ok")
    assert results["dead"][0] == "down"


# -- modems -----------------------------------------------------------------------------------------


def test_modem_states_from_device_node_and_lock(tmp_path, monkeypatch):
    """The probe reads the same lock file the hook takes, and never takes it from a task."""
    from hooks.gsm_modem import GsmModemHook

    device = tmp_path / "ttyUSB0"
    device.write_text("")
    lock_dir = tmp_path / "locks"
    lock_dir.mkdir()
    monkeypatch.setenv(
        "AIRFLOW_CONN_MODEM_1",
        json.dumps(
            {
                "conn_type": "gsm_modem",
                "host": str(device),
                "extra": {"lock_dir": str(lock_dir), "lock_timeout": 0},
            }
        ),
    )
    assert st.probe_modem(str(device), str(lock_dir))["state"] == "reachable"  # no lock file yet
    assert not list(lock_dir.iterdir()), "the probe must not create the lock file"

    hook = GsmModemHook("modem_1")
    hook._acquire_lock()  # what a running task holds while it sends or calls
    try:
        found = st.probe_modem(str(device), str(lock_dir))
        assert found["state"] == "locked"
        assert str(os.getpid()) in found["detail"]
        # The task still owns the modem after the probe: nobody else can take the lock.
        with open(st.modem_lock_path(str(device), str(lock_dir))) as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        hook._release_lock()
    assert st.probe_modem(str(device), str(lock_dir))["state"] == "reachable"

    device.unlink()
    assert st.probe_modem(str(device), str(lock_dir))["state"] == "down"
    assert st.probe_modem(None, str(lock_dir))["state"] == "unknown"
    assert st.probe_modem("rfc2217://", str(lock_dir))["state"] == "unknown"


def test_modem_behind_a_socket_url_is_probed_over_tcp(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert st.probe_modem(f"socket://127.0.0.1:{port}", str(tmp_path))["state"] == "reachable"


# -- the document -----------------------------------------------------------------------------------


def test_status_document_reports_failures_and_never_shows_a_secret():
    document = st.build_status(
        now=datetime(2026, 11, 23, 2, 0, tzinfo=UTC),
        local_day=AS_OF,
        config=st.MonitorConfig(),
        figures=None,
        store_error="dunning store not readable: OperationalError: password s3cret-pw rejected",
        gateways=[
            st.gateway_status(st.GatewaySpec("smpp_default", "h", 1), {}, (st.DOWN, "Connection refused"))
        ],
        modems=[],
        scheduled=None,
        scheduled_error="no database",
        secrets=["s3cret-pw", ""],
    )
    text = json.dumps(document)
    assert "s3cret-pw" not in text
    assert document["ledger"] is None
    assert "***" in document["store_error"]
    assert document["gateways"][0]["state"] == "down"
    assert document["recent_runs"] == []


# -- run reports: the extra link and the files the monitor may serve ----------------------------


def test_run_report_link_points_at_the_monitor_route():
    from types import SimpleNamespace

    from include.monitor.links import RunReportLink, report_url
    from operators.report import RunReportOperator

    run_id = "manual__2026-11-23T09:00:00.123456+00:00"
    assert report_url("tax_dunning", run_id) == (
        "/dunning-monitor/reports/tax_dunning/manual__2026-11-23T09%3A00%3A00.123456%2B00%3A00"
    )
    assert report_url("tax_dunning", "r/1", base_url="https://airflow.example.net/").startswith(
        "https://airflow.example.net/dunning-monitor/reports/tax_dunning/r%2F1"
    )
    (link,) = [k for k in RunReportOperator.operator_extra_links if isinstance(k, RunReportLink)]
    assert link.name == "Run report" and link.xcom_key == "_link_RunReportLink"
    key = SimpleNamespace(dag_id="power_dunning", run_id="scheduled__2026-11-23T02:00:00+00:00")
    assert link.get_link(None, ti_key=key).endswith(
        "/dunning-monitor/reports/power_dunning/scheduled__2026-11-23T02%3A00%3A00%2B00%3A00"
    )


def test_find_report_serves_the_run_and_its_files_and_nothing_else(tmp_path):
    from include.monitor.reports import ReportNotFound, find_report, report_stem

    root = tmp_path / "reports"
    folder = root / "tax_dunning"
    folder.mkdir(parents=True)
    run_id = "manual__2026-11-23T09:00:00+00:00"
    stem = report_stem(run_id)
    assert stem == "manual__2026-11-23T09_00_00_00_00"
    for name in (f"{stem}.html", f"{stem}.summary.csv", f"{stem}.followup.xlsx", f"{stem}.txt"):
        (folder / name).write_text("x", encoding="utf-8")
    (tmp_path / "secret.html").write_text("secret", encoding="utf-8")
    (folder / "link.html").symlink_to(tmp_path / "secret.html")

    path, media = find_report(root, "tax_dunning", run_id)
    assert path == folder / f"{stem}.html" and media.startswith("text/html")
    assert find_report(root, "tax_dunning", f"{stem}.summary.csv")[1].startswith("text/csv")
    assert "spreadsheetml" in find_report(root, "tax_dunning", f"{stem}.followup.xlsx")[1]
    for dag_id, name in [
        ("tax_dunning", "../../secret.html"),
        ("tax_dunning", "..%2Fsecret.html"),
        ("tax_dunning", "link.html"),  # a symlink out of the root
        ("tax_dunning", f"{stem}.txt"),  # not a served suffix (and no run of that id)
        ("..", "secret.html"),
        ("tax_dunning/..", "secret.html"),
        (".", "tax_dunning"),
        ("tax_dunning", "no-such-run"),
        ("no_such_dag", run_id),
    ]:
        with pytest.raises(ReportNotFound):
            find_report(root, dag_id, name)
