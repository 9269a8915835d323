-- aigw schema, version 9: the cost of a stored idempotent answer.
--
-- A repeat of an Idempotency-Key replays the first answer; these columns
-- keep what that answer cost (the cost its request's events record), so the
-- replay carries the same x-aigw-cost-usd header, or the same unpriced flag.
-- Both stay empty for error answers and for answers stored before version 9.
ALTER TABLE idempotency_keys
    ADD COLUMN IF NOT EXISTS cost_micros   bigint,
    ADD COLUMN IF NOT EXISTS cost_unpriced boolean NOT NULL DEFAULT false;
