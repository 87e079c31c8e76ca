-- A webhook delivery being sent: until then no other sender takes it, and a tenant has only
-- so many in flight at once (one slow receiver must not hold up the others).
ALTER TABLE jobs ADD COLUMN webhook_claimed_until BIGINT;
-- Fair share: the claim serves first the tenant whose latest job started longest ago.
CREATE INDEX jobs_tenant_started ON jobs (tenant_id, started_at);
-- One completion at a time per resumable upload (parallel completions made one model each).
ALTER TABLE uploads ADD COLUMN completing_until BIGINT;
-- A file about to be stored: reserved (counted against the tenant's storage, and kept from
-- any delete or sweep) from before its bytes are put until the row that names it is written.
CREATE TABLE blob_reservations (
    id         TEXT PRIMARY KEY NOT NULL,
    tenant_id  TEXT NOT NULL,
    blob_key   TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX blob_reservations_key ON blob_reservations (blob_key);
CREATE INDEX blob_reservations_tenant ON blob_reservations (tenant_id);
CREATE INDEX blob_reservations_expiry ON blob_reservations (expires_at);
