// The API keys page: create (the secret shown once), list with status,
// limits and budget use; edit, top up, rotate, revoke, and each key's
// history.
//
// Invariant: a key's secret appears only in the dialog that follows its
// creation or rotation (a read-only input), never in the list or a URL.
import { t } from './i18n.js';
import { badge, card, emptyState, h, nextId, table, toast } from './dom.js';
import { fmtInt, fmtTime, fmtUsd } from './format.js';
import { api, render } from './api.js';
import { confirmDialog, formDialog, list, openDialog } from './forms.js';

function keyFields(k = {}) {
  const l = k.limits || {};
  const s = k.scopes || {};
  const num = (v) => (v === null || v === undefined ? '' : String(v));
  return [
    { name: 'name', label: t('common.name'), required: true, value: k.name || '' },
    { name: 'owner', label: t('keys.owner'), value: k.owner || '' },
    { name: 'rpm', label: t('keys.rpm'), type: 'number', value: num(l.rpm), placeholder: t('common.unlimited') },
    { name: 'tpm', label: t('keys.tpm'), type: 'number', value: num(l.tpm), placeholder: t('common.unlimited') },
    { name: 'budget_usd', label: t('keys.budget_usd'), type: 'number', value: num(l.budget_usd), placeholder: t('common.unlimited') },
    { name: 'budget_tokens', label: t('keys.budget_tokens'), type: 'number', value: num(l.budget_tokens), placeholder: t('common.unlimited') },
    { name: 'budget_period', label: t('keys.budget_period'), type: 'select', value: l.budget_period || 'monthly', options: ['daily', 'monthly', 'total'].map((p) => [p, t(`keys.period.${p}`)]) },
    { name: 'allowed_models', label: t('keys.allowed_models'), value: (s.allowed_models || []).join(', '), hint: t('keys.scopes.hint') },
    { name: 'allowed_providers', label: t('keys.allowed_providers'), value: (s.allowed_providers || []).join(', '), hint: t('keys.scopes.hint') },
    { name: 'expires_at', label: t('keys.expires_at'), type: 'datetime-local', value: k.expires_at ? new Date(k.expires_at).toISOString().slice(0, 16) : '' },
  ];
}

function keyBody(v, editing) {
  const body = { name: v.name };
  const intOrNull = (s) => (s === '' ? null : Math.floor(Number(s)));
  for (const f of ['rpm', 'tpm', 'budget_tokens']) {
    const val = intOrNull(v[f]);
    if (editing || val !== null) body[f] = val;
  }
  const usd = v.budget_usd === '' ? null : Number(v.budget_usd);
  if (editing || usd !== null) body.budget_usd = usd;
  if (editing || v.owner) body.owner = v.owner || null;
  body.budget_period = v.budget_period;
  body.allowed_models = list(v.allowed_models);
  body.allowed_providers = list(v.allowed_providers);
  if (v.expires_at) body.expires_at = new Date(v.expires_at).toISOString();
  else if (editing) body.expires_at = null;
  return body;
}

function showSecret(title, secret) {
  const id = nextId('secret');
  const input = h('input', { id, type: 'text', readonly: true, value: secret, class: 'secret', 'data-testid': 'new-key-secret', spellcheck: 'false' });
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(secret);
      toast(t('keys.copied'));
    } catch {
      input.select();
      toast(t('keys.copy_failed'), 'warn');
    }
  };
  const d = openDialog(title, [
    h('div', { class: 'callout callout-warn', role: 'alert' }, t('keys.created.warning')),
    h('label', { for: id, class: 'label' }, t('form.api_key')),
    h('div', { class: 'secret-row' }, input, h('button', { type: 'button', class: 'btn btn-primary', onclick: copy }, t('keys.copy'))),
    h('div', { class: 'form-actions' }, h('button', { type: 'button', class: 'btn', 'data-testid': 'secret-done', onclick: () => d.close() }, t('common.close'))),
  ]);
  input.focus();
  input.select();
}

function budgetCell(k, detail) {
  const l = k.limits || {};
  const b = detail?.budget;
  if (!l.budget_usd && !l.budget_tokens) return h('span', { class: 'muted' }, t('common.unlimited'));
  const parts = [];
  if (b && b.budget_usd !== null && b.budget_usd !== undefined) {
    const used = Math.min(1, (b.spent_usd + b.held_usd) / (b.budget_usd || 1));
    parts.push(h('div', {}, `${fmtUsd(b.spent_usd, 4)} ${t('keys.spent')} / ${fmtUsd(b.budget_usd, 2)}`),
      h('div', { class: 'meter', role: 'meter', 'aria-valuemin': '0', 'aria-valuemax': '100', 'aria-valuenow': String(Math.round(used * 100)), 'aria-label': t('keys.budget') }, h('span', { style: undefined, class: 'meter-fill', 'data-w': String(Math.round(used * 100)) })),
      h('div', { class: 'sub' }, `${fmtUsd(b.remaining_usd, 4)} ${t('keys.remaining')} · ${t(`keys.period.${l.budget_period || 'monthly'}`)}`));
  } else if (l.budget_usd) {
    parts.push(h('div', {}, fmtUsd(l.budget_usd, 2)));
  }
  if (l.budget_tokens) {
    const spent = b ? fmtInt(b.spent_tokens) : '?';
    parts.push(h('div', { class: 'sub' }, `${spent} / ${fmtInt(l.budget_tokens)} tokens`));
  }
  return h('div', {}, parts);
}

export async function pageKeys(page) {
  const keys = (await api('GET', '/keys'))?.data || [];
  keys.sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
  const details = new Map();
  await Promise.all(keys.filter((k) => k.status === 'active').slice(0, 100).map(async (k) => {
    try {
      details.set(k.id, await api('GET', `/keys/${encodeURIComponent(k.id)}`));
    } catch {
      /* the list still shows the key */
    }
  }));
  const reload = () => render();
  const create = () => formDialog(t('keys.create.title'), keyFields(), async (v) => {
    const created = await api('POST', '/keys', keyBody(v, false));
    reload();
    showSecret(t('keys.created.title'), created.key);
  });
  const body = keys.length === 0 ? emptyState(t('keys.none')) : table([
    { label: t('common.name'), cell: (k) => h('div', { class: 'cell-main' }, h('span', { class: 'strong', 'data-testid': 'key-name' }, k.name), k.owner ? h('span', { class: 'sub' }, k.owner) : null) },
    { label: t('keys.prefix'), cell: (k) => h('code', {}, `${k.prefix}…`) },
    { label: t('keys.status'), cell: (k) => badge(t(`keys.status.${k.status}`), { active: 'ok', revoked: 'bad', expired: 'warn' }[k.status] || 'muted') },
    { label: t('keys.limits'), cell: (k) => h('div', { class: 'sub-list' }, h('div', {}, `RPM ${k.limits?.rpm ?? '∞'}`), h('div', {}, `TPM ${k.limits?.tpm ? fmtInt(k.limits.tpm) : '∞'}`)) },
    { label: t('keys.budget'), cell: (k) => budgetCell(k, details.get(k.id)) },
    { label: t('keys.created'), cell: (k) => h('span', { class: 'nowrap' }, fmtTime(k.created_at)) },
    {
      label: t('common.actions'),
      cell: (k) => h('div', { class: 'actions' },
        k.status === 'active' ? [
          h('button', { type: 'button', class: 'btn btn-sm', onclick: () => formDialog(t('keys.edit.title', { name: k.name }), keyFields(k), async (v) => {
            await api('PATCH', `/keys/${encodeURIComponent(k.id)}`, keyBody(v, true));
            toast(t('common.saved'));
            reload();
          }) }, t('common.edit')),
          h('button', { type: 'button', class: 'btn btn-sm', onclick: () => formDialog(t('keys.topup.title', { name: k.name }), [
            { name: 'amount_usd', label: t('keys.topup.amount'), type: 'number' },
            { name: 'tokens', label: t('keys.topup.tokens'), type: 'number' },
          ], async (v) => {
            if (!v.amount_usd && !v.tokens) throw new Error(t('keys.topup.need'));
            const b = {};
            if (v.amount_usd) b.amount_usd = Number(v.amount_usd);
            if (v.tokens) b.tokens = Math.floor(Number(v.tokens));
            await api('POST', `/keys/${encodeURIComponent(k.id)}/topup`, b);
            toast(t('keys.topup.done'));
            reload();
          }) }, t('keys.topup')),
          h('button', { type: 'button', class: 'btn btn-sm', onclick: () => formDialog(t('keys.rotate.title', { name: k.name }), [
            { name: 'grace_seconds', label: t('keys.rotate.grace'), type: 'number', value: '3600' },
          ], async (v) => {
            const b = v.grace_seconds ? { grace_seconds: Math.floor(Number(v.grace_seconds)) } : {};
            const rotated = await api('POST', `/keys/${encodeURIComponent(k.id)}/rotate`, b);
            reload();
            showSecret(t('keys.created.title'), rotated.key);
          }, { lead: t('keys.rotate.lead'), submitLabel: t('keys.rotate') }) }, t('keys.rotate')),
        ] : null,
        h('button', { type: 'button', class: 'btn btn-sm', onclick: () => keyHistory(k) }, t('keys.history')),
        k.status === 'active' ? h('button', {
          type: 'button', class: 'btn btn-sm btn-danger-ghost', 'data-testid': `revoke-${k.name}`,
          onclick: async () => {
            if (!(await confirmDialog(t('keys.revoke.confirm', { name: k.name }), { label: t('keys.revoke') }))) return;
            try {
              await api('POST', `/keys/${encodeURIComponent(k.id)}/revoke`, {});
              toast(t('keys.revoked'));
              reload();
            } catch (e) {
              toast(e.message, 'bad');
            }
          },
        }, t('keys.revoke')) : null),
    },
  ], keys, { testid: 'keys-table' });
  page.append(card(t('keys.title'), body,
    h('button', { type: 'button', class: 'btn btn-primary', 'data-testid': 'create-key', onclick: create }, `+ ${t('keys.create')}`)));
  for (const fill of page.querySelectorAll('.meter-fill')) fill.style.width = `${fill.dataset.w}%`;
}

async function keyHistory(k) {
  const events = (await api('GET', `/keys/${encodeURIComponent(k.id)}/events`))?.data || [];
  openDialog(t('keys.history.title', { name: k.name }), h('ol', { class: 'timeline' }, events.map((e) => h('li', {},
    h('div', { class: 'timeline-head' }, h('span', { class: 'strong' }, e.type), h('span', { class: 'sub' }, `${fmtTime(e.at)} · ${e.actor || ''}`)),
    h('pre', { class: 'json' }, JSON.stringify(e.data, null, 2))))), { wide: true });
}
