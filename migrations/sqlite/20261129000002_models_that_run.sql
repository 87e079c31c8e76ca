-- Models that run: an optional architecture per model, datasets, and jobs that use them.
ALTER TABLE models ADD COLUMN architecture TEXT;
-- An uploaded config.json (e.g. Hugging Face), written beside compressed artifacts.
ALTER TABLE models ADD COLUMN config TEXT;

CREATE TABLE datasets (
    id         TEXT PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    sha256     TEXT NOT NULL,
    summary    TEXT NOT NULL,
    blob_key   TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

ALTER TABLE jobs ADD COLUMN dataset_id TEXT;
-- What a long step is doing now (round, epoch, accuracy), as JSON.
ALTER TABLE jobs ADD COLUMN progress_detail TEXT;
CREATE INDEX jobs_dataset ON jobs (dataset_id);
