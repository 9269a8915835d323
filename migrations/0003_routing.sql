-- Routing aliases (e.g. `fast` -> several provider + model targets), folded
-- from alias events like keys and providers. The name is the aggregate id.
CREATE TABLE IF NOT EXISTS aliases
(
    name       text        PRIMARY KEY,
    spec       jsonb       NOT NULL,
    removed    boolean     NOT NULL,
    updated_at timestamptz NOT NULL,
    version    bigint      NOT NULL
);
