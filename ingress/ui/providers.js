// The Providers page: the configured providers (health, enable switch,
// edit, credential rotation, connection test, delete) and the preset
// catalog with search and category filter; Azure takes deployments.
//
// Invariant: credentials are typed into password inputs and only ever
// sent; the page shows `has_credential`, never a secret.
import { t, getLang } from './i18n.js';
import { badge, card, clear, emptyState, h, nextId, table, toast } from './dom.js';
import { api, optional, render } from './api.js';
import { confirmDialog, formDialog, list, validName, validUrl } from './forms.js';

const CATEGORIES = ['top', 'china', 'open', 'specialised', 'emerging'];
// Typed like passwords: never shown on screen.
const SECRET_FIELDS = ['aws_secret_access_key', 'aws_session_token'];
const EXTRA_FIELDS = ['base_url', 'deployment', 'api_version', 'region', 'account_id', 'aws_access_key_id', 'aws_secret_access_key', 'aws_session_token'];

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

export async function pageProviders(page) {
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
