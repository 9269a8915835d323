// The Sign-ins page: the sign-in history (single sign-on successes,
// failures with their reason, session ends), newest first.
//
// Invariant: read-only (owners and admins; the API decides); every value is
// shown as text.
import { t } from './i18n.js';
import { badge, card, emptyState, h, table, unavailableState } from './dom.js';
import { fmtTime } from './format.js';
import { optional } from './api.js';

const KINDS = { succeeded: 'ok', failed: 'bad', ended: 'warn' };

export async function pageSignIns(page) {
  const list = await optional('GET', '/sign-ins?limit=200');
  if (!list) return unavailableState(page);
  const rows = list.data || [];
  const body = rows.length === 0 ? emptyState(t('signins.none')) : table([
    { label: t('signins.at'), cell: (r) => h('span', { class: 'nowrap' }, fmtTime(r.at)) },
    { label: t('signins.kind'), cell: (r) => h('span', { 'data-testid': 'signin-kind' }, badge(r.kind in KINDS ? t(`signins.kind.${r.kind}`) : String(r.kind), KINDS[r.kind] || 'warn')) },
    { label: t('signins.email'), cell: (r) => h('span', { class: 'strong' }, r.email || '—') },
    { label: t('signins.reason'), cell: (r) => h('code', {}, r.reason || '') },
    { label: t('signins.ip'), cell: (r) => r.ip || '—' },
    { label: t('signins.agent'), cell: (r) => h('span', { class: 'sub' }, r.user_agent || '—') },
  ], rows, { testid: 'signins-table' });
  page.append(card(t('signins.title'), [h('p', { class: 'lead' }, t('signins.lead')), body]));
}
