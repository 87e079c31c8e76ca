-- Tenants and API keys. Every model, dataset, job and artifact belongs to a tenant; rows that
-- predate tenants belong to 'local', the tenant of a server that runs without keys.
CREATE TABLE tenants (
    id               TEXT PRIMARY KEY NOT NULL,
    name             TEXT NOT NULL UNIQUE,
    webhook_secret   TEXT NOT NULL,
    -- NULL: the server's default for that limit.
    max_stored_bytes BIGINT,
    max_running_jobs BIGINT,
    max_queued_jobs  BIGINT,
    created_at       BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id              TEXT PRIMARY KEY NOT NULL,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    -- The first characters of the key, to tell keys apart in listings; the key itself is
    -- kept only as its SHA-256.
    prefix          TEXT NOT NULL,
    key_hash        TEXT NOT NULL UNIQUE,
    label           TEXT NOT NULL,
    rate_per_minute BIGINT,
    created_at      BIGINT NOT NULL,
    revoked_at      BIGINT
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

ALTER TABLE models ADD COLUMN tenant_id TEXT NOT NULL DEFAULT 'local';
ALTER TABLE datasets ADD COLUMN tenant_id TEXT NOT NULL DEFAULT 'local';
ALTER TABLE jobs ADD COLUMN tenant_id TEXT NOT NULL DEFAULT 'local';
ALTER TABLE artifacts ADD COLUMN tenant_id TEXT NOT NULL DEFAULT 'local';
CREATE INDEX models_tenant ON models (tenant_id, id);
CREATE INDEX datasets_tenant ON datasets (tenant_id, id);
CREATE INDEX jobs_tenant ON jobs (tenant_id, status);
CREATE INDEX models_blob ON models (blob_key);
CREATE INDEX datasets_blob ON datasets (blob_key);
CREATE INDEX artifacts_blob ON artifacts (blob_key);

-- Results cache: jobs with the same model bytes, dataset bytes and canonical pipeline.
ALTER TABLE jobs ADD COLUMN cache_key TEXT;
ALTER TABLE jobs ADD COLUMN cached_from TEXT;
CREATE INDEX jobs_cache ON jobs (tenant_id, cache_key);

-- Retention: a job may give its artifacts a time to live.
ALTER TABLE jobs ADD COLUMN artifact_ttl_ms BIGINT;
ALTER TABLE artifacts ADD COLUMN expires_at BIGINT;
CREATE INDEX artifacts_expiry ON artifacts (expires_at);

-- Webhooks: one delivery per job, made once the job is terminal (a job has one terminal
-- state), retried with backoff; the columns are the delivery's own queue.
ALTER TABLE jobs ADD COLUMN webhook_url TEXT;
ALTER TABLE jobs ADD COLUMN webhook_status TEXT;
ALTER TABLE jobs ADD COLUMN webhook_attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN webhook_next_at BIGINT;
ALTER TABLE jobs ADD COLUMN webhook_error TEXT;
CREATE INDEX jobs_webhook ON jobs (webhook_status, webhook_next_at);

-- Resumable uploads: parts arrive in any order and may be resent; completion joins them.
CREATE TABLE uploads (
    id         TEXT PRIMARY KEY NOT NULL,
    tenant_id  TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX uploads_expiry ON uploads (expires_at);

CREATE TABLE upload_parts (
    upload_id  TEXT NOT NULL REFERENCES uploads (id) ON DELETE CASCADE,
    number     BIGINT NOT NULL,
    size_bytes BIGINT NOT NULL,
    sha256     TEXT NOT NULL,
    blob_key   TEXT NOT NULL,
    PRIMARY KEY (upload_id, number)
);
