-- A job's metrics (per-tensor figures included) live beside the job row and are read only
-- when one job is shown: lists, claims and heartbeats never carry them.
CREATE TABLE job_metrics (
    job_id  TEXT PRIMARY KEY NOT NULL REFERENCES jobs (id),
    metrics TEXT NOT NULL
);
INSERT INTO job_metrics (job_id, metrics) SELECT id, metrics FROM jobs WHERE metrics IS NOT NULL;
ALTER TABLE jobs DROP COLUMN metrics;
