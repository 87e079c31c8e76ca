-- Timestamps are milliseconds since the Unix epoch (UTC); JSON columns hold text.
CREATE TABLE models (
    id              TEXT PRIMARY KEY NOT NULL,
    name            TEXT NOT NULL,
    format          TEXT NOT NULL,
    size_bytes      BIGINT NOT NULL,
    sha256          TEXT NOT NULL,
    tensor_count    BIGINT NOT NULL,
    parameter_count BIGINT NOT NULL,
    tensors         TEXT NOT NULL,
    metadata        TEXT NOT NULL,
    blob_key        TEXT NOT NULL,
    created_at      BIGINT NOT NULL
);

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY NOT NULL,
    model_id         TEXT NOT NULL,
    pipeline         TEXT NOT NULL,
    status           TEXT NOT NULL,
    progress         DOUBLE PRECISION NOT NULL DEFAULT 0,
    error            TEXT,
    attempts         BIGINT NOT NULL DEFAULT 0,
    max_attempts     BIGINT NOT NULL,
    metrics          TEXT,
    idempotency_key  TEXT UNIQUE,
    request_hash     TEXT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    lease_token      TEXT,
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    run_after        BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX jobs_claimable ON jobs (status, run_after);
CREATE INDEX jobs_model ON jobs (model_id);

CREATE TABLE artifacts (
    id           TEXT PRIMARY KEY NOT NULL,
    job_id       TEXT NOT NULL REFERENCES jobs (id),
    kind         TEXT NOT NULL,
    file_name    TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size_bytes   BIGINT NOT NULL,
    sha256       TEXT NOT NULL,
    blob_key     TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX artifacts_job ON artifacts (job_id);
