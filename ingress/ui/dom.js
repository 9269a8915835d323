// DOM building blocks of the admin UI: h() and friends, icons, toasts,
// tables, cards, badges, empty states and file downloads.
//
// Invariant: data reaches the page only through textContent and attributes
// (h() turns strings and numbers into text nodes); nothing here parses HTML.
import { t } from './i18n.js';

const ICONS = {
  providers: 'M4 4h16v6H4zM4 14h16v6H4zM7 7h1M7 17h1',
  keys: 'M8 15a4 4 0 1 1 0-8 4 4 0 0 1 0 8zM12 11h9M18 11v3M21 11v2',
  teams: 'M9 11a3 3 0 1 0 0-6 3 3 0 0 0 0 6zM3 20v-1a6 6 0 0 1 12 0v1M16 5a3 3 0 0 1 0 6M18 14a5 5 0 0 1 3 5v1',
  usage: 'M5 20V11M11 20V5M17 20v-7M3 20h18',
  requests: 'M9 6h12M9 12h12M9 18h12M4 6h1M4 12h1M4 18h1',
  billing: 'M6 3h12v18l-3-2-3 2-3-2-3 2zM9 8h6M9 12h6M9 16h3',
  jobs: 'M12 21a9 9 0 1 1 0-18 9 9 0 0 1 0 18zM12 7v5l3 2',
  alerts: 'M6 16V11a6 6 0 1 1 12 0v5l2 2H4zM10 21h4',
  routing: 'M4 8h14l-3-3M20 16H6l3 3',
  signins: 'M10 17l5-5-5-5M15 12H3M14 3h6v18h-6',
  users: 'M12 11a4 4 0 1 0 0-8 4 4 0 0 0 0 8zM4 21v-1a8 8 0 0 1 16 0v1',
  globe: 'M12 21a9 9 0 1 1 0-18 9 9 0 0 1 0 18zM3 12h18M12 3c3 3 3 15 0 18M12 3c-3 3-3 15 0 18',
  refresh: 'M19 12a7 7 0 1 1-2-5M19 4v4h-4',
};

/** A line icon as inline SVG (decorative). */
export function icon(name) {
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

/** Builds an element. Strings and numbers among `children` become text nodes. */
export function h(tag, props = {}, ...children) {
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

export function append(e, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

export function clear(e) {
  while (e.firstChild) e.firstChild.remove();
  return e;
}

let uid = 0;
export const nextId = (p) => `${p}-${++uid}`;

export function toast(message, kind = 'ok') {
  const box = document.getElementById('toasts');
  const item = h('div', { class: `toast toast-${kind}` }, message);
  box.append(item);
  setTimeout(() => item.remove(), 3000);
}

export function unavailableState(page, extra) {
  append(page, h('div', { class: 'empty unavailable', 'data-testid': 'unavailable' },
    h('div', { class: 'empty-title' }, t('common.unavailable')),
    h('p', {}, t('common.unavailable.long')), extra));
}

export function emptyState(message) {
  return h('div', { class: 'empty' }, h('p', {}, message));
}

export function table(columns, rows, { testid, rowProps } = {}) {
  return h('div', { class: 'table-wrap' },
    h('table', { class: 'table', 'data-testid': testid },
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col', class: c.num ? 'num' : undefined }, c.label)))),
      h('tbody', {}, rows.map((r) => h('tr', rowProps ? rowProps(r) : {}, columns.map((c) => h('td', { class: c.num ? 'num' : undefined, 'data-label': c.label }, c.cell(r))))))));
}

export function badge(text, kind) {
  return h('span', { class: `badge badge-${kind}` }, text);
}

export function card(title, body, action) {
  return h('section', { class: 'panel' },
    h('div', { class: 'panel-head' }, h('h2', {}, title), action || null),
    body);
}

/** A headline figure (label above, value below). */
export function kpi(label, value, testid) {
  return h('div', { class: 'kpi', 'data-testid': testid }, h('div', { class: 'kpi-label' }, label), h('div', { class: 'kpi-value' }, value));
}

/** Hands `blob` to the browser as a download named `name`. */
export function saveBlob(blob, name) {
  const a = h('a', { href: URL.createObjectURL(blob), download: name });
  document.body.append(a);
  a.click();
  setTimeout(() => {
    URL.revokeObjectURL(a.href);
    a.remove();
  }, 1000);
}
