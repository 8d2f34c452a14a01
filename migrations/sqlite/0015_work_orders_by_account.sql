-- Work orders by account: a payment's reconnection and the relays job's sweep both ask
-- "is a call-before-reconnection order open for this account?"; without this index each
-- question scans every work order the county ever opened.
CREATE INDEX work_orders_account ON work_orders (account_id, kind, status);
