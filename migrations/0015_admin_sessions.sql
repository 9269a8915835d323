-- aigw schema, version 15: admin UI sessions (single sign-on) and the
-- sign-in history.
--
-- `admin_sessions` holds one row per signed-in browser: the SHA-256 of its
-- cookie's secret (never the secret), so every replica finds it with one
-- indexed lookup, and ending it (logout, a disabled user) is seen by all.
-- `admin_sign_ins` is the sign-in history, one row per sign-in event
-- (success, failure, session end), folded from the sign-in aggregate's
-- events; `seq` orders and pages it.
CREATE TABLE IF NOT EXISTS admin_sessions
(
    id           uuid PRIMARY KEY,
    secret_hash  text        NOT NULL UNIQUE,
    user_id      uuid        NOT NULL,
    created_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    ended_at     timestamptz
);
CREATE INDEX IF NOT EXISTS admin_sessions_live_by_user ON admin_sessions (user_id) WHERE ended_at IS NULL;

CREATE TABLE IF NOT EXISTS admin_sign_ins
(
    seq        bigserial PRIMARY KEY,
    sign_in_id uuid        NOT NULL,
    -- `succeeded`, `failed` or `ended`.
    kind       text        NOT NULL,
    user_id    uuid,
    email      text,
    method     text        NOT NULL,
    reason     text,
    ip         text,
    user_agent text,
    at         timestamptz NOT NULL,
    UNIQUE (sign_in_id, kind)
);
