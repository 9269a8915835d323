-- aigw schema, version 8: open jobs by key.
--
-- A key may have at most AIGW_MAX_QUEUED_JOBS_PER_KEY jobs queued or
-- running; each submission counts them (up to the cap) with this index, so
-- the count reads only the key's open jobs, never its finished history.
CREATE INDEX IF NOT EXISTS jobs_open_by_key ON jobs (key_id) WHERE status IN ('queued', 'running');
