-- An approval of a disconnection can be withdrawn before it is executed
-- (`cutoff::withdraw_approval`): the order goes from approved to held, `decided_by` /
-- `decided_at` keep the approver, and these record who withdrew it and when (county
-- local time, as the other work-order times). Null on every order never withdrawn.
ALTER TABLE work_orders ADD COLUMN withdrawn_by TEXT;
ALTER TABLE work_orders ADD COLUMN withdrawn_at TEXT;
