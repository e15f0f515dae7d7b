"""Capacity planning: does today's run fit the sending window, and when will it end?

Each gateway (an SMPP bind, a GSM modem) sends its own queue at its own rate, in parallel with
the others. From the planned parts per gateway, each gateway's rate and the allowed hours, this
module says when each queue would drain, how many parts would spill past the window (or past a
gateway's daily limit), and gives one line for the task log and the run report.

A gateway without a configured rate is reported as *unknown*, never assumed infinite. The clock
is never read: ``now`` is passed in.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

__all__ = ["CapacityReport", "GatewayCapacity", "GatewayPlan", "plan_capacity"]

logger = logging.getLogger(__name__)

Status = Literal["fits", "overflow", "unknown"]


def _as_rate(value: float | int | Decimal | str) -> Decimal:
    if isinstance(value, bool):
        raise TypeError("rate_per_second must be a number, not a bool")
    rate = Decimal(str(value))  # str() so 0.57 is 0.57, not 0.569999...
    if not rate.is_finite() or rate <= 0:
        raise ValueError(f"rate_per_second must be a positive number, got {value!r}")
    return rate


@dataclass(frozen=True, slots=True)
class GatewayCapacity:
    """What one gateway can send.

    :param name: the gateway (Airflow connection id), e.g. ``smpp_default``
    :param rate_per_second: parts per second (an SMSC's throttle, a modem's pace); ``None`` when
        not configured, which makes the gateway's end time unknown
    :param max_parts_today: the most parts the gateway may send today (a contract's daily
        quota, a SIM's daily limit); ``None`` for no limit
    """

    name: str
    rate_per_second: float | int | Decimal | None
    max_parts_today: int | None = None

    def __post_init__(self) -> None:
        if self.rate_per_second is not None:
            _as_rate(self.rate_per_second)
        if self.max_parts_today is not None and (
            isinstance(self.max_parts_today, bool)
            or not isinstance(self.max_parts_today, int)
            or self.max_parts_today < 0
        ):
            raise ValueError(f"max_parts_today must be a non-negative int, got {self.max_parts_today!r}")


@dataclass(frozen=True, slots=True)
class GatewayPlan:
    """The capacity verdict for one gateway.

    :param name: the gateway
    :param parts: parts planned on it
    :param rate_per_second: its rate, ``None`` when unknown
    :param seconds_needed: seconds to send every part at that rate, ``None`` when unknown
    :param starts_at: when sending starts: the later of now and the window start
    :param ends_at: when the last part would go out at that rate (possibly after the window end),
        ``None`` when unknown
    :param capacity: parts it can send before the window end and within its daily limit,
        ``None`` when unknown
    :param overflow_parts: parts that will not go out today, ``None`` when unknown
    :param max_parts_today: its daily limit, if any
    """

    name: str
    parts: int
    rate_per_second: Decimal | None
    seconds_needed: float | None
    starts_at: dt.datetime
    ends_at: dt.datetime | None
    capacity: int | None
    overflow_parts: int | None
    max_parts_today: int | None = None

    @property
    def status(self) -> Status:
        """Return ``"fits"``, ``"overflow"`` or ``"unknown"`` (no rate configured)."""
        if self.overflow_parts is None:
            return "unknown"
        return "fits" if self.overflow_parts == 0 else "overflow"

    @property
    def fits(self) -> bool | None:
        """Tell whether every part goes out today; ``None`` when the rate is unknown."""
        return None if self.overflow_parts is None else self.overflow_parts == 0

    def summary(self, window_end: dt.datetime) -> str:
        """Return one line, e.g. ``smpp_default: 4,946 parts at 100/s -> ends 08:01 (fits)``.

        :param window_end: the window's end, for the overflow wording
        """
        head = f"{self.name}: {self.parts:,} parts"
        if self.rate_per_second is None or self.ends_at is None:
            return f"{head} at unknown rate -> end unknown (no rate configured)"
        line = (
            f"{head} at {_rate_text(self.rate_per_second)}/s -> ends {_clock(self.ends_at, self.starts_at)}"
        )
        if self.status == "fits":
            return f"{line} (fits)"
        reasons = []
        if self.max_parts_today is not None and self.parts > self.max_parts_today:
            reasons.append(f"daily limit {self.max_parts_today:,}")
        if self.ends_at > window_end:
            reasons.append(f"window ends {_clock(window_end, self.starts_at)}")
        return f"{line} (does not fit: {self.overflow_parts:,} parts over, {', '.join(reasons)})"


@dataclass(frozen=True, slots=True)
class CapacityReport:
    """The capacity verdict for a run.

    :param window_start: the allowed hours' start
    :param window_end: the allowed hours' end
    :param now: the time the plan was made for
    :param gateways: one verdict per gateway with planned parts, in name order
    """

    window_start: dt.datetime
    window_end: dt.datetime
    now: dt.datetime
    gateways: tuple[GatewayPlan, ...]

    @property
    def fits(self) -> bool:
        """Tell whether every gateway's parts go out in the window (unknown rates do not fit)."""
        return all(g.status == "fits" for g in self.gateways)

    @property
    def unknown(self) -> tuple[str, ...]:
        """Return the gateways without a configured rate."""
        return tuple(g.name for g in self.gateways if g.status == "unknown")

    @property
    def overflow_parts(self) -> int:
        """Return the parts that will not go out today on the gateways with a known rate."""
        return sum(g.overflow_parts or 0 for g in self.gateways)

    @property
    def latest_end(self) -> dt.datetime | None:
        """Return when the last known gateway finishes; ``None`` if no rate is known."""
        ends = [g.ends_at for g in self.gateways if g.ends_at is not None]
        return max(ends) if ends else None

    @property
    def warnings(self) -> tuple[str, ...]:
        """Return one warning line per gateway that does not fit or has an unknown rate."""
        return tuple(g.summary(self.window_end) for g in self.gateways if g.status != "fits")

    def summary(self) -> str:
        """Return one line for the log and the run report, all gateways, then the verdict."""
        if not self.gateways:
            return "no parts planned"
        lines = "; ".join(g.summary(self.window_end) for g in self.gateways)
        if self.fits:
            latest = self.latest_end
            assert latest is not None
            return f"{lines} -- run fits, last part {_clock(latest, self.window_start)}"
        verdict = []
        if self.overflow_parts:
            verdict.append(f"run does NOT fit today's window: {self.overflow_parts:,} parts over")
        if self.unknown:
            verdict.append(f"end unknown: no rate for {', '.join(self.unknown)}")
        return f"{lines} -- {'; '.join(verdict)}"


def _rate_text(rate: Decimal) -> str:
    return format(rate.normalize(), "f")


def _clock(at: dt.datetime, reference: dt.datetime) -> str:
    """Return ``HH:MM`` in the reference's zone, with the date when it is another day.

    Rounded up to the minute: a queue draining at 08:00:49 "ends 08:01", never earlier than true.
    """
    local = at.astimezone(reference.tzinfo)
    if local.second or local.microsecond:
        local = local.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    if local.date() == reference.date():
        return local.strftime("%H:%M")
    return local.strftime("%Y-%m-%d %H:%M")


def _check_aware(value: dt.datetime, name: str) -> None:
    if not isinstance(value, dt.datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got {value!r}")


def _seconds(delta: dt.timedelta) -> Decimal:
    return Decimal(delta.days * 86_400 + delta.seconds) + Decimal(delta.microseconds) / Decimal(1_000_000)


def plan_capacity(
    parts_by_gateway: Mapping[str, int],
    gateways: Mapping[str, GatewayCapacity],
    window: tuple[dt.datetime, dt.datetime],
    now: dt.datetime,
) -> CapacityReport:
    """Tell whether today's parts fit the sending window on each gateway, and when each ends.

    Every gateway starts at the later of ``now`` and the window start and sends at its own
    rate, in parallel. Parts beyond what the rate allows before the window end, or beyond the
    gateway's daily limit, overflow. Logs a warning for every gateway that does not fit or has
    no configured rate.

    :param parts_by_gateway: planned SMS parts (or calls) per gateway
    :param gateways: each gateway's capacity, by name
    :param window: the allowed hours today, aware ``(start, end)``
    :param now: the current time of the run, aware (passed in, never read from the clock)
    :raises ValueError: on naive datetimes, a window ending before it starts or negative parts
    """
    start, end = window
    _check_aware(start, "window start")
    _check_aware(end, "window end")
    _check_aware(now, "now")
    if end < start:
        raise ValueError(f"window ends ({end.isoformat()}) before it starts ({start.isoformat()})")
    begin = max(now, start).astimezone(start.tzinfo)  # report in the window's zone
    available = max(_seconds(end - begin), Decimal(0))
    plans: list[GatewayPlan] = []
    for name in sorted(parts_by_gateway):
        parts = parts_by_gateway[name]
        if isinstance(parts, bool) or not isinstance(parts, int) or parts < 0:
            raise ValueError(f"parts for {name} must be a non-negative int, got {parts!r}")
        gateway = gateways.get(name)
        limit = gateway.max_parts_today if gateway is not None else None
        if gateway is None or gateway.rate_per_second is None:
            plans.append(GatewayPlan(name, parts, None, None, begin, None, None, None, limit))
            continue
        rate = _as_rate(gateway.rate_per_second)
        needed = Decimal(parts) / rate
        capacity = math.floor(rate * available)
        if limit is not None:
            capacity = min(capacity, limit)
        plans.append(
            GatewayPlan(
                name=name,
                parts=parts,
                rate_per_second=rate,
                seconds_needed=float(needed),
                starts_at=begin,
                ends_at=begin + dt.timedelta(seconds=float(needed)),
                capacity=capacity,
                overflow_parts=max(parts - capacity, 0),
                max_parts_today=limit,
            )
        )
    report = CapacityReport(window_start=start, window_end=end, now=now, gateways=tuple(plans))
    for warning in report.warnings:
        logger.warning("Capacity: %s", warning)
    return report
