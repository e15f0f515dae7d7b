-- Rows rejected while importing a contact or debtor list file (ContactFileImportOperator).
-- Portable DDL: runs unchanged on SQLite, PostgreSQL and MariaDB. One row per bad cell:
-- a file row with a bad phone and a bad amount has two. Phones in bad_value are masked.
CREATE TABLE IF NOT EXISTS import_rejected (
    run_id            VARCHAR(250)  NOT NULL,
    list_name         VARCHAR(120)  NOT NULL,
    file_name         VARCHAR(255)  NOT NULL,
    row_no            INTEGER       NOT NULL,
    field             VARCHAR(20)   NOT NULL,
    bad_value         VARCHAR(200),
    reason            VARCHAR(200)  NOT NULL,
    rejected_at       TIMESTAMP     NOT NULL,
    PRIMARY KEY (run_id, list_name, row_no, field)
);
