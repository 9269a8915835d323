-- aigw schema, version 3: Idempotency-Key. The first request with a given
-- (key, Idempotency-Key) claims the row; its answer is stored so a repeat
-- within 24 hours gets the same answer instead of running (and billing) again.
CREATE TABLE IF NOT EXISTS idempotency_keys
(
    key_id          uuid        NOT NULL,
    idempotency_key text        NOT NULL,
    request_id      uuid        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- NULL while the first request runs.
    status          int,
    body            bytea,
    PRIMARY KEY (key_id, idempotency_key)
);
