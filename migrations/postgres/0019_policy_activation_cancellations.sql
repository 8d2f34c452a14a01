-- PostgreSQL dialect of migrations/sqlite/0019_policy_activation_cancellations.sql (keep them in step).
-- A scheduled activation (effective_at still ahead) can be cancelled before it takes
-- effect (`registry::cancel`, `feegate policy cancel`): one row here, with who, why and
-- when (county local time, as the other registry times). A cancelled activation never
-- takes effect; it stays in `policy_activations` and in the history, marked cancelled.
-- The primary key makes a second cancellation of the same activation impossible.
-- Append-only, like the activations themselves.
CREATE TABLE policy_activation_cancellations (
    activation_id       BIGINT PRIMARY KEY REFERENCES policy_activations (activation_id),
    who                 TEXT NOT NULL,
    note                TEXT NOT NULL,
    recorded_at         TEXT NOT NULL
);
CREATE TRIGGER policy_activation_cancellations_append_only BEFORE UPDATE OR DELETE ON policy_activation_cancellations
    FOR EACH ROW EXECUTE FUNCTION feegate_refuse_change();
