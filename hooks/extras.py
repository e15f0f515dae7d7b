"""Connection extras read the same way by every hook: looked up once, typed, string-safe.

A URI or environment-variable connection delivers every extra as a string ("false" is a
truthy string), and Airflow's connection form may store them as ``extra__<type>__<name>``.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

TRUE_WORDS = frozenset({"1", "true", "t", "yes", "y", "on"})
FALSE_WORDS = frozenset({"0", "false", "f", "no", "n", "off", "", "none"})


def as_bool(value: Any, default: bool = False) -> bool:
    """Read a yes/no value from a connection extra, a template or an environment variable.

    :param value: ``None`` (gives ``default``), a bool, a number or a word like "true"/"off"
    :param default: the answer when no value is given
    """
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return bool(value)
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise ValueError(f"not a yes/no value: {value!r}")


class ConnectionExtras:
    """Mixin for hooks: the Airflow connection looked up once, its extras by plain name."""

    conn_name_attr: str
    conn_type: str

    @cached_property
    def connection(self) -> Any:
        """Return the Airflow connection (looked up once)."""
        return self.get_connection(getattr(self, self.conn_name_attr))  # type: ignore[attr-defined]

    @cached_property
    def _extras(self) -> dict[str, Any]:
        raw = dict(self.connection.extra_dejson or {})
        prefix = f"extra__{self.conn_type}__"
        for key in list(raw):
            if key.startswith(prefix):
                raw.setdefault(key.removeprefix(prefix), raw[key])
        return raw

    def _extra(self, name: str, default: Any = None) -> Any:
        value = self._extras.get(name)
        return default if value is None or value == "" else value
