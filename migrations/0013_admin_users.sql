-- aigw schema, version 13: admin users and their personal admin API tokens.
--
-- `admin_users` are registry rows folded from the admin user aggregate's
-- events (like `teams`); `admin_tokens` maps each token's hash (never its
-- secret) to its user, so a token made a moment ago on another replica is
-- found by one indexed lookup. A token's state (expiry, revocation) is in
-- its user's `state`: this table is only the index.
CREATE TABLE IF NOT EXISTS admin_users
(
    id         uuid PRIMARY KEY,
    name       text        NOT NULL,
    email      text        NOT NULL,
    disabled   boolean     NOT NULL DEFAULT false,
    -- The whole folded state (roles, tokens' hashes and expiries).
    state      jsonb       NOT NULL,
    created_at timestamptz NOT NULL,
    version    bigint      NOT NULL
);
CREATE INDEX IF NOT EXISTS admin_users_email ON admin_users (lower(email));

CREATE TABLE IF NOT EXISTS admin_tokens
(
    token_hash text PRIMARY KEY,
    user_id    uuid NOT NULL,
    token_id   uuid NOT NULL
);
