// The aigw admin UI's shell: a small single-page app over /admin/api. It
// signs in, draws the navigation and the top bar, and renders the page the
// URL's hash names; each page lives in its own module.
//
// Invariants: every piece of data reaches the page through textContent or
// attributes, never as HTML (see dom.js); the admin token stays in this
// tab's sessionStorage (see api.js); a page's result is shown only if no
// newer render started meanwhile.
import { t, getLang, setLang } from './i18n.js';
import { clear, h, icon, nextId } from './dom.js';
import { authConfig, hasToken, myRoles, onRender, resumeSession, signIn, signOut } from './api.js';
import { pageProviders } from './providers.js';
import { pageKeys } from './keys.js';
import { pageTeams } from './teams.js';
import { pageUsage } from './usage.js';
import { pageRequests } from './requests.js';
import { pageBilling } from './billing.js';
import { pageJobs } from './jobs.js';
import { pageAlerts } from './alerts.js';
import { pageAliases } from './routing.js';
import { pageSignIns } from './signins.js';
import { pageUsers } from './users.js';

// Who may see each page (the roles of GET /admin/api/me); the API still
// decides every call.
const READ = ['owner', 'admin', 'viewer'];
const REPORTS = ['owner', 'admin', 'viewer', 'billing_viewer'];
const UNITS = ['owner', 'admin', 'viewer', 'billing_viewer', 'team_admin'];
const PAGES = [
  { id: 'providers', render: pageProviders, roles: READ },
  { id: 'keys', render: pageKeys, roles: UNITS },
  { id: 'teams', render: pageTeams, roles: UNITS },
  { id: 'usage', render: pageUsage, roles: REPORTS },
  { id: 'requests', render: pageRequests, roles: REPORTS },
  { id: 'billing', render: pageBilling, roles: REPORTS },
  { id: 'jobs', render: pageJobs, roles: READ },
  { id: 'alerts', render: pageAlerts, roles: REPORTS },
  { id: 'routing', render: pageAliases, roles: READ },
  { id: 'users', render: pageUsers, roles: ['owner'] },
  { id: 'signins', render: pageSignIns, roles: ['owner', 'admin'] },
];

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

function signInForm() {
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
      try {
        await signIn(token);
        input.value = '';
        if (!location.hash) location.hash = '#/providers';
        render();
      } catch (e) {
        error.textContent = e.status === 401 ? t('signin.bad') : e.status === 403 ? t('signin.disabled') : e.message;
        error.hidden = false;
        submit.disabled = false;
        input.focus();
      }
    },
  }, h('div', { class: 'field' }, h('label', { for: id }, t('signin.token')), input), error, submit);
  const sso = h('div', { class: 'signin-sso', hidden: true });
  clear(app).append(h('main', { class: 'signin' },
    h('div', { class: 'signin-card' },
      h('div', { class: 'signin-top' }, brand(), langSelect()),
      h('h1', {}, t('signin.title')),
      sso,
      h('p', { class: 'lead' }, t('signin.lead')),
      form)));
  input.focus();
  authConfig().then((config) => {
    if (!config.sso || !config.sso_login_url) return;
    clear(sso).append(
      h('a', { class: 'btn btn-primary btn-block', href: config.sso_login_url, 'data-testid': 'sso' }, t('signin.sso')),
      h('p', { class: 'muted' }, t('signin.or')));
    sso.hidden = false;
  });
}

function brand() {
  return h('div', { class: 'brand' }, h('img', { src: 'favicon.svg', alt: '', width: '28', height: '28' }), h('span', { class: 'brand-name' }, 'aigw'), h('span', { class: 'brand-sub' }, t('app.tagline')));
}

const app = document.getElementById('app');
let renderSeq = 0;

async function render() {
  document.title = t('app.title');
  document.documentElement.lang = getLang() === 'zh' ? 'zh-CN' : 'en';
  if (!hasToken() && !(await resumeSession())) return signInForm();
  const roles = await myRoles();
  const pages = PAGES.filter((p) => roles === null || p.roles.some((r) => roles.includes(r)));
  if (pages.length === 0) pages.push(PAGES[1]);
  const current = pages.find((p) => `#/${p.id}` === location.hash) || pages[0];
  const seq = ++renderSeq;
  const page = h('div', { class: 'page', id: 'page', 'data-page': current.id, 'aria-busy': 'true' }, h('div', { class: 'loading' }, t('common.loading')));
  const nav = h('nav', { class: 'nav', 'aria-label': t('nav.menu') }, h('ul', {}, pages.map((p) => h('li', {},
    h('a', { href: `#/${p.id}`, class: p === current ? 'active' : undefined, 'aria-current': p === current ? 'page' : undefined },
      icon(p.id), t(`nav.${p.id}`))))));
  const signOutButton = h('button', {
    type: 'button', class: 'btn btn-ghost', 'data-testid': 'signout',
    onclick: async () => {
      await signOut();
      location.hash = '';
      render();
    },
  }, t('nav.signout'));
  clear(app).append(h('div', { class: 'layout' },
    h('aside', { class: 'sidebar' }, brand(), nav),
    h('div', { class: 'main' },
      h('header', { class: 'topbar' }, h('h1', {}, t(`nav.${current.id}`)), h('div', { class: 'topbar-tools' },
        h('button', { type: 'button', class: 'btn btn-ghost icon-refresh', 'data-testid': 'refresh', 'aria-label': t('common.refresh'), title: t('common.refresh'), onclick: () => render() }, icon('refresh')),
        langSelect(), signOutButton)),
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

onRender(render);
window.addEventListener('hashchange', render);
setLang(getLang());
render();
