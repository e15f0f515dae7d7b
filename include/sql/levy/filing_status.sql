-- Filing obligations of the last six months and the next three weeks, as of the run date, with
-- the taxpayer's primary mobile: the planner reminds those not yet filed 5 and 2 working days
-- before an upcoming deadline, and flags taxpayers with 3 consecutive months unfiled (非正常户).
-- A return filed after the as-of date counts as not filed yet.
-- taxpayer_ref: the taxpayer's key as found by the LEFT JOIN, NULL for an orphan obligation
-- (validation quarantines it: referential integrity).
-- Bind parameters: as_of, window_start and window_end (dates), with a colon in the query below.
SELECT
    o.obligation_id,
    o.taxpayer_id,
    t.name                                   AS taxpayer_name,
    t.status                                 AS taxpayer_status,
    t.taxpayer_id                            AS taxpayer_ref,
    o.tax_type,
    o.period,
    o.deadline,
    CASE WHEN o.filed_on IS NOT NULL AND o.filed_on <= :as_of THEN 1 ELSE 0 END AS filed,
    c.mobile,
    c.role                                   AS contact_role
FROM filing_obligation o
LEFT JOIN taxpayer t
    ON t.taxpayer_id = o.taxpayer_id
LEFT JOIN (
    SELECT taxpayer_id, MIN(contact_id) AS contact_id
    FROM taxpayer_contact
    WHERE is_primary = 1
    GROUP BY taxpayer_id
) pc ON pc.taxpayer_id = o.taxpayer_id
LEFT JOIN taxpayer_contact c
    ON c.contact_id = pc.contact_id
WHERE o.deadline >= :window_start
  AND o.deadline <= :window_end
ORDER BY o.taxpayer_id, o.period, o.obligation_id
