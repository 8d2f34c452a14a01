-- Migration 0021 replaced the settlement's locking foreign keys by one check per INSERT
-- statement. This does the same for the other keys a settlement day writes through, row by
-- row, at every account:
--   decisions.parameters_sha256 -> decision_parameters   (two to three decisions an account)
--   ledger_entries.account_id   -> accounts              (the day's charge)
--   settlements.account_id      -> accounts
--   sms_outbox.account_id       -> accounts              (each warning notice)
-- A key check is a query of its own per inserted row that also takes a KEY SHARE lock on the
-- referenced row. psql, 3,000 decision rows of a settled 100,000-account county: 38-52 ms
-- with the key, 26-32 ms without it.
--
-- The locks guard against nothing that can happen here: decision parameters are
-- append-only (migration 0017's trigger), and accounts are never deleted nor renumbered
-- (the trigger below makes that a rule; an account that leaves is closed, its ledger
-- kept). So each key becomes one check per INSERT statement over the rows it inserted:
-- every reference is looked up by primary key, without a lock, and a missing one fails
-- the statement with the key's own error code (foreign_key_violation), naming the table,
-- the column and the value. As in 0021 the look-ups are forced onto the primary key (no
-- sequential scan, no hash or merge join): the inserted rows are a batch, the referenced
-- tables may be a province's.
ALTER TABLE decisions DROP CONSTRAINT decisions_parameters_sha256_fkey;
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_account_id_fkey;
ALTER TABLE settlements DROP CONSTRAINT settlements_account_id_fkey;
ALTER TABLE sms_outbox DROP CONSTRAINT sms_outbox_account_id_fkey;

-- One function per referenced table; each table that refers to it names its inserted rows
-- `inserted` and the reference `account_id` (accounts) or `parameters_sha256`.
CREATE FUNCTION feegate_check_account_reference() RETURNS trigger LANGUAGE plpgsql
    SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
DECLARE
    missing TEXT;
BEGIN
    SELECT n.account_id INTO missing
      FROM inserted n LEFT JOIN accounts a ON a.account_id = n.account_id
     WHERE a.account_id IS NULL
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'foreign_key_violation',
            MESSAGE = format('%s: account %s does not exist', TG_TABLE_NAME, missing),
            HINT = 'check the account id; an account is opened by onboarding';
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER ledger_entries_account_reference AFTER INSERT ON ledger_entries
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION feegate_check_account_reference();
CREATE TRIGGER settlements_account_reference AFTER INSERT ON settlements
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION feegate_check_account_reference();
CREATE TRIGGER sms_outbox_account_reference AFTER INSERT ON sms_outbox
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION feegate_check_account_reference();

CREATE FUNCTION feegate_check_parameters_reference() RETURNS trigger LANGUAGE plpgsql
    SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
DECLARE
    missing TEXT;
BEGIN
    SELECT n.parameters_sha256 INTO missing
      FROM inserted n LEFT JOIN decision_parameters p ON p.sha256 = n.parameters_sha256
     WHERE n.parameters_sha256 IS NOT NULL AND p.sha256 IS NULL
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'foreign_key_violation',
            MESSAGE = format('decisions: parameters %s are not stored in decision_parameters', missing),
            HINT = 'a decision is written by decision_log::append, which stores its parameters first; report this as a defect';
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER decisions_parameters_reference AFTER INSERT ON decisions
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION feegate_check_parameters_reference();

-- Accounts are kept: an account's ledger, decisions and settlements name it for ever (one
-- that leaves is closed, not deleted). The renumbering trigger fires only on an UPDATE
-- that sets account_id, so the balance updates of a settlement day do not call it.
CREATE FUNCTION feegate_accounts_keep() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'accounts are kept: an account is never deleted nor renumbered (its ledger and decisions name it)';
END
$$;
CREATE TRIGGER accounts_no_delete BEFORE DELETE ON accounts
    FOR EACH ROW EXECUTE FUNCTION feegate_accounts_keep();
CREATE TRIGGER accounts_no_renumber BEFORE UPDATE OF account_id ON accounts
    FOR EACH ROW WHEN (NEW.account_id IS DISTINCT FROM OLD.account_id)
    EXECUTE FUNCTION feegate_accounts_keep();
