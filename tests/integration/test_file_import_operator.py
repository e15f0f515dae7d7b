"""ContactFileImportOperator end to end: Parquet in staging, rejected rows in a real store."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import openpyxl
import pandas as pd
import pytest
import sqlalchemy as sa

pytestmark = pytest.mark.integration

LIST = "三月欠费名单"
GOOD_CSV = (
    "姓名,手机号码,户号,欠费金额,备注\n"
    "张三,+86 138-0013-8000,1000000001,120.50,\n"
    "李四,12345,1000000002,10,号码错\n"
    "张三,0086 13800138000,1000000001,120.50,重复\n"
    "王五,13900139000,10000A0003,abc,户号和金额都错\n"
    "赵六,１３７００１３７０００,1000000004,0.01,\n"
)


class FakeTI:
    dag_id = "contact_import"

    def xcom_push(self, key, value):
        pass


def _conn_json(url: str) -> str:
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return json.dumps({"conn_type": "sqlite", "host": parsed.database})
    kind = "postgres" if parsed.get_backend_name() == "postgresql" else "mysql"
    return json.dumps(
        {
            "conn_type": kind,
            "host": parsed.host,
            "port": parsed.port,
            "login": parsed.username,
            "password": parsed.password,
            "schema": parsed.database,
        }
    )


@pytest.fixture(params=["sqlite", "postgres", "mariadb"])
def store_url(request, tmp_path, monkeypatch):
    """Point the dunning_store connection at SQLite, PostgreSQL or MariaDB, and staging at tmp_path."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    elif request.param == "postgres":
        url = request.getfixturevalue("pg_url")
    else:
        url = request.getfixturevalue("mariadb_url")
    monkeypatch.setenv("AIRFLOW_CONN_DUNNING_STORE", _conn_json(url))
    monkeypatch.setenv("DUNNING_STAGING_ROOT", f"file://{tmp_path / 'staging'}")
    return url


@pytest.fixture
def run_id(tmp_path):
    # The PostgreSQL and MariaDB databases live for the module: keep each test's rows apart.
    return f"manual__{tmp_path.name}"


def run_import(source, run_id, list_name=LIST, **kwargs):
    from operators.file_import import ContactFileImportOperator

    op = ContactFileImportOperator(
        task_id="import_list", source_path=str(source), list_name=list_name, **kwargs
    )
    return op.execute({"run_id": run_id, "ti": FakeTI(), "params": {}})


def rejected_rows(url, run_id, list_name=LIST):
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("import_rejected"):
                return []
            return [
                tuple(r)
                for r in conn.execute(
                    sa.text(
                        "SELECT file_name, row_no, field, bad_value, reason FROM import_rejected "
                        "WHERE run_id = :run_id AND list_name = :list_name ORDER BY row_no, field"
                    ),
                    {"run_id": run_id, "list_name": list_name},
                )
            ]
    finally:
        engine.dispose()


def staged(tmp_path, run_id) -> Path:
    return tmp_path / "staging" / FakeTI.dag_id / run_id / "imports"


def test_import_writes_parquet_and_rejected_rows(tmp_path, store_url, run_id):
    source = tmp_path / "名单.csv"
    source.write_bytes(GOOD_CSV.encode("gbk"))

    result = run_import(source, run_id)

    target = staged(tmp_path, run_id) / f"{LIST}.parquet"
    assert result == {
        "path": f"file://{target}",
        "accepted": 2,
        "rejected": 2,
        "duplicates_merged": 1,
        "encoding": "gbk",
    }
    frame = pd.read_parquet(target)
    assert frame["phone"].tolist() == ["13800138000", "13700137000"]
    assert frame["name"].tolist() == ["张三", "赵六"]
    assert frame["amount"].tolist() == [Decimal("120.50"), Decimal("0.01")]
    assert [list(rows) for rows in frame["source_rows"]] == [[2, 4], [6]]
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]  # no partial left
    assert rejected_rows(store_url, run_id) == [
        ("名单.csv", 3, "phone", "****", "not 11 digits after normalisation"),
        ("名单.csv", 5, "amount", "abc", "not a plain decimal amount"),
        ("名单.csv", 5, "debtor_id", "10000A0003", "account number (户号): non-digit character"),
    ]


def test_rerun_of_the_same_run_loads_nothing_twice(tmp_path, store_url, run_id):
    source = tmp_path / "名单.csv"
    source.write_text(GOOD_CSV, encoding="utf-8")
    first = run_import(source, run_id)
    before = rejected_rows(store_url, run_id)
    second = run_import(source, run_id)
    assert second == first
    assert rejected_rows(store_url, run_id) == before
    assert len(pd.read_parquet(second["path"].removeprefix("file://"))) == 2


def test_bad_file_fails_and_writes_nothing(tmp_path, store_url, run_id):
    from airflow.sdk.exceptions import AirflowFailException

    source = tmp_path / "名单.csv"
    source.write_text("姓名,欠费金额\n张三,10\n", encoding="utf-8")
    with pytest.raises(AirflowFailException) as err:
        run_import(source, run_id)
    message = str(err.value)
    assert message.startswith("名单.csv: no column for phone")
    assert "\n" not in message
    assert not staged(tmp_path, run_id).exists() or not any(staged(tmp_path, run_id).iterdir())
    assert rejected_rows(store_url, run_id) == []


def test_corrupt_workbook_fails_after_a_good_run_without_touching_it(tmp_path, store_url, run_id):
    from airflow.sdk.exceptions import AirflowFailException

    good = tmp_path / "good.csv"
    good.write_text(GOOD_CSV, encoding="utf-8")
    run_import(good, run_id, list_name="good")
    bad = tmp_path / "坏.xlsx"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(AirflowFailException, match=r"^坏\.xlsx: corrupt or unreadable \.xlsx"):
        run_import(bad, run_id, list_name="bad")
    assert sorted(p.name for p in staged(tmp_path, run_id).iterdir()) == ["good.parquet"]
    assert rejected_rows(store_url, run_id, "bad") == []
    assert len(rejected_rows(store_url, run_id, "good")) == 3


def test_workbook_from_remote_storage_with_mapping(tmp_path, store_url, run_id):
    import fsspec

    book = openpyxl.Workbook()
    book.active.append(["客户", "联系方式", "纳税人识别号"])
    book.active.append(["某公司", 13800138000, "91350100M000100Y4A"])  # check character fails: review
    book.active.append(["某人", 13900139000, "11010519491231002X"])
    local = tmp_path / "upload.xlsx"
    book.save(local)
    remote = f"memory://imports/{run_id}/客户.xlsx"  # a remote store, as far as the operator knows
    with fsspec.open(remote, "wb") as fh:
        fh.write(local.read_bytes())

    result = run_import(remote, run_id, list_name="客户", mapping={"phone": ["联系方式"], "name": ["客户"]})

    assert result["accepted"] == 2 and result["encoding"] is None
    frame = pd.read_parquet(result["path"].removeprefix("file://"))
    assert frame["debtor_id_review"].tolist() == [True, False]
    assert frame["name"].tolist() == ["某公司", "某人"]
