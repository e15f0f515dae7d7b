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
