// The Alerts page: budget alerts (a key's, project's or team's spend in
// its period first reaching a threshold), newest first, each with its
// level, its owner's name and the webhook's delivery state.
//
// Invariant: read-only; owners' names are shown as text, falling back to
// the id's tail when the owner is gone.
import { t } from './i18n.js';
import { badge, card, emptyState, h, table, unavailableState } from './dom.js';
import { fmtTime, fmtUsd, shortId } from './format.js';
import { namesOf, optional } from './api.js';

const LEVELS = { key: '/keys', project: '/projects', team: '/teams' };

export async function pageAlerts(page) {
  const list = await optional('GET', '/alerts?limit=200');
  if (!list) return unavailableState(page);
  const rows = list.data || [];
  // Only the levels that have alerts are looked up.
  const levels = [...new Set(rows.map((r) => r.level))].filter((l) => l in LEVELS);
  const names = new Map(await Promise.all(levels.map(async (l) => [l, await namesOf(LEVELS[l])])));
  const owner = (r) => names.get(r.level)?.get(r.target_id) || shortId(r.target_id);
  const body = rows.length === 0 ? emptyState(t('alerts.none')) : table([
    { label: t('alerts.at'), cell: (r) => h('span', { class: 'nowrap' }, fmtTime(r.at)) },
    { label: t('alerts.level'), cell: (r) => h('span', { 'data-testid': 'alert-level' }, r.level in LEVELS ? t(`alerts.level.${r.level}`) : String(r.level)) },
    { label: t('alerts.owner'), cell: (r) => h('span', { class: 'strong', 'data-testid': 'alert-owner' }, owner(r)) },
    { label: t('alerts.period'), cell: (r) => r.period },
    { label: t('alerts.threshold'), num: true, cell: (r) => h('span', { 'data-testid': 'alert-threshold' }, `${r.threshold}%`) },
    { label: t('alerts.spent'), num: true, cell: (r) => `${fmtUsd(r.spent_usd, 6)} / ${fmtUsd(r.budget_usd, 6)}` },
    { label: t('alerts.delivery'), cell: (r) => (r.delivery?.delivered ? badge(t('alerts.delivered'), 'ok') : badge(t('alerts.pending', { n: r.delivery?.attempts || 0 }), 'warn')) },
  ], rows, { testid: 'alerts-table' });
  page.append(card(t('alerts.title'), [h('p', { class: 'lead' }, t('alerts.lead')), body]));
}
