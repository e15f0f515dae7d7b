"""SMS gateway routing: which gateway a contact goes through, and where it goes when one fails.

A DAG lists its SMPP gateways (Airflow connection ids) in order; each connection's extras say
what it is for:

- ``lane``: ``normal`` (bulk reminders), ``urgent`` (cut-off notices and other urgent stages, on
  their own bind so a bulk backlog never delays them) or ``any`` (either; the default)
- ``prefixes``: number prefixes the gateway is preferred for, e.g. a carrier's own gateway for
  ``134-139,147,150-152,157-159,178,182-184,187,188,198``; a hint, not a restriction
- ``daily_quota``: parts the gateway may send per local day (enforced by the send step through
  the store's ``gateway_usage`` table); empty = no daily limit
- ``failover``: ``false`` keeps the gateway out of other gateways' failover (e.g. a carrier
  gateway that must only carry its own prefixes)

:func:`RoutingTable.route` picks one gateway per contact: an urgent stage goes to the first
``urgent`` gateway; otherwise (and when there is no urgent gateway) the longest matching prefix
hint of a ``normal``/``any`` gateway; otherwise the first ``normal``/``any`` gateway.
:func:`RoutingTable.failover_order` says which gateways a batch may go through, in order, when
its gateway cannot bind or has used up its quota: the same lane or ``any``.

Pure Python: no Airflow, no database; the operators read the connections and the store.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

NORMAL = "normal"
URGENT = "urgent"
ANY = "any"
LANES = (NORMAL, URGENT, ANY)
PRIORITIES = (NORMAL, URGENT)

DEFAULT_GATEWAY = "smpp_default"

_PREFIX_ITEM = re.compile(r"^(\d{1,11})(?:-(\d{1,11}))?$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class RoutingError(ValueError):
    """A routing table that cannot work (unknown lane, bad prefix list, no gateway); names the gateway."""


def parse_prefixes(value: Any, *, gateway: str = "?") -> tuple[str, ...]:
    """Return the number prefixes of a ``prefixes`` extra, ranges expanded.

    Accepts ``"134-139,150-152,188"`` (commas, spaces or semicolons between items), a list of
    such items, or None/empty. A range's ends have the same number of digits.

    :param gateway: the connection id, named in errors
    :raises RoutingError: an item that is not digits or a same-length ascending digit range
    """
    if value is None:
        return ()
    items: Iterable[Any] = value if isinstance(value, list | tuple) else re.split(r"[,;\s]+", str(value))
    found: list[str] = []
    for raw in items:
        item = str(raw).strip()
        if not item:
            continue
        match = _PREFIX_ITEM.match(item)
        if match is None:
            raise RoutingError(f"gateway {gateway!r}: prefix {item!r} is not digits or a range like 134-139")
        low, high = match.group(1), match.group(2)
        if high is None:
            found.append(low)
            continue
        if len(low) != len(high) or int(low) > int(high):
            raise RoutingError(
                f"gateway {gateway!r}: prefix range {item!r} needs two ends of the same length, low first"
            )
        found.extend(str(n).zfill(len(low)) for n in range(int(low), int(high) + 1))
    return tuple(dict.fromkeys(found))


def _positive_int(value: Any, name: str, gateway: str) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = int(str(value).strip())
    except ValueError:
        raise RoutingError(f"gateway {gateway!r}: {name} must be a whole number, not {value!r}") from None
    if number < 0:
        raise RoutingError(f"gateway {gateway!r}: {name} must not be negative, got {number}")
    return number


@dataclass(frozen=True)
class Gateway:
    """One SMS gateway of a routing table.

    :param name: the Airflow connection id (also the ledger's ``gateway`` and the pool name)
    :param lane: ``normal``, ``urgent`` or ``any``
    :param prefixes: number prefixes the gateway is preferred for
    :param daily_quota: parts per local day, None for no limit
    :param failover: whether other gateways' batches may fail over to it
    """

    name: str
    lane: str = ANY
    prefixes: tuple[str, ...] = ()
    daily_quota: int | None = None
    failover: bool = True

    def __post_init__(self) -> None:
        if self.lane not in LANES:
            raise RoutingError(
                f"gateway {self.name!r}: lane must be one of {', '.join(LANES)}, not {self.lane!r}"
            )

    @classmethod
    def from_extras(cls, name: str, extras: Mapping[str, Any]) -> Gateway:
        """Build a gateway from its connection's extras (``lane``, ``prefixes``, ``daily_quota``, ``failover``)."""
        lane = str(extras.get("lane") or ANY).strip().lower()
        failover_raw = str(extras.get("failover", "true")).strip().lower()
        if failover_raw not in _TRUE | _FALSE:
            raise RoutingError(f"gateway {name!r}: failover must be true or false, not {failover_raw!r}")
        return cls(
            name=name,
            lane=lane,
            prefixes=parse_prefixes(extras.get("prefixes"), gateway=name),
            daily_quota=_positive_int(extras.get("daily_quota"), "daily_quota", name),
            failover=failover_raw in _TRUE,
        )

    def serves(self, priority: str) -> bool:
        """Tell whether traffic of a priority may use this gateway's lane."""
        return self.lane == ANY or self.lane == priority


@dataclass(frozen=True)
class RoutingTable:
    """The ordered gateways of a DAG and the rules that pick one per contact.

    :param gateways: in order of preference; the first ``normal``/``any`` one is the default route
    """

    gateways: tuple[Gateway, ...]
    _by_name: dict[str, Gateway] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.gateways:
            raise RoutingError("a routing table needs at least one gateway")
        names = [g.name for g in self.gateways]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise RoutingError(f"gateway listed twice: {', '.join(duplicates)}")
        if not any(g.serves(NORMAL) for g in self.gateways):
            raise RoutingError(
                f"no gateway for normal traffic among {', '.join(names)}: give one lane 'normal' or 'any'"
            )
        object.__setattr__(self, "_by_name", {g.name: g for g in self.gateways})

    @classmethod
    def single(cls, name: str = DEFAULT_GATEWAY) -> RoutingTable:
        """Return the table of a DAG with one gateway that takes everything."""
        return cls((Gateway(name),))

    @classmethod
    def from_extras(
        cls, extras_by_gateway: Mapping[str, Mapping[str, Any]] | Sequence[tuple[str, Mapping[str, Any]]]
    ) -> RoutingTable:
        """Build the table from ``conn_id -> extras`` in the DAG's order."""
        items = extras_by_gateway.items() if isinstance(extras_by_gateway, Mapping) else extras_by_gateway
        return cls(tuple(Gateway.from_extras(name, extras) for name, extras in items))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.gateways)

    def gateway(self, name: str) -> Gateway:
        """Return a gateway by name; an unknown one (a row routed by an older table) is a plain ``any`` gateway."""
        return self._by_name.get(name) or Gateway(name)

    def route(self, phone: str, priority: str = NORMAL) -> str:
        """Return the gateway for one contact.

        :param phone: the normalised mobile number (11 digits)
        :param priority: the stage's priority, ``normal`` or ``urgent``
        """
        if priority not in PRIORITIES:
            raise RoutingError(f"priority must be one of {', '.join(PRIORITIES)}, not {priority!r}")
        if priority == URGENT:
            for g in self.gateways:
                if g.lane == URGENT:
                    return g.name
        best: Gateway | None = None
        best_len = 0
        for g in self.gateways:
            if g.lane == URGENT:
                continue
            for prefix in g.prefixes:
                if len(prefix) > best_len and phone.startswith(prefix):
                    best, best_len = g, len(prefix)
        if best is not None:
            return best.name
        return next(g.name for g in self.gateways if g.serves(NORMAL))

    def failover_order(self, name: str, priority: str = NORMAL) -> list[str]:
        """Return the gateways a batch routed to ``name`` may go through, ``name`` first.

        The others follow in table order when they serve the same lane (the batch gateway's
        lane, or the batch's priority when the gateway takes ``any``) or ``any``, and accept
        failover traffic.
        """
        own = self.gateway(name)
        lane = own.lane if own.lane != ANY else priority
        others = [g.name for g in self.gateways if g.name != name and g.failover and g.serves(lane)]
        return [name, *others]


@dataclass(frozen=True)
class BatchId:
    """The parts of a send batch id ``<campaign>:<channel>:<gateway>:<run>:<u?NNNN>``.

    Urgent batches carry a ``u`` before their number (``...:u0000``), normal ones none, so the
    ids of single-lane runs are what they always were.
    """

    campaign: str
    channel: str
    gateway: str
    run: str
    priority: str
    number: int

    @classmethod
    def parse(cls, batch_id: str) -> BatchId:
        """Split a batch id; raise ValueError naming it when it does not have five parts."""
        pieces = batch_id.split(":")
        if len(pieces) != 5 or not pieces[4].lstrip("u").isdigit():
            raise ValueError(f"not a send batch id: {batch_id!r}")
        campaign, channel, gateway, run, tail = pieces
        priority = URGENT if tail.startswith("u") else NORMAL
        return cls(campaign, channel, gateway, run, priority, int(tail.lstrip("u")))


def batch_suffix(priority: str, number: int) -> str:
    """Return the last part of a batch id: ``0007`` for normal, ``u0007`` for urgent batches."""
    return f"{'u' if priority == URGENT else ''}{number:04d}"


def fit_parts(parts: Sequence[int], allowed: int) -> int:
    """Return how many leading messages of ``parts`` fit into ``allowed`` parts (a quota's rest)."""
    used = 0
    for n, p in enumerate(parts):
        if used + p > allowed:
            return n
        used += p
    return len(parts)


__all__ = [
    "ANY",
    "DEFAULT_GATEWAY",
    "LANES",
    "NORMAL",
    "URGENT",
    "BatchId",
    "Gateway",
    "RoutingError",
    "RoutingTable",
    "batch_suffix",
    "fit_parts",
    "parse_prefixes",
]
