"""Plan contacts: fees, texts and keys into the contact ledger, then split into send batches."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator

from operators.common import (
    DEFAULT_STORE_CONN_ID,
    as_bool,
    display_path,
    dunning_store,
    resolve_as_of,
    run_partition,
)


class PlanTaxPaymentOperator(BaseOperator):
    """Plan this week's payment dunning for overdue taxpayers and batch it for sending.

    Writes one ledger row per taxpayer (UPSERT on the deterministic key: a re-run adds nothing
    already planned), suppresses rows planned on an earlier day and never sent (their amounts
    are stale), and splits today's sendable rows into batches per channel and gateway.
    Returns the batch ids (XCom) for the mapped send task; pushes the counts under ``counts``.

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

    def __init__(
        self,
        *,
        valid_path: str,
        signature: str = "示范市税务",
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

    def execute(self, context: Any) -> list[str]:
        import pandas as pd
        from airflow.sdk import ObjectStoragePath

        from include.dunning import ledger, planner
        from include.dunning.phones import mask

        as_of = resolve_as_of(context)
        campaign = planner.TaxPaymentCampaign(signature=self.signature, gateway=self.gateway)
        campaign.lint()
        with ObjectStoragePath(self.valid_path).open("rb") as fh:
            frame = pd.read_parquet(fh)
        frame = frame.sort_values(["mobile_normalized", "taxpayer_id", "deadline"], kind="stable")
        store = dunning_store(self.store_conn_id)
        phones = frame["mobile_normalized"].dropna().unique().tolist()
        now = ledger.utcnow()
        rows = list(
            planner.plan_tax_payment(
                frame.to_dict("records"),
                as_of=as_of,
                run_id=context["run_id"],
                planned_at=now,
                campaign=campaign,
                opted_out=store.opted_out(phones),
                last_contact=store.recent_contacts(phones, since=now - timedelta(days=campaign.cap_days)),
            )
        )
        suppressed = Counter(r["reason"].split(":")[0] for r in rows if r["state"] == ledger.SUPPRESSED)
        for reason, n in sorted(suppressed.items()):
            self.log.info("decided to suppress %d contacts: %s", n, reason)
        written = store.upsert_planned(rows)
        superseded = store.supersede_stale(campaign.campaign, as_of)
        if superseded:
            self.log.info(
                "suppressed %d rows planned earlier that today's plan no longer includes", superseded
            )
        preview = run_partition(context) / "plan" / "messages.csv"
        preview.parent.mkdir(parents=True, exist_ok=True)
        with preview.open("w", encoding="utf-8-sig") as fh:
            pd.DataFrame(
                rows,
                columns=[
                    "debtor_ids",
                    "debtor_name",
                    "state",
                    "reason",
                    "parts",
                    "amount",
                    "surcharge",
                    "message_text",
                ],
            ).assign(phone=[mask(r["phone"]) for r in rows]).to_csv(fh, index=False)
        if as_bool(self.dry_run):
            batches: list[str] = []
            self.log.info(
                "dry run: %d contacts planned, texts in %s; nothing will be sent", len(rows), preview
            )
        else:
            batches = store.assign_batches(
                campaign.campaign,
                as_of,
                context["run_id"],
                batch_size=self.batch_size,
                max_batches=self.max_batches,
            )
        counts = {
            "planned": written.planned,
            "suppressed": written.suppressed,
            "suppressed_by_reason": dict(suppressed),
            "new": written.new,
            "refreshed": written.refreshed,
            "superseded": superseded,
            "batches": len(batches),
            "dry_run": as_bool(self.dry_run),
            "preview": display_path(preview),
        }
        context["ti"].xcom_push(key="counts", value=counts)
        self.log.info(
            "planned %d contacts for %s (week %s: %d new, %d refreshed); %d send batches",
            counts["planned"], as_of, planner.campaign_week(as_of), written.new, written.refreshed, len(batches),
        )  # fmt: skip
        return batches
