-- Conversations (`toolgraph chat`): a session's transcript, turn by turn. `label` (from
-- 0001) holds the session's title: its first prompt, shortened. The totals are kept up to
-- date by each turn's write, so listing sessions reads one row per session.
ALTER TABLE sessions ADD COLUMN provider TEXT;
ALTER TABLE sessions ADD COLUMN model TEXT;
ALTER TABLE sessions ADD COLUMN system_prompt TEXT;
ALTER TABLE sessions ADD COLUMN updated_at INTEGER;
ALTER TABLE sessions ADD COLUMN turn_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN input_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN output_tokens INTEGER NOT NULL DEFAULT 0;
CREATE INDEX sessions_updated ON sessions (updated_at);

-- One row per turn (a prompt and everything until the answer, or until it was cancelled
-- or failed): the messages it added to the conversation, in the provider's shape, as a
-- JSON array. A turn's executions are the session's executions created between its
-- started_at and finished_at.
CREATE TABLE session_turns (
    session_id      TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    turn            INTEGER NOT NULL,           -- 1, 2, … in the order they were asked
    started_at      INTEGER NOT NULL,
    finished_at     INTEGER NOT NULL,
    status          TEXT NOT NULL,              -- answered | unanswered | cancelled | failed
    model           TEXT NOT NULL,
    prompt          TEXT NOT NULL,
    answer          TEXT NOT NULL,
    messages        TEXT NOT NULL,              -- JSON array
    input_tokens    INTEGER NOT NULL,
    output_tokens   INTEGER NOT NULL,
    PRIMARY KEY (session_id, turn)
);
