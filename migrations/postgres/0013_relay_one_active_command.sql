-- At most one relay command in flight per account, as a constraint: the relay, cutoff
-- and reconnection paths check for one (and on PostgreSQL lock the account row) before
-- inserting; this index makes a writer that raced past the check fail instead of
-- issuing a second command. "In flight" is every status that is not final, as in
-- relay::has_active_command.
CREATE UNIQUE INDEX relay_commands_one_active ON relay_commands (account_id)
    WHERE status IN ('pending', 'issuing', 'awaiting-confirmation', 'awaiting-customer');
