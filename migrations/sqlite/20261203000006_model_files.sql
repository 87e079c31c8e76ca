-- The files of a Hugging Face folder beside its weights (tokenizer, generation config,
-- sentence-transformers modules, ...): kept with the model and returned with its artifacts.
-- The weights themselves are the model's blob (shards joined into one safetensors file);
-- config.json is the model's config column.
CREATE TABLE model_files (
    model_id   TEXT NOT NULL REFERENCES models (id),
    path       TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    sha256     TEXT NOT NULL,
    blob_key   TEXT NOT NULL,
    PRIMARY KEY (model_id, path)
);
CREATE INDEX model_files_blob ON model_files (blob_key);
