-- Feegate schema, SQLite dialect.
-- Money is INTEGER fen (分); energy is INTEGER centi-kWh (0.01 kWh, the register
-- resolution); dates are TEXT 'YYYY-MM-DD' and times TEXT 'YYYY-MM-DD HH:MM:SS' in the
-- county's local time (China Standard Time for Fujian).

CREATE TABLE counties (
    county          TEXT PRIMARY KEY,
    display_name    TEXT NOT NULL,
    rollout_stage   TEXT NOT NULL CHECK (rollout_stage IN ('notify-only', 'approval-gated', 'automatic'))
);

-- 供电所
CREATE TABLE stations (
    station_id      TEXT PRIMARY KEY,
    county          TEXT NOT NULL REFERENCES counties (county),
    name            TEXT NOT NULL
);

-- 档案: customer master data
CREATE TABLE customers (
    customer_id     TEXT PRIMARY KEY,
    county          TEXT NOT NULL REFERENCES counties (county),
    station_id      TEXT NOT NULL REFERENCES stations (station_id),
    name            TEXT NOT NULL,
    master_mobile   TEXT,
    customer_class  TEXT NOT NULL CHECK (customer_class IN ('low-voltage-residential', 'low-voltage-commercial', 'high-voltage')),
    vulnerable      INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE meters (
    meter_id        TEXT PRIMARY KEY,
    customer_id     TEXT NOT NULL REFERENCES customers (customer_id),
    protocol        TEXT NOT NULL CHECK (protocol IN ('modbus-tcp')),
    gateway         TEXT NOT NULL,          -- host:port of the gateway / meter
    unit_id         INTEGER NOT NULL,       -- Modbus unit id behind the gateway
    ct_ratio        INTEGER NOT NULL DEFAULT 1 CHECK (ct_ratio >= 1),
    pt_ratio        INTEGER NOT NULL DEFAULT 1 CHECK (pt_ratio >= 1),
    installed_on    TEXT NOT NULL
);

-- 费控协议. A change is a new row; the account points at the current one.
CREATE TABLE agreements (
    agreement_id        INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id         TEXT NOT NULL REFERENCES customers (customer_id),
    alarm_threshold_fen INTEGER NOT NULL CHECK (alarm_threshold_fen >= 0),
    auto_debit_fen      INTEGER CHECK (auto_debit_fen IS NULL OR auto_debit_fen > 0),
    mobile              TEXT NOT NULL,
    keep_power          INTEGER NOT NULL DEFAULT 0,
    time_of_use         INTEGER NOT NULL DEFAULT 0,
    signed_at           TEXT NOT NULL
);

-- The account's balance moves only in the same transaction as a ledger entry;
-- balance_fen always equals the sum of its ledger entries (checked by tests and demo).
CREATE TABLE accounts (
    account_id          TEXT PRIMARY KEY,
    customer_id         TEXT NOT NULL UNIQUE REFERENCES customers (customer_id),
    meter_id            TEXT NOT NULL UNIQUE REFERENCES meters (meter_id),
    agreement_id        INTEGER NOT NULL REFERENCES agreements (agreement_id),
    county              TEXT NOT NULL REFERENCES counties (county),
    station_id          TEXT NOT NULL REFERENCES stations (station_id),
    status              TEXT NOT NULL CHECK (status IN ('pending-prepayment', 'active')),
    balance_fen         INTEGER NOT NULL DEFAULT 0,
    relay_state         TEXT NOT NULL DEFAULT 'closed' CHECK (relay_state IN ('closed', 'open', 'close-allowed')),
    arrears_since       TEXT,               -- date the balance went below zero
    ontime_topups_in_a_row INTEGER NOT NULL DEFAULT 0,
    topups_total        INTEGER NOT NULL DEFAULT 0,
    disconnected_at     TEXT
);

-- Append-only: no UPDATE, no DELETE (triggers below). Corrections are new entries.
CREATE TABLE ledger_entries (
    entry_id            INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id          TEXT NOT NULL REFERENCES accounts (account_id),
    kind                TEXT NOT NULL CHECK (kind IN ('prepayment', 'payment', 'charge', 'reversal', 'correction')),
    amount_fen          INTEGER NOT NULL,   -- + credit, - debit
    balance_after_fen   INTEGER NOT NULL,
    idempotency_key     TEXT NOT NULL UNIQUE,
    business_date       TEXT NOT NULL,
    posted_at           TEXT NOT NULL,
    reference           TEXT NOT NULL
);
CREATE INDEX ledger_entries_account ON ledger_entries (account_id, entry_id);

CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE ON ledger_entries
BEGIN SELECT RAISE(ABORT, 'ledger_entries is append-only: post a correction instead'); END;
CREATE TRIGGER ledger_entries_no_delete BEFORE DELETE ON ledger_entries
BEGIN SELECT RAISE(ABORT, 'ledger_entries is append-only: post a correction instead'); END;

-- 集抄: every attempt, successful or not, so read success rates are exact.
CREATE TABLE collection_attempts (
    attempt_id          INTEGER PRIMARY KEY AUTOINCREMENT,
    meter_id            TEXT NOT NULL REFERENCES meters (meter_id),
    station_id          TEXT NOT NULL,
    business_date       TEXT NOT NULL,      -- the day the reading is due for (frozen date)
    attempted_at        TEXT NOT NULL,
    outcome             TEXT NOT NULL CHECK (outcome IN ('ok', 'timeout', 'exception', 'bad-value', 'io')),
    detail              TEXT
);
CREATE INDEX collection_attempts_day ON collection_attempts (business_date, station_id);

-- 日冻结 readings, one per meter and frozen date.
CREATE TABLE readings (
    reading_id          INTEGER PRIMARY KEY AUTOINCREMENT,
    meter_id            TEXT NOT NULL REFERENCES meters (meter_id),
    reading_date        TEXT NOT NULL,      -- register value at 00:00 of this date
    register_centi_kwh  INTEGER NOT NULL,
    source              TEXT NOT NULL CHECK (source IN ('daily-frozen', 'import')),
    collected_at        TEXT NOT NULL,
    UNIQUE (meter_id, reading_date)
);

-- Policy decisions: component hash, input, output, fuel. Never updated.
CREATE TABLE decisions (
    decision_id         INTEGER PRIMARY KEY AUTOINCREMENT,
    county              TEXT NOT NULL,
    kind                TEXT NOT NULL CHECK (kind IN ('tariff', 'warning', 'notice', 'cutoff', 'reconnection')),
    account_id          TEXT NOT NULL,
    business_date       TEXT NOT NULL,
    decided_at          TEXT NOT NULL,
    component_sha256    TEXT NOT NULL,
    input_json          TEXT NOT NULL,
    output_json         TEXT,               -- NULL when the component failed
    outcome             TEXT NOT NULL CHECK (outcome IN ('ok', 'failed')),
    failure_json        TEXT,
    reason_code         TEXT,
    explanation         TEXT,
    fuel_used           INTEGER NOT NULL,
    guest_output        TEXT NOT NULL DEFAULT ''
);
CREATE INDEX decisions_account ON decisions (account_id, decision_id);

CREATE TRIGGER decisions_no_update BEFORE UPDATE ON decisions
BEGIN SELECT RAISE(ABORT, 'decisions is append-only'); END;
CREATE TRIGGER decisions_no_delete BEFORE DELETE ON decisions
BEGIN SELECT RAISE(ABORT, 'decisions is append-only'); END;

-- One row per account and settled day: the exactly-once guard of settlement.
CREATE TABLE settlements (
    account_id          TEXT NOT NULL REFERENCES accounts (account_id),
    business_date       TEXT NOT NULL,      -- last consumption day of the period
    period_first        TEXT NOT NULL,
    period_last         TEXT NOT NULL,
    from_reading_id     INTEGER NOT NULL REFERENCES readings (reading_id),
    to_reading_id       INTEGER NOT NULL REFERENCES readings (reading_id),
    kwh_centi           INTEGER NOT NULL,
    charge_fen          INTEGER NOT NULL,
    decision_id         INTEGER NOT NULL REFERENCES decisions (decision_id),
    entry_id            INTEGER NOT NULL REFERENCES ledger_entries (entry_id),
    PRIMARY KEY (account_id, business_date)
);

-- Accounts whose processing is held: a policy failed, or a reading needs a person.
CREATE TABLE holds (
    hold_id             INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id          TEXT NOT NULL REFERENCES accounts (account_id),
    business_date       TEXT NOT NULL,
    stage               TEXT NOT NULL,      -- settlement | warning | notice | cutoff | reconnection | reading
    reason              TEXT NOT NULL,
    decision_id         INTEGER,
    created_at          TEXT NOT NULL,
    released_at         TEXT,
    UNIQUE (account_id, business_date, stage)
);

-- 工单
CREATE TABLE work_orders (
    work_order_id       INTEGER PRIMARY KEY AUTOINCREMENT,
    kind                TEXT NOT NULL CHECK (kind IN ('approve-disconnection', 'offline-follow-up', 'data-maintenance', 'call-before-reconnection', 'relay-failure')),
    account_id          TEXT NOT NULL REFERENCES accounts (account_id),
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

-- SMS outbox: a message is "warned" only once its delivery receipt arrived.
CREATE TABLE sms_outbox (
    message_id          INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id          TEXT NOT NULL REFERENCES accounts (account_id),
    kind                TEXT NOT NULL,
    dedup_key           TEXT NOT NULL UNIQUE,
    mobile              TEXT NOT NULL,
    body                TEXT NOT NULL,
    warning_level       INTEGER NOT NULL DEFAULT 0,
    decision_id         INTEGER,
    status              TEXT NOT NULL CHECK (status IN ('queued', 'sent', 'delivered', 'failed')),
    attempts            INTEGER NOT NULL DEFAULT 0,
    created_at          TEXT NOT NULL,
    sent_at             TEXT,
    delivered_at        TEXT
);
CREATE INDEX sms_outbox_status ON sms_outbox (status, message_id);

-- Relay commands: at most one per decision; done only when a fresh read confirms.
CREATE TABLE relay_commands (
    command_id          INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id          TEXT NOT NULL REFERENCES accounts (account_id),
    meter_id            TEXT NOT NULL REFERENCES meters (meter_id),
    decision_key        TEXT NOT NULL UNIQUE,
    command             TEXT NOT NULL CHECK (command IN ('trip', 'close-allowed', 'direct-close')),
    status              TEXT NOT NULL CHECK (status IN ('pending', 'issuing', 'awaiting-confirmation', 'awaiting-customer', 'confirmed', 'failed')),
    created_at          TEXT NOT NULL,
    deadline            TEXT NOT NULL,
    issued_at           TEXT,
    confirmed_at        TEXT,
    detail              TEXT
);
CREATE INDEX relay_commands_status ON relay_commands (status);

-- Payments, applied exactly once per (channel, channel transaction id).
CREATE TABLE payments (
    payment_id          INTEGER PRIMARY KEY AUTOINCREMENT,
    channel             TEXT NOT NULL,
    channel_txn_id      TEXT NOT NULL,
    account_id          TEXT NOT NULL REFERENCES accounts (account_id),
    amount_fen          INTEGER NOT NULL CHECK (amount_fen > 0),
    status              TEXT NOT NULL CHECK (status IN ('in-flight', 'applied')),
    initiated_at        TEXT NOT NULL,
    applied_at          TEXT,
    entry_id            INTEGER REFERENCES ledger_entries (entry_id),
    UNIQUE (channel, channel_txn_id)
);

-- Which daily job stages have completed, for catch-up without running a day twice.
CREATE TABLE job_runs (
    county              TEXT NOT NULL,
    stage               TEXT NOT NULL,
    business_date       TEXT NOT NULL,
    completed_at        TEXT NOT NULL,
    PRIMARY KEY (county, stage, business_date)
);

-- Trips the safety floor refused although a policy or an approved work order asked.
CREATE TABLE floor_refusals (
    refusal_id          INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id          TEXT NOT NULL REFERENCES accounts (account_id),
    source              TEXT NOT NULL,      -- decision:<id> | work-order:<id>
    decided_at          TEXT NOT NULL,
    protected_window    INTEGER NOT NULL,   -- 1 when a protected window was among the reasons
    refusals_json       TEXT NOT NULL
);
