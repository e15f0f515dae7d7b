"""Plan contacts: eligibility, fees, texts and keys into the contact ledger, then send batches."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
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
    import pyarrow as pa


class PlanContactsOperator(BaseOperator):
    """Plan one campaign's contacts for the run's as-of date and batch them for sending.

    Reads the validated Parquet file, asks the campaign's planner for one decision per contact
    (PLANNED, or SUPPRESSED with a reason: opted out, deferral, frequency cap, ...), writes them
    to the ledger (UPSERT on the deterministic key: rows already claimed or sent are never
    touched, unsent ones get today's decision), suppresses earlier unsent rows no longer due,
    writes a preview CSV of the texts, and splits today's sendable rows into batches per channel
    and gateway. Returns the batch ids (XCom) for the mapped send task; pushes the counts
    under ``counts``. Subclasses say which campaign (``make_campaign``) and planner
    (``planner_name``).

    :param valid_path: the validated Parquet file (templated)
    :param signature: the 【signature】 of the messages (templated)
    :param gateway: Airflow connection id of the SMS gateway the contacts go out through (the
        only one when ``gateways`` is not given)
    :param gateways: the DAG's SMPP gateways in routing order; SMS contacts are routed among
        them (``include.dunning.routing``: urgent stages to the ``urgent`` lane, prefix hints,
        else the first ``normal``/``any`` gateway) and the batches of each gateway are pushed as
        XCom ``sms_batches__<gateway>``. None: every SMS goes through ``gateway``
    :param batch_size: rows per send batch (grown when there would be over ``max_batches``)
    :param max_batches: most batches one run may map over
    :param dry_run: plan and render into the ledger and a preview CSV, send nothing (templated)
    :param store_conn_id: Airflow connection of the dunning store
    :param chunk_rows: about how many validated rows are planned and written at a time (the
        rows of one number always stay in one chunk)
    :param plan_processes: processes planning chunks side by side (texts, fees, keys), the
        task's own included: with 2, the task plans every other chunk and one worker the rest.
        None: ``DUNNING_PLAN_PROCESSES``, else min(2, CPUs). 1 plans in the task's process
        alone, as does a file of one chunk. Workers are fresh interpreters (``spawn``), they
        never touch the store: lookups, routing and the ledger stay in the task's process
    """

    template_fields: Sequence[str] = ("valid_path", "signature", "dry_run")
    ui_color = "#e9f7ef"
    sort_columns: Sequence[str] = ("mobile_normalized",)
    #: The planner of ``include.dunning.planner.ChunkPlan``: ``tax_payment``, ``power`` or ``filing``.
    planner_name: str = ""

    def __init__(
        self,
        *,
        valid_path: str,
        signature: str,
        gateway: str = "smpp_default",
        gateways: Sequence[str] | None = None,
        batch_size: int = 500,
        max_batches: int = 1000,
        dry_run: bool | str = False,
        store_conn_id: str = DEFAULT_STORE_CONN_ID,
        chunk_rows: int = 100_000,
        plan_processes: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.valid_path = valid_path
        self.signature = signature
        self.gateway = gateway
        self.gateways = list(gateways) if gateways else None
        self.batch_size = batch_size
        self.max_batches = max_batches
        self.dry_run = dry_run
        self.store_conn_id = store_conn_id
        self.chunk_rows = chunk_rows
        self.plan_processes = plan_processes

    def make_campaign(self) -> Any:
        """Return the campaign settings (checked: templates linted, ladder loaded)."""
        raise NotImplementedError

    def after_plan(self, store: Any, table: pa.Table, *, as_of: Any, run_id: str) -> dict[str, Any]:
        """Do campaign-specific bookkeeping beside one chunk's contacts (e.g. staff flags); return counts."""
        return {}

    def extra_inputs(self, store: Any, campaign: Any, as_of: Any) -> dict[str, Any]:
        """Return further decision inputs for the campaign's planner (e.g. contact history)."""
        return {}

    def execute(self, context: Any) -> list[str]:
        from airflow.sdk import ObjectStoragePath

        from include.dunning import ledger

        as_of = resolve_as_of(context)
        campaign = self.make_campaign()
        store = dunning_store(self.store_conn_id)
        now = ledger.utcnow()
        # A send task of this campaign that died for good may have left answers in the send
        # log; settle them first, so rows already sent are not refreshed as still PLANNED (no
        # send task of the campaign runs now: one DAG run at a time, and its sends follow this).
        settled = store.settle_sends(campaign=campaign.campaign)
        if settled:
            self.log.warning(
                "settled %d rows a dead send task of %s left in the send log", settled, campaign.campaign
            )
        inputs = self.extra_inputs(store, campaign, as_of)
        written = ledger.UpsertCounts()
        decided: Counter[str] = Counter()
        by_stage: Counter[str] = Counter()
        routed: Counter[str] = Counter()
        parts: dict[str, int] = {}
        extra: dict[str, Any] = {}
        contacts = 0
        with ObjectStoragePath(self.valid_path).open("rb") as fh, self._preview(context) as preview:
            for rows, summary in self.plan_chunks(
                fh, campaign, store, as_of=as_of, run_id=context["run_id"], planned_at=now, inputs=inputs
            ):
                routed.update(summary["routed"])
                decided.update(summary["decided"])
                by_stage.update(summary["by_stage"])
                for gateway, n in summary["parts"].items():
                    parts[gateway] = parts.get(gateway, 0) + n
                for key, value in summary["extra"].items():
                    extra[key] = extra.get(key, 0) + value if isinstance(value, int) else value
                written += store.upsert_planned(rows)
                preview(summary["preview"])
                contacts += len(rows)
                del rows
        for reason, n in sorted(decided.items()):
            self.log.info("decided to suppress %d contacts: %s", n, reason)
        superseded = store.supersede_stale(campaign.campaign, as_of)
        if superseded:
            self.log.info(
                "suppressed %d rows planned earlier that today's plan no longer includes", superseded
            )
        preview = preview.path
        if as_bool(self.dry_run):
            batches: list[str] = []
            self.log.info(
                "dry run: %d contacts decided, texts in %s; nothing will be sent", contacts, preview
            )
        else:
            batches = store.assign_batches(
                campaign.campaign,
                as_of,
                context["run_id"],
                batch_size=self.batch_size,
                max_batches=self.max_batches,
                priorities=self.stage_priorities(),
            )
        capacity = self._capacity([], as_of, parts=parts)
        # Batch ids are "<campaign>:<channel>:<gateway>:<run>:<n>": SMS batches go to the mapped
        # SMPP send task (the return value), voice batches to the modem pool (XCom "voice_batches").
        voice = [b for b in batches if b.split(":")[1] == "voice"]
        batches = [b for b in batches if b.split(":")[1] != "voice"]
        context["ti"].xcom_push(key="voice_batches", value=voice)
        by_gateway = self._batches_by_gateway(batches)
        for gateway, ids in by_gateway.items():
            context["ti"].xcom_push(key=f"sms_batches__{gateway}", value=ids)
        counts = {
            "planned": written.planned,
            "suppressed": written.suppressed,
            "suppressed_by_reason": dict(decided),
            "by_stage": dict(by_stage),
            "new": written.new,
            "refreshed": written.refreshed,
            "superseded": superseded,
            "batches": len(batches),
            "voice_batches": len(voice),
            "routed": dict(routed),
            "batches_by_gateway": {g: len(ids) for g, ids in by_gateway.items()},
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

    def chunk_plan(
        self, campaign: Any, *, as_of: Any, run_id: str, planned_at: Any, inputs: dict[str, Any]
    ) -> Any:
        """Return the picklable job that plans one chunk (``include.dunning.planner.ChunkPlan``)."""
        from include.dunning import planner

        return planner.ChunkPlan(
            planner=self.planner_name,
            campaign=campaign,
            ladder=getattr(self, "_ladder", None),
            as_of=as_of,
            run_id=run_id,
            planned_at=planned_at,
            inputs=inputs,
            preview=True,
        )

    def plan_chunks(
        self,
        source: Any,
        campaign: Any,
        store: Any,
        *,
        as_of: Any,
        run_id: str,
        planned_at: Any,
        inputs: dict[str, Any],
    ) -> Iterator[tuple[list[dict[str, Any]], dict[str, Any]]]:
        """Plan a validated Parquet file chunk by chunk; yield each chunk's rows and its summary.

        Chunked (memory stays flat at 10M rows): the file is read in chunks sorted by
        ``sort_columns`` that never split one number's rows (``include.dunning.chunks``). Each
        chunk's opt-outs and recent contacts are looked up here, then the chunk is planned (texts,
        fees, keys, preview lines) in ``plan_processes`` worker processes, in order, at most a
        few chunks ahead. Routing, counts and campaign bookkeeping (``after_plan``) run here;
        the caller writes the rows (ledger UPSERT) and the preview lines before the next chunk.
        The summary has ``routed``, ``decided`` (suppression reasons), ``by_stage``, ``parts``
        (SMS parts per gateway), ``extra`` (``after_plan`` counts) and ``preview`` (CSV lines).
        """
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        from include.dunning import chunks, ledger

        parquet = pq.ParquetFile(source)
        total = parquet.metadata.num_rows
        unread = self.unread_columns(parquet.schema_arrow.names)
        del parquet
        if hasattr(source, "seek"):
            source.seek(0)
        processes = self.processes() if total > self.chunk_rows else 1
        with_after_plan = type(self).after_plan is not PlanContactsOperator.after_plan
        since = planned_at - timedelta(days=campaign.cap_days)

        def with_lookups(tables: Iterable[Any]) -> Iterator[tuple[Any, dict[str, Any]]]:
            for table in tables:
                phones = [
                    p for p in pc.unique(table.column("mobile_normalized")).to_pylist() if p is not None
                ]
                yield (
                    table,
                    {
                        "opted_out": store.opted_out(phones),
                        "last_contact": store.recent_contacts(phones, since=since),
                    },
                )

        tables = chunks.phone_sorted_chunks(
            source, self.sort_columns, chunk_rows=self.chunk_rows, exclude=unread
        )
        job = self.chunk_plan(campaign, as_of=as_of, run_id=run_id, planned_at=planned_at, inputs=inputs)
        if processes > 1:
            self.log.info(
                "planning %d rows in chunks of about %d in %d processes (this one and %d worker%s)",
                total, self.chunk_rows, processes, processes - 1, "s" if processes > 2 else "",
            )  # fmt: skip
        planned = chunks.map_ordered(job, with_lookups(tables), processes=processes)
        for table, (rows, preview) in planned:
            parts: dict[str, int] = {}
            routed = self._route(rows)
            for r in rows:
                if r["state"] == ledger.PLANNED and r["channel"] == "sms":
                    parts[r["gateway"]] = parts.get(r["gateway"], 0) + int(r["parts"])
            summary = {
                "routed": routed,
                "decided": Counter(
                    r["reason"].split(":")[0] for r in rows if r["state"] == ledger.SUPPRESSED
                ),
                "by_stage": Counter(r["stage"] for r in rows if r["state"] == ledger.PLANNED),
                "parts": parts,
                "extra": self.after_plan(store, table, as_of=as_of, run_id=run_id) if with_after_plan else {},
                "preview": preview,
            }
            del table
            yield rows, summary

    def unread_columns(self, names: Sequence[str]) -> set[str]:
        """Return the file's columns the plan never reads: not spilled, sorted or planned.

        The validation check columns always; with the packaged ``after_plan`` (staff flags read
        the phone and the debtor id) every column the planner, the sort and the flags do not
        read either: the partition pass spills and sorts only what is used (the levy file has
        twice the columns the tax planner reads). An ``after_plan`` of a subclass gets them all.
        """
        from include.dunning import chunks, planner

        unread = set(chunks.VALIDATION_COLUMNS)
        after_plan = type(self).after_plan
        planned = planner.PLANNER_COLUMNS.get(self.planner_name)
        if planned and after_plan in (PlanContactsOperator.after_plan, _RenotifyMixin.after_plan):
            used = {*planned, *self.sort_columns, "mobile_normalized", getattr(self, "debtor_column", "")}
            unread.update(name for name in names if name not in used)
        return unread

    def processes(self) -> int:
        """Return how many processes plan chunks, the task's included (``plan_processes``, else the default)."""
        from include.dunning import chunks

        if self.plan_processes is None:
            return chunks.default_processes()
        return max(1, int(self.plan_processes))

    def stage_priorities(self) -> dict[str, str]:
        """Return stage -> ``normal`` | ``urgent`` from the campaign's ladder (none: all normal)."""
        ladder = getattr(self, "_ladder", None)
        return {} if ladder is None else {stage.name: stage.priority for stage in ladder.stages}

    def _route(self, rows: list[dict[str, Any]]) -> dict[str, int]:
        """Give each SMS row its gateway from the routing table; return the SMS rows per gateway."""
        from operators.routing import routing_table

        if not self.gateways:
            return dict(Counter(r["gateway"] for r in rows if r["channel"] == "sms"))
        table = routing_table(self.gateways)
        self.log.info(
            "routing SMS over %s",
            "; ".join(f"{g.name} (lane {g.lane}, {len(g.prefixes)} prefixes, quota {g.daily_quota})"
                      for g in table.gateways),
        )  # fmt: skip
        priorities = self.stage_priorities()
        counts: Counter[str] = Counter()
        for r in rows:
            if r["channel"] != "sms":
                continue
            r["gateway"] = table.route(r["phone"], priorities.get(r["stage"], "normal"))
            counts[r["gateway"]] += 1
        self.log.info("SMS contacts per gateway: %s", dict(counts))
        return dict(counts)

    def _batches_by_gateway(self, batches: list[str]) -> dict[str, list[str]]:
        """Split the SMS batch ids per gateway of the DAG (urgent ones stay first).

        A batch of a gateway the DAG no longer lists (rows left CLAIMED by an earlier run) goes
        to the first gateway's task, which sends it and records where it went.
        """
        from include.dunning.routing import BatchId

        names = self.gateways or [self.gateway]
        split: dict[str, list[str]] = {name: [] for name in names}
        for batch in batches:
            gateway = BatchId.parse(batch).gateway
            split[gateway if gateway in split else names[0]].append(batch)
        return split

    def _capacity(
        self, rows: list[dict[str, Any]], as_of: Any, *, parts: dict[str, int] | None = None
    ) -> str:
        """Log whether today's SMS parts fit each gateway's sending window; return the summary.

        A gateway's rate is its connection's ``rate_limit`` extra (parts per second); without
        one the capacity is reported as unknown rather than assumed.
        """
        from datetime import datetime, time

        from airflow.sdk import BaseHook

        from include.dunning import ledger
        from include.dunning.capacity import GatewayCapacity, plan_capacity
        from operators.common import LOCAL_TZ

        if parts is None:  # else: SMS parts per gateway, counted while planning
            parts = {}
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

    @contextmanager
    def _preview(self, context: Any) -> Iterator[Any]:
        """Open the preview CSV of the run's texts; yield a writer of each chunk's preview lines.

        The writer has the file's ``path``. Phones are masked (``planner.preview_csv``); the file
        starts with a BOM so spreadsheet programs read the Chinese texts as UTF-8.
        """
        from include.dunning import planner

        path = run_partition(context) / "plan" / "messages.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8-sig") as fh:
            fh.write(planner.preview_csv([], header=True))

            def write(lines: str | None) -> None:
                if lines:
                    fh.write(lines)

            write.path = path  # type: ignore[attr-defined]
            yield write


class _RenotifyMixin:
    """Contact history in, staff flags out: re-notification on the ladder's next channel.

    The planner gets the campaign's contact history (``DunningStore.contact_history`` over the
    campaign's ``history_days``), so an undelivered or unanswered contact moves to the next
    channel of its stage; after planning, debtors still in arrears behind a number with the
    ladder's ``flag_after_failed_contacts`` failed contacts are written to ``staff_flag``.
    """

    debtor_column = "taxpayer_id"
    _ladder: Any
    log: Any

    def extra_inputs(self, store: Any, campaign: Any, as_of: Any) -> dict[str, Any]:
        self._campaign_name = campaign.campaign
        self._history = store.contact_history(
            campaign.campaign, since=as_of - timedelta(days=campaign.history_days)
        )
        return {"history": self._history}

    def after_plan(self, store: Any, table: pa.Table, *, as_of: Any, run_id: str) -> dict[str, Any]:
        from include.dunning import planner

        flags: list[dict[str, Any]] = []
        if self._history:  # else nobody has an earlier, failed contact: nothing to flag
            records = table.select(["mobile_normalized", self.debtor_column]).drop_null().to_pylist()
            flags = planner.failed_contact_flags(
                records,
                history=self._history,
                ladder=self._ladder,
                as_of=as_of,
                run_id=run_id,
                campaign=self._campaign_name,
                debtor_column=self.debtor_column,
            )
        new = store.flag_for_staff(flags)
        self.log.info(
            "%d debtors behind numbers with %d+ failed contacts, %d newly flagged for staff",
            len(flags), self._ladder.flag_after_failed_contacts, new,
        )  # fmt: skip
        return {"staff_flags": len(flags), "staff_flags_new": new}


class PlanTaxPaymentOperator(_RenotifyMixin, PlanContactsOperator):
    """Plan this week's tax payment dunning on the tax ladder: one message per number.

    :param ladder: the ladder file or packaged name (``tax``); validated before anything is planned
    :param voice_gateway: the modem pool voice contacts (re-notification) go to; empty: they
        are recorded as SUPPRESSED (templated)
    :param holdout_share: share of taxpayers held out of contact to measure recovery (templated)
    """

    template_fields: Sequence[str] = (*PlanContactsOperator.template_fields, "voice_gateway", "holdout_share")
    sort_columns = ("mobile_normalized", "taxpayer_id", "deadline")
    planner_name = "tax_payment"

    def __init__(
        self,
        *,
        signature: str = "示范市税务",
        ladder: str = "tax",
        voice_gateway: str | None = None,
        holdout_share: float | str = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(signature=signature, **kwargs)
        self.ladder = ladder
        self.voice_gateway = voice_gateway
        self.holdout_share = holdout_share

    def make_campaign(self) -> Any:
        from include.dunning import planner
        from include.dunning.ladder import load_ladder

        self._ladder = load_ladder(self.ladder)  # refuses a bad ladder, naming file and line
        campaign = planner.TaxPaymentCampaign(
            signature=self.signature,
            gateway=self.gateway,
            voice_gateway=self.voice_gateway or None,
            holdout_share=float(self.holdout_share or 0),
        )
        campaign.lint()
        return campaign


class PlanPowerOperator(_RenotifyMixin, PlanContactsOperator):
    """Plan today's electricity contacts on the power ladder: dunning, cut-off notices, balance alerts.

    :param ladder: the ladder file or packaged name (``power``); validated before anything is planned
    :param grace_days: days after the due date before the penalty clock starts (templated)
    :param cross_year: ``whole_period`` or ``split_by_day`` penalty reading across a year end (templated)
    :param voice_gateway: the modem pool voice stages go to; empty: they are recorded as
        SUPPRESSED (templated)
    :param holdout_share: share of accounts held out of dunning to measure recovery (templated)
    """

    template_fields: Sequence[str] = (
        *PlanContactsOperator.template_fields,
        "grace_days",
        "cross_year",
        "voice_gateway",
        "holdout_share",
    )
    sort_columns = ("mobile_normalized", "account_no", "kind", "due_date")
    debtor_column = "account_no"
    planner_name = "power"

    def __init__(
        self,
        *,
        signature: str = "示范供电",
        ladder: str = "power",
        grace_days: int | str = 0,
        cross_year: str = "whole_period",
        voice_gateway: str | None = None,
        holdout_share: float | str = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(signature=signature, **kwargs)
        self.voice_gateway = voice_gateway
        self.ladder = ladder
        self.grace_days = grace_days
        self.cross_year = cross_year
        self.holdout_share = holdout_share

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
            holdout_share=float(self.holdout_share or 0),
        )


class PlanFilingRemindersOperator(PlanContactsOperator):
    """Plan today's tax filing reminders on the tax ladder and flag 非正常户 for staff.

    Reminders go out 5 and 2 working days (ladder setting) before each upcoming filing deadline
    to taxpayers who have not filed; taxpayers with 3 consecutive months unfiled are written to
    the store's ``staff_flag`` table (no message).

    :param ladder: the ladder file or packaged name (``tax``); validated before anything is planned
    """

    sort_columns = ("mobile_normalized", "taxpayer_id", "period")
    planner_name = "filing"

    def __init__(self, *, signature: str = "示范市税务", ladder: str = "tax", **kwargs: Any) -> None:
        super().__init__(signature=signature, **kwargs)
        self.ladder = ladder

    def make_campaign(self) -> Any:
        from include.dunning import planner
        from include.dunning.ladder import load_ladder

        self._ladder = load_ladder(self.ladder)
        return planner.TaxFilingCampaign(signature=self.signature, gateway=self.gateway)

    def after_plan(self, store: Any, table: pa.Table, *, as_of: Any, run_id: str) -> dict[str, Any]:
        from include.dunning import planner

        flags = planner.abnormal_taxpayers(
            table.to_pandas().to_dict("records"), as_of=as_of, ladder=self._ladder, run_id=run_id
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
