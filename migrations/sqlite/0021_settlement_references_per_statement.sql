-- PostgreSQL's 0021 replaces the settlement's four foreign keys to readings, decisions and
-- ledger entries by one check per statement, because there each key check locks the row it
-- references. SQLite's keys take no row locks (a key check is one index look-up), so they
-- stay. What both databases now share: readings are facts — a person may correct a held
-- reading's register value, but no reading is deleted or renumbered.
CREATE TRIGGER readings_no_delete BEFORE DELETE ON readings
BEGIN SELECT RAISE(ABORT, 'readings are kept: a reading is never deleted nor renumbered (correct its register value instead)'); END;
CREATE TRIGGER readings_no_renumber BEFORE UPDATE OF reading_id ON readings
WHEN NEW.reading_id <> OLD.reading_id
BEGIN SELECT RAISE(ABORT, 'readings are kept: a reading is never deleted nor renumbered (correct its register value instead)'); END;

-- And the check PostgreSQL's 0021 adds beyond its old keys: the decision that priced a
-- settlement and the ledger entry that charged it are the settled account's own.
CREATE TRIGGER settlements_own_references BEFORE INSERT ON settlements
WHEN (SELECT account_id FROM decisions WHERE decision_id = NEW.decision_id) IS NOT NEW.account_id
  OR (SELECT account_id FROM ledger_entries WHERE entry_id = NEW.entry_id) IS NOT NEW.account_id
BEGIN SELECT RAISE(ABORT, 'settlements: a settlement refers to a decision or a ledger entry that does not exist or is another account''s'); END;
