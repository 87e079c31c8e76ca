-- A job's own log lines (its process's, and the worker's about its attempts), for
-- GET /v1/jobs/{id}/logs. Removed with the job.
CREATE TABLE job_logs (
    job_id  TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    seq     BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    at      BIGINT NOT NULL,
    line    TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);
