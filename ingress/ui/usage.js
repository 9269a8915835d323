// The Usage page: requests, tokens, cost and error rate per day for the
// last 7, 30 or 90 days (SVG charts), by key, model and provider; and
// groupBy, which sums usage rows (the Billing page uses it too).
//
// Invariant: sums only what the API returned; names come from the keys
// list, falling back to the id's tail, and are shown as text.
import { t } from './i18n.js';
import { barChart } from './charts.js';
import { card, emptyState, h, kpi, nextId, table, unavailableState } from './dom.js';
import { fmtInt, fmtPct, fmtUsd, isoDay, shortId } from './format.js';
import { keyNames, optional, render } from './api.js';

function periodSelect(days, onChange) {
  const id = nextId('period');
  const select = h('select', { id, onchange: (ev) => onChange(Number(ev.target.value)) },
    [7, 30, 90].map((n) => h('option', { value: String(n) }, t('usage.days', { n }))));
  select.value = String(days);
  return h('div', { class: 'inline-field' }, h('label', { for: id }, t('common.period')), select);
}

let usageDays = 30;

export function groupBy(rows, key) {
  const out = new Map();
  for (const r of rows) {
    const k = key(r);
    const acc = out.get(k) || { key: k, requests: 0, errors: 0, prompt_tokens: 0, completion_tokens: 0, cached_tokens: 0, cache_write_tokens: 0, reasoning_tokens: 0, price_fallback_requests: 0, cost_usd: 0 };
    acc.requests += r.requests || 0;
    acc.errors += r.errors || 0;
    acc.prompt_tokens += r.prompt_tokens || 0;
    acc.completion_tokens += r.completion_tokens || 0;
    // Token classes (parts of the prompt and completion tokens).
    acc.cached_tokens += r.cached_tokens || 0;
    acc.cache_write_tokens += (r.cache_write_5m_tokens || 0) + (r.cache_write_1h_tokens || 0);
    acc.reasoning_tokens += r.reasoning_tokens || 0;
    acc.price_fallback_requests += r.price_fallback_requests || 0;
    acc.cost_usd += r.cost_usd || 0;
    out.set(k, acc);
  }
  return [...out.values()].sort((a, b) => b.requests - a.requests);
}

function usageTable(rows, label, name) {
  return table([
    { label, cell: (r) => h('span', { class: 'strong' }, name(r.key)) },
    { label: t('usage.requests'), num: true, cell: (r) => fmtInt(r.requests) },
    { label: t('usage.errors'), num: true, cell: (r) => fmtInt(r.errors) },
    { label: t('usage.tokens'), num: true, cell: (r) => fmtInt(r.prompt_tokens + r.completion_tokens) },
    { label: t('usage.cost'), num: true, cell: (r) => fmtUsd(r.cost_usd, 4) },
  ], rows);
}

export async function pageUsage(page) {
  const from = new Date(Date.now() - (usageDays - 1) * 86400000);
  const usage = await optional('GET', `/usage?from=${isoDay(from)}`);
  page.append(h('div', { class: 'page-tools' }, periodSelect(usageDays, (n) => {
    usageDays = n;
    render();
  })));
  if (!usage) return unavailableState(page);
  const [names, recent] = await Promise.all([keyNames(), optional('GET', '/usage/requests?limit=1000').catch(() => null)]);
  const rows = usage.data || [];
  const tot = usage.totals || {};
  const rate = tot.requests ? tot.errors / tot.requests : 0;
  page.append(h('div', { class: 'kpis', 'data-testid': 'kpis' },
    kpi(t('usage.requests'), fmtInt(tot.requests), 'kpi-requests'),
    kpi(t('usage.tokens'), fmtInt(tot.total_tokens), 'kpi-tokens'),
    kpi(t('usage.cost'), fmtUsd(tot.cost_usd || 0), 'kpi-cost'),
    kpi(t('usage.error_rate'), fmtPct(rate), 'kpi-errors')));
  const byDay = new Map(groupBy(rows, (r) => r.day).map((r) => [r.key, r]));
  const days = [];
  for (let i = 0; i < usageDays; i++) {
    const d = isoDay(new Date(from.getTime() + i * 86400000));
    days.push({ day: d, r: byDay.get(d) });
  }
  const label = (d) => d.slice(5);
  page.append(h('div', { class: 'grid-2' },
    card(t('usage.over_time'), h('div', { class: 'chart-box', 'data-testid': 'chart-requests' }, barChart(days.map((d) => ({ label: label(d.day), value: d.r?.requests || 0 })), { title: t('usage.over_time'), format: (v) => fmtInt(v), integer: true }))),
    card(t('usage.tokens_over_time'), h('div', { class: 'chart-box' }, barChart(days.map((d) => ({ label: label(d.day), value: (d.r?.prompt_tokens || 0) + (d.r?.completion_tokens || 0) })), { title: t('usage.tokens_over_time'), format: (v) => fmtInt(v), integer: true, tone: 2 }))),
    card(t('usage.cost_over_time'), h('div', { class: 'chart-box' }, barChart(days.map((d) => ({ label: label(d.day), value: d.r?.cost_usd || 0 })), { title: t('usage.cost_over_time'), format: (v) => (v === 0 ? '$0' : v < 0.01 ? `$${v.toExponential(1)}` : fmtUsd(v)), tone: 3 }))),
    card(t('usage.error_rate'), h('div', { class: 'chart-box' }, barChart(days.map((d) => ({ label: label(d.day), value: d.r?.requests ? d.r.errors / d.r.requests : 0 })), { title: t('usage.error_rate'), format: (v) => fmtPct(v), tone: 4 })))));
  if (!rows.length) page.append(emptyState(t('usage.no_data')));
  const providers = new Map();
  for (const r of recent?.data || []) {
    const k = r.provider || '—';
    const acc = providers.get(k) || { key: k, requests: 0, errors: 0, prompt_tokens: 0, completion_tokens: 0, cost_usd: 0 };
    acc.requests += 1;
    if (r.status !== 'ok') acc.errors += 1;
    acc.prompt_tokens += r.usage?.prompt_tokens || 0;
    acc.completion_tokens += r.usage?.completion_tokens || 0;
    acc.cost_usd += r.cost_usd || 0;
    providers.set(k, acc);
  }
  page.append(h('div', { class: 'grid-2' },
    card(t('usage.by_key'), usageTable(groupBy(rows, (r) => r.key_id), t('usage.key'), (id) => names.get(id) || shortId(id))),
    card(t('usage.by_model'), usageTable(groupBy(rows, (r) => r.model), t('usage.model'), (m) => m)),
    card(t('usage.by_provider'), usageTable([...providers.values()], t('usage.provider'), (p) => p))));
}
