-- Who may do what (issue 6): people and systems that reach `feegate serve`.
-- Roles: operations (every county), county-engineer (their county's policies),
-- station-staff (their station's customers and work orders), auditor (reads everything,
-- changes nothing), customer (their own account only). The scope columns a role needs
-- must be set and the others empty (CHECK below). Times are Unix milliseconds (UTC):
-- logins and sessions are not county business days.
CREATE TABLE users (
    user_id             INTEGER PRIMARY KEY AUTOINCREMENT,
    username            TEXT NOT NULL UNIQUE,
    role                TEXT NOT NULL CHECK (role IN ('operations', 'county-engineer', 'station-staff', 'auditor', 'customer')),
    county              TEXT REFERENCES counties (county),
    station_id          TEXT REFERENCES stations (station_id),
    account_id          TEXT REFERENCES accounts (account_id),
    -- argon2id in PHC string form; NULL: this user has API tokens only, no console login.
    password_hash       TEXT,
    created_at_ms       BIGINT NOT NULL,
    disabled_at_ms      BIGINT,
    CHECK (
        (role IN ('operations', 'auditor') AND county IS NULL AND station_id IS NULL AND account_id IS NULL)
        OR (role = 'county-engineer' AND county IS NOT NULL AND station_id IS NULL AND account_id IS NULL)
        OR (role = 'station-staff' AND county IS NOT NULL AND station_id IS NOT NULL AND account_id IS NULL)
        OR (role = 'customer' AND account_id IS NOT NULL AND county IS NULL AND station_id IS NULL)
    )
);

-- API tokens: only the SHA-256 of the token is stored; the token is shown once.
CREATE TABLE api_tokens (
    token_id            INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id             INTEGER NOT NULL REFERENCES users (user_id),
    token_sha256        TEXT NOT NULL UNIQUE,
    label               TEXT NOT NULL,
    created_at_ms       BIGINT NOT NULL,
    expires_at_ms       BIGINT,
    revoked_at_ms       BIGINT
);

-- Console sessions: the cookie carries a random id; only its SHA-256 is stored.
CREATE TABLE console_sessions (
    session_sha256      TEXT PRIMARY KEY,
    user_id             INTEGER NOT NULL REFERENCES users (user_id),
    created_at_ms       BIGINT NOT NULL,
    expires_at_ms       BIGINT NOT NULL,
    ended_at_ms         BIGINT
);
CREATE INDEX console_sessions_user ON console_sessions (user_id);

-- Failed console logins, for the rate limit (per username and per client address).
CREATE TABLE login_failures (
    failure_id          INTEGER PRIMARY KEY AUTOINCREMENT,
    username            TEXT NOT NULL,
    client              TEXT NOT NULL,
    at_ms               BIGINT NOT NULL
);
CREATE INDEX login_failures_username ON login_failures (username, at_ms);
CREATE INDEX login_failures_client ON login_failures (client, at_ms);

-- The two-person rule for cutoffs: the approver of an approve-disconnection work order
-- (decided_by) is never its executor. A person executing through the API is recorded
-- here; the scheduled execution records 'system'.
ALTER TABLE work_orders ADD COLUMN executed_by TEXT;
ALTER TABLE work_orders ADD COLUMN executed_at TEXT;
