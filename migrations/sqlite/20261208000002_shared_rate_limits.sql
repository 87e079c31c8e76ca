-- Per-key request rates, shared by every API replica: the key's theoretical arrival time
-- (GCRA), in Unix microseconds by the database's clock.
CREATE TABLE rate_limits (
    key_id TEXT PRIMARY KEY NOT NULL,
    tat    BIGINT NOT NULL
);
