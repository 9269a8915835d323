-- aigw schema, version 2: billing, hourly usage and the request log, all
-- folded by the projector from request events in the same transaction as its
-- checkpoint. The projector starts over from the beginning of the history so
-- the new views cover every request already recorded.

-- Billing per key, month (its first day) and model: what a key is charged.
CREATE TABLE IF NOT EXISTS billing_monthly
(
    key_id            uuid   NOT NULL,
    month             date   NOT NULL,
    model             text   NOT NULL,
    requests          bigint NOT NULL DEFAULT 0,
    errors            bigint NOT NULL DEFAULT 0,
    prompt_tokens     bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    -- Micro-dollars, with the price in force when each request ran.
    cost_micros       bigint NOT NULL DEFAULT 0,
    unpriced_requests bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, month, model)
);

-- Usage per key, hour, provider and model. `provider` is empty for requests
-- that failed without any provider answering for them.
CREATE TABLE IF NOT EXISTS usage_hourly
(
    key_id            uuid        NOT NULL,
    hour              timestamptz NOT NULL,
    provider          text        NOT NULL,
    model             text        NOT NULL,
    requests          bigint      NOT NULL DEFAULT 0,
    errors            bigint      NOT NULL DEFAULT 0,
    prompt_tokens     bigint      NOT NULL DEFAULT 0,
    completion_tokens bigint      NOT NULL DEFAULT 0,
    cost_micros       bigint      NOT NULL DEFAULT 0,
    unpriced_requests bigint      NOT NULL DEFAULT 0,
    latency_ms_total  bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, hour, provider, model)
);

-- One row per request (never its body). Columns fill in as the request's
-- events arrive; a request's events may span two projector batches.
CREATE TABLE IF NOT EXISTS request_log
(
    id                uuid PRIMARY KEY,
    at                timestamptz,
    finished_at       timestamptz,
    key_id            uuid,
    model             text,
    provider          text,
    attempts          int    NOT NULL DEFAULT 0,
    status            text,
    http_status       int,
    error_type        text,
    prompt_tokens     bigint,
    completion_tokens bigint,
    cost_micros       bigint,
    latency_ms        bigint,
    stream            boolean,
    estimated         boolean
);
CREATE INDEX IF NOT EXISTS request_log_key_id ON request_log (key_id, id);
CREATE INDEX IF NOT EXISTS request_log_finished_at ON request_log (finished_at);

-- Project everything again from the start of the history.
DELETE FROM projector_checkpoints WHERE name = 'views';
TRUNCATE usage_daily;
