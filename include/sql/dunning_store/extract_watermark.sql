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
