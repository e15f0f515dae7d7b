"""Send voice reminders and SMS through a pool of GSM modems, the rows shared through the ledger.

The plan puts a run's modem rows into ordinary batches. One task per modem (mapped over the
modems' connection ids) then takes rows from those batches one at a time
(:meth:`DunningStore.claim_next`), so the rows spread over every modem that works and a modem
that dies leaves its share to the others: that is how "the batch continues on the others".

Pools and queue, since Airflow cannot give each map index its own pool::

    ModemVoiceOperator.partial(
        task_id="call", batch_ids=plan.output["voice_batches"],
        pool=MODEM_POOL,          # "modem_pool", one slot per modem: `airflow pools set modem_pool 3 ...`
        queue=MODEM_QUEUE,        # "modem": the Celery worker the modems are plugged into
    ).expand(modem_conn_id=["modem_1", "modem_2", "modem_3"])

Both are the operators' defaults. The hook's lock file per port makes sure one task at a time
owns a modem whatever the pool says. DAGs that write one task per modem instead of mapping can
give each its own one-slot pool, :func:`modem_pool_name`.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from hooks.extras import as_bool
from operators.common import DEFAULT_STORE_CONN_ID, LOCAL_TZ, dunning_store, in_window

if TYPE_CHECKING:
    from hooks.gsm_modem import GsmModemHook, ModemError
    from include.dunning.ledger import DunningStore, LedgerRow

MODEM_POOL = "modem_pool"
MODEM_QUEUE = "modem"


def modem_pool_name(conn_id: str) -> str:
    """Return the one-slot pool of a single modem, for DAGs that write one task per modem.

    :param conn_id: the modem's Airflow connection id
    """
    return "modem_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", conn_id)


def modem_message_id(conn_id: str, reference: int, phone: str) -> str:
    """Return the ledger's id of one SMS part sent by a modem: ``<modem>:<TP-MR>:<national number>``.

    The modem's reference is 8 bits and wraps, so the number is part of it (see
    :func:`hooks.gsm_modem.report_key`); a status report read from the same modem maps to the
    same id with ``modem_message_id(conn_id, report.reference, report.recipient)``.
    """
    from hooks.gsm_modem import report_key

    return f"{conn_id}:{report_key(reference, phone)}"


def _batch_list(value: Any) -> list[str]:
    """Read batch ids given as a list, or as a rendered template (``"['a', 'b']"`` or ``"a,b"``)."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            value = ast.literal_eval(text)
        else:
            return [part.strip() for part in text.split(",") if part.strip()]
    return [str(v) for v in value]


class ModemFault(Exception):
    """The modem (not the row) failed: carry whether the row's call or message may have gone out."""

    def __init__(self, error: ModemError, *, maybe_sent: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.maybe_sent = maybe_sent


class _ModemQueueOperator(BaseOperator):
    """Drain a run's modem batches on one modem, one claimed row at a time (base of voice and SMS).

    :param batch_ids: the run's modem batches (templated; a list, e.g. from the plan's XCom)
    :param modem_conn_id: Airflow connection of the modem (``gsm_modem``); expand over this
    :param store_conn_id: Airflow connection of the dunning store
    :param max_resets: restarts (``AT+CFUN=1,1``) tried when the modem hangs before the task gives up
    :param max_row_tries: claims of one row after which a transient refusal makes it FAILED
    """

    template_fields: Sequence[str] = ("batch_ids", "modem_conn_id")
    channel_name = "modem"

    def __init__(
        self,
        *,
        batch_ids: Sequence[str] | str,
        modem_conn_id: str,
        store_conn_id: str = DEFAULT_STORE_CONN_ID,
        max_resets: int = 1,
        max_row_tries: int = 3,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("pool", MODEM_POOL)
        kwargs.setdefault("queue", MODEM_QUEUE)
        super().__init__(**kwargs)
        self.batch_ids = batch_ids
        self.modem_conn_id = modem_conn_id
        self.store_conn_id = store_conn_id
        self.max_resets = max_resets
        self.max_row_tries = max_row_tries
        self._hook: GsmModemHook | None = None

    # -- what the subclasses decide ---------------------------------------------------------------

    def _hold_reason(self, now: datetime) -> str | None:
        """Return why nothing may be sent at ``now`` (local time), or None."""
        raise NotImplementedError

    def _check_modem(self, hook: GsmModemHook) -> None:
        """Raise AirflowFailException when this modem cannot do the job at all."""

    def _send_row(
        self, hook: GsmModemHook, store: DunningStore, row: LedgerRow, counts: dict[str, int]
    ) -> None:
        """Send one claimed row and record the result; raise ModemFault when the modem failed."""
        raise NotImplementedError

    def _after_row(self, hook: GsmModemHook, store: DunningStore, counts: dict[str, int]) -> None:
        """Do housekeeping between rows (read status reports)."""

    def _local_now(self) -> datetime:
        """Return the current time in Asia/Shanghai (one place, so tests can set the clock)."""
        return datetime.now(LOCAL_TZ)

    # -- the loop ---------------------------------------------------------------------------------

    def execute(self, context: Any) -> dict[str, int]:
        from hooks.gsm_modem import GsmModemHook, ModemError, ModemTransportError
        from include.dunning.ledger import CLAIMED, PLANNED
        from include.dunning.phones import mask

        run_id = context["run_id"]
        modem = self.modem_conn_id
        batches = _batch_list(self.batch_ids)
        store = dunning_store(self.store_conn_id)
        counts = self._empty_counts()
        left = store.sendable_count(batches)
        counts["claimed_at_start"] = left[CLAIMED]
        if left[CLAIMED]:
            # in flight on the other modems, or left by a try that died: never taken again here
            self.log.info(
                "%d rows of these batches are CLAIMED (in flight on other modems, or in doubt after "
                "an earlier try); this task does not send them",
                left[CLAIMED],
            )
        if not left[PLANNED]:
            self.log.info("modem %s: nothing left to send in %d batches", modem, len(batches))
            return counts
        hold = self._hold_reason(self._local_now())
        if hold:
            counts["held"] = left[PLANNED]
            self.log.warning(
                "modem %s: %s; %d rows stay PLANNED for the next run", modem, hold, left[PLANNED]
            )
            return counts

        self._hook = GsmModemHook(modem)
        resets = 0
        try:
            hook = self._hook
            hook.get_conn()
            self._check_modem(hook)
            self.log.info("modem %s on %s takes rows from %d batches", modem, hook.port_name, len(batches))
            while True:
                hold = self._hold_reason(self._local_now())
                if hold:
                    counts["held"] = store.sendable_count(batches)[PLANNED]
                    self.log.warning("modem %s: %s; stopping, the rest stays PLANNED", modem, hold)
                    break
                try:
                    hook.get_conn().command("AT")  # a hung modem is found before it takes a row
                except ModemTransportError as exc:
                    resets = self._reset_or_fail(hook, exc, resets, counts)
                    continue
                row = store.claim_next(batches, run_id, gateway=modem)
                if row is None:
                    break
                if store.opted_out([row.phone]):
                    counts["suppressed"] += store.suppress([row.idempotency_key], "opted_out", run_id=run_id)
                    self.log.info("%s opted out since planning: suppressed", mask(row.phone))
                    continue
                try:
                    self._send_row(hook, store, row, counts)
                except ModemFault as fault:
                    if fault.maybe_sent:
                        counts["uncertain"] += 1
                        self.log.warning(
                            "modem %s failed while handling %s after it may have gone out (%s); "
                            "the row stays CLAIMED and is not sent again",
                            modem, mask(row.phone), fault.error,
                        )  # fmt: skip
                    else:
                        store.release_claim(row.idempotency_key)
                        self.log.warning(
                            "modem %s failed before sending to %s (%s); the row is back to PLANNED",
                            modem, mask(row.phone), fault.error,
                        )  # fmt: skip
                    resets = self._reset_or_fail(hook, fault.error, resets, counts)
                    continue
                self._after_row(hook, store, counts)
        except ModemError as exc:
            raise self._task_error(exc) from None
        finally:
            if self._hook is not None:
                self._hook.close()
            self._hook = None
        self.log.info("modem %s done: %s", modem, counts)
        return counts

    def _reset_or_fail(
        self, hook: GsmModemHook, error: ModemError, resets: int, counts: dict[str, int]
    ) -> int:
        """Restart a modem that stopped answering; fail the task when that was tried enough or fails."""
        from hooks.gsm_modem import ModemError

        port = self._port(hook)
        if resets >= self.max_resets:
            raise AirflowException(
                f"modem {self.modem_conn_id!r} on {port} hangs again after {resets} reset(s) ({error}); "
                "the other modems take the remaining rows"
            )
        self.log.warning(
            "modem %s on %s stopped answering (%s); restarting it (AT+CFUN=1,1)",
            self.modem_conn_id,
            port,
            error,
        )
        try:
            hook.reset()
        except ModemError as exc:
            raise AirflowException(
                f"modem {self.modem_conn_id!r} on {port} stopped answering ({error}) and did not come "
                f"back after a reset ({exc}); the other modems take the remaining rows"
            ) from None
        counts["resets"] += 1
        self.log.info("modem %s on %s is back after the reset", self.modem_conn_id, port)
        return resets + 1

    def _task_error(self, exc: ModemError) -> AirflowException:
        port = exc.port or self.modem_conn_id
        message = f"modem {self.modem_conn_id!r} on {port}: {exc}"
        return AirflowFailException(message) if exc.permanent else AirflowException(message)

    def _port(self, hook: GsmModemHook) -> str:
        try:
            return hook.port_name
        except Exception:
            return self.modem_conn_id

    def _empty_counts(self) -> dict[str, int]:
        return {"failed": 0, "transient": 0, "suppressed": 0, "uncertain": 0, "held": 0, "resets": 0}

    def on_kill(self) -> None:
        if self._hook is not None:
            self._hook.on_kill()


class ModemVoiceOperator(_ModemQueueOperator):
    """Place a run's voice reminders (TTS calls) through one modem of the pool, idempotently.

    Expand over the modems' connection ids; every task takes rows one at a time from the same
    batches until none is left. Outcomes go to the ledger: answered -> DELIVERED (with the
    seconds), busy / no_answer / no_carrier / rejected -> UNDELIVERED, failed -> FAILED. A row
    whose call may have been dialled when the modem hung stays CLAIMED and is never dialled
    again. No calls on public holidays nor outside the calling window (Asia/Shanghai).

    :param batch_ids: the run's voice batches (templated)
    :param modem_conn_id: Airflow connection of the modem; expand over this
    :param store_conn_id: Airflow connection of the dunning store
    :param repeat: how many times the text is spoken in an answered call
    :param ring_timeout: seconds to ring before the outcome is no_answer (templated)
    :param respect_calling_window: hold the calls on public holidays and outside
        ``calling_window``; false only to rehearse on the emulator (templated)
    :param calling_window: local hours calls may be placed, end excluded
    """

    template_fields: Sequence[str] = (
        *_ModemQueueOperator.template_fields,
        "respect_calling_window",
        "ring_timeout",
    )
    ui_color = "#e0f2f1"

    def __init__(
        self,
        *,
        repeat: int = 2,
        ring_timeout: float = 30,
        respect_calling_window: bool | str = True,
        calling_window: tuple[str, str] = ("09:00", "20:00"),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.repeat = repeat
        self.ring_timeout = ring_timeout
        self.respect_calling_window = respect_calling_window
        self.calling_window = calling_window

    def _empty_counts(self) -> dict[str, int]:
        from include.dunning.ledger import CALL_ANSWERED, CALL_FAILED, CALL_UNDELIVERED

        outcomes = dict.fromkeys((CALL_ANSWERED, *CALL_UNDELIVERED, CALL_FAILED), 0)
        return {"calls": 0, **outcomes, **super()._empty_counts()}

    def _hold_reason(self, now: datetime) -> str | None:
        from include.dunning.calendar import CalendarYearNotCovered, is_public_holiday

        if not as_bool(self.respect_calling_window):
            return None
        try:
            holiday = is_public_holiday(now.date())
        except CalendarYearNotCovered as exc:
            raise AirflowFailException(f"cannot tell whether today is a public holiday: {exc}") from None
        if holiday:
            return f"{now.date().isoformat()} is a public holiday: no voice calls"
        if not in_window(now, self.calling_window):
            return "{} is outside the calling window {}-{} (Asia/Shanghai)".format(
                now.strftime("%H:%M"), *self.calling_window
            )
        return None

    def _check_modem(self, hook: GsmModemHook) -> None:
        if hook.vendor == "generic":
            raise AirflowFailException(
                f"modem {self.modem_conn_id!r} on {hook.port_name} has vendor profile 'generic' (no "
                "text-to-speech): it cannot place voice reminders"
            )

    def _send_row(
        self, hook: GsmModemHook, store: DunningStore, row: LedgerRow, counts: dict[str, int]
    ) -> None:
        from hooks.gsm_modem import FAILED, ModemError, ModemTransportError
        from include.dunning.phones import mask

        try:
            result = hook.call(
                row.phone, row.message_text, repeat=self.repeat, ring_timeout=float(self.ring_timeout)
            )
        except ModemTransportError as exc:
            raise ModemFault(exc, maybe_sent=_dialled(exc)) from None
        except ModemError as exc:
            if _dialled(exc):
                raise ModemFault(exc, maybe_sent=True) from None
            if exc.permanent or row.send_tries >= self.max_row_tries:
                # bad number, text the TTS cannot read: no modem does better
                store.record_call(row.idempotency_key, FAILED, 0.0, str(exc)[:200], modem=self.modem_conn_id)
                counts["failed"] += 1
                self.log.warning("call to %s not placed: %s", mask(row.phone), exc)
            else:
                store.release_claim(row.idempotency_key)
                counts["transient"] += 1
                self.log.warning("call to %s not placed (%s); back to PLANNED", mask(row.phone), exc)
            return
        store.record_call(
            row.idempotency_key,
            result.outcome,
            result.answered_seconds,
            result.detail,
            modem=self.modem_conn_id,
        )
        counts["calls"] += 1
        counts[result.outcome] = counts.get(result.outcome, 0) + 1
        self.log.info(
            "call %d on %s to %s: %s %.1fs (%s)",
            counts["calls"], self.modem_conn_id, mask(row.phone), result.outcome, result.answered_seconds, result.detail,
        )  # fmt: skip


def _dialled(exc: ModemError) -> bool:
    """Tell whether a call may have been placed when ``exc`` came (the modem got ATD or later)."""
    command = (exc.command or "").upper()
    if command.startswith("ATD"):
        return True  # an ATD without an answer may still have dialled
    return command.startswith(("AT+CLCC", "AT+CTTS", "AT+QTTS", "ATH")) and command != "AT+CLCC=1"


class ModemSmsOperator(_ModemQueueOperator):
    """Send a run's modem SMS through one modem of the pool, idempotently.

    Expand over the modems' connection ids; every task takes rows one at a time from the same
    batches. Accepted rows become SUBMITTED with one id per part,
    ``<modem>:<TP-MR>:<national number>`` (:func:`modem_message_id`), under the modem's
    connection id as gateway; status reports that arrive while the task owns the port are
    applied at once, replies stored (opt-out words put the number on the opt-out list). A
    refusal the text or number causes makes the row FAILED; a transient one puts it back to
    PLANNED (FAILED after ``max_row_tries`` claims); a message whose first part may have gone
    out when the modem hung stays CLAIMED.

    :param batch_ids: the run's modem SMS batches (templated)
    :param modem_conn_id: Airflow connection of the modem; expand over this
    :param store_conn_id: Airflow connection of the dunning store
    :param respect_sending_window: outside ``sending_window`` send nothing (templated)
    :param sending_window: local hours SMS may go out, end excluded
    """

    template_fields: Sequence[str] = (*_ModemQueueOperator.template_fields, "respect_sending_window")
    ui_color = "#fff8e1"

    def __init__(
        self,
        *,
        respect_sending_window: bool | str = True,
        sending_window: tuple[str, str] = ("08:00", "20:00"),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.respect_sending_window = respect_sending_window
        self.sending_window = sending_window

    def _empty_counts(self) -> dict[str, int]:
        return {"submitted": 0, "receipts": 0, "replies": 0, "opt_outs": 0, **super()._empty_counts()}

    def _hold_reason(self, now: datetime) -> str | None:
        if as_bool(self.respect_sending_window) and not in_window(now, self.sending_window):
            return "{} is outside the SMS sending window {}-{} (Asia/Shanghai)".format(
                now.strftime("%H:%M"), *self.sending_window
            )
        return None

    def _send_row(
        self, hook: GsmModemHook, store: DunningStore, row: LedgerRow, counts: dict[str, int]
    ) -> None:
        from hooks.gsm_modem import ModemError, ModemTransportError
        from include.dunning.ledger import SubmitOutcome
        from include.dunning.phones import mask

        modem = self.modem_conn_id
        try:
            references = hook.send_sms(row.phone, row.message_text, key=row.idempotency_key)
        except ModemTransportError as exc:
            raise ModemFault(
                exc, maybe_sent=bool(exc.references) or "no '> ' prompt" not in str(exc)
            ) from None
        except ModemError as exc:
            code = f"{exc.kind or 'MODEM'}{exc.code if exc.code is not None else ''}"
            if exc.references:
                # some parts went out: a resend would repeat them, so the row ends here
                permanent, reason = True, f"{len(exc.references)} part(s) sent, then {exc}"
            elif exc.permanent or row.send_tries >= self.max_row_tries:
                permanent, reason = True, str(exc)
            else:
                permanent, reason = False, str(exc)
            store.record_submits(modem, [SubmitOutcome(row.idempotency_key, [], code, reason, permanent)])
            counts["failed" if permanent else "transient"] += 1
            self.log.warning(
                "SMS to %s refused (%s): %s",
                mask(row.phone),
                "FAILED" if permanent else "back to PLANNED",
                exc,
            )
            return
        ids = [modem_message_id(modem, ref, row.phone) for ref in references]
        store.record_submits(modem, [SubmitOutcome(row.idempotency_key, ids)])
        counts["submitted"] += 1
        self.log.info(
            "SMS %d on %s to %s: %d part(s), references %s",
            counts["submitted"], modem, mask(row.phone), len(references), references,
        )  # fmt: skip

    def _after_row(self, hook: GsmModemHook, store: DunningStore, counts: dict[str, int]) -> None:
        """Apply the status reports (and keep the replies) that arrived on this modem meanwhile."""
        from hooks.gsm_modem import IncomingSms, StatusReport
        from include.dunning.ledger import Receipt
        from include.dunning.phones import mask, normalize_mobile
        from include.dunning.replies import is_opt_out

        modem = self.modem_conn_id
        receipts = []
        for event in hook.read_events(0):
            if isinstance(event, StatusReport):
                if event.final:
                    mid = modem_message_id(modem, event.reference, event.recipient)
                    receipts.append(Receipt(mid, event.stat, f"{event.status:03d}"))
            elif isinstance(event, IncomingSms):
                source = normalize_mobile(event.sender) or event.sender
                store.record_inbound(modem, source, None, event.text)
                counts["replies"] += 1
                if is_opt_out(event.text):
                    store.add_opt_out(source, "reply")
                    counts["opt_outs"] += 1
                    self.log.info(
                        "reply from %s asks to stop reminders: added to the opt-out list", mask(source)
                    )
        if receipts:
            counts["receipts"] += len(receipts)
            store.apply_receipts(modem, receipts)
