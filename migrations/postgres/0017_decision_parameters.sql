-- The decision log stores each distinct parameters text once (`decision_log.rs`):
-- a county's parameters are the same for every decision of a day, and writing them
-- into every row's input_json was a third of the log's bytes. A row with
-- `parameters_sha256` set has `"parameters":""` in its input_json in their place;
-- readers put them back (`decision_log::recorded_input`), byte for byte. The column is
-- part of the hash chain (only when set, so rows written before keep their hashes), and
-- `audit verify` checks each parameters row against its sha256. Rows are never updated
-- or deleted. From this migration on, a successful decision's `explanation` column is
-- NULL: the explanation is in its output_json, and readers take it from there
-- (`decision_log::explanation`); a failure's description stays in the column.
CREATE TABLE decision_parameters (
    sha256              TEXT PRIMARY KEY,   -- lowercase hex sha256 of `parameters`
    parameters          TEXT NOT NULL
);
CREATE TRIGGER decision_parameters_append_only BEFORE UPDATE OR DELETE ON decision_parameters
    FOR EACH ROW EXECUTE FUNCTION feegate_refuse_change();

ALTER TABLE decisions ADD COLUMN parameters_sha256 TEXT REFERENCES decision_parameters (sha256);
