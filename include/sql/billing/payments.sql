-- Electricity payments for the recovery figures of the run report: who paid how much on which
-- day. One row per bill payment, paid between window_start and window_end (set by the extract
-- task from the as-of date: the 30 days up to the run date, so the report also refreshes the
-- recovery of earlier runs whose 30-day window is still open). Refunds (amount <= 0) are left
-- out. debtor_id is what the ledger keys debtors by for electricity: the account number.
-- Prepaid recharges are kept by the recharge-card system, a separate database (include/sql/
-- recharge/); they are not in this query.
-- Bind parameters: window_start, window_end (dates), written with a colon below.
SELECT
    b.account_no AS debtor_id,
    p.paid_on,
    p.amount
FROM bill_payment p
JOIN bill b
    ON b.bill_id = p.bill_id
WHERE p.paid_on >= :window_start
  AND p.paid_on <= :window_end
  AND p.amount > 0
ORDER BY p.paid_on, p.payment_id
