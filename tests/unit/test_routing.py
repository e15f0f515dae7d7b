"""Gateway routing rules (include/dunning/routing.py): lanes, prefix hints, failover order, batch ids."""

from __future__ import annotations

import pytest

from include.dunning.routing import (
    NORMAL,
    URGENT,
    BatchId,
    Gateway,
    RoutingError,
    RoutingTable,
    batch_suffix,
    fit_parts,
    parse_prefixes,
)

CMCC = "134-139,147,150-152,157-159,178,182-184,187,188,198"


@pytest.fixture
def table() -> RoutingTable:
    return RoutingTable.from_extras(
        {
            "smpp_cmcc": {"lane": "normal", "prefixes": CMCC, "daily_quota": "100000"},
            "smpp_default": {"lane": "normal"},
            "smpp_backup": {},  # lane any
            "smpp_urgent": {"lane": "urgent", "daily_quota": 5000},
        }
    )


def test_prefix_ranges_expand_and_keep_their_width() -> None:
    assert parse_prefixes("134-136, 150;188") == ("134", "135", "136", "150", "188")
    assert parse_prefixes(["1340-1342", "147"]) == ("1340", "1341", "1342", "147")
    assert parse_prefixes(None) == () and parse_prefixes("") == ()


@pytest.mark.parametrize("bad", ["13a", "139-134", "98-101", "1-"])
def test_bad_prefixes_are_refused_naming_the_gateway(bad: str) -> None:
    with pytest.raises(RoutingError, match="smpp_x"):
        parse_prefixes(bad, gateway="smpp_x")


def test_urgent_stages_go_to_the_urgent_gateway_whatever_the_number(table: RoutingTable) -> None:
    assert table.route("13800138000", URGENT) == "smpp_urgent"
    assert table.route("18912345678", URGENT) == "smpp_urgent"


def test_prefix_hint_wins_over_the_default_for_normal_traffic(table: RoutingTable) -> None:
    assert table.route("13800138000") == "smpp_cmcc"
    assert table.route("15112345678", NORMAL) == "smpp_cmcc"
    assert table.route("18812345678") == "smpp_cmcc"


def test_other_numbers_take_the_first_normal_gateway(table: RoutingTable) -> None:
    assert table.route("18912345678") == "smpp_cmcc"  # the first normal gateway is the carrier's ...
    plain = RoutingTable.from_extras(
        [("smpp_default", {}), ("smpp_cmcc", {"lane": "normal", "prefixes": CMCC})]
    )
    assert plain.route("18912345678") == "smpp_default"  # ... so order decides the default
    assert plain.route("13912345678") == "smpp_cmcc"


def test_longest_prefix_wins() -> None:
    table = RoutingTable.from_extras(
        [("wide", {"prefixes": "13"}), ("narrow", {"prefixes": "1390-1399"}), ("rest", {})]
    )
    assert table.route("13912345678") == "narrow"
    assert table.route("13812345678") == "wide"


def test_urgent_lane_gateway_never_takes_normal_traffic_even_with_matching_prefixes() -> None:
    table = RoutingTable.from_extras(
        [("urgent", {"lane": "urgent", "prefixes": "139"}), ("default", {"lane": "normal"})]
    )
    assert table.route("13912345678") == "default"
    assert table.route("13912345678", URGENT) == "urgent"


def test_without_an_urgent_gateway_urgent_traffic_is_routed_like_normal(table: RoutingTable) -> None:
    no_urgent = RoutingTable.from_extras([("a", {"lane": "normal"}), ("b", {"prefixes": "139"})])
    assert no_urgent.route("13912345678", URGENT) == "b"
    assert no_urgent.route("13812345678", URGENT) == "a"


def test_single_gateway_takes_everything() -> None:
    table = RoutingTable.single()
    assert table.route("13912345678", URGENT) == table.route("18912345678") == "smpp_default"
    assert table.failover_order("smpp_default") == ["smpp_default"]


def test_failover_order_keeps_to_the_lane_or_any(table: RoutingTable) -> None:
    assert table.failover_order("smpp_cmcc", NORMAL) == ["smpp_cmcc", "smpp_default", "smpp_backup"]
    assert table.failover_order("smpp_default", NORMAL) == ["smpp_default", "smpp_cmcc", "smpp_backup"]
    assert table.failover_order("smpp_urgent", URGENT) == ["smpp_urgent", "smpp_backup"]
    # An "any" gateway fails over along the batch's own priority.
    assert table.failover_order("smpp_backup", URGENT) == ["smpp_backup", "smpp_urgent"]
    assert table.failover_order("smpp_backup", NORMAL) == ["smpp_backup", "smpp_cmcc", "smpp_default"]


def test_a_gateway_can_refuse_failover_traffic() -> None:
    table = RoutingTable.from_extras(
        [("a", {"lane": "normal"}), ("carrier", {"prefixes": "139", "failover": "false"}), ("b", {})]
    )
    assert table.failover_order("a") == ["a", "b"]
    assert table.failover_order("carrier") == ["carrier", "a", "b"]


def test_quota_extras_are_whole_numbers() -> None:
    assert Gateway.from_extras("g", {"daily_quota": " 2500 "}).daily_quota == 2500
    assert Gateway.from_extras("g", {"daily_quota": ""}).daily_quota is None
    with pytest.raises(RoutingError, match="g.*daily_quota"):
        Gateway.from_extras("g", {"daily_quota": "lots"})
    with pytest.raises(RoutingError, match="negative"):
        Gateway.from_extras("g", {"daily_quota": -1})


@pytest.mark.parametrize(
    ("extras", "problem"),
    [
        ([("a", {"lane": "fast"})], "lane must be one of"),
        ([("a", {"lane": "urgent"})], "no gateway for normal traffic"),
        ([("a", {}), ("a", {})], "listed twice"),
        ([], "at least one gateway"),
        ([("a", {"failover": "maybe"})], "failover must be true or false"),
    ],
)
def test_bad_tables_are_refused_clearly(extras, problem: str) -> None:
    with pytest.raises(RoutingError, match=problem):
        RoutingTable.from_extras(extras)


def test_unknown_priority_is_refused(table: RoutingTable) -> None:
    with pytest.raises(RoutingError, match="priority"):
        table.route("13912345678", "high")


def test_batch_ids_carry_gateway_and_priority() -> None:
    normal = BatchId.parse("power_dunning:sms:smpp_cmcc:manual__2026-11-23T0200000000:0007")
    assert (normal.campaign, normal.channel, normal.gateway, normal.priority, normal.number) == (
        "power_dunning", "sms", "smpp_cmcc", NORMAL, 7,
    )  # fmt: skip
    urgent = BatchId.parse("power_dunning:sms:smpp_urgent:r1:" + batch_suffix(URGENT, 12))
    assert urgent.priority == URGENT and urgent.number == 12 and urgent.gateway == "smpp_urgent"
    with pytest.raises(ValueError, match="not a send batch id"):
        BatchId.parse("b1")


def test_fit_parts_takes_the_leading_messages_that_fit() -> None:
    assert fit_parts([1, 2, 1, 3], 4) == 3
    assert fit_parts([1, 2, 1, 3], 3) == 2
    assert fit_parts([2], 1) == 0
    assert fit_parts([1, 1], 10) == 2
    assert fit_parts([], 0) == 0
