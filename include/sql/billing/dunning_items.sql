-- Electricity dunning items as of the run date, one row per item, two kinds:
--   bill:    a postpaid bill unpaid on or after its due date (day 0 is the due-date reminder),
--            with whether a payment demand (催交) was logged for it: a cut-off notice needs one;
--   balance: a prepaid (费控) account whose balance is below the highest alert threshold.
-- Balances are rounded to the fen (SQLite computes NUMERIC in floating point).
-- promised_until: the latest open promise to pay of the account (promised date on or after the
-- as-of date). topup_amount / topup_on: top-ups posted to the account on or after the bill's due
-- date (bills) or after the balance snapshot (prepaid), up to the as-of date; the planner stops
-- dunning for what they cover.
-- customer_ref: the customer's key as found by the LEFT JOIN, NULL for an orphan bill or balance
-- (validation quarantines it: referential integrity) instead of losing it in an inner join.
-- item_id is CAST on both sides of the UNION so MariaDB sees one collation (the connection's).
-- Bind parameters: as_of (the run date) and balance_alert_below (yuan), with a colon below.
SELECT
    'bill'                                        AS kind,
    CAST(b.bill_id AS VARCHAR(20))                AS item_id,
    b.account_no                                  AS account_no,
    c.account_no                                  AS customer_ref,
    c.name,
    c.customer_class,
    c.mobile,
    b.period,
    ROUND(b.amount - COALESCE(p.paid, 0), 2)      AS outstanding,
    b.due_date,
    CASE WHEN d.bill_id IS NULL THEN 0 ELSE 1 END AS demand_logged,
    NULL                                          AS balance,
    pp.promised_on                                AS promised_until,
    (SELECT ROUND(SUM(t.amount), 2) FROM account_topup t
     WHERE t.account_no = b.account_no AND t.topped_up_at >= b.due_date
       AND DATE(t.topped_up_at) <= :as_of)        AS topup_amount,
    (SELECT MAX(DATE(t.topped_up_at)) FROM account_topup t
     WHERE t.account_no = b.account_no AND t.topped_up_at >= b.due_date
       AND DATE(t.topped_up_at) <= :as_of)        AS topup_on
FROM bill b
LEFT JOIN customer c
    ON c.account_no = b.account_no
LEFT JOIN (
    SELECT bill_id, SUM(amount) AS paid
    FROM bill_payment
    WHERE paid_on <= :as_of
    GROUP BY bill_id
) p ON p.bill_id = b.bill_id
LEFT JOIN (
    SELECT DISTINCT bill_id
    FROM payment_demand
    WHERE demanded_on <= :as_of
) d ON d.bill_id = b.bill_id
LEFT JOIN (
    SELECT account_no, MAX(promised_on) AS promised_on
    FROM bill_promise
    WHERE recorded_on <= :as_of
      AND promised_on >= :as_of
    GROUP BY account_no
) pp ON pp.account_no = b.account_no
WHERE b.due_date <= :as_of
  AND ROUND(b.amount - COALESCE(p.paid, 0), 2) <> 0
  AND (c.account_no IS NULL OR c.billing_mode = 'postpaid')
UNION ALL
SELECT
    'balance'                                     AS kind,
    CAST(pb.account_no AS VARCHAR(20))            AS item_id,
    pb.account_no                                 AS account_no,
    c.account_no                                  AS customer_ref,
    c.name,
    c.customer_class,
    c.mobile,
    NULL                                          AS period,
    NULL                                          AS outstanding,
    NULL                                          AS due_date,
    0                                             AS demand_logged,
    ROUND(pb.balance, 2)                          AS balance,
    NULL                                          AS promised_until,
    (SELECT ROUND(SUM(t.amount), 2) FROM account_topup t
     WHERE t.account_no = pb.account_no AND t.topped_up_at > pb.as_of
       AND DATE(t.topped_up_at) <= :as_of)        AS topup_amount,
    (SELECT MAX(DATE(t.topped_up_at)) FROM account_topup t
     WHERE t.account_no = pb.account_no AND t.topped_up_at > pb.as_of
       AND DATE(t.topped_up_at) <= :as_of)        AS topup_on
FROM prepaid_balance pb
LEFT JOIN customer c
    ON c.account_no = pb.account_no
WHERE pb.balance < :balance_alert_below
  AND (c.account_no IS NULL OR c.billing_mode = 'prepaid')
ORDER BY account_no, kind, due_date
