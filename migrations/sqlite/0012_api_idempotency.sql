-- Idempotency keys of the HTTP API (issue 6): every POST that moves money or a relay
-- carries an `Idempotency-Key`. The first request with a key reserves the row (the
-- primary key makes concurrent repeats wait for it instead of applying twice); its
-- response is stored with it. A repeat with the same request gets the stored response;
-- the same key with another request is refused. Keys are per user. Times are Unix
-- milliseconds (UTC), like the other access tables (0010).
CREATE TABLE api_idempotency (
    user_id             INTEGER NOT NULL REFERENCES users (user_id),
    idempotency_key     TEXT NOT NULL,
    -- SHA-256 (hex) of the method, the path and the body.
    request_sha256      TEXT NOT NULL,
    -- NULL while the first request is being processed.
    response_status     INTEGER,
    response_body       TEXT,
    created_at_ms       BIGINT NOT NULL,
    completed_at_ms     BIGINT,
    PRIMARY KEY (user_id, idempotency_key)
);
