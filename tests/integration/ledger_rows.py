"""A PLANNED SMS contact for the send tests' ledgers (one builder for every send test module)."""

from __future__ import annotations

from datetime import date, datetime

from include.dunning import ledger

AS_OF = date(2026, 11, 23)


def sms_contact(
    n: int,
    *,
    campaign: str = "tax_payment",
    period: str = "2026-W48",
    phone: str | None = None,
    text: str | None = None,
    parts: int = 1,
) -> dict:
    """Return the ledger row of debtor ``D<n>``'s PLANNED SMS on ``smpp_default``.

    :param n: the debtor's number; the phone is ``139`` and ``n`` in 8 digits unless given
    :param campaign: the campaign (and the key's campaign)
    :param period: the row's period (the key's period is always the week of ``AS_OF``)
    :param text: the message text; ``【示范市税务】请缴税，编号<n>。`` unless given
    :param parts: SMS parts of the text
    """
    return {
        "idempotency_key": ledger.idempotency_key(campaign, "2026-W48", f"D{n}", "s", "sms", 1),
        "campaign": campaign,
        "period": period,
        "as_of": AS_OF,
        "debtor_id": f"D{n}",
        "debtor_name": "某公司",
        "stage": "s",
        "channel": "sms",
        "attempt": 1,
        "phone": phone if phone is not None else f"139{n:08d}",
        "template": "t",
        "message_text": text if text is not None else f"【示范市税务】请缴税，编号{n}。",
        "parts": parts,
        "amount": None,
        "surcharge": None,
        "gateway": "smpp_default",
        "state": ledger.PLANNED,
        "reason": None,
        "planned_run_id": "r1",
        "planned_at": datetime(2026, 11, 23),
    }
