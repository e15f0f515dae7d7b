from __future__ import annotations

import pytest

from include.dunning.replies import is_opt_out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("TD", True),
        ("td", True),
        (" T ", True),
        ("N", True),
        ("r", True),
        ("退订", True),
        ("ＴＤ", True),  # full-width
        ("退订。", True),
        ("已缴", False),
        ("TD please", False),
        ("", False),
        (None, False),
    ],
    ids=lambda v: repr(v),
)
def test_opt_out_words(text, expected):
    assert is_opt_out(text) is expected


@pytest.mark.parametrize(
    ("clock", "inside"),
    [("07:59", False), ("08:00", True), ("19:59", True), ("20:00", False), ("23:30", False)],
)
def test_sms_sending_window_edges(clock, inside):
    from datetime import datetime

    from operators.common import LOCAL_TZ, in_window

    hour, minute = map(int, clock.split(":"))
    at = datetime(2026, 11, 23, hour, minute, tzinfo=LOCAL_TZ)
    assert in_window(at, ("08:00", "20:00")) is inside


@pytest.mark.parametrize(
    ("value", "expected"),
    [("True", True), ("false", False), ("", False), ("1", True), (True, True), (0, False)],
    ids=repr,
)
def test_as_bool_reads_template_strings(value, expected):
    from hooks.extras import as_bool

    assert as_bool(value) is expected


def test_as_bool_refuses_nonsense():
    from hooks.extras import as_bool

    with pytest.raises(ValueError, match="not a yes/no value"):
        as_bool("perhaps")
