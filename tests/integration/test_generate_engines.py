"""Generate the demo source systems on PostgreSQL and MariaDB and compare with SQLite."""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa

from include.sources import generate as gen

pytestmark = pytest.mark.integration

AS_OF = date(2026, 11, 22)
ROWS = 2_000
SEED = 20261122


def dump(engine: sa.Engine, system: str) -> dict[str, list[tuple]]:
    """Return every table of a system as rows sorted in Python (collations differ by engine)."""
    metadata = sa.MetaData()
    out = {}
    with engine.connect() as conn:
        for table, cols in gen.COLUMNS[system].items():
            t = sa.Table(table, metadata, autoload_with=conn)
            rows = conn.execute(sa.select(*(t.c[c] for c in cols))).all()
            out[table] = sorted((tuple(r) for r in rows), key=repr)
    return out


@pytest.fixture(scope="module")
def sqlite_reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict[str, int], sa.Engine]]:
    """Generate the reference data on SQLite."""
    root: Path = tmp_path_factory.mktemp("reference")
    out = {}
    for system in gen.SYSTEMS:
        engine = sa.create_engine(f"sqlite:///{root / system}.db")
        out[system] = (gen.generate(engine, system, rows=ROWS, as_of=AS_OF, seed=SEED), engine)
    return out


def _check_engine(url: str, reference: dict[str, tuple[dict[str, int], sa.Engine]]) -> None:
    engine = sa.create_engine(url)
    try:
        for system in gen.SYSTEMS:
            gen.create_schema(engine, system)
            gen.create_schema(engine, system)  # idempotent
            started = time.perf_counter()
            counts = gen.generate(engine, system, rows=ROWS, as_of=AS_OF, seed=SEED, chunk_rows=20_000)
            elapsed = time.perf_counter() - started
            print(f"{engine.dialect.name} {system}: {sum(counts.values())} rows in {elapsed:.2f} s")
            expected_counts, sqlite_engine = reference[system]
            assert counts == expected_counts, system
            assert dump(engine, system) == dump(sqlite_engine, system), system
    finally:
        engine.dispose()


@pytest.mark.filterwarnings("ignore:Dialect sqlite\\+pysqlite does \\*not\\* support Decimal")
def test_postgres_matches_sqlite(pg_url: str, sqlite_reference: dict) -> None:
    _check_engine(pg_url, sqlite_reference)


@pytest.mark.filterwarnings("ignore:Dialect sqlite\\+pysqlite does \\*not\\* support Decimal")
def test_mariadb_matches_sqlite(mariadb_url: str, sqlite_reference: dict) -> None:
    _check_engine(mariadb_url, sqlite_reference)
