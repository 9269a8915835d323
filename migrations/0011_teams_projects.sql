-- aigw schema, version 11: teams and projects.
--
-- `teams` and `projects` are registry rows folded from the team and
-- project aggregates' events (like `api_keys`); a key names its project in
-- its state (`settings.project_id`). The request log records the key's
-- project and team as of each request (from the outcome event), so a
-- project's or team's spend in a budget period can be read back when its
-- limits entry is lost. Rows projected before this migration have none.
CREATE TABLE IF NOT EXISTS teams
(
    id         uuid PRIMARY KEY,
    name       text        NOT NULL,
    deleted    boolean     NOT NULL DEFAULT false,
    -- The whole folded state (name, limits, scopes).
    state      jsonb       NOT NULL,
    created_at timestamptz NOT NULL,
    version    bigint      NOT NULL
);
CREATE INDEX IF NOT EXISTS teams_name ON teams (name);

CREATE TABLE IF NOT EXISTS projects
(
    id         uuid PRIMARY KEY,
    team_id    uuid        NOT NULL,
    name       text        NOT NULL,
    deleted    boolean     NOT NULL DEFAULT false,
    state      jsonb       NOT NULL,
    created_at timestamptz NOT NULL,
    version    bigint      NOT NULL
);
CREATE INDEX IF NOT EXISTS projects_team ON projects (team_id) WHERE NOT deleted;

ALTER TABLE request_log
    ADD COLUMN IF NOT EXISTS project_id uuid,
    ADD COLUMN IF NOT EXISTS team_id    uuid;
CREATE INDEX IF NOT EXISTS request_log_project_id ON request_log (project_id, at) WHERE project_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS request_log_team_id ON request_log (team_id, at) WHERE team_id IS NOT NULL;
