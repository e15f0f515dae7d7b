-- Demo recharge card system (电费充值卡): cards, their lifecycle events and the recharges they
-- paid for. Portable DDL: runs unchanged on SQLite, PostgreSQL and MariaDB.
-- Statements end with a semicolon at the end of a line.
-- Timestamps are "TIMESTAMP NULL" so that MariaDB adds no implicit ON UPDATE default.

CREATE TABLE IF NOT EXISTS card (
    serial     VARCHAR(20)    NOT NULL PRIMARY KEY,
    face_value NUMERIC(14, 2) NOT NULL,
    batch      VARCHAR(20)    NOT NULL,
    made_on    DATE           NOT NULL
);

CREATE TABLE IF NOT EXISTS card_event (
    event_id INTEGER      NOT NULL PRIMARY KEY,
    serial   VARCHAR(20)  NOT NULL,
    event    VARCHAR(20)  NOT NULL,   -- made | stocked_county | issued_station | sold_seller
                                      -- | sold_customer | used | voided | returned
    at       TIMESTAMP    NULL,
    place    VARCHAR(100) NULL
);

CREATE INDEX IF NOT EXISTS ix_card_event_serial ON card_event (serial);

CREATE TABLE IF NOT EXISTS recharge (
    recharge_id  INTEGER        NOT NULL PRIMARY KEY,
    serial       VARCHAR(20)    NOT NULL,
    account_no   VARCHAR(13)    NOT NULL,
    amount       NUMERIC(14, 2) NOT NULL,
    recharged_at TIMESTAMP      NULL
);

CREATE INDEX IF NOT EXISTS ix_recharge_serial ON recharge (serial);
CREATE INDEX IF NOT EXISTS ix_recharge_account ON recharge (account_no);
