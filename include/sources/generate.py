"""Generate deterministic synthetic data for the demo levy, billing and recharge systems.

The same seed gives the same rows on any engine and for any ``chunk_rows``: every random
draw comes from a ``random.Random`` seeded with a string derived from the seed and the
system name, rows are built one unit (taxpayer, customer, card) at a time, and chunks are
only flushed between units. Rows are tuples in the column order of ``COLUMNS``; a
``RowSink`` writes each chunk in one transaction (executemany through SQLAlchemy Core
today; a PostgreSQL COPY sink can be slotted in by ``make_sink`` later).

Dirty rows: each taxpayer, contact, liability and customer is dirty with probability
``dirty_share``, with one defect each (bad phone, bad check character, missing name,
negative principal, bad account length); on top of that about ``dirty_share / 3`` of
taxpayers get one exact duplicate contact row (a new ``contact_id``, every other column equal)
and ``dirty_share`` of used recharge cards are used twice.

Command line::

    python -m include.sources.generate --system levy --url sqlite:///.demo/levy.db \\
        --rows 2000 --as-of 2026-11-22
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import random
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from stdnum.cn import ric as stdnum_ric
from stdnum.cn import uscc as stdnum_uscc

__all__ = [
    "COLUMNS",
    "DEFAULT_SEED",
    "SYSTEMS",
    "CoreSink",
    "PgCopySink",
    "RowSink",
    "billing_accounts",
    "create_schema",
    "generate",
    "generate_billing",
    "generate_debtor_table",
    "debtor_blocks",
    "debtor_table_ddl",
    "DEBTOR_COLUMNS",
    "generate_levy",
    "generate_recharge",
    "main",
    "make_sink",
    "schema_path",
    "split_statements",
]

log = logging.getLogger(__name__)

DEFAULT_SEED = 20261122
SYSTEMS = ("levy", "billing", "recharge")
SQL_ROOT = Path(__file__).resolve().parent.parent / "sql"

#: Column order of the generated tuples, per system and table (tables in insertion order).
COLUMNS: dict[str, dict[str, tuple[str, ...]]] = {
    "levy": {
        "taxpayer": (
            "taxpayer_id",
            "name",
            "tax_office",
            "taxpayer_type",
            "status",
            "registered_on",
            "updated_at",
        ),
        "taxpayer_contact": (
            "contact_id",
            "taxpayer_id",
            "role",
            "person_name",
            "mobile",
            "is_primary",
            "updated_at",
        ),
        "filing_obligation": (
            "obligation_id",
            "taxpayer_id",
            "tax_type",
            "period",
            "deadline",
            "filed_on",
            "updated_at",
        ),
        "tax_liability": (
            "liability_id",
            "taxpayer_id",
            "tax_type",
            "period",
            "principal",
            "deadline",
            "updated_at",
        ),
        "tax_payment": ("payment_id", "liability_id", "amount", "paid_on", "updated_at"),
        "deferral": ("deferral_id", "liability_id", "approved", "new_deadline", "decided_on"),
        "tax_promise": ("promise_id", "taxpayer_id", "promised_on", "amount", "recorded_on"),
    },
    "billing": {
        "customer": (
            "account_no",
            "name",
            "customer_class",
            "billing_mode",
            "area",
            "mobile",
            "updated_at",
        ),
        "bill": ("bill_id", "account_no", "period", "amount", "due_date", "updated_at"),
        "bill_payment": ("payment_id", "bill_id", "amount", "paid_on", "channel", "updated_at"),
        "prepaid_balance": ("account_no", "balance", "as_of"),
        "payment_demand": ("demand_id", "account_no", "bill_id", "demanded_on", "method", "logged_by"),
        "bill_promise": ("promise_id", "account_no", "promised_on", "amount", "recorded_on"),
        "account_topup": ("topup_id", "account_no", "amount", "topped_up_at", "source", "serial"),
    },
    "recharge": {
        "card": ("serial", "face_value", "batch", "made_on"),
        "card_event": ("event_id", "serial", "event", "at", "place"),
        "recharge": ("recharge_id", "serial", "account_no", "amount", "recharged_at"),
    },
}

# --------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------


def schema_path(system: str) -> Path:
    """Return the path of the portable DDL file of a demo source system."""
    if system not in SYSTEMS:
        raise ValueError(f"unknown system {system!r}; expected one of {', '.join(SYSTEMS)}")
    return SQL_ROOT / system / "schema.sql"


def split_statements(sql: str) -> list[str]:
    """Split a DDL script into statements, dropping ``--`` comments and blank statements."""
    lines = [line.split("--", 1)[0].rstrip() for line in sql.splitlines()]
    text = "\n".join(line for line in lines if line.strip())
    return [stmt.strip() for stmt in text.split(";") if stmt.strip()]


def create_schema(engine: sa.Engine, system: str) -> int:
    """Create the tables of a demo source system if absent; return the statements run."""
    statements = split_statements(schema_path(system).read_text(encoding="utf-8"))
    with engine.begin() as conn:
        for stmt in statements:
            conn.exec_driver_sql(stmt)
    log.info("%s: schema ready on %s (%d statements)", system, engine.dialect.name, len(statements))
    return len(statements)


# --------------------------------------------------------------------------------------
# Sinks
# --------------------------------------------------------------------------------------


class RowSink(Protocol):
    """Write one chunk of rows (table -> tuples in ``COLUMNS`` order) in one transaction."""

    def write(self, chunk: Mapping[str, Sequence[tuple]]) -> None: ...


class CoreSink:
    """Insert chunks with executemany through SQLAlchemy Core, one transaction per chunk.

    Tables are reflected so that each engine's own type processing applies (Decimal and
    dates on SQLite, for instance).
    """

    def __init__(self, engine: sa.Engine, columns: Mapping[str, Sequence[str]]) -> None:
        self.engine = engine
        self.columns = {name: tuple(cols) for name, cols in columns.items()}
        metadata = sa.MetaData()
        self.tables = {name: sa.Table(name, metadata, autoload_with=engine) for name in self.columns}

    def write(self, chunk: Mapping[str, Sequence[tuple]]) -> None:
        """Insert every table's rows of the chunk in one transaction."""
        with self.engine.begin() as conn:
            for name, rows in chunk.items():
                if not rows:
                    continue
                cols = self.columns[name]
                conn.execute(
                    sa.insert(self.tables[name]), [dict(zip(cols, row, strict=True)) for row in rows]
                )


class PgCopySink:
    """Write chunks with PostgreSQL ``COPY ... FROM STDIN`` (psycopg 3), one transaction per chunk.

    About ten times faster than executemany. psycopg's text dumpers render the values (Decimal,
    date, datetime, None), so the stored rows are the same as through ``CoreSink``.
    """

    def __init__(self, engine: sa.Engine, columns: Mapping[str, Sequence[str]]) -> None:
        if engine.dialect.name != "postgresql" or engine.dialect.driver != "psycopg":
            raise ValueError("PgCopySink needs a postgresql+psycopg engine")
        self.engine = engine
        self.columns = {name: tuple(cols) for name, cols in columns.items()}

    def write(self, chunk: Mapping[str, Sequence[tuple]]) -> None:
        """Copy every table's rows of the chunk in one transaction."""
        with self.engine.begin() as conn:
            raw = conn.connection.dbapi_connection
            with raw.cursor() as cur:
                for name, rows in chunk.items():
                    if not rows:
                        continue
                    cols = ", ".join(self.columns[name])
                    with cur.copy(f"COPY {name} ({cols}) FROM STDIN") as copy:
                        write_row = copy.write_row
                        for row in rows:
                            write_row(row)


def make_sink(engine: sa.Engine, system: str) -> RowSink:
    """Return the fastest sink for an engine: COPY on PostgreSQL (psycopg 3), else executemany."""
    if engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg":
        return PgCopySink(engine, COLUMNS[system])
    return CoreSink(engine, COLUMNS[system])


class _Chunker:
    """Buffer rows per table and flush them to a sink every ``chunk_rows`` rows."""

    def __init__(self, sink: RowSink, system: str, chunk_rows: int, total_units: int, unit: str) -> None:
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be at least 1")
        self.sink = sink
        self.system = system
        self.chunk_rows = chunk_rows
        self.total_units = total_units
        self.unit = unit
        self.buffers: dict[str, list[tuple]] = {name: [] for name in COLUMNS[system]}
        self.counts: dict[str, int] = dict.fromkeys(COLUMNS[system], 0)
        self.started = time.perf_counter()

    def pending(self) -> int:
        """Return the number of buffered rows."""
        return sum(len(rows) for rows in self.buffers.values())

    def maybe_flush(self, units_done: int) -> None:
        """Flush when the buffers hold at least ``chunk_rows`` rows."""
        if self.pending() >= self.chunk_rows:
            self.flush(units_done)

    def flush(self, units_done: int) -> None:
        """Write the buffered rows and log progress."""
        if self.pending():
            self.sink.write(self.buffers)
            for name, rows in self.buffers.items():
                self.counts[name] += len(rows)
                rows.clear()
        written = sum(self.counts.values())
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        log.info(
            "%s: %d/%d %s done, %d rows written (%.0f rows/s)",
            self.system,
            units_done,
            self.total_units,
            self.unit,
            written,
            written / elapsed,
        )


def _prepare(engine: sa.Engine, system: str, replace: bool, sink: RowSink | None) -> RowSink:
    """Create the schema, empty or check the tables, and return the sink to write with."""
    create_schema(engine, system)
    tables = list(COLUMNS[system])
    with engine.begin() as conn:
        if replace:
            for name in reversed(tables):
                conn.exec_driver_sql(f"DELETE FROM {name}")  # noqa: S608
        else:
            for name in tables:
                if conn.exec_driver_sql(f"SELECT 1 FROM {name} LIMIT 1").first() is not None:  # noqa: S608
                    raise ValueError(
                        f"{system}: table {name} already holds rows; pass replace=True (--replace) "
                        "to regenerate"
                    )
    return sink if sink is not None else make_sink(engine, system)


# --------------------------------------------------------------------------------------
# Reference data: names, places, phones, identifiers
# --------------------------------------------------------------------------------------

# Surnames weighted roughly by their share of the population (per mille, 2020 census order).
_SURNAMES_WEIGHTED = (
    ("王", 71), ("李", 70), ("张", 65), ("刘", 53), ("陈", 46), ("杨", 31), ("黄", 25), ("赵", 20),
    ("吴", 20), ("周", 19), ("徐", 15), ("孙", 14), ("马", 13), ("朱", 13), ("胡", 12), ("郭", 12),
    ("何", 11), ("林", 11), ("罗", 10), ("高", 10), ("郑", 9), ("梁", 9), ("谢", 8), ("宋", 8),
    ("唐", 8), ("许", 7), ("韩", 7), ("邓", 7), ("冯", 7), ("曹", 7), ("彭", 6), ("曾", 6),
    ("肖", 6), ("田", 6), ("董", 5), ("潘", 5), ("袁", 5), ("蔡", 5), ("蒋", 5), ("余", 5),
    ("于", 5), ("杜", 5), ("叶", 5), ("程", 4), ("魏", 4), ("苏", 4), ("吕", 4), ("丁", 4),
    ("任", 4), ("卢", 4), ("姚", 4), ("沈", 4), ("钟", 4), ("姜", 4), ("崔", 4), ("谭", 3),
    ("陆", 3), ("范", 3), ("汪", 3), ("廖", 3), ("石", 3), ("金", 3), ("韦", 3), ("贾", 3),
    ("夏", 3), ("付", 3), ("方", 3), ("邹", 2), ("熊", 2), ("白", 2), ("孟", 2), ("秦", 2),
    ("邱", 2), ("侯", 2), ("江", 2), ("尹", 2), ("薛", 2), ("闫", 2), ("段", 2), ("雷", 2),
    ("龙", 2), ("黎", 2), ("史", 2), ("陶", 2), ("贺", 2), ("毛", 2), ("郝", 2), ("顾", 2),
    ("龚", 2), ("邵", 2), ("万", 1), ("覃", 1), ("武", 1), ("钱", 1), ("戴", 1), ("严", 1),
    ("莫", 1), ("孔", 1), ("向", 1), ("常", 1), ("欧阳", 0.5), ("司马", 0.1), ("诸葛", 0.1), ("上官", 0.1),
)  # fmt: skip
_SURNAMES = tuple(s for s, _ in _SURNAMES_WEIGHTED)
_SURNAME_CUM = tuple(sum(w for _, w in _SURNAMES_WEIGHTED[: i + 1]) for i in range(len(_SURNAMES_WEIGHTED)))
_GIVEN = (
    "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉萍红建文辉鹏飞宇浩晨欣怡婷雪琳佳子梓涵轩博"
    "俊峰斌海波宁亮志国春兰凤梅云莉晶颖倩慧燕丹玲鑫森帆昊然睿思雨嘉琪瑶璐悦诗一天成正永德福林兵荣新金龙"
)
_ZIHAO = "华鑫宏达盛泰恒源中兴利隆嘉瑞信通德安新联科创汇金海天正合永成佳锦浩博凯东方远弘峰豪昌祥荣晟鼎誉辉润丰茂星光明宇腾云龙伟业力城"
_INDUSTRIES = (
    "科技", "信息技术", "网络科技", "贸易", "商贸", "建筑工程", "建材", "装饰工程", "餐饮管理", "物流",
    "供应链管理", "电子", "机械制造", "机电设备", "房地产开发", "物业管理", "文化传媒", "广告", "食品",
    "服装", "纺织", "医疗器械", "环保科技", "新能源", "汽车销售", "化工", "印刷", "农业开发", "教育咨询",
    "企业管理咨询", "劳务派遣",
)  # fmt: skip
_COMPANY_SUFFIXES = (("有限公司", 85), ("有限责任公司", 8), ("股份有限公司", 7))
_SHOP_KINDS = (
    "便利店", "餐馆", "小吃店", "五金店", "理发店", "水果店", "服装店", "超市", "烟酒店", "修车铺",
    "早餐店", "面馆", "电器维修部", "建材经营部", "日用品店", "茶叶店", "粮油店",
)  # fmt: skip
_AGENT_FIRMS = ("税务师事务所", "财务咨询有限公司", "代理记账有限公司", "会计服务有限公司")


@dataclass(frozen=True)
class _District:
    city: str  # e.g. 北京市
    district: str  # e.g. 朝阳区
    code: str  # 6-digit administrative division code
    since: int  # first birth year for which stdnum.cn.ric knows the code


# Codes checked against stdnum.cn.ric's table: an ID card with this area code and a birth year
# >= since validates. Weights roughly follow the cities' economic size.
_DISTRICTS: tuple[_District, ...] = tuple(
    _District(city, district, code, since)
    for city, district, code, since in (
        ("北京市", "东城区", "110101", 1900), ("北京市", "西城区", "110102", 1900),
        ("北京市", "朝阳区", "110105", 1900), ("北京市", "丰台区", "110106", 1900),
        ("北京市", "海淀区", "110108", 1900), ("天津市", "和平区", "120101", 1900),
        ("天津市", "河西区", "120103", 1900), ("天津市", "南开区", "120104", 1900),
        ("上海市", "黄浦区", "310101", 1900), ("上海市", "徐汇区", "310104", 1900),
        ("上海市", "长宁区", "310105", 1900), ("上海市", "静安区", "310106", 1900),
        ("上海市", "普陀区", "310107", 1900), ("上海市", "浦东新区", "310115", 1992),
        ("广州市", "越秀区", "440104", 1983), ("广州市", "海珠区", "440105", 1983),
        ("广州市", "天河区", "440106", 1985), ("广州市", "白云区", "440111", 1983),
        ("深圳市", "罗湖区", "440303", 1983), ("深圳市", "福田区", "440304", 1983),
        ("深圳市", "南山区", "440305", 1983), ("杭州市", "上城区", "330102", 1983),
        ("杭州市", "拱墅区", "330105", 1983), ("杭州市", "西湖区", "330106", 1983),
        ("南京市", "玄武区", "320102", 1983), ("南京市", "秦淮区", "320104", 1983),
        ("南京市", "鼓楼区", "320106", 1983), ("武汉市", "江岸区", "420102", 1983),
        ("武汉市", "江汉区", "420103", 1983), ("武汉市", "武昌区", "420106", 1983),
        ("武汉市", "洪山区", "420111", 1983), ("成都市", "锦江区", "510104", 1990),
        ("成都市", "青羊区", "510105", 1990), ("成都市", "金牛区", "510106", 1990),
        ("成都市", "武侯区", "510107", 1990), ("西安市", "新城区", "610102", 1983),
        ("西安市", "碑林区", "610103", 1983), ("西安市", "雁塔区", "610113", 1983),
        ("重庆市", "渝中区", "500103", 1997), ("重庆市", "江北区", "500105", 1997),
        ("重庆市", "沙坪坝区", "500106", 1997), ("济南市", "历下区", "370102", 1983),
        ("济南市", "市中区", "370103", 1983), ("厦门市", "思明区", "350203", 1983),
        ("厦门市", "湖里区", "350206", 1987), ("长沙市", "芙蓉区", "430102", 1983),
        ("长沙市", "岳麓区", "430104", 1983), ("郑州市", "中原区", "410102", 1983),
        ("郑州市", "金水区", "410105", 1983), ("沈阳市", "和平区", "210102", 1983),
        ("沈阳市", "沈河区", "210103", 1983),
    )
)  # fmt: skip

# Mobile prefixes allocated to public mobile service (libphonenumber-valid for every subscriber
# number); never 145/147/149 (data-only), 154 or 194 (unallocated). Weights in percent.
_MOBILE_PREFIXES_WEIGHTED = (
    ("130", 3), ("131", 3), ("132", 3), ("133", 3), ("134", 3), ("135", 5), ("136", 5), ("137", 5),
    ("138", 6), ("139", 6), ("150", 3), ("151", 3), ("152", 3), ("153", 2), ("155", 2), ("156", 2),
    ("157", 2), ("158", 3), ("159", 3), ("166", 1), ("170", 0.5), ("171", 0.5), ("172", 0.5), ("173", 1),
    ("175", 1), ("176", 1), ("177", 1), ("178", 1), ("180", 2), ("181", 2), ("182", 2), ("183", 2),
    ("184", 1), ("185", 2), ("186", 2), ("187", 3), ("188", 2), ("189", 2), ("191", 1), ("193", 0.5),
    ("195", 0.5), ("198", 1), ("199", 1),
)  # fmt: skip
_MOBILE_PREFIXES = tuple(p for p, _ in _MOBILE_PREFIXES_WEIGHTED)
_MOBILE_CUM = tuple(
    sum(w for _, w in _MOBILE_PREFIXES_WEIGHTED[: i + 1]) for i in range(len(_MOBILE_PREFIXES_WEIGHTED))
)
_FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")
_USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_ORG_LETTERS = "ABCDEFGHJKLMNPQRTUWXY"  # letters allowed in both GB 11714 and USCC positions
_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)


def _surname(rng: random.Random) -> str:
    return rng.choices(_SURNAMES, cum_weights=_SURNAME_CUM)[0]


def _person_name(rng: random.Random) -> str:
    surname = _surname(rng)
    n = 1 if rng.random() < 0.3 else 2
    return surname + "".join(rng.choice(_GIVEN) for _ in range(n))


def _zihao(rng: random.Random) -> str:
    a = rng.choice(_ZIHAO)
    b = rng.choice(_ZIHAO)
    while b == a:
        b = rng.choice(_ZIHAO)
    return a + b


def _company_name(rng: random.Random, city: str) -> str:
    suffix = rng.choices(_COMPANY_SUFFIXES, weights=[w for _, w in _COMPANY_SUFFIXES])[0][0]
    return f"{city.removesuffix('市')}{_zihao(rng)}{rng.choice(_INDUSTRIES)}{suffix}"


def _shop_brand(rng: random.Random) -> str:
    brand = f"{_surname(rng)}记" if rng.random() < 0.4 else _zihao(rng)
    return f"{brand}{rng.choice(_SHOP_KINDS)}"


def _shop_name(rng: random.Random, district: _District) -> str:
    place = district.city + district.district if rng.random() < 0.5 else district.district
    return f"{place}{_shop_brand(rng)}"


def _tax_office(district: _District) -> str:
    return f"国家税务总局{district.city}{district.district}税务局"


def _mobile(rng: random.Random) -> str:
    """Return a valid 11-digit mainland mobile number."""
    prefix = rng.choices(_MOBILE_PREFIXES, cum_weights=_MOBILE_CUM)[0]
    return f"{prefix}{rng.randrange(100_000_000):08d}"


def _raw_mobile(rng: random.Random, digits: str) -> str:
    """Return the number as a clerk might have typed it."""
    u = rng.random()
    if u < 0.55:
        return digits
    a, b, c = digits[:3], digits[3:7], digits[7:]
    if u < 0.63:
        return f"{a} {b} {c}"
    if u < 0.70:
        return f"{a}-{b}-{c}"
    if u < 0.76:
        return f"+86 {a}-{b}-{c}"
    if u < 0.81:
        return f"+86{digits}"
    if u < 0.85:
        return f"0086{digits}" if rng.random() < 0.5 else f"0086 {digits}"
    if u < 0.88:
        return f"86-{digits}"
    if u < 0.94:
        return digits.translate(_FULLWIDTH)
    return f" {digits} " if rng.random() < 0.5 else f"{digits}\t"


def _bad_mobile(rng: random.Random) -> str | None:
    """Return an unusable phone value (dirty data)."""
    kind = rng.randrange(8)
    if kind == 0:
        return "12345"
    if kind == 1:
        return f"154{rng.randrange(100_000_000):08d}"  # passes ^1[3-9]\d{9}$, unallocated
    if kind == 2:
        return ""
    if kind == 3:
        return None
    if kind == 4:
        return rng.choice(("无", "不详", "abc", "n/a", "待补充"))
    if kind == 5:
        good = _mobile(rng)
        return good[:3] + "O" + good[4:]  # letter O typed for a zero
    if kind == 6:
        return _mobile(rng)[:10]  # one digit short
    return f"0{rng.choice(('10', '21', '755', '571'))}-{rng.randrange(10_000_000, 100_000_000)}"  # landline


def _org_code(rng: random.Random) -> str:
    """Return a 9-char organisation code (GB 11714) with its check character."""
    if rng.random() < 0.6:
        body = "MA" + "".join(rng.choice(_USCC_ALPHABET) for _ in range(6))
    else:
        body = f"{rng.randrange(100_000_000):08d}"
    total = sum(
        (int(ch) if ch.isdigit() else ord(ch) - 55) * w for ch, w in zip(body, _ORG_WEIGHTS, strict=True)
    )
    check = 11 - total % 11
    return body + ("X" if check == 10 else "0" if check == 11 else str(check))


def _uscc(rng: random.Random, district: _District, entity: str) -> str:
    """Return a valid USCC: authority 9 (market regulation), entity type, area, org code, check."""
    body = "9" + entity + district.code + _org_code(rng)
    return body + stdnum_uscc.calc_check_digit(body)


def _birth_date(rng: random.Random, as_of: date, min_age: int = 20, max_age: int = 70) -> date:
    start = date(as_of.year - max_age, 1, 1)
    end = date(as_of.year - min_age, 12, 31)
    return start + timedelta(days=rng.randrange((end - start).days + 1))


def _ric(rng: random.Random, born: date, home: _District) -> str:
    """Return a valid 18-char resident ID number (GB 11643) for a birth date."""
    area = home if home.since <= born.year else rng.choice([d for d in _DISTRICTS if d.since <= born.year])
    body = f"{area.code}{born:%Y%m%d}{rng.randrange(1000):03d}"
    return body + stdnum_ric.calc_check_digit(body + "0")


def _break_check(rng: random.Random, number: str) -> str:
    """Return the identifier with a wrong check character (dirty data)."""
    if len(number) == 20:  # ID card + 2-digit suffix: break the ID card's check digit
        return number[:17] + rng.choice([c for c in "0123456789X" if c != number[17]]) + number[18:]
    uscc = len(number) == 18 and number[:2] in ("91", "92")
    alphabet = _USCC_ALPHABET if uscc else "0123456789X"  # ID card (18) or organisation code (15)
    return number[:-1] + rng.choice([c for c in alphabet if c != number[-1]])


def _money(rng: random.Random, median: float, sigma: float, floor_cents: int = 100) -> Decimal:
    """Return a lognormal amount in yuan with 2 decimals."""
    cents = max(floor_cents, round(median * 100 * math.exp(rng.gauss(0.0, sigma))))
    return Decimal(cents).scaleb(-2)


def _split(rng: random.Random, amount: Decimal, low: float = 0.2, high: float = 0.8) -> Decimal:
    """Return a part of ``amount`` between ``low`` and ``high`` of it, in whole fen."""
    cents = int(amount * 100)
    part = max(1, min(cents - 1, round(cents * rng.uniform(low, high))))
    return Decimal(part).scaleb(-2)


def _day_between(rng: random.Random, start: date, end: date) -> date:
    if end <= start:
        return start
    return start + timedelta(days=rng.randrange((end - start).days + 1))


def _stamp(rng: random.Random, day: date, latest: datetime | None = None) -> datetime:
    """Return a whole-second office-hours timestamp on ``day`` (never after ``latest``)."""
    moment = datetime(day.year, day.month, day.day) + timedelta(seconds=rng.randrange(8 * 3600, 18 * 3600))
    return min(moment, latest) if latest is not None else moment


def _add_months(year: int, month: int, delta: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + delta
    return index // 12, index % 12 + 1


# --------------------------------------------------------------------------------------
# Levy
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Period:
    period: str  # YYYY-MM of the month the return covers
    start: date
    end: date  # last day of the period
    deadline: date


def _levy_periods(as_of: date, months: int) -> tuple[list[_Period], _Period | None]:
    """Return the ``months`` latest periods past their deadline and the next upcoming one."""
    from include.dunning.calendar import filing_deadline

    def make(year: int, month: int) -> _Period:
        ny, nm = _add_months(year, month, 1)
        return _Period(
            f"{year:04d}-{month:02d}",
            date(year, month, 1),
            date(ny, nm, 1) - timedelta(days=1),
            filing_deadline(ny, nm),
        )

    past: list[_Period] = []
    upcoming: _Period | None = None
    year, month = _add_months(as_of.year, as_of.month, -1)
    while len(past) < months:
        p = make(year, month)
        if p.deadline < as_of:
            past.append(p)
        else:
            upcoming = p
        year, month = _add_months(year, month, -1)
    if upcoming is None:  # the period of the as_of month itself, due next month
        try:
            upcoming = make(as_of.year, as_of.month)
        except LookupError as exc:  # next year's holidays not published yet
            log.warning(
                "levy: no deadline for period %04d-%02d, so no upcoming period: %s",
                as_of.year,
                as_of.month,
                exc,
            )
    past.reverse()
    return past, upcoming


# (tax type, probability the taxpayer has it, median principal in yuan, lognormal sigma)
_TAX_PROFILE: dict[str, tuple[tuple[str, float, float, float], ...]] = {
    "enterprise": (
        ("增值税", 1.0, 4500.0, 1.3),
        ("企业所得税", 0.5, 6000.0, 1.4),
        ("个人所得税", 0.7, 1800.0, 1.1),
        ("印花税", 0.2, 300.0, 1.0),
        ("房产税", 0.1, 3000.0, 0.9),
    ),
    "individual_business": (
        ("增值税", 0.9, 1500.0, 1.0),
        ("个人所得税", 0.6, 800.0, 1.0),
    ),
    "individual": (
        ("个人所得税", 1.0, 1500.0, 1.2),
        ("房产税", 0.15, 2000.0, 0.8),
    ),
}
_URBAN_MAINTENANCE_RATE = Decimal("0.07")  # 城市维护建设税 on VAT paid, urban rate


@dataclass
class _Agent:
    name: str
    digits: str
    slots: int


def generate_levy(
    engine: sa.Engine,
    *,
    taxpayers: int,
    as_of: date,
    seed: int = DEFAULT_SEED,
    dirty_share: float = 0.03,
    chunk_rows: int = 50_000,
    months: int = 4,
    replace: bool = False,
    sink: RowSink | None = None,
) -> dict[str, int]:
    """Fill the demo levy system with ``taxpayers`` taxpayers; return row counts per table.

    Monthly periods: the ``months`` latest ones whose deadline is before ``as_of`` plus the
    next one. Past-deadline liabilities end up roughly 55% paid on time, 10% paid late, 30%
    unpaid (some partly paid), 5% with an approved or refused deferral.
    """
    if taxpayers < 0:
        raise ValueError("taxpayers must be >= 0")
    sink = _prepare(engine, "levy", replace, sink)
    rng = random.Random(f"{seed}:levy")
    past, upcoming = _levy_periods(as_of, months)
    now = datetime(as_of.year, as_of.month, as_of.day) - timedelta(
        seconds=1
    )  # snapshot at the start of as_of
    out = _Chunker(sink, "levy", chunk_rows, taxpayers, "taxpayers")
    followups = _Followups(f"{seed}:levy:followups", out.buffers, as_of, now)
    b = out.buffers
    tp_rows, ct_rows, ob_rows = b["taxpayer"], b["taxpayer_contact"], b["filing_obligation"]
    li_rows, pay_rows, def_rows = b["tax_liability"], b["tax_payment"], b["deferral"]

    # Tax agents: ~5% of all phone numbers, each serving 2-6 taxpayers.
    agents = [
        _Agent(
            _person_name(rng) + (f"({_zihao(rng)}{rng.choice(_AGENT_FIRMS)})" if rng.random() < 0.3 else ""),
            _mobile(rng),
            rng.randint(2, 6),
        )
        for _ in range(round(taxpayers * 0.075))
    ]
    used_ids: set[str] = set()
    ids = {"contact": 0, "obligation": 0, "liability": 0, "payment": 0, "deferral": 0}

    def next_id(kind: str) -> int:
        ids[kind] += 1
        return ids[kind]

    for n in range(1, taxpayers + 1):
        ttype = rng.choices(("enterprise", "individual_business", "individual"), weights=(55, 30, 15))[0]
        district = rng.choice(_DISTRICTS)
        owner = _person_name(rng)
        born = _birth_date(rng, as_of)
        while True:
            if ttype == "enterprise":
                tid = (
                    district.code + _org_code(rng)  # legacy 15-char 税务登记证号
                    if rng.random() < 0.015
                    else _uscc(rng, district, "1")
                )
                name: str | None = _company_name(rng, district.city)
            elif ttype == "individual_business":
                u = rng.random()
                if u < 0.05:
                    tid = _ric(rng, born, district) + f"{rng.randint(1, 3):02d}"  # legacy 20-char
                elif u < 0.15:
                    tid = _ric(rng, born, district)
                else:
                    tid = _uscc(rng, district, "2")
                name = _shop_name(rng, district)
            else:
                tid = _ric(rng, born, district)
                name = owner
            if tid not in used_ids:
                break
            born = _birth_date(rng, as_of)
        used_ids.add(tid)
        abnormal = rng.random() < 0.03
        registered = _day_between(rng, date(max(1995, born.year + 20), 1, 1), as_of - timedelta(days=240))
        if rng.random() < dirty_share:
            if rng.random() < 0.6:
                tid_dirty = _break_check(rng, tid)
                if tid_dirty not in used_ids:
                    used_ids.add(tid_dirty)
                    tid = tid_dirty
            else:
                name = None if rng.random() < 0.5 else ""
        tp_rows.append(
            (
                tid,
                name,
                _tax_office(district),
                ttype,
                "abnormal" if abnormal else "normal",
                registered,
                _stamp(rng, _day_between(rng, registered, as_of), now),
            )
        )

        # Contacts: legal representative (the person themself for individuals), finance, agent.
        contacts: list[list] = []  # [role, person, digits]
        rep_digits = _mobile(rng)
        contacts.append(["legal_rep", owner, rep_digits])
        if (ttype == "enterprise" and rng.random() < 0.7) or (
            ttype == "individual_business" and rng.random() < 0.1
        ):
            same = rng.random() < 0.08  # tiny firms: the boss keeps the books
            contacts.append(
                ["finance", owner if same else _person_name(rng), rep_digits if same else _mobile(rng)]
            )
        if agents and ttype != "individual" and rng.random() < 0.35:
            k = rng.randrange(len(agents))
            agent = agents[k]
            contacts.append(["tax_agent", agent.name, agent.digits])
            agent.slots -= 1
            if agent.slots == 0:
                agents[k] = agents[-1]
                agents.pop()
        roles = [c[0] for c in contacts]
        weights = [{"legal_rep": 35, "finance": 50, "tax_agent": 15}[r] for r in roles]
        if ttype != "enterprise":
            weights = [{"legal_rep": 80, "finance": 5, "tax_agent": 20}[r] for r in roles]
        primary = rng.choices(range(len(contacts)), weights=weights)[0]
        rows_here = []
        for i, (role, person, digits) in enumerate(contacts):
            mobile = _bad_mobile(rng) if rng.random() < dirty_share else _raw_mobile(rng, digits)
            row = (
                next_id("contact"),
                tid,
                role,
                person,
                mobile,
                1 if i == primary else 0,
                _stamp(rng, _day_between(rng, registered, as_of), now),
            )
            rows_here.append(row)
        if rng.random() < dirty_share / 3:  # exact duplicate (new key), preferably a non-primary one
            src = next((r for r in rows_here if r[5] == 0), rows_here[0])
            rows_here.append((next_id("contact"), *src[1:]))
        ct_rows.extend(rows_here)

        # Filing obligations, liabilities, payments, deferrals.
        types = [t for t in _TAX_PROFILE[ttype] if rng.random() < t[1]]
        has_vat = any(t[0] == "增值税" for t in types) and ttype != "individual"
        if has_vat and (ttype == "enterprise" or rng.random() < 0.5):
            types.append(("城市维护建设税", 1.0, 0.0, 0.0))
        for p_index, period in enumerate([*past, upcoming] if upcoming else past):
            is_past = p_index < len(past)
            vat_principal: Decimal | None = None
            for tax_type, _prob, median, sigma in types:
                filed_on: date | None = None
                if is_past:
                    recent = p_index >= len(past) - 3
                    if not (abnormal and recent) and rng.random() < 0.925:
                        if rng.random() < 0.93:
                            filed_on = _day_between(rng, period.end + timedelta(days=1), period.deadline)
                        else:
                            filed_on = _day_between(
                                rng,
                                period.deadline + timedelta(days=1),
                                min(as_of - timedelta(days=1), period.deadline + timedelta(days=40)),
                            )
                elif period.end < as_of - timedelta(days=1) and rng.random() < 0.35:
                    filed_on = _day_between(rng, period.end + timedelta(days=1), as_of - timedelta(days=1))
                ob_rows.append(
                    (
                        next_id("obligation"),
                        tid,
                        tax_type,
                        period.period,
                        period.deadline,
                        filed_on,
                        _stamp(rng, filed_on or period.start, now),
                    )
                )
                if filed_on is None:
                    continue
                if tax_type == "城市维护建设税":
                    if vat_principal is None or vat_principal <= 0:
                        continue
                    principal = max(
                        Decimal("0.01"), (vat_principal * _URBAN_MAINTENANCE_RATE).quantize(Decimal("0.01"))
                    )
                else:
                    if rng.random() < 0.15:  # zero return: nothing to pay
                        continue
                    principal = _money(rng, median, sigma)
                    if tax_type == "增值税":
                        vat_principal = principal
                if rng.random() < dirty_share:
                    principal = -principal
                liability_id = next_id("liability")
                li_rows.append(
                    (
                        liability_id,
                        tid,
                        tax_type,
                        period.period,
                        principal,
                        period.deadline,
                        _stamp(rng, filed_on, now),
                    )
                )
                if principal <= 0:
                    continue
                _levy_settlement(
                    rng,
                    liability_id,
                    principal,
                    filed_on,
                    period.deadline,
                    as_of,
                    now,
                    pay_rows,
                    def_rows,
                    next_id,
                )
        followups.promise(tid)
        out.maybe_flush(n)
    out.flush(taxpayers)
    return dict(out.counts)


def _levy_settlement(
    rng: random.Random,
    liability_id: int,
    principal: Decimal,
    filed_on: date,
    deadline: date,
    as_of: date,
    now: datetime,
    pay_rows: list[tuple],
    def_rows: list[tuple],
    next_id: Callable[[str], int],
) -> None:
    """Append the payments and deferral decision of one liability."""

    def pay(amount: Decimal, day: date) -> None:
        pay_rows.append((next_id("payment"), liability_id, amount, day, _stamp(rng, day, now)))

    last_day = as_of - timedelta(days=1)
    if deadline >= as_of:  # not yet due: some pay early
        if rng.random() < 0.6:
            pay(principal, _day_between(rng, filed_on, last_day))
        return
    u = rng.random()
    late_filed = filed_on > deadline
    if u < 0.59 and not late_filed:  # on time (0.59 x 93% filed on time ~ 55%), sometimes in two instalments
        if rng.random() < 0.12:
            first = _split(rng, principal)
            day1 = _day_between(rng, filed_on, deadline)
            pay(first, day1)
            pay(principal - first, _day_between(rng, day1, deadline))
        else:
            pay(principal, _day_between(rng, filed_on, deadline))
    elif u < 0.65:  # late (or filed late, so paid late)
        start = max(filed_on, deadline + timedelta(days=1))
        if start > last_day:
            return
        if rng.random() < 0.2 and not late_filed:
            first = _split(rng, principal)
            pay(first, _day_between(rng, filed_on, deadline))
            pay(principal - first, _day_between(rng, start, min(last_day, start + timedelta(days=45))))
        else:
            pay(principal, _day_between(rng, start, min(last_day, start + timedelta(days=45))))
    elif u < 0.95:  # debtor: unpaid, a quarter paid part of it
        if rng.random() < 0.25:
            pay(_split(rng, principal), _day_between(rng, filed_on, last_day))
    else:  # deferral asked before the deadline
        decided = _day_between(rng, max(filed_on, deadline - timedelta(days=12)), deadline)
        if rng.random() < 0.6:
            ny, nm = _add_months(deadline.year, deadline.month, rng.randint(1, 3))
            new_deadline = date(ny, nm, min(deadline.day, 28))
            def_rows.append((next_id("deferral"), liability_id, 1, new_deadline, decided))
            if new_deadline < as_of:
                if rng.random() < 0.7:
                    pay(principal, _day_between(rng, decided, new_deadline))
            elif rng.random() < 0.3:
                pay(principal, _day_between(rng, decided, last_day))
        else:
            def_rows.append((next_id("deferral"), liability_id, 0, None, decided))
            if rng.random() < 0.5 and deadline < last_day:
                pay(principal, _day_between(rng, deadline + timedelta(days=1), last_day))


# --------------------------------------------------------------------------------------
# Billing
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Account:
    account_no: str
    customer_class: str
    billing_mode: str
    area: str


def billing_accounts(customers: int, seed: int = DEFAULT_SEED) -> list[_Account]:
    """Return the billing customers' account skeletons (shared with the recharge generator)."""
    rng = random.Random(f"{seed}:billing:accounts")
    seen: set[str] = set()
    accounts: list[_Account] = []
    while len(accounts) < customers:
        if rng.random() < 0.7:
            number = f"{rng.randint(1, 9)}{rng.randrange(10**9):09d}"
        else:
            number = f"{rng.choice('0356')}{rng.randrange(10**12):012d}"
        residential = rng.random() < 0.75
        prepaid = rng.random() < (0.22 if residential else 0.14)
        town = rng.random() < 0.6
        if number in seen:
            continue
        seen.add(number)
        accounts.append(
            _Account(
                number,
                "residential" if residential else "non_residential",
                "prepaid" if prepaid else "postpaid",
                "town" if town else "countryside",
            )
        )
    return accounts


_SEASON = {
    1: 1.25,
    2: 1.2,
    3: 0.95,
    4: 0.85,
    5: 0.9,
    6: 1.1,
    7: 1.4,
    8: 1.45,
    9: 1.05,
    10: 0.85,
    11: 0.95,
    12: 1.2,
}
_CHANNELS = (("bank_withhold", 30), ("wechat", 25), ("alipay", 20), ("app", 15), ("counter", 10))


def generate_billing(
    engine: sa.Engine,
    *,
    customers: int,
    as_of: date,
    seed: int = DEFAULT_SEED,
    dirty_share: float = 0.03,
    chunk_rows: int = 50_000,
    months: int = 14,
    replace: bool = False,
    sink: RowSink | None = None,
) -> dict[str, int]:
    """Fill the demo electricity billing system with ``customers`` accounts; return row counts.

    Postpaid accounts get monthly bills for the ``months`` months before ``as_of``; about a
    quarter of them have overdue bills (some more than 30 days, some from the previous year);
    prepaid accounts get a balance (some below 50 yuan, some below 0).
    """
    if customers < 0:
        raise ValueError("customers must be >= 0")
    sink = _prepare(engine, "billing", replace, sink)
    accounts = billing_accounts(customers, seed)
    rng = random.Random(f"{seed}:billing")
    now = datetime(as_of.year, as_of.month, as_of.day) - timedelta(
        seconds=1
    )  # snapshot at the start of as_of
    last_day = as_of - timedelta(days=1)
    first_y, first_m = _add_months(as_of.year, as_of.month, -months)
    periods = [_add_months(first_y, first_m, i) for i in range(months)]
    channel_names = [c for c, _ in _CHANNELS]
    channel_weights = [w for _, w in _CHANNELS]
    out = _Chunker(sink, "billing", chunk_rows, customers, "customers")
    followups = _Followups(f"{seed}:billing:followups", out.buffers, as_of, now)
    b = out.buffers
    cu_rows, bill_rows, pay_rows = b["customer"], b["bill"], b["bill_payment"]
    bal_rows, dem_rows = b["prepaid_balance"], b["payment_demand"]
    ids = {"bill": 0, "payment": 0, "demand": 0}

    for n, acct in enumerate(accounts, start=1):
        residential = acct.customer_class == "residential"
        district = rng.choice(_DISTRICTS)
        person = _person_name(rng)
        if residential:
            name: str | None = person
        else:
            name = _company_name(rng, district.city) if rng.random() < 0.6 else _shop_name(rng, district)
        mobile = _raw_mobile(rng, _mobile(rng))
        account_no = acct.account_no
        if rng.random() < dirty_share:
            kind = rng.random()
            if kind < 0.7:
                mobile = _bad_mobile(rng)
            elif kind < 0.85:
                name = None if rng.random() < 0.5 else ""
            else:  # 11 digits: neither 10 nor 13 (cannot collide with a clean number)
                account_no = account_no[:10] + str(rng.randrange(10))
        cu_rows.append(
            (
                account_no,
                name,
                acct.customer_class,
                acct.billing_mode,
                acct.area,
                mobile,
                _stamp(rng, as_of - timedelta(days=rng.randrange(1, 900)), now),
            )
        )
        if acct.billing_mode == "prepaid":
            u = rng.random()
            if u < 0.7:
                balance = _money(rng, 180.0 if residential else 2000.0, 0.8, floor_cents=5000)
            elif u < 0.9:
                balance = Decimal(rng.randrange(0, 5000)).scaleb(-2)
            else:
                balance = -Decimal(rng.randrange(1, 15000)).scaleb(-2)
            bal_rows.append((account_no, balance, now - timedelta(seconds=rng.randrange(86_400))))
            followups.prepaid(account_no, balance, bal_rows[-1][2])
            out.maybe_flush(n)
            continue

        due_day = rng.choice((10, 15, 20, 25))
        start_index = rng.randrange(months) if rng.random() < 0.1 else 0  # newer customers
        median = 110.0 if residential else 2600.0
        sigma = 0.35 if residential else 1.1
        scale = math.exp(rng.gauss(0.0, 0.5 if residential else 0.0))
        debtor = rng.random() < 0.19
        bills: list[tuple[int, Decimal, date]] = []
        for year, month in periods[start_index:]:
            ny, nm = _add_months(year, month, 1)
            due = date(ny, nm, due_day)
            amount = _money(rng, median * scale * _SEASON[month], sigma, floor_cents=500)
            ids["bill"] += 1
            bill_id = ids["bill"]
            issued = date(ny, nm, 1) + timedelta(days=rng.randrange(5))
            bill_rows.append(
                (bill_id, account_no, f"{year:04d}-{month:02d}", amount, due, _stamp(rng, issued, now))
            )
            bills.append((bill_id, amount, due))
        overdue = [bill for bill in bills if bill[2] < as_of]
        unpaid: set[int] = set()
        if debtor and overdue:
            k = rng.choices((1, 2, 3, rng.randint(4, 6), rng.randint(10, 14)), weights=(35, 25, 15, 12, 13))[
                0
            ]
            unpaid = {bill[0] for bill in overdue[-k:]}
            unpaid |= {bill[0] for bill in bills if bill[2] >= as_of and rng.random() < 0.9}
        for bill_id, amount, due in bills:
            issued = date(due.year, due.month, 1)
            if bill_id in unpaid:
                oldest = min(unpaid)
                if bill_id == oldest and rng.random() < 0.2:  # partial payment on the oldest bill
                    paid_on = _day_between(rng, issued, min(last_day, due + timedelta(days=20)))
                    _bill_pay(
                        rng,
                        ids,
                        pay_rows,
                        bill_id,
                        _split(rng, amount),
                        paid_on,
                        now,
                        channel_names,
                        channel_weights,
                    )
                if bill_id == oldest and due < as_of - timedelta(days=30) and rng.random() < 0.5:
                    demanded = _day_between(
                        rng, due + timedelta(days=20), min(last_day, due + timedelta(days=45))
                    )
                    ids["demand"] += 1
                    dem_rows.append(
                        (
                            ids["demand"],
                            account_no,
                            bill_id,
                            demanded,
                            rng.choices(("visit", "phone", "letter", "sms"), weights=(40, 30, 20, 10))[0],
                            f"{_person_name(rng)}(工号{rng.randrange(10_000, 100_000)})",
                        )
                    )
                continue
            if rng.random() < 0.85:
                paid_on = _day_between(rng, max(issued, due - timedelta(days=12)), due)
            else:
                paid_on = due + timedelta(days=rng.randint(1, 25))
            if paid_on >= as_of:
                continue  # not paid yet at as_of
            _bill_pay(rng, ids, pay_rows, bill_id, amount, paid_on, now, channel_names, channel_weights)
        followups.postpaid(account_no, [bill for bill in bills if bill[0] in unpaid and bill[2] < as_of])
        out.maybe_flush(n)
    out.flush(customers)
    return dict(out.counts)


class _Followups:
    """Promises to pay and posted top-ups, drawn from their own random stream.

    A separate stream keeps every other table exactly as it was before these were added.
    Promises: some due still ahead of ``as_of`` (open), some already passed unpaid (lapsed).
    Top-ups: some postpaid debtors top up after a due date (fully covering the arrears or not),
    some low prepaid balances are topped up after the balance snapshot.
    """

    def __init__(self, stream: str, buffers: Mapping[str, list[tuple]], as_of: date, now: datetime) -> None:
        self.rng = random.Random(stream)
        self.buffers = buffers
        self.as_of = as_of
        self.now = now
        self.ids = {"promise": 0, "topup": 0}
        self.promises = "tax_promise" if "tax_promise" in buffers else "bill_promise"

    def promise(self, debtor: str, amount: Decimal | None = None, share: float = 0.06) -> None:
        """Maybe record a promise to pay by ``debtor`` (recorded before ``as_of``)."""
        if self.rng.random() >= share:
            return
        recorded = self.as_of - timedelta(days=self.rng.randint(1, 20))
        promised = recorded + timedelta(days=self.rng.randint(3, 30))
        self.ids["promise"] += 1
        self.buffers[self.promises].append((self.ids["promise"], debtor, promised, amount, recorded))

    def _topup(self, account_no: str, amount: Decimal, at: datetime) -> None:
        card = self.rng.random() < 0.7
        self.ids["topup"] += 1
        serial = f"T{at:%y%m%d}{self.ids['topup']:08d}" if card else None
        self.buffers["account_topup"].append(
            (self.ids["topup"], account_no, amount, at, "card" if card else "app", serial)
        )

    def postpaid(self, account_no: str, overdue: Sequence[tuple[int, Decimal, date]]) -> None:
        """Maybe a promise or a top-up after the oldest overdue unpaid bill's due date."""
        if not overdue:
            return
        total = sum((amount for _, amount, _ in overdue), Decimal("0"))
        self.promise(account_no, total, share=0.06)
        if self.rng.random() < 0.08:
            oldest = min(due for _, _, due in overdue)
            start = datetime(oldest.year, oldest.month, oldest.day)
            at = start + (self.now - start) * self.rng.random()
            full = self.rng.random() < 0.6
            amount = total if full else Decimal(self.rng.choice((50, 100))).quantize(Decimal("0.01"))
            self._topup(account_no, amount, at.replace(microsecond=0))

    def prepaid(self, account_no: str, balance: Decimal, snapshot: datetime) -> None:
        """Maybe a top-up of a low prepaid balance after the balance snapshot."""
        if balance >= 50 or self.rng.random() >= 0.15:
            return
        at = snapshot + (self.now - snapshot) * self.rng.random()
        amount = Decimal(self.rng.choice((50, 100, 200))).quantize(Decimal("0.01"))
        self._topup(account_no, amount, max(at.replace(microsecond=0), snapshot + timedelta(seconds=1)))


def _bill_pay(
    rng: random.Random,
    ids: dict[str, int],
    pay_rows: list[tuple],
    bill_id: int,
    amount: Decimal,
    paid_on: date,
    now: datetime,
    channels: Sequence[str],
    weights: Sequence[int],
) -> None:
    ids["payment"] += 1
    channel = rng.choices(channels, weights=weights)[0]
    pay_rows.append((ids["payment"], bill_id, amount, paid_on, channel, _stamp(rng, paid_on, now)))


# --------------------------------------------------------------------------------------
# Recharge cards
# --------------------------------------------------------------------------------------

_COUNTIES = ("桐庐县", "淳安县", "建德市", "临安区", "富阳区", "德清县", "安吉县", "长兴县")
_TOWNS = (
    "分水镇", "百江镇", "千岛湖镇", "梅城镇", "於潜镇", "新登镇", "乾潭镇", "汾口镇", "昌化镇",
    "武康镇", "递铺镇", "雉城镇", "横畈镇", "富春街道",
)  # fmt: skip
_FACE_VALUES = (
    (Decimal("50.00"), 30),
    (Decimal("100.00"), 40),
    (Decimal("200.00"), 20),
    (Decimal("500.00"), 10),
)
_LIFECYCLE = (  # event, probability the card gets there from the previous step, days after it
    ("stocked_county", 0.97, (2, 10)),
    ("issued_station", 0.95, (3, 20)),
    ("sold_seller", 0.92, (1, 30)),
    ("sold_customer", 0.88, (1, 90)),
    ("used", 0.9, (0, 60)),
)


def generate_recharge(
    engine: sa.Engine,
    *,
    cards: int,
    as_of: date,
    seed: int = DEFAULT_SEED,
    dirty_share: float = 0.03,
    chunk_rows: int = 50_000,
    customers: int | None = None,
    replace: bool = False,
    sink: RowSink | None = None,
) -> dict[str, int]:
    """Fill the demo recharge-card system with ``cards`` cards; return row counts per table.

    Cards go through made -> stocked_county -> issued_station -> sold_seller -> sold_customer
    -> used, a few are voided or returned. Used cards recharge accounts of the billing system
    generated with ``customers`` accounts and the same seed (default: ``cards``), mostly
    prepaid ones; a few recharge unknown accounts.
    """
    if cards < 0:
        raise ValueError("cards must be >= 0")
    sink = _prepare(engine, "recharge", replace, sink)
    skeleton = billing_accounts(cards if customers is None else customers, seed)
    prepaid = [a.account_no for a in skeleton if a.billing_mode == "prepaid"] or [
        a.account_no for a in skeleton
    ]
    every = [a.account_no for a in skeleton]
    rng = random.Random(f"{seed}:recharge")
    now = datetime(as_of.year, as_of.month, as_of.day) - timedelta(
        seconds=1
    )  # snapshot at the start of as_of
    out = _Chunker(sink, "recharge", chunk_rows, cards, "cards")
    b = out.buffers
    card_rows, ev_rows, re_rows = b["card"], b["card_event"], b["recharge"]
    ids = {"event": 0, "recharge": 0}
    face_values = [v for v, _ in _FACE_VALUES]
    face_weights = [w for _, w in _FACE_VALUES]

    def event(serial: str, kind: str, at: datetime, place: str | None) -> None:
        ids["event"] += 1
        ev_rows.append((ids["event"], serial, kind, at, place))

    batch_no = 0
    batch_left = 0
    batch_id = ""
    face = face_values[0]
    made_on = as_of
    for n in range(1, cards + 1):
        if batch_left == 0:
            batch_no += 1
            batch_left = rng.randint(200, 2000)
            made_on = as_of - timedelta(days=rng.randrange(30, 540))
            face = rng.choices(face_values, weights=face_weights)[0]
            batch_id = f"B{made_on:%Y%m}-{batch_no:04d}"
        batch_left -= 1
        serial = f"{made_on:%y}{batch_no:04d}{n:08d}{rng.randrange(100):02d}"
        card_rows.append((serial, face, batch_id, made_on))
        at = _stamp(rng, made_on, now)
        event(serial, "made", at, "省公司卡务中心")
        county = rng.choice(_COUNTIES)
        town = rng.choice(_TOWNS)
        seller = f"{town}{_shop_brand(rng)}"
        places = {
            "stocked_county": f"国网{county}供电公司",
            "issued_station": f"{town}供电所",
            "sold_seller": seller,
            "sold_customer": seller,
            "used": rng.choice(("网上国网App", "自助终端", f"{town}供电所营业厅")),
        }
        reached = "made"
        for kind, prob, (lo, hi) in _LIFECYCLE:
            nxt = at + timedelta(days=rng.randint(lo, hi), seconds=rng.randrange(60, 7200))
            if rng.random() >= prob or nxt > now:
                break
            at = nxt
            event(serial, kind, at, places[kind])
            reached = kind
        if reached != "used":
            u = rng.random()
            if u < 0.02:
                event(serial, "voided", min(now, at + timedelta(days=rng.randint(1, 30))), "省公司卡务中心")
            elif u < 0.04 and reached in ("sold_seller", "issued_station"):
                event(
                    serial,
                    "returned",
                    min(now, at + timedelta(days=rng.randint(1, 30))),
                    places["issued_station"],
                )
            out.maybe_flush(n)
            continue
        u = rng.random()
        account = (
            rng.choice(prepaid)
            if u < 0.85
            else rng.choice(every)
            if u < 0.95
            else f"9{rng.randrange(10**9):09d}"
        )
        ids["recharge"] += 1
        re_rows.append((ids["recharge"], serial, account, face, at))
        if rng.random() < dirty_share:  # the same card used twice: a duplicate top-up to catch
            again = min(now, at + timedelta(minutes=rng.randint(1, 600)))
            event(serial, "used", again, places["used"])
            ids["recharge"] += 1
            re_rows.append((ids["recharge"], serial, account, face, again))
        out.maybe_flush(n)
    out.flush(cards)
    return dict(out.counts)


# --------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------


def generate(
    engine: sa.Engine,
    system: str,
    *,
    rows: int,
    as_of: date,
    seed: int = DEFAULT_SEED,
    dirty_share: float = 0.03,
    chunk_rows: int = 50_000,
    replace: bool = False,
) -> dict[str, int]:
    """Generate one system's data with ``rows`` units (taxpayers, customers or cards)."""
    common = {
        "as_of": as_of,
        "seed": seed,
        "dirty_share": dirty_share,
        "chunk_rows": chunk_rows,
        "replace": replace,
    }
    if system == "levy":
        return generate_levy(engine, taxpayers=rows, **common)
    if system == "billing":
        return generate_billing(engine, customers=rows, **common)
    if system == "recharge":
        return generate_recharge(engine, cards=rows, **common)
    raise ValueError(f"unknown system {system!r}; expected one of {', '.join(SYSTEMS)}")


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m include.sources.generate",
        description="Fill a demo source system (levy, billing, recharge) with deterministic synthetic data.",
    )
    parser.add_argument("--system", required=True, choices=SYSTEMS)
    parser.add_argument("--url", required=True, help="SQLAlchemy URL, e.g. sqlite:///.demo/levy.db")
    parser.add_argument("--rows", required=True, type=int, help="taxpayers, customers or cards")
    parser.add_argument("--as-of", required=True, type=date.fromisoformat, help="YYYY-MM-DD")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--dirty-share", type=float, default=0.03)
    parser.add_argument("--chunk-rows", type=int, default=50_000)
    parser.add_argument("--replace", action="store_true", help="delete existing rows first")
    parser.add_argument("--quiet", action="store_true", help="log warnings only")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line: generate one system and print the row counts as JSON."""
    args = _parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    url = sa.engine.make_url(args.url)
    if url.get_backend_name() == "sqlite" and url.database:
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url)
    started = time.perf_counter()
    try:
        counts = generate(
            engine,
            args.system,
            rows=args.rows,
            as_of=args.as_of,
            seed=args.seed,
            dirty_share=args.dirty_share,
            chunk_rows=args.chunk_rows,
            replace=args.replace,
        )
    finally:
        engine.dispose()
    elapsed = time.perf_counter() - started
    total = sum(counts.values())
    print(
        json.dumps(
            {"system": args.system, "counts": counts, "total_rows": total, "seconds": round(elapsed, 2)}
        )
    )
    log.info("%s: %d rows in %.1f s (%.0f rows/s)", args.system, total, elapsed, total / max(elapsed, 1e-9))
    return 0


if __name__ == "__main__":
    sys.exit(main())


# --------------------------------------------------------------------------------------
# Debtor table for benchmarks: one wide table, vectorised (numpy + Arrow), bulk loaded
# --------------------------------------------------------------------------------------

DEBTOR_COLUMNS = (
    "debtor_id",
    "taxpayer_id",
    "name",
    "mobile",
    "tax_office",
    "tax_type",
    "period",
    "principal",
    "paid",
    "deadline",
    "updated_at",
)
_DEBTOR_BLOCK = 100_000  # rows per random block: the rows do not depend on the chunk size


def debtor_table_ddl(table: str = "debtor") -> str:
    """Return the portable DDL of the benchmark debtor table (one row per overdue debt)."""
    return f"""CREATE TABLE IF NOT EXISTS {table} (
    debtor_id   BIGINT         NOT NULL PRIMARY KEY,
    taxpayer_id VARCHAR(20)    NOT NULL,
    name        VARCHAR(100)   NOT NULL,
    mobile      VARCHAR(40)    NOT NULL,
    tax_office  VARCHAR(100)   NOT NULL,
    tax_type    VARCHAR(40)    NOT NULL,
    period      VARCHAR(7)     NOT NULL,
    principal   NUMERIC(14, 2) NOT NULL,
    paid        NUMERIC(14, 2) NOT NULL,
    deadline    DATE           NOT NULL,
    updated_at  TIMESTAMP      NULL
)"""


def debtor_blocks(rows: int, *, as_of: date, seed: int = DEFAULT_SEED) -> Iterator[Any]:
    """Yield the debtor table as Arrow tables of up to 100,000 rows (deterministic per seed)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    surnames = pa.array(_SURNAMES)
    surname_p = np.diff((0.0, *_SURNAME_CUM)) / _SURNAME_CUM[-1]
    given = pa.array(list(_GIVEN))
    prefixes = pa.array(_MOBILE_PREFIXES)
    prefix_p = np.diff((0.0, *_MOBILE_CUM)) / _MOBILE_CUM[-1]
    offices = pa.array([_tax_office(d) for d in _DISTRICTS])
    tax_types = pa.array(["增值税", "企业所得税", "个人所得税", "印花税", "房产税", "城市维护建设税"])
    periods = pa.array(
        [f"{y:04d}-{m:02d}" for y, m in (_add_months(as_of.year, as_of.month, -k) for k in range(2, 8))]
    )
    epoch_day = (as_of - date(1970, 1, 1)).days

    def digits(values: Any, width: int) -> Any:
        return pc.utf8_lpad(pa.array(values).cast(pa.string()), width=width, padding="0")

    def money(cents: Any) -> Any:
        text = pc.binary_join_element_wise(
            pa.array(cents // 100).cast(pa.string()), digits(cents % 100, 2), "."
        )
        return text.cast(pa.decimal128(14, 2))

    for start in range(0, rows, _DEBTOR_BLOCK):
        n = min(_DEBTOR_BLOCK, rows - start)
        rng = np.random.default_rng([seed, start // _DEBTOR_BLOCK])
        ids = np.arange(start + 1, start + n + 1, dtype=np.int64)
        taxpayer = pc.binary_join_element_wise(
            pa.array(np.where(rng.random(n) < 0.6, "91", "92")), digits(rng.integers(0, 10**16, n), 16), ""
        )
        name = pc.binary_join_element_wise(
            surnames.take(rng.choice(len(surnames), n, p=surname_p)),
            given.take(rng.integers(0, len(given), n)),
            given.take(rng.integers(0, len(given), n)),
            "",
        )
        number = pc.binary_join_element_wise(
            prefixes.take(rng.choice(len(prefixes), n, p=prefix_p)), digits(rng.integers(0, 10**8, n), 8), ""
        )
        style = rng.random(n)
        mobile = pc.if_else(
            pa.array(style < 0.8),
            number,
            pc.binary_join_element_wise(pa.array(np.where(style < 0.9, "+86 ", "0086")), number, ""),
        )
        cents = np.maximum(100, np.round(450_000 * np.exp(rng.normal(0.0, 1.3, n)))).astype(np.int64)
        paid = np.where(rng.random(n) < 0.25, (cents * rng.uniform(0.1, 0.9, n)).astype(np.int64), 0)
        deadline = epoch_day - rng.integers(1, 200, n)
        updated = (deadline.astype(np.int64) * 86_400 + rng.integers(8 * 3600, 18 * 3600, n)) * 1_000_000
        yield pa.table(
            {
                "debtor_id": pa.array(ids),
                "taxpayer_id": taxpayer,
                "name": name,
                "mobile": mobile,
                "tax_office": offices.take(rng.integers(0, len(offices), n)),
                "tax_type": tax_types.take(rng.integers(0, len(tax_types), n)),
                "period": periods.take(rng.integers(0, len(periods), n)),
                "principal": money(cents),
                "paid": money(paid),
                "deadline": pa.array(deadline.astype(np.int32)).cast(pa.date32()),
                "updated_at": pa.array(updated).cast(pa.timestamp("us")),
            }
        )


def generate_debtor_table(
    engine: sa.Engine,
    rows: int,
    *,
    as_of: date,
    seed: int = DEFAULT_SEED,
    table: str = "debtor",
) -> int:
    """Create and fill the wide benchmark debtor table with ``rows`` rows; return the rows.

    Rows are built with numpy and Arrow (no Python loop per row) and bulk loaded: COPY on
    PostgreSQL, LOAD DATA LOCAL INFILE on MariaDB (when the server allows it), executemany on
    SQLite. The same seed gives the same rows on every engine.
    """
    import os
    import tempfile

    import pyarrow.csv as pcsv

    if not table.isidentifier():
        raise ValueError(f"bad table name {table!r}")
    with engine.begin() as conn:
        conn.exec_driver_sql(debtor_table_ddl(table))
    cols = ", ".join(DEBTOR_COLUMNS)
    name = engine.dialect.name
    written = 0
    started = time.perf_counter()
    for block in debtor_blocks(rows, as_of=as_of, seed=seed):
        with engine.begin() as conn:
            raw = conn.connection.dbapi_connection
            if name == "postgresql" and engine.dialect.driver == "psycopg":
                out = io.BytesIO()
                pcsv.write_csv(block, out, pcsv.WriteOptions(include_header=False))
                with raw.cursor() as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN (FORMAT csv)") as copy:
                    copy.write(out.getbuffer())
            elif name in ("mysql", "mariadb") and _local_infile(raw):
                fd, path = tempfile.mkstemp(suffix=".csv")
                os.close(fd)
                try:
                    pcsv.write_csv(block, path, pcsv.WriteOptions(include_header=False))
                    with raw.cursor() as cur:
                        cur.execute(
                            f"LOAD DATA LOCAL INFILE %s INTO TABLE {table} CHARACTER SET utf8mb4 "
                            "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' "
                            f"LINES TERMINATED BY '\\n' ({cols})",
                            (path,),
                        )
                finally:
                    os.unlink(path)
            else:
                data = block.to_pydict()
                if name == "sqlite":
                    for key in ("principal", "paid"):
                        data[key] = [float(v) for v in data[key]]
                    for key in ("deadline", "updated_at"):
                        data[key] = [
                            v.isoformat(sep=" ") if isinstance(v, datetime) else v.isoformat()
                            for v in data[key]
                        ]
                marks = ", ".join(["?" if name == "sqlite" else "%s"] * len(DEBTOR_COLUMNS))
                with raw.cursor() if name != "sqlite" else _closing_cursor(raw) as cur:
                    cur.executemany(
                        f"INSERT INTO {table} ({cols}) VALUES ({marks})",  # noqa: S608
                        list(zip(*(data[c] for c in DEBTOR_COLUMNS), strict=True)),
                    )
        written += block.num_rows
        log.info(
            "debtor: %d/%d rows (%.0f rows/s)",
            written,
            rows,
            written / max(time.perf_counter() - started, 1e-9),
        )
    return written


def _local_infile(raw: Any) -> bool:
    """Return whether a PyMySQL connection may use LOAD DATA LOCAL INFILE."""
    from pymysql.constants import CLIENT

    return bool(getattr(raw, "client_flag", 0) & CLIENT.LOCAL_FILES)


class _closing_cursor:
    def __init__(self, raw: Any) -> None:
        self.cursor = raw.cursor()

    def __enter__(self) -> Any:
        return self.cursor

    def __exit__(self, *exc: object) -> None:
        self.cursor.close()
