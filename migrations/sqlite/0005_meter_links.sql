-- Issue 4: meters of every protocol a county has, and stored meter replacements.
--
-- meters.protocol and its link columns:
--   modbus-tcp  gateway (host:port) + unit_id
--   modbus-rtu  serial_port (device path) + unit_id                  (local RS485 adapter)
--   dlt645      meter_address (12 digits) + gateway (TCP serial gateway host:port)
--               or + serial_port (local RS485 adapter), exactly one of the two
--   qgdw376     meter_address + terminal (RRRR-TTTT) + terminal_port (the terminal's RS485
--               port, e.g. 31 = 1FH), read by AFN 10H F1 transparent forwarding
-- baud_rate / parity apply to serial_port links (defaults: 2400 8E1 for DL/T 645, 9600 8N1 for
-- Modbus RTU). requires_security: the meter accepts relay commands only sealed by the county's
-- security module (ESAM).
--
-- SQLite cannot change a CHECK constraint in place: the table is rebuilt (SQLite's documented
-- procedure). Db::open runs migrations with foreign keys off and checks every reference
-- (PRAGMA foreign_key_check) before turning them back on.
CREATE TABLE meters_new (
    meter_id        TEXT PRIMARY KEY,
    customer_id     TEXT NOT NULL REFERENCES customers (customer_id),
    protocol        TEXT NOT NULL CHECK (protocol IN ('modbus-tcp', 'modbus-rtu', 'dlt645', 'qgdw376')),
    gateway         TEXT,
    unit_id         INTEGER CHECK (unit_id IS NULL OR unit_id BETWEEN 0 AND 255),
    meter_address   TEXT CHECK (meter_address IS NULL OR (length(meter_address) = 12 AND meter_address NOT GLOB '*[^0-9]*')),
    terminal        TEXT,
    terminal_port   INTEGER CHECK (terminal_port IS NULL OR terminal_port BETWEEN 1 AND 255),
    serial_port     TEXT,
    baud_rate       INTEGER CHECK (baud_rate IS NULL OR baud_rate > 0),
    parity          TEXT CHECK (parity IS NULL OR parity IN ('none', 'even', 'odd')),
    requires_security INTEGER NOT NULL DEFAULT 0 CHECK (requires_security IN (0, 1)),
    ct_ratio        INTEGER NOT NULL DEFAULT 1 CHECK (ct_ratio >= 1),
    pt_ratio        INTEGER NOT NULL DEFAULT 1 CHECK (pt_ratio >= 1),
    installed_on    TEXT NOT NULL,
    CHECK (
        (protocol = 'modbus-tcp' AND gateway IS NOT NULL AND unit_id IS NOT NULL AND serial_port IS NULL AND terminal IS NULL)
     OR (protocol = 'modbus-rtu' AND serial_port IS NOT NULL AND unit_id IS NOT NULL AND gateway IS NULL AND terminal IS NULL)
     OR (protocol = 'dlt645' AND meter_address IS NOT NULL AND terminal IS NULL
         AND ((gateway IS NOT NULL AND serial_port IS NULL) OR (gateway IS NULL AND serial_port IS NOT NULL)))
     OR (protocol = 'qgdw376' AND meter_address IS NOT NULL AND terminal IS NOT NULL AND terminal_port IS NOT NULL
         AND gateway IS NULL AND serial_port IS NULL)
    )
);
INSERT INTO meters_new (meter_id, customer_id, protocol, gateway, unit_id, ct_ratio, pt_ratio, installed_on)
    SELECT meter_id, customer_id, protocol, gateway, unit_id, ct_ratio, pt_ratio, installed_on FROM meters;
DROP TABLE meters;
ALTER TABLE meters_new RENAME TO meters;

-- A meter replaced in the field (换表): the account moves to the new meter; the day of the
-- replacement is billed as (old final - old previous) + (new current - new start).
CREATE TABLE meter_replacements (
    replacement_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id          TEXT NOT NULL REFERENCES accounts (account_id),
    old_meter_id        TEXT NOT NULL UNIQUE REFERENCES meters (meter_id),
    new_meter_id        TEXT NOT NULL UNIQUE REFERENCES meters (meter_id),
    old_final_centi_kwh INTEGER NOT NULL CHECK (old_final_centi_kwh >= 0),
    new_start_centi_kwh INTEGER NOT NULL CHECK (new_start_centi_kwh >= 0),
    replaced_at         TEXT NOT NULL,      -- county-local time the old meter came off
    replaced_by         TEXT NOT NULL,      -- who did it (field engineer)
    recorded_at         TEXT NOT NULL,
    CHECK (old_meter_id <> new_meter_id)
);
CREATE INDEX meter_replacements_account ON meter_replacements (account_id, replaced_at);
CREATE TRIGGER meter_replacements_no_update BEFORE UPDATE ON meter_replacements
BEGIN SELECT RAISE(ABORT, 'meter_replacements is append-only'); END;
CREATE TRIGGER meter_replacements_no_delete BEFORE DELETE ON meter_replacements
BEGIN SELECT RAISE(ABORT, 'meter_replacements is append-only'); END;
