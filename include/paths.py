"""Where the project's packaged files are, wherever the project is installed."""

from __future__ import annotations

from pathlib import Path

INCLUDE_ROOT = Path(__file__).resolve().parent
SQL_ROOT = INCLUDE_ROOT / "sql"
TEMPLATE_ROOT = INCLUDE_ROOT / "templates"
