-- The outbox's queue: the sender takes `status = 'queued'` messages in message_id order,
-- and /metrics counts them. A partial index holds only those rows (a few thousand on a
-- busy morning) where the full (status, message_id) index of 0001 held every message ever
-- sent. It also removes a trap: with the full index a planner whose statistics were taken
-- while the outbox held only delivered messages judged `status IN ('queued', 'sent')`
-- nearly empty and answered the warning stage's per-account look-ups through it, reading
-- every queued message of the county once per batch (a million accounts: 106 ms a batch
-- and growing). The partial index cannot serve those look-ups, so they take
-- sms_outbox_account (0014), whatever the statistics say.
DROP INDEX sms_outbox_status;
CREATE INDEX sms_outbox_queue ON sms_outbox (message_id) WHERE status = 'queued';
