-- The W3C traceparent of the request that submitted the job (when traces are on): the worker
-- that claims the job, on any host, continues that trace.
ALTER TABLE jobs ADD COLUMN trace_parent TEXT;
