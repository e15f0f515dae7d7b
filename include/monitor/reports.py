"""Find a run's report files under the report root for the monitor to serve, never anything else.

The report task writes ``<root>/<dag_id>/<stem>.html`` (``stem`` = the run id with unsafe
characters as ``_``) and beside it ``<stem>.json``, ``<stem>.<table>.csv`` and
``<stem>.followup.xlsx``. The monitor serves ``/reports/<dag_id>/<run_id>`` (the HTML page) and
``/reports/<dag_id>/<file name>`` (what the page links to, relative to itself). Names are checked
against a strict pattern (no separators, no leading dot), only those suffixes are served, and a
local file must resolve (symlinks followed) inside the root: no path traversal.
"""

from __future__ import annotations

import os
import re
from typing import Any

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
    ".json": "application/json",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,250}")


class ReportNotFound(LookupError):
    """No such report (or a name that cannot be one)."""


def report_stem(run_id: str) -> str:
    """Return the file name stem of a run's report files (as ``operators.report`` writes them)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)


def _safe(name: str) -> bool:
    return bool(_SAFE_NAME.fullmatch(name)) and ".." not in name


def _inside(root: Any, path: Any) -> bool:
    """Return whether a local ``path`` resolves inside ``root`` (remote stores: names were checked)."""
    protocol = getattr(root, "protocol", "file")
    if protocol not in ("file", "local"):
        return True
    local_root = os.path.realpath("/" + root.path.lstrip("/") if hasattr(root, "path") else str(root))
    local = os.path.realpath("/" + path.path.lstrip("/") if hasattr(path, "path") else str(path))
    return os.path.commonpath([local_root, local]) == local_root


def find_report(root: Any, dag_id: str, name: str) -> tuple[Any, str]:
    """Return (path, media type) of a report file: the run's HTML page, or a file beside it.

    :param root: the report root (``pathlib.Path`` or ``ObjectStoragePath``)
    :param dag_id: the DAG id (a folder under the root)
    :param name: a run id (its HTML report), or the name of a file of the folder with a served suffix
    :raises ReportNotFound: no such file, or a name that could leave the folder
    """
    if not _safe(dag_id):
        raise ReportNotFound("no such DAG")
    folder = root / dag_id
    candidates = []
    suffix = os.path.splitext(name)[1].lower()
    if _safe(name) and suffix in MEDIA_TYPES:
        candidates.append((name, MEDIA_TYPES[suffix]))
    stem = report_stem(name)
    if _safe(stem):
        candidates.append((f"{stem}.html", MEDIA_TYPES[".html"]))
    for file_name, media_type in candidates:
        path = folder / file_name
        if path.is_file() and _inside(root, path):
            return path, media_type
    raise ReportNotFound("no such report")
