-- The dunning store: the contact ledger and what hangs off it.
-- Portable DDL: runs unchanged on SQLite (embedded default), PostgreSQL and MariaDB.

-- One row per (campaign, period, debtor, stage, channel, attempt), keyed by a deterministic
-- idempotency key. States: PLANNED -> CLAIMED -> SUBMITTED -> DELIVERED | UNDELIVERED | EXPIRED
-- | UNKNOWN, or SUPPRESSED (reason) / FAILED (permanent). See docs/architecture.md.
CREATE TABLE IF NOT EXISTS contact_ledger (
    idempotency_key   VARCHAR(64)   NOT NULL PRIMARY KEY,
    campaign          VARCHAR(40)   NOT NULL,
    period            VARCHAR(20)   NOT NULL,
    as_of             DATE          NOT NULL,
    debtor_id         VARCHAR(40)   NOT NULL,
    debtor_ids        TEXT,
    debtor_name       VARCHAR(200),
    stage             VARCHAR(40)   NOT NULL,
    channel           VARCHAR(10)   NOT NULL,
    attempt           INTEGER       NOT NULL,
    phone             VARCHAR(20)   NOT NULL,
    template          VARCHAR(120)  NOT NULL,
    message_text      TEXT          NOT NULL,
    parts             INTEGER       NOT NULL,
    amount            NUMERIC(14,2),
    surcharge         NUMERIC(14,2),
    gateway           VARCHAR(40)   NOT NULL,
    batch_id          VARCHAR(120),
    state             VARCHAR(12)   NOT NULL,
    reason            VARCHAR(200),
    error_code        VARCHAR(20),
    send_tries        INTEGER       NOT NULL DEFAULT 0,
    message_ids       TEXT,
    planned_run_id    VARCHAR(250)  NOT NULL,
    sent_run_id       VARCHAR(250),
    planned_at        TIMESTAMP     NOT NULL,
    claimed_at        TIMESTAMP,
    submitted_at      TIMESTAMP,
    final_at          TIMESTAMP
);
CREATE INDEX IF NOT EXISTS ix_ledger_batch ON contact_ledger (batch_id, state);
CREATE INDEX IF NOT EXISTS ix_ledger_state ON contact_ledger (campaign, state, as_of);
CREATE INDEX IF NOT EXISTS ix_ledger_planned_run ON contact_ledger (planned_run_id);
CREATE INDEX IF NOT EXISTS ix_ledger_sent_run ON contact_ledger (sent_run_id);

-- One row per submitted part: receipts are matched here by (gateway, normalised message id).
-- On PostgreSQL, DunningStore.create_schema also sets fillfactor 50 (a receipt's update stays
-- on its page: a HOT update, no index writes).
CREATE TABLE IF NOT EXISTS message_part (
    gateway           VARCHAR(40)   NOT NULL,
    message_id        VARCHAR(80)   NOT NULL,
    idempotency_key   VARCHAR(64)   NOT NULL,
    part_no           INTEGER       NOT NULL,
    state             VARCHAR(12)   NOT NULL,
    stat              VARCHAR(10),
    err               VARCHAR(10),
    receipt_at        TIMESTAMP,
    PRIMARY KEY (gateway, message_id)
);
CREATE INDEX IF NOT EXISTS ix_part_key ON message_part (idempotency_key);

-- The send log (PostgreSQL): what a send task did, appended while it sends and settled into
-- contact_ledger in bulk (DunningStore.settle_sends), so the hot path never updates a wide,
-- indexed ledger row per message. One send_claim row per claimed chunk of a batch (its keys,
-- comma-separated): those rows are "claimed, no response" until a send_response row (one per
-- message: SUBMITTED with its message ids, FAILED, or PLANNED for a transient refusal) says
-- otherwise. A row with a send_response is never resubmitted; a retry settles the log first.
-- Settling deletes what it applied and writes message_part, so both tables stay small.
CREATE TABLE IF NOT EXISTS send_claim (
    claim_id          VARCHAR(40)   NOT NULL PRIMARY KEY,
    batch_id          VARCHAR(120)  NOT NULL,
    run_id            VARCHAR(250)  NOT NULL,
    gateway           VARCHAR(40)   NOT NULL,
    claimed_at        TIMESTAMP     NOT NULL,
    claimed_keys      TEXT          NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_send_claim_batch ON send_claim (batch_id);
CREATE TABLE IF NOT EXISTS send_response (
    claim_id          VARCHAR(40)   NOT NULL,
    idempotency_key   VARCHAR(64)   NOT NULL,
    outcome           VARCHAR(12)   NOT NULL,
    message_ids       TEXT,
    error_code        VARCHAR(20),
    reason            VARCHAR(200),
    logged_at         TIMESTAMP     NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_send_response_claim ON send_response (claim_id);

-- Receipts whose message id is not (yet) known: kept for later matching, never dropped.
CREATE TABLE IF NOT EXISTS receipt_unmatched (
    gateway           VARCHAR(40)   NOT NULL,
    message_id        VARCHAR(80)   NOT NULL,
    stat              VARCHAR(10)   NOT NULL,
    err               VARCHAR(10),
    received_at       TIMESTAMP     NOT NULL,
    PRIMARY KEY (gateway, message_id)
);

-- Mobile-originated replies, and the opt-out list they feed.
CREATE TABLE IF NOT EXISTS inbound_message (
    gateway           VARCHAR(40)   NOT NULL,
    source            VARCHAR(20)   NOT NULL,
    destination       VARCHAR(20),
    message_text      TEXT,
    received_at       TIMESTAMP     NOT NULL
);
CREATE TABLE IF NOT EXISTS opt_out (
    phone             VARCHAR(20)   NOT NULL PRIMARY KEY,
    reason            VARCHAR(40)   NOT NULL,
    created_at        TIMESTAMP     NOT NULL
);

-- Debtors flagged for staff follow-up (e.g. 非正常户: 3 consecutive months without a filing).
CREATE TABLE IF NOT EXISTS staff_flag (
    campaign          VARCHAR(40)   NOT NULL,
    debtor_id         VARCHAR(40)   NOT NULL,
    reason            VARCHAR(60)   NOT NULL,
    detail            VARCHAR(300),
    flagged_on        DATE          NOT NULL,
    run_id            VARCHAR(250)  NOT NULL,
    PRIMARY KEY (campaign, debtor_id, reason)
);

-- Rows that failed validation, with the expectation and the (masked) value.
CREATE TABLE IF NOT EXISTS quarantine (
    run_id            VARCHAR(250)  NOT NULL,
    source            VARCHAR(40)   NOT NULL,
    record_key        VARCHAR(80)   NOT NULL,
    field             VARCHAR(60)   NOT NULL,
    expectation       VARCHAR(120)  NOT NULL,
    bad_value         VARCHAR(200),
    reason            VARCHAR(300)  NOT NULL,
    quarantined_at    TIMESTAMP     NOT NULL,
    PRIMARY KEY (run_id, source, record_key, field, expectation)
);

-- One row per DAG run: the figures of the run report.
CREATE TABLE IF NOT EXISTS dunning_run (
    run_id            VARCHAR(250)  NOT NULL,
    dag_id            VARCHAR(250)  NOT NULL,
    as_of             DATE          NOT NULL,
    debtors           INTEGER,
    extracted         INTEGER,
    quarantined       INTEGER,
    planned           INTEGER,
    suppressed        INTEGER,
    submitted         INTEGER,
    failed            INTEGER,
    delivered         INTEGER,
    undelivered       INTEGER,
    pending           INTEGER,
    report_path       VARCHAR(500),
    finished_at       TIMESTAMP,
    PRIMARY KEY (dag_id, run_id)
);

-- Parts sent (or reserved just before sending) per SMS gateway and local day, against the
-- gateway's daily quota (its connection's ``daily_quota`` extra, copied here for the monitor).
-- Send tasks reserve a chunk's parts with one conditional UPDATE before submitting it, so
-- concurrent tasks never exceed the quota; parts of rejected messages are given back.
CREATE TABLE IF NOT EXISTS gateway_usage (
    gateway           VARCHAR(40)   NOT NULL,
    usage_day         DATE          NOT NULL,
    used              INTEGER       NOT NULL DEFAULT 0,
    daily_quota       INTEGER,
    updated_at        TIMESTAMP,
    PRIMARY KEY (gateway, usage_day)
);

-- Prepaid gateways: parts still paid for. A gateway with a row here sends only while its
-- balance covers the chunk (reserved in the same transaction as the daily quota); top-ups add
-- to it (DunningStore.add_gateway_balance). No row: the gateway is not prepaid.
CREATE TABLE IF NOT EXISTS gateway_balance (
    gateway           VARCHAR(40)   NOT NULL PRIMARY KEY,
    balance           INTEGER       NOT NULL,
    updated_at        TIMESTAMP
);
