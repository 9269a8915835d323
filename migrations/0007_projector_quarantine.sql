-- Poison events: events the projector could not fold into the views, kept
-- with the reason so the views move on past them. An event is quarantined
-- in the same transaction as the checkpoint that passes it, so the table
-- says exactly which events of the history the views leave out.
--
-- The key is the event's identity (that of `events`), so quarantining is
-- idempotent. `aigw projector rebuild` tries every event again and replaces
-- this table's content with what still fails (keeping `quarantined_at` of
-- events that stay), so fixing the cause and rebuilding recovers them.
CREATE TABLE IF NOT EXISTS projector_quarantine
(
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    sequence       bigint      NOT NULL,
    event_type     text        NOT NULL,
    -- Where the event sits in the history, as the projector reads it.
    txid           xid8        NOT NULL,
    pos            bigint      NOT NULL,
    -- `unreadable` (the payload does not fold) or `write_failed` (a view
    -- refused what it folds to).
    reason         text        NOT NULL,
    -- The error, truncated.
    error          text        NOT NULL,
    quarantined_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);
CREATE INDEX IF NOT EXISTS projector_quarantine_newest
    ON projector_quarantine (quarantined_at DESC, txid DESC, pos DESC);
