// The Users page (owners): admin users with their roles and status; create
// one, set their role, disable them; their personal tokens (a new token's
// secret shown once, revoke); and what each role may do.
//
// Invariants: a token's secret appears only in the dialog that follows its
// creation; every value is shown as text; the API decides every call (the
// page is offered to owners only).
import { t } from './i18n.js';
import { badge, card, emptyState, h, nextId, table, toast, unavailableState } from './dom.js';
import { fmtTime } from './format.js';
import { api, optional, render } from './api.js';
import { confirmDialog, formDialog, openDialog } from './forms.js';

const ROLES = ['owner', 'admin', 'viewer', 'billing_viewer'];
const roleOptions = () => ROLES.map((r) => [r, t(`users.role.${r}`)]);
const roleNames = (u) => (u.roles || []).map((r) => (r.role in { owner: 1, admin: 1, viewer: 1, billing_viewer: 1, team_admin: 1 } ? t(`users.role.${r.role}`) : r.role)).join(', ');

function showToken(secret) {
  const id = nextId('token');
  const input = h('input', { id, type: 'text', readonly: true, value: secret, class: 'secret', 'data-testid': 'new-token-secret', spellcheck: 'false' });
  const d = openDialog(t('users.token.created'), [
    h('p', { class: 'callout callout-warn' }, t('users.token.once')),
    h('div', { class: 'secret-row' }, input),
    h('div', { class: 'form-actions' }, h('button', { type: 'button', class: 'btn', 'data-testid': 'token-done', onclick: () => d.close() }, t('common.close'))),
  ]);
  input.select();
}

async function tokensDialog(user) {
  const list = await api('GET', `/users/${user.id}/tokens`);
  const rows = list.data || [];
  let d;
  const body = rows.length === 0 ? emptyState(t('users.tokens.none')) : table([
    { label: t('users.token.name'), cell: (k) => h('span', { class: 'strong' }, k.name) },
    { label: t('users.token.prefix'), cell: (k) => h('code', {}, k.prefix) },
    { label: t('users.token.expires'), cell: (k) => fmtTime(k.expires_at) },
    { label: t('users.status'), cell: (k) => (k.live ? badge(t('users.token.live'), 'ok') : badge(t('users.token.dead'), 'bad')) },
    { label: '', cell: (k) => (k.live ? h('button', { type: 'button', class: 'btn btn-sm btn-danger', 'data-testid': 'revoke-token', onclick: async () => {
      if (!(await confirmDialog(t('users.token.revoke_confirm', { name: k.name })))) return;
      await api('DELETE', `/users/${user.id}/tokens/${k.id}`);
      d.close();
      toast(t('users.token.revoked'));
    } }, t('users.token.revoke')) : '') },
  ], rows, { testid: 'tokens-table' });
  const add = h('button', { type: 'button', class: 'btn btn-primary', 'data-testid': 'new-token', onclick: () => {
    d.close();
    formDialog(t('users.token.new'), [{ name: 'name', label: t('users.token.name'), required: true }], async (v) => {
      const made = await api('POST', `/users/${user.id}/tokens`, { name: v.name });
      setTimeout(() => showToken(made.token), 0);
    });
  } }, t('users.token.new'));
  d = openDialog(t('users.tokens.title', { name: user.name }), [body, h('div', { class: 'form-actions' }, add)], { wide: true });
}

function rolesCard() {
  return card(t('users.roles.title'), [table([
    { label: t('users.role'), cell: (r) => h('span', { class: 'strong' }, t(`users.role.${r}`)) },
    { label: t('users.roles.may'), cell: (r) => t(`users.roles.${r}`) },
  ], [...ROLES, 'team_admin'], { testid: 'roles-table' })]);
}

export async function pageUsers(page) {
  const list = await optional('GET', '/users');
  if (!list) return unavailableState(page);
  const rows = list.data || [];
  const create = h('button', { type: 'button', class: 'btn btn-primary', 'data-testid': 'new-user', onclick: () => formDialog(t('users.create'), [
    { name: 'name', label: t('users.name'), required: true },
    { name: 'email', label: t('users.email'), type: 'email', required: true },
    { name: 'role', label: t('users.role'), type: 'select', options: roleOptions(), value: 'viewer' },
  ], async (v) => {
    await api('POST', '/users', { name: v.name, email: v.email, roles: [{ role: v.role }] });
    toast(t('users.created'));
    render();
  }) }, t('users.create'));
  const body = rows.length === 0 ? emptyState(t('users.none')) : table([
    { label: t('users.name'), cell: (u) => h('span', { class: 'strong', 'data-testid': 'user-name' }, u.name) },
    { label: t('users.email'), cell: (u) => u.email },
    { label: t('users.role'), cell: (u) => h('span', { 'data-testid': 'user-roles' }, roleNames(u) || '—') },
    { label: t('users.status'), cell: (u) => (u.status === 'active' ? badge(t('users.active'), 'ok') : badge(t('users.disabled'), 'bad')) },
    { label: t('users.tokens'), num: true, cell: (u) => String(u.live_tokens ?? 0) },
    { label: '', cell: (u) => (u.status !== 'active' ? '' : h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'btn btn-sm', 'data-testid': 'user-role', onclick: () => formDialog(t('users.set_role', { name: u.name }), [
        { name: 'role', label: t('users.role'), type: 'select', options: roleOptions(), value: u.roles?.[0]?.role || 'viewer' },
      ], async (v) => {
        await api('PUT', `/users/${u.id}/roles`, { roles: [{ role: v.role }] });
        render();
      }) }, t('users.role')),
      h('button', { type: 'button', class: 'btn btn-sm', 'data-testid': 'user-tokens', onclick: () => tokensDialog(u).catch((e) => toast(e.message, 'bad')) }, t('users.tokens')),
      h('button', { type: 'button', class: 'btn btn-sm btn-danger', 'data-testid': 'user-disable', onclick: async () => {
        if (!(await confirmDialog(t('users.disable_confirm', { name: u.name }), { label: t('users.disable') }))) return;
        try {
          await api('DELETE', `/users/${u.id}`);
          render();
        } catch (e) {
          toast(e.message, 'bad');
        }
      } }, t('users.disable')))) },
  ], rows, { testid: 'users-table' });
  page.append(card(t('users.title'), [h('p', { class: 'lead' }, t('users.lead')), body], create), rolesCard());
}
