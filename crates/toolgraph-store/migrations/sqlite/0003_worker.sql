-- The worker process that ran a call (distributed execution); NULL when it ran in the
-- process that recorded it.
ALTER TABLE tool_calls ADD COLUMN worker TEXT;
