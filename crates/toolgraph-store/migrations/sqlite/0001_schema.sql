-- toolgraph schema v1 (sqlite). Times are milliseconds: *_at since the Unix epoch,
-- *_ms since the execution began. JSON is stored as text.

CREATE TABLE sessions (
    id          TEXT PRIMARY KEY,
    created_at  INTEGER NOT NULL,
    label       TEXT
);

CREATE TABLE executions (
    id                  TEXT PRIMARY KEY,
    session_id          TEXT REFERENCES sessions(id) ON DELETE SET NULL,
    created_at          INTEGER NOT NULL,
    finished_at         INTEGER,
    status              TEXT NOT NULL,          -- running | finished
    config              TEXT NOT NULL,          -- the executor configuration, JSON
    call_count          INTEGER NOT NULL,
    success             INTEGER,                   -- 0 / 1 once finished
    makespan_ms         REAL,
    sequential_ms       REAL,
    speedup             REAL,
    critical_path_ms    REAL,
    efficiency          REAL,
    resumed_count       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX executions_created ON executions (created_at);

CREATE TABLE batches (
    execution_id    TEXT NOT NULL REFERENCES executions(id) ON DELETE CASCADE,
    level           INTEGER NOT NULL,
    call_count      INTEGER NOT NULL,
    started_ms      REAL,
    finished_ms     REAL,
    PRIMARY KEY (execution_id, level)
);

CREATE TABLE tool_calls (
    execution_id    TEXT NOT NULL REFERENCES executions(id) ON DELETE CASCADE,
    position        INTEGER NOT NULL,
    call_id         TEXT NOT NULL,
    tool            TEXT NOT NULL,
    arguments       TEXT NOT NULL,              -- as given (references unresolved), JSON
    depends_on      TEXT NOT NULL,              -- JSON array of ids
    priority        INTEGER NOT NULL,
    timeout_ms      INTEGER,
    level           INTEGER NOT NULL,
    status          TEXT NOT NULL,              -- pending | running | ok | error | timeout | skipped | cancelled | interrupted
    attempts        INTEGER NOT NULL DEFAULT 0,
    queued_ms       REAL,
    started_ms      REAL,
    finished_ms     REAL,
    duration_ms     REAL,
    started_at      INTEGER,
    finished_at     INTEGER,
    error_kind      TEXT,
    error_message   TEXT,
    PRIMARY KEY (execution_id, position)
);
CREATE INDEX tool_calls_tool ON tool_calls (tool, finished_at);
CREATE INDEX tool_calls_status ON tool_calls (execution_id, status);

CREATE TABLE tool_results (
    execution_id    TEXT NOT NULL,
    position        INTEGER NOT NULL,
    output          TEXT NOT NULL,              -- JSON
    size_bytes      INTEGER NOT NULL,
    PRIMARY KEY (execution_id, position),
    FOREIGN KEY (execution_id, position) REFERENCES tool_calls(execution_id, position) ON DELETE CASCADE
);

CREATE TABLE dependency_edges (
    execution_id    TEXT NOT NULL REFERENCES executions(id) ON DELETE CASCADE,
    from_position   INTEGER NOT NULL,
    to_position     INTEGER NOT NULL,
    reason          TEXT NOT NULL,
    PRIMARY KEY (execution_id, from_position, to_position)
);

CREATE TABLE performance_metrics (
    execution_id    TEXT NOT NULL REFERENCES executions(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,              -- parallel_speedup, parallel_execution_time_ms, ...
    value           REAL NOT NULL,
    unit            TEXT NOT NULL,
    metadata        TEXT NOT NULL,              -- JSON
    recorded_at     INTEGER NOT NULL,
    PRIMARY KEY (execution_id, name)
);
CREATE INDEX performance_metrics_name ON performance_metrics (name, recorded_at);
