-- Timestamps are milliseconds since the Unix epoch (UTC); JSON columns hold text.
CREATE TABLE models (
    id              TEXT PRIMARY KEY NOT NULL,
    name            TEXT NOT NULL,
    format          TEXT NOT NULL,
    size_bytes      INTEGER NOT NULL,
    sha256          TEXT NOT NULL,
    tensor_count    INTEGER NOT NULL,
    parameter_count INTEGER NOT NULL,
    tensors         TEXT NOT NULL,
    metadata        TEXT NOT NULL,
    blob_key        TEXT NOT NULL,
    created_at      INTEGER NOT NULL
);

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY NOT NULL,
    model_id         TEXT NOT NULL,
    pipeline         TEXT NOT NULL,
    status           TEXT NOT NULL,
    progress         REAL NOT NULL DEFAULT 0,
    error            TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    metrics          TEXT,
    idempotency_key  TEXT UNIQUE,
    request_hash     TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    lease_token      TEXT,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    run_after        INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX jobs_claimable ON jobs (status, run_after);
CREATE INDEX jobs_model ON jobs (model_id);

CREATE TABLE artifacts (
    id           TEXT PRIMARY KEY NOT NULL,
    job_id       TEXT NOT NULL REFERENCES jobs (id),
    kind         TEXT NOT NULL,
    file_name    TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size_bytes   INTEGER NOT NULL,
    sha256       TEXT NOT NULL,
    blob_key     TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE INDEX artifacts_job ON artifacts (job_id);
