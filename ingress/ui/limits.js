// Limits, budgets and scopes as keys, projects and teams share them: the
// form fields that edit them, the request body built from those fields, and
// how a level's limits, scopes and budget use are shown.
//
// Invariants: the body follows the admin API's rule for PATCH (an absent
// field keeps its value, `null` removes a limit), so an edit sends every
// limit and a creation only those filled in; alert thresholds are sent only
// when changed, so an untouched form never turns the defaults into an
// explicit list.
import { t } from './i18n.js';
import { h } from './dom.js';
import { fmtInt, fmtUsd } from './format.js';
import { list } from './forms.js';

const PERIODS = ['daily', 'monthly', 'total'];
const num = (v) => (v === null || v === undefined ? '' : String(v));
const thresholdsText = (l) => (l.alert_thresholds || []).join(', ');

/** Alert thresholds as typed: 1 to 10 distinct whole percentages, 1-100. */
function validThresholds(v) {
  const items = list(v);
  const ok = items.length <= 10 && items.every((x) => /^\d{1,3}$/.test(x) && Number(x) >= 1 && Number(x) <= 100)
    && new Set(items.map(Number)).size === items.length;
  return ok ? null : t('limits.thresholds.bad');
}

/** The form fields of `limits` and `scopes` (as the API returns them). */
export function limitFields(limits = {}, scopes = {}) {
  const l = limits || {};
  const s = scopes || {};
  return [
    { name: 'rpm', label: t('keys.rpm'), type: 'number', value: num(l.rpm), placeholder: t('common.unlimited') },
    { name: 'tpm', label: t('keys.tpm'), type: 'number', value: num(l.tpm), placeholder: t('common.unlimited') },
    { name: 'budget_usd', label: t('keys.budget_usd'), type: 'number', value: num(l.budget_usd), placeholder: t('common.unlimited') },
    { name: 'budget_tokens', label: t('keys.budget_tokens'), type: 'number', value: num(l.budget_tokens), placeholder: t('common.unlimited') },
    { name: 'budget_period', label: t('keys.budget_period'), type: 'select', value: l.budget_period || 'monthly', options: PERIODS.map((p) => [p, t(`keys.period.${p}`)]) },
    { name: 'alert_thresholds', label: t('limits.thresholds'), value: thresholdsText(l), placeholder: '50, 80, 100', hint: t('limits.thresholds.hint'), validate: validThresholds },
    { name: 'allowed_models', label: t('keys.allowed_models'), value: (s.allowed_models || []).join(', '), hint: t('keys.scopes.hint') },
    { name: 'allowed_providers', label: t('keys.allowed_providers'), value: (s.allowed_providers || []).join(', '), hint: t('keys.scopes.hint') },
  ];
}

/**
 * The limits and scopes part of a create (`before` undefined) or PATCH
 * body (`before`: the limits the form started from) from the form's values.
 */
export function limitBody(v, before) {
  const editing = before !== undefined;
  const body = {};
  const intOrNull = (s) => (s === '' ? null : Math.floor(Number(s)));
  for (const f of ['rpm', 'tpm', 'budget_tokens']) {
    const val = intOrNull(v[f]);
    if (editing || val !== null) body[f] = val;
  }
  const usd = v.budget_usd === '' ? null : Number(v.budget_usd);
  if (editing || usd !== null) body.budget_usd = usd;
  body.budget_period = v.budget_period;
  const thresholds = list(v.alert_thresholds).map(Number);
  if (editing ? v.alert_thresholds !== thresholdsText(before || {}) : thresholds.length) {
    body.alert_thresholds = thresholds.length ? thresholds : null;
  }
  body.allowed_models = list(v.allowed_models);
  body.allowed_providers = list(v.allowed_providers);
  return body;
}

/** RPM and TPM, ∞ where unlimited. */
export function rateCell(limits) {
  const l = limits || {};
  return h('div', { class: 'sub-list' }, h('div', {}, `RPM ${l.rpm ?? '∞'}`), h('div', {}, `TPM ${l.tpm ? fmtInt(l.tpm) : '∞'}`));
}

/** Allowed models and providers, or "all" when a list is empty. */
export function scopesCell(scopes) {
  const s = scopes || {};
  const line = (label, items) => h('div', { class: 'scope' }, h('span', { class: 'sub' }, `${label}: `),
    items?.length ? items.join(', ') : h('span', { class: 'muted' }, t('common.all')));
  return h('div', { class: 'sub-list' }, line(t('common.models'), s.allowed_models), line(t('limits.providers'), s.allowed_providers));
}

/**
 * A budget's use: spent of the budget with a meter, what remains and the
 * period; `budget` is the API's budget object (null while unknown).
 */
export function budgetCell(limits, budget) {
  const l = limits || {};
  const b = budget;
  if (!l.budget_usd && !l.budget_tokens) return h('span', { class: 'muted' }, t('common.unlimited'));
  const parts = [];
  if (b && b.budget_usd !== null && b.budget_usd !== undefined) {
    const used = Math.min(1, (b.spent_usd + b.held_usd) / (b.budget_usd || 1));
    parts.push(h('div', { 'data-testid': 'budget-spent' }, `${fmtUsd(b.spent_usd, 4)} ${t('keys.spent')} / ${fmtUsd(b.budget_usd, 2)}`),
      h('div', { class: 'meter', role: 'meter', 'aria-valuemin': '0', 'aria-valuemax': '100', 'aria-valuenow': String(Math.round(used * 100)), 'aria-label': t('keys.budget') }, h('span', { class: 'meter-fill', 'data-w': String(Math.round(used * 100)) })),
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

/** Sizes the meters drawn by budgetCell (the CSP allows no inline styles in markup). */
export function fillMeters(root) {
  for (const fill of root.querySelectorAll('.meter-fill')) fill.style.width = `${fill.dataset.w}%`;
}
