// The Teams & projects page: each team with its budget use (spent,
// remaining, period), rate limits, scopes and alert thresholds, and its
// projects under it; create, edit and delete teams and projects. Also the
// project lookups the keys and alerts pages use.
//
// Invariants: names are shown as text (and put in attributes only as
// data); a refused change shows the API's own message (in the form, or in
// a toast for a delete); the lists are drawn even when a budget cannot be
// read (the budget cell then shows the limit alone).
import { t } from './i18n.js';
import { badge, card, emptyState, h, table, toast } from './dom.js';
import { api, render } from './api.js';
import { confirmDialog, formDialog } from './forms.js';
import { budgetCell, fillMeters, limitBody, limitFields, rateCell, scopesCell } from './limits.js';

const byName = (a, b) => String(a.name).localeCompare(String(b.name));

/** Every project, sorted by team name then name ([] when unreadable). */
export async function listProjects() {
  try {
    const projects = (await api('GET', '/projects'))?.data || [];
    return projects.sort((a, b) => String(a.team_name).localeCompare(String(b.team_name)) || byName(a, b));
  } catch {
    return [];
  }
}

/** How a project is named where its team matters: "team › project". */
export const projectLabel = (p) => (p.team_name ? `${p.team_name} › ${p.name}` : p.name);

/** id -> the API's detail (with its `budget`) for up to 100 rows. */
async function details(kind, rows) {
  const out = new Map();
  await Promise.all(rows.slice(0, 100).map(async (r) => {
    try {
      out.set(r.id, await api('GET', `/${kind}/${encodeURIComponent(r.id)}`));
    } catch {
      /* the list still shows the row */
    }
  }));
  return out;
}

function unitFields(unit) {
  return [
    { name: 'name', label: t('common.name'), required: true, value: unit?.name || '' },
    ...limitFields(unit?.limits, unit?.scopes),
  ];
}

function createTeam() {
  formDialog(t('teams.create.title'), unitFields(), async (v) => {
    await api('POST', '/teams', { name: v.name, ...limitBody(v) });
    toast(t('common.saved'));
    render();
  }, { lead: t('teams.lead.form') });
}

function editTeam(team) {
  formDialog(t('teams.edit.title', { name: team.name }), unitFields(team), async (v) => {
    await api('PATCH', `/teams/${encodeURIComponent(team.id)}`, { name: v.name, ...limitBody(v, team.limits) });
    toast(t('common.saved'));
    render();
  });
}

function createProject(team) {
  formDialog(t('projects.create.title', { team: team.name }), unitFields(), async (v) => {
    await api('POST', '/projects', { name: v.name, team_id: team.id, ...limitBody(v) });
    toast(t('common.saved'));
    render();
  }, { lead: t('projects.lead.form') });
}

function editProject(project) {
  formDialog(t('projects.edit.title', { name: project.name }), unitFields(project), async (v) => {
    await api('PATCH', `/projects/${encodeURIComponent(project.id)}`, { name: v.name, ...limitBody(v, project.limits) });
    toast(t('common.saved'));
    render();
  });
}

/** Asks, then deletes; the API's refusal (e.g. a team with projects) is shown. */
async function remove(kind, unit, message, done) {
  if (!(await confirmDialog(message, { label: t('common.delete') }))) return;
  try {
    await api('DELETE', `/${kind}/${encodeURIComponent(unit.id)}`);
    toast(done);
    render();
  } catch (e) {
    toast(e.message, 'bad');
  }
}

function summary(unit, detail) {
  const item = (label, value) => h('div', { class: 'summary-item' }, h('div', { class: 'summary-label' }, label), value);
  return h('div', { class: 'summary' },
    item(t('keys.budget'), budgetCell(unit.limits, detail?.budget)),
    item(t('keys.limits'), rateCell(unit.limits)),
    item(t('teams.scopes'), scopesCell(unit.scopes)),
    item(t('limits.thresholds'), h('div', {}, (unit.limits?.alert_thresholds || []).map((x) => `${x}%`).join(' · ') || '—')));
}

function projectsTable(projects, budgets) {
  if (!projects.length) return emptyState(t('projects.none'));
  return table([
    { label: t('common.name'), cell: (p) => h('span', { class: 'strong', 'data-testid': 'project-name' }, p.name) },
    { label: t('projects.keys'), num: true, cell: (p) => String(p.keys ?? 0) },
    { label: t('keys.budget'), cell: (p) => budgetCell(p.limits, budgets.get(p.id)?.budget) },
    { label: t('keys.limits'), cell: (p) => rateCell(p.limits) },
    { label: t('teams.scopes'), cell: (p) => scopesCell(p.scopes) },
    {
      label: t('common.actions'),
      cell: (p) => h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'btn btn-sm', 'aria-label': `${t('common.edit')}: ${p.name}`, onclick: () => editProject(p) }, t('common.edit')),
        h('button', {
          type: 'button', class: 'btn btn-sm btn-danger-ghost', 'aria-label': `${t('common.delete')}: ${p.name}`,
          onclick: () => remove('projects', p, t('projects.delete.confirm', { name: p.name }), t('projects.deleted')),
        }, t('common.delete'))),
    },
  ], projects, { testid: 'projects-table', rowProps: (p) => ({ 'data-project': p.name }) });
}

function teamPanel(team, detail, projects, budgets) {
  const actions = h('div', { class: 'actions' },
    h('button', { type: 'button', class: 'btn btn-sm btn-primary', 'data-testid': 'add-project', onclick: () => createProject(team) }, `+ ${t('projects.add')}`),
    h('button', { type: 'button', class: 'btn btn-sm', 'data-testid': 'edit-team', onclick: () => editTeam(team) }, t('common.edit')),
    h('button', {
      type: 'button', class: 'btn btn-sm btn-danger-ghost', 'data-testid': 'delete-team',
      onclick: () => remove('teams', team, t('teams.delete.confirm', { name: team.name }), t('teams.deleted')),
    }, t('common.delete')));
  const panel = card(h('span', { 'data-testid': 'team-name' }, team.name), [
    summary(team, detail),
    h('h3', { class: 'subhead' }, t('teams.projects'), h('span', { class: 'count' }, String(projects.length))),
    projectsTable(projects, budgets),
  ], actions);
  panel.dataset.team = team.name;
  panel.setAttribute('data-testid', 'team');
  return panel;
}

export async function pageTeams(page) {
  const [teams, projects] = await Promise.all([
    api('GET', '/teams').then((r) => (r?.data || []).sort(byName)),
    api('GET', '/projects').then((r) => (r?.data || []).sort(byName)),
  ]);
  const [teamDetails, projectDetails] = await Promise.all([details('teams', teams), details('projects', projects)]);
  page.append(card(t('teams.title'), [
    h('p', { class: 'lead' }, t('teams.lead')),
    teams.length ? h('div', { class: 'tags' }, badge(t('teams.count', { n: teams.length }), 'muted'), badge(t('projects.count', { n: projects.length }), 'muted')) : emptyState(t('teams.none')),
  ], h('button', { type: 'button', class: 'btn btn-primary', 'data-testid': 'create-team', onclick: createTeam }, `+ ${t('teams.create')}`)));
  for (const team of teams) {
    page.append(teamPanel(team, teamDetails.get(team.id), projects.filter((p) => p.team_id === team.id), projectDetails));
  }
  fillMeters(page);
}
