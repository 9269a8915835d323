// The Jobs page: every key's background jobs, filtered by status and key,
// paged with "Load more", refreshed every few seconds while one listed is
// queued or running; a job's detail, and cancelling (with confirmation).
//
// Invariants: the refresh loop stops once no listed job is active or the
// page is left; the answer, metadata and errors are shown as text.
import { t } from './i18n.js';
import { badge, card, clear, emptyState, h, nextId, table, toast, unavailableState } from './dom.js';
import { fmtInt, fmtTime, fmtUsd, shortId } from './format.js';
import { api, keyNames, optional, render } from './api.js';
import { confirmDialog, openDialog } from './forms.js';

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

export async function pageJobs(page) {
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
