-- aigw schema, version 12: attribution in the request log, and budget alerts.
--
-- `user_id` and `tags` are the end user and tags a caller attributed a
-- request to (`x-aigw-user` or `user`, `x-aigw-tags` or `metadata.tags`),
-- from the request's outcome event. Requests projected before this
-- migration had none to record: no replay is needed.
ALTER TABLE request_log
    ADD COLUMN IF NOT EXISTS user_id text,
    ADD COLUMN IF NOT EXISTS tags    text[];
-- Filters by tag (`tags @> ARRAY[$1]`) and by user, newest first.
CREATE INDEX IF NOT EXISTS request_log_tags ON request_log USING gin (tags);
CREATE INDEX IF NOT EXISTS request_log_user_id ON request_log (user_id, id)
    WHERE user_id IS NOT NULL;
-- Billing by dimension scans a time range of finished requests. Only
-- fixed-width columns are included: a text column in an index row makes a
-- request whose model or user is long enough (btree rows hold at most
-- 2704 bytes) unwritable, which would quarantine its events.
CREATE INDEX IF NOT EXISTS request_log_finished_at_billing ON request_log (finished_at)
    INCLUDE (key_id, project_id, team_id, status, cost_micros);

-- Budget alerts: one row per `BudgetThresholdCrossed` event (the event is
-- the truth; this row, written in the same transaction, is the outbox that
-- delivers it to the admin's webhook and the list `GET /admin/api/alerts`
-- reads). `id` is the alert aggregate's id,
-- `alert:<level>:<target>:<period>:<threshold>`.
CREATE TABLE IF NOT EXISTS budget_alerts
(
    id              text PRIMARY KEY,
    level           text        NOT NULL,
    target_id       uuid        NOT NULL,
    period          text        NOT NULL,
    threshold       int         NOT NULL,
    spent_micros    bigint      NOT NULL,
    budget_micros   bigint      NOT NULL,
    at              timestamptz NOT NULL,
    -- Delivery: attempts so far, when the next one is due, the last
    -- answer, and when a 2xx acknowledged it (NULL: not yet).
    attempts        int         NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_status     int,
    last_error      text,
    delivered_at    timestamptz
);
CREATE INDEX IF NOT EXISTS budget_alerts_due ON budget_alerts (next_attempt_at)
    WHERE delivered_at IS NULL;
CREATE INDEX IF NOT EXISTS budget_alerts_target ON budget_alerts (target_id, at DESC);
CREATE INDEX IF NOT EXISTS budget_alerts_at ON budget_alerts (at DESC);
