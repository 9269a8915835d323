// The Request log page: the latest requests filtered by key, model and
// status, and one request's events (accepted, each attempt, outcome).
//
// Invariant: the filter lives in this module (kept across redraws); event
// data is shown as JSON text in <pre>, never parsed as markup.
import { t } from './i18n.js';
import { badge, card, emptyState, h, nextId, table, toast, unavailableState } from './dom.js';
import { fmtInt, fmtTime, fmtUsd, shortId } from './format.js';
import { api, keyNames, optional, render } from './api.js';
import { openDialog } from './forms.js';

const requestFilter = { key_id: '', model: '', status: '' };

export async function pageRequests(page) {
  const names = await keyNames();
  const q = new URLSearchParams({ limit: '200' });
  for (const [k, v] of Object.entries(requestFilter)) if (v) q.set(k, v);
  const log = await optional('GET', `/usage/requests?${q}`);
  if (!log) return unavailableState(page);
  const keyId = nextId('fk');
  const modelId = nextId('fm');
  const statusId = nextId('fs');
  const keySel = h('select', { id: keyId }, h('option', { value: '' }, t('common.all')), [...names].map(([id, n]) => h('option', { value: id }, n)));
  keySel.value = requestFilter.key_id;
  const model = h('input', { id: modelId, type: 'text', value: requestFilter.model, autocomplete: 'off' });
  const status = h('select', { id: statusId }, h('option', { value: '' }, t('common.all')), h('option', { value: 'ok' }, t('requests.ok')), h('option', { value: 'error' }, t('requests.error')));
  status.value = requestFilter.status;
  const filters = h('form', {
    class: 'filters',
    onsubmit: (ev) => {
      ev.preventDefault();
      requestFilter.key_id = keySel.value;
      requestFilter.model = model.value.trim();
      requestFilter.status = status.value;
      render();
    },
  },
  h('div', { class: 'inline-field' }, h('label', { for: keyId }, t('requests.filter.key')), keySel),
  h('div', { class: 'inline-field' }, h('label', { for: modelId }, t('requests.filter.model')), model),
  h('div', { class: 'inline-field' }, h('label', { for: statusId }, t('requests.filter.status')), status),
  h('button', { type: 'submit', class: 'btn' }, t('requests.filter.apply')));
  const rows = log.data || [];
  const body = rows.length === 0 ? emptyState(t('requests.none')) : table([
    { label: t('requests.time'), cell: (r) => h('span', { class: 'nowrap' }, fmtTime(r.at)) },
    { label: t('requests.status'), cell: (r) => (r.status === 'ok' ? badge(t('requests.ok'), 'ok') : badge(`${t('requests.error')} ${r.http_status ?? ''}`, 'bad')) },
    { label: t('usage.key'), cell: (r) => h('span', { class: 'nowrap' }, names.get(r.key_id) || shortId(r.key_id)) },
    { label: t('usage.model'), cell: (r) => h('span', { 'data-testid': 'log-model' }, r.model || '—') },
    { label: t('usage.provider'), cell: (r) => r.provider || '—' },
    { label: t('usage.tokens'), num: true, cell: (r) => fmtInt(r.usage?.total_tokens ?? ((r.usage?.prompt_tokens || 0) + (r.usage?.completion_tokens || 0))) },
    { label: t('usage.cost'), num: true, cell: (r) => fmtUsd(r.cost_usd, 6) },
    { label: t('requests.latency'), num: true, cell: (r) => (r.latency_ms !== null && r.latency_ms !== undefined ? `${fmtInt(r.latency_ms)} ms` : '—') },
    { label: t('common.actions'), cell: (r) => h('button', { type: 'button', class: 'btn btn-sm', onclick: () => requestDetail(r.id) }, t('common.details')) },
  ], rows, { testid: 'requests-table' });
  page.append(card(t('requests.title'), [filters, body]));
}

async function requestDetail(id) {
  try {
    const detail = await api('GET', `/usage/requests/${encodeURIComponent(id)}`);
    openDialog(t('requests.detail.title', { id: shortId(id) }), [
      h('p', {}, h('code', {}, id)),
      h('h3', {}, t('requests.events')),
      h('ol', { class: 'timeline' }, (detail.events || []).map((e) => h('li', {},
        h('div', { class: 'timeline-head' }, h('span', { class: 'strong' }, e.type), h('span', { class: 'sub' }, fmtTime(e.data?.at))),
        h('pre', { class: 'json' }, JSON.stringify(e.data, null, 2))))),
    ], { wide: true });
  } catch (e) {
    toast(e.message, 'bad');
  }
}
