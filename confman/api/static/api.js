// HTTP client for /api/v1 (docs/api.md). Every call carries the bearer token; a 401
// anywhere calls the registered handler (back to the login screen).

const TOKEN_KEY = "confman.token";
const BASE = "/api/v1";

let unauthorizedHandler = () => {};

export function onUnauthorized(fn) {
  unauthorizedHandler = fn;
}

export function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

export function setToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    /* storage unavailable: the session ends with the page */
  }
}

/** An HTTP error with the problem-details body (RFC 9457) when there is one. */
export class ApiError extends Error {
  constructor(status, problem, fallback) {
    const p = problem && typeof problem === "object" ? problem : {};
    super(p.detail || p.title || fallback || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.problem = p;
  }
  get errors() {
    return Array.isArray(this.problem.errors) ? this.problem.errors : [];
  }
}

export function enc(part) {
  return encodeURIComponent(part);
}

export function docPath(ns, key) {
  return `/namespaces/${enc(ns)}/documents/${enc(key)}`;
}

/** An ETag / version as an If-Match header value. */
export function ifMatch(version) {
  return `"${version}"`;
}

/** The version in an ETag header ("3", W/"3" or 3), or null. */
export function etagVersion(etag) {
  if (!etag) return null;
  const m = /(\d+)/.exec(etag);
  return m ? Number(m[1]) : null;
}

/**
 * request("GET", "/whoami") -> {status, body, headers}
 * Throws ApiError for non-2xx; 401 also triggers the unauthorized handler
 * (unless opts.token is given: the login form checks a candidate token itself).
 */
export async function request(method, path, { body, headers = {}, token, signal, query } = {}) {
  const useToken = token ?? getToken();
  const h = { Accept: "application/json", ...headers };
  if (useToken) h.Authorization = `Bearer ${useToken}`;
  if (body !== undefined) h["Content-Type"] = "application/json";
  let url = BASE + path;
  if (query) {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null) qs.append(k, String(v));
    const s = qs.toString();
    if (s) url += (url.includes("?") ? "&" : "?") + s;
  }
  let response;
  try {
    response = await fetch(url, {
      method,
      headers: h,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: "no-store",
    });
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(0, { title: "Network error", detail: "The server cannot be reached." });
  }
  let data = null;
  const text = await response.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { detail: text.slice(0, 300) };
    }
  }
  if (!response.ok) {
    const err = new ApiError(response.status, data, response.statusText);
    if (response.status === 401 && token === undefined) unauthorizedHandler(err);
    throw err;
  }
  return { status: response.status, body: data, headers: response.headers };
}

// The environment every document route reads and writes (`?environment=`); "base" is the
// shared base. Set by env.js; null (before it is known) lets the server pick its own.
let environment = null;

export function setEnvironment(name) {
  environment = name || null;
}

export function currentEnvironment() {
  return environment;
}

/** A query with the selected environment added, last (URLs keep their old prefix). */
function scoped(query = {}) {
  return { ...query, environment: environment || undefined };
}

export const api = {
  whoami: (token) => request("GET", "/whoami", { token }),
  namespaces: () => request("GET", "/namespaces", { query: scoped() }),
  schema: (ns) => request("GET", `/namespaces/${enc(ns)}/schema`),
  documents: (ns) => request("GET", `/namespaces/${enc(ns)}/documents`, { query: scoped() }),
  document: (ns, key) => request("GET", docPath(ns, key), { query: scoped() }),
  history: (ns, key, limit = 50) => request("GET", `${docPath(ns, key)}/history`, { query: scoped({ limit }) }),
  patch: (ns, key, patch, version, { dryRun = false, reason = null } = {}) =>
    request("PATCH", docPath(ns, key), {
      body: patch,
      headers: version === null || version === undefined ? {} : { "If-Match": ifMatch(version) },
      query: scoped({ dry_run: dryRun ? "true" : undefined, reason: reason || undefined }),
    }),
  create: (ns, key, doc, { dryRun = false, reason = null } = {}) =>
    request("PUT", docPath(ns, key), { body: doc, query: scoped({ dry_run: dryRun ? "true" : undefined, reason: reason || undefined }) }),
  remove: (ns, key, version) => request("DELETE", docPath(ns, key), { headers: { "If-Match": ifMatch(version) }, query: scoped() }),
  rollback: (ns, key, toVersion, currentVersion) =>
    request("POST", `${docPath(ns, key)}/rollback`, {
      body: { to_version: toVersion },
      headers: { "If-Match": ifMatch(currentVersion) },
      query: scoped(),
    }),
  /** Remove `fields` (dotted paths; null: all) from the selected environment's overlay. */
  reset: (ns, key, fields, version) =>
    request("POST", `${docPath(ns, key)}/reset`, {
      body: { fields },
      headers: version ? { "If-Match": ifMatch(version) } : {},
      query: scoped(),
    }),
  environments: () => request("GET", "/environments"),
  compare: (left, right, { namespace = null, all = false } = {}) =>
    request("GET", "/compare", { query: { left, right, namespace: namespace || undefined, all: all ? "true" : undefined } }),
  cluster: () => request("GET", "/cluster"),
  /** A committed change set as one entry: {change_set, actor, reason, at, members: [...]}. */
  changeSet: (id) => request("GET", `/change-sets/${enc(id)}`),
  /** Make `to`'s effective values equal `from`'s (one change set); `namespaces`: only these. */
  promote: (from, to, { namespaces = [], dryRun = false, reason = null } = {}) => {
    const qs = new URLSearchParams({ from, to });
    for (const n of namespaces) qs.append("namespace", n);
    if (dryRun) qs.append("dry_run", "true");
    if (reason) qs.append("reason", reason);
    return request("POST", `/promote?${qs}`);
  },
};
