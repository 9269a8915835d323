// The aigw admin UI: a small single-page app over /admin/api. Every piece of
// data reaches the page through textContent or attributes, never as HTML.
import { t, getLang, setLang } from './i18n.js';
import { barChart } from './charts.js';

const TOKEN = 'aigw.token';
const CATEGORIES = ['top', 'china', 'open', 'specialised', 'emerging'];
// Typed like passwords: never shown on screen.
const SECRET_FIELDS = ['aws_secret_access_key', 'aws_session_token'];
const EXTRA_FIELDS = ['base_url', 'deployment', 'api_version', 'region', 'account_id', 'aws_access_key_id', 'aws_secret_access_key', 'aws_session_token'];
const ICONS = {
  providers: 'M4 4h16v6H4zM4 14h16v6H4zM7 7h1M7 17h1',
  keys: 'M8 15a4 4 0 1 1 0-8 4 4 0 0 1 0 8zM12 11h9M18 11v3M21 11v2',
  usage: 'M5 20V11M11 20V5M17 20v-7M3 20h18',
  requests: 'M9 6h12M9 12h12M9 18h12M4 6h1M4 12h1M4 18h1',
  billing: 'M6 3h12v18l-3-2-3 2-3-2-3 2zM9 8h6M9 12h6M9 16h3',
  jobs: 'M12 21a9 9 0 1 1 0-18 9 9 0 0 1 0 18zM12 7v5l3 2',
  alerts: 'M6 16V11a6 6 0 1 1 12 0v5l2 2H4zM10 21h4',
  routing: 'M4 8h14l-3-3M20 16H6l3 3',
  globe: 'M12 21a9 9 0 1 1 0-18 9 9 0 0 1 0 18zM3 12h18M12 3c3 3 3 15 0 18M12 3c-3 3-3 15 0 18',
  refresh: 'M19 12a7 7 0 1 1-2-5M19 4v4h-4',
};

/** A line icon as inline SVG (decorative). */
function icon(name) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('class', 'icon');
  svg.setAttribute('aria-hidden', 'true');
  const path = document.createElementNS(ns, 'path');
  path.setAttribute('d', ICONS[name]);
  svg.append(path);
  return svg;
}

const PAGES = [
  { id: 'providers', render: pageProviders },
  { id: 'keys', render: pageKeys },
  { id: 'usage', render: pageUsage },
  { id: 'requests', render: pageRequests },
  { id: 'billing', render: pageBilling },
  { id: 'jobs', render: pageJobs },
  { id: 'alerts', render: pageAlerts },
  { id: 'routing', render: pageAliases },
];

// ---- DOM helpers ----

/** Builds an element. Strings and numbers among `children` become text nodes. */
function h(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = String(v);
    else if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
    else if (k === 'value') e.value = v;
    else if (k === 'checked') e.checked = !!v;
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  append(e, children);
  return e;
}

function append(e, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function clear(e) {
  while (e.firstChild) e.firstChild.remove();
  return e;
}

let uid = 0;
const nextId = (p) => `${p}-${++uid}`;

function toast(message, kind = 'ok') {
  const box = document.getElementById('toasts');
  const item = h('div', { class: `toast toast-${kind}` }, message);
  box.append(item);
  setTimeout(() => item.remove(), 3000);
}

const fmtInt = (n) => new Intl.NumberFormat(getLang() === 'zh' ? 'zh-CN' : 'en').format(Number(n) || 0);
function fmtUsd(v, digits = 4) {
  if (v === null || v === undefined) return '—';
  const n = Number(v);
  if (n > 0 && n < 0.01) return `$${n.toPrecision(2)}`;
  return `$${n.toFixed(Math.min(digits, 2))}`;
}
const fmtPct = (v) => `${(v * 100).toFixed(1)}%`;
function fmtTime(s) {
  if (!s) return '—';
  const d = new Date(s);
  if (Number.isNaN(d.getTime())) return String(s);
  return d.toLocaleString(getLang() === 'zh' ? 'zh-CN' : 'en', { dateStyle: 'medium', timeStyle: 'short' });
}
const isoDay = (d) => d.toISOString().slice(0, 10);
const shortId = (id) => String(id || '').slice(-8);

// ---- API ----

class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.param = body?.error?.param ?? null;
    this.unavailable = status === 405 || (status === 404 && body?.error?.code === 'unknown_url');
  }
}

let signingIn = false;

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(TOKEN) || ''}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(`/admin/api${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!res.ok) {
    const err = new ApiError(res.status, data?.error?.message || `${res.status} ${res.statusText}`, data);
    if (res.status === 401 && !signingIn && sessionStorage.getItem(TOKEN)) {
      sessionStorage.removeItem(TOKEN);
      setTimeout(render, 0);
    }
    throw err;
  }
  return data;
}

/** `api`, but a missing endpoint yields `null` instead of an error. */
async function optional(method, path) {
  try {
    return await api(method, path);
  } catch (e) {
    if (e.unavailable) return null;
    throw e;
  }
}

// ---- dialogs and forms ----

function openDialog(title, content, { wide = false } = {}) {
  const titleId = nextId('dlg');
  const dialog = h('dialog', { class: wide ? 'dialog wide' : 'dialog', 'aria-labelledby': titleId });
  const close = () => {
    if (dialog.open) dialog.close();
  };
  dialog.addEventListener('close', () => dialog.remove());
  append(dialog, [
    h('div', { class: 'dialog-head' },
      h('h2', { id: titleId }, title),
      h('button', { type: 'button', class: 'icon-btn', 'aria-label': t('common.close'), onclick: close }, '×')),
    h('div', { class: 'dialog-body' }, content),
  ]);
  document.body.append(dialog);
  dialog.showModal();
  return { dialog, close };
}

function confirmDialog(message, { danger = true, label = t('common.confirm'), dismiss = t('common.cancel') } = {}) {
  return new Promise((resolve) => {
    let answered = false;
    const done = (v) => {
      answered = true;
      resolve(v);
      d.close();
    };
    const d = openDialog(t('common.confirm'), [
      h('p', {}, message),
      h('div', { class: 'form-actions' },
        h('button', { type: 'button', class: 'btn', onclick: () => done(false) }, dismiss),
        h('button', { type: 'button', class: danger ? 'btn btn-danger' : 'btn btn-primary', 'data-testid': 'confirm', onclick: () => done(true) }, label)),
    ]);
    d.dialog.addEventListener('close', () => answered || resolve(false));
  });
}

/**
 * A form from field specs: {name, label, type, value, required, hint,
 * options, placeholder, validate, group}. `onSubmit(values)` may throw an
 * ApiError, whose message is shown in the form.
 */
function buildForm(fields, { submitLabel = t('common.save'), onSubmit, onCancel }) {
  const form = h('form', { class: 'form', novalidate: true });
  const inputs = {};
  const errors = {};
  const formError = h('div', { class: 'form-error', role: 'alert', hidden: true });
  const groups = {};
  for (const f of fields) {
    const id = nextId(`f-${f.name}`);
    let input;
    if (f.type === 'select') {
      input = h('select', { id, name: f.name }, (f.options || []).map(([v, label]) => h('option', { value: v }, label)));
      input.value = f.value ?? '';
    } else if (f.type === 'textarea') {
      input = h('textarea', { id, name: f.name, rows: f.rows || 3, placeholder: f.placeholder });
      input.value = f.value ?? '';
    } else {
      input = h('input', {
        id, name: f.name, type: f.type || 'text', value: f.value ?? '', placeholder: f.placeholder,
        autocomplete: f.type === 'password' ? 'off' : f.autocomplete || 'off',
        step: f.type === 'number' ? 'any' : undefined, min: f.type === 'number' ? '0' : undefined,
        spellcheck: 'false',
      });
    }
    if (f.required) input.setAttribute('aria-required', 'true');
    const err = h('div', { class: 'field-error', id: `${id}-err`, hidden: true });
    const hintId = f.hint ? `${id}-hint` : undefined;
    const describedBy = [hintId, `${id}-err`].filter(Boolean).join(' ');
    input.setAttribute('aria-describedby', describedBy);
    inputs[f.name] = input;
    errors[f.name] = err;
    const row = h('div', { class: 'field' },
      h('label', { for: id }, f.label, f.required ? h('span', { class: 'req', 'aria-hidden': 'true' }, ' *') : h('span', { class: 'opt' }, ` (${t('common.optional')})`)),
      input,
      f.hint ? h('div', { class: 'hint', id: hintId }, f.hint) : null,
      err);
    if (f.group) {
      if (!groups[f.group]) {
        groups[f.group] = h('details', { class: 'advanced' }, h('summary', {}, f.group));
        form.append(groups[f.group]);
      }
      groups[f.group].append(row);
    } else {
      form.append(row);
    }
  }
  const submit = h('button', { type: 'submit', class: 'btn btn-primary' }, submitLabel);
  append(form, [formError, h('div', { class: 'form-actions' },
    h('button', { type: 'button', class: 'btn', onclick: () => onCancel && onCancel() }, t('common.cancel')),
    submit)]);
  const showError = (name, message) => {
    const err = errors[name];
    if (!err) return false;
    err.textContent = message;
    err.hidden = false;
    inputs[name].setAttribute('aria-invalid', 'true');
    const details = inputs[name].closest('details');
    if (details) details.open = true;
    return true;
  };
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    formError.hidden = true;
    let first = null;
    const values = {};
    for (const f of fields) {
      const input = inputs[f.name];
      errors[f.name].hidden = true;
      input.removeAttribute('aria-invalid');
      const v = input.value.trim();
      values[f.name] = v;
      let problem = null;
      if (f.required && !v) problem = t('common.required');
      else if (v && f.type === 'number' && !(Number(v) >= 0)) problem = t('common.number');
      else if (v && f.validate) problem = f.validate(v);
      if (problem) {
        showError(f.name, problem);
        first = first || input;
      }
    }
    if (first) {
      first.focus();
      return;
    }
    submit.disabled = true;
    try {
      await onSubmit(values);
    } catch (e) {
      formError.textContent = e.message || t('common.error');
      formError.hidden = false;
      if (e.param) showError(e.param, e.message);
    } finally {
      submit.disabled = false;
    }
  });
  return { form, inputs };
}

function formDialog(title, fields, onSubmit, opts = {}) {
  let d;
  const { form, inputs } = buildForm(fields, {
    ...opts,
    onCancel: () => d.close(),
    onSubmit: async (values) => {
      await onSubmit(values);
      d.close();
    },
  });
  d = openDialog(title, [opts.lead ? h('p', { class: 'lead' }, opts.lead) : null, form], opts);
  const firstInput = form.querySelector('input, select, textarea');
  if (firstInput) firstInput.focus();
  return { ...d, inputs };
}

const validUrl = (v) => (/^https?:\/\/[^\s/]+/i.test(v) ? null : t('form.bad_url'));
const validName = (v) => (v.length <= 64 && !v.includes('/') ? null : t('form.bad_name'));
const list = (v) => v.split(/[\n,]/).map((s) => s.trim()).filter(Boolean);

/**
 * An Azure provider's deployments from `deployment = model` lines (a line
 * with only a deployment: its model is not said, so it is served unpriced):
 * {deployment: model|null}, or null when a line is malformed.
 */
function parseDeployments(text) {
  const out = {};
  for (const line of text.split('\n').map((l) => l.trim()).filter(Boolean)) {
    const [name, model, ...rest] = line.split('=').map((x) => x.trim());
    if (!name || rest.length || /\s/.test(name) || /\s/.test(model || '')) return null;
    out[name] = model || null;
  }
  return out;
}

/** Deployments as the editor shows them, one `deployment = model` a line. */
const deploymentLines = (d) => Object.entries(d || {}).map(([name, model]) => (model ? `${name} = ${model}` : name)).join('\n');

const validDeployments = (v) => {
  const d = parseDeployments(v);
  return d && Object.keys(d).length ? null : t('form.need_deployment');
};

/** The deployments editor of an Azure provider's form. */
const deploymentsField = (value) => ({ name: 'deployments', label: t('form.deployments'), type: 'textarea', rows: 4, required: true, value, placeholder: 'my-gpt4o-mini = gpt-4o-mini\nprod-5 = gpt-5.4', hint: t('form.deployments.hint'), validate: validDeployments });

function unavailableState(page, extra) {
  append(page, h('div', { class: 'empty unavailable', 'data-testid': 'unavailable' },
    h('div', { class: 'empty-title' }, t('common.unavailable')),
    h('p', {}, t('common.unavailable.long')), extra));
}

function emptyState(message) {
  return h('div', { class: 'empty' }, h('p', {}, message));
}

function table(columns, rows, { testid, rowProps } = {}) {
  return h('div', { class: 'table-wrap' },
    h('table', { class: 'table', 'data-testid': testid },
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col', class: c.num ? 'num' : undefined }, c.label)))),
      h('tbody', {}, rows.map((r) => h('tr', rowProps ? rowProps(r) : {}, columns.map((c) => h('td', { class: c.num ? 'num' : undefined, 'data-label': c.label }, c.cell(r))))))));
}

function badge(text, kind) {
  return h('span', { class: `badge badge-${kind}` }, text);
}

function card(title, body, action) {
  return h('section', { class: 'panel' },
    h('div', { class: 'panel-head' }, h('h2', {}, title), action || null),
    body);
}

// ---- providers ----

function presetName(p) {
  return getLang() === 'zh' && p.name_zh ? p.name_zh : p.name;
}

function presetDescription(p) {
  return getLang() === 'zh' && p.description_zh ? p.description_zh : p.description;
}

function priceRange(p) {
  const prices = (p.models || []).flatMap((m) => [m.input_usd_per_mtok, m.output_usd_per_mtok]).filter((v) => typeof v === 'number');
  if (!prices.length) return t('providers.price_unknown');
  const n = (v) => String(Math.round(v * 1000) / 1000);
  return t('providers.price_range', { min: n(Math.min(...prices)), max: n(Math.max(...prices)) });
}

function healthBadge(status) {
  const s = String(status || '').toLowerCase();
  const kind = { up: 'ok', healthy: 'ok', degraded: 'warn', down: 'bad', unhealthy: 'bad' }[s];
  const key = { up: 'up', healthy: 'up', degraded: 'degraded', down: 'down', unhealthy: 'down' }[s] || 'unknown';
  return badge(t(`providers.health.${key}`), kind || 'muted');
}

/** Provider id and name to its health entry ({status, breakers}). */
function healthIndex(health) {
  const index = new Map();
  const items = Array.isArray(health) ? health : health?.data || health?.providers || [];
  for (const item of Array.isArray(items) ? items : []) {
    for (const k of [item.provider_id, item.id, item.provider, item.name]) if (k) index.set(String(k), item);
  }
  return index;
}

function healthCell(health, entry) {
  if (!health) return h('span', { title: t('providers.health.na') }, healthBadge(null));
  const breakers = (entry?.breakers || []).filter((b) => b.state && b.state !== 'closed');
  const detail = breakers.map((b) => `${b.model || '*'}: ${t(`providers.breaker.${b.state}`)}${b.last_error ? ` (${b.last_error})` : ''}`).join('\n');
  return h('span', { title: detail || undefined, class: 'health' }, healthBadge(entry?.status || entry?.health || entry?.state));
}

function enableSwitch(p, na, reload) {
  if (typeof p.enabled !== 'boolean') {
    return h('label', { class: 'switch', title: na }, h('input', { type: 'checkbox', checked: true, disabled: true, 'aria-label': `${t('providers.enabled')}: ${na}` }), h('span', { class: 'slider', 'aria-hidden': 'true' }));
  }
  const input = h('input', {
    type: 'checkbox', checked: p.enabled, 'aria-label': `${t('providers.enabled')}: ${p.name}`, 'data-testid': `enable-${p.name}`,
    onchange: async (ev) => {
      const enabled = ev.target.checked;
      ev.target.disabled = true;
      try {
        await api('PATCH', `/providers/${encodeURIComponent(p.id)}`, { enabled });
        toast(t(enabled ? 'providers.enabled.on' : 'providers.enabled.off', { name: p.name }));
        reload();
      } catch (e) {
        ev.target.checked = !enabled;
        ev.target.disabled = false;
        toast(e.message, 'bad');
      }
    },
  });
  return h('label', { class: 'switch', title: p.enabled ? t('providers.enabled.on.short') : t('providers.enabled.off.short') }, input, h('span', { class: 'slider', 'aria-hidden': 'true' }));
}

async function pageProviders(page) {
  const [providers, presets, health] = await Promise.all([
    api('GET', '/providers'),
    api('GET', '/presets'),
    optional('GET', '/health').catch(() => null),
  ]);
  const healthOf = healthIndex(health);
  const configured = providers?.data || [];
  const catalog = presets?.data || [];
  const reload = () => render();

  const enableNa = t('providers.enable.na');
  const configuredBody = configured.length === 0
    ? emptyState(t('providers.none'))
    : table([
      { label: t('common.name'), cell: (p) => h('div', { class: 'cell-main' }, h('span', { class: 'strong', 'data-testid': 'provider-name' }, p.name), p.preset ? h('span', { class: 'sub' }, p.preset) : h('span', { class: 'sub' }, p.kind)) },
      { label: t('providers.endpoint'), cell: (p) => h('code', { class: 'url' }, p.base_url) },
      { label: t('common.models'), cell: (p) => h('div', { title: (p.models || []).join(', '), class: 'models' }, (p.models || []).slice(0, 3).map((m) => h('div', { class: 'nowrap' }, m)), (p.models || []).length > 3 ? h('div', { class: 'sub' }, `+${p.models.length - 3}`) : null) },
      { label: t('providers.credential'), cell: (p) => (p.has_credential ? badge(t('providers.has_credential'), 'ok') : badge(t('providers.no_credential'), 'muted')) },
      { label: t('providers.health'), cell: (p) => healthCell(health, healthOf.get(p.id) || healthOf.get(p.name)) },
      { label: t('providers.enabled'), cell: (p) => enableSwitch(p, enableNa, reload) },
      {
        label: t('common.actions'),
        cell: (p) => h('div', { class: 'actions' },
          h('button', { type: 'button', class: 'btn btn-sm', onclick: () => editProvider(p, reload) }, t('common.edit')),
          h('button', { type: 'button', class: 'btn btn-sm', onclick: () => rotateProvider(p, reload) }, t('providers.rotate')),
          h('button', { type: 'button', class: 'btn btn-sm', 'data-test-button': true, onclick: (ev) => testProvider(p, ev.currentTarget) }, t('providers.test')),
          h('button', {
            type: 'button', class: 'btn btn-sm btn-danger-ghost',
            onclick: async () => {
              if (!(await confirmDialog(t('providers.delete.confirm', { name: p.name }), { label: t('common.delete') }))) return;
              try {
                await api('DELETE', `/providers/${encodeURIComponent(p.id)}`);
                toast(t('providers.deleted'));
                reload();
              } catch (e) {
                toast(e.message, 'bad');
              }
            },
          }, t('common.delete'))),
      },
    ], configured, { testid: 'providers-table' });

  page.append(card(t('providers.configured'), configuredBody,
    h('button', { type: 'button', class: 'btn btn-primary', 'data-testid': 'add-custom', onclick: () => customProvider(reload) }, `+ ${t('providers.add_custom')}`)));

  // The catalog, with search and a category filter.
  const searchId = nextId('search');
  const search = h('input', { id: searchId, type: 'search', placeholder: t('providers.search'), class: 'search', autocomplete: 'off' });
  let category = '';
  const chips = h('div', { class: 'chips', role: 'group', 'aria-label': t('providers.catalog') });
  const results = h('div', { class: 'catalog' });
  const drawChips = () => {
    clear(chips);
    for (const c of ['', ...CATEGORIES]) {
      chips.append(h('button', {
        type: 'button', class: 'chip', 'aria-pressed': String(category === c),
        onclick: () => {
          category = c;
          drawChips();
          drawCatalog();
        },
      }, c ? t(`cat.${c}`) : t('common.all')));
    }
  };
  const drawCatalog = () => {
    clear(results);
    const q = search.value.trim().toLowerCase();
    let shown = 0;
    for (const c of CATEGORIES) {
      if (category && category !== c) continue;
      const items = catalog.filter((p) => p.category === c).filter((p) => !q || [p.id, p.name, p.name_zh, p.description, p.description_zh, ...(p.features || []), ...(p.models || []).map((m) => m.id)].join(' ').toLowerCase().includes(q));
      if (!items.length) continue;
      shown += items.length;
      results.append(h('h3', { class: 'cat-title' }, t(`cat.${c}`), h('span', { class: 'count' }, String(items.length))));
      results.append(h('div', { class: 'cards' }, items.map((p) => presetCard(p, reload))));
    }
    if (!shown) results.append(emptyState(t('providers.no_match')));
  };
  search.addEventListener('input', drawCatalog);
  drawChips();
  drawCatalog();
  page.append(card(t('providers.catalog'), [
    h('p', { class: 'lead' }, t('providers.catalog.lead')),
    h('div', { class: 'toolbar' }, h('label', { for: searchId, class: 'sr-only' }, t('providers.search')), search, chips),
    results,
  ]));
}

function presetCard(p, reload) {
  return h('article', { class: 'preset-card', 'data-preset': p.id },
    h('div', { class: 'preset-head' },
      h('div', { class: 'avatar', 'aria-hidden': 'true' }, (p.name || p.id).slice(0, 1).toUpperCase()),
      h('div', {}, h('h4', {}, presetName(p)), h('div', { class: 'sub' }, priceRange(p)),
        p.prices_as_of && p.price_source && /^https:\/\//.test(p.price_source)
          ? h('div', { class: 'sub' }, h('a', { href: p.price_source, target: '_blank', rel: 'noopener noreferrer', class: 'link', 'data-testid': `price-source-${p.id}` }, t('providers.prices_as_of', { date: p.prices_as_of })))
          : null)),
    h('p', { class: 'desc' }, presetDescription(p)),
    h('div', { class: 'tags' },
      h('span', { class: 'tag tag-strong' }, t('providers.models_n', { n: (p.models || []).length })),
      (p.features || []).map((f) => h('span', { class: 'tag' }, f))),
    h('div', { class: 'preset-actions' },
      p.configurable
        ? h('button', { type: 'button', class: 'btn btn-primary btn-sm', 'data-testid': `use-${p.id}`, 'aria-label': `${t('providers.use')} ${presetName(p)}`, onclick: () => presetProvider(p, reload) }, t('providers.use'))
        : h('span', { class: 'badge badge-muted', title: p.unsupported_reason || '' }, t('providers.not_configurable')),
      p.docs_url && /^https:\/\//.test(p.docs_url) ? h('a', { href: p.docs_url, target: '_blank', rel: 'noopener noreferrer', class: 'link' }, t('providers.docs')) : null));
}

function presetProvider(p, reload) {
  const required = p.required_fields || [];
  const optionalFields = p.optional_fields || [];
  const variants = p.base_url_variants && typeof p.base_url_variants === 'object' ? Object.keys(p.base_url_variants) : [];
  const modelIds = (p.models || []).map((m) => m.id);
  // Azure: its deployments (each with the model it serves) are its models.
  const byDeployment = required.includes('deployments');
  const extra = EXTRA_FIELDS.filter((f) => !(byDeployment && f === 'deployment'));
  const fields = [];
  if (required.includes('api_key') || optionalFields.includes('api_key')) {
    fields.push({ name: 'api_key', label: t('form.api_key'), type: 'password', required: required.includes('api_key'), hint: t('form.api_key.hint') });
  }
  for (const f of extra) {
    if (required.includes(f)) fields.push({ name: f, label: t(`form.field.${f}`), required: true, value: p.defaults?.[f] || '', validate: f === 'base_url' ? validUrl : undefined, type: SECRET_FIELDS.includes(f) ? 'password' : 'text' });
  }
  if (byDeployment) fields.push(deploymentsField(''));
  for (const f of extra) {
    if (f !== 'base_url' && optionalFields.includes(f) && !required.includes(f)) fields.push({ name: f, label: t(`form.field.${f}`), value: p.defaults?.[f] || '', type: SECRET_FIELDS.includes(f) ? 'password' : 'text' });
  }
  if (variants.length) fields.push({ name: 'variant', label: t('form.variant'), type: 'select', options: [['', '—'], ...variants.map((v) => [v, v])], value: '' });
  const advanced = t('form.advanced');
  fields.push({ name: 'name', label: t('common.name'), placeholder: p.id, hint: t('form.name.hint'), validate: validName, group: advanced });
  if (!required.includes('base_url')) fields.push({ name: 'base_url', label: t('form.base_url'), value: p.base_url || '', validate: validUrl, group: advanced });
  if (!byDeployment) fields.push({ name: 'models', label: t('form.models'), type: 'textarea', value: modelIds.join('\n'), hint: t('form.models.hint'), group: advanced });
  formDialog(t('form.preset.title', { name: presetName(p) }), fields, async (v) => {
    const body = { preset: p.id };
    for (const [k, val] of Object.entries(v)) {
      if (!val || k === 'models' || k === 'deployments') continue;
      if (k === 'base_url' && !required.includes('base_url') && val === (p.base_url || '')) continue;
      body[k] = val;
    }
    if (byDeployment) body.deployments = parseDeployments(v.deployments);
    const models = list(v.models || '');
    if (!byDeployment && models.join('\n') !== modelIds.join('\n') && models.length) body.models = models;
    const created = await api('POST', '/providers', body);
    toast(t('providers.added', { name: created?.name || p.id }));
    reload();
  }, { lead: presetDescription(p), submitLabel: t('providers.use') });
}

function customProvider(reload) {
  formDialog(t('form.custom.title'), [
    { name: 'name', label: t('common.name'), required: true, validate: validName, hint: t('form.name.hint') },
    { name: 'base_url', label: t('form.base_url'), required: true, validate: validUrl, hint: t('form.base_url.hint'), placeholder: 'https://' },
    { name: 'api_key', label: t('form.api_key'), type: 'password', hint: t('form.api_key.hint') },
    { name: 'models', label: t('form.models'), type: 'textarea', required: true, hint: t('form.models.hint'), validate: (v) => (list(v).length ? null : t('form.need_model')) },
  ], async (v) => {
    const body = { name: v.name, base_url: v.base_url, models: list(v.models) };
    if (v.api_key) body.api_key = v.api_key;
    const created = await api('POST', '/providers', body);
    toast(t('providers.added', { name: created?.name || v.name }));
    reload();
  });
}

function editProvider(p, reload) {
  // Azure: its deployments in place of its models.
  const byDeployment = p.deployments && typeof p.deployments === 'object';
  formDialog(t('form.edit.title', { name: p.name }), [
    { name: 'name', label: t('common.name'), required: true, value: p.name, validate: validName },
    { name: 'base_url', label: t('form.base_url'), required: true, value: p.base_url, validate: validUrl },
    byDeployment
      ? deploymentsField(deploymentLines(p.deployments))
      : { name: 'models', label: t('form.models'), type: 'textarea', required: true, value: (p.models || []).join('\n'), hint: t('form.models.hint'), validate: (v) => (list(v).length ? null : t('form.need_model')) },
  ], async (v) => {
    const body = {};
    if (v.name !== p.name) body.name = v.name;
    if (v.base_url !== p.base_url) body.base_url = v.base_url;
    if (byDeployment) {
      const deployments = parseDeployments(v.deployments);
      if (deploymentLines(deployments) !== deploymentLines(p.deployments)) body.deployments = deployments;
    } else {
      const models = list(v.models);
      if (models.join('\n') !== (p.models || []).join('\n')) body.models = models;
    }
    if (Object.keys(body).length) await api('PATCH', `/providers/${encodeURIComponent(p.id)}`, body);
    toast(t('common.saved'));
    reload();
  });
}

function rotateProvider(p, reload) {
  formDialog(t('form.rotate.title', { name: p.name }), [
    { name: 'api_key', label: t('form.api_key'), type: 'password', required: true, hint: t('form.api_key.hint') },
  ], async (v) => {
    await api('PATCH', `/providers/${encodeURIComponent(p.id)}`, { api_key: v.api_key });
    toast(t('common.saved'));
    reload();
  });
}

async function testProvider(p, button) {
  button.disabled = true;
  try {
    await api('POST', `/providers/${encodeURIComponent(p.id)}/test`, {});
    toast(t('providers.test.ok'));
    button.disabled = false;
  } catch (e) {
    if (e.unavailable) {
      toast(t('providers.test.na'), 'warn');
      button.title = t('providers.test.na');
      for (const b of document.querySelectorAll('[data-test-button]')) b.disabled = true;
    } else {
      toast(e.message, 'bad');
      button.disabled = false;
    }
  }
}

// ---- keys ----

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

async function pageKeys(page) {
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

// ---- usage ----

function periodSelect(days, onChange) {
  const id = nextId('period');
  const select = h('select', { id, onchange: (ev) => onChange(Number(ev.target.value)) },
    [7, 30, 90].map((n) => h('option', { value: String(n) }, t('usage.days', { n }))));
  select.value = String(days);
  return h('div', { class: 'inline-field' }, h('label', { for: id }, t('common.period')), select);
}

let usageDays = 30;

async function keyNames() {
  return namesOf('/keys');
}

/** id -> name of the rows of an admin list (keys, teams, projects). */
async function namesOf(path) {
  try {
    const rows = (await api('GET', path))?.data || [];
    return new Map(rows.map((k) => [k.id, k.name]));
  } catch {
    return new Map();
  }
}

function groupBy(rows, key) {
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

async function pageUsage(page) {
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

function kpi(label, value, testid) {
  return h('div', { class: 'kpi', 'data-testid': testid }, h('div', { class: 'kpi-label' }, label), h('div', { class: 'kpi-value' }, value));
}

// ---- request log ----

const requestFilter = { key_id: '', model: '', status: '' };

async function pageRequests(page) {
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

// ---- billing ----

let billingMonth = new Date().toISOString().slice(0, 7);

function csvCell(v) {
  let s = String(v ?? '');
  if (/^[=+\-@\t\r]/.test(s)) s = `'${s}`; // no formulas when opened in a spreadsheet
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

async function pageBilling(page) {
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
    const a = h('a', { href: URL.createObjectURL(blob), download: `aigw-billing-${billingMonth}.csv` });
    document.body.append(a);
    a.click();
    setTimeout(() => {
      URL.revokeObjectURL(a.href);
      a.remove();
    }, 1000);
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

/** Downloads an admin API answer (sent with the token) as a file. */
async function downloadFrom(path, name) {
  const res = await fetch(`/admin/api${path}`, { headers: { Authorization: `Bearer ${sessionStorage.getItem(TOKEN) || ''}` } });
  if (!res.ok) {
    toast(`${res.status} ${res.statusText}`, 'bad');
    return;
  }
  const blob = await res.blob();
  const a = h('a', { href: URL.createObjectURL(blob), download: name });
  document.body.append(a);
  a.click();
  setTimeout(() => {
    URL.revokeObjectURL(a.href);
    a.remove();
  }, 1000);
}

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

// ---- budget alerts ----

async function pageAlerts(page) {
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

// ---- jobs ----

const JOB_STATUSES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'];
const JOB_BADGES = { queued: 'muted', running: 'info', succeeded: 'ok', failed: 'bad', cancelled: 'warn' };
const WEBHOOK_BADGES = { pending: 'muted', delivered: 'ok', failed: 'bad' };
const JOB_PAGE = 20;
const JOB_POLL_MS = 3000;
const jobFilter = { status: '', key: '' };

const jobActive = (j) => j.status === 'queued' || j.status === 'running';
const jobState = (j) => JSON.stringify([j.status, j.attempts, j.started_at, j.finished_at, j.usage, j.cost_usd, j.webhook]);
const fromUnix = (s) => (s === null || s === undefined ? null : new Date(s * 1000));

function jobBadge(status) {
  return badge(JOB_STATUSES.includes(status) ? t(`jobs.status.${status}`) : String(status || '—'), JOB_BADGES[status] || 'muted');
}

function webhookBadge(webhook) {
  if (!webhook) return h('span', { class: 'muted' }, '—');
  const known = webhook.status in WEBHOOK_BADGES;
  return badge(known ? t(`jobs.webhook.${webhook.status}`) : String(webhook.status), WEBHOOK_BADGES[webhook.status] || 'muted');
}

/** The assistant's text in a chat completion, or null when it has none. */
function assistantText(result) {
  const content = result?.choices?.[0]?.message?.content;
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) return content.map((part) => (typeof part === 'string' ? part : part?.text || '')).join('');
  return null;
}

function jobQuery(after) {
  const q = new URLSearchParams({ limit: String(JOB_PAGE) });
  if (jobFilter.status) q.set('status', jobFilter.status);
  if (jobFilter.key) q.set('key', jobFilter.key);
  if (after) q.set('after', after);
  return q;
}

/**
 * Asks, then cancels a queued or running job. Resolves to the cancelled job,
 * or null (not confirmed, or refused: the API's message is shown in `errorBox`
 * when given, else in a toast).
 */
async function cancelJob(job, errorBox) {
  if (!(await confirmDialog(t('jobs.cancel.confirm', { id: shortId(job.id), model: job.model }), { label: t('jobs.cancel'), dismiss: t('jobs.keep') }))) return null;
  try {
    const cancelled = await api('DELETE', `/jobs/${encodeURIComponent(job.id)}`);
    toast(t('jobs.cancelled'));
    return cancelled;
  } catch (e) {
    if (errorBox) {
      errorBox.textContent = e.message;
      errorBox.hidden = false;
    }
    toast(e.message, 'bad');
    return null;
  }
}

async function pageJobs(page) {
  const [first, names] = await Promise.all([optional('GET', `/jobs?${jobQuery()}`), keyNames()]);
  if (!first) return unavailableState(page);
  let jobs = first.data || [];
  let cursor = first.last_id;
  let hasMore = !!first.has_more;
  let timer = null;

  const statusId = nextId('js');
  const keyId = nextId('jk');
  const statusSel = h('select', { id: statusId, 'data-testid': 'jobs-status' }, h('option', { value: '' }, t('common.all')),
    JOB_STATUSES.map((s) => h('option', { value: s }, t(`jobs.status.${s}`))));
  statusSel.value = jobFilter.status;
  const keySel = h('select', { id: keyId, 'data-testid': 'jobs-key' }, h('option', { value: '' }, t('common.all')),
    [...names].map(([id, n]) => h('option', { value: id }, n)));
  keySel.value = names.has(jobFilter.key) ? jobFilter.key : '';
  const filters = h('form', {
    class: 'filters',
    onsubmit: (ev) => {
      ev.preventDefault();
      jobFilter.status = statusSel.value;
      jobFilter.key = keySel.value;
      render();
    },
  },
  h('div', { class: 'inline-field' }, h('label', { for: statusId }, t('jobs.filter.status')), statusSel),
  h('div', { class: 'inline-field' }, h('label', { for: keyId }, t('jobs.filter.key')), keySel),
  h('button', { type: 'submit', class: 'btn', 'data-testid': 'jobs-filter' }, t('requests.filter.apply')));

  const box = h('div', { 'data-testid': 'jobs' });
  const live = h('p', { class: 'sub', hidden: true }, t('jobs.auto_refresh'));
  const more = h('button', {
    type: 'button', class: 'btn', 'data-testid': 'jobs-more', hidden: true,
    onclick: async () => {
      more.disabled = true;
      try {
        const next = await api('GET', `/jobs?${jobQuery(cursor)}`);
        const seen = new Set(jobs.map((j) => j.id));
        jobs = jobs.concat((next.data || []).filter((j) => !seen.has(j.id)));
        cursor = next.last_id || cursor;
        hasMore = !!next.has_more;
        draw();
      } catch (e) {
        toast(e.message, 'bad');
      } finally {
        more.disabled = false;
      }
    },
  }, t('jobs.more'));

  // Replaces listed jobs by newer versions of themselves.
  const update = (fresh) => {
    for (const f of fresh) {
      if (!f) continue;
      const i = jobs.findIndex((j) => j.id === f.id);
      if (i >= 0) jobs[i] = { ...jobs[i], ...f };
    }
    draw();
  };
  const cancel = async (job) => {
    const cancelled = await cancelJob(job);
    if (!cancelled) return;
    update([cancelled]);
    box.querySelector(`[data-focus="${CSS.escape(`details-${job.id}`)}"]`)?.focus();
  };

  // While a listed job is queued or running, its row is refreshed every few
  // seconds; the loop ends once none is, or once the page is left.
  const poll = async () => {
    if (!box.isConnected) return;
    const active = jobs.filter(jobActive).slice(0, 25);
    const fresh = await Promise.all(active.map((j) => api('GET', `/jobs/${encodeURIComponent(j.id)}`).catch(() => null)));
    if (!box.isConnected) return;
    const changed = fresh.some((f, i) => f && jobState(f) !== jobState(active[i]));
    if (changed) update(fresh);
    else schedule();
  };
  function schedule() {
    clearTimeout(timer);
    const polling = jobs.some(jobActive);
    live.hidden = !polling;
    if (polling) timer = setTimeout(poll, JOB_POLL_MS);
  }

  function draw() {
    // Redrawing keeps the keyboard focus on the same control.
    const focused = box.contains(document.activeElement) ? document.activeElement.dataset.focus : null;
    clear(box).append(jobs.length === 0 ? emptyState(t(jobFilter.status || jobFilter.key ? 'jobs.none_match' : 'jobs.none')) : table([
      { label: t('jobs.created'), cell: (j) => h('span', { class: 'nowrap' }, fmtTime(fromUnix(j.created_at))) },
      { label: t('usage.key'), cell: (j) => h('span', { class: 'nowrap' }, names.get(j.key_id) || shortId(j.key_id) || '—') },
      { label: t('usage.model'), cell: (j) => h('span', { class: 'nowrap' }, j.model || '—') },
      { label: t('jobs.status'), cell: (j) => jobBadge(j.status) },
      { label: t('jobs.attempts'), num: true, cell: (j) => fmtInt(j.attempts) },
      { label: t('usage.tokens'), num: true, cell: (j) => (j.usage ? fmtInt(j.usage.total_tokens) : '—') },
      { label: t('usage.cost'), num: true, cell: (j) => fmtUsd(j.cost_usd, 6) },
      { label: t('jobs.webhook'), cell: (j) => webhookBadge(j.webhook) },
      {
        label: t('common.actions'),
        cell: (j) => h('div', { class: 'actions' },
          h('button', {
            type: 'button', class: 'btn btn-sm', 'data-focus': `details-${j.id}`, 'aria-label': `${t('common.details')}: ${t('jobs.detail.title', { id: shortId(j.id) })}`,
            onclick: () => jobDetail(j.id, names, update),
          }, t('common.details')),
          jobActive(j) ? h('button', {
            type: 'button', class: 'btn btn-sm btn-danger-ghost', 'data-testid': 'cancel-job', 'data-focus': `cancel-${j.id}`,
            'aria-label': `${t('jobs.cancel')}: ${t('jobs.detail.title', { id: shortId(j.id) })}`,
            onclick: () => cancel(j),
          }, t('jobs.cancel')) : null),
      },
    ], jobs, { testid: 'jobs-table', rowProps: (j) => ({ 'data-job': j.id }) }));
    more.hidden = !hasMore;
    if (focused) box.querySelector(`[data-focus="${CSS.escape(focused)}"]`)?.focus();
    schedule();
  }

  draw();
  page.append(card(t('jobs.title'), [h('p', { class: 'lead' }, t('jobs.lead')), filters, live, box, h('div', { class: 'more' }, more)]));
}

async function jobDetail(id, names, update) {
  let job;
  try {
    job = await api('GET', `/jobs/${encodeURIComponent(id)}`);
  } catch (e) {
    toast(e.message, 'bad');
    return;
  }
  const kv = (rows, testid) => h('dl', { class: 'kv', 'data-testid': testid }, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v ?? '—')]));
  const u = job.usage;
  const text = assistantText(job.result);
  const toolCalls = job.result?.choices?.[0]?.message?.tool_calls;
  const metadata = Object.entries(job.metadata || {});
  const wh = job.webhook;
  const errorBox = h('div', { class: 'form-error', role: 'alert', hidden: true, 'data-testid': 'job-cancel-error' });
  let d;
  const cancel = async () => {
    errorBox.hidden = true;
    const cancelled = await cancelJob(job, errorBox);
    if (cancelled) {
      update([cancelled]);
      d.close();
    }
  };
  d = openDialog(t('jobs.detail.title', { id: shortId(id) }), h('div', { class: 'job-detail' },
    h('p', {}, h('code', { class: 'url' }, id)),
    kv([
      [t('jobs.status'), jobBadge(job.status)],
      [t('usage.key'), names.get(job.key_id) || job.key_id],
      [t('usage.model'), job.model],
      [t('usage.provider'), job.provider],
      [t('jobs.created'), fmtTime(fromUnix(job.created_at))],
      [t('jobs.started'), fmtTime(fromUnix(job.started_at))],
      [t('jobs.finished'), fmtTime(fromUnix(job.finished_at))],
      [t('jobs.attempts'), fmtInt(job.attempts)],
      [t('usage.tokens'), u ? `${fmtInt(u.total_tokens)} (${t('usage.prompt')} ${fmtInt(u.prompt_tokens)} · ${t('usage.completion')} ${fmtInt(u.completion_tokens)})` : null],
      [t('usage.cost'), fmtUsd(job.cost_usd, 6)],
    ], 'job-fields'),
    h('h3', {}, t('jobs.metadata')),
    metadata.length ? kv(metadata.map(([k, v]) => [h('code', {}, k), v]), 'job-metadata') : h('p', { class: 'muted' }, t('common.none')),
    job.result ? [
      h('h3', {}, t('jobs.answer')),
      text !== null ? h('pre', { class: 'answer', 'data-testid': 'job-answer' }, text) : h('p', { class: 'muted' }, t('jobs.no_text')),
      toolCalls ? h('pre', { class: 'json' }, JSON.stringify(toolCalls, null, 2)) : null,
    ] : null,
    job.error ? [
      h('h3', {}, t('jobs.error')),
      h('div', { class: 'callout callout-bad', 'data-testid': 'job-error' }, job.error.message || JSON.stringify(job.error)),
      job.error.code || job.error.type ? h('p', { class: 'sub' }, h('code', {}, job.error.code || job.error.type)) : null,
    ] : null,
    h('h3', {}, t('jobs.webhook')),
    job.webhook_url ? kv([
      [t('jobs.webhook.url'), h('code', { class: 'url' }, job.webhook_url)],
      [t('jobs.webhook.delivery'), webhookBadge(wh)],
      [t('jobs.attempts'), wh ? fmtInt(wh.attempts) : null],
      [t('jobs.webhook.last_status'), wh?.last_status ?? null],
      [t('jobs.webhook.last_error'), wh?.last_error ?? null],
    ], 'job-webhook') : h('p', { class: 'muted' }, t('jobs.webhook.none')),
    h('details', { class: 'advanced' }, h('summary', {}, t('jobs.raw')), h('pre', { class: 'json' }, JSON.stringify(job, null, 2))),
    errorBox,
    jobActive(job) ? h('div', { class: 'form-actions' },
      h('button', { type: 'button', class: 'btn btn-danger', 'data-testid': 'detail-cancel-job', onclick: cancel }, t('jobs.cancel'))) : null), { wide: true });
}

// ---- aliases and routing ----

const STRATEGIES = ['priority', 'weighted', 'cost', 'latency', 'auto'];
const TARGET_LINE = /^([^/\s]+)\/(\S+)(?:\s+(\d+))?$/;

function targetsText(targets) {
  return (targets || []).map((x) => `${x.provider}/${x.model}${x.weight && x.weight !== 1 ? ` ${x.weight}` : ''}`).join('\n');
}

function parseTargets(text) {
  return text.split('\n').map((l) => l.trim()).filter(Boolean).map((l) => {
    const m = TARGET_LINE.exec(l);
    return { provider: m[1], model: m[2], weight: m[3] ? Number(m[3]) : 1 };
  });
}

function validTargets(text) {
  const lines = text.split('\n').map((l) => l.trim()).filter(Boolean);
  if (!lines.length) return t('routing.targets.need');
  const bad = lines.find((l) => !TARGET_LINE.test(l) || /\s0$/.test(l));
  return bad ? t('routing.targets.bad', { line: bad }) : null;
}

function aliasForm(alias, reload) {
  const fields = [
    { name: 'name', label: t('common.name'), required: true, value: alias?.name || '', hint: t('routing.name.hint'), validate: (v) => (/^[A-Za-z0-9_.:-]{1,128}$/.test(v) ? null : t('routing.name.hint')) },
    { name: 'strategy', label: t('routing.strategy'), type: 'select', value: alias?.strategy || 'priority', options: STRATEGIES.map((x) => [x, t(`routing.strategy.${x}`)]) },
    { name: 'targets', label: t('routing.targets'), type: 'textarea', rows: 4, required: true, value: targetsText(alias?.targets), placeholder: 'deepseek/deepseek-v4-flash\nopenai/gpt-4o-mini 2', hint: t('routing.targets.hint'), validate: validTargets },
  ];
  formDialog(alias ? t('routing.edit.title', { name: alias.name }) : t('routing.create.title'), fields, async (v) => {
    const body = { strategy: v.strategy, targets: parseTargets(v.targets) };
    if (alias) await api('PATCH', `/aliases/${encodeURIComponent(alias.name)}`, body);
    else await api('POST', '/aliases', { name: v.name, ...body });
    toast(t('common.saved'));
    reload();
  });
  if (alias) {
    const name = document.querySelector('dialog[open] input[name="name"]');
    if (name) name.readOnly = true;
  }
}

async function pageAliases(page) {
  const data = await optional('GET', '/aliases');
  if (!data) return unavailableState(page);
  const aliases = data.data || [];
  const reload = () => render();
  const body = aliases.length === 0 ? emptyState(t('routing.none')) : table([
    { label: t('common.name'), cell: (a) => h('code', { class: 'strong', 'data-testid': 'alias-name' }, a.name) },
    { label: t('routing.strategy'), cell: (a) => badge(t(`routing.strategy.${a.strategy}`), 'muted') },
    { label: t('routing.targets'), cell: (a) => h('ol', { class: 'targets' }, (a.targets || []).map((x) => h('li', {}, h('span', { class: 'strong' }, x.provider), ' / ', h('code', {}, x.model), x.weight && x.weight !== 1 ? h('span', { class: 'sub' }, ` ×${x.weight}`) : null))) },
    {
      label: t('common.actions'),
      cell: (a) => h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'btn btn-sm', onclick: () => aliasForm(a, reload) }, t('common.edit')),
        h('button', {
          type: 'button', class: 'btn btn-sm btn-danger-ghost',
          onclick: async () => {
            if (!(await confirmDialog(t('routing.delete.confirm', { name: a.name }), { label: t('common.delete') }))) return;
            try {
              await api('DELETE', `/aliases/${encodeURIComponent(a.name)}`);
              reload();
            } catch (e) {
              toast(e.message, 'bad');
            }
          },
        }, t('common.delete'))),
    },
  ], aliases, { testid: 'aliases-table' });
  page.append(card(t('routing.aliases'), [h('p', { class: 'lead' }, t('routing.lead')), body],
    h('button', { type: 'button', class: 'btn btn-primary', 'data-testid': 'create-alias', onclick: () => aliasForm(null, reload) }, `+ ${t('routing.create')}`)));
}

// ---- shell ----

function langSelect() {
  const id = nextId('lang');
  const select = h('select', {
    id, class: 'lang', 'data-testid': 'lang',
    onchange: (ev) => {
      setLang(ev.target.value);
      render();
    },
  }, h('option', { value: 'en' }, 'English'), h('option', { value: 'zh' }, '简体中文'));
  select.value = getLang();
  return h('div', { class: 'lang-wrap' }, h('label', { for: id, class: 'sr-only' }, t('lang.label')), icon('globe'), select);
}

function signIn() {
  const id = nextId('token');
  const input = h('input', { id, type: 'password', name: 'token', autocomplete: 'current-password', required: true, 'aria-required': 'true', 'data-testid': 'token' });
  const error = h('div', { class: 'form-error', role: 'alert', hidden: true });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary btn-block' }, t('signin.submit'));
  const form = h('form', {
    class: 'form',
    onsubmit: async (ev) => {
      ev.preventDefault();
      error.hidden = true;
      const token = input.value.trim();
      if (!token) {
        error.textContent = t('common.required');
        error.hidden = false;
        input.focus();
        return;
      }
      submit.disabled = true;
      sessionStorage.setItem(TOKEN, token);
      signingIn = true;
      try {
        await api('GET', '/keys');
        signingIn = false;
        input.value = '';
        if (!location.hash) location.hash = '#/providers';
        render();
      } catch (e) {
        signingIn = false;
        sessionStorage.removeItem(TOKEN);
        error.textContent = e.status === 401 ? t('signin.bad') : e.status === 403 ? t('signin.disabled') : e.message;
        error.hidden = false;
        submit.disabled = false;
        input.focus();
      }
    },
  }, h('div', { class: 'field' }, h('label', { for: id }, t('signin.token')), input), error, submit);
  clear(app).append(h('main', { class: 'signin' },
    h('div', { class: 'signin-card' },
      h('div', { class: 'signin-top' }, brand(), langSelect()),
      h('h1', {}, t('signin.title')),
      h('p', { class: 'lead' }, t('signin.lead')),
      form)));
  input.focus();
}

function brand() {
  return h('div', { class: 'brand' }, h('img', { src: 'favicon.svg', alt: '', width: '28', height: '28' }), h('span', { class: 'brand-name' }, 'aigw'), h('span', { class: 'brand-sub' }, t('app.tagline')));
}

const app = document.getElementById('app');
let renderSeq = 0;

async function render() {
  document.title = t('app.title');
  document.documentElement.lang = getLang() === 'zh' ? 'zh-CN' : 'en';
  if (!sessionStorage.getItem(TOKEN)) return signIn();
  const current = PAGES.find((p) => `#/${p.id}` === location.hash) || PAGES[0];
  const seq = ++renderSeq;
  const page = h('div', { class: 'page', id: 'page', 'data-page': current.id, 'aria-busy': 'true' }, h('div', { class: 'loading' }, t('common.loading')));
  const nav = h('nav', { class: 'nav', 'aria-label': t('nav.menu') }, h('ul', {}, PAGES.map((p) => h('li', {},
    h('a', { href: `#/${p.id}`, class: p === current ? 'active' : undefined, 'aria-current': p === current ? 'page' : undefined },
      icon(p.id), t(`nav.${p.id}`))))));
  const signOut = h('button', {
    type: 'button', class: 'btn btn-ghost', 'data-testid': 'signout',
    onclick: () => {
      sessionStorage.removeItem(TOKEN);
      location.hash = '';
      render();
    },
  }, t('nav.signout'));
  clear(app).append(h('div', { class: 'layout' },
    h('aside', { class: 'sidebar' }, brand(), nav),
    h('div', { class: 'main' },
      h('header', { class: 'topbar' }, h('h1', {}, t(`nav.${current.id}`)), h('div', { class: 'topbar-tools' },
        h('button', { type: 'button', class: 'btn btn-ghost icon-refresh', 'data-testid': 'refresh', 'aria-label': t('common.refresh'), title: t('common.refresh'), onclick: () => render() }, icon('refresh')),
        langSelect(), signOut)),
      page,
      h('footer', { class: 'footer' },
        h('a', { href: '/openapi.json', target: '_blank', rel: 'noopener', 'data-testid': 'openapi' }, t('footer.openapi'))))));
  try {
    const content = h('div', { class: 'page-content' });
    await current.render(content);
    if (seq !== renderSeq) return;
    clear(page).append(content);
  } catch (e) {
    if (seq !== renderSeq) return;
    clear(page).append(h('div', { class: 'callout callout-bad', role: 'alert' }, `${t('common.error')}: ${e.message}`));
  }
  page.setAttribute('aria-busy', 'false');
}

window.addEventListener('hashchange', render);
setLang(getLang());
render();
