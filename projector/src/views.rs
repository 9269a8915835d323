//! Writing a folded batch (`BatchEffect`) into the view tables: one
//! `INSERT ... SELECT FROM UNNEST ... ON CONFLICT` per view, adding sums and
//! keeping the last known value per request, so the order and grouping of
//! the writes do not change the result.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{BillingKey, HourlyKey, LogRow, UsageDelta, UsageKey};

/// Column vectors of usage deltas, in `UsageDelta` field order.
fn columns<'a>(deltas: impl Iterator<Item = &'a UsageDelta>) -> [Vec<i64>; 17] {
    let mut cols: [Vec<i64>; 17] = Default::default();
    for d in deltas {
        for (col, v) in cols.iter_mut().zip([
            d.requests,
            d.errors,
            d.prompt_tokens,
            d.completion_tokens,
            d.estimated_requests,
            d.latency_ms,
            d.cost_micros,
            d.unpriced_requests,
            d.images,
            d.characters,
            d.audio_seconds,
            d.cached_tokens,
            d.cache_write_5m_tokens,
            d.cache_write_1h_tokens,
            d.reasoning_tokens,
            d.price_fallback_requests,
            d.searches,
        ]) {
            col.push(v);
        }
    }
    cols
}

pub(crate) async fn write_usage(
    tx: &mut PgConnection,
    usage: &HashMap<UsageKey, UsageDelta>,
    suffix: &str,
) -> Result<(), sqlx::Error> {
    if usage.is_empty() {
        return Ok(());
    }
    let keys: Vec<Uuid> = usage.keys().map(|k| k.0).collect();
    let days: Vec<NaiveDate> = usage.keys().map(|k| k.1).collect();
    let models: Vec<String> = usage.keys().map(|k| k.2.clone()).collect();
    let [
        requests,
        errors,
        prompt,
        completion,
        estimated,
        latency,
        cost,
        unpriced,
        images,
        characters,
        audio_seconds,
        cached,
        write_5m,
        write_1h,
        reasoning,
        fallback,
        searches,
    ] = columns(usage.values());
    sqlx::query(&format!(
        "INSERT INTO usage_daily{suffix} AS u (key_id, day, model, requests, errors, prompt_tokens,
                completion_tokens, estimated_requests, latency_ms_total, cost_micros,
                unpriced_requests, images, characters, audio_seconds, cached_tokens,
                cache_write_5m_tokens, cache_write_1h_tokens, reasoning_tokens,
                price_fallback_requests, searches)
         SELECT * FROM UNNEST($1::uuid[], $2::date[], $3::text[], $4::int8[], $5::int8[],
                $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::int8[],
                $12::int8[], $13::int8[], $14::int8[], $15::int8[], $16::int8[], $17::int8[],
                $18::int8[], $19::int8[], $20::int8[])
         ON CONFLICT (key_id, day, model) DO UPDATE SET
           searches = u.searches + EXCLUDED.searches,
           requests = u.requests + EXCLUDED.requests,
           errors = u.errors + EXCLUDED.errors,
           prompt_tokens = u.prompt_tokens + EXCLUDED.prompt_tokens,
           completion_tokens = u.completion_tokens + EXCLUDED.completion_tokens,
           estimated_requests = u.estimated_requests + EXCLUDED.estimated_requests,
           latency_ms_total = u.latency_ms_total + EXCLUDED.latency_ms_total,
           cost_micros = u.cost_micros + EXCLUDED.cost_micros,
           unpriced_requests = u.unpriced_requests + EXCLUDED.unpriced_requests,
           images = u.images + EXCLUDED.images,
           characters = u.characters + EXCLUDED.characters,
           audio_seconds = u.audio_seconds + EXCLUDED.audio_seconds,
           cached_tokens = u.cached_tokens + EXCLUDED.cached_tokens,
           cache_write_5m_tokens = u.cache_write_5m_tokens + EXCLUDED.cache_write_5m_tokens,
           cache_write_1h_tokens = u.cache_write_1h_tokens + EXCLUDED.cache_write_1h_tokens,
           reasoning_tokens = u.reasoning_tokens + EXCLUDED.reasoning_tokens,
           price_fallback_requests = u.price_fallback_requests + EXCLUDED.price_fallback_requests"
    ))
    .bind(keys)
    .bind(days)
    .bind(models)
    .bind(requests)
    .bind(errors)
    .bind(prompt)
    .bind(completion)
    .bind(estimated)
    .bind(latency)
    .bind(cost)
    .bind(unpriced)
    .bind(images)
    .bind(characters)
    .bind(audio_seconds)
    .bind(cached)
    .bind(write_5m)
    .bind(write_1h)
    .bind(reasoning)
    .bind(fallback)
    .bind(searches)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub(crate) async fn write_billing(
    tx: &mut PgConnection,
    billing: &HashMap<BillingKey, UsageDelta>,
    suffix: &str,
) -> Result<(), sqlx::Error> {
    if billing.is_empty() {
        return Ok(());
    }
    let keys: Vec<Uuid> = billing.keys().map(|k| k.0).collect();
    let months: Vec<NaiveDate> = billing.keys().map(|k| k.1).collect();
    let models: Vec<String> = billing.keys().map(|k| k.2.clone()).collect();
    let [
        requests,
        errors,
        prompt,
        completion,
        _,
        _,
        cost,
        unpriced,
        images,
        characters,
        audio_seconds,
        cached,
        write_5m,
        write_1h,
        reasoning,
        fallback,
        searches,
    ] = columns(billing.values());
    sqlx::query(&format!(
        "INSERT INTO billing_monthly{suffix} AS b (key_id, month, model, requests, errors,
                prompt_tokens, completion_tokens, cost_micros, unpriced_requests, images,
                characters, audio_seconds, cached_tokens,
                cache_write_5m_tokens, cache_write_1h_tokens, reasoning_tokens,
                price_fallback_requests, searches)
         SELECT * FROM UNNEST($1::uuid[], $2::date[], $3::text[], $4::int8[], $5::int8[],
                $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::int8[],
                $12::int8[], $13::int8[], $14::int8[], $15::int8[], $16::int8[], $17::int8[],
                $18::int8[])
         ON CONFLICT (key_id, month, model) DO UPDATE SET
           searches = b.searches + EXCLUDED.searches,
           requests = b.requests + EXCLUDED.requests,
           errors = b.errors + EXCLUDED.errors,
           prompt_tokens = b.prompt_tokens + EXCLUDED.prompt_tokens,
           completion_tokens = b.completion_tokens + EXCLUDED.completion_tokens,
           cost_micros = b.cost_micros + EXCLUDED.cost_micros,
           unpriced_requests = b.unpriced_requests + EXCLUDED.unpriced_requests,
           images = b.images + EXCLUDED.images,
           characters = b.characters + EXCLUDED.characters,
           audio_seconds = b.audio_seconds + EXCLUDED.audio_seconds,
           cached_tokens = b.cached_tokens + EXCLUDED.cached_tokens,
           cache_write_5m_tokens = b.cache_write_5m_tokens + EXCLUDED.cache_write_5m_tokens,
           cache_write_1h_tokens = b.cache_write_1h_tokens + EXCLUDED.cache_write_1h_tokens,
           reasoning_tokens = b.reasoning_tokens + EXCLUDED.reasoning_tokens,
           price_fallback_requests = b.price_fallback_requests + EXCLUDED.price_fallback_requests"
    ))
    .bind(keys)
    .bind(months)
    .bind(models)
    .bind(requests)
    .bind(errors)
    .bind(prompt)
    .bind(completion)
    .bind(cost)
    .bind(unpriced)
    .bind(images)
    .bind(characters)
    .bind(audio_seconds)
    .bind(cached)
    .bind(write_5m)
    .bind(write_1h)
    .bind(reasoning)
    .bind(fallback)
    .bind(searches)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub(crate) async fn write_hourly(
    tx: &mut PgConnection,
    hourly: &HashMap<HourlyKey, UsageDelta>,
    suffix: &str,
) -> Result<(), sqlx::Error> {
    if hourly.is_empty() {
        return Ok(());
    }
    let keys: Vec<Uuid> = hourly.keys().map(|k| k.0).collect();
    let hours: Vec<DateTime<Utc>> = hourly.keys().map(|k| k.1).collect();
    let providers: Vec<String> = hourly.keys().map(|k| k.2.clone()).collect();
    let models: Vec<String> = hourly.keys().map(|k| k.3.clone()).collect();
    let [
        requests,
        errors,
        prompt,
        completion,
        _,
        latency,
        cost,
        unpriced,
        images,
        characters,
        audio_seconds,
        cached,
        write_5m,
        write_1h,
        reasoning,
        fallback,
        searches,
    ] = columns(hourly.values());
    sqlx::query(&format!(
        "INSERT INTO usage_hourly{suffix} AS h (key_id, hour, provider, model, requests, errors,
                prompt_tokens, completion_tokens, cost_micros, unpriced_requests, latency_ms_total,
                images, characters, audio_seconds, cached_tokens,
                cache_write_5m_tokens, cache_write_1h_tokens, reasoning_tokens,
                price_fallback_requests, searches)
         SELECT * FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::int8[],
                $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::int8[],
                $12::int8[], $13::int8[], $14::int8[], $15::int8[], $16::int8[], $17::int8[],
                $18::int8[], $19::int8[], $20::int8[])
         ON CONFLICT (key_id, hour, provider, model) DO UPDATE SET
           searches = h.searches + EXCLUDED.searches,
           requests = h.requests + EXCLUDED.requests,
           errors = h.errors + EXCLUDED.errors,
           prompt_tokens = h.prompt_tokens + EXCLUDED.prompt_tokens,
           completion_tokens = h.completion_tokens + EXCLUDED.completion_tokens,
           cost_micros = h.cost_micros + EXCLUDED.cost_micros,
           unpriced_requests = h.unpriced_requests + EXCLUDED.unpriced_requests,
           latency_ms_total = h.latency_ms_total + EXCLUDED.latency_ms_total,
           images = h.images + EXCLUDED.images,
           characters = h.characters + EXCLUDED.characters,
           audio_seconds = h.audio_seconds + EXCLUDED.audio_seconds,
           cached_tokens = h.cached_tokens + EXCLUDED.cached_tokens,
           cache_write_5m_tokens = h.cache_write_5m_tokens + EXCLUDED.cache_write_5m_tokens,
           cache_write_1h_tokens = h.cache_write_1h_tokens + EXCLUDED.cache_write_1h_tokens,
           reasoning_tokens = h.reasoning_tokens + EXCLUDED.reasoning_tokens,
           price_fallback_requests = h.price_fallback_requests + EXCLUDED.price_fallback_requests"
    ))
    .bind(keys)
    .bind(hours)
    .bind(providers)
    .bind(models)
    .bind(requests)
    .bind(errors)
    .bind(prompt)
    .bind(completion)
    .bind(cost)
    .bind(unpriced)
    .bind(latency)
    .bind(images)
    .bind(characters)
    .bind(audio_seconds)
    .bind(cached)
    .bind(write_5m)
    .bind(write_1h)
    .bind(reasoning)
    .bind(fallback)
    .bind(searches)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub(crate) async fn write_requests(
    tx: &mut PgConnection,
    rows: &HashMap<Uuid, LogRow>,
    suffix: &str,
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = rows.keys().copied().collect();
    let r: Vec<&LogRow> = rows.values().collect();
    sqlx::query(&format!(
        "INSERT INTO request_log{suffix} AS r (id, at, finished_at, key_id, model, provider,
                attempts, status, http_status, error_type, prompt_tokens, completion_tokens,
                cost_micros, latency_ms, stream, estimated, cached_tokens, cache_write_5m_tokens,
                cache_write_1h_tokens, reasoning_tokens, price_fallback, project_id, team_id,
                user_id, tags)
         SELECT c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15, c16, c17,
                c18, c19, c20, c21, c22, c23, c24, string_to_array(c25, ',')
         FROM UNNEST($1::uuid[], $2::timestamptz[], $3::timestamptz[], $4::uuid[],
                $5::text[], $6::text[], $7::int4[], $8::text[], $9::int4[], $10::text[],
                $11::int8[], $12::int8[], $13::int8[], $14::int8[], $15::bool[], $16::bool[],
                $17::int8[], $18::int8[], $19::int8[], $20::int8[], $21::bool[], $22::uuid[],
                $23::uuid[], $24::text[], $25::text[])
              AS u(c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15, c16, c17,
                   c18, c19, c20, c21, c22, c23, c24, c25)
         ON CONFLICT (id) DO UPDATE SET
           at = COALESCE(EXCLUDED.at, r.at),
           finished_at = COALESCE(EXCLUDED.finished_at, r.finished_at),
           key_id = COALESCE(EXCLUDED.key_id, r.key_id),
           model = COALESCE(EXCLUDED.model, r.model),
           provider = COALESCE(EXCLUDED.provider, r.provider),
           attempts = r.attempts + EXCLUDED.attempts,
           status = CASE WHEN EXCLUDED.status IS NULL OR EXCLUDED.status = 'running'
                         THEN COALESCE(r.status, EXCLUDED.status) ELSE EXCLUDED.status END,
           http_status = COALESCE(EXCLUDED.http_status, r.http_status),
           error_type = COALESCE(EXCLUDED.error_type, r.error_type),
           prompt_tokens = COALESCE(EXCLUDED.prompt_tokens, r.prompt_tokens),
           completion_tokens = COALESCE(EXCLUDED.completion_tokens, r.completion_tokens),
           cost_micros = COALESCE(EXCLUDED.cost_micros, r.cost_micros),
           latency_ms = COALESCE(EXCLUDED.latency_ms, r.latency_ms),
           stream = COALESCE(EXCLUDED.stream, r.stream),
           estimated = COALESCE(EXCLUDED.estimated, r.estimated),
           cached_tokens = COALESCE(EXCLUDED.cached_tokens, r.cached_tokens),
           cache_write_5m_tokens = COALESCE(EXCLUDED.cache_write_5m_tokens, r.cache_write_5m_tokens),
           cache_write_1h_tokens = COALESCE(EXCLUDED.cache_write_1h_tokens, r.cache_write_1h_tokens),
           reasoning_tokens = COALESCE(EXCLUDED.reasoning_tokens, r.reasoning_tokens),
           price_fallback = COALESCE(EXCLUDED.price_fallback, r.price_fallback),
           project_id = COALESCE(EXCLUDED.project_id, r.project_id),
           team_id = COALESCE(EXCLUDED.team_id, r.team_id),
           user_id = COALESCE(EXCLUDED.user_id, r.user_id),
           tags = COALESCE(EXCLUDED.tags, r.tags)"
    ))
    .bind(ids)
    .bind(r.iter().map(|x| x.at).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.finished_at).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.key_id).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.model.clone()).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.provider.clone()).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.attempts).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.status.clone()).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.http_status).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.error_type.clone()).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.prompt_tokens).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.completion_tokens).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.cost_micros).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.latency_ms).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.stream).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.estimated).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.cached_tokens).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.cache_write_5m_tokens).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.cache_write_1h_tokens).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.reasoning_tokens).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.price_fallback).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.project_id).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.team_id).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.user_id.clone()).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.tags.clone()).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    Ok(())
}
