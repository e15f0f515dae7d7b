"""The run report in a real headless browser (Debian's chromium): renders, no console errors, charts present.

Skipped with the reason when /usr/bin/chromium is missing, failed under CI=true.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from conftest import service_missing
from test_reporting import DAG, RUN, seed_run

from include.dunning.ledger import DunningStore
from include.dunning.reporting import load_reporting, render_run_report, report_tables, write_report_csv

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
FUNNEL = (("Contacts planned", "planned"), ("SMS submitted", "submitted"))


def render(store: DunningStore, run_id: str, folder: Path) -> Path:
    load_reporting(store, run_id=run_id, dag_id=DAG)
    tables = report_tables(store, dag_id=DAG, run_id=run_id)
    names = write_report_csv(tables, lambda name: (folder / name).open("w", newline=""), "run")
    html = render_run_report(
        store, dag_id=DAG, run_id=run_id, as_of="2026-11-23", figures={"planned": 8, "submitted": 5},
        funnel=FUNNEL, sent_states={"DELIVERED": 2}, quarantine_reasons=[], json_name="run.json",
        csv_names=names, tables=tables, generated_at="2026-11-23 10:00:00",
    )  # fmt: skip
    path = folder / "run.html"
    path.write_text(html, encoding="utf-8")
    return path


def open_in_chromium(path: Path, tmp_path: Path) -> tuple[str, str, Path]:
    if not CHROMIUM.exists():
        service_missing(f"{CHROMIUM} not installed (Debian: apt-get install chromium)")
    png = tmp_path / f"{path.stem}.png"
    done = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1200,2400",
            f"--screenshot={png}",
            "--dump-dom",
            path.as_uri(),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr, png


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    store = DunningStore(f"sqlite:///{tmp_path_factory.mktemp('browser') / 'store.db'}")
    seed_run(store)
    yield store
    store.engine.dispose()


def _console_errors(stderr: str) -> list[str]:
    return [
        line for line in stderr.splitlines() if "Uncaught" in line or "CONSOLE" in line and "ERROR" in line
    ]


def test_report_renders_with_charts(store, tmp_path):
    dom, stderr, png = open_in_chromium(render(store, RUN, tmp_path), tmp_path)
    assert not _console_errors(stderr)
    assert len(re.findall(r"<svg[^>]*class=\"chart\"", dom)) == 4, (
        "funnel, gateway, prefix and timeline charts"
    )
    assert "Outcomes by gateway" in dom and "undelivered-bad-number" in dom
    assert "no-contacts" not in dom
    assert png.exists() and png.stat().st_size > 10_000
    for name in ("summary", "recovery", "outcomes_by_gateway", "outcomes_by_prefix", "timeline"):
        assert (tmp_path / f"run.{name}.csv").read_text().count("\n") >= 1


def test_zero_contact_report_renders_and_says_so(store, tmp_path):
    dom, stderr, png = open_in_chromium(render(store, "scheduled__nothing-to-do", tmp_path), tmp_path)
    assert not _console_errors(stderr)
    assert 'id="no-contacts"' in dom and "This run had no contacts" in dom
    assert "<svg" in dom and png.exists()
