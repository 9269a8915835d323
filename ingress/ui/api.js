// The admin session and its calls to /admin/api: the token (in this tab's
// sessionStorage only, never in a URL) or a single sign-on session (its
// HttpOnly cookie, which scripts cannot read), the fetch wrapper, id -> name
// lookups, downloads sent with the token, and the redraw hook.
//
// Invariants: every call carries the token as a Bearer header, or, signed
// in by SSO, the session's CSRF token (from GET /admin/api/me) in
// x-aigw-csrf; an error answer becomes an ApiError with the API's own
// message; a 401 outside the sign-in check drops the token or session and
// redraws (back to the sign-in form).
import { saveBlob, toast } from './dom.js';

const TOKEN = 'aigw.token';

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.param = body?.error?.param ?? null;
    this.unavailable = status === 405 || (status === 404 && body?.error?.code === 'unknown_url');
  }
}

let renderer = () => {};

/** Sets what `render` runs (the shell's page renderer, set once by app.js). */
export function onRender(fn) {
  renderer = fn;
}

/** Redraws the current page (after a change, or after a 401). */
export function render() {
  return renderer();
}

// The CSRF token of a single sign-on session (null: signed in by token).
let csrf = null;

export const hasToken = () => !!sessionStorage.getItem(TOKEN) || csrf !== null;

/** Forgets the token; ends a single sign-on session (best effort). */
export async function signOut() {
  sessionStorage.removeItem(TOKEN);
  me = null;
  if (csrf !== null) {
    const token = csrf;
    csrf = null;
    await fetch('/admin/auth/logout', { method: 'POST', headers: { 'x-aigw-csrf': token } }).catch(() => {});
  }
}

const authorization = () => (csrf !== null ? {} : { Authorization: `Bearer ${sessionStorage.getItem(TOKEN) || ''}` });

/**
 * Picks up a single sign-on session (the cookie set after the provider's
 * redirect); whether one is live.
 */
export async function resumeSession() {
  if (sessionStorage.getItem(TOKEN)) return true;
  try {
    const res = await fetch('/admin/api/me');
    if (!res.ok) return false;
    const me = await res.json();
    if (me.via !== 'session' || !me.csrf_token) return false;
    csrf = me.csrf_token;
    return true;
  } catch {
    return false;
  }
}

let me = null;

/**
 * The names of the signed-in principal's roles (GET /admin/api/me, once per
 * sign-in); null when it cannot be read (the UI then hides nothing).
 */
export async function myRoles() {
  if (me === null) {
    try {
      me = await api('GET', '/me');
    } catch {
      return null;
    }
  }
  return (me?.roles || []).map((r) => r.role);
}

/** What the sign-in page offers (`{sso, sso_login_url}`). */
export async function authConfig() {
  try {
    const res = await fetch('/admin/auth/config');
    return res.ok ? await res.json() : { sso: false };
  } catch {
    return { sso: false };
  }
}

let signingIn = false;

/**
 * Keeps `token` if the API accepts it; otherwise forgets it and throws the
 * ApiError (401: refused, 403: admin API disabled).
 */
export async function signIn(token) {
  sessionStorage.setItem(TOKEN, token);
  me = null;
  signingIn = true;
  try {
    await api('GET', '/keys');
  } catch (e) {
    sessionStorage.removeItem(TOKEN);
    throw e;
  } finally {
    signingIn = false;
  }
}

export async function api(method, path, body) {
  const headers = authorization();
  if (csrf !== null && method !== 'GET') headers['x-aigw-csrf'] = csrf;
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
    if (res.status === 401 && !signingIn && hasToken()) {
      signOut().then(() => setTimeout(render, 0));
    }
    throw err;
  }
  return data;
}

/** `api`, but a missing endpoint yields `null` instead of an error. */
export async function optional(method, path) {
  try {
    return await api(method, path);
  } catch (e) {
    if (e.unavailable) return null;
    throw e;
  }
}

/** id -> name of the rows of an admin list (keys, teams, projects). */
export async function namesOf(path) {
  try {
    const rows = (await api('GET', path))?.data || [];
    return new Map(rows.map((k) => [k.id, k.name]));
  } catch {
    return new Map();
  }
}

export async function keyNames() {
  return namesOf('/keys');
}

/** Downloads an admin API answer (sent with the token) as a file. */
export async function downloadFrom(path, name) {
  const res = await fetch(`/admin/api${path}`, { headers: authorization() });
  if (!res.ok) {
    toast(`${res.status} ${res.statusText}`, 'bad');
    return;
  }
  saveBlob(await res.blob(), name);
}
