"""Send planned SMS through an SMPP gateway, and collect what the network says happened."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from hooks.extras import as_bool
from operators.common import DEFAULT_STORE_CONN_ID, LOCAL_TZ, dunning_store, in_window

if TYPE_CHECKING:
    from hooks.smpp import SmppHook


class SmppSendOperator(BaseOperator):
    """Send one batch of the contact ledger through an SMPP gateway, idempotently.

    Mapped over the batches the plan made; a pool per gateway caps concurrent binds. Rows are
    claimed a chunk at a time just before they are submitted and their responses recorded
    right after, so a retry never resubmits a row with a recorded response; only rows in
    flight when a worker died (at most one window) can go out twice, and they are counted in
    the log. Eligibility is checked again right before sending (opt-outs since the plan). On
    PostgreSQL claims and responses go to the send log and are settled into the ledger in
    bulk as the batch goes, when it ends, and at the start of a retry.

    :param batch_id: the batch to send (templated; from the plan's XCom when mapped)
    :param smpp_conn_id: Airflow connection of the gateway
    :param store_conn_id: Airflow connection of the dunning store
    :param claim_size: rows claimed per statement, ahead of the bind; defaults to ten windows
        (at least 1,000)
    :param max_in_doubt: most sent rows with no recorded answer at any time, i.e. the most
        duplicates a killed worker can leave; default one window. Two windows let sending run
        on through a slow ledger commit (faster, at the price of more possible duplicates).
    :param sending_window: local (Asia/Shanghai) hours SMS may go out, e.g. ("08:00", "20:00")
    :param respect_sending_window: outside the window send nothing and leave the rows PLANNED
        for the next run; false only to rehearse on a simulator (templated)
    :param synchronous_log: on PostgreSQL, whether each logged answer waits for the WAL flush
        (default). False commits answers without it: faster over a slow SMSC (one window in
        doubt then covers little more than the round trip), and a SIGKILLed worker still loses
        nothing it committed; only a crash of the PostgreSQL server can lose the last few
        hundred milliseconds of answers, whose rows are then resent once as in doubt. Claims
        and the ledger settlement always commit durably.
    :param gateways: the DAG's SMPP gateways in routing order (``include.dunning.routing``):
        when ``smpp_conn_id`` cannot bind, the batch fails over to the next one of the same lane
        or ``any``; each gateway's ``daily_quota`` is reserved chunk by chunk. None: only
        ``smpp_conn_id``, no failover
    """

    template_fields: Sequence[str] = ("batch_id", "respect_sending_window")
    ui_color = "#fbe9e7"

    def __init__(
        self,
        *,
        batch_id: str,
        smpp_conn_id: str = "smpp_default",
        store_conn_id: str = DEFAULT_STORE_CONN_ID,
        claim_size: int | None = None,
        max_in_doubt: int | None = None,
        sending_window: tuple[str, str] = ("08:00", "20:00"),
        respect_sending_window: bool | str = True,
        gateways: Sequence[str] | None = None,
        synchronous_log: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.synchronous_log = synchronous_log
        self.gateways = list(gateways) if gateways else None
        self.batch_id = batch_id
        self.sending_window = sending_window
        self.respect_sending_window = respect_sending_window
        self.smpp_conn_id = smpp_conn_id
        self.store_conn_id = store_conn_id
        self.claim_size = claim_size
        self.max_in_doubt = max_in_doubt
        self._hook: SmppHook | None = None

    def execute(self, context: Any) -> dict[str, int]:
        from hooks.smpp import SmppBindError, SmppTransportError
        from include.dunning.ledger import CLAIMED, SubmitOutcome
        from operators.routing import GatewayFailover, batch_route, local_day, routing_table

        run_id = context["run_id"]
        store = dunning_store(self.store_conn_id)
        # What an earlier try logged but could not settle (killed mid-batch) goes into the
        # ledger first: its answered rows are not sent again, its unanswered ones are CLAIMED.
        settled = store.settle_sends(batch_id=self.batch_id)
        if settled:
            self.log.info("batch %s: settled %d rows logged by an earlier try", self.batch_id, settled)
        rows = store.batch_rows(self.batch_id)
        counts = {
            "submitted": 0,
            "failed": 0,
            "transient": 0,
            "suppressed": 0,
            "resent_uncertain": 0,
            "held": 0,
            "held_quota": 0,
        }
        if not rows:
            self.log.info("batch %s: nothing left to send", self.batch_id)
            return counts
        now = datetime.now(LOCAL_TZ)
        if as_bool(self.respect_sending_window) and not in_window(now, self.sending_window):
            counts["held"] = len(rows)
            self.log.warning(
                "batch %s: %s is outside the SMS sending window %s-%s (Asia/Shanghai); %d rows stay "
                "PLANNED for the next run",
                self.batch_id, now.strftime("%H:%M"), *self.sending_window, len(rows),
            )  # fmt: skip
            return counts
        uncertain = sum(1 for r in rows if r.state == CLAIMED)
        if uncertain:
            self.log.warning(
                "batch %s: %d rows were claimed by an earlier try with no recorded response; "
                "resending them (they may arrive twice)",
                self.batch_id,
                uncertain,
            )
            counts["resent_uncertain"] = uncertain
        opted = store.batch_opted_out(self.batch_id)
        if opted:
            keys = [r.idempotency_key for r in rows if r.phone in opted]
            counts["suppressed"] = store.suppress(keys, "opted_out", run_id=run_id)
            rows = [r for r in rows if r.phone not in opted]
            self.log.info(
                "batch %s: %d rows suppressed, number opted out since planning", self.batch_id, len(keys)
            )

        parts = {r.idempotency_key: r.parts for r in rows}

        def record(results: Sequence[Any]) -> None:
            outcomes = [
                SubmitOutcome(
                    key=res.key,
                    message_ids=res.message_ids if res.command_status == 0 else [],
                    error_code=None if res.command_status == 0 else f"0x{res.command_status:08X}",
                    error=res.error,
                    permanent=res.permanent,
                )
                for res in results
            ]
            for name, n in store.record_submits(route.current or self.smpp_conn_id, outcomes).items():
                counts[name] += n
            # Rejected messages were not sent: their reserved parts go back to the quota.
            route.release(sum(parts.get(o.key, 0) for o in outcomes if not o.accepted))

        # Failover around the bind, the quota before each claimed chunk (operators/routing.py):
        # the batch goes through the first gateway of its failover order that binds, and each
        # chunk's parts are reserved on that gateway's daily quota / prepaid balance first.
        routed_to, priority = batch_route(self.batch_id, self.smpp_conn_id)
        route = GatewayFailover(
            routing_table(self.gateways or [self.smpp_conn_id]),
            self.smpp_conn_id,
            priority,
            store,
            local_day(),
        )
        pending = rows
        try:
            while pending:
                try:
                    bound = route.bind_next(self.log)
                except SmppBindError as exc:  # wrong password / system id: no failover, no retry
                    refused = route.order[route.position]
                    raise AirflowFailException(f"gateway {refused!r} refused the bind: {exc}") from None
                if bound is None:
                    break
                self._hook, gateway = bound
                taken = {"rows": 0, "of": len(pending)}

                def prepare(chunk: Sequence[Any], gateway: str = gateway, taken: dict = taken) -> int:
                    # Called (on the ledger's claim thread) before each chunk is claimed.
                    fits = route.reserve([r.parts for r in chunk])
                    taken["rows"] += fits
                    if fits < len(chunk):
                        self.log.warning(
                            "gateway %s: daily quota or prepaid balance used up for %s; %d rows left",
                            gateway, route.day, taken["of"] - taken["rows"],
                        )  # fmt: skip
                    if fits and gateway != routed_to:  # failover: rows record the gateway they go through
                        store.reroute([r.idempotency_key for r in chunk[:fits]], gateway)
                    return fits

                def release(outcomes: Sequence[Any]) -> None:
                    # Rejected messages were not sent: their reserved parts go back to the quota.
                    route.release(sum(parts.get(o.key, 0) for o in outcomes if not o.accepted))

                with self._hook as hook:
                    done = self._send_batch(
                        hook, store, pending, gateway=gateway, run_id=run_id, counts=counts,
                        prepare=prepare, recorded=release,
                    )  # fmt: skip
                    self.log.info(
                        "batch %s via %s: %d/%d rows answered (%d submitted, %d failed)",
                        self.batch_id, gateway, done, len(pending), counts["submitted"], counts["failed"],
                    )  # fmt: skip
                pending = pending[done:]
        except SmppTransportError as exc:
            # Messages fully answered before the drop are recorded now, so the retry resends
            # only the ones truly in doubt.
            record(exc.results)
            raise AirflowException(
                f"gateway {route.current!r}: {exc}; {counts['submitted']} rows submitted before, "
                "the rest stay in the ledger for the retry"
            ) from None
        finally:
            self._hook = None
        # Rows no gateway could bind for: a retry may reach one. Rows held by quota alone wait.
        if pending and route.unreachable:
            raise AirflowException(
                f"batch {self.batch_id}: no gateway could take {len(pending)} rows ("
                + "; ".join(route.errors)
                + "); they stay PLANNED for the retry"
            )
        if pending:
            counts["held_quota"] = len(pending)
            self.log.warning(
                "batch %s: held: quota: %d rows stay PLANNED (gateways used up today: %s)",
                self.batch_id, len(pending), ", ".join(route.exhausted),
            )  # fmt: skip
        if counts["transient"]:
            raise AirflowException(
                f"batch {self.batch_id}: {counts['transient']} rows got a transient rejection; "
                "they are back to PLANNED and the next try resends them"
            )
        return counts

    def _send_batch(
        self,
        hook: SmppHook,
        store: Any,
        rows: Sequence[Any],
        *,
        gateway: str,
        run_id: str,
        counts: dict[str, int],
        prepare: Any = None,
        recorded: Any = None,
    ) -> int:
        """Send rows through a bound hook as a pipeline; return how many leading rows were taken on.

        Rows are claimed ahead of the bind in chunks of ``claim_size`` and the SMSC's answers
        recorded behind it, on two ledger threads (``operators/smpp_pipeline.py``); at most
        ``max_in_doubt`` (default one window) sent rows are unrecorded at any time, which bounds
        the duplicates a killed worker can leave. ``prepare`` runs before each chunk is claimed (quota) and
        ``recorded`` after each group of answers is recorded.
        """
        from operators.smpp_pipeline import send_rows

        return send_rows(
            hook,
            store,
            rows,
            gateway=gateway,
            run_id=run_id,
            claim_size=self.claim_size,
            max_in_doubt=self.max_in_doubt,
            counts=counts,
            prepare=prepare,
            recorded=recorded,
            log=self.log,
            batch_id=self.batch_id,
            synchronous_log=self.synchronous_log,
        )

    def on_kill(self) -> None:
        if self._hook is not None:
            self._hook.close()


class SmppCollectReceiptsOperator(BaseOperator):
    """Collect delivery receipts and replies from a gateway into the ledger.

    Binds as a receiver and reads until every outstanding part has a receipt, the gateway has
    been silent for ``idle_seconds``, or ``max_wait_seconds`` pass. Multipart messages become
    DELIVERED only when every part is; receipts for unknown message ids are kept for later
    matching; replies are stored and opt-out words (TD, T, N, R, 退订) put the number on the
    opt-out list. Rows with no receipt after the validity period become UNKNOWN.

    :param smpp_conn_id: Airflow connection of the gateway
    :param store_conn_id: Airflow connection of the dunning store
    :param max_wait_seconds: longest time to wait for receipts (templated)
    :param idle_seconds: stop after this long without any PDU (templated)
    :param validity_minutes: receipts awaited this long before a row counts as UNKNOWN
    """

    template_fields: Sequence[str] = ("max_wait_seconds", "idle_seconds")
    ui_color = "#ede7f6"

    def __init__(
        self,
        *,
        smpp_conn_id: str = "smpp_default",
        store_conn_id: str = DEFAULT_STORE_CONN_ID,
        max_wait_seconds: float | str = 60,
        idle_seconds: float | str = 5,
        validity_minutes: int = 2 * 24 * 60,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.smpp_conn_id = smpp_conn_id
        self.store_conn_id = store_conn_id
        self.max_wait_seconds = max_wait_seconds
        self.idle_seconds = idle_seconds
        self.validity_minutes = validity_minutes
        self._hook: SmppHook | None = None

    def execute(self, context: Any) -> dict[str, int]:
        from hooks.smpp import SmppBindError, SmppHook
        from include.dunning.ledger import Receipt, utcnow, validity_cutoff
        from include.dunning.phones import mask, normalize_mobile
        from include.dunning.replies import is_opt_out

        store = dunning_store(self.store_conn_id)
        gateway = self.smpp_conn_id
        outstanding = store.outstanding_parts(gateway)
        self.log.info("%d submitted parts await a receipt on %s", outstanding, gateway)
        buffer: list[Receipt] = []
        totals = {"receipts": 0, "matched": 0, "unmatched": 0, "settled": 0, "replies": 0, "opt_outs": 0}

        def flush() -> None:
            if not buffer:
                return
            result = store.apply_receipts_bulk(gateway, buffer)
            totals["matched"] += result["matched"]
            totals["settled"] += result["settled"]
            totals["unmatched"] = result["unmatched"]
            buffer.clear()
            self.log.info("receipts: %d received, %d matched so far", totals["receipts"], totals["matched"])

        def on_receipt(receipt: Any) -> None:
            buffer.append(Receipt(receipt.message_id, receipt.stat, receipt.err))
            totals["receipts"] += 1
            if len(buffer) >= 5000:
                flush()

        def on_message(message: dict[str, Any]) -> None:
            source = normalize_mobile(message.get("source") or "") or str(message.get("source") or "")
            store.record_inbound(gateway, source, message.get("destination"), message.get("text") or "")
            totals["replies"] += 1
            if is_opt_out(message.get("text")):
                store.add_opt_out(source, "reply")
                totals["opt_outs"] += 1
                self.log.info("reply from %s asks to stop reminders: added to the opt-out list", mask(source))

        self._hook = SmppHook(self.smpp_conn_id, bind_mode="receiver")
        try:
            with self._hook as hook:
                hook.collect(
                    on_receipt=on_receipt,
                    on_message=on_message,
                    idle_timeout=float(self.idle_seconds),
                    max_seconds=float(self.max_wait_seconds),
                    stop_when=lambda: outstanding > 0 and totals["receipts"] >= outstanding,
                )
        except SmppBindError as exc:
            raise AirflowFailException(f"gateway {gateway!r} refused the bind: {exc}") from None
        finally:
            self._hook = None
            flush()
        totals["unknown"] = store.expire_unknown(validity_cutoff(utcnow(), self.validity_minutes))
        totals["still_outstanding"] = store.outstanding_parts(gateway)
        self.log.info("collect done: %s", totals)
        return totals

    def on_kill(self) -> None:
        if self._hook is not None:
            self._hook.close()
