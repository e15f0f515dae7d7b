"""Extraction to Parquet on PostgreSQL (COPY), MariaDB and SQLite: same query, same file."""

from __future__ import annotations

import traceback
import uuid
from datetime import date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from include.dunning import extraction as ex
from include.sources import generate as gen

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:Dialect sqlite\\+pysqlite does \\*not\\* support Decimal"),
]

AS_OF = date(2026, 11, 22)
AS_OF_TS = datetime(2026, 11, 22, 8, 0, 0)  # later than every generated change
OVERDUE_SQL = (Path(gen.SQL_ROOT) / "levy" / "overdue_liabilities.sql").read_text(encoding="utf-8")
DTYPES = {
    "liability_id": "int64",
    "taxpayer_id": "string",
    "taxpayer_name": "string",
    "taxpayer_type": "string",
    "taxpayer_status": "string",
    "tax_type": "string",
    "period": "string",
    "principal": "decimal(14,2)",
    "paid": "decimal(14,2)",
    "outstanding": "decimal(14,2)",
    "deadline": "date",
    "mobile": "string",
    "contact_role": "string",
}
SECRET = "Sekr3t-pw%41"  # contains a character that URL-quoting changes
INCREMENTAL_SQL = """
SELECT taxpayer_id, name, updated_at
FROM taxpayer
WHERE (:since IS NULL OR updated_at > :since)
ORDER BY taxpayer_id
"""


@pytest.fixture(scope="module")
def engines(pg_url: str, mariadb_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, sa.Engine]:
    """The levy demo data (500 taxpayers, same seed) on the three engines."""
    sqlite_path = tmp_path_factory.mktemp("extract") / "levy.db"
    out = {
        "postgresql": sa.create_engine(pg_url),
        "mariadb": sa.create_engine(mariadb_url),
        "sqlite": sa.create_engine(f"sqlite:///{sqlite_path}"),
    }
    for engine in out.values():
        gen.generate_levy(engine, taxpayers=500, as_of=AS_OF)
    yield out
    for engine in out.values():
        engine.dispose()


def _extract(engine: sa.Engine, path: Path, sql: str = OVERDUE_SQL, **kwargs: object) -> ex.ExtractResult:
    params = kwargs.pop("params", {"as_of": AS_OF})
    return ex.extract_to_parquet(
        engine, sql, params, path, chunk_rows=kwargs.pop("chunk_rows", 700), **kwargs
    )


@pytest.fixture(scope="module")
def pinned(engines: dict[str, sa.Engine], tmp_path_factory: pytest.TempPathFactory) -> dict[str, pa.DataType]:
    """Column types for every engine: DTYPES, and PostgreSQL's own types for any other column."""
    path = tmp_path_factory.mktemp("pinned") / "pg.parquet"
    _extract(engines["postgresql"], path)
    return {f.name: ex.arrow_type(DTYPES.get(f.name, f.type)) for f in pq.read_schema(path)}


def test_same_parquet_on_all_engines(
    engines: dict[str, sa.Engine], pinned: dict[str, pa.DataType], tmp_path: Path
) -> None:
    tables = {}
    for name, engine in engines.items():
        result = _extract(engine, tmp_path / f"{name}.parquet", dtypes=pinned)
        table = pq.read_table(tmp_path / f"{name}.parquet")
        assert result.rows == table.num_rows > 100
        if name != "postgresql":  # COPY is read in 4 MiB blocks: one row group here
            assert pq.ParquetFile(tmp_path / f"{name}.parquet").metadata.num_row_groups >= 2  # chunked
        tables[name] = table
    reference = tables["sqlite"]
    assert reference.schema.field("principal").type == pa.decimal128(14, 2)
    assert reference.schema.field("deadline").type == pa.date32()
    expected = sorted(reference.to_pylist(), key=lambda r: r["liability_id"])
    for name, table in tables.items():
        assert table.schema == reference.schema, name
        assert sorted(table.to_pylist(), key=lambda r: r["liability_id"]) == expected, name


@pytest.mark.parametrize("name", ["postgresql", "mariadb"])
def test_types_come_from_the_source_without_dtypes(
    engines: dict[str, sa.Engine], name: str, tmp_path: Path
) -> None:
    _extract(engines[name], tmp_path / "x.parquet")
    schema = pq.read_schema(tmp_path / "x.parquet")
    assert schema.field("mobile").type == pa.string()  # phones never become numbers
    assert schema.field("taxpayer_id").type == pa.string()
    assert schema.field("liability_id").type == pa.int64()
    assert schema.field("principal").type == pa.decimal128(14, 2)  # exact, never float
    assert not pa.types.is_floating(schema.field("outstanding").type)
    assert schema.field("deadline").type == pa.date32()


def test_zero_rows_still_write_the_columns(
    engines: dict[str, sa.Engine], pinned: dict[str, pa.DataType], tmp_path: Path
) -> None:
    full = pa.schema(list(pinned.items()))
    for name, engine in engines.items():
        path = tmp_path / f"{name}.parquet"
        result = _extract(engine, path, params={"as_of": date(2000, 1, 1)}, dtypes=pinned)
        assert result.rows == 0
        table = pq.read_table(path)
        assert table.num_rows == 0 and table.schema == full, name
        _extract(engine, path, params={"as_of": date(2000, 1, 1)})  # without dtypes: the columns
        assert pq.read_schema(path).names == list(pinned), name


def _with_password_user(name: str, engine: sa.Engine) -> tuple[sa.Engine, str]:
    """Return an engine on the same database as a user with a password."""
    user = f"dunning_{uuid.uuid4().hex[:8]}"
    database = engine.url.database
    pw = SECRET.replace("%", "%%")  # the drivers interpolate %
    with engine.begin() as conn:
        if name == "postgresql":
            conn.exec_driver_sql(f"CREATE ROLE {user} LOGIN PASSWORD '{pw}'")
            conn.exec_driver_sql(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {user}")
        else:
            conn.exec_driver_sql(f"CREATE USER '{user}'@'%%' IDENTIFIED BY '{pw}'")
            conn.exec_driver_sql(f"CREATE USER '{user}'@'localhost' IDENTIFIED BY '{pw}'")
            conn.exec_driver_sql(f"GRANT SELECT ON {database}.* TO '{user}'@'%%'")
            conn.exec_driver_sql(f"GRANT SELECT ON {database}.* TO '{user}'@'localhost'")
    return sa.create_engine(engine.url.set(username=user, password=SECRET)), user


@pytest.mark.parametrize("name", ["postgresql", "mariadb", "sqlite"])
def test_missing_column_names_table_and_column_without_password(
    engines: dict[str, sa.Engine], name: str, tmp_path: Path
) -> None:
    engine, user = engines[name], None
    if name != "sqlite":
        engine, user = _with_password_user(name, engine)
    broken = OVERDUE_SQL.replace("c.mobile,", "c.mobile_phone,")
    try:
        with pytest.raises(ex.ExtractionError) as info:
            _extract(engine, tmp_path / "x.parquet", sql=broken)
    finally:
        engine.dispose()
        if user:
            with engines[name].begin() as conn:
                if name == "postgresql":
                    conn.exec_driver_sql(f"DROP OWNED BY {user}")
                    conn.exec_driver_sql(f"DROP ROLE {user}")
                else:
                    conn.exec_driver_sql(f"DROP USER '{user}'@'%%'")
                    conn.exec_driver_sql(f"DROP USER '{user}'@'localhost'")
    message = str(info.value)
    assert "mobile_phone" in message and "taxpayer_contact" in message, message
    assert info.value.permanent
    full = "".join(traceback.format_exception(info.value))
    assert SECRET not in full and "Sekr3t" not in full


def test_missing_table_is_named(engines: dict[str, sa.Engine], tmp_path: Path) -> None:
    for name, engine in engines.items():
        with pytest.raises(ex.ExtractionError, match="taxpayer_archive"):
            _extract(
                engine, tmp_path / "x.parquet", sql="SELECT taxpayer_id FROM taxpayer_archive", params={}
            )
        assert name


@pytest.mark.parametrize("name", ["postgresql", "mariadb", "sqlite"])
def test_watermark_picks_up_only_changed_rows(
    engines: dict[str, sa.Engine], name: str, tmp_path: Path
) -> None:
    engine = engines[name]
    store = sa.create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    assert ex.read_watermark(store, name, "taxpayers") is None
    first = _extract(
        engine,
        tmp_path / "1.parquet",
        sql=INCREMENTAL_SQL,
        params={"since": None},
        watermark_column="updated_at",
        dtypes={"updated_at": "timestamp"},
    )
    assert first.rows == 500 and first.watermark is not None
    ex.save_watermark(store, name, "taxpayers", first.watermark, at=AS_OF_TS)
    assert ex.read_watermark(store, name, "taxpayers") == first.watermark

    again = _extract(
        engine,
        tmp_path / "2.parquet",
        sql=INCREMENTAL_SQL,
        params={"since": ex.read_watermark(store, name, "taxpayers")},
        watermark_column="updated_at",
        dtypes={"updated_at": "timestamp"},
    )
    assert again.rows == 0 and again.watermark is None

    with engine.begin() as conn:
        ids = [r[0] for r in conn.execute(sa.text("SELECT taxpayer_id FROM taxpayer ORDER BY taxpayer_id"))][
            :3
        ]
        for i, tid in enumerate(ids):
            conn.execute(
                sa.text("UPDATE taxpayer SET name = :n, updated_at = :u WHERE taxpayer_id = :t"),
                {"n": f"改名{i}", "u": AS_OF_TS.replace(second=i), "t": tid},
            )
    third = _extract(
        engine,
        tmp_path / "3.parquet",
        sql=INCREMENTAL_SQL,
        params={"since": ex.read_watermark(store, name, "taxpayers")},
        watermark_column="updated_at",
        dtypes={"updated_at": "timestamp"},
    )
    rows = pq.read_table(tmp_path / "3.parquet").to_pylist()
    assert [r["taxpayer_id"] for r in rows] == sorted(ids)
    assert {r["name"] for r in rows} == {"改名0", "改名1", "改名2"}
    assert third.watermark == "2026-11-22 08:00:02.000000"
    ex.save_watermark(store, name, "taxpayers", third.watermark, at=AS_OF_TS)
    assert ex.read_watermark(store, name, "taxpayers") == third.watermark
    store.dispose()
