"""Mobile-originated replies: which ones ask to stop reminders."""

from __future__ import annotations

import unicodedata

# Opt-out replies honoured on every channel (DOMAIN §5): the reply, trimmed, is one of these.
OPT_OUT_WORDS = frozenset({"TD", "T", "N", "R", "退订"})


def is_opt_out(text: str | None) -> bool:
    """Return True when a reply asks to stop reminders (TD, T, N, R or 退订, any case/width)."""
    if not text:
        return False
    word = unicodedata.normalize("NFKC", text).strip().strip("。.!！").upper()
    return word in OPT_OUT_WORDS
