-- The chain's fork guard moves from `prev_hash` to the primary key. From this migration
-- on, `decision_log::append` gives each row the id after the chain's tail (max id + 1,
-- read under the chain's advisory lock), so a row's id is its position in the chain: a
-- second writer that read the same tail (one that skipped the lock) computes the same id
-- and its insert fails on the primary key, exactly as it failed on the unique `prev_hash`
-- before. The unique index on `prev_hash` (migration 0011) was a B-tree keyed by random
-- sha256 text: every insert landed on a random page, so each batch of a thousand
-- decisions dirtied about a thousand index pages once the log outgrew the buffer cache
-- (and each first touch after a checkpoint wrote a full page to the WAL). The primary
-- key only ever grows at its right edge.
--
-- The identity goes too: an insert that does not name its position now fails
-- (NOT NULL) instead of taking a sequence number that no longer follows the chain.
DROP INDEX decisions_prev_hash_unique;
ALTER TABLE decisions ALTER COLUMN decision_id DROP IDENTITY;
