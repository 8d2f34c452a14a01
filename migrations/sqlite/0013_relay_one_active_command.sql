-- At most one relay command in flight per account, as a constraint: the relay, cutoff
-- and reconnection paths check for one (and on PostgreSQL lock the account row) before
-- inserting; this index makes a writer that raced past the check fail instead of
-- issuing a second command. "In flight" is every status that is not final, as in
-- relay::has_active_command.
--
-- A database that already holds two commands in flight for one account (what the index
-- forbids) keeps the newest; the older ones are marked failed with a reason, so the
-- upgrade goes through and a person sees them (`GET /api/v1/relay-commands`).
UPDATE relay_commands
SET status = 'failed',
    detail = 'migration 0013: another command was in flight for this account; check the meter''s relay state'
WHERE status IN ('pending', 'issuing', 'awaiting-confirmation', 'awaiting-customer')
  AND command_id NOT IN (
      SELECT MAX(command_id) FROM relay_commands
      WHERE status IN ('pending', 'issuing', 'awaiting-confirmation', 'awaiting-customer')
      GROUP BY account_id);
CREATE UNIQUE INDEX relay_commands_one_active ON relay_commands (account_id)
    WHERE status IN ('pending', 'issuing', 'awaiting-confirmation', 'awaiting-customer');
