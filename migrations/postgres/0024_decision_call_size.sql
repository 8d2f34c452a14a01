-- Which decisions were made many per call (contract 1.1, `tariff-batch.price-batch` and
-- `warning-batch.assess-batch`): `call_decisions` is the number of decisions the one
-- component call made, and the row's `fuel_used` is then its share of that call's fuel
-- (`PolicyEngine::price_many`); NULL for a decision made alone by the single-call export,
-- whose `fuel_used` is its own. `audit log` shows it and `audit replay` uses it to say why a
-- replayed decision's fuel differs. The column is part of the hash chain (only when set, as
-- `parameters_sha256`, so rows written before keep their hashes). Rows are never updated.
ALTER TABLE decisions ADD COLUMN call_decisions BIGINT;
-- NOT VALID: new rows are checked; the rows before (all NULL) are not scanned while the
-- table is locked — `decisions` is the largest table.
ALTER TABLE decisions ADD CONSTRAINT decisions_call_decisions_positive
    CHECK (call_decisions >= 1) NOT VALID;

-- Where the column begins: a NULL `call_decisions` on a row with a smaller id says nothing
-- (the column did not exist yet); from this id on it means "made alone". `audit replay`
-- hedges its fuel note only for the rows before. Append-only, like the log.
CREATE TABLE decision_log_marks (
    mark                TEXT PRIMARY KEY,
    decision_id         BIGINT NOT NULL
);
INSERT INTO decision_log_marks (mark, decision_id)
    SELECT 'call_decisions_from', COALESCE(MAX(decision_id), 0) + 1 FROM decisions;
CREATE TRIGGER decision_log_marks_append_only BEFORE UPDATE OR DELETE ON decision_log_marks
    FOR EACH ROW EXECUTE FUNCTION feegate_refuse_change();
