-- Reporting tables: what each run did, loaded by include/dunning/reporting.py after every run.
-- Portable DDL: runs unchanged on SQLite (embedded default), PostgreSQL and MariaDB.
-- Loads are idempotent per (dag_id, run_id): delete + insert in one transaction.
-- Outcomes are the taxonomy of include/dunning/outcomes.py (docs/outcomes.md).

-- One row per ledger row per run. A ledger row belongs to the run that sent it (sent_run_id),
-- or, never sent, to the run that planned it. No full phone number: only its first 3 digits.
-- (dag_id, run_id, idempotency_key) is unique by construction: the ledger's key, one run per
-- ledger row, and a load replaces the run's rows under a per-run lock (reporting.py). It is not
-- declared: every read and delete is per run, and a unique index over a run's key range costs
-- a load more than the rest of its writes (random inserts into an index larger than the
-- buffer cache). include/dunning/reporting.py adds the per-run index ix_report_contact_run to
-- tables created this way and drops the retired ix_report_contact_debtor; tables created with
-- the primary key of earlier versions keep it (and work as they are).
CREATE TABLE IF NOT EXISTS report_contact (
    dag_id            VARCHAR(250)  NOT NULL,
    run_id            VARCHAR(250)  NOT NULL,
    idempotency_key   VARCHAR(64)   NOT NULL,
    campaign          VARCHAR(40)   NOT NULL,
    period            VARCHAR(20)   NOT NULL,
    as_of             DATE          NOT NULL,
    debtor_id         VARCHAR(40)   NOT NULL,
    stage             VARCHAR(40)   NOT NULL,
    channel           VARCHAR(10)   NOT NULL,
    attempt           INTEGER       NOT NULL,
    gateway           VARCHAR(40)   NOT NULL,
    prefix            VARCHAR(3)    NOT NULL,
    template          VARCHAR(120)  NOT NULL,
    state             VARCHAR(12)   NOT NULL,
    reason            VARCHAR(200),
    error_code        VARCHAR(20),
    stat              VARCHAR(10),
    err               VARCHAR(10),
    outcome           VARCHAR(30)   NOT NULL,
    parts             INTEGER       NOT NULL,
    amount            NUMERIC(14,2),
    answer_seconds    INTEGER,
    opted_out         INTEGER       NOT NULL,
    flagged           INTEGER       NOT NULL,
    holdout           INTEGER       NOT NULL,
    planned_at        TIMESTAMP     NOT NULL,
    submitted_at      TIMESTAMP,
    receipt_at        TIMESTAMP,
    final_at          TIMESTAMP
);

-- Per run / stage / channel / gateway / prefix / template. Rates are NULL when nothing was sent.
CREATE TABLE IF NOT EXISTS report_summary (
    dag_id                    VARCHAR(250)  NOT NULL,
    run_id                    VARCHAR(250)  NOT NULL,
    stage                     VARCHAR(40)   NOT NULL,
    channel                   VARCHAR(10)   NOT NULL,
    gateway                   VARCHAR(40)   NOT NULL,
    prefix                    VARCHAR(3)    NOT NULL,
    template                  VARCHAR(120)  NOT NULL,
    planned                   INTEGER       NOT NULL,
    suppressed                INTEGER       NOT NULL,
    suppressed_opted_out      INTEGER       NOT NULL,
    suppressed_frequency_cap  INTEGER       NOT NULL,
    suppressed_deferral       INTEGER       NOT NULL,
    suppressed_superseded     INTEGER       NOT NULL,
    suppressed_holdout        INTEGER       NOT NULL,
    suppressed_other          INTEGER       NOT NULL,
    submitted                 INTEGER       NOT NULL,
    delivered                 INTEGER       NOT NULL,
    undelivered               INTEGER       NOT NULL,
    expired                   INTEGER       NOT NULL,
    unknown                   INTEGER       NOT NULL,
    pending                   INTEGER       NOT NULL,
    failed                    INTEGER       NOT NULL,
    answered                  INTEGER       NOT NULL,
    arrival_rate              NUMERIC(7,4),
    connect_rate              NUMERIC(7,4),
    answer_seconds            INTEGER       NOT NULL,
    opt_outs                  INTEGER       NOT NULL,
    flagged                   INTEGER       NOT NULL,
    amount                    NUMERIC(16,2),
    PRIMARY KEY (dag_id, run_id, stage, channel, gateway, prefix, template)
);

-- Per run / stage, the holdout group against the contacted group. paid_* count debtors with a
-- payment within 3 / 7 / 30 days of the run's as-of date; NULL when no payment data was given.
CREATE TABLE IF NOT EXISTS report_recovery (
    dag_id            VARCHAR(250)  NOT NULL,
    run_id            VARCHAR(250)  NOT NULL,
    stage             VARCHAR(40)   NOT NULL,
    cohort            VARCHAR(10)   NOT NULL,
    debtors           INTEGER       NOT NULL,
    amount_owed       NUMERIC(16,2),
    paid_3d           INTEGER,
    paid_7d           INTEGER,
    paid_30d          INTEGER,
    amount_recovered  NUMERIC(16,2),
    PRIMARY KEY (dag_id, run_id, stage, cohort)
);

-- Ledger (channel, state, reason, error code, receipt stat, receipt err) combinations and their
-- outcome, keyed by those six joined with '|': filled by the loader from include/dunning/outcomes.py,
-- so SQL joins one column instead of re-implementing the map (and the planner estimates it well).
CREATE TABLE IF NOT EXISTS report_outcome_key (
    okey              VARCHAR(500)  NOT NULL PRIMARY KEY,
    outcome           VARCHAR(30)   NOT NULL
);
