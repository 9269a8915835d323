-- aigw schema, version 1.
--
-- `events` is postgres-es's table plus two columns the projector needs to
-- follow the history without gaps: `pos` (insertion order) and `txid`, the
-- writing transaction. Rows whose transaction is older than the oldest one
-- still running can no longer change, so the projector reads in
-- (txid, pos) order up to that horizon and never misses a late commit.
CREATE TABLE IF NOT EXISTS events
(
    aggregate_type text                         NOT NULL,
    aggregate_id   text                         NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text                         NOT NULL,
    event_version  text                         NOT NULL,
    payload        json                         NOT NULL,
    metadata       json                         NOT NULL,
    pos            bigserial                    NOT NULL,
    txid           xid8                         NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);
CREATE INDEX IF NOT EXISTS events_txid_pos ON events (txid, pos);

-- postgres-es expects it; aigw takes no snapshots (see the stack notes).
CREATE TABLE IF NOT EXISTS snapshots
(
    aggregate_type   text                                 NOT NULL,
    aggregate_id     text                                 NOT NULL,
    last_sequence    bigint CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload          json                                 NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);

-- Current state of keys and providers, folded from their events. Written by
-- the admin API right after a command and by the projector; `version` (the
-- aggregate's last sequence) keeps the newer state when both race.
CREATE TABLE IF NOT EXISTS api_keys
(
    id         uuid PRIMARY KEY,
    name       text        NOT NULL,
    key_hash   text        NOT NULL UNIQUE,
    -- A rotated-out secret that still works until its grace period ends.
    previous_hash text,
    prefix     text        NOT NULL,
    status     text        NOT NULL,
    -- The whole folded state (settings, limits, scopes, top-ups).
    state      jsonb       NOT NULL,
    created_at timestamptz NOT NULL,
    revoked_at timestamptz,
    version    bigint      NOT NULL
);

CREATE TABLE IF NOT EXISTS providers
(
    id         uuid PRIMARY KEY,
    name       text        NOT NULL,
    spec       jsonb       NOT NULL,
    removed    boolean     NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version    bigint      NOT NULL
);

-- Where each projection has got to in the history, updated in the same
-- transaction as the views it feeds.
CREATE TABLE IF NOT EXISTS projector_checkpoints
(
    name text   PRIMARY KEY,
    txid xid8   NOT NULL,
    pos  bigint NOT NULL
);

-- Usage per key, day and model, from request events.
CREATE TABLE IF NOT EXISTS usage_daily
(
    key_id              uuid   NOT NULL,
    day                 date   NOT NULL,
    model               text   NOT NULL,
    requests            bigint NOT NULL DEFAULT 0,
    errors              bigint NOT NULL DEFAULT 0,
    prompt_tokens       bigint NOT NULL DEFAULT 0,
    completion_tokens   bigint NOT NULL DEFAULT 0,
    estimated_requests  bigint NOT NULL DEFAULT 0,
    latency_ms_total    bigint NOT NULL DEFAULT 0,
    -- Cost in micro-dollars of the priced requests.
    cost_micros         bigint NOT NULL DEFAULT 0,
    -- Requests of a model with no price: served, never billed as $0 silently.
    unpriced_requests   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, day, model)
);
