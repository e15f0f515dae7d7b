"""Fixtures for integration tests: throwaway databases on the local PostgreSQL and MariaDB.

Each fixture creates a uniquely named database for the test module and drops it afterwards,
even when a test fails. When the server cannot be reached the tests are skipped with the
reason, except under ``CI=true``, where a missing service fails them: CI must not go green
by skipping what it was meant to check.

Server URLs (administrative connection, database part ignored) can be overridden with
``DUNNING_TEST_PG_URL`` and ``DUNNING_TEST_MARIADB_URL``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

PG_ADMIN_URL = os.environ.get("DUNNING_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
MARIADB_ADMIN_URL = os.environ.get("DUNNING_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/")


def in_ci() -> bool:
    """Return whether the tests run under CI (environment variable ``CI=true``)."""
    return os.environ.get("CI", "").strip().lower() == "true"


def service_missing(reason: str) -> None:
    """Skip the test for a missing service, or fail it under CI."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing service is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def _admin_engine(url: str) -> sa.Engine:
    return sa.create_engine(url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})


def _temporary_database(admin_url: str, label: str, create: str, drop: str) -> Iterator[str]:
    """Create a uniquely named database, yield its URL, drop it at the end."""
    name = f"dunning_test_{uuid.uuid4().hex[:12]}"
    admin = _admin_engine(admin_url)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(create.format(name=name))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        service_missing(
            f"{label} not reachable at {sa.engine.make_url(admin_url).render_as_string()}: {exc.orig}"
        )
    try:
        yield sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(drop.format(name=name))
        admin.dispose()


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """Yield the SQLAlchemy URL of a fresh PostgreSQL database, dropped after the module."""
    yield from _temporary_database(
        PG_ADMIN_URL,
        "PostgreSQL",
        "CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0",
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)",
    )


@pytest.fixture(scope="module")
def mariadb_url() -> Iterator[str]:
    """Yield the SQLAlchemy URL of a fresh MariaDB database (utf8mb4), dropped after the module."""
    for url in _temporary_database(
        MARIADB_ADMIN_URL,
        "MariaDB",
        "CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
        "DROP DATABASE IF EXISTS {name}",
    ):
        parsed = sa.engine.make_url(url)
        yield parsed.update_query_dict({"charset": "utf8mb4"}).render_as_string(hide_password=False)
