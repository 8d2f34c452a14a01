-- A scheduled activation (effective_at still ahead) can be cancelled before it takes
-- effect (`registry::cancel`, `feegate policy cancel`): one row here, with who, why and
-- when (county local time, as the other registry times). A cancelled activation never
-- takes effect; it stays in `policy_activations` and in the history, marked cancelled.
-- The primary key makes a second cancellation of the same activation impossible.
-- Append-only, like the activations themselves.
CREATE TABLE policy_activation_cancellations (
    activation_id       INTEGER PRIMARY KEY REFERENCES policy_activations (activation_id),
    who                 TEXT NOT NULL,
    note                TEXT NOT NULL,
    recorded_at         TEXT NOT NULL
);
CREATE TRIGGER policy_activation_cancellations_no_update BEFORE UPDATE ON policy_activation_cancellations
BEGIN SELECT RAISE(ABORT, 'policy_activation_cancellations is append-only: schedule the version again with policy activate instead'); END;
CREATE TRIGGER policy_activation_cancellations_no_delete BEFORE DELETE ON policy_activation_cancellations
BEGIN SELECT RAISE(ABORT, 'policy_activation_cancellations is append-only: schedule the version again with policy activate instead'); END;
