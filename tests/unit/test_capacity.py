"""The capacity planner says whether a run fits today's sending window and when it ends."""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from include.dunning.capacity import GatewayCapacity, plan_capacity

SHANGHAI = ZoneInfo("Asia/Shanghai")


def at(clock: str, day: str = "2026-04-10", zone: dt.tzinfo = SHANGHAI) -> dt.datetime:
    return dt.datetime.fromisoformat(f"{day}T{clock}").replace(tzinfo=zone)


WINDOW = (at("08:00"), at("20:00"))  # 12 hours = 43,200 s
SMPP = GatewayCapacity("smpp_default", rate_per_second=100)
MODEM = GatewayCapacity("modem_1", rate_per_second=Decimal("0.2"))


def test_a_small_run_fits_and_starts_at_the_window_start() -> None:
    report = plan_capacity({"smpp_default": 4946}, {"smpp_default": SMPP}, WINDOW, now=at("07:30"))
    (plan,) = report.gateways
    assert plan.starts_at == at("08:00")
    assert plan.seconds_needed == pytest.approx(49.46)
    assert plan.ends_at == at("08:00:49.460000")
    assert plan.fits is True and plan.overflow_parts == 0
    assert report.fits is True and report.latest_end == plan.ends_at
    assert report.summary().startswith("smpp_default: 4,946 parts at 100/s -> ends 08:01 (fits)")


def test_a_run_started_late_starts_now() -> None:
    report = plan_capacity({"smpp_default": 6000}, {"smpp_default": SMPP}, WINDOW, now=at("19:59"))
    (plan,) = report.gateways
    assert plan.starts_at == at("19:59")
    assert plan.ends_at == at("20:00")
    assert plan.fits is True


def test_a_slow_modem_overflows_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    # 0.2 parts/s over 12 h = 8,640 parts; 9,000 need 45,000 s = 12.5 h -> 20:30.
    with caplog.at_level(logging.WARNING, logger="include.dunning.capacity"):
        report = plan_capacity({"modem_1": 9000}, {"modem_1": MODEM}, WINDOW, now=at("06:00"))
    (plan,) = report.gateways
    assert (plan.capacity, plan.overflow_parts, plan.status) == (8640, 360, "overflow")
    assert plan.ends_at == at("20:30")
    assert report.fits is False and report.overflow_parts == 360
    assert "modem_1: 9,000 parts at 0.2/s -> ends 20:30 (does not fit: 360 parts over" in report.summary()
    assert "does NOT fit" in report.summary()
    assert report.warnings and "modem_1" in report.warnings[0]
    assert any("modem_1" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


@pytest.mark.parametrize(
    ("parts", "fits"),
    [(57, True), (58, False)],
    ids=["exactly-capacity-fits", "one-over-overflows"],
)
def test_capacity_edge_is_exact_for_decimal_rates(parts: int, fits: bool) -> None:
    # 0.57/s for 100 s is exactly 57 parts (a float product would give 56.99... -> 56).
    window = (at("08:00:00"), at("08:01:40"))
    gateway = GatewayCapacity("smpp_slow", rate_per_second=0.57)
    (plan,) = plan_capacity({"smpp_slow": parts}, {"smpp_slow": gateway}, window, now=at("08:00")).gateways
    assert plan.capacity == 57
    assert plan.fits is fits


def test_daily_limit_overflows_even_inside_the_window() -> None:
    gateway = GatewayCapacity("smpp_default", rate_per_second=100, max_parts_today=5000)
    report = plan_capacity({"smpp_default": 5001}, {"smpp_default": gateway}, WINDOW, now=at("08:00"))
    (plan,) = report.gateways
    assert plan.overflow_parts == 1 and report.fits is False
    assert "daily limit 5,000" in report.summary()


def test_gateway_without_rate_is_unknown_not_infinite(caplog: pytest.LogCaptureFixture) -> None:
    gateways = {"smpp_default": SMPP, "modem_2": GatewayCapacity("modem_2", rate_per_second=None)}
    parts = {"smpp_default": 100, "modem_2": 10, "smpp_backup": 5}
    with caplog.at_level(logging.WARNING, logger="include.dunning.capacity"):
        report = plan_capacity(parts, gateways, WINDOW, now=at("08:00"))
    statuses = {g.name: g.status for g in report.gateways}
    assert statuses == {"modem_2": "unknown", "smpp_backup": "unknown", "smpp_default": "fits"}
    assert report.fits is False
    assert report.unknown == ("modem_2", "smpp_backup")
    assert report.latest_end == at("08:00:01")
    assert "modem_2: 10 parts at unknown rate -> end unknown (no rate configured)" in report.summary()
    assert "end unknown: no rate for modem_2, smpp_backup" in report.summary()
    assert sum("unknown rate" in r.getMessage() for r in caplog.records) == 2


def test_gateways_send_in_parallel_and_the_latest_end_wins() -> None:
    report = plan_capacity(
        {"smpp_default": 360_000, "modem_1": 720},
        {"smpp_default": SMPP, "modem_1": MODEM},
        WINDOW,
        now=at("08:00"),
    )
    ends = {g.name: g.ends_at for g in report.gateways}
    assert ends == {"smpp_default": at("09:00"), "modem_1": at("09:00")}
    assert report.fits is True and report.latest_end == at("09:00")


def test_run_after_the_window_sends_nothing_today() -> None:
    report = plan_capacity({"smpp_default": 10}, {"smpp_default": SMPP}, WINDOW, now=at("20:30"))
    (plan,) = report.gateways
    assert plan.capacity == 0 and plan.overflow_parts == 10
    assert "window ends 20:00" in report.summary()


def test_end_on_another_day_shows_the_date() -> None:
    report = plan_capacity({"modem_1": 20_000}, {"modem_1": MODEM}, WINDOW, now=at("08:00"))
    assert "ends 2026-04-11 11:47" in report.summary()  # 100,000 s = 27 h 46 m 40 s, rounded up


def test_times_are_shown_in_the_window_zone_whatever_now_is() -> None:
    now_utc = at("00:00", zone=dt.UTC)  # 08:00 in Shanghai
    report = plan_capacity({"smpp_default": 6000}, {"smpp_default": SMPP}, WINDOW, now=now_utc)
    assert "ends 08:01 (fits)" in report.summary()


def test_nothing_planned() -> None:
    report = plan_capacity({}, {"smpp_default": SMPP}, WINDOW, now=at("08:00"))
    assert report.fits is True and report.latest_end is None
    assert report.summary() == "no parts planned"


def test_zero_parts_fit_even_after_the_window() -> None:
    report = plan_capacity({"smpp_default": 0}, {"smpp_default": SMPP}, WINDOW, now=at("21:00"))
    assert report.fits is True


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"now": dt.datetime(2026, 4, 10, 8)}, "aware"),
        ({"window": (at("20:00"), at("08:00"))}, "before it starts"),
        ({"parts_by_gateway": {"smpp_default": -1}}, "non-negative"),
    ],
    ids=["naive-now", "reversed-window", "negative-parts"],
)
def test_bad_arguments_are_refused(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {
        "parts_by_gateway": {"smpp_default": 1},
        "gateways": {"smpp_default": SMPP},
        "window": WINDOW,
        "now": at("08:00"),
    }
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        plan_capacity(**arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rate", "limit"), [(0, None), (-5, None), (10, -1)], ids=["zero-rate", "negative-rate", "negative-limit"]
)
def test_bad_gateway_settings_are_refused(rate: int, limit: int | None) -> None:
    with pytest.raises(ValueError):
        GatewayCapacity("smpp_default", rate_per_second=rate, max_parts_today=limit)
