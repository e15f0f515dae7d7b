-- Tax liabilities still unpaid after their payment deadline, as of the run date.
-- One row per liability, with the taxpayer's primary mobile as entered (validated later).
-- An approved deferral (延期缴纳) moves the deadline; while it has not passed there is no dunning.
-- Rows with a negative balance are kept on purpose: validation quarantines them with a reason.
-- Bind parameter: as_of (the run as-of date), written with a colon in the query below.
SELECT
    l.liability_id,
    l.taxpayer_id,
    t.name                                   AS taxpayer_name,
    t.taxpayer_type,
    t.status                                 AS taxpayer_status,
    l.tax_type,
    l.period,
    l.principal,
    COALESCE(p.paid, 0)                      AS paid,
    l.principal - COALESCE(p.paid, 0)        AS outstanding,
    COALESCE(d.new_deadline, l.deadline)     AS deadline,
    c.mobile,
    c.role                                   AS contact_role
FROM tax_liability l
JOIN taxpayer t
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
LEFT JOIN taxpayer_contact c
    ON c.taxpayer_id = l.taxpayer_id AND c.is_primary = 1
WHERE COALESCE(d.new_deadline, l.deadline) < :as_of
  AND l.principal - COALESCE(p.paid, 0) <> 0
ORDER BY l.taxpayer_id, l.deadline, l.liability_id
