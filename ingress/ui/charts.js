// Small SVG charts drawn with DOM APIs (no library, no innerHTML).
const NS = 'http://www.w3.org/2000/svg';

function el(tag, attrs = {}, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = String(text);
  return e;
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

/**
 * A bar chart of `points` ([{label, value}]), scaled to its container.
 * `format` renders axis and tooltip values.
 */
export function barChart(points, { title, format = (v) => String(v), tone = 1, integer = false } = {}) {
  const W = 640;
  const H = 220;
  const left = 64;
  const bottom = 28;
  const top = 12;
  const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', class: 'chart' });
  if (title) svg.append(el('title', {}, title));
  const top0 = Math.max(0, ...points.map((p) => p.value));
  const max = integer ? Math.max(4, Math.ceil(niceMax(top0) / 4) * 4) : niceMax(top0);
  const plotH = H - top - bottom;
  for (let i = 0; i <= 4; i++) {
    const y = top + plotH - (plotH * i) / 4;
    svg.append(el('line', { x1: left, x2: W - 8, y1: y, y2: y, class: 'grid' }));
    svg.append(el('text', { x: left - 6, y: y + 4, 'text-anchor': 'end', class: 'axis' }, format((max * i) / 4)));
  }
  const n = Math.max(points.length, 1);
  const slot = (W - left - 8) / n;
  const bw = Math.max(2, Math.min(40, slot * 0.7));
  const every = Math.ceil(n / 8);
  points.forEach((p, i) => {
    const h = (plotH * p.value) / max;
    const x = left + slot * i + (slot - bw) / 2;
    const bar = el('rect', { x, y: top + plotH - h, width: bw, height: Math.max(h, p.value > 0 ? 1 : 0), rx: 2, class: `bar tone-${tone}` });
    bar.append(el('title', {}, `${p.label}: ${format(p.value)}`));
    svg.append(bar);
    if (i % every === 0) {
      svg.append(el('text', { x: left + slot * i + slot / 2, y: H - 8, 'text-anchor': 'middle', class: 'axis' }, p.label));
    }
  });
  return svg;
}
