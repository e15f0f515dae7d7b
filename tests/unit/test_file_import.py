"""Contact list import: encodings, delimiters, workbooks, dirty phones, duplicates, bad input."""

from __future__ import annotations

import random
import re
import zipfile
from decimal import Decimal
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

from include.dunning import phones
from include.dunning.file_import import (
    ACCEPTED_COLUMNS,
    ColumnMapping,
    FileImportError,
    ImportResult,
    read_contact_file,
)

PHONE = "13800138000"


def write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def write_xlsx(tmp_path: Path, name: str, rows: list[list[object]], title: str = "名单") -> Path:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = title
    for row in rows:
        sheet.append(row)
    path = tmp_path / name
    book.save(path)
    return path


def phones_of(result: ImportResult) -> list[str]:
    return result.accepted["phone"].tolist()


def cell(result: ImportResult, column: str, row: int = 0) -> object:
    value = result.accepted[column].iloc[row]
    return None if not isinstance(value, (list, Decimal)) and pd.isna(value) else value


# -- encodings -----------------------------------------------------------------------------


def test_utf8_csv_with_chinese_headers_maps_every_field(tmp_path):
    path = write(
        tmp_path,
        "欠费名单.csv",
        "序号,姓名,手机号码,纳税人识别号,欠费金额（元）,备注\n"
        '1,张三,138 0013 8000,11010519491231002X,"1,234.50",首次催缴\n'
        "2,某某有限公司,13900139000,91350100M000100Y43,0.10,\n",
    )
    result = read_contact_file(path)
    assert result.encoding == "utf-8"
    assert result.columns == {
        "phone": "手机号码",
        "name": "姓名",
        "debtor_id": "纳税人识别号",
        "amount": "欠费金额（元）",
        "note": "备注",
    }
    assert list(result.accepted.columns) == list(ACCEPTED_COLUMNS)
    assert phones_of(result) == [PHONE, "13900139000"]
    assert result.accepted["name"].tolist() == ["张三", "某某有限公司"]
    assert result.accepted["amount"].tolist() == [Decimal("1234.50"), Decimal("0.10")]
    assert all(type(a) is Decimal for a in result.accepted["amount"])
    assert cell(result, "note") == "首次催缴" and cell(result, "note", 1) is None
    assert result.accepted["source_rows"].tolist() == [[2], [3]]
    assert result.rejected == [] and result.duplicates_merged == 0


@pytest.mark.parametrize("header", [True, False], ids=["with-header", "no-header"])
def test_gbk_txt_one_phone_per_line(tmp_path, header):
    lines = ["手机号码"] if header else []
    lines += [PHONE, "", "13900139000", "  13700137000  "]
    path = write(tmp_path, "号码.txt", "\r\n".join(lines) + "\r\n", "gbk")
    result = read_contact_file(path)
    assert result.encoding == ("gbk" if header else "ascii")
    assert result.delimiter is None
    assert phones_of(result) == [PHONE, "13900139000", "13700137000"]
    first = 2 if header else 1
    assert result.accepted["source_rows"].tolist() == [[first], [first + 2], [first + 3]]


def test_gbk_names_decode(tmp_path):
    path = write(tmp_path, "list.txt", "姓名\t手机\n张三\t13800138000\n欧阳娜娜\t13900139000\n", "gbk")
    result = read_contact_file(path)
    assert result.encoding == "gbk"
    assert result.accepted["name"].tolist() == ["张三", "欧阳娜娜"]


def test_gb18030_only_characters_decode_right(tmp_path):
    # 㐀 (CJK extension A) and 𠀀 (extension B) are four-byte GB18030 codes that GBK lacks.
    text = "姓名,手机\n张㐀,13800138000\n李𠀀,13900139000\n王五,13700137000\n"
    with pytest.raises(UnicodeEncodeError):
        text.encode("gbk")
    path = write(tmp_path, "gb18030.csv", text, "gb18030")
    result = read_contact_file(path)
    assert result.encoding == "gb18030"
    assert result.accepted["name"].tolist() == ["张㐀", "李𠀀", "王五"]


def test_utf8_with_bom_header_is_recognised(tmp_path):
    path = write(tmp_path, "bom.csv", "手机,姓名\n13800138000,张三\n", "utf-8-sig")
    result = read_contact_file(path)
    assert result.encoding == "utf-8-sig"
    assert result.columns["phone"] == "手机"  # not "\ufeff手机"
    assert phones_of(result) == [PHONE]


def test_utf16_with_bom_from_excel_unicode_text(tmp_path):
    path = write(tmp_path, "unicode.txt", "姓名\t手机\n张三\t13800138000\n", "utf-16")
    result = read_contact_file(path)
    assert result.encoding == "utf-16"
    assert result.accepted["name"].tolist() == ["张三"]


def test_explicit_encoding_wins_and_gbk_reads_gb18030_characters(tmp_path):
    path = write(tmp_path, "given.txt", "姓名|手机\n张㐀|13800138000\n", "gb18030")
    result = read_contact_file(path, encoding="GBK")
    assert result.accepted["name"].tolist() == ["张㐀"]
    assert result.encoding == "gb18030"


# -- delimiters ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delimiter", "encoding"),
    [("|", "utf-8"), ("，", "gbk"), ("\t", "gb18030"), (",", "utf-8"), (";", "utf-8")],
    ids=["pipe", "full-width-comma", "tab", "comma", "semicolon"],
)
def test_delimited_txt(tmp_path, delimiter, encoding):
    rows = [
        ["姓名", "电话", "户号", "金额"],
        ["张三", "138-0013-8000", "1234567890", "12.5"],
        ["李四", "13900139000", "", ""],
    ]
    text = "\n".join(delimiter.join(r) for r in rows) + "\n"
    result = read_contact_file(write(tmp_path, "list.txt", text, encoding))
    assert result.delimiter == delimiter
    assert phones_of(result) == [PHONE, "13900139000"]
    assert result.accepted["name"].tolist() == ["张三", "李四"]
    assert cell(result, "debtor_id") == "1234567890" and cell(result, "debtor_id", 1) is None
    assert result.accepted["amount"].tolist() == [Decimal("12.5"), None]


def test_headerless_delimited_file_finds_the_phone_column(tmp_path):
    result = read_contact_file(write(tmp_path, "bare.txt", "张三,13800138000\n李四,+86 13900139000\n"))
    assert result.columns == {"phone": "column 2"}
    assert phones_of(result) == [PHONE, "13900139000"]


def test_quoted_line_break_keeps_file_line_numbers(tmp_path):
    text = '姓名,手机,备注\n张三,13800138000,"两行\n备注"\n李四,12345,x\n'
    result = read_contact_file(write(tmp_path, "quoted.csv", text))
    assert cell(result, "note") == "两行\n备注"
    assert result.rejected == [
        {"row": 4, "field": "phone", "value": "****", "reason": "not 11 digits after normalisation"}
    ]


def test_row_with_extra_fields_is_rejected_not_shifted(tmp_path):
    text = "姓名,手机,备注\n张三,13800138000,a\n李四,13900139000,b,c,d\n王五,13700137000,,\n"
    result = read_contact_file(write(tmp_path, "ragged.csv", text))
    assert phones_of(result) == [PHONE, "13700137000"]  # trailing empty fields are harmless
    assert result.rejected == [
        {"row": 3, "field": "row", "value": "5 fields", "reason": "5 fields, expected 3"}
    ]


# -- workbooks -----------------------------------------------------------------------------


def _store_as_float(path: Path, cell_ref: str, text: str) -> None:
    """Rewrite one numeric cell's stored value, as Excel writes some numbers: ``1.3800138E10``."""
    with zipfile.ZipFile(path) as zin:
        items = {n: zin.read(n) for n in zin.namelist()}
    sheet = "xl/worksheets/sheet1.xml"
    xml = items[sheet].decode()
    xml, count = re.subn(rf'(<c r="{cell_ref}"[^>]*><v>)[^<]*(</v>)', rf"\g<1>{text}\g<2>", xml)
    assert count == 1
    items[sheet] = xml.encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zout:
        for name, data in items.items():
            zout.writestr(name, data)


def test_xlsx_numbers_stored_as_numbers(tmp_path):
    path = write_xlsx(
        tmp_path,
        "名单.xlsx",
        [
            ["姓名", "手机", "户号", "欠费金额"],
            ["张三", 13800138000, 1234567890, 88.8],
            ["李四", 13900139000.0, "0012345678", 100],
            [],
            ["王五", 13700137000, 1234567891, None],
            ["赵六", "13600136000", None, "1,000.00"],
        ],
    )
    _store_as_float(path, "B5", "1.3700137E10")
    result = read_contact_file(path)
    assert result.encoding is None and result.sheet == "名单"
    assert phones_of(result) == [PHONE, "13900139000", "13700137000", "13600136000"]
    assert result.accepted["debtor_id"].tolist()[:2] == ["1234567890", "0012345678"]
    assert result.accepted["amount"].tolist() == [Decimal("88.8"), Decimal("100"), None, Decimal("1000.00")]
    assert result.accepted["source_rows"].tolist() == [[2], [3], [5], [6]]


def test_xlsx_float_phone_1_38e10(tmp_path):
    path = write_xlsx(tmp_path, "f.xlsx", [["手机"], [1.38e10], [13800138000]])
    _store_as_float(path, "A2", "1.38E10")
    result = read_contact_file(path)
    assert phones_of(result) == ["13800000000", PHONE]


def test_xlsx_long_id_stored_as_number_is_rejected(tmp_path):
    path = write_xlsx(tmp_path, "ids.xlsx", [["手机", "纳税人识别号"], [PHONE, 1]])
    _store_as_float(path, "B2", "1.10105194912310E+17")
    result = read_contact_file(path)
    assert result.accepted.empty
    [entry] = result.rejected
    assert entry["row"] == 2 and entry["field"] == "debtor_id"
    assert "digits lost" in entry["reason"]


def test_xlsx_sheet_by_name_and_index(tmp_path):
    book = openpyxl.Workbook()
    book.active.append(["说明：第二页是名单"])
    second = book.create_sheet("名单")
    second.append(["手机"])
    second.append([PHONE])
    path = tmp_path / "two.xlsx"
    book.save(path)
    assert phones_of(read_contact_file(path, sheet="名单")) == [PHONE]
    assert phones_of(read_contact_file(path, sheet=1)) == [PHONE]
    with pytest.raises(FileImportError, match=r"^two\.xlsx: no sheet '缺失'; sheets: Sheet, 名单$"):
        read_contact_file(path, sheet="缺失")


# -- phones --------------------------------------------------------------------------------

DIRTY = [
    "+86 138-0013-8000",
    "+86 13800138000",
    "+8613800138000",
    "0086 138 0013 8000",
    "008613800138000",
    "8613800138000",
    "86-138-0013-8000",
    "１３８００１３８０００",
    "＋８６ １３８ ００１３ ８０００",
    " 138 0013 8000 ",
    "138\u30000013\u30008000",
    "(138) 0013-8000",
    "138.0013.8000",
    "138\u20140013\u20148000",
]


@pytest.mark.parametrize("raw", DIRTY, ids=range(len(DIRTY)))
def test_dirty_phone_forms_normalise(tmp_path, raw):
    result = read_contact_file(write(tmp_path, "p.csv", f"手机\n{raw}\n"))
    assert phones_of(result) == [PHONE]


def test_phone_verdicts_equal_the_phones_module(tmp_path):
    """The vectorised path must agree with normalize_mobile / mobile_problem on every value."""
    odd = [
        "14500000000",  # data-only
        "15400000000",  # unallocated
        "12345678901",
        "+1 138 0013 8000",
        "+0086 13800138000",
        "860013800138000",
        "138001380001",
        "1380013800",
        "abc",
        "138-0013-800０",
        "1 3 8 0 0 1 3 8 0 0 0",
        "19800000000",
        "17400000000",
        "17406000000",
        "\u00a013800138000",
        "+86(0)13800138000",
    ]
    values = DIRTY + odd
    text = "手机\n" + "\n".join(values) + "\n"
    result = read_contact_file(write(tmp_path, "p.txt", text))
    phone_of_row = {
        row: phone
        for phone, rows in zip(result.accepted["phone"], result.accepted["source_rows"], strict=True)
        for row in rows
    }
    reasons = {r["row"]: r["reason"] for r in result.rejected}
    for row, raw in enumerate(values, start=2):
        expected = phones.normalize_mobile(raw.strip())
        if expected is None:
            assert reasons[row] == phones.mobile_problem(raw.strip()), raw
        else:
            assert phone_of_row[row] == expected, raw
    assert len(phone_of_row) + len(reasons) == len(values)


def test_rejected_phones_are_masked_with_reasons(tmp_path):
    text = "姓名,手机\n甲,1380013800\n乙,14700000000\n丙,\n丁,23800138000\n戊,+1 415 555 0100\n"
    result = read_contact_file(write(tmp_path, "bad.csv", text))
    assert result.accepted.empty
    assert [(r["row"], r["field"], r["reason"]) for r in result.rejected] == [
        (2, "phone", "not 11 digits after normalisation"),
        (3, "phone", "data-only number range"),
        (4, "phone", "empty"),
        (5, "phone", "not a mobile prefix"),
        (6, "phone", "not 11 digits after normalisation"),
    ]
    values = [r["value"] for r in result.rejected]
    assert values[:4] == ["13****00", "147****0000", "<empty>", "238****8000"]
    assert not any(re.search(r"\d{5}", v) for v in values)


# -- identifiers, amounts, duplicates --------------------------------------------------------


def test_identifier_checks(tmp_path):
    text = (
        "手机,纳税人识别号,金额\n"
        "13800138000,11010519491231002X,1\n"  # valid resident id
        "13800138001,110105194912310021,2\n"  # check digit mismatch: review, kept
        "13800138002,91350100M000100Y4A,3\n"  # USCC check character mismatch: review, kept
        "13800138003,1234,4\n"  # wrong length: rejected
        "13800138004,,5e3\n"  # no id is fine; the amount is not
    )
    result = read_contact_file(write(tmp_path, "ids.csv", text))
    assert phones_of(result) == ["13800138000", "13800138001", "13800138002"]
    assert result.accepted["debtor_id_review"].tolist() == [False, True, True]
    assert [(r["row"], r["field"], r["value"], r["reason"]) for r in result.rejected] == [
        (5, "debtor_id", "1234", "taxpayer id: length 4, expected 15, 18 or 20"),
        (6, "amount", "5e3", "not a plain decimal amount"),
    ]


def test_account_numbers_must_be_digits(tmp_path):
    text = "户号,手机\n1234567890,13800138000\n12345A7890,13900139000\n１２３４５６７８９０,13700137000\n"
    result = read_contact_file(write(tmp_path, "acct.csv", text))
    assert result.accepted["debtor_id"].tolist() == ["1234567890", "1234567890"]
    assert result.rejected == [
        {
            "row": 3,
            "field": "debtor_id",
            "value": "12345A7890",
            "reason": "account number (户号): non-digit character",
        }
    ]


def test_duplicates_merged_by_phone_and_debtor(tmp_path):
    text = (
        "姓名,手机,户号,金额\n"
        "张三,13800138000,1000000001,10\n"
        "张三,+86 138 0013 8000,1000000002,20\n"  # same phone, another debtor: kept
        "张三丰,008613800138000,1000000001,99\n"  # same phone and debtor: merged into row 2
        "李四,13900139000,,1\n"
        "李四,13900139000,,1\n"
    )
    result = read_contact_file(write(tmp_path, "dup.csv", text))
    assert result.duplicates_merged == 2
    assert result.accepted["debtor_id"].tolist()[:2] == ["1000000001", "1000000002"]
    assert pd.isna(result.accepted["debtor_id"].iloc[2])
    assert result.accepted["source_rows"].tolist() == [[2, 4], [3], [5, 6]]
    assert cell(result, "name") == "张三" and cell(result, "amount") == Decimal("10")  # the first row wins


# -- mapping ---------------------------------------------------------------------------------


def test_mapping_override(tmp_path):
    text = "客户,联系方式,手机,编号\n张三,13800138000,13999999999,00042\n"
    path = write(tmp_path, "custom.csv", text)
    default = read_contact_file(path)
    assert default.columns["phone"] == "手机"
    result = read_contact_file(path, mapping={"phone": ["联系方式"], "name": "客户", "debtor_id": ["编号"]})
    assert result.columns == {"phone": "联系方式", "name": "客户", "debtor_id": "编号"}
    assert phones_of(result) == [PHONE]
    assert result.accepted["name"].tolist() == ["张三"]
    assert result.accepted["debtor_id"].tolist() == ["00042"]


def test_mapping_can_require_more_fields(tmp_path):
    path = write(tmp_path, "nodebtor.csv", "手机\n13800138000\n")
    with pytest.raises(FileImportError, match=r"^nodebtor\.csv: no column for debtor_id"):
        read_contact_file(path, mapping=ColumnMapping(required=("phone", "debtor_id")))


def test_mapping_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown mapping keys"):
        ColumnMapping.from_dict({"mobile": ["手机"]})


# -- bad input: one line naming the file, nothing loaded -------------------------------------


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    corrupt = tmp_path / "corrupt.xlsx"
    good = write_xlsx(tmp_path, "source.xlsx", [["手机"], [PHONE]])
    corrupt.write_bytes(good.read_bytes()[:200])  # a truncated download
    not_zip = tmp_path / "notzip.xlsx"
    not_zip.write_bytes(b"this is not a workbook")
    empty_xlsx = write_xlsx(tmp_path, "empty.xlsx", [])
    (tmp_path / "zero.csv").write_bytes(b"")
    mixed = tmp_path / "mixed.csv"  # UTF-8, then a line pasted in from a GBK file
    mixed.write_bytes("姓名,手机\n张三,13800138000\n".encode() + "李四,13900139000\n".encode("gbk"))
    return {
        "unknown encoding (cp1252)": (
            write(
                tmp_path, "latin.csv", "Name,Phone\nJosé Müller,13800138000\nFrançois,13900139000\n", "cp1252"
            ),
            "unknown encoding",
        ),
        "utf-16 without BOM": (
            write(tmp_path, "u16.txt", "姓名\t手机\n张三\t13800138000\n", "utf-16-le"),
            "unknown encoding",
        ),
        "mixed encodings": (mixed, "mixed encodings"),
        "missing mapped column": (
            write(tmp_path, "nophone.csv", "姓名,金额\n张三,10\n"),
            "no column for phone",
        ),
        "corrupt xlsx": (corrupt, "corrupt or unreadable .xlsx"),
        "not a zip xlsx": (not_zip, "corrupt or unreadable .xlsx"),
        "empty file": (tmp_path / "zero.csv", "empty file"),
        "blank lines only": (write(tmp_path, "blank.txt", " \r\n\n\t\n"), "empty file"),
        "empty workbook": (empty_xlsx, "is empty"),
        "header only": (write(tmp_path, "header.csv", "姓名,手机号码\n\n"), "header only"),
        "header only xlsx": (write_xlsx(tmp_path, "header.xlsx", [["姓名", "手机"]]), "header only"),
        "unsupported extension": (
            write(tmp_path, "list.pdf", "13800138000\n"),
            "unsupported file type '.pdf'",
        ),
        "legacy xls": (write(tmp_path, "old.xls", "13800138000\n"), "save it as .xlsx"),
        "workbook named csv": (_renamed(good, tmp_path / "book.csv"), "zip archive"),
    }


def _renamed(source: Path, target: Path) -> Path:
    target.write_bytes(source.read_bytes())
    return target


BAD_CASES = [
    "unknown encoding (cp1252)",
    "utf-16 without BOM",
    "mixed encodings",
    "missing mapped column",
    "corrupt xlsx",
    "not a zip xlsx",
    "empty file",
    "blank lines only",
    "empty workbook",
    "header only",
    "header only xlsx",
    "unsupported extension",
    "legacy xls",
    "workbook named csv",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_one_line_naming_the_file(tmp_path, case):
    path, problem = _bad_files(tmp_path)[case]
    result = None
    with pytest.raises(FileImportError) as err:
        result = read_contact_file(path)
    message = str(err.value)
    assert result is None
    assert message.startswith(f"{path.name}: ")
    assert "\n" not in message and "\r" not in message
    assert problem in message
    assert err.value.file_name == path.name


def test_missing_column_message_lists_headers_found(tmp_path):
    path = write(tmp_path, "nophone.csv", "姓名,金额,备注\n张三,10,x\n")
    with pytest.raises(FileImportError) as err:
        read_contact_file(path)
    assert "no column for phone" in str(err.value)
    assert "headers found: '姓名', '金额', '备注'" in str(err.value)


def test_max_rows_refuses_the_whole_file(tmp_path):
    path = write(tmp_path, "many.txt", "\n".join([PHONE] * 11))
    with pytest.raises(FileImportError, match=r"^many\.txt: 11 data rows, more than max_rows=10$"):
        read_contact_file(path, max_rows=10)
    assert len(read_contact_file(path, max_rows=11).accepted) == 1


# -- size ------------------------------------------------------------------------------------


def test_200k_line_file(tmp_path):
    rng = random.Random(7)
    numbers = [
        f"{rng.choice(['138', '139', '150', '186'])}{rng.randrange(10**8):08d}" for _ in range(200_000)
    ]
    numbers[::1000] = ["12345"] * len(numbers[::1000])  # one bad row in a thousand
    lines = ["姓名\t手机号码\t金额"] + [
        f"用户{i}\t{n[:3]}-{n[3:7]}-{n[7:]}\t{i % 997}.{i % 100:02d}" for i, n in enumerate(numbers)
    ]
    path = write(tmp_path, "big.txt", "\n".join(lines) + "\n", "gbk")
    result = read_contact_file(path)
    assert result.encoding == "gbk"
    assert result.rows_read == 200_000
    assert result.rejected_rows == 200
    assert len(result.accepted) + result.duplicates_merged == 200_000 - 200
    assert result.accepted["amount"].iloc[0] == Decimal("1.01")  # row 0 was made bad
