-- Who released a hold, so a bad reading's span is billed only after a person looked at it.
ALTER TABLE holds ADD COLUMN released_by TEXT;
