-- Media units next to tokens in the usage and billing views: images
-- generated, characters of speech synthesised, seconds of audio transcribed.
-- Rows projected before this migration count them as 0; `aigw projector
-- rebuild` projects the whole history again, with them.
ALTER TABLE usage_daily
    ADD COLUMN IF NOT EXISTS images        bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS characters    bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS audio_seconds bigint NOT NULL DEFAULT 0;
ALTER TABLE usage_hourly
    ADD COLUMN IF NOT EXISTS images        bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS characters    bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS audio_seconds bigint NOT NULL DEFAULT 0;
ALTER TABLE billing_monthly
    ADD COLUMN IF NOT EXISTS images        bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS characters    bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS audio_seconds bigint NOT NULL DEFAULT 0;
