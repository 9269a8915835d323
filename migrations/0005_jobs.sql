-- aigw schema, version 5: async jobs.
--
-- A job's truth is its events (aggregate type `job`); this table is their
-- fold, written in the same transaction as each event under a row lock, so
-- listing and polling never lag behind and two writers (a cancelling caller
-- and a finishing dispatcher) take turns. `version` is the job's last event
-- sequence.
CREATE TABLE IF NOT EXISTS jobs
(
    id              uuid PRIMARY KEY,
    key_id          uuid        NOT NULL,
    status          text        NOT NULL,
    model           text        NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    -- The caller's Idempotency-Key, cleared once older than 24 hours.
    idempotency_key text,
    state           jsonb       NOT NULL,
    version         bigint      NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_key ON jobs (key_id, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_by_time ON jobs (created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_open ON jobs (created_at) WHERE status IN ('queued', 'running');
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs (key_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
