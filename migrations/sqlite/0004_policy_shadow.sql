-- Policy lifecycle, continued (issue 3): shadow mode and trust revocation.

-- Who revoked a trusted key and why (revoked_at exists since 0002). A revoked key signs
-- nothing new; versions it signed before stay published and name it (signer_key_id).
ALTER TABLE policy_trusted_keys ADD COLUMN revoked_by TEXT;
ALTER TABLE policy_trusted_keys ADD COLUMN revoked_note TEXT;

-- Shadow events: `start` runs publication_id beside the version in force on every live
-- decision of `kind` (until `until_at`, if set, or a later event); `stop` ends it. The
-- shadow in force is the latest event for (county, kind). Never updated or deleted.
CREATE TABLE policy_shadows (
    shadow_event_id     INTEGER PRIMARY KEY AUTOINCREMENT,
    county              TEXT NOT NULL,
    kind                TEXT NOT NULL CHECK (kind IN ('tariff', 'warning', 'notice', 'cutoff')),
    action              TEXT NOT NULL CHECK (action IN ('start', 'stop')),
    publication_id      INTEGER REFERENCES policy_publications (publication_id),
    component_sha256    TEXT,
    until_at            TEXT,               -- county local time; NULL: until stopped
    who                 TEXT NOT NULL,
    note                TEXT NOT NULL,
    recorded_at         TEXT NOT NULL,
    CHECK ((action = 'start') = (publication_id IS NOT NULL))
);
CREATE INDEX policy_shadows_latest ON policy_shadows (county, kind, shadow_event_id);
CREATE TRIGGER policy_shadows_no_update BEFORE UPDATE ON policy_shadows
BEGIN SELECT RAISE(ABORT, 'policy_shadows is append-only: start or stop a shadow instead'); END;
CREATE TRIGGER policy_shadows_no_delete BEFORE DELETE ON policy_shadows
BEGIN SELECT RAISE(ABORT, 'policy_shadows is append-only: start or stop a shadow instead'); END;

-- What the shadow decided on the same input as a live decision (`decision_id`): its
-- output or failure and fuel. Never enforced, charged, sent or sent to a relay; not part
-- of the decision log's hash chain. Never updated or deleted.
CREATE TABLE shadow_decisions (
    shadow_decision_id  INTEGER PRIMARY KEY AUTOINCREMENT,
    decision_id         INTEGER NOT NULL REFERENCES decisions (decision_id),
    shadow_event_id     INTEGER NOT NULL REFERENCES policy_shadows (shadow_event_id),
    publication_id      INTEGER NOT NULL REFERENCES policy_publications (publication_id),
    component_sha256    TEXT NOT NULL,
    county              TEXT NOT NULL,
    kind                TEXT NOT NULL,      -- the live decision's log kind (reconnection too)
    business_date       TEXT NOT NULL,
    outcome             TEXT NOT NULL CHECK (outcome IN ('ok', 'failed')),
    output_json         TEXT,
    failure_json        TEXT,
    fuel_used           INTEGER NOT NULL,
    decided_at          TEXT NOT NULL,
    UNIQUE (decision_id, shadow_event_id)
);
CREATE INDEX shadow_decisions_by_day ON shadow_decisions (county, kind, business_date);
CREATE TRIGGER shadow_decisions_no_update BEFORE UPDATE ON shadow_decisions
BEGIN SELECT RAISE(ABORT, 'shadow_decisions is append-only'); END;
CREATE TRIGGER shadow_decisions_no_delete BEFORE DELETE ON shadow_decisions
BEGIN SELECT RAISE(ABORT, 'shadow_decisions is append-only'); END;
