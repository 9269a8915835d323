-- aigw schema, version 10: token classes next to the token totals.
--
-- `cached_tokens`, `cache_write_5m_tokens` and `cache_write_1h_tokens` are
-- parts of `prompt_tokens`, `reasoning_tokens` a part of `completion_tokens`
-- (OpenAI's convention; see `Usage` in events/src/request.rs).
-- `price_fallback_requests` counts requests with tokens of a class their
-- price had no rate for (billed at the input or output rate instead).
-- Rows projected before this migration count them as 0; `aigw projector
-- rebuild` projects the whole history again, with them.
ALTER TABLE usage_daily
    ADD COLUMN IF NOT EXISTS cached_tokens           bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS cache_write_5m_tokens   bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS cache_write_1h_tokens   bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS reasoning_tokens        bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS price_fallback_requests bigint NOT NULL DEFAULT 0;
ALTER TABLE usage_hourly
    ADD COLUMN IF NOT EXISTS cached_tokens           bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS cache_write_5m_tokens   bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS cache_write_1h_tokens   bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS reasoning_tokens        bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS price_fallback_requests bigint NOT NULL DEFAULT 0;
ALTER TABLE billing_monthly
    ADD COLUMN IF NOT EXISTS cached_tokens           bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS cache_write_5m_tokens   bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS cache_write_1h_tokens   bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS reasoning_tokens        bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS price_fallback_requests bigint NOT NULL DEFAULT 0;
ALTER TABLE request_log
    ADD COLUMN IF NOT EXISTS cached_tokens         bigint,
    ADD COLUMN IF NOT EXISTS cache_write_5m_tokens bigint,
    ADD COLUMN IF NOT EXISTS cache_write_1h_tokens bigint,
    ADD COLUMN IF NOT EXISTS reasoning_tokens      bigint,
    ADD COLUMN IF NOT EXISTS price_fallback        boolean;
