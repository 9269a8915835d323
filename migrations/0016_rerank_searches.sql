-- aigw schema, version 16: rerank search units next to the other media units.
--
-- `searches` counts the search units providers such as Cohere bill a rerank
-- by (one per query over up to 100 documents). Rows projected before this
-- migration count them as 0; `aigw projector rebuild` projects the whole
-- history again, with them.
ALTER TABLE usage_daily ADD COLUMN IF NOT EXISTS searches bigint NOT NULL DEFAULT 0;
ALTER TABLE usage_hourly ADD COLUMN IF NOT EXISTS searches bigint NOT NULL DEFAULT 0;
ALTER TABLE billing_monthly ADD COLUMN IF NOT EXISTS searches bigint NOT NULL DEFAULT 0;
