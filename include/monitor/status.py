"""What the dunning monitor shows, built from the store, the gateways and the modems.

Everything here runs without FastAPI or a running Airflow: the web app (:mod:`include.monitor.app`)
resolves connections and configuration and hands plain values to these functions.

Figures are read-only: the monitor never binds to an SMSC, never opens a modem's serial port and
never takes a modem's lock away from a task (see :func:`probe_modem`).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import sqlalchemy as sa

log = logging.getLogger(__name__)

VARIABLE_NAME = "dunning_monitor"
ENV_GATEWAYS = "DUNNING_MONITOR_GATEWAYS"
ENV_MODEMS = "DUNNING_MONITOR_MODEMS"
DEFAULT_GATEWAYS = ("smpp_default",)
DEFAULT_MODEMS: tuple[str, ...] = ()
DEFAULT_DAG_TAG = "dunning"
RATE_WINDOW = timedelta(minutes=5)
PROBE_TIMEOUT = 1.0
RECENT_RUNS = 10

# Ledger states, as in include.dunning.ledger (not imported: that module pulls in SQLAlchemy).
PLANNED, CLAIMED, SUBMITTED, DELIVERED, FAILED = "PLANNED", "CLAIMED", "SUBMITTED", "DELIVERED", "FAILED"
NOT_DELIVERED = ("UNDELIVERED", "EXPIRED", "UNKNOWN")

UP, DOWN, UNKNOWN = "up", "down", "unknown"
LOCKED, REACHABLE = "locked", "reachable"


# -- configuration ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MonitorConfig:
    """Which gateways and modems the monitor watches, and how it finds the dunning DAGs.

    :param gateways: Airflow connection ids of type ``smpp``
    :param modems: Airflow connection ids of type ``gsm_modem``
    :param dag_tag: DAGs with this tag are the dunning DAGs whose next runs are shown
    :param problems: what was wrong with the configuration (shown on the page, never fatal)
    """

    gateways: tuple[str, ...] = DEFAULT_GATEWAYS
    modems: tuple[str, ...] = DEFAULT_MODEMS
    dag_tag: str = DEFAULT_DAG_TAG
    problems: tuple[str, ...] = field(default=())


def _conn_ids(value: Any, what: str, problems: list[str]) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list | tuple):
        items = [str(v) for v in value]
    else:
        problems.append(f"{what}: expected a list of connection ids, got {type(value).__name__}")
        return None
    return tuple(dict.fromkeys(i.strip() for i in items if i and i.strip()))


def parse_config(variable: str | Mapping[str, Any] | None, env: Mapping[str, str]) -> MonitorConfig:
    """Return the monitor's configuration; a bad setting is reported, never raised.

    Per list, the environment variable wins (``DUNNING_MONITOR_GATEWAYS`` /
    ``DUNNING_MONITOR_MODEMS``, comma-separated connection ids), then the Airflow Variable
    ``dunning_monitor`` (JSON ``{"gateways": [...], "modems": [...], "dag_tag": "dunning"}``),
    then the defaults (``["smpp_default"]`` and no modem).

    :param variable: the Variable's value (JSON text or already parsed), None when unset
    :param env: the process environment
    """
    problems: list[str] = []
    settings: Mapping[str, Any] = {}
    if isinstance(variable, str) and variable.strip():
        try:
            parsed = json.loads(variable)
        except ValueError as exc:
            problems.append(f"Variable {VARIABLE_NAME!r} is not JSON ({exc.msg}); using defaults")
            parsed = {}
        variable = parsed
    if isinstance(variable, Mapping):
        settings = variable
    elif variable not in (None, ""):
        problems.append(f"Variable {VARIABLE_NAME!r} must be a JSON object; using defaults")

    def pick(env_name: str, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        from_env = _conn_ids(env.get(env_name), env_name, problems)
        if from_env is not None and env.get(env_name, "").strip():
            return from_env
        from_variable = _conn_ids(settings.get(key), f"{VARIABLE_NAME}.{key}", problems)
        return default if from_variable is None else from_variable

    tag = settings.get("dag_tag", DEFAULT_DAG_TAG)
    return MonitorConfig(
        gateways=pick(ENV_GATEWAYS, "gateways", DEFAULT_GATEWAYS),
        modems=pick(ENV_MODEMS, "modems", DEFAULT_MODEMS),
        dag_tag=str(tag) if tag else DEFAULT_DAG_TAG,
        problems=tuple(problems),
    )


# -- time -------------------------------------------------------------------------------------------


def local_day_window(now: datetime, tz: tzinfo) -> tuple[date, datetime, datetime]:
    """Return the local day of ``now`` and its start and end as naive UTC (how the store keeps times).

    :param now: an aware datetime
    :param tz: the business time zone (Asia/Shanghai)
    """
    local = now.astimezone(tz)
    start = datetime(local.year, local.month, local.day, tzinfo=tz)
    end = start + timedelta(days=1)
    return (
        local.date(),
        start.astimezone(UTC).replace(tzinfo=None),
        end.astimezone(UTC).replace(tzinfo=None),
    )


# -- the store --------------------------------------------------------------------------------------


def ledger_figures(
    engine: sa.Engine,
    *,
    day_start: datetime,
    day_end: datetime,
    rate_since: datetime,
    recent_runs: int = RECENT_RUNS,
    usage_day: date | None = None,
) -> dict[str, Any]:
    """Count the ledger: the queue, today's submits and outcomes, receipts outstanding, recent runs.

    "Today" is ``[day_start, day_end)`` in the store's naive UTC. Per gateway, ``submitted_today``
    and ``parts_recent`` count message parts (what an SMSC bills and throttles), ``rows_*``
    contacts.

    :param engine: the dunning store's engine
    :param day_start: start of the local day, naive UTC
    :param day_end: end of the local day, naive UTC
    :param rate_since: start of the rate window, naive UTC
    :param recent_runs: how many ``dunning_run`` rows to return, newest first
    :param usage_day: the local day whose ``gateway_usage`` rows (parts reserved against each
        gateway's daily quota by the send tasks) go into ``quota_used`` / ``quota_daily``
    """
    import sqlalchemy as sa

    today = {"start": day_start, "end": day_end}
    with engine.connect() as conn:
        by_state = dict(
            conn.execute(sa.text("SELECT state, COUNT(*) FROM contact_ledger GROUP BY state")).all()
        )
        submitted_today = conn.execute(
            sa.text(
                "SELECT COUNT(*) FROM contact_ledger WHERE submitted_at >= :start AND submitted_at < :end"
            ),
            today,
        ).scalar_one()
        finals = dict(
            conn.execute(
                sa.text(
                    "SELECT state, COUNT(*) FROM contact_ledger "
                    "WHERE final_at >= :start AND final_at < :end GROUP BY state"
                ),
                today,
            ).all()
        )
        outstanding = dict(
            conn.execute(
                sa.text(
                    "SELECT gateway, COUNT(*) FROM message_part WHERE state = :submitted GROUP BY gateway"
                ),
                {"submitted": SUBMITTED},
            ).all()
        )
        per_gateway: dict[str, dict[str, int]] = {}
        for gateway, rows, parts in conn.execute(
            sa.text(
                "SELECT gateway, COUNT(*), COALESCE(SUM(parts), 0) FROM contact_ledger "
                "WHERE channel = 'sms' AND submitted_at >= :start AND submitted_at < :end GROUP BY gateway"
            ),
            today,
        ).all():
            per_gateway.setdefault(gateway, {}).update(rows_today=int(rows), submitted_today=int(parts))
        for gateway, rows, parts in conn.execute(
            sa.text(
                "SELECT gateway, COUNT(*), COALESCE(SUM(parts), 0) FROM contact_ledger "
                "WHERE channel = 'sms' AND submitted_at >= :since GROUP BY gateway"
            ),
            {"since": rate_since},
        ).all():
            per_gateway.setdefault(gateway, {}).update(rows_recent=int(rows), parts_recent=int(parts))
        if usage_day is not None:
            try:
                with conn.begin_nested():
                    usage = conn.execute(
                        sa.text(
                            "SELECT gateway, used, daily_quota FROM gateway_usage WHERE usage_day = :day"
                        ),
                        {"day": usage_day},
                    ).all()
            except sa.exc.DBAPIError as exc:  # e.g. a store created before the table: no quota figures
                log.warning("gateway quota figures unavailable: %s", type(exc.orig or exc).__name__)
                usage = []
            for gateway, used, quota in usage:
                per_gateway.setdefault(gateway, {}).update(
                    quota_used=int(used), **({} if quota is None else {"quota_daily": int(quota)})
                )
        runs = conn.execute(
            sa.text(
                "SELECT dag_id, run_id, as_of, planned, suppressed, submitted, failed, delivered, "
                "undelivered, pending, finished_at FROM dunning_run "
                "ORDER BY finished_at DESC, run_id DESC LIMIT :n"
            ),
            {"n": recent_runs},
        ).mappings()
        recent = [{k: _plain(v) for k, v in row.items()} for row in runs]
    planned, claimed = int(by_state.get(PLANNED, 0)), int(by_state.get(CLAIMED, 0))
    return {
        "planned": planned,
        "claimed": claimed,
        "queued": planned + claimed,
        "submitted_today": int(submitted_today),
        "delivered_today": int(finals.get(DELIVERED, 0)),
        "failed_today": int(finals.get(FAILED, 0)),
        "undelivered_today": sum(int(finals.get(s, 0)) for s in NOT_DELIVERED),
        "receipts_outstanding": sum(int(n) for n in outstanding.values()),
        "receipts_outstanding_by_gateway": {g: int(n) for g, n in outstanding.items()},
        "by_gateway": per_gateway,
        "by_state": {s: int(n) for s, n in sorted(by_state.items())},
        "recent_runs": recent,
    }


def _plain(value: Any) -> Any:
    """Return a JSON-friendly value (dates as ISO text, Decimals as numbers)."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


# -- gateways ---------------------------------------------------------------------------------------


def probe_tcp(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> tuple[str, str]:
    """Open and close a TCP connection to ``host:port``; return (``up`` | ``down``, detail).

    Only a connect, never a bind: no credentials are sent and the SMSC sees a short connection.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return UP, "TCP connect ok"
    except TimeoutError:
        return DOWN, f"no answer within {timeout:g} s"
    except OSError as exc:
        return DOWN, exc.strerror or type(exc).__name__


def parse_quota(value: Any) -> int | None:
    """Return a quota extra as a whole number of parts, None when unset or unreadable."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        quota = int(Decimal(str(value).strip()))
    except ArithmeticError:
        return None
    return quota if quota >= 0 else None


@dataclass(frozen=True)
class GatewaySpec:
    """What the monitor knows of one gateway connection (never its login or password).

    :param conn_id: the Airflow connection id (also the ledger's ``gateway`` value)
    :param host: SMSC host, None when the connection could not be read
    :param port: SMSC port
    :param quota: parts allowed per day (the connection's ``daily_quota`` extra, or the older
        ``quota``), None when unset
    :param error: why the connection could not be read
    """

    conn_id: str
    host: str | None = None
    port: int | None = None
    quota: int | None = None
    error: str | None = None


def gateway_status(
    spec: GatewaySpec,
    figures: Mapping[str, Any],
    probe: tuple[str, str] | None,
    *,
    window: timedelta = RATE_WINDOW,
) -> dict[str, Any]:
    """Return one gateway's row: state, recent rate, today's parts and the quota left.

    :param spec: the gateway's connection, as far as it could be read
    :param figures: the result of :func:`ledger_figures` (or ``{}`` when the store is down)
    :param probe: the result of :func:`probe_tcp`, None when there was nothing to probe
    :param window: the rate window
    """
    counts = dict((figures.get("by_gateway") or {}).get(spec.conn_id, {}))
    parts_recent = int(counts.get("parts_recent", 0))
    submitted_today = int(counts.get("submitted_today", 0))
    state, detail = probe if probe is not None else (UNKNOWN, spec.error or "not probed")
    # The send tasks' own count (gateway_usage: parts reserved against the daily quota) when
    # there is one; else the parts the ledger shows submitted today.
    quota = spec.quota if spec.quota is not None else counts.get("quota_daily")
    used = int(counts.get("quota_used", submitted_today))
    remaining = None if quota is None else max(0, int(quota) - used)
    return {
        "conn_id": spec.conn_id,
        "address": f"{spec.host}:{spec.port}" if spec.host else None,
        "state": state,
        "detail": detail,
        "messages_recent": int(counts.get("rows_recent", 0)),
        "parts_recent": parts_recent,
        "rate_per_minute": round(parts_recent / (window.total_seconds() / 60), 2),
        "rate_window_minutes": round(window.total_seconds() / 60),
        "submitted_today": submitted_today,
        "receipts_outstanding": int(
            (figures.get("receipts_outstanding_by_gateway") or {}).get(spec.conn_id, 0)
        ),
        "quota": quota,
        "quota_used": used,
        "remaining": remaining,
    }


def tcp_target(spec: GatewaySpec) -> tuple[str, int] | None:
    """Return what to probe for a gateway, None when its connection could not be read."""
    if spec.error or not spec.host or not spec.port:
        return None
    return spec.host, spec.port


def probe_all(
    targets: Mapping[str, tuple[str, int] | None],
    *,
    timeout: float = PROBE_TIMEOUT,
    probe: Callable[[str, int, float], tuple[str, str]] = probe_tcp,
) -> dict[str, tuple[str, str] | None]:
    """Probe every target at once (so ten dead gateways cost one timeout, not ten)."""
    live = {name: target for name, target in targets.items() if target is not None}
    results: dict[str, tuple[str, str] | None] = dict.fromkeys(targets)
    if not live:
        return results
    with ThreadPoolExecutor(max_workers=min(16, len(live)), thread_name_prefix="monitor-probe") as pool:
        futures = {name: pool.submit(probe, host, port, timeout) for name, (host, port) in live.items()}
        for name, future in futures.items():
            results[name] = future.result()
    return results


# -- modems -----------------------------------------------------------------------------------------


def modem_lock_path(port_name: str, lock_dir: str) -> str:
    """Return the lock file ``hooks.gsm_modem.GsmModemHook`` takes for a port (same naming)."""
    digest = hashlib.sha1(port_name.encode()).hexdigest()[:16]
    return os.path.join(lock_dir, f"gsm-modem-{digest}.lock")


def _lock_holder(path: str) -> tuple[bool | None, str]:
    """Return (held?, detail) for a lock file without creating it and without waiting.

    A shared, non-blocking ``flock`` fails only while a task holds the exclusive lock; when it
    succeeds it is dropped at once, and a task asking for the lock in that instant just retries
    (the hook polls every 0.1 s), so the probe can never take a modem away from a task.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return False, "no task has held it on this host"
    except OSError as exc:
        return None, f"lock file unreadable: {exc.strerror}"
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                pid = os.read(fd, 32).decode("ascii", "replace").strip()
                return True, f"in use by a task (pid {pid})" if pid.isdigit() else "in use by a task"
            return None, f"lock check failed: {exc.strerror}"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False, "not in use"
    finally:
        os.close(fd)


def probe_modem(
    port_name: str | None,
    lock_dir: str,
    *,
    timeout: float = PROBE_TIMEOUT,
    probe: Callable[[str, int, float], tuple[str, str]] = probe_tcp,
) -> dict[str, Any]:
    """Return a modem's state without opening its serial port.

    - ``locked``: a task holds the modem's lock file (it is sending or calling right now)
    - ``reachable``: nobody holds the lock and the device node exists (or, for a
      ``socket://`` / ``rfc2217://`` port, the TCP port accepts a connection)
    - ``down``: the device node is missing or the TCP port refuses
    - ``unknown``: the connection has no port, or the lock could not be checked

    Opening the port would be the only way to ask the modem itself, but some modems reset when
    a port is opened (DTR), and it would contend with a running task; the lock file and the
    device node answer the question without either. The lock is a file on the host that runs
    the tasks, so the answer is only meaningful where the api-server shares that host (or a
    lock_dir on shared storage); elsewhere ``reachable`` / ``down`` describe this host's view.

    :param port_name: the connection's host (device path or pyserial URL)
    :param lock_dir: the connection's ``lock_dir`` extra (default the system temp dir)
    """
    if not port_name:
        return {"state": UNKNOWN, "detail": "connection has no serial port (host)", "port": None}
    held, lock_detail = _lock_holder(modem_lock_path(port_name, lock_dir))
    if held:
        return {"state": LOCKED, "detail": lock_detail, "port": port_name}
    scheme = urlsplit(port_name).scheme if "://" in port_name else ""
    if scheme in ("socket", "rfc2217"):
        parts = urlsplit(port_name)
        if not parts.hostname or not parts.port:
            return {"state": UNKNOWN, "detail": "port URL has no host:port", "port": port_name}
        state, detail = probe(parts.hostname, parts.port, timeout)
    elif scheme:
        state, detail = UNKNOWN, f"cannot check a {scheme}:// port without opening it"
    elif os.path.exists(port_name):
        state, detail = REACHABLE, "device present"
    else:
        state, detail = DOWN, "device not present on this host"
    if state == UP:
        state = REACHABLE
    if held is None:
        state, detail = UNKNOWN, f"{detail}; {lock_detail}"
    else:
        detail = f"{detail}; lock {lock_detail}"
    return {"state": state, "detail": detail, "port": port_name}


# -- the whole page ---------------------------------------------------------------------------------


def redact(value: Any, secrets: Iterable[str]) -> Any:
    """Return ``value`` (nested dicts / lists / text) with every secret replaced by ``***``."""
    secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, "***")
        return value
    if isinstance(value, Mapping):
        return {k: redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, secrets) for v in value]
    return value


def build_status(
    *,
    now: datetime,
    local_day: date,
    config: MonitorConfig,
    figures: Mapping[str, Any] | None,
    store_error: str | None,
    gateways: Sequence[dict[str, Any]],
    modems: Sequence[dict[str, Any]],
    scheduled: Sequence[dict[str, Any]] | None,
    scheduled_error: str | None = None,
    secrets: Iterable[str] = (),
) -> dict[str, Any]:
    """Assemble the ``/status`` document; any part that failed is reported in it, never raised.

    :param figures: :func:`ledger_figures`, None when the store could not be read
    :param store_error: why the store could not be read
    :param gateways: one :func:`gateway_status` per configured gateway
    :param modems: one :func:`probe_modem` (plus ``conn_id``) per configured modem
    :param scheduled: the dunning DAGs' next runs, None when Airflow's database was not asked
    :param secrets: passwords and other secrets that must not appear anywhere in the answer
    """
    figures = dict(figures or {})
    ledger = None
    if figures:
        ledger = {
            k: figures[k]
            for k in (
                "planned",
                "claimed",
                "queued",
                "submitted_today",
                "delivered_today",
                "failed_today",
                "undelivered_today",
                "receipts_outstanding",
                "by_state",
            )
        }
    document = {
        "generated_at": now.astimezone(UTC).isoformat(timespec="seconds"),
        "local_day": local_day.isoformat(),
        "ledger": ledger,
        "store_error": store_error,
        "gateways": list(gateways),
        "modems": list(modems),
        "scheduled": None if scheduled is None else list(scheduled),
        "scheduled_error": scheduled_error,
        "recent_runs": figures.get("recent_runs", []),
        "config": {
            "gateways": list(config.gateways),
            "modems": list(config.modems),
            "dag_tag": config.dag_tag,
            "problems": list(config.problems),
        },
    }
    return redact(document, secrets)
