"""Extraction to Parquet on PostgreSQL, MariaDB and SQLite: same query, same file, every reader.

The Arrow-native readers (ADBC for PostgreSQL and SQLite, ConnectorX for MariaDB) must give
exactly what the driver paths give (COPY csv, DB-API cursor), dirty rows included.
"""

from __future__ import annotations

import io
import logging
import traceback
import uuid
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from include.dunning import extraction as ex
from include.paths import SQL_ROOT
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
        gen.generate_billing(engine, customers=300, as_of=AS_OF)
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
        # the Arrow readers get the password from the connection too (quoted in their URI)
        good = _extract(engine, tmp_path / "ok.parquet")
        assert good.reader == ARROW_READER[name] and good.rows > 100
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


ARROW_READER = {"postgresql": "adbc", "mariadb": "connectorx", "sqlite": "adbc"}
FALLBACK_READERS = {"postgresql": ["copy", "cursor"], "mariadb": ["cursor"], "sqlite": ["cursor"]}


@pytest.mark.parametrize("name", ["postgresql", "mariadb", "sqlite"])
def test_arrow_reader_gives_the_same_file_as_the_driver(
    engines: dict[str, sa.Engine], name: str, tmp_path: Path
) -> None:
    dtypes = ex.load_dtypes(SQL_ROOT / "levy" / "overdue_liabilities.types.yaml")
    fast = _extract(engines[name], tmp_path / "fast.parquet", dtypes=dtypes)
    assert fast.reader == ARROW_READER[name]
    expected = pq.read_table(tmp_path / "fast.parquet")
    assert expected.num_rows == fast.rows > 100
    for reader in FALLBACK_READERS[name]:
        slow = _extract(engines[name], tmp_path / f"{reader}.parquet", dtypes=dtypes, reader=reader)
        assert slow.reader != fast.reader
        assert pq.read_table(tmp_path / f"{reader}.parquet").equals(expected), reader


@pytest.mark.parametrize("name", ["postgresql", "mariadb", "sqlite"])
def test_dirty_rows_come_through_unchanged(engines: dict[str, sa.Engine], name: str, tmp_path: Path) -> None:
    """Bad phones, negative amounts and missing names are kept as they are (validation judges)."""
    engine = engines[name]
    dtypes = ex.load_dtypes(SQL_ROOT / "levy" / "overdue_liabilities.types.yaml")
    _extract(engine, tmp_path / "x.parquet", dtypes=dtypes)
    rows = {r["liability_id"]: r for r in pq.read_table(tmp_path / "x.parquet").to_pylist()}
    with engine.connect() as conn:
        source = dict(
            conn.execute(
                sa.text(
                    "SELECT l.liability_id, c.mobile FROM tax_liability l "
                    "JOIN taxpayer_contact c ON c.taxpayer_id = l.taxpayer_id AND c.is_primary = 1"
                )
            ).all()
        )
    assert any(r["outstanding"] < 0 for r in rows.values())  # negative amounts kept
    assert any(not r["taxpayer_name"] for r in rows.values())  # missing names kept
    mobiles = [r["mobile"] for r in rows.values() if r["mobile"]]
    assert any(not m.isdigit() for m in mobiles)  # '+86 ...', hyphens, full-width digits as entered
    assert all(isinstance(m, str) for m in mobiles)
    assert {m for m in mobiles} <= {str(m) for m in source.values() if m is not None}
    assert all(isinstance(r["principal"], Decimal) for r in rows.values())


@pytest.mark.parametrize(
    ("query", "types", "window"),
    [
        ("levy/overdue_liabilities.sql", "levy/overdue_liabilities.types.yaml", None),
        ("levy/filing_status.sql", "levy/filing_status.types.yaml", (-200, 21)),
        pytest.param(
            "billing/dunning_items.sql",
            "billing/dunning_items.types.yaml",
            None,
        ),
    ],
)
def test_pinned_types_give_one_schema_on_every_engine(
    engines: dict[str, sa.Engine], query: str, types: str, window: tuple[int, int] | None, tmp_path: Path
) -> None:
    sql = (SQL_ROOT / query).read_text(encoding="utf-8")
    dtypes = ex.load_dtypes(SQL_ROOT / types)
    params: dict[str, object] = {"as_of": AS_OF, "balance_alert_below": 50}
    if window:
        params |= {
            "window_start": AS_OF + timedelta(days=window[0]),
            "window_end": AS_OF + timedelta(days=window[1]),
        }
    schemas, counts = {}, {}
    for name, engine in engines.items():
        result = _extract(engine, tmp_path / f"{name}.parquet", sql=sql, params=params, dtypes=dtypes)
        schemas[name] = pq.read_schema(tmp_path / f"{name}.parquet").remove_metadata()
        counts[name] = result.rows
    assert schemas["postgresql"] == schemas["mariadb"] == schemas["sqlite"], schemas
    assert counts["postgresql"] == counts["mariadb"] == counts["sqlite"] > 0
    assert set(dtypes) <= set(schemas["sqlite"].names), "a pinned column the query no longer has"


def test_unsupported_types_fall_back_and_say_so(
    engines: dict[str, sa.Engine], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="include.dunning.extraction")
    pg = _extract(
        engines["postgresql"],
        tmp_path / "pg.parquet",
        sql="SELECT taxpayer_id, interval '1 day' AS grace FROM taxpayer ORDER BY taxpayer_id",
        params={},
    )
    assert pg.reader == "copy-csv" and pg.rows == 500
    assert pq.read_table(tmp_path / "pg.parquet").column("grace")[0].as_py() == "P1D"
    my = _extract(
        engines["mariadb"],
        tmp_path / "my.parquet",
        sql="SELECT taxpayer_id, NULL AS nothing FROM taxpayer",
        params={},
    )
    assert my.reader == "cursor" and my.rows == 500
    messages = [r.getMessage() for r in caplog.records]
    assert any("grace" in m and "falling back to the copy-csv reader" in m for m in messages), messages
    assert any("nothing" in m and "falling back to the cursor reader" in m for m in messages), messages
    with pytest.raises(ex.ExtractionError, match="grace"):
        _extract(
            engines["postgresql"],
            tmp_path / "x.parquet",
            sql="SELECT interval '1 day' AS grace",
            params={},
            reader="arrow",
        )


@pytest.mark.parametrize("sink_kind", ["path", "file"])
def test_sqlite_type_change_mid_result_restarts_on_the_cursor(
    tmp_path: Path, sink_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """ADBC fixes a column's type from the first batch; SQLite may change it later."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'mixed.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, amount NUMERIC(14, 2), note TEXT)")
        conn.exec_driver_sql(
            "INSERT INTO t (id, amount, note) VALUES (1, 12, 'a'), (2, 13, 'b'), (3, 12.5, 'c'), (4, 7.25, NULL)"
        )
    caplog.set_level(logging.WARNING, logger="include.dunning.extraction")
    path = tmp_path / "out.parquet"
    sql = "SELECT id, amount, note FROM t ORDER BY id"
    dtypes = {"amount": "float64"}
    if sink_kind == "path":
        result = ex.extract_to_parquet(engine, sql, {}, path, chunk_rows=2, dtypes=dtypes)
    else:
        sink = io.BytesIO()
        result = ex.extract_to_parquet(engine, sql, {}, sink, chunk_rows=2, dtypes=dtypes)
        path.write_bytes(sink.getvalue())
    with pytest.raises(ex.ExtractionError, match=r"column amount .*12\.5 is not a whole number"):
        ex.extract_to_parquet(engine, sql, {}, tmp_path / "unpinned.parquet", chunk_rows=2)  # never truncated
    engine.dispose()
    assert result.reader == "cursor" and result.rows == 4
    table = pq.read_table(path)
    assert table.column("amount").to_pylist() == [12.0, 13.0, 12.5, 7.25]
    assert table.column("note").to_pylist() == ["a", "b", "c", None]
    assert any("falling back to the cursor reader" in r.getMessage() for r in caplog.records)


OVERLAP_SQL = """
SELECT taxpayer_id, name, updated_at
FROM taxpayer
WHERE (:since IS NULL OR updated_at > :since)
"""


@pytest.mark.parametrize("name", ["postgresql", "mariadb", "sqlite"])
def test_lookback_catches_late_commits_without_duplicates(
    engines: dict[str, sa.Engine], name: str, tmp_path: Path
) -> None:
    """A row committed after the last run with an older timestamp is extracted once, not lost."""
    engine = engines[name]
    store = sa.create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    lookback = timedelta(minutes=10)
    dtypes = {"updated_at": "timestamp"}

    def run(n: int, *, look: timedelta | None = lookback) -> tuple[ex.ExtractResult, list[dict]]:
        state = ex.read_watermark_state(store, name, "taxpayers")
        overlap = ex.Overlap(["taxpayer_id"], look, state) if look else None
        result = _extract(
            engine,
            tmp_path / f"{n}.parquet",
            sql=OVERLAP_SQL,
            params={"since": ex.since_with_lookback(state.watermark, look)},
            watermark_column="updated_at",
            dtypes=dtypes,
            overlap=overlap,
        )
        if result.watermark is not None:
            ex.save_watermark_state(store, name, "taxpayers", result.watermark, result.seen, at=AS_OF_TS)
        return result, pq.read_table(tmp_path / f"{n}.parquet").to_pylist()

    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE taxpayer SET updated_at = :u"), {"u": datetime(2026, 11, 1, 8, 0)})
        ids = [r[0] for r in conn.execute(sa.text("SELECT taxpayer_id FROM taxpayer ORDER BY taxpayer_id"))]
        conn.execute(
            sa.text("UPDATE taxpayer SET updated_at = :u WHERE taxpayer_id = :t"),
            [{"u": datetime(2026, 11, 22, 9, 0, i), "t": t} for i, t in enumerate(ids[:3])],
        )
    first, rows = run(1)
    assert first.rows == 500 and first.watermark == "2026-11-22 09:00:02.000000"
    assert {k for k, _ in first.seen} == set(ids[:3])  # the versions inside the window

    again, rows = run(2)  # the window is re-read, nothing is delivered twice
    assert again.rows == 0 and again.skipped == 3 and rows == []

    with engine.begin() as conn:  # a late commit stamped before the watermark, and a fresh change
        conn.execute(
            sa.text("UPDATE taxpayer SET name = :n, updated_at = :u WHERE taxpayer_id = :t"),
            [
                {"n": "迟到", "u": datetime(2026, 11, 22, 8, 55), "t": ids[10]},
                {"n": "又改", "u": datetime(2026, 11, 22, 9, 5), "t": ids[1]},
            ],
        )
    third, rows = run(3)
    assert sorted(r["taxpayer_id"] for r in rows) == sorted([ids[10], ids[1]])
    assert {r["name"] for r in rows} == {"迟到", "又改"}
    assert third.skipped == 2 and third.watermark == "2026-11-22 09:05:00.000000"
    assert ex.read_watermark_state(store, name, "taxpayers").seen == third.seen
    assert {k for k, _ in third.seen} == {ids[0], ids[1], ids[2], ids[10]}

    with engine.begin() as conn:  # without a lookback the same kind of late commit is lost
        conn.execute(
            sa.text("UPDATE taxpayer SET name = :n, updated_at = :u WHERE taxpayer_id = :t"),
            {"n": "又迟到", "u": datetime(2026, 11, 22, 9, 1), "t": ids[11]},
        )
    strict, rows = run(4, look=None)
    assert strict.rows == 0 and rows == []
    store.dispose()
