// The Billing page: a month's cost per key (CSV built in the page), and
// spend over a range grouped by one dimension (team, project, key, user,
// tag, model, provider) from GET /billing, with the API's CSV.
//
// Invariant: CSV cells go through csvCell (no spreadsheet formulas); the
// month and range live in this module, kept across redraws.
import { t } from './i18n.js';
import { card, emptyState, h, nextId, saveBlob, table, unavailableState } from './dom.js';
import { csvCell, fmtInt, fmtUsd, isoDay, shortId } from './format.js';
import { api, downloadFrom, keyNames, namesOf, optional, render } from './api.js';
import { groupBy } from './usage.js';

let billingMonth = new Date().toISOString().slice(0, 7);

export async function pageBilling(page) {
  const [y, m] = billingMonth.split('-').map(Number);
  const first = `${billingMonth}-01`;
  const last = isoDay(new Date(Date.UTC(y, m, 0)));
  const usage = await optional('GET', `/usage?from=${first}&to=${last}`);
  const monthId = nextId('month');
  const monthInput = h('input', { id: monthId, type: 'month', value: billingMonth, onchange: (ev) => {
    if (/^\d{4}-\d{2}$/.test(ev.target.value)) {
      billingMonth = ev.target.value;
      render();
    }
  } });
  if (!usage) {
    page.append(h('div', { class: 'page-tools' }, h('div', { class: 'inline-field' }, h('label', { for: monthId }, t('billing.month')), monthInput)));
    return unavailableState(page);
  }
  const names = await keyNames();
  const rows = groupBy(usage.data || [], (r) => r.key_id);
  const download = () => {
    const header = ['month', 'key_id', 'key_name', 'requests', 'errors', 'prompt_tokens', 'completion_tokens', 'cached_tokens', 'cache_write_tokens', 'reasoning_tokens', 'price_fallback_requests', 'cost_usd'];
    const lines = [header.join(',')].concat(rows.map((r) => [billingMonth, r.key, names.get(r.key) || '', r.requests, r.errors, r.prompt_tokens, r.completion_tokens, r.cached_tokens, r.cache_write_tokens, r.reasoning_tokens, r.price_fallback_requests, r.cost_usd.toFixed(6)].map(csvCell).join(',')));
    const blob = new Blob([`${lines.join('\r\n')}\r\n`], { type: 'text/csv;charset=utf-8' });
    saveBlob(blob, `aigw-billing-${billingMonth}.csv`);
  };
  page.append(h('div', { class: 'page-tools' },
    h('div', { class: 'inline-field' }, h('label', { for: monthId }, t('billing.month')), monthInput),
    h('button', { type: 'button', class: 'btn btn-primary', 'data-testid': 'download-csv', onclick: download, disabled: rows.length === 0 }, t('billing.download'))));
  const tot = usage.totals || {};
  const body = rows.length === 0 ? emptyState(t('usage.no_data')) : [
    table([
      { label: t('usage.key'), cell: (r) => h('span', { class: 'strong' }, names.get(r.key) || shortId(r.key)) },
      { label: t('usage.requests'), num: true, cell: (r) => fmtInt(r.requests) },
      { label: t('usage.prompt'), num: true, cell: (r) => fmtInt(r.prompt_tokens) },
      { label: t('usage.completion'), num: true, cell: (r) => fmtInt(r.completion_tokens) },
      { label: t('usage.cached'), num: true, cell: (r) => fmtInt(r.cached_tokens) },
      { label: t('usage.cache_write'), num: true, cell: (r) => fmtInt(r.cache_write_tokens) },
      { label: t('usage.reasoning'), num: true, cell: (r) => fmtInt(r.reasoning_tokens) },
      { label: t('usage.cost'), num: true, cell: (r) => r.price_fallback_requests > 0 ? h('span', { title: t('usage.price_fallback', { n: r.price_fallback_requests }) }, `${fmtUsd(r.cost_usd, 6)} *`) : fmtUsd(r.cost_usd, 6) },
    ], rows, { testid: 'billing-table' }),
    h('div', { class: 'total-row' }, h('span', {}, t('billing.total')), h('span', { class: 'strong' }, fmtUsd(tot.cost_usd || 0, 6))),
  ];
  page.append(card(`${t('billing.title')} · ${billingMonth}`, [h('p', { class: 'lead' }, t('billing.lead')), body]));
  await billingByDimension(page, first, last);
}

// Spend over a range grouped by one dimension (GET /billing?group_by=).
const DIMENSIONS = ['team', 'project', 'key', 'user', 'tag', 'model', 'provider'];
const billingGroup = { by: 'key', from: '', to: '' };

async function billingByDimension(page, first, last) {
  const from = billingGroup.from || first;
  const to = billingGroup.to || last;
  const q = new URLSearchParams({ group_by: billingGroup.by, from, to });
  const listOf = { key: '/keys', team: '/teams', project: '/projects' }[billingGroup.by];
  const names = listOf ? await namesOf(listOf) : new Map();
  const byId = nextId('gb');
  const fromId = nextId('gf');
  const toId = nextId('gt');
  const bySel = h('select', { id: byId, 'data-testid': 'group-by' }, DIMENSIONS.map((d) => h('option', { value: d }, t(`billing.by.${d}`))));
  bySel.value = billingGroup.by;
  const fromIn = h('input', { id: fromId, type: 'date', value: from, 'data-testid': 'group-from' });
  const toIn = h('input', { id: toId, type: 'date', value: to, 'data-testid': 'group-to' });
  const apply = () => {
    billingGroup.by = bySel.value;
    billingGroup.from = fromIn.value;
    billingGroup.to = toIn.value;
    render();
  };
  bySel.addEventListener('change', apply);
  const tools = h('form', { class: 'filters', onsubmit: (ev) => { ev.preventDefault(); apply(); } },
    h('div', { class: 'inline-field' }, h('label', { for: byId }, t('billing.group_by')), bySel),
    h('div', { class: 'inline-field' }, h('label', { for: fromId }, t('billing.from')), fromIn),
    h('div', { class: 'inline-field' }, h('label', { for: toId }, t('billing.to')), toIn),
    h('button', { type: 'submit', class: 'btn' }, t('requests.filter.apply')),
    h('button', {
      type: 'button', class: 'btn btn-primary', 'data-testid': 'group-csv',
      onclick: () => downloadFrom(`/billing?${q}&format=csv`, `aigw-billing-${billingGroup.by}-${from}-${to}.csv`),
    }, t('billing.download')));
  let report;
  try {
    report = await api('GET', `/billing?${q}`);
  } catch (e) {
    page.append(card(t('billing.by_dimension'), [tools, h('div', { class: 'callout callout-bad', role: 'alert' }, e.message)]));
    return;
  }
  const rows = report.data || [];
  const label = (g) => {
    if (g === null || g === undefined) return h('span', { class: 'muted' }, t('billing.none'));
    return listOf ? (names.get(g) || shortId(g)) : g;
  };
  const body = rows.length === 0 ? emptyState(t('usage.no_data')) : [
    table([
      { label: t(`billing.by.${billingGroup.by}`), cell: (r) => h('span', { class: 'strong', 'data-testid': 'group-name' }, label(r.group)) },
      { label: t('usage.requests'), num: true, cell: (r) => fmtInt(r.requests) },
      { label: t('usage.prompt'), num: true, cell: (r) => fmtInt(r.prompt_tokens) },
      { label: t('usage.completion'), num: true, cell: (r) => fmtInt(r.completion_tokens) },
      { label: t('usage.cached'), num: true, cell: (r) => fmtInt(r.cached_tokens) },
      { label: t('usage.cache_write'), num: true, cell: (r) => fmtInt(r.cache_write_5m_tokens + r.cache_write_1h_tokens) },
      { label: t('usage.reasoning'), num: true, cell: (r) => fmtInt(r.reasoning_tokens) },
      { label: t('usage.cost'), num: true, cell: (r) => fmtUsd(r.cost_usd, 6) },
    ], rows, { testid: 'group-table' }),
    h('div', { class: 'total-row' }, h('span', {}, t('billing.total')), h('span', { class: 'strong', 'data-testid': 'group-total' }, fmtUsd(report.total?.cost_usd || 0, 6))),
  ];
  const note = billingGroup.by === 'tag' ? h('p', { class: 'lead', 'data-testid': 'tag-note' }, t('billing.tag_note')) : null;
  page.append(card(t('billing.by_dimension'), [tools, note, body]));
}
