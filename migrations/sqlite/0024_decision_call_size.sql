-- Which decisions were made many per call (contract 1.1, `tariff-batch.price-batch` and
-- `warning-batch.assess-batch`): `call_decisions` is the number of decisions the one
-- component call made, and the row's `fuel_used` is then its share of that call's fuel
-- (`PolicyEngine::price_many`); NULL for a decision made alone by the single-call export,
-- whose `fuel_used` is its own. `audit log` shows it and `audit replay` uses it to say why a
-- replayed decision's fuel differs. The column is part of the hash chain (only when set, as
-- `parameters_sha256`, so rows written before keep their hashes). Rows are never updated.
-- SQLite tests a new column's CHECK against every existing row once, while adding it
-- (all NULL here, so it passes): about 0.3 s per 400 MB of log, measured. A BEFORE INSERT
-- trigger would have avoided that scan but cost 0.6-1.5 us on every row inserted ever after
-- (measured on 200,000 rows), so the check is a CHECK.
ALTER TABLE decisions ADD COLUMN call_decisions INTEGER CHECK (call_decisions >= 1);

-- Where the column begins: a NULL `call_decisions` on a row with a smaller id says nothing
-- (the column did not exist yet); from this id on it means "made alone". `audit replay`
-- hedges its fuel note only for the rows before. Append-only, like the log.
CREATE TABLE decision_log_marks (
    mark                TEXT PRIMARY KEY,
    decision_id         INTEGER NOT NULL
);
INSERT INTO decision_log_marks (mark, decision_id)
    SELECT 'call_decisions_from', COALESCE(MAX(decision_id), 0) + 1 FROM decisions;
CREATE TRIGGER decision_log_marks_no_update BEFORE UPDATE ON decision_log_marks
BEGIN SELECT RAISE(ABORT, 'decision_log_marks is append-only'); END;
CREATE TRIGGER decision_log_marks_no_delete BEFORE DELETE ON decision_log_marks
BEGIN SELECT RAISE(ABORT, 'decision_log_marks is append-only'); END;
