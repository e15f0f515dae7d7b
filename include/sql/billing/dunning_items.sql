-- Electricity dunning items as of the run date, one row per item, two kinds:
--   bill:    a postpaid bill unpaid on or after its due date (day 0 is the due-date reminder),
--            with whether a payment demand (催交) was logged for it: a cut-off notice needs one;
--   balance: a prepaid (费控) account whose balance is below the highest alert threshold.
-- Balances are rounded to the fen (SQLite computes NUMERIC in floating point).
-- Bind parameters: as_of (the run date) and balance_alert_below (yuan), with a colon below.
SELECT
    'bill'                                        AS kind,
    CAST(b.bill_id AS VARCHAR(20))                AS item_id,
    c.account_no                                  AS account_no,
    c.name,
    c.customer_class,
    c.mobile,
    b.period,
    ROUND(b.amount - COALESCE(p.paid, 0), 2)      AS outstanding,
    b.due_date,
    CASE WHEN d.bill_id IS NULL THEN 0 ELSE 1 END AS demand_logged,
    NULL                                          AS balance
FROM bill b
JOIN customer c
    ON c.account_no = b.account_no AND c.billing_mode = 'postpaid'
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
WHERE b.due_date <= :as_of
  AND ROUND(b.amount - COALESCE(p.paid, 0), 2) <> 0
UNION ALL
SELECT
    'balance'                                     AS kind,
    c.account_no                                  AS item_id,
    c.account_no                                  AS account_no,
    c.name,
    c.customer_class,
    c.mobile,
    NULL                                          AS period,
    NULL                                          AS outstanding,
    NULL                                          AS due_date,
    0                                             AS demand_logged,
    ROUND(pb.balance, 2)                          AS balance
FROM prepaid_balance pb
JOIN customer c
    ON c.account_no = pb.account_no AND c.billing_mode = 'prepaid'
WHERE pb.balance < :balance_alert_below
ORDER BY account_no, kind, due_date
