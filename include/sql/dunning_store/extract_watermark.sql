-- Watermarks of incremental extracts: the highest value of the watermark column (a change
-- timestamp or an increasing key) already extracted, per source connection and data set.
-- The next run extracts rows above it (bind parameter :since). Values are kept as text:
-- timestamps as 'YYYY-MM-DD HH:MM:SS.ffffff', integers in decimal.
-- Portable DDL: runs unchanged on SQLite, PostgreSQL and MariaDB.
CREATE TABLE IF NOT EXISTS extract_watermark (
    source     VARCHAR(100) NOT NULL,
    dataset    VARCHAR(100) NOT NULL,
    watermark  VARCHAR(64)  NOT NULL,
    updated_at TIMESTAMP    NULL,
    PRIMARY KEY (source, dataset)
);

-- Row versions (key, change value as text) extracted within the overlap (lookback) window below
-- the watermark: the next run re-reads that window to catch rows committed late with an older
-- change timestamp, and drops the versions listed here. Replaced whole by each run.
CREATE TABLE IF NOT EXISTS extract_watermark_seen (
    source     VARCHAR(100) NOT NULL,
    dataset    VARCHAR(100) NOT NULL,
    row_key    VARCHAR(200) NOT NULL,
    changed    VARCHAR(64)  NOT NULL,
    PRIMARY KEY (source, dataset, row_key, changed)
);
