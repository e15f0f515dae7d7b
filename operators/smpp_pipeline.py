"""The SMS send loop as a pipeline: claim ledger rows ahead of the bind, record answers behind it.

The bind never waits for the database while it has claimed rows to send and the ledger keeps
up: one thread (with its own pooled connection) claims the next chunk of rows well before the
bind reaches it, two others record the SMSC's answers in groups while later messages are on
the wire. What a SIGKILL can leave is bounded:

- rows claimed and never sent: CLAIMED with no response; the retry sends them (once);
- rows sent with no recorded response: at most ``max_in_doubt`` (the bind holds the next
  message back while that many are unrecorded); the retry resends them, so these are the only
  possible duplicates. The default is one window, the bound the send task promises; a larger
  bound (e.g. two windows: one on the wire, one being recorded) lets sending run on while a
  slow commit finishes, at the price of more possible duplicates after a kill.

On PostgreSQL (``DunningStore.send_log``) the pipeline does not update the ledger row per
message: a claim is one ``send_claim`` row per chunk, answers are appended to ``send_response``
(a narrow table with one index), and a fourth thread settles each chunk into the ledger in one
statement once all its answers are logged (``DunningStore.settle_sends``); closing settles the
rest. The bind then waits only for the short log commit, not for the ledger's index writes, and
the guarantee rests on the log: a row with a logged answer is never resubmitted, and a retry
settles what the killed try logged before it reads the batch. SQLite and MariaDB update the
ledger row per claim and per answer group.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import logging

    from hooks.smpp import SmppHook, SubmitResult
    from include.dunning.ledger import DunningStore, LedgerRow, SubmitOutcome

# A group of answers waits at most this long for more before it is recorded: with the send
# log, whose commit is short, less, so that a row's time in doubt stays close to the SMSC's.
RECORD_DELAY = 0.005
LOG_RECORD_DELAY = 0.0005
# Threads recording answers (each its own connection and transactions): while one waits for
# its commit to reach the disk, the next group is already being written.
RECORD_THREADS = 2


class LedgerPipeline:
    """Claim rows ahead of a bind and record its answers behind it, on writer threads.

    :param store: the dunning store
    :param gateway: the gateway the rows go through (message parts are keyed by it)
    :param run_id: the run claiming the rows
    :param rows: the rows, in send order
    :param claim_size: rows claimed per statement; the next chunk is claimed while fewer than
        ``max_in_doubt + claim_size`` claimed rows are unrecorded
    :param max_in_doubt: most rows sent (or being sent) whose answers are not recorded yet
    :param record_group: answers recorded per transaction when they come in fast
    :param prepare: called with each chunk before it is claimed (on the claim thread);
        returns how many of its leading rows may be claimed; fewer than all ends the batch
        there (e.g. the gateway's quota is used up)
    :param recorded: called with each group of outcomes once recorded (on the record thread)
    :param batch_id: the batch the rows belong to; with a store that has the send log
        (PostgreSQL), claims and answers are logged under it and settled in bulk
    :param synchronous_log: false: answers are logged without waiting for the WAL flush
        (``DunningStore.log_responses``); a row's time in doubt is then its round trip plus a
        short insert, which is what lets one window keep a slow SMSC busy
    """

    def __init__(
        self,
        store: DunningStore,
        *,
        gateway: str,
        run_id: str,
        rows: Sequence[LedgerRow],
        claim_size: int,
        max_in_doubt: int,
        record_group: int,
        prepare: Callable[[Sequence[LedgerRow]], int] | None = None,
        recorded: Callable[[Sequence[SubmitOutcome]], None] | None = None,
        batch_id: str | None = None,
        synchronous_log: bool = True,
    ) -> None:
        self.store = store
        self.batch_id = batch_id
        self.synchronous_log = synchronous_log
        self.logged = batch_id is not None and getattr(store, "send_log", False)
        self.record_delay = LOG_RECORD_DELAY if self.logged else RECORD_DELAY
        self.gateway = gateway
        self.run_id = run_id
        self.rows = rows
        self.prepare = prepare
        self.recorded = recorded
        self.end = len(rows)  # rows [end, ...) are not sent (prepare stopped the batch)
        self.claim_size = max(1, claim_size)
        self.max_in_doubt = max(1, max_in_doubt)
        self.record_group = max(1, record_group)
        self.counts = {"submitted": 0, "failed": 0, "transient": 0}
        self.transactions = 0
        # admit() calls that held the bind back because answers were not recorded yet, and
        # because the next chunk was not claimed yet: a pipeline that keeps up has few of both.
        self.held_by_record = 0
        self.held_by_claim = 0
        self._cond = threading.Condition()
        self._pending: list[SubmitOutcome] = []
        self._pending_since = 0.0
        self._claimed = 0  # rows [0, claimed) are claimed and committed
        self._recorded = 0  # answers recorded and committed
        self._handed = 0  # answers handed over by the bind
        self._closing = False
        self._error: BaseException | None = None
        self._threads: list[threading.Thread] = []
        # The send log: each claimed chunk's id, the claim of each key, the answers a chunk
        # still waits for, chunks whose answers are all logged (settled by the settle thread).
        self._claim_ids: list[str] = []
        self._claim_of: dict[str, str] = {}
        self._unanswered: dict[str, int] = {}
        self._answered: list[str] = []
        self._settled: set[str] = set()
        self._settle_stop = False
        self._settler: threading.Thread | None = None
        self.settled_rows = 0
        # Claims and records run on their own threads (own connections, own server processes);
        # SQLite has one writer at a time, so there they take turns.
        self._db_lock = threading.Lock() if store.dialect == "sqlite" else contextlib.nullcontext()

    # -- the bind's side ----------------------------------------------------------------------

    def start(self) -> LedgerPipeline:
        """Claim the first chunk (before anything is sent), then start the claim and record threads."""
        self._claim_next()
        self._threads = [threading.Thread(target=self._run_claims, name="ledger-claims", daemon=True)]
        recorders = 1 if self.store.dialect == "sqlite" else RECORD_THREADS
        self._threads += [
            threading.Thread(target=self._run_records, name=f"ledger-records-{n}", daemon=True)
            for n in range(recorders)
        ]
        if self.logged:
            self._settler = threading.Thread(target=self._run_settles, name="ledger-settle", daemon=True)
            self._settler.start()
        for thread in self._threads:
            thread.start()
        return self

    def admit(self) -> tuple[int, int]:
        """Return how many rows may have been started (claimed, within the in-doubt bound), and the end."""
        if self._error is not None:
            raise self._error
        claimed, bound = self._claimed, self._recorded + self.max_in_doubt
        if bound < claimed:
            self.held_by_record += 1
        elif claimed < self.end:
            self.held_by_claim += 1
        return min(claimed, bound), self.end

    @property
    def claimed(self) -> int:
        """Return how many leading rows are claimed (the rows this pipeline took on)."""
        return self._claimed

    def put(self, result: SubmitResult) -> None:
        """Hand over one message's final answer (called by the hook as each one settles)."""
        from include.dunning.ledger import SubmitOutcome

        accepted = result.command_status == 0
        outcome = SubmitOutcome(
            key=result.key,
            message_ids=result.message_ids if accepted else [],
            error_code=None if accepted else f"0x{result.command_status:08X}",
            error=result.error,
            permanent=result.permanent,
        )
        with self._cond:
            first = not self._pending
            if first:
                self._pending_since = time.monotonic()
            self._pending.append(outcome)
            self._handed += 1
            # Wake a recorder for the first answer of a group (it waits ``record_delay`` for
            # more, then writes what came) and when a group is full: an answer never waits
            # for a group to fill, which would keep its row in doubt for longer.
            if first or len(self._pending) >= self.record_group:
                self._cond.notify_all()

    def close(self) -> None:
        """Record every answer handed over, stop the writers; re-raise their error if they had one.

        With the send log, every claim still in the log is then settled into the ledger, also
        those with rows never answered (they become CLAIMED: in doubt, resent by a retry).
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()
        if self._settler is not None:
            with self._cond:
                self._settle_stop = True
                self._cond.notify_all()
            self._settler.join()
            rest = [c for c in self._claim_ids if c not in self._settled]
            try:
                if rest:
                    self.settled_rows += self.store.settle_sends(claim_ids=rest)
                    self.transactions += 1
                    self._settled.update(rest)
            except Exception:
                if self._error is None:
                    raise
                # The writers failed first (their error says why); the retry settles the log.
            finally:
                self.store.close_log_connections()
        if self._error is not None:
            raise self._error

    @property
    def in_doubt(self) -> int:
        """Return rows whose answers were handed over but are not recorded yet."""
        return self._handed - self._recorded

    # -- the writer's side --------------------------------------------------------------------

    def _need_claim(self) -> bool:
        return (
            not self._closing
            and self._claimed < self.end
            and self._claimed - self._recorded < self.max_in_doubt + self.claim_size
        )

    def _claim_next(self) -> None:
        chunk = self.rows[self._claimed : self._claimed + self.claim_size]
        with self._db_lock:
            if self.prepare is not None:
                fits = self.prepare(chunk)
                if fits < len(chunk):
                    chunk = chunk[:fits]
                    self.end = self._claimed + fits
            if chunk and self.logged:
                claim_id = uuid.uuid4().hex
                keys = [r.idempotency_key for r in chunk]
                self.store.log_claim(claim_id, self.batch_id, keys, self.run_id, self.gateway)
            elif chunk:
                self.store.claim([r.idempotency_key for r in chunk], self.run_id)
        with self._cond:
            if chunk and self.logged:
                self._claim_ids.append(claim_id)
                self._unanswered[claim_id] = len(keys)
                for key in keys:
                    self._claim_of[key] = claim_id
            self.transactions += 1 if chunk else 0
            self._claimed += len(chunk)
            self._cond.notify_all()

    def _run_claims(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._need_claim():
                        if self._closing or self._claimed >= self.end or self._error is not None:
                            return
                        self._cond.wait(0.05)
                self._claim_next()
        except BaseException as exc:  # handed to the bind through admit() and to close()
            self._error = exc

    def _run_records(self) -> None:
        try:
            while True:
                with self._cond:
                    while not (
                        self._pending
                        and (
                            self._closing
                            or len(self._pending) >= self.record_group
                            or time.monotonic() - self._pending_since >= self.record_delay
                        )
                    ):
                        if self._closing or self._error is not None:
                            return
                        self._cond.wait(self.record_delay if self._pending else 0.05)
                    group, self._pending = self._pending, []
                with self._db_lock:
                    if self.logged:
                        counts = self.store.log_responses(
                            group, self._claim_of, synchronous=self.synchronous_log
                        )
                    else:
                        counts = self.store.record_submits(self.gateway, group)
                with self._cond:
                    self.transactions += 1
                    self._recorded += len(group)
                    for name, n in counts.items():
                        self.counts[name] += n
                    if self.logged:
                        for outcome in group:
                            claim_id = self._claim_of[outcome.key]
                            self._unanswered[claim_id] -= 1
                            if not self._unanswered[claim_id]:
                                self._answered.append(claim_id)
                    self._cond.notify_all()
                if self.recorded is not None:
                    self.recorded(group)
        except BaseException as exc:  # handed to the bind through admit() and to close()
            self._error = exc

    def _run_settles(self) -> None:
        """Settle each chunk into the ledger once all its answers are logged, off the bind's path."""
        try:
            while True:
                with self._cond:
                    while not self._answered:
                        if self._settle_stop or self._error is not None:
                            return
                        self._cond.wait(0.05)
                    done, self._answered = self._answered, []
                self.settled_rows += self.store.settle_sends(claim_ids=done)
                with self._cond:
                    self.transactions += 1
                    self._settled.update(done)
        except BaseException as exc:  # handed to the bind through admit() and to close()
            self._error = exc


def send_rows(
    hook: SmppHook,
    store: DunningStore,
    rows: Sequence[LedgerRow],
    *,
    gateway: str,
    run_id: str,
    claim_size: int | None = None,
    max_in_doubt: int | None = None,
    counts: dict[str, int] | None = None,
    prepare: Callable[[Sequence[LedgerRow]], int] | None = None,
    recorded: Callable[[Sequence[SubmitOutcome]], None] | None = None,
    log: logging.Logger | None = None,
    batch_id: str | None = None,
    synchronous_log: bool = True,
) -> int:
    """Send ``rows`` through a bound hook, claiming ahead and recording behind.

    Adds ``submitted``, ``failed`` (permanent refusals) and ``transient`` (refusals put back
    to PLANNED) to ``counts``, also when sending stops with an error. On a dropped connection
    every answer received before it is recorded before the
    :class:`hooks.smpp.SmppTransportError` propagates, so the retry resends only rows with no
    recorded answer.

    :param claim_size: rows per claim statement (default: 10 windows, at least 1,000)
    :param max_in_doubt: most sent rows with no recorded answer (default: one window)
    :param prepare: see :class:`LedgerPipeline` (e.g. reserve the chunk on the gateway's quota)
    :param recorded: see :class:`LedgerPipeline` (e.g. give rejected parts back to the quota)
    :param batch_id: the rows' batch: with it, a store with the send log (PostgreSQL) logs
        claims and answers and settles them into the ledger in bulk before this returns
    :param synchronous_log: see :class:`LedgerPipeline`
    :return: how many leading rows were taken on (all, unless ``prepare`` stopped the batch)
    """
    from hooks.smpp import OutboundSms

    window = hook.window
    pipeline = LedgerPipeline(
        store,
        gateway=gateway,
        run_id=run_id,
        rows=rows,
        claim_size=claim_size or max(1000, 10 * window),
        max_in_doubt=max_in_doubt or window,
        record_group=max(1, window // 2),
        prepare=prepare,
        recorded=recorded,
        batch_id=batch_id,
        synchronous_log=synchronous_log,
    ).start()
    messages = [OutboundSms(key=r.idempotency_key, destination=r.phone, text=r.message_text) for r in rows]
    started = time.monotonic()
    try:
        hook.submit_batch(messages, on_result=pipeline.put, admit=pipeline.admit)
    finally:
        try:
            pipeline.close()
        finally:
            if counts is not None:
                for name, n in pipeline.counts.items():
                    counts[name] = counts.get(name, 0) + n
    if log is not None:
        elapsed = time.monotonic() - started
        log.info(
            "%d rows answered in %.1f s (%.0f/s; %d ledger transactions; admit held by record %d, "
            "by claim %d): %s",
            pipeline.claimed,
            elapsed,
            pipeline.claimed / elapsed if elapsed else 0.0,
            pipeline.transactions,
            pipeline.held_by_record,
            pipeline.held_by_claim,
            pipeline.counts,
        )
    return pipeline.claimed
