-- Tax payments for the recovery figures of the run report: who paid how much on which day.
-- One row per payment (a taxpayer paying several liabilities has several rows), paid between
-- window_start and window_end (set by the extract task from the as-of date: the 30 days up to
-- the run date, so the report also refreshes the recovery of earlier runs whose 30-day window
-- is still open). Refunds and corrections (amount <= 0) are left out.
-- debtor_id is what the ledger keys debtors by for tax: the taxpayer id.
-- Bind parameters: window_start, window_end (dates), written with a colon below.
SELECT
    l.taxpayer_id AS debtor_id,
    p.paid_on,
    p.amount
FROM tax_payment p
JOIN tax_liability l
    ON l.liability_id = p.liability_id
WHERE p.paid_on >= :window_start
  AND p.paid_on <= :window_end
  AND p.amount > 0
ORDER BY p.paid_on, p.payment_id
