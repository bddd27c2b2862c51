-- An execution is run by one process at a time: its owner and that owner's last heartbeat
-- (ms since the Unix epoch). No owner: nobody runs it (finished, or never claimed).
ALTER TABLE executions ADD COLUMN owner TEXT;
ALTER TABLE executions ADD COLUMN heartbeat_at BIGINT;
