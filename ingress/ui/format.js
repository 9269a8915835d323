// How numbers, money, times and ids are written on the page (in the
// current language's conventions), and CSV cells.
//
// Invariant: pure functions returning strings; none touches the DOM.
import { getLang } from './i18n.js';

export const fmtInt = (n) => new Intl.NumberFormat(getLang() === 'zh' ? 'zh-CN' : 'en').format(Number(n) || 0);
export function fmtUsd(v, digits = 4) {
  if (v === null || v === undefined) return '—';
  const n = Number(v);
  if (n > 0 && n < 0.01) return `$${n.toPrecision(2)}`;
  return `$${n.toFixed(Math.min(digits, 2))}`;
}
export const fmtPct = (v) => `${(v * 100).toFixed(1)}%`;
export function fmtTime(s) {
  if (!s) return '—';
  const d = new Date(s);
  if (Number.isNaN(d.getTime())) return String(s);
  return d.toLocaleString(getLang() === 'zh' ? 'zh-CN' : 'en', { dateStyle: 'medium', timeStyle: 'short' });
}
export const isoDay = (d) => d.toISOString().slice(0, 10);

/** A time as a `datetime-local` input holds it: in the browser's time zone
 * (which is how the input reads it back), to the minute; '' for none. */
export function localInput(s) {
  if (!s) return '';
  const d = new Date(s);
  if (Number.isNaN(d.getTime())) return '';
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}
export const shortId = (id) => String(id || '').slice(-8);

/** A CSV cell: quoted when needed, and never a spreadsheet formula. */
export function csvCell(v) {
  let s = String(v ?? '');
  if (/^[=+\-@\t\r]/.test(s)) s = `'${s}`; // no formulas when opened in a spreadsheet
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}
