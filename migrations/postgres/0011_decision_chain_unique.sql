-- The decision log's hash chain cannot fork: two rows never link to the same row before
-- them. Appends take a lock first (PostgreSQL: pg_advisory_xact_lock, see
-- decision_log.rs); this index makes a writer that skipped it fail instead of forking.
-- Unchained rows from before migration 0002 have NULL and are not constrained.
CREATE UNIQUE INDEX decisions_prev_hash_unique ON decisions (prev_hash);
