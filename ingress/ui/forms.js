// Dialogs and forms: a modal dialog, a confirmation, and forms built from
// field specs that validate before sending and show the API's error (in
// the form, and at the field the API names in `param`).
//
// Invariant: labels, hints, values and error messages are set as text or
// as input values, never as HTML; every control has a <label>.
import { t } from './i18n.js';
import { append, h, nextId } from './dom.js';

export function openDialog(title, content, { wide = false } = {}) {
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

export function confirmDialog(message, { danger = true, label = t('common.confirm'), dismiss = t('common.cancel') } = {}) {
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
export function buildForm(fields, { submitLabel = t('common.save'), onSubmit, onCancel }) {
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

export function formDialog(title, fields, onSubmit, opts = {}) {
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

export const validUrl = (v) => (/^https?:\/\/[^\s/]+/i.test(v) ? null : t('form.bad_url'));
export const validName = (v) => (v.length <= 64 && !v.includes('/') ? null : t('form.bad_name'));
export const list = (v) => v.split(/[\n,]/).map((s) => s.trim()).filter(Boolean);
