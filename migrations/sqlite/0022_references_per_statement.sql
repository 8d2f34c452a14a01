-- PostgreSQL's 0022 replaces four more row-by-row foreign keys (to decision parameters and
-- to accounts) by one check per INSERT statement, because there each key check locks the
-- row it references. SQLite's keys take no row locks, so they stay. What both databases now
-- share: an account is never deleted nor renumbered — its ledger, decisions and settlements
-- name it for ever (one that leaves is closed, not deleted).
CREATE TRIGGER accounts_no_delete BEFORE DELETE ON accounts
BEGIN SELECT RAISE(ABORT, 'accounts are kept: an account is never deleted nor renumbered (its ledger and decisions name it)'); END;
CREATE TRIGGER accounts_no_renumber BEFORE UPDATE OF account_id ON accounts
WHEN NEW.account_id <> OLD.account_id
BEGIN SELECT RAISE(ABORT, 'accounts are kept: an account is never deleted nor renumbered (its ledger and decisions name it)'); END;
