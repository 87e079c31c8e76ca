-- The x-request-id of the request that submitted the job: the job's log lines carry it, so
-- that a client's request id leads to the job's whole log.
ALTER TABLE jobs ADD COLUMN request_id TEXT;
