// The Aliases & routing page: aliases (a model name callers use) with
// their strategy and targets (`provider/model [weight]` lines); create,
// edit, delete.
//
// Invariant: targets are validated line by line before sending; an
// alias's name is fixed once created.
import { t } from './i18n.js';
import { badge, card, emptyState, h, table, toast, unavailableState } from './dom.js';
import { api, optional, render } from './api.js';
import { confirmDialog, formDialog } from './forms.js';

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

export async function pageAliases(page) {
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
