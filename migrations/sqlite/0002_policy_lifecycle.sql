-- Policy lifecycle (issue 3): the policy registry, its activation history, and the
-- decision log's hash chain. Same conventions as 0001 (times TEXT county-local).

-- Keys a county trusts to sign its policy publications (ed25519, 32-byte public key
-- as lowercase hex). A key is never deleted; revoking one sets revoked_at.
CREATE TABLE policy_trusted_keys (
    key_id              INTEGER PRIMARY KEY AUTOINCREMENT,
    county              TEXT NOT NULL,
    public_key_hex      TEXT NOT NULL CHECK (length(public_key_hex) = 64),
    who                 TEXT NOT NULL,      -- the person or team holding the private key
    added_by            TEXT NOT NULL,
    added_at            TEXT NOT NULL,
    revoked_at          TEXT,
    UNIQUE (county, public_key_hex)
);

-- Component bytes, content-addressed: sha256 of the bytes is the key. Shared by every
-- county that publishes the same component. Never updated or deleted, so every
-- component_sha256 in `decisions` stays replayable.
CREATE TABLE policy_components (
    sha256              TEXT PRIMARY KEY CHECK (length(sha256) = 64),
    kind                TEXT NOT NULL CHECK (kind IN ('tariff', 'warning', 'notice', 'cutoff')),
    contract_version    TEXT NOT NULL,
    size_bytes          INTEGER NOT NULL,
    bytes               BLOB NOT NULL,
    stored_at           TEXT NOT NULL
);
CREATE TRIGGER policy_components_no_update BEFORE UPDATE ON policy_components
BEGIN SELECT RAISE(ABORT, 'policy_components is append-only'); END;
CREATE TRIGGER policy_components_no_delete BEFORE DELETE ON policy_components
BEGIN SELECT RAISE(ABORT, 'policy_components is append-only'); END;

-- A version of a county's policy: a component plus its parameters, published by someone
-- for a reason. `source` = 'signed' (policy publish: signature verified against a
-- trusted key of the county) or 'shipped' (the policy-set plugin file the host loaded
-- at start, recorded so that its decisions are replayable; not signed).
CREATE TABLE policy_publications (
    publication_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    county              TEXT NOT NULL,
    kind                TEXT NOT NULL CHECK (kind IN ('tariff', 'warning', 'notice', 'cutoff')),
    component_sha256    TEXT NOT NULL REFERENCES policy_components (sha256),
    parameters_json     TEXT NOT NULL,      -- canonical JSON (keys sorted, no spaces)
    parameters_sha256   TEXT NOT NULL,
    source              TEXT NOT NULL CHECK (source IN ('signed', 'shipped')),
    signature_hex       TEXT,               -- ed25519 over sha256(bytes) || sha256(parameters)
    signer_key_id       INTEGER REFERENCES policy_trusted_keys (key_id),
    who                 TEXT NOT NULL,
    published_at        TEXT NOT NULL,
    note                TEXT NOT NULL,
    UNIQUE (county, kind, component_sha256, parameters_sha256, source)
);
CREATE INDEX policy_publications_sha ON policy_publications (component_sha256);
CREATE TRIGGER policy_publications_no_update BEFORE UPDATE ON policy_publications
BEGIN SELECT RAISE(ABORT, 'policy_publications is append-only'); END;
CREATE TRIGGER policy_publications_no_delete BEFORE DELETE ON policy_publications
BEGIN SELECT RAISE(ABORT, 'policy_publications is append-only'); END;

-- Activation events: from `effective_at` on, `publication_id` is the county's policy of
-- `kind` (and, when `rollout_stage` is set, the county moves to that stage). The version
-- in force is the latest event whose effective_at has passed. A rollback is a new event.
CREATE TABLE policy_activations (
    activation_id       INTEGER PRIMARY KEY AUTOINCREMENT,
    county              TEXT NOT NULL,
    kind                TEXT NOT NULL CHECK (kind IN ('tariff', 'warning', 'notice', 'cutoff')),
    publication_id      INTEGER NOT NULL REFERENCES policy_publications (publication_id),
    component_sha256    TEXT NOT NULL,
    action              TEXT NOT NULL CHECK (action IN ('activate', 'rollback')),
    rollout_stage       TEXT CHECK (rollout_stage IS NULL OR rollout_stage IN ('notify-only', 'approval-gated', 'automatic')),
    effective_at        TEXT NOT NULL,
    who                 TEXT NOT NULL,
    note                TEXT NOT NULL,
    recorded_at         TEXT NOT NULL
);
CREATE INDEX policy_activations_in_force ON policy_activations (county, kind, effective_at, activation_id);
CREATE TRIGGER policy_activations_no_update BEFORE UPDATE ON policy_activations
BEGIN SELECT RAISE(ABORT, 'policy_activations is append-only: activate or roll back instead'); END;
CREATE TRIGGER policy_activations_no_delete BEFORE DELETE ON policy_activations
BEGIN SELECT RAISE(ABORT, 'policy_activations is append-only: activate or roll back instead'); END;

-- The decision log's hash chain: row_hash = sha256 of the row's content and prev_hash
-- (the previous row's row_hash, '' for the first). `feegate audit verify` recomputes it,
-- so an edited, removed or re-ordered row shows. Rows written before this migration
-- have NULL hashes and are reported as unchained.
ALTER TABLE decisions ADD COLUMN prev_hash TEXT;
ALTER TABLE decisions ADD COLUMN row_hash TEXT;
