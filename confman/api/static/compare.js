// Compare two environments field by field: GET /api/v1/compare. Stored effective values
// (defaults, base, overlay) on each side with the layer each came from; differences are
// highlighted. Secrets arrive as "fingerprint:<hex>" and are only ever shown so.

import { api, ApiError } from "./api.js";
import { h, clear, valueNode, breakable, actionBadge } from "./dom.js";
import { sourceText } from "./provenance.js";
import { BASE, isBase, envName } from "./env.js";
import { diffTable } from "./docview.js";

const FINGERPRINT = /^fingerprint:[0-9a-f]+$/;

function valueCell(value, present, secret) {
  if (!present) return h("span", { class: "muted absent" }, "(absent)");
  if (secret) {
    // Never a secret's value: its fingerprint, or nothing when the server sent anything else.
    const fp = typeof value === "string" && FINGERPRINT.test(value) ? value : null;
    return [h("span", { class: "badge secret", title: "compared by fingerprint; never shown" }, "secret"), " ",
      fp ? h("code", { class: "val val-fingerprint", testid: "fingerprint" }, fp) : h("span", { class: "muted" }, "(hidden)")];
  }
  return valueNode(value);
}

function docHref(f) {
  return `#/ns/${encodeURIComponent(f.namespace)}/${encodeURIComponent(f.key ?? "default")}/value`;
}

export class CompareView {
  constructor(ctx, left, right) {
    this.ctx = ctx;
    const names = ctx.environments();
    const selected = ctx.environment();
    const other = names.find((n) => n !== BASE);
    this.left = names.includes(left) ? left : BASE;
    this.right = names.includes(right) ? right : selected !== BASE ? selected : other ?? BASE;
    this.namespace = "";
    this.everything = false;
    this.element = h("section", { class: "compare-view", testid: "compare-view", "aria-labelledby": "compare-title" });
    this.results = h("div", { class: "compare-results", "aria-live": "polite" });
    this.promotePanel = h("div", { class: "promote-preview diff-preview", testid: "promote-preview", hidden: true, "aria-live": "polite" });
    this.promoteBtn = null;
    this.promoteRun = 0;
    this.alive = true;
    this.run = 0;
  }

  /** Editors and admins may promote (into an environment their token may write). */
  get mayPromote() {
    const me = this.ctx.me();
    return Boolean(me && (me.role === "editor" || me.role === "admin"));
  }

  /** Why promoting left into right cannot be done now, or null. */
  _promoteBlocked() {
    if (isBase(this.left) || isBase(this.right)) return "promote copies one environment's values into another's overlays: pick two environments, not the base";
    if (this.left === this.right) return "pick two different environments";
    const me = this.ctx.me();
    if (me && Array.isArray(me.environments) && !me.environments.map(envName).includes(this.right)) return `your token may not write in ${this.right}`;
    return null;
  }

  _updatePromote() {
    if (!this.promoteBtn) return;
    const blocked = this._promoteBlocked();
    this.promoteBtn.textContent = `Promote ${this.left} → ${this.right}`;
    this.promoteBtn.disabled = Boolean(blocked);
    this.promoteBtn.title = blocked || `make ${this.right}'s values equal ${this.left}'s${this.namespace ? ` in ${this.namespace}` : ""} by writing ${this.right}'s overlays (a diff first)`;
  }

  destroy() {
    this.alive = false;
  }

  load() {
    const names = this.ctx.environments();
    const picker = (side, testid, label) => h("label", { class: "compare-side" }, h("span", { class: "muted" }, label),
      h("select", { testid, onchange: (ev) => { this[side] = ev.target.value; this.refresh(); } },
        names.map((n) => h("option", { value: n, selected: n === this[side] }, n))));
    this.leftSelect = picker("left", "compare-left", "Left");
    this.rightSelect = picker("right", "compare-right", "Right");
    const namespaces = this.ctx.namespaceNames();
    const controls = h("div", { class: "compare-controls" },
      this.leftSelect,
      h("button", { type: "button", class: "btn ghost small", testid: "compare-swap", title: "swap the sides", onclick: () => this.swap() }, "⇄"),
      this.rightSelect,
      h("label", { class: "compare-side" }, h("span", { class: "muted" }, "Namespace"),
        h("select", { testid: "compare-namespace", onchange: (ev) => { this.namespace = ev.target.value; this.refresh(); } },
          h("option", { value: "" }, "all namespaces"), namespaces.map((n) => h("option", { value: n }, n)))),
      h("label", { class: "compare-all" },
        h("input", { type: "checkbox", testid: "compare-all", onchange: (ev) => { this.everything = ev.target.checked; this.refresh(); } }),
        " show identical fields too"),
      this.mayPromote ? (this.promoteBtn = h("button", { type: "button", class: "btn primary small", testid: "promote-button", onclick: () => this.previewPromote() }, "Promote")) : null);
    clear(this.element,
      h("div", { class: "doc-header" }, h("div", { class: "doc-title-row" }, h("h1", { id: "compare-title" }, "Compare environments"))),
      h("p", { class: "muted" }, "The stored effective value of every field on each side (model defaults, base, the environment's overlay), and where it came from. An instance's env files and variables are not part of an environment. Secrets are compared by fingerprint, never shown."),
      controls, this.promotePanel, this.results);
    this.refresh();
  }

  swap() {
    [this.left, this.right] = [this.right, this.left];
    this.leftSelect.querySelector("select").value = this.left;
    this.rightSelect.querySelector("select").value = this.right;
    this.refresh();
  }

  async refresh({ keepPreview = false } = {}) {
    const run = ++this.run;
    this._updatePromote();
    if (!keepPreview) this._closePromote();
    history.replaceState(null, "", `#/compare/${encodeURIComponent(this.left)}/${encodeURIComponent(this.right)}`);
    clear(this.results, h("div", { class: "placeholder" }, `Comparing ${this.left} with ${this.right}…`));
    try {
      const res = await api.compare(this.left, this.right, { namespace: this.namespace, all: this.everything });
      if (!this.alive || run !== this.run) return;
      this.render(res.body || {});
    } catch (err) {
      if (!this.alive || run !== this.run) return;
      if (!(err instanceof ApiError && err.status === 401)) {
        clear(this.results, h("div", { class: "placeholder error", testid: "compare-error" }, `Could not compare: ${err.message}`));
      }
    }
  }

  _closePromote() {
    this.promoteRun += 1;
    this.promotePanel.hidden = true;
    clear(this.promotePanel);
  }

  _promoteArgs() {
    return { from: this.left, to: this.right, namespaces: this.namespace ? [this.namespace] : [] };
  }

  /** POST /promote?dry_run=true: what promoting would write, shown before anything is. */
  async previewPromote() {
    if (this._promoteBlocked()) return;
    const { from, to, namespaces } = this._promoteArgs();
    const run = ++this.promoteRun;
    const scope = namespaces.length ? ` (${namespaces.join(", ")})` : "";
    this.promotePanel.hidden = false;
    clear(this.promotePanel, h("p", { class: "muted" }, `Working out what promoting ${from} into ${to}${scope} would write…`));
    this.promoteBtn.disabled = true;
    try {
      const res = await api.promote(from, to, { namespaces, dryRun: true });
      if (!this.alive || run !== this.promoteRun) return;
      this._renderPromotePreview(res.body || {}, { from, to, namespaces });
    } catch (err) {
      if (!this.alive || run !== this.promoteRun) return;
      this._promoteError(err, "Preview");
    } finally {
      if (this.alive) this._updatePromote();
    }
  }

  _renderPromotePreview(body, { from, to, namespaces }) {
    const members = (Array.isArray(body.members) ? body.members : []).filter((m) => !m.unchanged);
    const scope = namespaces.length ? ` in ${namespaces.join(", ")}` : "";
    const head = h("div", { class: "diff-head" }, h("h3", {}, `Promote ${from} → ${to}`),
      h("span", { class: "muted" }, "preview — nothing is written yet"));
    if (!members.length) {
      clear(this.promotePanel, head,
        h("p", { class: "muted", testid: "promote-nothing" }, `Nothing to promote: ${to} already has ${from}'s values${scope}.`),
        h("div", { class: "action-bar" }, h("div", { class: "spacer" }),
          h("button", { type: "button", class: "btn ghost", testid: "promote-cancel", onclick: () => this._closePromote() }, "Close")));
      return;
    }
    const pinned = members.flatMap((m) => (Array.isArray(m.pinned) ? m.pinned : []).map((p) => `${m.namespace}${m.key && m.key !== "default" ? `/${m.key}` : ""}: ${p}`));
    const reason = h("input", { type: "text", class: "reason-input", testid: "promote-reason", maxlength: "255", placeholder: "Reason (optional)", "aria-label": "Reason for the promotion" });
    const confirm = h("button", { type: "button", class: "btn primary", testid: "promote-confirm" },
      `Promote ${members.length} document${members.length === 1 ? "" : "s"}`);
    confirm.addEventListener("click", () => this.commitPromote({ from, to, namespaces }, reason.value.trim(), confirm));
    clear(this.promotePanel, head,
      h("p", { testid: "promote-summary" }, `${members.length} document${members.length === 1 ? "" : "s"} of ${to} would change${scope}, as one change set written to ${to}'s overlays (the base is not touched).`),
      pinned.length ? h("div", { class: "callout warn", testid: "promote-pinned", role: "note" },
        h("span", {}, "Pinned on this server by its env files or variables (stored, but this instance keeps serving the pinned value):"),
        h("ul", {}, pinned.map((p) => h("li", {}, h("code", {}, p))))) : null,
      h("ol", { class: "promote-members" }, members.map((m) => {
        const ns = String(m.namespace ?? "?"), key = String(m.key ?? "default");
        return h("li", { class: "promote-member", testid: "promote-member", dataset: { namespace: ns, key } },
          h("div", { class: "h-head" },
            h("code", {}, ns, key !== "default" ? ` / ${key}` : ""),
            actionBadge(m.action),
            typeof m.version === "number" ? h("span", { class: "badge version" }, `${to} v${m.version}`) : null),
          diffTable(m.diff));
      })),
      h("div", { class: "action-bar" }, reason, h("div", { class: "spacer" }),
        h("button", { type: "button", class: "btn ghost", testid: "promote-cancel", onclick: () => this._closePromote() }, "Cancel"),
        confirm));
    this.promotePanel.scrollIntoView({ block: "nearest" });
  }

  async commitPromote({ from, to, namespaces }, reason, button) {
    button.disabled = true;
    const run = ++this.promoteRun;
    try {
      const res = await api.promote(from, to, { namespaces, reason });
      if (!this.alive || run !== this.promoteRun) return;
      const body = res.body || {};
      const n = (Array.isArray(body.members) ? body.members : []).filter((m) => !m.unchanged).length;
      this.ctx.status(n ? `Promoted ${from} into ${to}: ${n} document${n === 1 ? "" : "s"} written as one change set.` : `Nothing to promote: ${to} already had ${from}'s values.`, "success");
      this._closePromote();
      this.refresh();
    } catch (err) {
      if (!this.alive || run !== this.promoteRun) return;
      this._promoteError(err, "Promote");
    }
  }

  _promoteError(err, what) {
    if (err instanceof ApiError && err.status === 401) return;
    const list = err instanceof ApiError ? err.errors : [];
    const text = err instanceof ApiError && err.status === 404 && !err.problem.detail
      ? "this server has no promote route"
      : err.message;
    this.promotePanel.hidden = false;
    clear(this.promotePanel, h("div", { class: "callout error", testid: "promote-error", role: "alert" },
      h("span", {}, `${what} failed: ${text}`),
      list.length ? h("ul", {}, list.map((e) => h("li", {}, e && typeof e === "object" ? `${e.path ? `${e.path}: ` : ""}${e.message ?? ""}` : String(e)))) : null),
      h("div", { class: "action-bar" }, h("div", { class: "spacer" }),
        h("button", { type: "button", class: "btn ghost", testid: "promote-cancel", onclick: () => this._closePromote() }, "Close")));
    this.ctx.status(`${what} failed: ${text}`, "error");
  }

  render(body) {
    const fields = Array.isArray(body.fields) ? body.fields : [];
    const differing = fields.filter((f) => !f.same);
    const docs = new Set(differing.map((f) => `${f.namespace}/${f.key}`));
    const left = body.left ?? this.left, right = body.right ?? this.right;
    const summary = differing.length
      ? `${differing.length} difference${differing.length === 1 ? "" : "s"} in ${docs.size} document${docs.size === 1 ? "" : "s"} between ${left} and ${right}`
      : `No differences between ${left} and ${right}${this.namespace ? ` in ${this.namespace}` : ""}.`;
    const parts = [h("p", { class: ["compare-summary", differing.length ? "differs" : "same"], testid: "compare-summary" }, summary)];
    if (fields.length) {
      parts.push(h("div", { class: "table-wrap" }, h("table", { class: "compare-table", testid: "compare-table" },
        h("thead", {}, h("tr", {},
          h("th", { scope: "col" }, "Document"),
          h("th", { scope: "col" }, "Field"),
          h("th", { scope: "col", class: "side" }, left),
          h("th", { scope: "col" }, "Source"),
          h("th", { scope: "col", class: "side" }, right),
          h("th", { scope: "col" }, "Source"))),
        h("tbody", {}, fields.map((f) => this._row(f))))));
    }
    clear(this.results, parts);
  }

  _row(f) {
    const whole = !f.path;
    const only = whole ? (f.left_present ? "only-left" : f.right_present ? "only-right" : null) : null;
    return h("tr", {
      class: ["compare-row", f.same ? "same" : "differs", only],
      testid: "compare-row",
      dataset: { namespace: String(f.namespace), key: String(f.key ?? ""), path: String(f.path ?? ""), same: String(Boolean(f.same)) },
    },
      h("td", { class: "doc" }, h("a", { href: docHref(f) }, h("code", {}, f.namespace, f.key && f.key !== "default" ? ` / ${f.key}` : ""))),
      h("td", { class: "path" }, whole ? h("span", { class: "muted" }, "(the whole item)") : h("code", {}, breakable(String(f.path)))),
      h("td", { class: "side left" }, whole && f.left_present ? "present" : valueCell(f.left, f.left_present, f.secret)),
      h("td", { class: "source" }, sourceText(f.left_source)),
      h("td", { class: "side right" }, whole && f.right_present ? "present" : valueCell(f.right, f.right_present, f.secret)),
      h("td", { class: "source" }, sourceText(f.right_source)));
  }
}
