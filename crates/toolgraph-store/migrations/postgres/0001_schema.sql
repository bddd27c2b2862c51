-- toolgraph schema v1 (postgres). Times are milliseconds: *_at since the Unix epoch,
-- *_ms since the execution began. JSON is stored as text.

CREATE TABLE sessions (
    id          TEXT PRIMARY KEY,
    created_at  BIGINT NOT NULL,
    label       TEXT
);

CREATE TABLE executions (
    id                  TEXT PRIMARY KEY,
    session_id          TEXT REFERENCES sessions(id) ON DELETE SET NULL,
    created_at          BIGINT NOT NULL,
    finished_at         BIGINT,
    status              TEXT NOT NULL,          -- running | finished
    config              TEXT NOT NULL,          -- the executor configuration, JSON
    call_count          BIGINT NOT NULL,
    success             BIGINT,                   -- 0 / 1 once finished
    makespan_ms         DOUBLE PRECISION,
    sequential_ms       DOUBLE PRECISION,
    speedup             DOUBLE PRECISION,
    critical_path_ms    DOUBLE PRECISION,
    efficiency          DOUBLE PRECISION,
    resumed_count       BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX executions_created ON executions (created_at);

CREATE TABLE batches (
    execution_id    TEXT NOT NULL REFERENCES executions(id) ON DELETE CASCADE,
    level           BIGINT NOT NULL,
    call_count      BIGINT NOT NULL,
    started_ms      DOUBLE PRECISION,
    finished_ms     DOUBLE PRECISION,
    PRIMARY KEY (execution_id, level)
);

CREATE TABLE tool_calls (
    execution_id    TEXT NOT NULL REFERENCES executions(id) ON DELETE CASCADE,
    position        BIGINT NOT NULL,
    call_id         TEXT NOT NULL,
    tool            TEXT NOT NULL,
    arguments       TEXT NOT NULL,              -- as given (references unresolved), JSON
    depends_on      TEXT NOT NULL,              -- JSON array of ids
    priority        BIGINT NOT NULL,
    timeout_ms      BIGINT,
    level           BIGINT NOT NULL,
    status          TEXT NOT NULL,              -- pending | running | ok | error | timeout | skipped | cancelled | interrupted
    attempts        BIGINT NOT NULL DEFAULT 0,
    queued_ms       DOUBLE PRECISION,
    started_ms      DOUBLE PRECISION,
    finished_ms     DOUBLE PRECISION,
    duration_ms     DOUBLE PRECISION,
    started_at      BIGINT,
    finished_at     BIGINT,
    error_kind      TEXT,
    error_message   TEXT,
    PRIMARY KEY (execution_id, position)
);
CREATE INDEX tool_calls_tool ON tool_calls (tool, finished_at);
CREATE INDEX tool_calls_status ON tool_calls (execution_id, status);

CREATE TABLE tool_results (
    execution_id    TEXT NOT NULL,
    position        BIGINT NOT NULL,
    output          TEXT NOT NULL,              -- JSON
    size_bytes      BIGINT NOT NULL,
    PRIMARY KEY (execution_id, position),
    FOREIGN KEY (execution_id, position) REFERENCES tool_calls(execution_id, position) ON DELETE CASCADE
);

CREATE TABLE dependency_edges (
    execution_id    TEXT NOT NULL REFERENCES executions(id) ON DELETE CASCADE,
    from_position   BIGINT NOT NULL,
    to_position     BIGINT NOT NULL,
    reason          TEXT NOT NULL,
    PRIMARY KEY (execution_id, from_position, to_position)
);

CREATE TABLE performance_metrics (
    execution_id    TEXT NOT NULL REFERENCES executions(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,              -- parallel_speedup, parallel_execution_time_ms, ...
    value           DOUBLE PRECISION NOT NULL,
    unit            TEXT NOT NULL,
    metadata        TEXT NOT NULL,              -- JSON
    recorded_at     BIGINT NOT NULL,
    PRIMARY KEY (execution_id, name)
);
CREATE INDEX performance_metrics_name ON performance_metrics (name, recorded_at);
