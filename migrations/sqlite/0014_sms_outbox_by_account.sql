-- The outbox by account: the warning stage's "a warning of this kind still on its way"
-- and "level already notified", and the safety floor's "arrears notice delivered", all
-- look up one account's messages. Without this index they scan every queued or
-- delivered message of every account (a county's settlement batch did so once per batch).
CREATE INDEX sms_outbox_account ON sms_outbox (account_id, kind, status);
