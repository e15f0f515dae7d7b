"""Validation of extracted source data with Great Expectations suites kept in include/expectations/.

Checks that Great Expectations cannot express directly (a mobile number's validity by
libphonenumber, a taxpayer id's check character, a row's parent in another table) are first
turned into derived columns by a ``derive_*`` function (``prepare_*`` for pandas frames); the
suite then asserts on those columns. Failing rows are returned with the expectation, the
field, the (masked) value and a reason a person can act on.

Speed: the derived columns are computed with Arrow compute and numpy over whole columns. The
libraries stay the authority: a cheap vectorised pre-check settles only the clean values (an
already clean 11-digit mobile, whose verdict libphonenumber gives once per 5-digit prefix; a
USCC or resident ID whose check characters are right), and every other value goes through
``phones.normalize_mobile`` / ``identifiers.check_taxpayer_id`` once per distinct value.
tests/unit/test_validation.py checks that both paths agree.

Memory: ``validate_parquet`` streams a Parquet file in chunks, validates each chunk with the
suite, writes the good rows out as a Parquet stream and hands the rejected rows to a callback;
the bad-share decision is left to the caller, over the whole file. Duplicate keys are found
over the whole file first (one column), and the rows that carry them are validated together
in a last chunk, so ``expect_column_values_to_be_unique`` sees every copy.

Pipeline: three threads share a run. While GX checks chunk n and its quarantine rows are
built (Python, under the GIL), a second thread reads chunk n+1 and derives its check columns
(Arrow compute and numpy, which release the GIL), and a third writes the good rows of chunk
n-1. At most three chunks are alive at once. The suite, the GX context and its batch
definition are made once per run (``SuiteRunner``); GX's batch fingerprint, an md5 over the
whole chunk that only names the batch in a stored result, is skipped
(``_without_batch_fingerprint``).

Referential integrity: GX 1.x has no cross-table expectation for dataframes (its
``UnexpectedRowsExpectation`` runs SQL on SQL data sources only, i.e. against the live source
rather than the extracted snapshot). The extract queries LEFT JOIN the referenced table and
return its key (``taxpayer_ref``, ``customer_ref``), NULL for an orphan; the derived boolean
``taxpayer_known`` / ``customer_known`` records whether the key was found and the suite
expects it to be true. Orphans are quarantined with a reason instead of vanishing in an inner
join.

Data docs: the per-chunk GX results are merged into one validation result per run (counts
summed, at most 20 sample values, phone-like values masked) and rendered by GX's own
``SiteBuilder`` into a folder (``write_data_docs``).
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import json
import logging
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from include.dunning import identifiers, phones

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

log = logging.getLogger(__name__)

#: Rows per chunk of ``validate_parquet``: about 60 MB of Arrow data for the tax extract.
DEFAULT_CHUNK_ROWS = 250_000
#: Sample values per expectation in the data docs.
DOCS_SAMPLE = 20

Reason = Callable[[str, str, Mapping[str, Any]], tuple[str, str | None]]


@dataclass
class ValidationOutcome:
    """Rows that passed, rows that failed (with reasons), and per-expectation results."""

    good: pd.DataFrame
    rejected: list[dict[str, Any]]
    bad_rows: int
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def bad_share(self) -> float:
        total = len(self.good) + self.bad_rows
        return self.bad_rows / total if total else 0.0


@dataclass
class StreamOutcome:
    """The figures of a streamed validation (``validate_parquet``); the rows went to the sinks."""

    rows: int
    good_rows: int
    bad_rows: int
    rejected_rows: int
    debtors: int
    reviews: int
    chunks: int
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def bad_share(self) -> float:
        return self.bad_rows / self.rows if self.rows else 0.0


def load_suite(name: str) -> dict[str, Any]:
    """Load an expectation suite (JSON) from include/expectations/ by name."""
    text = resources.files("include.expectations").joinpath(f"{name}.json").read_text("utf-8")
    return json.loads(text)


# --------------------------------------------------------------------------------------
# Derived columns, vectorised (Arrow in, Arrow out)
# --------------------------------------------------------------------------------------

_CLEAN_MOBILE = r"^1[3-9][0-9]{9}$"
# phones._SEPARATORS restricted to ASCII: Python's \s on ASCII text is [\t\n\v\f\r\x1c-\x1f ].
_ASCII_SEPARATORS = r"[\t\n\x0b\f\r\x1c-\x1f ().\[\]-]+"
_USCC_SHAPE = r"^[0-9A-HJ-NP-RTUW-Y]{2}[0-9]{6}[0-9A-HJ-NP-RTUW-Y]{10}$"
_RIC_SHAPE = r"^[0-9]{17}[0-9X]$"
_RIC_SUFFIXED_SHAPE = r"^[0-9]{17}[0-9X][0-9]{2}$"
_LEGACY_15_SHAPE = r"^[0-9]{6}[0-9A-Z]{8}[0-9X]$"
_ACCOUNT_SHAPE = r"^(?:[0-9]{10}|[0-9]{13})$"
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)  # GB 32100-2015
_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)  # GB 11714
_RIC_WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))  # ISO 7064 MOD 11-2 (GB 11643)
_ORG_MISMATCH = "embedded organisation code check mismatch"
# The exact per-value functions, cached across chunks (a taxpayer's rows span many chunks).
_check_taxpayer_id = functools.lru_cache(maxsize=65_536)(identifiers.check_taxpayer_id)
_normalize_mobile = functools.lru_cache(maxsize=65_536)(phones.normalize_mobile)
# The same bad number recurs on every liability of its taxpayer (typed: 1 and True differ).
_mobile_problem = functools.lru_cache(maxsize=65_536, typed=True)(phones.mobile_problem)
_mask = functools.lru_cache(maxsize=65_536, typed=True)(phones.mask)


@functools.lru_cache(maxsize=65_536)
def _account_valid(value: str) -> bool:
    return identifiers.account_number(value).valid


def _strings(values: Any) -> pa.Array:
    """Return a column as one Arrow string array (integers are read as their digits)."""
    import pyarrow as pa

    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    if not isinstance(values, pa.Array):
        values = pa.array(values, from_pandas=True)
    if not pa.types.is_string(values.type):
        values = values.cast(pa.string())
    return values


def _fill(length: int, positions: Any, values: list[Any], type_: pa.DataType) -> pa.Array:
    """Return an array of ``length`` nulls with ``values`` at ``positions``."""
    import numpy as np
    import pyarrow as pa

    slots = np.full(length, None, dtype=object)
    if len(positions):
        slots[positions] = values
    return pa.array(slots, type_)


def _distinct(values: Any) -> tuple[pa.Array, pa.Array]:
    """Return (distinct non-null values, index of each row's value, null for null rows)."""
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(_strings(values))
    return encoded.dictionary, encoded.indices


def _normalize_distinct(distinct: pa.Array) -> pa.Array:
    """``phones.normalize_mobile`` over distinct raw values (see ``mobile_normalized``)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    cleaned = pc.replace_substring_regex(distinct, _ASCII_SEPARATORS, "")
    stripped = pc.if_else(
        pc.starts_with(cleaned, "+86"),
        pc.utf8_slice_codeunits(cleaned, 3),
        pc.if_else(
            pc.starts_with(cleaned, "0086"),
            pc.utf8_slice_codeunits(cleaned, 4),
            pc.if_else(
                pc.and_(pc.equal(pc.utf8_length(cleaned), 13), pc.starts_with(cleaned, "86")),
                pc.utf8_slice_codeunits(cleaned, 2),
                cleaned,
            ),
        ),
    )
    settled = pc.and_(pc.string_is_ascii(distinct), pc.match_substring_regex(stripped, _CLEAN_MOBILE))
    settled_np = settled.to_numpy(zero_copy_only=False)
    # libphonenumber's verdict depends on the first 5 digits only: ask once per prefix.
    prefixes = pc.dictionary_encode(pc.utf8_slice_codeunits(stripped.filter(settled), 0, 5))
    verdict = np.array(
        [phones.normalize_mobile(p.ljust(11, "0")) is not None for p in prefixes.dictionary.to_pylist()],
        dtype=bool,
    )
    usable = np.zeros(len(distinct), dtype=bool)
    if len(verdict):
        usable[settled_np] = verdict[prefixes.indices.to_numpy(zero_copy_only=False)]
    fast = pc.if_else(pa.array(usable), stripped, pa.scalar(None, pa.string()))
    rest = np.flatnonzero(~settled_np)
    if not len(rest):
        return fast
    slow = [_normalize_mobile(v) for v in distinct.take(pa.array(rest)).to_pylist()]
    return pc.coalesce(fast, _fill(len(distinct), rest, slow, pa.string()))


def mobile_normalized(values: Any) -> pa.Array:
    """Return ``phones.normalize_mobile`` of every value as an Arrow string array (null if invalid).

    Works per distinct value. Clean 11-digit numbers and ASCII numbers with separators or a
    +86 / 0086 / 86 prefix are normalised by Arrow compute, with libphonenumber's verdict
    asked once per 5-digit prefix; every other value (full-width digits, letters, odd
    lengths) goes through ``phones.normalize_mobile`` itself.

    :param values: an Arrow array, a pandas Series or a list of raw phone values
    """
    distinct, index = _distinct(values)
    return _normalize_distinct(distinct).take(index)


def _char_matrix(strings: pa.Array, width: int) -> Any:
    """Return the bytes of non-null strings of ``width`` bytes each as an (n, width) uint8 matrix.

    A view of the array's data buffer (its values lie end to end), no Python strings made.
    """
    import numpy as np

    if not len(strings):
        return np.zeros((0, width), dtype=np.uint8)
    _validity, offsets, data = strings.buffers()
    bounds = np.frombuffer(offsets, dtype=np.int32)[strings.offset : strings.offset + len(strings) + 1]
    start, end = int(bounds[0]), int(bounds[-1])
    if end - start != width * len(strings):
        raise ValueError(f"strings of {width} bytes expected")
    return np.frombuffer(data, dtype=np.uint8)[start:end].reshape(-1, width)


def _lookup(alphabet: str, values: Iterable[int]) -> Any:
    import numpy as np

    table = np.full(256, -1, dtype=np.int64)
    for ch, value in zip(alphabet, values, strict=True):
        table[ord(ch)] = value
    return table


_USCC_VALUE = _lookup(identifiers.USCC_ALPHABET, range(len(identifiers.USCC_ALPHABET)))
_BASE36_VALUE = _lookup("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", range(36))


def _org_code_ok(matrix: Any) -> Any:
    """Return whether 9-char organisation codes (GB 11714, ``[0-9A-Z]{8}`` + check) check out."""
    import numpy as np

    total = (_BASE36_VALUE[matrix[:, :8]] * np.array(_ORG_WEIGHTS)).sum(axis=1)
    check = 11 - total % 11
    expected = np.where(check == 10, ord("X"), np.where(check == 11, ord("0"), ord("0") + check))
    return matrix[:, 8] == expected


def _uscc_checks(matrix: Any) -> tuple[Any, Any]:
    """Return (USCC check character right, embedded organisation code check right) per row."""
    import numpy as np

    values = _USCC_VALUE[matrix]
    total = (values[:, :17] * np.array(_USCC_WEIGHTS)).sum(axis=1)
    uscc_ok = (31 - total % 31) % 31 == values[:, 17]
    return uscc_ok, _org_code_ok(matrix[:, 8:17])


def _ric_ok(matrix: Any) -> Any:
    """Return whether 18-char resident ID numbers have a real birth date and the right check digit."""
    import numpy as np

    digits = matrix[:, :17].astype(np.int64) - ord("0")
    total = (digits * np.array(_RIC_WEIGHTS)).sum(axis=1)
    last = matrix[:, 17]
    actual = np.where(last == ord("X"), 10, last.astype(np.int64) - ord("0"))
    year = digits[:, 6:10] @ np.array([1000, 100, 10, 1])
    month = digits[:, 10:12] @ np.array([10, 1])
    day = digits[:, 12:14] @ np.array([10, 1])
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_days = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])[np.clip(month, 1, 12) - 1]
    month_days = month_days + ((month == 2) & leap)
    real_date = (month >= 1) & (month <= 12) & (day >= 1) & (day <= month_days) & (year >= 1)
    born_ok = real_date & (year >= identifiers.MIN_BIRTH_YEAR)
    return born_ok & ((1 - total) % 11 == actual)


def taxpayer_id_checks(values: Any) -> tuple[pa.Array, pa.Array, pa.Array]:
    """Return (ok, review, reason) arrays of ``identifiers.check_taxpayer_id`` for every value.

    ``ok`` is ``valid or review`` (a review case is kept and flagged). Works per distinct value:
    USCCs and resident ID numbers whose check characters are right are settled with numpy;
    everything else goes through ``identifiers.check_taxpayer_id``. A null is ``"empty"``.

    :param values: an Arrow array, a pandas Series or a list of raw taxpayer ids
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    distinct, index = _distinct(values)
    k = len(distinct)
    ok = np.zeros(k, dtype=bool)
    review = np.zeros(k, dtype=bool)
    reasons: list[Any] = []
    settled = np.zeros(k, dtype=bool)
    uscc_shape = np.flatnonzero(
        pc.match_substring_regex(distinct, _USCC_SHAPE).to_numpy(zero_copy_only=False)
    )
    if len(uscc_shape):
        uscc_ok, org_ok = _uscc_checks(_char_matrix(distinct.take(pa.array(uscc_shape)), 18))
        good = uscc_shape[uscc_ok]
        settled[good] = ok[good] = True
        review[good] = ~org_ok[uscc_ok]
    for shape, width, passes in (
        (_RIC_SHAPE, 18, _ric_ok),
        (_RIC_SUFFIXED_SHAPE, 20, lambda m: _ric_ok(m[:, :18])),
        (_LEGACY_15_SHAPE, 15, lambda m: _org_code_ok(m[:, 6:15])),
    ):
        rows = pc.match_substring_regex(distinct, shape).to_numpy(zero_copy_only=False)
        rows = np.flatnonzero(rows & ~settled)
        if len(rows):
            good = rows[passes(_char_matrix(distinct.take(pa.array(rows)), width))]
            settled[good] = ok[good] = True
    rest = np.flatnonzero(~settled)
    checks = [_check_taxpayer_id(v) for v in distinct.take(pa.array(rest)).to_pylist()]
    ok[rest] = [c.valid or c.review for c in checks]
    review[rest] = [c.review for c in checks]
    reasons = [c.reason for c in checks]
    reason = pc.if_else(
        pa.array(review & settled), pa.scalar(_ORG_MISMATCH), _fill(k, rest, reasons, pa.string())
    )
    return (
        pc.fill_null(pa.array(ok).take(index), False),
        pc.fill_null(pa.array(review).take(index), False),
        pc.if_else(pc.is_null(index), pa.scalar("empty"), reason.take(index)),
    )


def account_ok(values: Any) -> pa.Array:
    """Return ``identifiers.account_number(v).valid`` for every value (null: False), per distinct value."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    distinct, index = _distinct(values)
    verdict = pc.match_substring_regex(distinct, _ACCOUNT_SHAPE).to_numpy(zero_copy_only=False).copy()
    rest = np.flatnonzero(~verdict)
    verdict[rest] = [_account_valid(v) for v in distinct.take(pa.array(rest)).to_pylist()]
    return pc.fill_null(pa.array(verdict).take(index), False)


def _floats(values: Any) -> pa.Array:
    """Return numbers as float64 (null where missing or not a number)."""
    import pandas as pd
    import pyarrow as pa

    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if (
        pa.types.is_integer(values.type)
        or pa.types.is_floating(values.type)
        or pa.types.is_decimal(values.type)
    ):
        return values.cast(pa.float64())
    if pa.types.is_null(values.type):
        return pa.nulls(len(values), pa.float64())
    series = pd.to_numeric(pd.Series(values.to_pandas()).astype("string"), errors="coerce")
    return pa.array(series.astype("float64"), pa.float64(), from_pandas=True)


def _dates(values: Any) -> pa.Array:
    """Return dates as date32 (null where missing or not a date)."""
    import pandas as pd
    import pyarrow as pa

    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_date(values.type) or pa.types.is_timestamp(values.type):
        return values.cast(pa.date32())
    if pa.types.is_null(values.type):
        return pa.nulls(len(values), pa.date32())
    parsed = pd.to_datetime(pd.Series(values.to_pandas()).astype("string"), errors="coerce")
    return pa.array(parsed.dt.date, pa.date32(), from_pandas=True)


def _days_since(values: Any, as_of: date) -> pa.Array:
    """Return ``as_of - date`` in days as int32 (null where the date is missing)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    epoch = (as_of - date(1970, 1, 1)).days
    days = _dates(values).cast(pa.int32())
    return pc.subtract(pa.scalar(epoch, pa.int32()), days)


def _blank_to_null(values: Any) -> pa.Array:
    """Return text trimmed of whitespace, with blank values as null."""
    import pyarrow as pa
    import pyarrow.compute as pc

    trimmed = pc.utf8_trim_whitespace(_strings(values))
    return pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)


def _known(table: pa.Table, ref: str, child: str) -> pa.Array:
    """Return whether each row's parent was found by the extract's LEFT JOIN (``ref`` not null)."""
    if ref not in table.column_names:
        raise ValueError(
            f"column {ref!r} missing: the extract must LEFT JOIN the table {child} refers to and "
            f"return its key as {ref} (referential-integrity check)"
        )
    import pyarrow.compute as pc

    return pc.is_valid(table[ref]).combine_chunks()


def _with(table: pa.Table, columns: Mapping[str, Any]) -> pa.Table:
    """Return ``table`` with columns replaced or appended."""
    for name, values in columns.items():
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, values)
        else:
            table = table.append_column(name, values)
    return table


def derive_levy_overdue(table: pa.Table, as_of: date) -> pa.Table:
    """Add the derived check columns the ``levy_overdue_liabilities`` suite asserts on (Arrow)."""
    ok, review, reason = taxpayer_id_checks(table["taxpayer_id"])
    # Overdue is counted from the original deadline: a deferred liability is still overdue data.
    original = "original_deadline" if "original_deadline" in table.column_names else "deadline"
    return _with(
        table,
        {
            "mobile_normalized": mobile_normalized(table["mobile"]),
            "taxpayer_id_ok": ok,
            "taxpayer_id_review": review,
            "taxpayer_id_reason": reason,
            "outstanding_yuan": _floats(table["outstanding"]),
            "days_overdue": _days_since(table[original], as_of),
            "taxpayer_name": _blank_to_null(table["taxpayer_name"]),
            "taxpayer_known": _known(table, "taxpayer_ref", "taxpayer_id"),
        },
    )


def derive_levy_filing(table: pa.Table, as_of: date) -> pa.Table:
    """Add the derived check columns the ``levy_filing_status`` suite asserts on (Arrow)."""
    ok, _review, reason = taxpayer_id_checks(table["taxpayer_id"])
    return _with(
        table,
        {
            "mobile_normalized": mobile_normalized(table["mobile"]),
            "taxpayer_id_ok": ok,
            "taxpayer_id_reason": reason,
            "deadline_date": _dates(table["deadline"]),
            "period": _strings(table["period"]),
            "taxpayer_name": _blank_to_null(table["taxpayer_name"]),
            "taxpayer_known": _known(table, "taxpayer_ref", "taxpayer_id"),
        },
    )


def derive_billing_items(table: pa.Table, as_of: date) -> pa.Table:
    """Add the derived check columns the ``billing_dunning_items`` suite asserts on (Arrow)."""
    import pyarrow.compute as pc

    outstanding = _floats(table["outstanding"])
    balance = _floats(table["balance"])
    due = _dates(table["due_date"])
    is_bill = pc.fill_null(pc.equal(_strings(table["kind"]), "bill"), False)
    # A bill needs an amount and a due date; a balance alert needs a balance.
    complete = pc.or_(
        pc.and_(is_bill, pc.and_(pc.is_valid(outstanding), pc.is_valid(due))),
        pc.and_(pc.invert(is_bill), pc.is_valid(balance)),
    )
    return _with(
        table,
        {
            "mobile_normalized": mobile_normalized(table["mobile"]),
            "account_ok": account_ok(table["account_no"]),
            "outstanding_yuan": outstanding,
            "balance_yuan": balance,
            "days_overdue": _days_since(due, as_of),
            "item_complete": complete,
            "name": _blank_to_null(table["name"]),
            "customer_known": _known(table, "customer_ref", "account_no"),
        },
    )


#: The derive function of each suite.
DERIVERS: dict[str, Callable[[pa.Table, date], pa.Table]] = {
    "levy_overdue_liabilities": derive_levy_overdue,
    "levy_filing_status": derive_levy_filing,
    "billing_dunning_items": derive_billing_items,
}


def _arrow(df: pd.DataFrame) -> pa.Table:
    """Return a pandas frame as an Arrow table; mixed-type text columns are read as strings."""
    import pyarrow as pa

    try:
        return pa.Table.from_pandas(df, preserve_index=False)
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        mixed = {c: df[c].astype("string") for c in df.columns if df[c].dtype == object}
        return pa.Table.from_pandas(df.assign(**mixed), preserve_index=False)


def prepare_levy_overdue(df: pd.DataFrame, as_of: date) -> pd.DataFrame:
    """Add the derived check columns the ``levy_overdue_liabilities`` suite asserts on."""
    return derive_levy_overdue(_arrow(df), as_of).to_pandas()


def prepare_levy_filing(df: pd.DataFrame, as_of: date) -> pd.DataFrame:
    """Add the derived check columns the ``levy_filing_status`` suite asserts on."""
    return derive_levy_filing(_arrow(df), as_of).to_pandas()


def prepare_billing_items(df: pd.DataFrame, as_of: date) -> pd.DataFrame:
    """Add the derived check columns the ``billing_dunning_items`` suite asserts on."""
    return derive_billing_items(_arrow(df), as_of).to_pandas()


# --------------------------------------------------------------------------------------
# Reasons
# --------------------------------------------------------------------------------------


def _reason(expectation: str, column: str, row: Mapping[str, Any]) -> tuple[str, str | None]:
    """Return (reason, value safe to store) for one failed cell."""
    if column == "mobile_normalized":
        raw = row["mobile"]
        try:
            problem = _mobile_problem(raw)
        except TypeError:  # an unhashable value from a hand-made frame
            problem = phones.mobile_problem(raw)
        return f"mobile {problem or 'invalid'}", _mask(str(raw or ""))
    if column == "taxpayer_id_ok":
        return f"taxpayer id {row['taxpayer_id_reason'] or 'invalid'}", str(row["taxpayer_id"])
    if column == "taxpayer_known":
        return "taxpayer not in the taxpayer table (orphan row)", str(row["taxpayer_id"])
    if column == "customer_known":
        return "account not in the customer table (orphan row)", str(row["account_no"])
    if column == "outstanding_yuan":
        return "outstanding amount negative, zero or above the configured bound", str(row["outstanding"])
    if column == "days_overdue":
        when = row.get("original_deadline", row.get("deadline", row.get("due_date")))
        return "deadline missing or implausible", str(when)
    if column in ("taxpayer_name", "name"):
        return "name missing", None
    if column == "account_ok":
        return "account number (户号) not 10 or 13 digits", str(row["account_no"])
    if column == "customer_class":
        return "customer class neither residential nor non_residential", str(row["customer_class"])
    if column == "deadline_date":
        return "filing deadline missing or not a date", str(row.get("deadline"))
    if column == "period":
        return "period not YYYY-MM", str(row.get("period"))
    if column == "item_complete":
        return "bill without amount or due date, or balance missing", None
    if expectation == "expect_column_values_to_be_unique":
        return f"duplicate {column}", str(row[column])
    return f"{expectation} failed on {column}", str(row.get(column))


# --------------------------------------------------------------------------------------
# Running a suite: chunk by chunk, merged results, data docs
# --------------------------------------------------------------------------------------

#: Columns with (nearly) one value per row: no Parquet dictionary encoding for them.
_UNIQUE_ISH = frozenset(
    {
        "mobile", "mobile_normalized", "taxpayer_id", "taxpayer_ref", "taxpayer_name", "name",
        "account_no", "customer_ref", "item_id",
    }
)  # fmt: skip
_PHONE_COLUMNS = frozenset({"mobile", "mobile_normalized", "phone"})
_PHONE_RUN = re.compile(r"(?<![0-9])(?:\+?86)?1[0-9]{10}(?![0-9])")
_COUNT_KEYS = ("element_count", "missing_count", "unexpected_count")


def _docs_value(column: str | None, value: Any) -> Any:
    """Return a sample value as it may appear in the data docs: never a full phone number."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if column in _PHONE_COLUMNS:
        return phones.mask(str(value))
    if isinstance(value, str):
        return _PHONE_RUN.sub(lambda m: phones.mask(m.group(0)), value)
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return value.item() if hasattr(value, "item") else value


class _Rows(Mapping):
    """Rows of an Arrow table by position, each a mapping whose columns are read on first use."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self.columns: dict[str, list[Any]] = {}

    def value(self, position: int, name: str) -> Any:
        if name not in self.columns:
            if name not in self.table.column_names:
                raise KeyError(name)
            self.columns[name] = self.table[name].to_pylist()
        return self.columns[name][position]

    def __getitem__(self, position: int) -> Mapping[str, Any]:
        return _Row(self, position)

    def __iter__(self) -> Any:
        return iter(range(self.table.num_rows))

    def __len__(self) -> int:
        return self.table.num_rows


class _Row(Mapping):
    def __init__(self, rows: _Rows, position: int) -> None:
        self.rows = rows
        self.position = position

    def __getitem__(self, name: str) -> Any:
        return self.rows.value(self.position, name)

    def __iter__(self) -> Any:
        return iter(self.rows.table.column_names)

    def __len__(self) -> int:
        return len(self.rows.table.column_names)


@dataclass
class _Failure:
    expectation: str
    column: str
    positions: list[int]


@dataclass
class _Merged:
    """One expectation's results summed over the chunks, with masked samples for the data docs."""

    expectation: str
    column: str | None
    success: bool = True
    counts: Counter = field(default_factory=Counter)
    samples: list[Any] = field(default_factory=list)


_FINGERPRINT_LOCK = threading.Lock()


@contextmanager
def _without_batch_fingerprint() -> Iterator[None]:
    """Let GX's pandas engine skip the batch fingerprint while validating a chunk.

    For every batch under ``HASH_THRESHOLD`` bytes GX stores an md5 over
    ``pandas.util.hash_pandas_object`` of the whole frame in the batch markers: two thirds
    of the suite's time on a 250,000-row chunk (Arrow-backed string columns hash slowly).
    The fingerprint identifies a batch in a stored result only; the merged result of the
    chunks has no batch markers. GX itself skips it for frames of 1 GB and more; the
    threshold is lowered to 0 for the time of the call and restored after it.
    """
    from great_expectations.execution_engine import pandas_execution_engine as engine

    with _FINGERPRINT_LOCK:
        threshold = engine.HASH_THRESHOLD
        engine.HASH_THRESHOLD = 0
        try:
            yield
        finally:
            engine.HASH_THRESHOLD = threshold


class SuiteRunner:
    """A GX suite ready to validate chunk after chunk; keeps the merged results for the data docs.

    :param suite: the suite as loaded by ``load_suite`` (kwargs may be overridden by the caller)
    :param key_column: the column that names a row in the quarantine table
    :param reason: maps (expectation, column, row) to a reason and a safe value to keep
    """

    def __init__(self, suite: Mapping[str, Any], *, key_column: str, reason: Reason = _reason) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.name = suite["name"]
        self.key_column = key_column
        self.reason = reason
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        asset = self.context.data_sources.add_pandas("dunning").add_dataframe_asset(self.name)
        self.batch_definition = asset.add_batch_definition_whole_dataframe("chunk")
        expectations = [_expectation(gx, spec) for spec in suite["expectations"]]
        self.suite = self.context.suites.add(gx.ExpectationSuite(name=self.name, expectations=expectations))
        columns = [spec["kwargs"].get("column") for spec in suite["expectations"]]
        self.columns = list(dict.fromkeys([key_column, *(c for c in columns if c)]))
        self.merged: list[_Merged] = []
        self._template: Any = None
        self.chunks = 0

    def check(self, frame: pd.DataFrame) -> list[_Failure]:
        """Validate one chunk (positions 0..n-1) and return the failing positions per expectation."""
        from great_expectations.validator.v1_validator import Validator

        frame = frame.reset_index(drop=True)
        # What ``Batch.validate`` runs, without first building the batch a second time (each
        # build fingerprints the whole frame).
        validator = Validator(
            batch_definition=self.batch_definition,
            batch_parameters={"dataframe": frame},
            result_format="COMPLETE",
        )
        with _without_batch_fingerprint():
            result = validator.validate_expectation_suite(self.suite)
        self.chunks += 1
        failures = []
        for i, item in enumerate(result.results):
            config = item.expectation_config
            column = config.kwargs.get("column")
            positions = [int(p) for p in item.result.get("unexpected_index_list") or []]
            if positions:
                failures.append(_Failure(config.type, column, positions))
            if len(self.merged) <= i:
                self.merged.append(_Merged(config.type, column))
            merged = self.merged[i]
            merged.success = merged.success and bool(item.success)
            for key in _COUNT_KEYS:
                merged.counts[key] += int(item.result.get(key) or 0)
            room = DOCS_SAMPLE - len(merged.samples)
            if room > 0:
                merged.samples += [
                    _docs_value(column, v) for v in (item.result.get("partial_unexpected_list") or [])[:room]
                ]
            # Keep only the small parts of the first result, as the frame of the merged one.
            item.result = {}
        if self._template is None:
            self._template = result
        return failures

    def rejections(
        self, failures: list[_Failure], rows: Mapping[int, Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """Return the quarantine rows of a chunk's failures (``rows``: position -> row)."""
        out = []
        for failure in failures:
            for position in failure.positions:
                row = rows[position]
                why, value = self.reason(failure.expectation, failure.column, row)
                out.append(
                    {
                        "record_key": str(row[self.key_column]),
                        "field": failure.column,
                        "expectation": failure.expectation,
                        "bad_value": None if value is None else value[:200],
                        "reason": why[:300],
                    }
                )
        return out

    def summaries(self) -> list[dict[str, Any]]:
        """Return per expectation: type, column, success over all chunks, unexpected count."""
        return [
            {
                "expectation": m.expectation,
                "column": m.column,
                "success": m.success,
                "unexpected": m.counts["unexpected_count"],
            }
            for m in self.merged
        ]

    def merged_result(self) -> Any:
        """Return one GX validation result for all chunks: counts summed, masked samples only."""
        if self._template is None:
            raise ValueError(f"suite {self.name}: nothing validated yet")
        result = copy.deepcopy(self._template)
        for item, merged in zip(result.results, self.merged, strict=True):
            element, missing, unexpected = (merged.counts[k] for k in _COUNT_KEYS)
            nonmissing = element - missing
            percent = 100.0 * unexpected / nonmissing if nonmissing else 0.0
            samples = merged.samples
            counted = Counter(json.dumps(v, ensure_ascii=False, default=str) for v in samples)
            item.success = merged.success
            item.result = {
                "element_count": element,
                "missing_count": missing,
                "missing_percent": 100.0 * missing / element if element else 0.0,
                "unexpected_count": unexpected,
                "unexpected_percent": percent,
                "unexpected_percent_total": 100.0 * unexpected / element if element else 0.0,
                "unexpected_percent_nonmissing": percent,
                "partial_unexpected_list": samples,
                "partial_unexpected_counts": [
                    {"value": json.loads(v), "count": n} for v, n in counted.most_common()
                ],
            }
        evaluated = len(result.results)
        successful = sum(1 for m in self.merged if m.success)
        result.success = successful == evaluated
        result.statistics.update(
            {
                "evaluated_expectations": evaluated,
                "successful_expectations": successful,
                "unsuccessful_expectations": evaluated - successful,
                "success_percent": 100.0 * successful / evaluated if evaluated else 100.0,
            }
        )
        result.meta["batch_spec"] = {"batch_data": f"{self.chunks} chunk(s) of the extract"}
        result.meta["batch_markers"] = {}
        return result

    def write_data_docs(self, folder: str | Path, *, run_name: str) -> Path:
        """Render the merged result and the suite with GX's own site builder into ``folder``.

        :return: the site's ``index.html``
        """
        from great_expectations.core.run_identifier import RunIdentifier
        from great_expectations.data_context.types.resource_identifiers import (
            ExpectationSuiteIdentifier,
            ValidationResultIdentifier,
        )

        folder = Path(folder)
        site = "dunning_run"
        self.context.add_data_docs_site(
            site_name=site,
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(folder)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
        key = ValidationResultIdentifier(
            expectation_suite_identifier=ExpectationSuiteIdentifier(name=self.name),
            run_id=RunIdentifier(run_name=run_name),
            batch_identifier=self.name,
        )
        self.context.validation_results_store.set(key, self.merged_result())
        self.context.build_data_docs(site_names=[site])
        _drop_unused_assets(folder)
        return folder / "index.html"


def _drop_unused_assets(folder: Path) -> None:
    """Delete the site's static images that no page refers to (GX ships 4 MB of tutorial GIFs)."""
    pages = "".join(p.read_text("utf-8", errors="replace") for p in folder.rglob("*.html"))
    pages += "".join(p.read_text("utf-8", errors="replace") for p in folder.rglob("*.css"))
    for image in (folder / "static" / "images").glob("*"):
        if image.is_file() and image.name not in pages:
            image.unlink()


def _expectation(gx: Any, spec: dict[str, Any]) -> Any:
    class_name = "".join(part.capitalize() for part in spec["type"].split("_"))
    try:
        cls = getattr(gx.expectations, class_name)
    except AttributeError:
        raise ValueError(f"unknown expectation type {spec['type']!r} in suite") from None
    return cls(**spec["kwargs"])


def validate_frame(
    df: pd.DataFrame,
    suite: dict[str, Any],
    *,
    key_column: str,
    reason: Reason = _reason,
) -> ValidationOutcome:
    """Validate a prepared frame against a suite and split it into good and rejected rows.

    For frames that fit in memory; ``validate_parquet`` streams a file in chunks.

    :param df: the prepared frame (see the ``prepare_*`` functions)
    :param suite: the suite as loaded by ``load_suite`` (kwargs may be overridden by the caller)
    :param key_column: the column that names a row in the quarantine table
    :param reason: maps (expectation, column, row) to a reason and a safe value to keep
    """
    runner = SuiteRunner(suite, key_column=key_column, reason=reason)
    frame = df.reset_index(drop=True)
    failures = runner.check(frame[runner.columns])
    bad = sorted({p for f in failures for p in f.positions})
    rows = dict(zip(bad, frame.iloc[bad].to_dict("records"), strict=True))
    rejected = runner.rejections(failures, rows)
    good = frame.drop(index=bad)
    return ValidationOutcome(good=good, rejected=rejected, bad_rows=len(bad), results=runner.summaries())


def _duplicated(keys: pa.ChunkedArray) -> pa.Array:
    """Return the values that occur more than once (by sorting: no hash table of every key)."""
    import pyarrow.compute as pc

    keys = keys.combine_chunks() if keys.num_chunks != 1 else keys.chunk(0)
    if len(keys) < 2:
        return keys.slice(0, 0)
    ordered = keys.take(pc.sort_indices(keys))
    later = ordered.slice(1)
    repeated = pc.fill_null(pc.equal(later, ordered.slice(0, len(ordered) - 1)), False)
    return pc.unique(later.filter(repeated))


def validate_parquet(
    source: str | Path | IO[bytes],
    suite: Mapping[str, Any],
    *,
    as_of: date,
    key_column: str,
    debtor_column: str,
    good_sink: str | Path | IO[bytes],
    on_rejected: Callable[[list[dict[str, Any]]], None],
    derive: Callable[[pa.Table, date], pa.Table] | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    reason: Reason = _reason,
    runner: SuiteRunner | None = None,
) -> StreamOutcome:
    """Validate a Parquet file chunk by chunk: good rows to ``good_sink``, rejected rows to ``on_rejected``.

    Memory stays flat in the file's size: at most three chunks at a time (being written,
    checked, and read ahead with its derived columns), plus the key column once (to find
    duplicate keys over the whole file) and the rows carrying a duplicate key, which are
    validated together as the last chunk. Chunks are checked, handed to ``on_rejected`` and
    written strictly in file order; an error in any of them stops the run with that error.
    The good rows keep the source's columns and gain the derived ones. The caller decides on
    the bad share (``StreamOutcome.bad_share``) and publishes ``good_sink`` only if it
    accepts it.

    :param source: the extracted Parquet file (path or seekable binary file)
    :param suite: the suite as loaded by ``load_suite``
    :param as_of: the run's as-of date
    :param key_column: the column that names a row (must be unique)
    :param debtor_column: the column that names a debtor (distinct values are counted)
    :param good_sink: where the good rows are written as Parquet (path or binary file)
    :param on_rejected: called with each chunk's quarantine rows
    :param derive: adds the derived check columns; default: ``DERIVERS[suite["name"]]``
    :param chunk_rows: rows per chunk
    :param reason: maps (expectation, column, row) to a reason and a safe value to keep
    :param runner: a prepared ``SuiteRunner`` (to write the data docs afterwards), else one is made
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    derive = derive or DERIVERS[suite["name"]]
    runner = runner or SuiteRunner(suite, key_column=key_column, reason=reason)
    # No pre-buffering: it keeps every column chunk read so far, and memory grows with the file.
    parquet = pq.ParquetFile(source, pre_buffer=False)
    rows = parquet.metadata.num_rows
    duplicated = _duplicated(parquet.read(columns=[key_column]).column(0))
    debtor_values = parquet.read(columns=[debtor_column]).column(0)
    pool = pa.default_memory_pool()
    figures = Counter()
    writer: Any = None
    pending: Any = None
    writes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="valid-parquet")
    prepares = ThreadPoolExecutor(max_workers=1, thread_name_prefix="valid-derive")

    def chunks() -> Iterator[pa.Table]:
        """Yield the file's chunks without the duplicate-key rows, then those rows together."""
        held: list[pa.Table] = []
        yielded = False
        for batch in parquet.iter_batches(batch_size=chunk_rows):
            table = pa.Table.from_batches([batch])
            del batch
            if len(duplicated):
                is_duplicate = pc.is_in(table[key_column], value_set=duplicated)
                held.append(table.filter(is_duplicate))
                table = table.filter(pc.invert(is_duplicate))
            yielded = True
            yield table
            del table
            pool.release_unused()  # hand freed chunk memory back: peak RSS stays flat
        if held or not yielded:
            yield pa.concat_tables(held) if held else parquet.schema_arrow.empty_table()

    source_chunks = chunks()

    def prepare_next() -> tuple[pa.Table, pd.DataFrame] | None:
        """Read the next chunk and add the derived columns (Arrow and numpy: mostly without the GIL)."""
        table = next(source_chunks, None)
        if table is None:
            return None
        prepared = derive(table, as_of)
        return prepared, prepared.select(runner.columns).to_pandas()

    def process(prepared: pa.Table, frame: pd.DataFrame) -> None:
        nonlocal writer, pending
        failures = runner.check(frame)
        del frame
        bad = np.zeros(prepared.num_rows, dtype=bool)
        positions = sorted({p for f in failures for p in f.positions})
        bad[positions] = True
        picked = _Rows(prepared.take(pa.array(positions, pa.int64())))
        rejected = runner.rejections(failures, {p: picked[i] for i, p in enumerate(positions)})
        if rejected:
            on_rejected(rejected)
        good = prepared.filter(pa.array(~bad))
        if pending is not None:
            pending.result()
        if writer is None:
            # Dictionary pages only for the repetitive columns (not for the (nearly) unique
            # ones, nor for amounts); no statistics (readers stream the whole file): a third
            # less time writing.
            writer = pq.ParquetWriter(
                good_sink,
                good.schema,
                compression="snappy",
                use_dictionary=[
                    f.name
                    for f in good.schema
                    if f.name not in _UNIQUE_ISH | {key_column}
                    and not (pa.types.is_decimal(f.type) or pa.types.is_floating(f.type))
                ],
                write_statistics=False,
            )
        # Written by a second thread (Arrow releases the GIL) while the next chunk is checked.
        pending = writes.submit(
            writer.write_table, good if good.schema.equals(writer.schema) else good.cast(writer.schema)
        )
        figures["good"] += good.num_rows
        figures["bad"] += len(positions)
        figures["rejected"] += len(rejected)
        if "taxpayer_id_review" in good.column_names:
            figures["reviews"] += pc.sum(good["taxpayer_id_review"]).as_py() or 0

    try:
        # The next chunk is read and derived by a second thread while GX checks this one.
        ahead = prepares.submit(prepare_next)
        # Counted while the first chunk is read and derived (the file is read by one thread at a time).
        debtors = _count_distinct(debtor_values)
        del debtor_values
        pool.release_unused()
        while (item := ahead.result()) is not None:
            ahead = prepares.submit(prepare_next)
            process(*item)
            del item
        if pending is not None:
            pending.result()
    finally:
        prepares.shutdown(wait=True)
        source_chunks.close()
        writes.shutdown(wait=True)
        if writer is not None:
            writer.close()
    return StreamOutcome(
        rows=rows,
        good_rows=figures["good"],
        bad_rows=figures["bad"],
        rejected_rows=figures["rejected"],
        debtors=debtors,
        reviews=figures["reviews"],
        chunks=runner.chunks,
        results=runner.summaries(),
    )


def _count_distinct(values: pa.ChunkedArray) -> int:
    """Return how many distinct non-null values a column has."""
    import pyarrow.compute as pc

    # ``unique`` over the chunks is about twice as fast as the ``count_distinct`` aggregation.
    return len(pc.unique(values)) - (1 if values.null_count else 0)
