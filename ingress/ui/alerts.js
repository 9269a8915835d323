// The Alerts page: budget alerts (a key's, project's or team's spend in
// its period first reaching a threshold), newest first, with the webhook's
// delivery state.
//
// Invariant: read-only; owners' names are shown as text, falling back to
// the id's tail.
import { t } from './i18n.js';
import { badge, card, emptyState, h, table, unavailableState } from './dom.js';
import { fmtTime, fmtUsd, shortId } from './format.js';
import { keyNames, optional } from './api.js';

export async function pageAlerts(page) {
  const [list, names] = await Promise.all([optional('GET', '/alerts?limit=200'), keyNames()]);
  if (!list) return unavailableState(page);
  const rows = list.data || [];
  const body = rows.length === 0 ? emptyState(t('alerts.none')) : table([
    { label: t('alerts.at'), cell: (r) => h('span', { class: 'nowrap' }, fmtTime(r.at)) },
    { label: t('alerts.level'), cell: (r) => t(`alerts.level.${r.level}`) },
    { label: t('usage.key'), cell: (r) => h('span', { class: 'strong' }, names.get(r.target_id) || shortId(r.target_id)) },
    { label: t('alerts.period'), cell: (r) => r.period },
    { label: t('alerts.threshold'), num: true, cell: (r) => h('span', { 'data-testid': 'alert-threshold' }, `${r.threshold}%`) },
    { label: t('alerts.spent'), num: true, cell: (r) => `${fmtUsd(r.spent_usd, 6)} / ${fmtUsd(r.budget_usd, 6)}` },
    { label: t('alerts.delivery'), cell: (r) => (r.delivery?.delivered ? badge(t('alerts.delivered'), 'ok') : badge(t('alerts.pending', { n: r.delivery?.attempts || 0 }), 'warn')) },
  ], rows, { testid: 'alerts-table' });
  page.append(card(t('alerts.title'), [h('p', { class: 'lead' }, t('alerts.lead')), body]));
}
