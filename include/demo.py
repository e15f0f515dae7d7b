"""Run the main job on the embedded default, from a fresh clone: ``make demo``.

Sets up an Airflow home inside the repository (SQLite metadata, LocalExecutor), creates the
demo levy (tax) and billing (electricity) source databases as SQLite files filled with
synthetic debtors, starts the SMSC simulator, runs the tax and the electricity dunning DAGs
end to end with ``airflow dags test``, stops the simulator and prints each run's figures.

Running it again the same week sends nothing already sent: the contact ledger's keys are
deterministic, so the second run plans no new contact.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

DEMO_DEBTORS = 3000
DEFAULT_SMSC_PORT = 2775
REHEARSAL_CONF = {"respect_sending_window": False}


@dataclass(frozen=True)
class DemoLayout:
    """Where the demo keeps its files: ``.airflow/`` and ``.demo/`` under ``workdir`` (git-ignored).

    :param root: the repository (its ``dags/`` folder is the one Airflow parses)
    :param workdir: where the Airflow home and the demo databases go; the repository by default
    """

    root: Path
    workdir: Path | None = None

    @property
    def base(self) -> Path:
        return self.workdir or self.root

    @property
    def airflow_home(self) -> Path:
        return self.base / ".airflow"

    @property
    def data(self) -> Path:
        return self.base / ".demo"

    @property
    def levy_db(self) -> Path:
        return self.data / "levy.sqlite"

    @property
    def billing_db(self) -> Path:
        return self.data / "billing.sqlite"

    @property
    def store_db(self) -> Path:
        return self.data / "dunning.sqlite"

    @property
    def staging(self) -> Path:
        return self.data / "staging"

    @property
    def logs(self) -> Path:
        return self.data / "logs"


def airflow_environment(
    layout: DemoLayout, *, smsc_host: str, smsc_port: int, modems: dict[str, str] | None = None
) -> dict[str, str]:
    """Return the environment that points Airflow and the DAGs at the demo's files and simulators.

    :param modems: modem connection id -> the modem's URL (pty path or socket://host:port)
    """
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(layout.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(layout.root / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{layout.airflow_home / 'airflow.db'}",
            "AIRFLOW__CORE__DEFAULT_TIMEZONE": "Asia/Shanghai",
            "AIRFLOW_CONN_LEVY_SOURCE": json.dumps({"conn_type": "sqlite", "host": str(layout.levy_db)}),
            "AIRFLOW_CONN_BILLING_SOURCE": json.dumps(
                {"conn_type": "sqlite", "host": str(layout.billing_db)}
            ),
            "AIRFLOW_CONN_DUNNING_STORE": json.dumps({"conn_type": "sqlite", "host": str(layout.store_db)}),
            "AIRFLOW_CONN_SMPP_DEFAULT": json.dumps(
                {
                    "conn_type": "smpp",
                    "host": smsc_host,
                    "port": smsc_port,
                    "login": "dunning",
                    "password": "demo",
                    "extra": {"source_addr": "12366", "window": 50},
                }
            ),
            "DUNNING_STAGING_ROOT": "file://" + str(layout.staging),
            **{
                f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(
                    {
                        "conn_type": "gsm_modem",
                        "host": url,
                        "extra": {"vendor": "simcom", "lock_dir": str(layout.data / "locks")},
                    }
                )
                for conn_id, url in (modems or {}).items()
            },
            "PYTHONWARNINGS": "ignore::DeprecationWarning",
        }
    )
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    return env


def _airflow(args: list[str], env: dict[str, str], log_file: Path, *, what: str) -> None:
    """Run an ``airflow`` CLI command, its output to a log file; stop with the log's tail on failure."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("a", encoding="utf-8") as log:
        log.write(f"\n$ airflow {' '.join(args)}\n")
        log.flush()
        result = subprocess.run(
            [str(Path(sys.executable).parent / "airflow"), *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if result.returncode != 0:
        tail = log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-40:]
        raise DemoError(
            f"{what} failed (exit {result.returncode}); last lines of {log_file}:\n" + "\n".join(tail)
        )


class DemoError(RuntimeError):
    """A demo step that failed, with what to do about it."""


def port_is_free(host: str, port: int) -> bool:
    """Return True when nothing listens on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def prepare_sources(layout: DemoLayout, *, as_of: date, debtors: int) -> None:
    """Create the demo levy and billing databases once (the generator is deterministic)."""
    import sqlalchemy as sa

    from include.sources.generate import create_schema, generate_billing, generate_levy

    layout.data.mkdir(parents=True, exist_ok=True)
    for path, system, generate in (
        (layout.levy_db, "levy", generate_levy),
        (layout.billing_db, "billing", generate_billing),
    ):
        if path.exists():
            continue
        partial = path.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        engine = sa.create_engine(f"sqlite:///{partial}")
        try:
            create_schema(engine, system)
            if system == "levy":
                counts = generate(engine, taxpayers=debtors, as_of=as_of)
            else:
                counts = generate(engine, customers=debtors, as_of=as_of)
        finally:
            engine.dispose()
        partial.rename(path)
        print(f"  created {path.name}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


def latest_run_figures(store_db: Path, dag_id: str) -> dict[str, object]:
    """Return the newest run's figures from the store's ``dunning_run`` table."""
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{store_db}")
    try:
        with engine.connect() as conn:
            row = (
                conn.execute(
                    sa.text(
                        "SELECT * FROM dunning_run WHERE dag_id = :dag ORDER BY finished_at DESC LIMIT 1"
                    ),
                    {"dag": dag_id},
                )
                .mappings()
                .first()
            )
    finally:
        engine.dispose()
    if row is None:
        raise DemoError(f"the run wrote no report row into {store_db}")
    return dict(row)


def setup_airflow(layout: DemoLayout, env: dict[str, str], log_file: Path, *, modems: int = 0) -> None:
    """Initialise the Airflow home (SQLite metadata), the gateway pool and the modem pool; idempotent."""
    layout.airflow_home.mkdir(parents=True, exist_ok=True)
    (layout.data / "locks").mkdir(parents=True, exist_ok=True)
    _airflow(["db", "migrate"], env, log_file, what="airflow db migrate")
    _airflow(
        ["pools", "set", "smpp_default", "4", "binds to the default SMPP gateway"], env, log_file, what="pool"
    )
    _airflow(
        ["pools", "set", "modem_pool", str(max(1, modems)), "one slot per GSM modem"],
        env,
        log_file,
        what="pool",
    )


def run_dag(
    dag_id: str, as_of: date, env: dict[str, str], log_file: Path, *, conf: dict[str, object] | None = None
) -> str:
    """Run one DAG end to end with ``airflow dags test``; return the run id, raise if the run failed.

    ``dags test`` exits 0 whatever the run's state, so the state is read back afterwards.
    """
    args = ["dags", "test", dag_id, as_of.isoformat()]
    if conf:
        args += ["--conf", json.dumps(conf)]
    _airflow(args, env, log_file, what=f"the {dag_id} run")
    runs = json.loads(_airflow_output(["dags", "list-runs", dag_id, "-o", "json"], env))
    latest = max(runs, key=lambda r: r["run_after"])
    if latest["state"] != "success":
        states = json.loads(
            _airflow_output(["tasks", "states-for-dag-run", dag_id, latest["run_id"], "-o", "json"], env)
        )
        failed = sorted({s["task_id"] for s in states if s.get("state") in ("failed", "upstream_failed")})
        raise DemoError(
            f"the {dag_id} run {latest['run_id']} ended {latest['state']}; failed tasks: "
            f"{', '.join(failed) or 'none recorded'}; task logs are in {log_file}"
        )
    return latest["run_id"]


def _airflow_output(args: list[str], env: dict[str, str]) -> str:
    """Run an ``airflow`` CLI command and return its standard output (JSON commands)."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise DemoError(f"airflow {' '.join(args)} failed: {result.stderr.strip().splitlines()[-1:]}")
    # Airflow may print warnings before the JSON document; the document is the line that parses.
    for line in reversed(result.stdout.splitlines()):
        if line.startswith(("[{", "[]", "{")):
            return line
    raise DemoError(f"airflow {' '.join(args)} printed no JSON")


DEMO_DAGS = ("tax_dunning", "power_dunning")


def run_demo(layout: DemoLayout, *, as_of: date, smsc_port: int, debtors: int) -> list[dict[str, object]]:
    """Run the tax and electricity dunning DAGs once on the embedded default; return each run's figures."""
    from include.simulators.smsc import SmscSimulator

    host = "127.0.0.1"
    if not port_is_free(host, smsc_port):
        raise DemoError(
            f"port {smsc_port} on {host} is already in use by another program; "
            f"run the demo on another port: make demo SMSC_PORT={smsc_port + 1}"
        )
    log_file = layout.logs / f"demo-{datetime.now().strftime('%Y%m%d-%H%M%S')}.log"
    started = time.monotonic()
    print(f"[1/5] demo source systems ({debtors} taxpayers, {debtors} electricity customers)")
    prepare_sources(layout, as_of=as_of, debtors=debtors)
    results = []
    with contextlib.ExitStack() as stack:
        stack.enter_context(
            SmscSimulator(host=host, port=smsc_port, receipt_delay=0.2, undeliverable_share=0.04)
        )
        modems = {f"gsm_modem_{n}": stack.enter_context(demo_modem()).url for n in (1, 2)}
        print(f"[2/5] SMSC simulator on {host}:{smsc_port}; modem emulators at {', '.join(modems.values())}")
        env = airflow_environment(layout, smsc_host=host, smsc_port=smsc_port, modems=modems)
        print(f"[3/5] Airflow home {layout.airflow_home} (SQLite, LocalExecutor)")
        setup_airflow(layout, env, log_file, modems=len(modems))
        for dag_id in DEMO_DAGS:
            dag_started = time.monotonic()
            print(f"[4/5] airflow dags test {dag_id} {as_of.isoformat()} (log: {log_file})")
            # The simulators are nobody's phone: the rehearsal may send outside the sending window.
            conf: dict[str, object] = dict(REHEARSAL_CONF)
            if dag_id == "power_dunning":
                conf.update(modems=sorted(modems), ring_timeout_seconds=5)
            run_dag(dag_id, as_of, env, log_file, conf=conf)
            figures = latest_run_figures(layout.store_db, dag_id)
            figures["seconds"] = round(time.monotonic() - dag_started, 1)
            results.append(figures)
    print(f"[5/5] simulators stopped ({round(time.monotonic() - started, 1)} s in all)")
    return results


def demo_modem() -> Any:
    """Return a modem emulator over TCP, fast enough for a rehearsal (a call takes about a second)."""
    from include.simulators.modem import ModemEmulator

    return ModemEmulator("tcp", sms_delay=0.2, ring_seconds=0.3, tts_seconds_per_char=0.002, answer_ratio=0.9)


def print_figures(figures: dict[str, object]) -> None:
    """Print the run's figures the way the README shows them."""
    rows = (
        ("debtors extracted", "debtors"),
        ("items extracted", "extracted"),
        ("rows quarantined", "quarantined"),
        ("contacts planned", "planned"),
        ("suppressed", "suppressed"),
        ("sent (SMS + calls)", "submitted"),
        ("delivered", "delivered"),
        ("undelivered", "undelivered"),
        ("awaiting receipt", "pending"),
    )
    print()
    print(f"{figures['dag_id']} as of {figures['as_of']} (run {figures['run_id']}, {figures['seconds']} s)")
    for label, key in rows:
        print(f"  {label:<18} {figures.get(key) or 0:>6}")
    print(f"  run report         {figures['report_path']}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``dunning-demo`` (``make demo``)."""
    parser = argparse.ArgumentParser(prog="dunning-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the repository root (default: here)")
    parser.add_argument(
        "--as-of",
        type=date.fromisoformat,
        default=datetime.now(ZoneInfo("Asia/Shanghai")).date(),
        help="as-of date of the run (default: today in Asia/Shanghai)",
    )
    parser.add_argument(
        "--smsc-port", type=int, default=int(os.environ.get("SMSC_PORT") or DEFAULT_SMSC_PORT)
    )
    parser.add_argument("--debtors", type=int, default=DEMO_DEBTORS)
    args = parser.parse_args(argv)
    if not (args.root / "dags" / "tax_dunning.py").exists():
        print(
            f"dunning-demo: {args.root} is not the repository root (no dags/tax_dunning.py)", file=sys.stderr
        )
        return 2
    try:
        results = run_demo(
            DemoLayout(args.root.resolve()), as_of=args.as_of, smsc_port=args.smsc_port, debtors=args.debtors
        )
    except DemoError as exc:
        print(f"dunning-demo: {exc}", file=sys.stderr)
        return 1
    for figures in results:
        print_figures(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
