-- Which `feegate serve` process runs each county's jobs, when several share one database.
-- A lease is held until `expires_at_ms` (Unix milliseconds, the holder's clock; hosts are
-- NTP-synchronised and the lease is many seconds long). `epoch` grows with every change
-- of holder, so logs show each hand-over.
CREATE TABLE county_leases (
    county              TEXT PRIMARY KEY,
    holder              TEXT NOT NULL,
    expires_at_ms       BIGINT NOT NULL,
    epoch               BIGINT NOT NULL,
    acquired_at_ms      BIGINT NOT NULL
);
