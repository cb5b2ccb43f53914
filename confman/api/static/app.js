// confman operator dashboard: login, namespaces, documents, live feed, cluster, compare.
// Plain ES modules, no build step, no external resources.

import { api, ApiError, getToken, setToken, onUnauthorized } from "./api.js";
import { h, clear, actionBadge, timeNode, relativeTime, richText, plainText } from "./dom.js";
import { DocView, NewItemView } from "./docview.js";
import { ClusterView } from "./cluster.js";
import { CompareView } from "./compare.js";
import { EnvironmentPicker, isBase, envName } from "./env.js";
import { EventStream } from "./sse.js";
import { summary } from "./form.js";

const $ = (id) => document.getElementById(id);
const FEED_LIMIT = 200;

const state = {
  me: null,
  namespaces: [],
  keys: new Map(), // ns -> [{key, version, updated_at}]
  schemas: new Map(), // ns -> Promise<schema>
  view: null, // DocView | NewItemView | ClusterView | null
  route: null,
  stream: null,
  feedCount: 0,
  picker: null, // EnvironmentPicker: the environment every view reads and writes
};

// ---- status / toasts ----------------------------------------------------------------

// A notification belongs to one page (its hash): it goes when the operator leaves it.
// Errors stay until dismissed or left; the others fade on their own.
const STATUS_MS = { info: 5000, success: 5000, warn: 10000 };
let statusTimer = null;
let statusPage = null;
function status(text, kind = "info", { page = location.hash } = {}) {
  const toast = $("toast");
  clearTimeout(statusTimer);
  toast.dataset.kind = kind;
  $("status").textContent = text;
  toast.hidden = false;
  statusPage = page;
  if (kind in STATUS_MS) statusTimer = setTimeout(hideStatus, STATUS_MS[kind]);
}
function hideStatus() {
  clearTimeout(statusTimer);
  statusPage = null;
  $("toast").hidden = true;
  $("status").textContent = "";
}

// ---- unsaved edits ------------------------------------------------------------------

/** The current view, when it holds edits not saved yet. */
function unsavedView() {
  const v = state.view;
  return v && v.dirty ? v : null;
}

function unsavedMessage(v) {
  const what = v instanceof NewItemView ? `the new ${v.ns} item` : `${v.ns}/${v.key}`;
  return `You have unsaved edits to ${what}. Leave this page and discard them?`;
}

/** An in-page yes/no question; resolves true for "ok". */
function confirmDialog(message) {
  const dialog = $("confirm-dialog");
  $("confirm-message").textContent = message;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
    $("confirm-cancel").focus();
  });
}

/** Resolves true when nothing unsaved would be lost, or the operator agrees to lose it. */
async function mayLeave() {
  const v = unsavedView();
  if (!v) return true;
  if ($("confirm-dialog").open) return false;
  return confirmDialog(unsavedMessage(v));
}

// ---- context given to views ---------------------------------------------------------

const ctx = {
  me: () => state.me,
  environment: () => (state.picker ? state.picker.name : "base"),
  environments: () => (state.picker ? state.picker.names() : ["base"]),
  /** Whether the token may write in the selected environment (tokens may be limited). */
  canWriteEnvironment() {
    const me = state.me;
    return !(me && Array.isArray(me.environments) && !me.environments.map(envName).includes(this.environment()));
  },
  nsInfo: (ns) => state.namespaces.find((n) => n.namespace === ns) || null,
  namespaceNames: () => state.namespaces.map((n) => n.namespace),
  canWrite(ns) {
    const me = state.me;
    if (!me || (me.role !== "editor" && me.role !== "admin")) return false;
    const info = this.nsInfo(ns);
    if (info && info.writable === false) return false;
    if (me.role !== "admin" && Array.isArray(me.namespaces) && !me.namespaces.includes(ns)) return false;
    return this.canWriteEnvironment();
  },
  isAdmin: () => Boolean(state.me && state.me.role === "admin"),
  status, // status(text, kind, {page}): page is the hash it belongs to (default: this one)
  navigate(hash) {
    if (location.hash === hash) route();
    else location.hash = hash;
  },
  schema(ns) {
    if (!state.schemas.has(ns)) {
      const p = api.schema(ns).then((r) => r.body);
      p.catch(() => state.schemas.delete(ns));
      state.schemas.set(ns, p);
    }
    return state.schemas.get(ns);
  },
  onDocChanged(ns) {
    refreshNamespace(ns);
  },
};

// ---- login --------------------------------------------------------------------------

function showLogin(message, kind = "info") {
  hideStatus();
  stopStream();
  destroyView();
  state.me = null;
  $("app-view").hidden = true;
  $("login-view").hidden = false;
  const msg = $("login-message");
  msg.textContent = message || "";
  msg.hidden = !message;
  msg.dataset.kind = kind;
  const input = $("token-input");
  input.value = "";
  input.focus();
  document.title = "confman — log in";
}

async function login(token, { fromStorage = false } = {}) {
  const button = $("login-button");
  button.disabled = true;
  try {
    const res = await api.whoami(token);
    setToken(token);
    state.me = res.body || {};
    await startApp();
  } catch (err) {
    setToken(null);
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
      showLogin(fromStorage ? "Your session ended: log in again." : "That token is not recognised (or was revoked).", "error");
    } else {
      showLogin(`Cannot reach the server: ${err.message}`, "error");
    }
  } finally {
    button.disabled = false;
  }
}

function logout(message) {
  setToken(null);
  state.namespaces = [];
  state.keys.clear();
  state.schemas.clear();
  clear($("live-feed"));
  state.feedCount = 0;
  history.replaceState(null, "", location.pathname);
  showLogin(message || "Logged out.");
}

onUnauthorized(() => {
  if (!state.me) return;
  logout("Your token was refused (401): it expired or was revoked. Log in again.");
});

// ---- app shell ----------------------------------------------------------------------

async function startApp() {
  $("login-view").hidden = true;
  $("app-view").hidden = false;
  const me = state.me;
  const name = String(me.name ?? "?");
  const roleName = String(me.role ?? "?");
  // A token named after its role ("admin") would read "admin admin": the badge says both.
  $("whoami-name").textContent = name;
  $("whoami-name").hidden = name === roleName;
  const role = $("whoami-role");
  role.textContent = roleName;
  role.className = `badge role role-${me.role}`;
  const scope = Array.isArray(me.namespaces) ? `namespaces: ${me.namespaces.join(", ")}` : "all namespaces";
  $("whoami").title = `token “${name}”, role ${roleName}, ${scope}`;
  document.title = "confman";
  await state.picker.load(me);
  renderFeedEmpty();
  startStream();
  await loadNamespaces();
  route();
}

/** Another environment picked: every listing, the view and the stream follow it. */
async function switchEnvironment() {
  destroyView(); // mayChange asked about unsaved edits already
  state.keys.clear();
  clearFeed();
  startStream();
  await loadNamespaces();
  state.route = null; // the same hash, another environment: a new view
  route();
}

async function loadNamespaces() {
  try {
    const res = await api.namespaces();
    const body = res.body;
    state.namespaces = Array.isArray(body) ? body : (body && body.namespaces) || [];
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) status(`Could not load namespaces: ${err.message}`, "error");
    state.namespaces = [];
  }
  renderSidebar();
}

async function loadKeys(ns) {
  try {
    const res = await api.documents(ns);
    const body = res.body;
    const docs = Array.isArray(body) ? body : (body && body.documents) || [];
    state.keys.set(ns, docs);
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) status(`Could not list ${ns}: ${err.message}`, "error");
    state.keys.set(ns, []);
  }
}

async function refreshNamespace(ns) {
  const info = ctx.nsInfo(ns);
  await loadNamespaces();
  if (info && info.keyed && state.route && state.route.ns === ns) {
    await loadKeys(ns);
    renderSidebar();
    if (state.route.view === "collection") renderCollection(ns);
  }
}

/** A listed item's version: in an environment, its overlay's ("v2") and the base's under it. */
function listedVersion(d, { full = false } = {}) {
  if (d.version === undefined) return "";
  const base = d.base_version;
  if (isBase(ctx.environment()) || base === undefined || base === null || base === 0) return `v${d.version}`;
  if (!d.version) return `base v${base}`;
  return full ? `v${d.version} · base v${base}` : `v${d.version}`;
}

function nsHref(n) {
  return n.keyed ? `#/ns/${encodeURIComponent(n.namespace)}` : `#/ns/${encodeURIComponent(n.namespace)}/default/value`;
}

function renderSidebar() {
  const list = $("ns-list");
  const r = state.route || {};
  if (!state.namespaces.length) {
    clear(list, h("li", { class: "muted empty" }, "No namespaces visible to this token."));
    return;
  }
  clear(list, state.namespaces.map((n) => {
    const selected = r.ns === n.namespace;
    const meta = n.keyed ? `${n.items ?? (state.keys.get(n.namespace) || []).length} item${n.items === 1 ? "" : "s"}` : n.version !== undefined && n.version !== null ? `v${n.version}` : "";
    const link = h("a", {
      href: nsHref(n), class: ["ns-link", selected && "selected"], testid: `ns-${n.namespace}`,
      "aria-current": selected && (r.view === "collection" || !n.keyed) ? "page" : null,
      title: n.description ? plainText(summary(n.description)) : n.title || n.namespace,
    },
      h("span", { class: "ns-label" }, n.namespace),
      h("span", { class: "ns-meta" }, n.writable === false ? h("span", { class: "lock", title: "read-only for this token" }, "ro") : null, meta));
    let keys = null;
    if (n.keyed && selected) {
      const docs = state.keys.get(n.namespace);
      keys = h("ul", { class: "key-list" },
        docs === undefined ? h("li", { class: "muted small" }, "loading…")
          : !docs.length ? h("li", { class: "muted small" }, "no items")
          : docs.map((d) => h("li", {}, h("a", {
            href: `#/ns/${encodeURIComponent(n.namespace)}/${encodeURIComponent(d.key)}/value`,
            class: ["key-link", r.key === d.key && "selected"], testid: `key-${d.key}`,
            "aria-current": r.key === d.key ? "page" : null,
          }, h("span", { class: "key-label" }, d.key), h("span", { class: "ns-meta" }, listedVersion(d))))));
    }
    return h("li", { class: ["ns-item", selected && "open"] }, link, keys);
  }));
}

// ---- routing ------------------------------------------------------------------------

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const parts = raw.split("/").filter((p) => p !== "").map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
  if (parts[0] === "cluster") return { view: "cluster" };
  if (parts[0] === "compare") return { view: "compare", left: parts[1] || null, right: parts[2] || null };
  if (parts[0] === "ns" && parts[1]) {
    const ns = parts[1];
    if (parts[2] === "+new") return { view: "new", ns };
    if (parts[2]) return { view: "doc", ns, key: parts[2], tab: parts[3] || "value" };
    return { view: "collection", ns };
  }
  return { view: "home" };
}

function destroyView() {
  if (state.view && state.view.destroy) state.view.destroy();
  state.view = null;
}

/** Whether going to route `to` replaces the current view (another tab of the same document does not). */
function leavesView(from, to) {
  return !(from && from.view === "doc" && to.view === "doc" && from.ns === to.ns && from.key === to.key);
}

let shownUrl = location.href; // the URL of the view on screen
async function onHashChange() {
  if (!state.me) return;
  if (!unsavedView() || !leavesView(state.route, parseHash())) {
    route();
    return;
  }
  // Keep showing the form's URL while asking; go on only if the operator agrees.
  const target = location.href;
  history.replaceState(null, "", shownUrl);
  if (!(await mayLeave()) || !state.me) return;
  destroyView(); // its edits are given up
  history.replaceState(null, "", target);
  route();
}

async function route() {
  if (!state.me) return;
  const r = parseHash();
  const prev = state.route;
  state.route = r;
  shownUrl = location.href;
  if (statusPage !== null && statusPage !== location.hash) hideStatus();
  $("cluster-link").setAttribute("aria-current", r.view === "cluster" ? "page" : "false");
  $("cluster-link").classList.toggle("active", r.view === "cluster");
  $("compare-link").setAttribute("aria-current", r.view === "compare" ? "page" : "false");
  $("compare-link").classList.toggle("active", r.view === "compare");
  // Same document, other tab: keep the view (and any unsaved edits).
  if (r.view === "doc" && prev && prev.view === "doc" && prev.ns === r.ns && prev.key === r.key && state.view instanceof DocView) {
    state.view.showTab(r.tab);
    return;
  }
  const info = r.ns ? ctx.nsInfo(r.ns) : null;
  if (r.view === "collection" && info && !info.keyed) {
    location.replace(`#/ns/${encodeURIComponent(r.ns)}/default/value`);
    return;
  }
  destroyView();
  const main = $("main");
  renderSidebar();
  if (r.ns && info && info.keyed && (!prev || prev.ns !== r.ns || !state.keys.has(r.ns))) {
    loadKeys(r.ns).then(() => {
      renderSidebar();
      if (state.route.view === "collection" && state.route.ns === r.ns) renderCollection(r.ns);
    });
  }
  if (r.view === "home") {
    renderHome();
  } else if (r.view === "cluster") {
    const v = new ClusterView(ctx);
    state.view = v;
    clear(main, v.element);
    v.load();
  } else if (r.view === "compare") {
    const v = new CompareView(ctx, r.left, r.right);
    state.view = v;
    clear(main, v.element);
    v.load();
  } else if (r.ns && !info && state.namespaces.length) {
    clear(main, h("div", { class: "placeholder error" }, `Unknown namespace “${r.ns}” (or not visible to this token).`));
  } else if (r.view === "collection") {
    renderCollection(r.ns);
  } else if (r.view === "new") {
    const v = new NewItemView(ctx, r.ns);
    state.view = v;
    clear(main, v.element);
    v.load();
  } else if (r.view === "doc") {
    const v = new DocView(ctx, r.ns, r.key, r.tab);
    state.view = v;
    clear(main, v.element);
    await v.load();
  }
  main.scrollTop = 0;
}

function renderHome() {
  const main = $("main");
  clear(main, h("section", { class: "home" },
    h("h1", {}, "Namespaces"),
    h("p", { class: "muted" }, "Pick a namespace to see its effective value, where each field comes from, edit it, or browse its history."),
    h("div", { class: "cards" }, state.namespaces.map((n) => h("a", { href: nsHref(n), class: "card ns-card" },
      h("div", { class: "card-title" }, h("span", {}, n.namespace), n.keyed ? h("span", { class: "badge kind" }, "collection") : h("span", { class: "badge kind" }, "singleton")),
      h("p", { class: "card-desc" }, n.description ? richText(summary(n.description)) : n.title || ""),
      h("div", { class: "card-meta muted" },
        n.keyed ? `${n.items ?? "?"} item${n.items === 1 ? "" : "s"}` : `version ${n.version ?? 0}`,
        n.writable === false ? " · read-only" : "")))),
  ));
}

function renderCollection(ns) {
  const info = ctx.nsInfo(ns);
  const main = $("main");
  const docs = state.keys.get(ns);
  const writable = ctx.canWrite(ns);
  clear(main, h("section", { class: "collection" },
    h("div", { class: "doc-header" },
      h("div", { class: "doc-title-row" },
        h("h1", {}, h("span", { class: "ns-name" }, ns)),
        h("span", { class: "badge kind" }, "collection"),
        writable ? null : h("span", { class: "badge readonly" }, "read-only"),
        h("div", { class: "spacer" }),
        writable ? h("a", { href: `#/ns/${encodeURIComponent(ns)}/+new`, class: "btn primary", testid: "new-item-button", role: "button" }, "New item") : null),
      info && info.description ? h("div", { class: "doc-meta" }, h("span", { class: "ns-desc" }, richText(summary(info.description)))) : null),
    docs === undefined ? h("div", { class: "placeholder" }, "Loading items…")
      : !docs.length ? h("div", { class: "placeholder" }, writable ? "No items yet. Create one with “New item”." : "No items yet.")
      : h("table", { class: "items-table" },
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Key"), h("th", { scope: "col" }, "Version"), h("th", { scope: "col" }, "Updated"))),
        h("tbody", {}, docs.map((d) => h("tr", {},
          h("td", {}, h("a", { href: `#/ns/${encodeURIComponent(ns)}/${encodeURIComponent(d.key)}/value` }, h("code", {}, d.key))),
          h("td", {}, listedVersion(d, { full: true }) || "—"),
          h("td", {}, timeNode(d.updated_at))))))));
}

// ---- live feed ----------------------------------------------------------------------

function renderFeedEmpty() {
  const feed = $("live-feed");
  if (!feed.children.length) feed.appendChild(h("li", { class: "feed-empty muted" }, "Waiting for changes…"));
}

function clearFeed() {
  clear($("live-feed"));
  state.feedCount = 0;
  $("feed-count").textContent = "0";
  renderFeedEmpty();
}

function setStreamState(s, info) {
  const el = $("stream-state");
  el.dataset.state = s;
  const label = { connecting: "connecting…", open: "live", error: "reconnecting", closed: "offline" }[s] || s;
  el.textContent = label;
  el.title = info || label;
}

function startStream() {
  stopStream();
  const env = ctx.environment();
  state.stream = new EventStream({
    url: `/api/v1/events?environment=${encodeURIComponent(env)}`,
    token: getToken,
    onEvent: handleEvent,
    onState: setStreamState,
    onUnauthorized: () => {
      if (state.me) logout("Your token was refused (401): it expired or was revoked. Log in again.");
    },
  });
  state.stream.start();
}

function stopStream() {
  if (state.stream) state.stream.stop();
  state.stream = null;
}

function handleEvent(ev) {
  if (ev.event && ev.event !== "change" && ev.event !== "message") return;
  let data;
  try {
    data = JSON.parse(ev.data);
  } catch {
    return;
  }
  if (!data || typeof data !== "object") return;
  addFeedItem(data);
  // Sidebar counts and versions: the listing shows the selected environment's documents;
  // a base change seen from an environment changes no version listed there.
  const info = ctx.nsInfo(data.namespace);
  const ours = data.environment === undefined || envName(data.environment) === ctx.environment();
  if (info && ours) {
    if (!info.keyed && typeof data.version === "number") info.version = data.version;
    if (info.keyed && (data.action === "create" || data.action === "delete")) {
      refreshNamespace(data.namespace);
    } else if (info.keyed && state.keys.has(data.namespace)) {
      const d = state.keys.get(data.namespace).find((x) => x.key === data.key);
      if (d && typeof data.version === "number") {
        d.version = data.version;
        d.updated_at = data.at ?? d.updated_at;
      }
    }
    renderSidebar();
  }
  const v = state.view;
  if (v instanceof DocView && v.ns === data.namespace && v.key === data.key) v.onEvent(data);
  else if (state.route && state.route.view === "collection" && state.route.ns === data.namespace) renderCollection(data.namespace);
}

/** The environment badge of a feed line: shown unless base changes are seen from the base. */
function feedEnvBadge(env) {
  if (env === null || (isBase(env) && isBase(ctx.environment()))) return null;
  return h("span", { class: ["badge", "env", isBase(env) ? "env-base" : "env-named"], testid: "feed-environment", title: `a change to the ${env} document` }, env);
}

function feedDocLink(ns, key) {
  const href = `#/ns/${encodeURIComponent(ns)}/${encodeURIComponent(key)}/value`;
  return h("a", { href, class: "feed-doc", title: `${ns}/${key}` }, ns, key !== "default" ? h("span", { class: "feed-key" }, ` / ${key}`) : null);
}

function feedChangeLine(e, env) {
  const changed = Array.isArray(e.changed) ? e.changed : [];
  return h("div", { class: "feed-line" },
    feedEnvBadge(env),
    h("span", { class: "badge version" }, `v${e.version ?? "?"}`),
    actionBadge(e.action),
    changed.length ? h("code", { class: "feed-changed" }, changed.join(", ")) : e.action === "update" ? h("span", { class: "muted" }, "no field changed") : null);
}

function feedMeta(e) {
  return h("div", { class: "feed-meta muted" },
    e.actor ? h("span", { class: "feed-actor" }, String(e.actor)) : "unknown actor",
    e.origin ? h("span", { class: "feed-origin", title: `origin ${e.origin}` }, ` · ${e.origin}`) : null,
    e.seq !== undefined ? h("span", { class: "feed-seq" }, ` · seq ${e.seq}`) : null);
}

function feedTime(e) {
  return e.at ? h("time", { datetime: String(e.at), title: String(e.at), class: "rel" }, relativeTime(e.at)) : null;
}

/** A change set's entry in the feed: created by its first member, the others join it. */
function feedSetEntry(feed, id, e) {
  for (const li of feed.querySelectorAll("li.feed-set")) if (li.dataset.changeSet === id) return li;
  const count = h("span", { class: "feed-set-count", testid: "feed-set-count" });
  const item = h("li", { class: "feed-item feed-set new", testid: "feed-item", dataset: { changeSet: id, seq: String(e.seq ?? ""), environment: "" } },
    h("div", { class: "feed-top" },
      h("span", { class: "feed-set-title" }, h("span", { class: "badge set-badge", title: `change set ${id}` }, "change set"), " ", count),
      feedTime(e)),
    e.reason ? h("div", { class: "feed-reason" }, "“", String(e.reason), "”") : null,
    h("ol", { class: "feed-members", testid: "feed-members" }),
    feedMeta(e));
  feed.prepend(item);
  setTimeout(() => item.classList.remove("new"), 2000);
  return item;
}

function addFeedItem(e) {
  const feed = $("live-feed");
  const empty = feed.querySelector(".feed-empty");
  if (empty) empty.remove();
  const ns = String(e.namespace ?? "?");
  const key = String(e.key ?? "default");
  const env = e.environment === undefined ? null : envName(e.environment);
  const setId = typeof e.change_set === "string" && e.change_set ? e.change_set : null;
  const member = { seq: String(e.seq ?? ""), namespace: ns, key, version: String(e.version ?? ""), environment: env ?? "" };
  if (setId) {
    // The members of one set arrive together: one entry lists them all.
    const entry = feedSetEntry(feed, setId, e);
    entry.querySelector(".feed-members").appendChild(h("li", { class: "feed-member", testid: "feed-member", dataset: member },
      feedDocLink(ns, key), feedChangeLine(e, env)));
    const n = entry.querySelectorAll(".feed-member").length;
    entry.querySelector(".feed-set-count").textContent = `${n} change${n === 1 ? "" : "s"}`;
    if (e.seq !== undefined) {
      entry.dataset.seq = String(e.seq);
      const seq = entry.querySelector(".feed-seq");
      if (seq) seq.textContent = ` · seq ${entry.querySelector(".feed-member").dataset.seq}–${e.seq}`;
    }
  } else {
    const item = h("li", { class: "feed-item new", testid: "feed-item", dataset: member },
      h("div", { class: "feed-top" }, feedDocLink(ns, key), feedTime(e)),
      feedChangeLine(e, env),
      e.reason ? h("div", { class: "feed-reason" }, "“", String(e.reason), "”") : null,
      feedMeta(e));
    feed.prepend(item);
    setTimeout(() => item.classList.remove("new"), 2000);
  }
  while (feed.children.length > FEED_LIMIT) feed.lastElementChild.remove();
  state.feedCount += 1;
  $("feed-count").textContent = String(state.feedCount);
}

setInterval(() => {
  for (const t of document.querySelectorAll("#live-feed time.rel")) t.textContent = relativeTime(t.getAttribute("datetime"));
}, 15000);

// ---- boot ---------------------------------------------------------------------------

function boot() {
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const token = $("token-input").value.trim();
    if (!token) {
      showLogin("Enter a token.", "error");
      return;
    }
    login(token);
  });
  $("logout-button").addEventListener("click", async () => {
    if (await mayLeave()) logout("Logged out.");
  });
  $("toast-close").addEventListener("click", hideStatus);
  $("cluster-link").addEventListener("click", () => ctx.navigate("#/cluster"));
  $("feed-clear").addEventListener("click", clearFeed);
  state.picker = new EnvironmentPicker($("env-select"), { mayChange: mayLeave, onChange: switchEnvironment });
  window.addEventListener("hashchange", onHashChange);
  // Closing or reloading the tab: the browser's own question.
  window.addEventListener("beforeunload", (ev) => {
    if (state.me && unsavedView()) {
      ev.preventDefault();
      ev.returnValue = "";
    }
  });
  const token = getToken();
  if (token) login(token, { fromStorage: true });
  else showLogin("");
}

boot();
