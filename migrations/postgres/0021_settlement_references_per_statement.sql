-- A settlement row names the reading its period opened on, the reading it closed on, the
-- tariff decision that priced it and the ledger entry that charged it. Until now four
-- foreign keys checked those, row by row: each check is a query of its own that also takes
-- a KEY SHARE lock on the referenced row, which writes the lock into that row's heap page
-- (a dirtied page and a WAL record per reference). A 1,000-account settlement batch paid
-- 4,000 such checks: about two thirds of the time of its `settlements` insert (psql, 5,000
-- rows of a 100,000-account county: 195-232 ms with the keys, 53-73 ms without them,
-- 75-81 ms with the check below).
--
-- The locks guard against nothing that can happen here: decisions and ledger entries are
-- append-only (their triggers refuse UPDATE and DELETE), and readings are never deleted nor
-- renumbered (the trigger below makes that a rule). So the four keys become one check per
-- INSERT statement over the rows it inserted, which looks each reference up by primary key
-- and takes no lock. It checks a little more than the keys did: the decision and the ledger
-- entry must be the settled account's own. The key on account_id stays (a batch holds the
-- account's row locked already, so its check writes nothing).
--
-- The check's joins are forced onto index look-ups (nested loops, no sequential scan): its
-- inserted rows are a batch, the referenced tables are the county's whole history, and a
-- planner working from stale statistics must not scan them.
ALTER TABLE settlements
    DROP CONSTRAINT settlements_from_reading_id_fkey,
    DROP CONSTRAINT settlements_to_reading_id_fkey,
    DROP CONSTRAINT settlements_decision_id_fkey,
    DROP CONSTRAINT settlements_entry_id_fkey;

CREATE FUNCTION feegate_settlements_check_references() RETURNS trigger LANGUAGE plpgsql
    SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
DECLARE
    bad RECORD;
BEGIN
    SELECT n.account_id, n.business_date,
           f.reading_id IS NULL AS no_from, t.reading_id IS NULL AS no_to,
           d.account_id IS DISTINCT FROM n.account_id AS bad_decision,
           e.account_id IS DISTINCT FROM n.account_id AS bad_entry
      INTO bad
      FROM inserted n
      LEFT JOIN readings f ON f.reading_id = n.from_reading_id
      LEFT JOIN readings t ON t.reading_id = n.to_reading_id
      LEFT JOIN decisions d ON d.decision_id = n.decision_id
      LEFT JOIN ledger_entries e ON e.entry_id = n.entry_id
     WHERE f.reading_id IS NULL OR t.reading_id IS NULL
        OR d.account_id IS DISTINCT FROM n.account_id
        OR e.account_id IS DISTINCT FROM n.account_id
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'foreign_key_violation',
            MESSAGE = format(
                'settlements: the settlement of account %s for %s refers to %s',
                bad.account_id, bad.business_date,
                CASE WHEN bad.no_from THEN 'an opening reading that does not exist'
                     WHEN bad.no_to THEN 'a closing reading that does not exist'
                     WHEN bad.bad_decision THEN 'a decision that does not exist or is another account''s'
                     ELSE 'a ledger entry that does not exist or is another account''s' END),
            HINT = 'a settlement is written by the settlement stage only; report this as a defect';
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER settlements_references AFTER INSERT ON settlements
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION feegate_settlements_check_references();

-- Readings are facts: a person may correct a held reading's register value, but no reading
-- is deleted or renumbered (settlements and decisions name readings by id).
CREATE FUNCTION feegate_readings_keep() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR NEW.reading_id <> OLD.reading_id THEN
        RAISE EXCEPTION 'readings are kept: a reading is never deleted nor renumbered (correct its register value instead)';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER readings_kept BEFORE UPDATE OR DELETE ON readings
    FOR EACH ROW EXECUTE FUNCTION feegate_readings_keep();
