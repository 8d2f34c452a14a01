-- Messages (issue 5): a second contact on the agreement, retries with backoff, daily
-- de-duplication, delivery receipts. Same conventions as 0001 (times TEXT county-local).

-- 费控协议: a second contact (e.g. a relative of an elderly customer) who also gets the
-- warnings and disconnection notices. NULL when the agreement names none.
ALTER TABLE agreements ADD COLUMN second_mobile TEXT;

-- One outbox row per notice and recipient. `notice_key` is the notice's de-duplication
-- key shared by the rows of both contacts; `dedup_key` (unique) is it plus '#second'
-- for the second contact's row. `day_key` (unique where set) is
-- '<account>:<kind>:<date>:<contact>' for kinds sent at most once a day.
ALTER TABLE sms_outbox ADD COLUMN contact TEXT NOT NULL DEFAULT 'primary' CHECK (contact IN ('primary', 'second'));
ALTER TABLE sms_outbox ADD COLUMN notice_key TEXT;
ALTER TABLE sms_outbox ADD COLUMN day_key TEXT;
-- Segments the body takes (GSM 7-bit or UCS-2, 3GPP TS 23.040).
ALTER TABLE sms_outbox ADD COLUMN segments INTEGER NOT NULL DEFAULT 1;
-- Delivery round: the idempotency key sent to the gateway is 'sms-<message_id>-<round>';
-- a new round starts only after a failed or missing delivery receipt.
ALTER TABLE sms_outbox ADD COLUMN send_round INTEGER NOT NULL DEFAULT 1;
ALTER TABLE sms_outbox ADD COLUMN next_attempt_at TEXT;
ALTER TABLE sms_outbox ADD COLUMN last_attempt_at TEXT;
ALTER TABLE sms_outbox ADD COLUMN gateway_message_id TEXT;
ALTER TABLE sms_outbox ADD COLUMN last_error TEXT;
ALTER TABLE sms_outbox ADD COLUMN failed_at TEXT;
-- The offline follow-up work order (抄收员线下催费) opened when delivery failed for good.
ALTER TABLE sms_outbox ADD COLUMN follow_up_work_order_id INTEGER;
CREATE UNIQUE INDEX sms_outbox_day_key ON sms_outbox (day_key);
CREATE INDEX sms_outbox_notice ON sms_outbox (notice_key);

-- Every delivery receipt that passed authentication, with what it did. Never updated.
CREATE TABLE sms_receipts (
    receipt_id          INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key     TEXT NOT NULL,
    message_id          INTEGER,            -- NULL when the key names no outbox row
    send_round          INTEGER,
    gateway_message_id  TEXT,
    status              TEXT NOT NULL,      -- delivered | failed | expired | rejected
    error_code          TEXT,
    reported_at         TEXT,               -- the gateway's time, as it sent it
    received_at         TEXT NOT NULL,
    outcome             TEXT NOT NULL CHECK (outcome IN ('applied', 'duplicate', 'stale', 'unknown-message'))
);
CREATE INDEX sms_receipts_message ON sms_receipts (message_id);
CREATE TRIGGER sms_receipts_no_update BEFORE UPDATE ON sms_receipts
BEGIN SELECT RAISE(ABORT, 'sms_receipts is append-only'); END;
CREATE TRIGGER sms_receipts_no_delete BEFORE DELETE ON sms_receipts
BEGIN SELECT RAISE(ABORT, 'sms_receipts is append-only'); END;
