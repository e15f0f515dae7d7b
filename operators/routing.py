"""Airflow glue of SMS gateway routing: the routing table from connections, failover binds, quotas.

The rules are in :mod:`include.dunning.routing` (pure, unit-tested); this module reads the
gateways' ``smpp`` connections, binds the first gateway of a batch's failover order that
answers, and reserves each chunk's parts on the bound gateway's daily quota and prepaid balance
in the store before the chunk is claimed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hooks.smpp import SmppHook
    from include.dunning.ledger import DunningStore
    from include.dunning.routing import RoutingTable

log = logging.getLogger(__name__)


def connection_extras(conn_id: str) -> dict[str, Any]:
    """Return an ``smpp`` connection's extras by plain name (UI form fields come prefixed)."""
    from airflow.sdk import BaseHook

    raw = dict(BaseHook.get_connection(conn_id).extra_dejson or {})
    prefix = "extra__smpp__"
    for key in list(raw):
        if key.startswith(prefix):
            raw.setdefault(key.removeprefix(prefix), raw[key])
    return raw


def routing_table(conn_ids: Sequence[str]) -> RoutingTable:
    """Build the routing table of a DAG's gateways from their connections, in the DAG's order.

    A connection that cannot be read counts as a plain gateway taking any traffic (logged):
    planning does not need it, and sending through it fails naming it.
    """
    from include.dunning.routing import RoutingTable

    extras: list[tuple[str, dict[str, Any]]] = []
    for conn_id in conn_ids:
        try:
            extras.append((conn_id, connection_extras(conn_id)))
        except Exception as exc:  # an unknown connection: routed as a plain gateway, named in the log
            log.warning("gateway %s: connection not readable (%s); routed as lane 'any'", conn_id, exc)
            extras.append((conn_id, {}))
    return RoutingTable.from_extras(extras)


def batch_route(batch_id: str, default_gateway: str) -> tuple[str, str]:
    """Return (gateway, priority) of a send batch from its id; ``default_gateway`` and
    ``normal`` for ids not made by the plan."""
    from include.dunning.routing import NORMAL, BatchId

    try:
        parsed = BatchId.parse(batch_id)
    except ValueError:
        return default_gateway, NORMAL
    return parsed.gateway, parsed.priority


def local_day(now: datetime | None = None) -> date:
    """Return the local (Asia/Shanghai) day a gateway's daily quota counts."""
    from operators.common import LOCAL_TZ

    return (now or datetime.now(LOCAL_TZ)).astimezone(LOCAL_TZ).date()


class GatewayFailover:
    """Bind a batch's gateways in failover order and keep each one's quota.

    :param table: the DAG's routing table
    :param gateway: the gateway the batch was routed to (tried first)
    :param priority: the batch's priority (which lane a failover gateway must serve)
    :param store: the dunning store (quota and balance tables)
    :param day: the local day of the daily quotas
    """

    def __init__(
        self, table: RoutingTable, gateway: str, priority: str, store: DunningStore, day: date
    ) -> None:
        self.table = table
        self.order = table.failover_order(gateway, priority)
        self.store = store
        self.day = day
        self.position = -1
        self.current: str | None = None
        self.unreachable: list[str] = []
        self.errors: list[str] = []
        self.exhausted: list[str] = []
        self._ensured: set[str] = set()
        self._given_back = 0  # parts released on the current gateway since its quota ran out
        self._lock = threading.Lock()  # release() runs on the pipeline's recorder threads

    def bind_next(self, logger: Any = log) -> tuple[SmppHook, str] | None:
        """Bind the next gateway of the order that answers; None when none is left.

        A gateway that cannot be reached or refuses the bind for a passing reason (connection
        refused, timeout, SMSC busy) after the hook's bounded retries is skipped for the next
        one. A wrong password or system id is not skipped: it raises ``SmppBindError``
        (permanent) for the caller to fail the task clearly.
        """
        from hooks.smpp import SmppBindError, SmppHook, SmppTransportError

        if self.current is not None and self.exhausted[-1:] == [self.current] and self._given_back:
            # Rejected messages gave parts back after the quota stopped this gateway (claims run
            # ahead of the answers): bind it again for the rows those parts can still carry.
            logger.info("gateway %s: %d parts given back; using them first", self.current, self._given_back)
            self.exhausted.pop()
            self.position -= 1
        self._given_back = 0
        while self.position + 1 < len(self.order):
            self.position += 1
            name = self.order[self.position]
            hook = SmppHook(name, bind_mode="transmitter")
            try:
                hook.get_conn()
            except SmppBindError as exc:
                if exc.permanent:
                    raise
                self.unreachable.append(name)
                self.errors.append(f"{name}: {exc}")
                logger.warning("gateway %s refused the bind (%s); failing over", name, exc)
                continue
            except SmppTransportError as exc:
                self.unreachable.append(name)
                self.errors.append(f"{name}: {exc}")
                rest = self.order[self.position + 1 :]
                logger.warning(
                    "gateway %s cannot bind (%s); %s", name, exc,
                    f"failing over to {rest[0]}" if rest else "no gateway left to fail over to",
                )  # fmt: skip
                continue
            self.current = name
            if self.position > 0:
                logger.warning("batch fails over from %s to gateway %s", self.order[0], name)
            return hook, name
        self.current = None
        return None

    def reserve(self, parts: Sequence[int]) -> int:
        """Reserve the leading messages of a chunk on the bound gateway; return how many fit."""
        name = self.current
        if name is None:
            raise RuntimeError("no gateway bound")
        fitted = self.store.reserve_gateway_parts(
            name,
            self.day,
            parts,
            daily_quota=self.table.gateway(name).daily_quota,
            ensure_row=name not in self._ensured,
        )
        self._ensured.add(name)
        if fitted < len(parts):
            self.exhausted.append(name)
        return fitted

    def release(self, parts: int) -> None:
        """Give back the parts of messages the bound gateway rejected."""
        if self.current is not None and parts > 0:
            self.store.release_gateway_parts(self.current, self.day, parts)
            with self._lock:
                self._given_back += parts


__all__ = ["GatewayFailover", "batch_route", "connection_extras", "local_day", "routing_table"]
