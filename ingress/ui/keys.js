// The API keys page: create (the secret shown once), list with status,
// project, limits and budget use; edit (project, limits, budget, alert
// thresholds, scopes, expiry), top up, rotate, revoke, and each key's
// history.
//
// Invariant: a key's secret appears only in the dialog that follows its
// creation or rotation (a read-only input), never in the list or a URL.
import { t } from './i18n.js';
import { badge, card, emptyState, h, nextId, table, toast } from './dom.js';
import { fmtTime, localInput, shortId } from './format.js';
import { api, render } from './api.js';
import { confirmDialog, formDialog, openDialog } from './forms.js';
import { budgetCell, fillMeters, limitBody, limitFields, rateCell } from './limits.js';
import { listProjects, projectLabel } from './teams.js';

/** The key form's fields; `projects` (from listProjects) fill the project selector. */
function keyFields(k, projects) {
  const key = k || {};
  // A revoked key may name a project deleted since: still offered, by id.
  const known = !key.project_id || projects.some((p) => p.id === key.project_id);
  return [
    { name: 'name', label: t('common.name'), required: true, value: key.name || '' },
    { name: 'owner', label: t('keys.owner'), value: key.owner || '' },
    {
      name: 'project_id', label: t('keys.project'), type: 'select', value: key.project_id || '', hint: t('keys.project.hint'),
      options: [['', t('keys.project.none')], ...projects.map((p) => [p.id, projectLabel(p)]), ...(known ? [] : [[key.project_id, shortId(key.project_id)]])],
    },
    ...limitFields(key.limits, key.scopes),
    { name: 'expires_at', label: t('keys.expires_at'), type: 'datetime-local', value: localInput(key.expires_at) },
  ];
}

/** A create (`k` undefined) or PATCH body from the key form's values. */
function keyBody(v, k) {
  const editing = k !== undefined;
  const body = { name: v.name, ...limitBody(v, editing ? k.limits || {} : undefined) };
  if (editing || v.owner) body.owner = v.owner || null;
  if (editing || v.project_id) body.project_id = v.project_id || null;
  // Sent only when changed: the field holds minutes, the key may have seconds.
  if (!editing || v.expires_at !== localInput(k.expires_at)) {
    if (v.expires_at) body.expires_at = new Date(v.expires_at).toISOString();
    else if (editing) body.expires_at = null;
  }
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

export async function pageKeys(page) {
  const [keys, projects] = await Promise.all([api('GET', '/keys').then((r) => r?.data || []), listProjects()]);
  const projectOf = new Map(projects.map((p) => [p.id, p]));
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
  const create = () => formDialog(t('keys.create.title'), keyFields(undefined, projects), async (v) => {
    const created = await api('POST', '/keys', keyBody(v));
    reload();
    showSecret(t('keys.created.title'), created.key);
  });
  const body = keys.length === 0 ? emptyState(t('keys.none')) : table([
    // The prefix under the name keeps the table within a desktop's width.
    { label: t('common.name'), cell: (k) => h('div', { class: 'cell-main' }, h('span', { class: 'strong', 'data-testid': 'key-name' }, k.name), k.owner ? h('span', { class: 'sub' }, k.owner) : null, h('code', { class: 'sub', title: t('keys.prefix') }, `${k.prefix}…`)) },
    { label: t('keys.status'), cell: (k) => badge(t(`keys.status.${k.status}`), { active: 'ok', revoked: 'bad', expired: 'warn' }[k.status] || 'muted') },
    { label: t('keys.project'), cell: (k) => projectCell(k.project_id, projectOf) },
    { label: t('keys.limits'), cell: (k) => rateCell(k.limits) },
    { label: t('keys.budget'), cell: (k) => budgetCell(k.limits, details.get(k.id)?.budget) },
    { label: t('keys.created'), cell: (k) => fmtTime(k.created_at) },
    {
      label: t('common.actions'),
      cell: (k) => h('div', { class: 'actions' },
        k.status === 'active' ? [
          h('button', { type: 'button', class: 'btn btn-sm', onclick: () => formDialog(t('keys.edit.title', { name: k.name }), keyFields(k, projects), async (v) => {
            await api('PATCH', `/keys/${encodeURIComponent(k.id)}`, keyBody(v, k));
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
  fillMeters(page);
}

/** A key's project, with its team below (none: a dash). */
function projectCell(id, projectOf) {
  if (!id) return h('span', { class: 'muted' }, '—');
  const p = projectOf.get(id);
  if (!p) return h('code', {}, shortId(id));
  return h('div', { class: 'cell-main' }, h('span', { 'data-testid': 'key-project' }, p.name), p.team_name ? h('span', { class: 'sub' }, p.team_name) : null);
}

async function keyHistory(k) {
  const events = (await api('GET', `/keys/${encodeURIComponent(k.id)}/events`))?.data || [];
  openDialog(t('keys.history.title', { name: k.name }), h('ol', { class: 'timeline' }, events.map((e) => h('li', {},
    h('div', { class: 'timeline-head' }, h('span', { class: 'strong' }, e.type), h('span', { class: 'sub' }, `${fmtTime(e.at)} · ${e.actor || ''}`)),
    h('pre', { class: 'json' }, JSON.stringify(e.data, null, 2))))), { wide: true });
}
