"""Plan contacts: eligibility, fees, texts and keys into the contact ledger, then send batches."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from hooks.extras import as_bool
from operators.common import (
    DEFAULT_STORE_CONN_ID,
    display_path,
    dunning_store,
    resolve_as_of,
    run_partition,
)

if TYPE_CHECKING:
    import pandas as pd


class PlanContactsOperator(BaseOperator):
    """Plan one campaign's contacts for the run's as-of date and batch them for sending.

    Reads the validated Parquet file, asks the campaign's planner for one decision per contact
    (PLANNED, or SUPPRESSED with a reason: opted out, deferral, frequency cap, ...), writes them
    to the ledger (UPSERT on the deterministic key: rows already claimed or sent are never
    touched, unsent ones get today's decision), suppresses earlier unsent rows no longer due,
    writes a preview CSV of the texts, and splits today's sendable rows into batches per channel
    and gateway. Returns the batch ids (XCom) for the mapped send task; pushes the counts
    under ``counts``. Subclasses say which campaign and planner.

    :param valid_path: the validated Parquet file (templated)
    :param signature: the 【signature】 of the messages (templated)
    :param gateway: Airflow connection id of the SMS gateway the contacts go out through
    :param batch_size: rows per send batch (grown when there would be over ``max_batches``)
    :param max_batches: most batches one run may map over
    :param dry_run: plan and render into the ledger and a preview CSV, send nothing (templated)
    :param store_conn_id: Airflow connection of the dunning store
    """

    template_fields: Sequence[str] = ("valid_path", "signature", "dry_run")
    ui_color = "#e9f7ef"
    sort_columns: Sequence[str] = ("mobile_normalized",)

    def __init__(
        self,
        *,
        valid_path: str,
        signature: str,
        gateway: str = "smpp_default",
        batch_size: int = 500,
        max_batches: int = 1000,
        dry_run: bool | str = False,
        store_conn_id: str = DEFAULT_STORE_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.valid_path = valid_path
        self.signature = signature
        self.gateway = gateway
        self.batch_size = batch_size
        self.max_batches = max_batches
        self.dry_run = dry_run
        self.store_conn_id = store_conn_id

    def make_campaign(self) -> Any:
        """Return the campaign settings (checked: templates linted, ladder loaded)."""
        raise NotImplementedError

    def plan(self, frame: pd.DataFrame, campaign: Any, **decision_inputs: Any) -> Iterable[dict[str, Any]]:
        """Return the campaign planner's rows for the sorted frame."""
        raise NotImplementedError

    def after_plan(self, store: Any, frame: pd.DataFrame, *, as_of: Any, run_id: str) -> dict[str, Any]:
        """Do campaign-specific bookkeeping beside the contacts (e.g. staff flags); return counts."""
        return {}

    def execute(self, context: Any) -> list[str]:
        import pandas as pd
        from airflow.sdk import ObjectStoragePath

        from include.dunning import ledger
        from include.dunning.phones import mask

        as_of = resolve_as_of(context)
        campaign = self.make_campaign()
        with ObjectStoragePath(self.valid_path).open("rb") as fh:
            frame = pd.read_parquet(fh)
        frame = frame.sort_values(list(self.sort_columns), kind="stable")
        store = dunning_store(self.store_conn_id)
        phones = frame["mobile_normalized"].dropna().unique().tolist()
        now = ledger.utcnow()
        rows = list(
            self.plan(
                frame,
                campaign,
                as_of=as_of,
                run_id=context["run_id"],
                planned_at=now,
                opted_out=store.opted_out(phones),
                last_contact=store.recent_contacts(phones, since=now - timedelta(days=campaign.cap_days)),
            )
        )
        decided = Counter(r["reason"].split(":")[0] for r in rows if r["state"] == ledger.SUPPRESSED)
        for reason, n in sorted(decided.items()):
            self.log.info("decided to suppress %d contacts: %s", n, reason)
        extra = self.after_plan(store, frame, as_of=as_of, run_id=context["run_id"])
        written = store.upsert_planned(rows)
        superseded = store.supersede_stale(campaign.campaign, as_of)
        if superseded:
            self.log.info(
                "suppressed %d rows planned earlier that today's plan no longer includes", superseded
            )
        preview = self._write_preview(context, rows, mask)
        if as_bool(self.dry_run):
            batches: list[str] = []
            self.log.info(
                "dry run: %d contacts decided, texts in %s; nothing will be sent", len(rows), preview
            )
        else:
            batches = store.assign_batches(
                campaign.campaign,
                as_of,
                context["run_id"],
                batch_size=self.batch_size,
                max_batches=self.max_batches,
            )
        capacity = self._capacity(rows, as_of)
        # Batch ids are "<campaign>:<channel>:<gateway>:<run>:<n>": SMS batches go to the mapped
        # SMPP send task (the return value), voice batches to the modem pool (XCom "voice_batches").
        voice = [b for b in batches if b.split(":")[1] == "voice"]
        batches = [b for b in batches if b.split(":")[1] != "voice"]
        context["ti"].xcom_push(key="voice_batches", value=voice)
        counts = {
            "planned": written.planned,
            "suppressed": written.suppressed,
            "suppressed_by_reason": dict(decided),
            "by_stage": dict(Counter(r["stage"] for r in rows if r["state"] == ledger.PLANNED)),
            "new": written.new,
            "refreshed": written.refreshed,
            "superseded": superseded,
            "batches": len(batches),
            "voice_batches": len(voice),
            "dry_run": as_bool(self.dry_run),
            "preview": display_path(preview),
            "capacity": capacity,
            **extra,
        }
        context["ti"].xcom_push(key="counts", value=counts)
        self.log.info(
            "%s %s: %d contacts planned (%s), %d suppressed; %d send batches",
            campaign.campaign, as_of, written.planned, counts["by_stage"], written.suppressed, len(batches),
        )  # fmt: skip
        return batches

    def _capacity(self, rows: list[dict[str, Any]], as_of: Any) -> str:
        """Log whether today's SMS parts fit each gateway's sending window; return the summary.

        A gateway's rate is its connection's ``rate_limit`` extra (parts per second); without
        one the capacity is reported as unknown rather than assumed.
        """
        from datetime import datetime, time

        from airflow.sdk import BaseHook

        from include.dunning import ledger
        from include.dunning.capacity import GatewayCapacity, plan_capacity
        from operators.common import LOCAL_TZ

        parts: dict[str, int] = {}
        for r in rows:
            if r["state"] == ledger.PLANNED and r["channel"] == "sms":
                parts[r["gateway"]] = parts.get(r["gateway"], 0) + int(r["parts"])
        if not parts:
            return "no SMS to send"
        gateways = {}
        for name in parts:
            try:
                rate = float(BaseHook.get_connection(name).extra_dejson.get("rate_limit") or 0) or None
            except Exception:  # an unknown connection is reported as unknown capacity, not a failure
                rate = None
            gateways[name] = GatewayCapacity(name, rate)
        window = (
            datetime.combine(as_of, time(8, 0), tzinfo=LOCAL_TZ),
            datetime.combine(as_of, time(20, 0), tzinfo=LOCAL_TZ),
        )
        # plan_capacity itself warns about each gateway that does not fit or has no rate.
        summary = plan_capacity(parts, gateways, window, datetime.now(LOCAL_TZ)).summary()
        self.log.info("capacity: %s", summary)
        return summary

    def _write_preview(self, context: Any, rows: list[dict[str, Any]], mask: Any) -> Any:
        import pandas as pd

        preview = run_partition(context) / "plan" / "messages.csv"
        preview.parent.mkdir(parents=True, exist_ok=True)
        columns = ["debtor_ids", "debtor_name", "stage", "channel", "state", "reason", "parts", "amount",
                   "surcharge", "message_text"]  # fmt: skip
        with preview.open("w", encoding="utf-8-sig") as fh:
            pd.DataFrame(rows, columns=columns).assign(phone=[mask(r["phone"]) for r in rows]).to_csv(
                fh, index=False
            )
        return preview


class PlanTaxPaymentOperator(PlanContactsOperator):
    """Plan this week's tax payment dunning: one message per number, surcharge per liability."""

    sort_columns = ("mobile_normalized", "taxpayer_id", "deadline")

    def __init__(self, *, signature: str = "示范市税务", **kwargs: Any) -> None:
        super().__init__(signature=signature, **kwargs)

    def make_campaign(self) -> Any:
        from include.dunning import planner

        campaign = planner.TaxPaymentCampaign(signature=self.signature, gateway=self.gateway)
        campaign.lint()
        return campaign

    def plan(self, frame: pd.DataFrame, campaign: Any, **decision_inputs: Any) -> Iterable[dict[str, Any]]:
        from include.dunning import planner

        return planner.plan_tax_payment(frame.to_dict("records"), campaign=campaign, **decision_inputs)


class PlanPowerOperator(PlanContactsOperator):
    """Plan today's electricity contacts on the power ladder: dunning, cut-off notices, balance alerts.

    :param ladder: the ladder file or packaged name (``power``); validated before anything is planned
    :param grace_days: days after the due date before the penalty clock starts (templated)
    :param cross_year: ``whole_period`` or ``split_by_day`` penalty reading across a year end (templated)
    :param voice_gateway: the modem pool voice stages go to; empty: they are recorded as
        SUPPRESSED (templated)
    """

    template_fields: Sequence[str] = (
        *PlanContactsOperator.template_fields,
        "grace_days",
        "cross_year",
        "voice_gateway",
    )
    sort_columns = ("mobile_normalized", "account_no", "kind", "due_date")

    def __init__(
        self,
        *,
        signature: str = "示范供电",
        ladder: str = "power",
        grace_days: int | str = 0,
        cross_year: str = "whole_period",
        voice_gateway: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(signature=signature, **kwargs)
        self.voice_gateway = voice_gateway
        self.ladder = ladder
        self.grace_days = grace_days
        self.cross_year = cross_year

    def make_campaign(self) -> Any:
        from include.dunning import planner
        from include.dunning.ladder import load_ladder

        self._ladder = load_ladder(self.ladder)  # refuses a bad ladder, naming file and line
        return planner.PowerCampaign(
            signature=self.signature,
            gateway=self.gateway,
            grace_days=int(self.grace_days),
            cross_year=str(self.cross_year),
            voice_gateway=self.voice_gateway or None,
        )

    def plan(self, frame: pd.DataFrame, campaign: Any, **decision_inputs: Any) -> Iterable[dict[str, Any]]:
        from include.dunning import planner

        return planner.plan_power(
            frame.to_dict("records"), campaign=campaign, ladder=self._ladder, **decision_inputs
        )


class PlanFilingRemindersOperator(PlanContactsOperator):
    """Plan today's tax filing reminders on the tax ladder and flag 非正常户 for staff.

    Reminders go out 5 and 2 working days (ladder setting) before each upcoming filing deadline
    to taxpayers who have not filed; taxpayers with 3 consecutive months unfiled are written to
    the store's ``staff_flag`` table (no message).

    :param ladder: the ladder file or packaged name (``tax``); validated before anything is planned
    """

    sort_columns = ("mobile_normalized", "taxpayer_id", "period")

    def __init__(self, *, signature: str = "示范市税务", ladder: str = "tax", **kwargs: Any) -> None:
        super().__init__(signature=signature, **kwargs)
        self.ladder = ladder

    def make_campaign(self) -> Any:
        from include.dunning import planner
        from include.dunning.ladder import load_ladder

        self._ladder = load_ladder(self.ladder)
        return planner.TaxFilingCampaign(signature=self.signature, gateway=self.gateway)

    def plan(self, frame: pd.DataFrame, campaign: Any, **decision_inputs: Any) -> Iterable[dict[str, Any]]:
        from include.dunning import planner

        return planner.plan_filing_reminders(
            frame.to_dict("records"), campaign=campaign, ladder=self._ladder, **decision_inputs
        )

    def after_plan(self, store: Any, frame: pd.DataFrame, *, as_of: Any, run_id: str) -> dict[str, Any]:
        from include.dunning import planner

        flags = planner.abnormal_taxpayers(
            frame.to_dict("records"), as_of=as_of, ladder=self._ladder, run_id=run_id
        )
        new = store.flag_for_staff(flags)
        self.log.info(
            "非正常户: %d taxpayers with 3+ consecutive months unfiled, %d newly flagged", len(flags), new
        )
        return {"staff_flags": len(flags), "staff_flags_new": new}


__all__ = [
    "PlanContactsOperator",
    "PlanFilingRemindersOperator",
    "PlanPowerOperator",
    "PlanTaxPaymentOperator",
]
