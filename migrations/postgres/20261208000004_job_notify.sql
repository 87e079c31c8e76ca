-- Every change a job's followers see (status, attempt, progress) and its deletion is announced
-- on the channel `compressd_jobs` with the job's id: event streams on any API replica wake at
-- once instead of polling. Heartbeats and lease renewals change none of these and stay quiet.
CREATE FUNCTION compressd_job_changed() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('compressd_jobs', OLD.id);
    ELSE
        PERFORM pg_notify('compressd_jobs', NEW.id);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER jobs_changed AFTER UPDATE ON jobs FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          OR OLD.attempts IS DISTINCT FROM NEW.attempts
          OR OLD.progress IS DISTINCT FROM NEW.progress
          OR OLD.progress_detail IS DISTINCT FROM NEW.progress_detail)
    EXECUTE FUNCTION compressd_job_changed();

CREATE TRIGGER jobs_deleted AFTER DELETE ON jobs FOR EACH ROW
    EXECUTE FUNCTION compressd_job_changed();
