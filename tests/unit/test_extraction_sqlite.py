"""Extraction without servers: watermark arithmetic, pinned types, overlap checks, on real SQLite."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from include.dunning import extraction as ex
from include.paths import SQL_ROOT

pytestmark = pytest.mark.filterwarnings("ignore:Dialect sqlite\\+pysqlite does \\*not\\* support Decimal")


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    """A SQLite file with a small change-tracked table."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'src.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE account (account_no VARCHAR(20) PRIMARY KEY, mobile VARCHAR(20), "
            "balance NUMERIC(14, 2), updated_at TIMESTAMP, seq INTEGER)"
        )
        conn.execute(
            sa.text("INSERT INTO account VALUES (:a, :m, :b, :u, :s)"),
            [
                {
                    "a": f"0{i:09d}",
                    "m": "013800138000" if i % 2 else "+86 138-0013-8000",
                    "b": i * 1.25,
                    "u": f"2026-11-22 08:{i:02d}:00",
                    "s": i,
                }
                for i in range(40)
            ],  # fmt: skip
        )
    yield engine
    engine.dispose()


def test_since_with_lookback() -> None:
    assert ex.since_with_lookback(None, timedelta(minutes=5)) is None
    assert ex.since_with_lookback("2026-11-22 08:00:00.000000", None) == "2026-11-22 08:00:00.000000"
    assert (
        ex.since_with_lookback("2026-11-22 08:00:00.000000", timedelta(minutes=5))
        == "2026-11-22 07:55:00.000000"
    )
    assert ex.since_with_lookback("2026-11-22 08:00:00.000000", 90) == "2026-11-22 07:58:30.000000"
    assert ex.since_with_lookback("2026-11-22", timedelta(days=2)) == "2026-11-20"
    assert ex.since_with_lookback("1000", 50) == "950"
    with pytest.raises(ValueError, match="number"):
        ex.since_with_lookback("1000", timedelta(seconds=5))
    with pytest.raises(ValueError, match="unreadable"):
        ex.since_with_lookback("yesterday", timedelta(seconds=5))


def test_shipped_type_files_load() -> None:
    for path in SQL_ROOT.rglob("*.types.yaml"):
        types = ex.load_dtypes(path)
        assert types and all(ex.arrow_type(t) for t in types.values())
        assert path.with_name(path.name.replace(".types.yaml", ".sql")).exists(), path
    assert ex.load_dtypes(SQL_ROOT / "levy" / "overdue_liabilities.types.yaml")["mobile"] == "string"


def test_bad_type_file_names_file_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "x.types.yaml"
    bad.write_text("mobile: string\nbalance: money\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"x\.types\.yaml: column balance: unknown type 'money'"):
        ex.load_dtypes(bad)
    bad.write_text("- just a list\n", encoding="utf-8")
    with pytest.raises(ValueError, match="expected a mapping"):
        ex.load_dtypes(bad)


def test_pinned_types_on_sqlite(engine: sa.Engine, tmp_path: Path) -> None:
    out = tmp_path / "a.parquet"
    result = ex.extract_to_parquet(
        engine,
        "SELECT account_no, mobile, balance, updated_at FROM account ORDER BY account_no",
        {},
        out,
        chunk_rows=16,
        dtypes={"balance": "decimal(14,2)", "updated_at": "timestamp"},
    )
    assert result.reader == "adbc" and result.rows == 40
    table = pq.read_table(out)
    assert table.schema.field("account_no").type == pa.string()
    assert table.schema.field("balance").type == pa.decimal128(14, 2)
    assert table.column("account_no")[1].as_py() == "0000000001"  # leading zeros kept
    assert table.column("mobile")[0].as_py() == "+86 138-0013-8000"
    assert str(table.column("balance")[3].as_py()) == "3.75"
    assert table.column("updated_at")[2].as_py() == datetime(2026, 11, 22, 8, 2)
    assert pq.ParquetFile(out).metadata.num_row_groups >= 2


def test_bound_parameters_on_the_arrow_reader(engine: sa.Engine, tmp_path: Path) -> None:
    sql = "SELECT account_no FROM account WHERE (:since IS NULL OR updated_at > :since) AND seq < :top"
    none = ex.extract_to_parquet(engine, sql, {"since": None, "top": 5}, tmp_path / "a.parquet")
    assert none.rows == 5
    some = ex.extract_to_parquet(
        engine, sql, {"since": datetime(2026, 11, 22, 8, 2), "top": 5}, tmp_path / "b.parquet"
    )
    assert some.reader == "adbc" and some.rows == 2


def test_zero_rows_write_the_columns(engine: sa.Engine, tmp_path: Path) -> None:
    out = tmp_path / "z.parquet"
    result = ex.extract_to_parquet(
        engine,
        "SELECT account_no, balance FROM account WHERE seq < 0",
        {},
        out,
        dtypes={"balance": "decimal(14,2)"},
    )
    assert result.rows == 0
    assert pq.read_schema(out).field("balance").type == pa.decimal128(14, 2)


def test_overlap_needs_a_typed_watermark_and_its_key(engine: sa.Engine, tmp_path: Path) -> None:
    sql = "SELECT account_no, updated_at, seq FROM account"
    with pytest.raises(ex.ExtractionError, match="pin its type"):
        ex.extract_to_parquet(
            engine, sql, {}, tmp_path / "a.parquet", watermark_column="updated_at",
            overlap=ex.Overlap(["account_no"], timedelta(minutes=5)),
        )  # fmt: skip
    with pytest.raises(ex.ExtractionError, match="overlap key column"):
        ex.extract_to_parquet(
            engine, sql, {}, tmp_path / "b.parquet", watermark_column="seq",
            overlap=ex.Overlap(["account_id"], 5),
        )  # fmt: skip


def test_integer_watermark_overlap(engine: sa.Engine, tmp_path: Path) -> None:
    sql = "SELECT account_no, seq FROM account WHERE (:since IS NULL OR seq > :since)"
    first = ex.extract_to_parquet(
        engine, sql, {"since": None}, tmp_path / "1.parquet", watermark_column="seq",
        overlap=ex.Overlap(["account_no"], 3),
    )  # fmt: skip
    assert first.watermark == "39" and {c for _, c in first.seen} == {"36", "37", "38", "39"}
    state = ex.WatermarkState(first.watermark, first.seen)
    since = ex.since_with_lookback(state.watermark, 3)
    again = ex.extract_to_parquet(
        engine, sql, {"since": since}, tmp_path / "2.parquet", watermark_column="seq",
        overlap=ex.Overlap(["account_no"], 3, state),
    )  # fmt: skip
    assert since == "36" and again.rows == 0 and again.skipped == 3  # 37, 38, 39 seen


def test_watermark_state_round_trip(tmp_path: Path) -> None:
    store = sa.create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    assert ex.read_watermark_state(store, "src", "ds") == ex.WatermarkState(None, frozenset())
    seen = frozenset({("a", "2026-11-22 08:00:00.000000"), ("b", "2026-11-22 08:01:00.000000")})
    ex.save_watermark_state(store, "src", "ds", "2026-11-22 08:01:00.000000", seen, at=datetime(2026, 11, 22))
    ex.save_watermark_state(store, "src", "other", "5", frozenset({("x", "5")}), at=datetime(2026, 11, 22))
    assert ex.read_watermark_state(store, "src", "ds") == ex.WatermarkState(
        "2026-11-22 08:01:00.000000", seen
    )
    ex.save_watermark_state(
        store, "src", "ds", "2026-11-22 09:00:00.000000", frozenset(), at=datetime(2026, 11, 22)
    )
    assert ex.read_watermark_state(store, "src", "ds").seen == frozenset()
    assert ex.read_watermark(store, "src", "other") == "5"
    store.dispose()


def test_scrub_hides_passwords_in_any_url() -> None:
    message = "cx error connecting to mysql://reader:Sekr3t%41@db.example:3306/levy"
    assert "Sekr3t" not in ex._scrub(message, [])
    assert ex._scrub("password Sekr3t-pw rejected", ["Sekr3t-pw"]) == "password *** rejected"


def test_writer_error_is_raised_not_hung(engine: sa.Engine, tmp_path: Path) -> None:
    with pytest.raises((OSError, ex.ExtractionError)):
        ex.extract_to_parquet(engine, "SELECT * FROM account", {}, tmp_path / "missing" / "dir" / "x.parquet")


def test_a_value_that_does_not_fit_is_named_without_the_full_phone(tmp_path: Path) -> None:
    """Arrow quotes the offending value; a phone number in it is masked like every log line."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'phones.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE c (id INTEGER PRIMARY KEY, mobile TEXT)")
        conn.exec_driver_sql("INSERT INTO c (id, mobile) VALUES (1, '13800138000'), (2, '+86 139-0013-9000')")
    with pytest.raises(ex.ExtractionError) as caught:
        ex.extract_to_parquet(
            engine,
            "SELECT id, mobile FROM c ORDER BY id",
            {},
            tmp_path / "out.parquet",
            dtypes={"mobile": "int64"},
        )
    engine.dispose()
    message = str(caught.value)
    assert "mobile" in message or "fit" in message
    assert "13800138000" not in message and "0013-9000" not in message and "00139000" not in message
    assert not (tmp_path / "out.parquet").exists()
