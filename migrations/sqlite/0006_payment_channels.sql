-- Payment channels (issue 5): the notification inbox, reversals, auto-debit requests,
-- and work orders for reconciliation findings and failed auto-debits.

-- Every authenticated, validated channel notification, committed before it is
-- acknowledged; applied in a second step (or by the recovery sweep after a crash).
CREATE TABLE payment_inbox (
    inbox_id            INTEGER PRIMARY KEY AUTOINCREMENT,
    channel             TEXT NOT NULL,
    channel_txn_id      TEXT NOT NULL,
    kind                TEXT NOT NULL CHECK (kind IN ('payment', 'reversal')),
    account_id          TEXT NOT NULL REFERENCES accounts (account_id),
    amount_fen          INTEGER NOT NULL CHECK (amount_fen > 0),
    original_txn_id     TEXT,               -- for a reversal: the payment it reverses
    debit_request_id    TEXT,               -- for an auto-debit result: our request id
    status              TEXT NOT NULL CHECK (status IN ('received', 'applied', 'rejected')),
    result_code         TEXT,
    received_at         TEXT NOT NULL,
    applied_at          TEXT,
    entry_id            INTEGER REFERENCES ledger_entries (entry_id),
    UNIQUE (channel, channel_txn_id)
);
CREATE INDEX payment_inbox_status ON payment_inbox (status, inbox_id);

-- 代扣 requests to the customer's bank. At most one in flight per account.
CREATE TABLE auto_debits (
    debit_id            INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id          TEXT NOT NULL UNIQUE,   -- sent to the bank, echoed in its result
    account_id          TEXT NOT NULL REFERENCES accounts (account_id),
    amount_fen          INTEGER NOT NULL CHECK (amount_fen > 0),
    decision_id         INTEGER,                -- the warning decision that asked for it
    status              TEXT NOT NULL CHECK (status IN ('requested', 'in-flight', 'succeeded', 'failed')),
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at     TEXT NOT NULL,
    last_error          TEXT,
    created_at          TEXT NOT NULL,
    finished_at         TEXT
);
CREATE UNIQUE INDEX auto_debits_one_in_flight ON auto_debits (account_id) WHERE status IN ('requested', 'in-flight');
CREATE UNIQUE INDEX auto_debits_decision ON auto_debits (decision_id);

-- Work orders gain two kinds; a reconciliation finding may name an account we do not
-- have, so account_id becomes optional (SQLite cannot alter a CHECK: rebuild).
CREATE TABLE work_orders_new (
    work_order_id       INTEGER PRIMARY KEY AUTOINCREMENT,
    kind                TEXT NOT NULL CHECK (kind IN ('approve-disconnection', 'offline-follow-up', 'data-maintenance', 'call-before-reconnection', 'relay-failure', 'reconciliation', 'auto-debit-failed')),
    account_id          TEXT REFERENCES accounts (account_id),
    station_id          TEXT NOT NULL,
    decision_id         INTEGER,
    dedup_key           TEXT NOT NULL UNIQUE,
    status              TEXT NOT NULL CHECK (status IN ('open', 'approved', 'held', 'done', 'cancelled')),
    evidence_json       TEXT NOT NULL,
    opened_at           TEXT NOT NULL,
    decided_by          TEXT,
    decided_at          TEXT,
    note                TEXT
);
INSERT INTO work_orders_new SELECT work_order_id, kind, account_id, station_id, decision_id, dedup_key, status, evidence_json, opened_at, decided_by, decided_at, note FROM work_orders;
DROP TABLE work_orders;
ALTER TABLE work_orders_new RENAME TO work_orders;
