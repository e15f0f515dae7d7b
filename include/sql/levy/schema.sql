-- Demo tax levy system (税收征管系统): taxpayers, contacts, filing obligations, liabilities,
-- payments and deferrals. Portable DDL: runs unchanged on SQLite, PostgreSQL and MariaDB.
-- Statements are separated by a semicolon at the end of a line; comments never contain one.
-- Timestamps are declared "TIMESTAMP NULL" so that MariaDB never adds its implicit
-- DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP to the first TIMESTAMP column.
-- No foreign keys on purpose: the demo data carries the orphans and duplicates of a real source.

CREATE TABLE IF NOT EXISTS taxpayer (
    taxpayer_id   VARCHAR(20)  NOT NULL PRIMARY KEY,  -- USCC (18), ID card (18), legacy 15 / 20
    name          VARCHAR(200) NULL,                   -- NULL or '' in a few dirty rows
    tax_office    VARCHAR(100) NULL,                   -- 国家税务总局XX市XX区税务局
    taxpayer_type VARCHAR(30)  NOT NULL,               -- enterprise | individual_business | individual
    status        VARCHAR(20)  NOT NULL,               -- normal | abnormal (非正常户)
    registered_on DATE         NULL,
    updated_at    TIMESTAMP    NULL
);

CREATE TABLE IF NOT EXISTS taxpayer_contact (
    contact_id  INTEGER      NOT NULL PRIMARY KEY,
    taxpayer_id VARCHAR(20)  NOT NULL,
    role        VARCHAR(20)  NOT NULL,   -- legal_rep | finance | tax_agent
    person_name VARCHAR(100) NULL,
    mobile      VARCHAR(40)  NULL,       -- raw as entered: spaces, +86, 0086, full-width digits
    is_primary  INTEGER      NOT NULL,   -- 0 / 1, exactly one primary per taxpayer
    updated_at  TIMESTAMP    NULL
);

CREATE INDEX IF NOT EXISTS ix_taxpayer_contact_taxpayer ON taxpayer_contact (taxpayer_id);

CREATE TABLE IF NOT EXISTS filing_obligation (
    obligation_id INTEGER     NOT NULL PRIMARY KEY,
    taxpayer_id   VARCHAR(20) NOT NULL,
    tax_type      VARCHAR(40) NOT NULL,   -- 增值税, 企业所得税, 个人所得税, 城市维护建设税, 印花税, 房产税
    period        VARCHAR(7)  NOT NULL,   -- YYYY-MM, the tax period (month) the return covers
    deadline      DATE        NOT NULL,
    filed_on      DATE        NULL,       -- NULL: not filed (yet)
    updated_at    TIMESTAMP   NULL
);

CREATE INDEX IF NOT EXISTS ix_filing_obligation_taxpayer ON filing_obligation (taxpayer_id);
CREATE INDEX IF NOT EXISTS ix_filing_obligation_deadline ON filing_obligation (deadline);

CREATE TABLE IF NOT EXISTS tax_liability (
    liability_id INTEGER        NOT NULL PRIMARY KEY,
    taxpayer_id  VARCHAR(20)    NOT NULL,
    tax_type     VARCHAR(40)    NOT NULL,
    period       VARCHAR(7)     NOT NULL,
    principal    NUMERIC(14, 2) NOT NULL,   -- negative in a few dirty rows
    deadline     DATE           NOT NULL,
    updated_at   TIMESTAMP      NULL
);

CREATE INDEX IF NOT EXISTS ix_tax_liability_taxpayer ON tax_liability (taxpayer_id);
CREATE INDEX IF NOT EXISTS ix_tax_liability_deadline ON tax_liability (deadline);

CREATE TABLE IF NOT EXISTS tax_payment (
    payment_id   INTEGER        NOT NULL PRIMARY KEY,
    liability_id INTEGER        NOT NULL,
    amount       NUMERIC(14, 2) NOT NULL,
    paid_on      DATE           NOT NULL,
    updated_at   TIMESTAMP      NULL
);

CREATE INDEX IF NOT EXISTS ix_tax_payment_liability ON tax_payment (liability_id);

CREATE TABLE IF NOT EXISTS deferral (
    deferral_id  INTEGER NOT NULL PRIMARY KEY,
    liability_id INTEGER NOT NULL,
    approved     INTEGER NOT NULL,   -- 1 approved (延期缴纳), 0 refused
    new_deadline DATE    NULL,       -- set when approved
    decided_on   DATE    NOT NULL
);

CREATE INDEX IF NOT EXISTS ix_deferral_liability ON deferral (liability_id);

-- Promises to pay (承诺缴款) a taxpayer gave staff or the 12366 line: no reminder until the
-- promised date; once it has passed with the tax still unpaid, dunning resumes.
CREATE TABLE IF NOT EXISTS tax_promise (
    promise_id  INTEGER        NOT NULL PRIMARY KEY,
    taxpayer_id VARCHAR(20)    NOT NULL,
    promised_on DATE           NOT NULL,   -- the day the taxpayer promised to pay by
    amount      NUMERIC(14, 2) NULL,
    recorded_on DATE           NOT NULL
);

CREATE INDEX IF NOT EXISTS ix_tax_promise_taxpayer ON tax_promise (taxpayer_id);
