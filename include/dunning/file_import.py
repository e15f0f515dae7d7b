"""Import contact and debtor lists from the files staff hand over: .txt, .csv, .tsv and .xlsx.

A file is imported whole or not at all. What cannot be read as a list at all (an unknown
encoding, a corrupt workbook, an empty file, a header without rows, a missing required
column) raises :class:`FileImportError` with one line, ``"<file name>: <problem>"``, and
nothing is returned. Within a readable file every row ends up either in
:attr:`ImportResult.accepted` or in :attr:`ImportResult.rejected` with its row number and
reason; nothing is dropped silently.

Text files: the encoding is detected with charset-normalizer among the encodings this
project supports (UTF-8 with or without BOM, GBK/GB18030, UTF-16/32 with BOM). GBK is a
subset of GB18030 (the two-byte codes are identical), so Chinese text is always decoded as
GB18030 and reported as ``gbk`` when it also is valid GBK; a file with GB18030-only
characters (CJK extension A/B, four-byte codes) therefore decodes right. Restricting the
detector to these candidates is deliberate: asked freely, it calls a short GBK list such as
``手机\\n138...`` Korean (cp949) or Big5. Delimiters (tab, full-width comma ``，``, ``|``,
``,``, ``;``) are sniffed from the first lines; a file with none is one value per line.
A header is recognised by its column names; a file whose first line holds a phone-like
number has no header and its phone column is found by content.

Row numbers are 1-based physical line numbers (text) or sheet row numbers (Excel), so staff
can find a rejected row in the file they sent.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import charset_normalizer
import numpy as np
import pandas as pd

from include.dunning import phones
from include.dunning.identifiers import account_number, check_taxpayer_id
from include.dunning.money import parse_amount

__all__ = [
    "ACCEPTED_COLUMNS",
    "FIELDS",
    "ColumnMapping",
    "FileImportError",
    "ImportResult",
    "read_contact_file",
]

log = logging.getLogger(__name__)

#: Target fields of a contact list, in output order.
FIELDS = ("phone", "name", "debtor_id", "amount", "note")
#: Columns of :attr:`ImportResult.accepted`.
ACCEPTED_COLUMNS = ("phone", "name", "debtor_id", "debtor_id_review", "amount", "note", "source_rows")

TEXT_EXTENSIONS = frozenset({".txt", ".csv", ".tsv"})
EXCEL_EXTENSIONS = frozenset({".xlsx", ".xlsm"})

#: Encodings the detector chooses among (charset-normalizer names).
DETECTABLE_ENCODINGS = ("utf_8", "gb18030", "utf_16", "utf_32")
#: Delimiters tried when sniffing, in order of preference on a tie.
DELIMITERS = ("\t", "，", "|", ",", ";")
_FULLWIDTH_COMMA_STANDIN = "\x1f"  # the C parser wants a one-byte separator
_SNIFF_LINES = 50
_MIXED_UTF8_CHARS = 4
_HEADERLESS_SAMPLE = 200
#: Excel keeps 15 significant digits: a longer number stored as a number has lost digits.
_EXCEL_EXACT_LIMIT = 10**15
_MAX_VALUE_CHARS = 200
_ANY_ACCOUNT_LENGTH = range(1, 41)
_PHONE_SEPARATORS = "[\\s\\-.()\u2010-\u2015\u2212]+"
_PHONE_FAST_GATE = r"(?:\+86|0086|86)?1[3-9][0-9]{9}"
_ACCOUNT_FAST = r"[0-9]{1,40}"
_AMOUNT_MAX_DIGITS = 18
_AMOUNT_MAX_PLACES = 10
_PLAIN_AMOUNT = re.compile(r"[0-9]{1,18}(?:\.[0-9]{1,10})?", re.ASCII)

DEBTOR_KINDS = ("auto", "taxpayer_id", "account_number")

_TAXPAYER_ALIASES = (
    "纳税人识别号",
    "纳税识别号",
    "统一社会信用代码",
    "社会信用代码",
    "信用代码",
    "税号",
    "识别号",
    "taxpayer_id",
    "tax_id",
    "tin",
    "uscc",
)
_ACCOUNT_ALIASES = (
    "户号",
    "用电户号",
    "电费户号",
    "客户编号",
    "用户编号",
    "用户号",
    "account_no",
    "account_number",
    "account",
)


def _header_key(text: object) -> str:
    """Return the comparable form of a column name: NFKC, case-folded, no units or separators.

    ``"手机号码 (必填)"``, ``"Mobile_Phone"`` and ``"欠费金额（元）"`` become ``"手机号码"``,
    ``"mobilephone"`` and ``"欠费金额"``.
    """
    key = unicodedata.normalize("NFKC", str(text)).casefold()
    key = re.sub(r"\([^)]*\)|\[[^\]]*\]", "", key)
    return re.sub(r"[\s_\-*:.#]+", "", key)


_TAXPAYER_KEYS = frozenset(_header_key(a) for a in _TAXPAYER_ALIASES)
_ACCOUNT_KEYS = frozenset(_header_key(a) for a in _ACCOUNT_ALIASES)


class FileImportError(ValueError):
    """A file that cannot be imported at all; the message is one line: ``"<file name>: <problem>"``.

    :param file_name: the file's name (no directory)
    :param problem: what is wrong, for a person
    """

    def __init__(self, file_name: str, problem: str) -> None:
        self.file_name = file_name
        self.problem = " ".join(problem.split())
        super().__init__(f"{file_name}: {self.problem}")


@dataclass(frozen=True)
class ColumnMapping:
    """Which source columns feed which target field: each field lists the header names it accepts.

    Names are compared after NFKC folding, case folding and dropping blanks, ``_``, ``-``,
    ``*`` and parenthesised units, so ``"手机号码（必填）"`` matches ``"手机号码"``. When several
    columns match, the earlier alias wins. An empty tuple switches a field off.

    :param phone: names of the mobile number column (required by default)
    :param name: names of the person's or company's name column
    :param debtor_id: names of the taxpayer id (纳税人识别号) or electricity account (户号) column
    :param amount: names of the amount owed column
    :param note: names of a free-text remark column
    :param required: fields whose column must be present
    :param debtor_id_kind: how to check ``debtor_id``: ``taxpayer_id``, ``account_number`` or
        ``auto`` (by the matched header name: 户号-like names are accounts, 纳税人识别号-like
        names taxpayer ids; any other name by the value's shape)
    """

    phone: tuple[str, ...] = (
        "手机号码",
        "手机号",
        "手机",
        "移动电话",
        "联系手机",
        "联系电话",
        "电话号码",
        "电话",
        "联系方式",
        "号码",
        "mobile",
        "mobile_phone",
        "mobile_no",
        "phone",
        "phone_number",
        "phone_no",
        "cellphone",
        "msisdn",
        "tel",
        "telephone",
    )
    name: tuple[str, ...] = (
        "姓名",
        "名称",
        "纳税人名称",
        "纳税人",
        "户名",
        "用户名称",
        "客户名称",
        "单位名称",
        "企业名称",
        "联系人",
        "name",
        "full_name",
        "customer_name",
        "taxpayer_name",
    )
    debtor_id: tuple[str, ...] = (*_TAXPAYER_ALIASES, *_ACCOUNT_ALIASES, "debtor_id", "编号")
    amount: tuple[str, ...] = (
        "欠费金额",
        "欠税金额",
        "欠缴金额",
        "欠款金额",
        "应缴金额",
        "金额",
        "欠费",
        "欠款",
        "amount",
        "amount_due",
        "arrears",
    )
    note: tuple[str, ...] = ("备注", "说明", "附注", "note", "notes", "remark", "remarks", "comment")
    required: tuple[str, ...] = ("phone",)
    debtor_id_kind: str = "auto"

    def __post_init__(self) -> None:
        for name in FIELDS:
            value = getattr(self, name)
            if isinstance(value, str):
                value = (value,)
            object.__setattr__(self, name, tuple(str(v) for v in value))
        required = (self.required,) if isinstance(self.required, str) else tuple(self.required)
        unknown = [f for f in required if f not in FIELDS]
        if unknown:
            raise ValueError(f"required names unknown fields {unknown}; fields are {', '.join(FIELDS)}")
        if "phone" not in required:
            raise ValueError("phone is always required: a contact list without phones is not one")
        object.__setattr__(self, "required", required)
        if self.debtor_id_kind not in DEBTOR_KINDS:
            raise ValueError(f"debtor_id_kind must be one of {', '.join(DEBTOR_KINDS)}")

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any] | None) -> ColumnMapping:
        """Build a mapping from a plain dict (as a DAG passes it); fields not named keep their defaults.

        ``{"phone": ["联系方式"], "name": "客户", "required": ["phone", "debtor_id"]}``: a field's
        value is one header name or a list of them; ``required`` and ``debtor_id_kind`` as
        in the class.

        :param mapping: target field -> accepted source header name(s)
        :raises ValueError: for a key that is not a field
        """
        if not mapping:
            return cls()
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise ValueError(f"unknown mapping keys {unknown}; use {', '.join(sorted(known))}")
        values = {
            k: ((v,) if isinstance(v, str) else tuple(v)) if k in FIELDS else v for k, v in mapping.items()
        }
        return cls(**values)

    def aliases(self, target: str) -> tuple[str, ...]:
        """Return the header names accepted for ``target``."""
        return getattr(self, target)


@dataclass
class ImportResult:
    """What a file import produced.

    :param accepted: one row per contact: ``phone`` (11 digits), ``name``, ``debtor_id``
        (normalised), ``debtor_id_review`` (a check digit failed: keep, but a person should
        look), ``amount`` (``Decimal`` or ``None``, exact), ``note``, ``source_rows`` (the file
        rows merged into this one, first kept)
    :param rejected: one dict per bad cell: ``row``, ``field``, ``value`` (phones masked),
        ``reason``; a row with any entry is not in ``accepted``
    :param encoding: the detected (or given) text encoding; ``None`` for workbooks
    :param duplicates_merged: rows folded into an earlier row with the same phone and debtor
    :param file_name: the file's name
    :param rows_read: data rows read (blank rows and the header not counted)
    :param columns: target field -> the source column it came from
    :param delimiter: the delimiter of a text file, ``None`` for one value per line
    :param sheet: the worksheet read from a workbook
    """

    accepted: pd.DataFrame
    rejected: list[dict[str, Any]]
    encoding: str | None
    duplicates_merged: int
    file_name: str = ""
    rows_read: int = 0
    columns: dict[str, str] = field(default_factory=dict)
    delimiter: str | None = None
    sheet: str | None = None

    @property
    def rejected_rows(self) -> int:
        """Return how many file rows were rejected (a row may have several bad fields)."""
        return len({r["row"] for r in self.rejected})


@dataclass
class _Grid:
    """The cells of a file as text: ``cells`` columns 0..k-1 (``""`` when empty), ``rows`` file row numbers."""

    cells: pd.DataFrame
    rows: np.ndarray
    #: (row number, column) of numbers stored in a workbook with more digits than Excel keeps.
    lossy: set[tuple[int, int]] = field(default_factory=set)
    #: row number -> field count, for text rows with more non-empty fields than the first row.
    overlong: dict[int, int] = field(default_factory=dict)


# -- entry point ---------------------------------------------------------------------------


def read_contact_file(
    path: str | os.PathLike[str],
    *,
    mapping: ColumnMapping | Mapping[str, Any] | None = None,
    encoding: str | None = None,
    sheet: str | int | None = None,
    max_rows: int | None = None,
) -> ImportResult:
    """Read a contact or debtor list, normalise phones, check identifiers, merge duplicates.

    :param path: a local ``.txt``, ``.csv``, ``.tsv`` or ``.xlsx`` file
    :param mapping: source header names per target field (a :class:`ColumnMapping` or a dict
        for :meth:`ColumnMapping.from_dict`); ``None`` for the Chinese and English defaults
    :param encoding: the text encoding, when known; ``None`` to detect it
    :param sheet: the worksheet of a workbook, by name or 0-based index; ``None`` for the first
    :param max_rows: refuse a file with more data rows than this (the whole file, not a prefix)
    :raises FileImportError: when the file cannot be imported at all (nothing is returned)
    :raises OSError: when the file cannot be opened
    """
    file_name = Path(path).name
    if mapping is None or isinstance(mapping, Mapping):
        try:
            mapping = ColumnMapping.from_dict(mapping)
        except (TypeError, ValueError) as exc:
            raise FileImportError(file_name, f"bad column mapping: {exc}") from None
    suffix = Path(path).suffix.lower()
    delimiter = None
    sheet_name = None
    if suffix in EXCEL_EXTENSIONS:
        grid, sheet_name = _read_workbook(path, file_name, sheet)
        detected = None
    elif suffix in TEXT_EXTENSIONS:
        data = Path(path).read_bytes()
        if not data.strip():
            raise FileImportError(file_name, "empty file")
        text, detected = _decode(data, file_name, encoding)
        grid, delimiter = _read_text(text, file_name, prefer_comma=suffix == ".csv")
    else:
        supported = ", ".join(sorted(TEXT_EXTENSIONS | EXCEL_EXTENSIONS))
        hint = " (save it as .xlsx)" if suffix == ".xls" else ""
        raise FileImportError(
            file_name, f"unsupported file type {suffix or '(none)'!r}{hint}; use {supported}"
        )

    grid = _drop_blank_rows(grid)
    if grid.cells.empty:
        raise FileImportError(
            file_name, "empty file" if sheet_name is None else f"sheet {sheet_name!r} is empty"
        )
    header = _header_row(grid, mapping)
    if header is not None:
        grid = _Grid(grid.cells.iloc[1:].reset_index(drop=True), grid.rows[1:], grid.lossy, grid.overlong)
        if grid.cells.empty:
            raise FileImportError(file_name, "header only, no data rows")
    if max_rows is not None and len(grid.cells) > max_rows:
        raise FileImportError(file_name, f"{len(grid.cells)} data rows, more than max_rows={max_rows}")
    columns = _resolve_columns(header, grid, mapping, file_name)
    accepted, rejected, merged = _build(grid, columns, mapping)
    names = {
        target: (str(header[j]).strip() if header is not None else f"column {j + 1}")
        for target, (j, _kind) in columns.items()
    }
    log.info(
        "import %s: %d rows read, %d accepted, %d rejected entries, %d duplicates merged (encoding %s)",
        file_name,
        len(grid.cells),
        len(accepted),
        len(rejected),
        merged,
        detected,
    )
    return ImportResult(
        accepted=accepted,
        rejected=rejected,
        encoding=detected,
        duplicates_merged=merged,
        file_name=file_name,
        rows_read=len(grid.cells),
        columns=names,
        delimiter=delimiter,
        sheet=sheet_name,
    )


# -- text files ----------------------------------------------------------------------------


def _decode(data: bytes, file_name: str, encoding: str | None) -> tuple[str, str]:
    """Return the text of ``data`` and the encoding's name, detecting it unless given."""
    if data.startswith(b"PK\x03\x04"):
        raise FileImportError(file_name, "is a zip archive (an Excel workbook?), not text; name it .xlsx")
    if encoding:
        return _decode_as(data, file_name, encoding)
    if data.isascii():
        return data.decode("ascii"), "ascii"
    best = charset_normalizer.from_bytes(data, cp_isolation=list(DETECTABLE_ENCODINGS)).best()
    if best is None:
        raise FileImportError(
            file_name,
            "unknown encoding: not UTF-8, GBK, GB18030 or UTF-16 with BOM; "
            "save it as UTF-8 or pass the encoding",
        )
    name = best.encoding
    if name == "gb18030":
        _refuse_mixed_utf8(data, file_name)
    if name == "utf_8":
        name = "utf-8-sig" if best.bom else "utf-8"
    return _decode_as(data, file_name, name.replace("_", "-"))


def _refuse_mixed_utf8(data: bytes, file_name: str) -> None:
    """Refuse a file that is UTF-8 (Chinese text and all) up to some line and not after it.

    Such a file (lists pasted together from two sources) decodes as GB18030 without an error,
    turning the UTF-8 part into nonsense; a real GBK file is not valid UTF-8 for long.
    """
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        prefix = data[: exc.start].decode("utf-8")
        if sum(1 for ch in prefix if ord(ch) >= 0x2E80) >= _MIXED_UTF8_CHARS:
            line = data[: exc.start].count(b"\n") + 1
            raise FileImportError(
                file_name, f"mixed encodings: UTF-8 up to line {line}, not UTF-8 from there; save it as UTF-8"
            ) from None


def _decode_as(data: bytes, file_name: str, encoding: str) -> tuple[str, str]:
    import codecs

    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise FileImportError(file_name, f"unknown encoding name {encoding!r}") from None
    if codec in ("gb2312", "gbk", "gb18030"):
        # GB18030 is a superset of GBK (same two-byte codes): decode with it, report the narrowest.
        text = _strict_decode(data, file_name, "gb18030")
        try:
            data.decode("gbk")
        except UnicodeDecodeError:
            return text, "gb18030"
        return text, "gbk"
    if codec == "utf-8" and data.startswith(codecs.BOM_UTF8):
        codec = "utf-8-sig"
    return _strict_decode(data, file_name, codec), codec


def _strict_decode(data: bytes, file_name: str, codec: str) -> str:
    try:
        return data.decode(codec)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise FileImportError(
            file_name,
            f"not valid {codec}: byte 0x{data[exc.start]:02x} at line {line} (mixed encodings?)",
        ) from None


def _sniff_delimiter(text: str, *, prefer_comma: bool) -> str | None:
    """Return the delimiter used consistently over the first lines, or None for one value per line."""
    sample = [line for line in text[:65536].splitlines()[:_SNIFF_LINES] if line.strip()]
    if not sample:
        return None
    unquoted = [re.sub(r'"[^"]*"', "", line) for line in sample]
    candidates = (",", *[d for d in DELIMITERS if d != ","]) if prefer_comma else DELIMITERS
    best, best_score = None, 0
    for delimiter in candidates:
        first = unquoted[0].count(delimiter)
        if first == 0:
            continue
        score = sum(1 for line in unquoted if line.count(delimiter) == first)
        if score > best_score:
            best, best_score = delimiter, score
    if best is not None and best_score * 2 >= len(sample):
        return best
    return None


def _physical_lines(text: str) -> int:
    return text.count("\n") + (0 if text.endswith("\n") else 1)


def _read_text(text: str, file_name: str, *, prefer_comma: bool) -> tuple[_Grid, str | None]:
    """Split decoded text into a grid of cells with 1-based line numbers."""
    delimiter = _sniff_delimiter(text, prefer_comma=prefer_comma)
    if delimiter is None:
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        cells = pd.DataFrame({0: pd.Series(lines, dtype="str").str.removesuffix("\r")})
        return _Grid(cells, np.arange(1, len(lines) + 1)), None
    source = text.replace("，", _FULLWIDTH_COMMA_STANDIN) if delimiter == "，" else text
    sep = _FULLWIDTH_COMMA_STANDIN if delimiter == "，" else delimiter
    try:
        cells = pd.read_csv(
            io.StringIO(source),
            sep=sep,
            header=None,
            dtype="str",
            na_filter=False,
            skip_blank_lines=False,
            engine="c",
        )
    except pd.errors.EmptyDataError:
        raise FileImportError(file_name, "empty file") from None
    except pd.errors.ParserError:
        cells = None  # rows longer than the first: the csv module below keeps them for a reason
    if cells is not None and len(cells) == _physical_lines(source):
        cells.columns = range(cells.shape[1])
        return _Grid(cells, np.arange(1, len(cells) + 1)), delimiter
    return _read_text_slow(source, sep), delimiter


def _read_text_slow(text: str, sep: str) -> _Grid:
    """Parse with the csv module: exact line numbers across quoted line breaks, ragged rows kept."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    records: list[list[str]] = []
    rows: list[int] = []
    start = 1
    for record in reader:
        records.append(record)
        rows.append(start)
        start = reader.line_num + 1
    width = next((len(r) for r in records if any(c.strip() for c in r)), 1)
    overlong: dict[int, int] = {}
    for row, record in zip(rows, records, strict=True):
        if len(record) > width:
            if any(c.strip() for c in record[width:]):
                overlong[row] = len(record)
            del record[width:]
        elif len(record) < width:
            record.extend([""] * (width - len(record)))
    cells = pd.DataFrame(records, columns=range(width), dtype="str") if records else pd.DataFrame()
    return _Grid(cells, np.asarray(rows, dtype=np.int64), overlong=overlong)


# -- workbooks -----------------------------------------------------------------------------


def _cell_text(value: object) -> str:
    """Return a workbook cell as text: whole numbers without ``.0``, dates in ISO form."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value).upper()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))  # 13800138000.0 and 1.38e10 are phone numbers, not fractions
        return repr(value)  # the shortest text that reads back as this float: 1234.5, 0.1
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return str(value)


def _read_workbook(
    path: str | os.PathLike[str], file_name: str, sheet: str | int | None
) -> tuple[_Grid, str]:
    import openpyxl

    with open(path, "rb") as fh:
        magic = fh.read(8)
    if not magic:
        raise FileImportError(file_name, "empty file")
    if magic.startswith(b"\xd0\xcf\x11\xe0"):
        raise FileImportError(
            file_name, "not an .xlsx workbook: an encrypted workbook or a legacy .xls; save it as plain .xlsx"
        )
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # zipfile, XML and openpyxl errors alike mean the same to the user
        raise FileImportError(
            file_name, f"corrupt or unreadable .xlsx ({type(exc).__name__}: {exc})"
        ) from None
    try:
        worksheets = book.worksheets
        if sheet is None:
            if not worksheets:
                raise FileImportError(file_name, "workbook has no worksheet")
            ws = worksheets[0]
        elif isinstance(sheet, int):
            if not 0 <= sheet < len(worksheets):
                raise FileImportError(file_name, f"no sheet number {sheet}; it has {len(worksheets)}")
            ws = worksheets[sheet]
        elif sheet in book.sheetnames:
            ws = book[sheet]
        else:
            raise FileImportError(file_name, f"no sheet {sheet!r}; sheets: {', '.join(book.sheetnames)}")
        records: list[list[str]] = []
        lossy: set[tuple[int, int]] = set()
        try:
            for row_no, values in enumerate(ws.iter_rows(min_row=1, values_only=True), start=1):
                record = []
                for j, value in enumerate(values):
                    if isinstance(value, float) and abs(value) >= _EXCEL_EXACT_LIMIT:
                        lossy.add((row_no, j))
                    record.append(_cell_text(value))
                records.append(record)
        except FileImportError:
            raise
        except Exception as exc:
            raise FileImportError(
                file_name, f"corrupt or unreadable .xlsx ({type(exc).__name__}: {exc})"
            ) from None
        title = ws.title
    finally:
        book.close()
    width = max((len(r) for r in records), default=0)
    for record in records:
        if len(record) < width:
            record.extend([""] * (width - len(record)))
    cells = pd.DataFrame(records, columns=range(width), dtype="str") if width else pd.DataFrame()
    return _Grid(cells, np.arange(1, len(records) + 1), lossy=lossy), title


# -- header and columns --------------------------------------------------------------------


def _drop_blank_rows(grid: _Grid) -> _Grid:
    if grid.cells.empty or grid.cells.shape[1] == 0:
        return _Grid(pd.DataFrame(), grid.rows[:0], grid.lossy, grid.overlong)
    blank = np.ones(len(grid.cells), dtype=bool)
    for column in grid.cells.columns:
        blank &= (grid.cells[column].str.strip() == "").to_numpy(dtype=bool, na_value=True)
    if not blank.any():
        return grid
    keep = ~blank
    return _Grid(grid.cells[keep].reset_index(drop=True), grid.rows[keep], grid.lossy, grid.overlong)


def _header_row(grid: _Grid, mapping: ColumnMapping) -> list[str] | None:
    """Return the first row as column names if it is a header, else None (the file has none).

    A header names at least one known column; a first row holding a phone-like number (7 or
    more digits) is data; anything else is taken as a header of unknown names, so the
    missing-column error lists them.
    """
    first = [str(v) for v in grid.cells.iloc[0].tolist()]
    known = {_header_key(a) for target in FIELDS for a in mapping.aliases(target)}
    if any(_header_key(v) in known for v in first):
        return first
    if any(len(re.sub(r"\D", "", unicodedata.normalize("NFKC", v))) >= 7 for v in first):
        return None
    return first


def _resolve_columns(
    header: list[str] | None, grid: _Grid, mapping: ColumnMapping, file_name: str
) -> dict[str, tuple[int, str]]:
    """Return target field -> (column index, debtor id kind or "") for the fields present."""
    if header is None:
        missing = [f for f in mapping.required if f != "phone"]
        if missing:
            raise FileImportError(file_name, f"no header row, so no column for required {', '.join(missing)}")
        return {"phone": (_guess_phone_column(grid), "")}
    keys = [_header_key(h) for h in header]
    columns: dict[str, tuple[int, str]] = {}
    used: set[int] = set()
    for target in FIELDS:
        for alias in mapping.aliases(target):
            alias_key = _header_key(alias)
            j = next((j for j, k in enumerate(keys) if k == alias_key and j not in used), None)
            if j is not None:
                kind = ""
                if target == "debtor_id":
                    kind = mapping.debtor_id_kind
                    if kind == "auto":
                        kind = (
                            "taxpayer_id"
                            if alias_key in _TAXPAYER_KEYS
                            else "account_number"
                            if alias_key in _ACCOUNT_KEYS
                            else "auto"
                        )
                columns[target] = (j, kind)
                used.add(j)
                break
    for target in mapping.required:
        if target not in columns:
            found = ", ".join(repr(h.strip()) for h in header) or "none"
            accepted = ", ".join(mapping.aliases(target)[:8])
            raise FileImportError(
                file_name, f"no column for {target} (accepted names: {accepted}, ...); headers found: {found}"
            )
    return columns


def _guess_phone_column(grid: _Grid) -> int:
    """Return the column of a headerless file holding the most mobile numbers (then phone-like values)."""
    sample = grid.cells.head(_HEADERLESS_SAMPLE)
    scores = []
    for j in sample.columns:
        values = sample[j].tolist()
        hits = sum(1 for v in values if phones.normalize_mobile(v) is not None)
        digits = sum(1 for v in values if len(re.sub(r"\D", "", unicodedata.normalize("NFKC", v))) >= 7)
        scores.append((hits, digits, -int(j)))
    return -max(scores)[2]


# -- rows ----------------------------------------------------------------------------------


def _column(grid: _Grid, columns: Mapping[str, tuple[int, str]], target: str) -> pd.Series:
    """Return a field's stripped text (NaN where empty or absent)."""
    if target not in columns:
        return pd.Series(np.nan, index=grid.cells.index, dtype="str")
    values = grid.cells[columns[target][0]].str.strip()
    return values.where(values != "")


def _per_distinct(values: pd.Series, check: Any) -> np.ndarray:
    """Return ``check(value)`` for every value (None where missing), calling it once per distinct value."""
    codes, uniques = pd.factorize(values)
    results = np.empty(len(uniques) + 1, dtype=object)
    results[:-1] = [check(u) for u in uniques.tolist()]
    results[-1] = None  # code -1: missing
    return results[codes]


def _check_phones(raw: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Return (11-digit number or None, problem or None) per value, as ``phones`` decides.

    Vectorised for the common forms: NFKC (non-ASCII values only), blanks and hyphens
    removed, ``+86`` / ``0086`` / ``86`` stripped, the hard gate, then the soft gate once per
    5-digit prefix (the phones module's verdict depends on nothing else). Values the fast
    path cannot pass go to :func:`phones.mobile_problem` one distinct value at a time, so
    every verdict and reason is the phones module's own.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(raw)
    number = np.full(n, None, dtype=object)
    problem = np.full(n, None, dtype=object)
    present = raw.notna().to_numpy(dtype=bool)
    problem[~present] = phones.EMPTY
    if not present.any():
        return number, problem
    candidate = raw
    wide = ~raw.str.isascii().to_numpy(dtype=bool, na_value=True)
    if wide.any():
        candidate = raw.copy()
        candidate[wide] = raw[wide].str.normalize("NFKC")
    # A subset of the separators phones strips: anything else falls to the slow path below.
    stripped = pc.replace_substring_regex(pa.array(candidate, from_pandas=True), _PHONE_SEPARATORS, "")
    cleaned = pd.Series(stripped, dtype="str", index=raw.index)
    fast = cleaned.str.fullmatch(_PHONE_FAST_GATE).to_numpy(dtype=bool, na_value=False)
    if fast.any():
        numbers = cleaned[fast].str.slice(-11)
        prefix_problem = _per_distinct(numbers.str.slice(0, 5), lambda p: phones.mobile_problem(p + "000000"))
        number[fast] = np.where(pd.isna(prefix_problem), numbers.to_numpy(dtype=object), None)
        problem[fast] = prefix_problem
    slow = present & ~fast
    if slow.any():
        verdicts = _per_distinct(raw[slow], lambda v: (phones.normalize_mobile(v), phones.mobile_problem(v)))
        number[slow] = [v[0] for v in verdicts]
        problem[slow] = [v[1] for v in verdicts]
    return number, problem


def _debtor_verdict(value: str, kind: str) -> tuple[str, bool, str | None]:
    """Return (normalised id, review flag, rejection reason or None) for one debtor id."""
    if kind == "auto":
        digits = unicodedata.normalize("NFKC", value).replace(" ", "").replace("-", "")
        kind = "account_number" if digits.isdigit() and len(digits) not in (15, 18, 20) else "taxpayer_id"
    if kind == "account_number":
        check = account_number(value, _ANY_ACCOUNT_LENGTH)
        if check.valid:
            return check.normalized, False, None
        return check.normalized, False, f"account number (户号): {check.reason}"
    check = check_taxpayer_id(value)
    if check.valid:
        return check.normalized, check.review, None
    if check.review or "check" in (check.reason or ""):
        return check.normalized, True, None  # a check digit mismatch may still be a legal id
    return check.normalized, False, f"taxpayer id: {check.reason}"


def _amount_verdict(value: str) -> tuple[Decimal | None, str | None]:
    if _PLAIN_AMOUNT.fullmatch(value):
        return Decimal(value), None
    try:
        amount = parse_amount(value)
    except ValueError:
        return None, "not a plain decimal amount"
    exponent = amount.as_tuple().exponent
    if amount.adjusted() >= _AMOUNT_MAX_DIGITS or (
        isinstance(exponent, int) and -exponent > _AMOUNT_MAX_PLACES
    ):
        # Beyond what Parquet's decimal128(38, s) holds; no bill has this.
        return (
            None,
            f"amount out of range (up to {_AMOUNT_MAX_DIGITS} digits and {_AMOUNT_MAX_PLACES} places)",
        )
    return amount, None


class _Rejections:
    """Rejected cells, collected column by column and returned in file order."""

    _ORDER = {name: i for i, name in enumerate(("row", *FIELDS))}

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows
        self.bad = np.zeros(len(rows), dtype=bool)
        self._parts: list[pd.DataFrame] = []

    def add(self, where: np.ndarray, target: str, values: Sequence[Any], reasons: Sequence[Any]) -> None:
        if not where.any():
            return
        self.bad |= where
        self._parts.append(
            pd.DataFrame(
                {
                    "row": self.rows[where],
                    "order": self._ORDER[target],
                    "field": target,
                    "value": np.asarray(values, dtype=object),
                    "reason": np.asarray(reasons, dtype=object),
                }
            )
        )

    def records(self) -> list[dict[str, Any]]:
        if not self._parts:
            return []
        table = pd.concat(self._parts, ignore_index=True).sort_values(["row", "order"], kind="stable")
        return [
            {"row": int(r), "field": f, "value": v, "reason": why}
            for r, f, v, why in zip(
                table["row"], table["field"], table["value"], table["reason"], strict=True
            )
        ]


def _truncate(values: pd.Series) -> list[str]:
    return [v[:_MAX_VALUE_CHARS] for v in values.tolist()]


def _build(
    grid: _Grid, columns: Mapping[str, tuple[int, str]], mapping: ColumnMapping
) -> tuple[pd.DataFrame, list[dict[str, Any]], int]:
    rows = grid.rows
    n = len(rows)
    rejections = _Rejections(rows)

    if grid.overlong:
        overlong = np.fromiter((int(r) in grid.overlong for r in rows), dtype=bool, count=n)
        counts = [grid.overlong[int(r)] for r in rows[overlong]]
        width = grid.cells.shape[1]
        rejections.add(
            overlong,
            "row",
            [f"{c} fields" for c in counts],
            [f"{c} fields, expected {width}" for c in counts],
        )

    raw_phone = _column(grid, columns, "phone")
    phone, problem = _check_phones(raw_phone)
    phone_bad = pd.notna(problem)
    rejections.add(
        phone_bad,
        "phone",
        [phones.mask(v) if isinstance(v, str) else "<empty>" for v in raw_phone[phone_bad].tolist()],
        problem[phone_bad],
    )

    debtor = np.full(n, None, dtype=object)
    review = np.zeros(n, dtype=bool)
    if "debtor_id" in columns:
        j, kind = columns["debtor_id"]
        raw = _column(grid, columns, "debtor_id")
        present = raw.notna().to_numpy(dtype=bool)
        reasons = np.full(n, None, dtype=object)
        fast = np.zeros(n, dtype=bool)
        if kind == "account_number":  # plain digits need no per-value check
            fast = raw.str.fullmatch(_ACCOUNT_FAST).to_numpy(dtype=bool, na_value=False)
            debtor[fast] = raw[fast].to_numpy(dtype=object)
        slow = present & ~fast
        if slow.any():
            verdicts = _per_distinct(raw[slow], lambda v: _debtor_verdict(v, kind))
            debtor[slow] = [v[0] for v in verdicts]
            review[slow] = [v[1] for v in verdicts]
            reasons[slow] = [v[2] for v in verdicts]
        if grid.lossy:
            lossy = np.fromiter(((int(r), j) in grid.lossy for r in rows), dtype=bool, count=n) & present
            reasons[lossy] = (
                "stored as a number in Excel with more than 15 digits: digits lost; format as text"
            )
        debtor_bad = pd.notna(reasons)
        rejections.add(debtor_bad, "debtor_id", _truncate(raw[debtor_bad]), reasons[debtor_bad])

    amount = np.full(n, None, dtype=object)
    if "amount" in columns:
        raw = _column(grid, columns, "amount")
        present = raw.notna().to_numpy(dtype=bool)
        verdicts = _per_distinct(raw[present], _amount_verdict)
        amount[present] = [v[0] for v in verdicts]
        reasons = np.full(n, None, dtype=object)
        reasons[present] = [v[1] for v in verdicts]
        amount_bad = pd.notna(reasons)
        rejections.add(amount_bad, "amount", _truncate(raw[amount_bad]), reasons[amount_bad])

    good = ~rejections.bad
    frame = pd.DataFrame(
        {
            "phone": pd.Series(phone[good], dtype="str"),
            "name": _column(grid, columns, "name")[good].reset_index(drop=True),
            "debtor_id": pd.Series(debtor[good], dtype="str"),
            "debtor_id_review": review[good],
            "amount": pd.Series(amount[good], dtype=object),
            "note": _column(grid, columns, "note")[good].reset_index(drop=True),
        }
    )
    accepted, merged = _merge_duplicates(frame, rows[good])
    return accepted, rejections.records(), merged


def _merge_duplicates(frame: pd.DataFrame, rows: np.ndarray) -> tuple[pd.DataFrame, int]:
    """Keep the first row per (phone, debtor id); list every merged file row in ``source_rows``.

    ``source_rows`` is an Arrow list column built without a Python object per row: a
    million-row file would otherwise spend seconds in the garbage collector.
    """
    import pyarrow as pa

    phone_codes, _ = pd.factorize(frame["phone"])
    debtor_codes, _ = pd.factorize(frame["debtor_id"], use_na_sentinel=False)
    pair = phone_codes.astype(np.int64) * (int(debtor_codes.max(initial=0)) + 1) + debtor_codes
    # factorize numbers groups in order of first appearance, which is the order of the kept rows
    group, firsts = pd.factorize(pair)
    first = np.zeros(len(frame), dtype=bool)
    first[np.unique(group, return_index=True)[1]] = True
    order = np.argsort(group, kind="stable")
    offsets = np.zeros(len(firsts) + 1, dtype=np.int32)
    np.cumsum(np.bincount(group, minlength=len(firsts)), out=offsets[1:])
    source_rows = pa.ListArray.from_arrays(pa.array(offsets), pa.array(rows[order].astype(np.int64)))
    accepted = frame.loc[first].reset_index(drop=True)
    accepted["source_rows"] = pd.Series(pd.arrays.ArrowExtensionArray(source_rows))
    return accepted[list(ACCEPTED_COLUMNS)], int(len(frame) - len(accepted))
