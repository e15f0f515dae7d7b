-- Tax liabilities still unpaid after their payment deadline, as of the run date.
-- One row per liability, with the taxpayer's primary mobile as entered (validated later).
-- An approved deferral (延期缴纳) moves the deadline: the surcharge runs from the new one, and
-- while it has not passed the row comes with deferred_until set so the planner records the
-- contact as SUPPRESSED (deferral) instead of dropping it silently.
-- Rows with a negative balance are kept on purpose: validation quarantines them with a reason.
-- Balances are rounded to the fen: SQLite computes NUMERIC in floating point, and a fully paid
-- liability must come out as exactly 0, not 1e-13.
-- A taxpayer's primary contact is the lowest contact_id marked primary (sources hold duplicates).
-- promised_until: the latest open promise to pay (promised date on or after the as-of date,
-- recorded by then); the planner holds the taxpayer's reminders until that date.
-- taxpayer_ref: the taxpayer's key as found by the LEFT JOIN, NULL for an orphan liability
-- (validation quarantines it: referential integrity) instead of losing it in an inner join.
-- Bind parameter: as_of (the run as-of date), written with a colon in the query below.
SELECT
    l.liability_id,
    l.taxpayer_id,
    t.name                                   AS taxpayer_name,
    t.taxpayer_type,
    t.status                                 AS taxpayer_status,
    t.taxpayer_id                            AS taxpayer_ref,
    l.tax_type,
    l.period,
    l.principal,
    COALESCE(p.paid, 0)                      AS paid,
    ROUND(l.principal - COALESCE(p.paid, 0), 2) AS outstanding,
    COALESCE(d.new_deadline, l.deadline)     AS deadline,
    l.deadline                               AS original_deadline,
    CASE WHEN d.new_deadline >= :as_of THEN d.new_deadline END AS deferred_until,
    pp.promised_on                           AS promised_until,
    c.mobile,
    c.role                                   AS contact_role
FROM tax_liability l
LEFT JOIN taxpayer t
    ON t.taxpayer_id = l.taxpayer_id
LEFT JOIN (
    SELECT liability_id, SUM(amount) AS paid
    FROM tax_payment
    WHERE paid_on <= :as_of
    GROUP BY liability_id
) p ON p.liability_id = l.liability_id
LEFT JOIN (
    SELECT liability_id, MAX(new_deadline) AS new_deadline
    FROM deferral
    WHERE approved = 1
    GROUP BY liability_id
) d ON d.liability_id = l.liability_id
LEFT JOIN (
    SELECT taxpayer_id, MAX(promised_on) AS promised_on
    FROM tax_promise
    WHERE recorded_on <= :as_of
      AND promised_on >= :as_of
    GROUP BY taxpayer_id
) pp ON pp.taxpayer_id = l.taxpayer_id
LEFT JOIN (
    SELECT taxpayer_id, MIN(contact_id) AS contact_id
    FROM taxpayer_contact
    WHERE is_primary = 1
    GROUP BY taxpayer_id
) pc ON pc.taxpayer_id = l.taxpayer_id
LEFT JOIN taxpayer_contact c
    ON c.contact_id = pc.contact_id
WHERE l.deadline < :as_of
  AND ROUND(l.principal - COALESCE(p.paid, 0), 2) <> 0
ORDER BY l.taxpayer_id, l.deadline, l.liability_id
