-- Demo electricity billing system (电力营销系统): customers, monthly bills, payments, prepaid
-- (费控) balances and logged payment demands (催交). Portable DDL: runs unchanged on SQLite,
-- PostgreSQL and MariaDB. Statements end with a semicolon at the end of a line.
-- Timestamps are "TIMESTAMP NULL" so that MariaDB adds no implicit ON UPDATE default.

CREATE TABLE IF NOT EXISTS customer (
    account_no     VARCHAR(13)  NOT NULL PRIMARY KEY,  -- 户号: 10 or 13 digits
    name           VARCHAR(200) NULL,
    customer_class VARCHAR(20)  NOT NULL,              -- residential | non_residential
    billing_mode   VARCHAR(20)  NOT NULL,              -- postpaid | prepaid
    area           VARCHAR(20)  NOT NULL,              -- town | countryside
    mobile         VARCHAR(40)  NULL,                  -- raw as entered
    updated_at     TIMESTAMP    NULL
);

CREATE TABLE IF NOT EXISTS bill (
    bill_id    INTEGER        NOT NULL PRIMARY KEY,
    account_no VARCHAR(13)    NOT NULL,
    period     VARCHAR(7)     NOT NULL,   -- YYYY-MM, the month consumed
    amount     NUMERIC(14, 2) NOT NULL,
    due_date   DATE           NOT NULL,   -- contract data, per bill
    updated_at TIMESTAMP      NULL
);

CREATE INDEX IF NOT EXISTS ix_bill_account ON bill (account_no);
CREATE INDEX IF NOT EXISTS ix_bill_due_date ON bill (due_date);

CREATE TABLE IF NOT EXISTS bill_payment (
    payment_id INTEGER        NOT NULL PRIMARY KEY,
    bill_id    INTEGER        NOT NULL,
    amount     NUMERIC(14, 2) NOT NULL,
    paid_on    DATE           NOT NULL,
    channel    VARCHAR(20)    NULL,       -- counter | bank_withhold | wechat | alipay | app
    updated_at TIMESTAMP      NULL
);

CREATE INDEX IF NOT EXISTS ix_bill_payment_bill ON bill_payment (bill_id);

CREATE TABLE IF NOT EXISTS prepaid_balance (
    account_no VARCHAR(13)    NOT NULL PRIMARY KEY,
    balance    NUMERIC(14, 2) NOT NULL,   -- below 0 when the account is in arrears
    as_of      TIMESTAMP      NULL
);

CREATE TABLE IF NOT EXISTS payment_demand (
    demand_id   INTEGER     NOT NULL PRIMARY KEY,
    account_no  VARCHAR(13) NOT NULL,
    bill_id     INTEGER     NOT NULL,
    demanded_on DATE        NOT NULL,
    method      VARCHAR(20) NOT NULL,    -- visit | phone | letter | sms
    logged_by   VARCHAR(50) NULL
);

CREATE INDEX IF NOT EXISTS ix_payment_demand_account ON payment_demand (account_no);

-- Promises to pay (承诺缴费) a postpaid customer gave: no dunning until the promised date;
-- once it has passed with the bills still unpaid, dunning resumes.
CREATE TABLE IF NOT EXISTS bill_promise (
    promise_id  INTEGER        NOT NULL PRIMARY KEY,
    account_no  VARCHAR(13)    NOT NULL,
    promised_on DATE           NOT NULL,   -- the day the customer promised to pay by
    amount      NUMERIC(14, 2) NULL,
    recorded_on DATE           NOT NULL
);

CREATE INDEX IF NOT EXISTS ix_bill_promise_account ON bill_promise (account_no);

-- Top-ups posted to accounts (recharge cards from the recharge-card system, the app, the
-- counter) and not yet settled against bills or the prepaid balance snapshot. Dunning stops for
-- what a top-up made on or after a bill's due date (or after the balance snapshot) covers.
CREATE TABLE IF NOT EXISTS account_topup (
    topup_id     INTEGER        NOT NULL PRIMARY KEY,
    account_no   VARCHAR(13)    NOT NULL,
    amount       NUMERIC(14, 2) NOT NULL,
    topped_up_at TIMESTAMP      NULL,
    source       VARCHAR(20)    NOT NULL,   -- card | app | counter
    serial       VARCHAR(20)    NULL        -- the recharge card's serial (source = card)
);

CREATE INDEX IF NOT EXISTS ix_account_topup_account ON account_topup (account_no);
