-- The outbox job's "payment received" sweep reads the channel payments applied in the
-- last two days at every run (`Host::notify_channel_payments`): an index, so the sweep
-- does not scan the whole inbox every five minutes.
CREATE INDEX payment_inbox_applied ON payment_inbox (applied_at);
