// One document: the Value / Edit / History tabs, and the "new item" form.

import { api, ApiError, etagVersion } from "./api.js";
import { h, clear, valueNode, layerBadge, actionBadge, timeNode, jsonText, isPlainObject, breakable, richText } from "./dom.js";
import { SchemaForm, maskedPaths, summary } from "./form.js";
import { isBase, envName } from "./env.js";
import { provenance, originBadge } from "./provenance.js";

const TABS = [
  { id: "value", label: "Value" },
  { id: "edit", label: "Edit" },
  { id: "history", label: "History" },
];

function conflictMessage(err) {
  const now = err.problem && err.problem.current_version;
  return `Changed by someone else (now version ${now ?? "?"}) — reload to see the current value.`;
}

function problemText(p) {
  if (typeof p === "string") return p;
  if (!isPlainObject(p)) return jsonText(p);
  const where = [p.key, p.version !== undefined && p.version !== null ? `v${p.version}` : null, p.source].filter(Boolean).join(" ");
  const msg = p.message || p.detail || p.reason || p.error;
  const paths = Array.isArray(p.paths) ? p.paths.join(", ") : Array.isArray(p.errors) ? p.errors.map((e) => (isPlainObject(e) ? `${e.path}: ${e.message}` : String(e))).join("; ") : "";
  const text = [where, msg, paths].filter(Boolean).join(" — ");
  return text || jsonText(p);
}

/** Show a preview panel and bring it on screen: it sits right above the action bar. */
function reveal(preview) {
  preview.hidden = false;
  preview.classList.remove("stale");
  preview.scrollIntoView({ block: "nearest" });
}

/** A diff table: [{path, change, before, after}]; change: added | removed | changed. */
export function diffTable(diff, { caption } = {}) {
  if (!Array.isArray(diff) || !diff.length) return h("p", { class: "muted diff-empty" }, "No field changes.");
  return h("table", { class: "diff-table" },
    caption ? h("caption", {}, caption) : null,
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Field"), h("th", { scope: "col" }, "Before"), h("th", { scope: "col", class: "arrow-col", "aria-label": "becomes" }, ""), h("th", { scope: "col" }, "After"))),
    h("tbody", {}, diff.map((d) => h("tr", {},
      h("td", { class: "path" }, h("code", {}, breakable(String(d.path ?? "")))),
      h("td", { class: "before" }, d.change !== "added" ? valueNode(d.before) : h("span", { class: "muted" }, "(absent)")),
      h("td", { class: "arrow-col", "aria-hidden": "true" }, "→"),
      h("td", { class: "after" }, d.change !== "removed" ? valueNode(d.after) : h("span", { class: "muted" }, "(absent)"))))));
}

export class DocView {
  /**
   * @param ctx {me, nsInfo(ns), canWrite(ns), isAdmin(), status(text, kind), navigate(hash), schema(ns), onDocChanged(ns)}
   */
  constructor(ctx, ns, key, tab) {
    this.ctx = ctx;
    this.ns = ns;
    this.key = key;
    this.tab = tab || "value";
    this.doc = null;
    this.schema = null;
    this.form = null;
    this.history = null;
    this.historyLoaded = false;
    this.environment = ctx.environment(); // fixed for the view: a switch builds a new one
    this.element = h("section", { class: "doc-view", "aria-labelledby": "doc-title" });
    this.alive = true;
  }

  get version() {
    return this.doc ? this.doc.version : null;
  }

  /** Whether this view is of an environment's overlay over the base (not the base itself). */
  get overlaid() {
    return !isBase(this.environment) && this.inherits;
  }

  /** Whether the namespace inherits from the base (credentials do not: each environment
   * holds its own documents). The server says so with `base_version` on an overlay read. */
  get inherits() {
    const info = this.ctx.nsInfo(this.ns);
    if (info && typeof info.inherits === "boolean") return info.inherits;
    return !this.doc || isBase(this.environment) || (this.doc.base_version !== undefined && this.doc.base_version !== null);
  }

  /** Fields the selected environment's overlay sets. */
  _overridden() {
    const sources = Array.isArray(this.doc && this.doc.sources) ? this.doc.sources : [];
    return sources.filter((s) => {
      const p = provenance(s);
      return p && p.scope === "overlay";
    }).map((s) => String(s.path));
  }

  destroy() {
    this.alive = false;
  }

  async load() {
    const info = this.ctx.nsInfo(this.ns);
    clear(this.element, this._skeleton("Loading…"));
    try {
      const [docRes, schema] = await Promise.all([api.document(this.ns, this.key), this.ctx.schema(this.ns)]);
      if (!this.alive) return;
      this.schema = schema;
      this._setDoc(docRes.body, docRes.headers);
      this._render(info);
    } catch (err) {
      if (!this.alive) return;
      if (err instanceof ApiError && err.status === 404) {
        clear(this.element, this._skeleton(`${this.ns}/${this.key} does not exist.`, "error"));
      } else if (!(err instanceof ApiError && err.status === 401)) {
        clear(this.element, this._skeleton(`Could not load ${this.ns}/${this.key}: ${err.message}`, "error"));
      }
    }
  }

  _skeleton(text, kind = "info") {
    return h("div", { class: ["placeholder", kind === "error" && "error"] }, text);
  }

  _setDoc(doc, headers) {
    const fromEtag = headers ? etagVersion(headers.get("ETag")) : null;
    if (doc && (doc.version === undefined || doc.version === null) && fromEtag !== null) doc.version = fromEtag;
    this.doc = doc;
  }

  _render(info) {
    const doc = this.doc;
    const writable = this.ctx.canWrite(this.ns);
    this.versionEl = h("span", { class: "badge version", testid: "doc-version", title: "version (ETag)" }, `v${doc.version}`);
    this.bannerArea = h("div", { class: "banner-area", "aria-live": "polite" });
    const keyed = info ? info.keyed : this.key !== "default";
    const actions = [];
    actions.push(h("button", { type: "button", class: "btn ghost small", testid: "reload-doc", onclick: () => this.reload({ force: true }) }, "Reload"));
    if (this.overlaid && writable && this._overridden().length) {
      actions.push(h("button", { type: "button", class: "btn ghost small", testid: "reset-all", title: `drop the ${this.environment} overlay: every field inherits from base again`, onclick: () => this.resetAll() }, "Reset all to base"));
    }
    if (keyed && writable) {
      const label = this.overlaid ? `Delete in ${this.environment}` : "Delete item";
      actions.push(h("button", { type: "button", class: "btn ghost small danger", testid: "delete-button", onclick: () => this._delete() }, label));
    }
    const header = h("div", { class: "doc-header" },
      h("div", { class: "doc-title-row" },
        h("h1", { id: "doc-title" },
          h("span", { class: "ns-name" }, this.ns),
          keyed ? [h("span", { class: "sep" }, " / "), h("span", { class: "key-name" }, this.key)] : null),
        this._envBadge(),
        this.versionEl,
        this.overlaid && doc.base_version !== undefined && doc.base_version !== null
          ? h("span", { class: "badge version base-version", testid: "doc-base-version", title: "the base document's version" }, `base v${doc.base_version}`)
          : null,
        writable ? null : h("span", { class: "badge readonly", title: this._readOnlyReason() }, "read-only"),
        h("div", { class: "spacer" }),
        actions),
      h("div", { class: "doc-meta" },
        info && info.description ? h("span", { class: "ns-desc" }, richText(summary(info.description))) : null,
        doc.updated_at ? h("span", {}, "Updated ", timeNode(doc.updated_at)) : null));
    this.tabButtons = {};
    this.panels = {};
    const tablist = h("div", { class: "tabs", role: "tablist", "aria-label": "Document views" });
    for (const t of TABS) {
      const btn = h("button", {
        type: "button", role: "tab", id: `tab-${t.id}`, testid: `tab-${t.id}`, "aria-controls": `panel-${t.id}`,
        onclick: () => this.ctx.navigate(this._hash(t.id)),
        onkeydown: (ev) => this._tabKey(ev, t.id),
      }, t.label);
      this.tabButtons[t.id] = btn;
      tablist.appendChild(btn);
      this.panels[t.id] = h("div", { class: "tab-panel", role: "tabpanel", id: `panel-${t.id}`, "aria-labelledby": `tab-${t.id}`, tabindex: "-1" });
    }
    this.editDirtyEl = h("span", { class: "tab-dot", hidden: true, title: "unsaved edits" });
    this.tabButtons.edit.appendChild(this.editDirtyEl);
    clear(this.element, header, this.bannerArea, tablist, Object.values(this.panels));
    this._renderValue();
    this._renderEdit();
    this.showTab(this.tab);
  }

  _envBadge() {
    const env = envName(this.environment);
    const title = isBase(env) ? "the shared base" : this.inherits ? `the ${env} overlay over the base` : `${env}'s own documents (this namespace never inherits)`;
    return h("span", { class: ["badge", "env", isBase(env) ? "env-base" : "env-named"], testid: "doc-environment", title }, env);
  }

  _readOnlyReason() {
    const me = this.ctx.me();
    if (me && (me.role === "viewer" || me.role === "service")) return `Your token has the ${me.role} role.`;
    if (!this.ctx.canWriteEnvironment()) return `Your token may not write in ${envName(this.environment)}.`;
    return "This namespace is not writable with your token.";
  }

  _hash(tab) {
    return `#/ns/${encodeURIComponent(this.ns)}/${encodeURIComponent(this.key)}/${tab}`;
  }

  _tabKey(ev, id) {
    const ids = TABS.map((t) => t.id);
    let i = ids.indexOf(id);
    if (ev.key === "ArrowRight") i = (i + 1) % ids.length;
    else if (ev.key === "ArrowLeft") i = (i - 1 + ids.length) % ids.length;
    else if (ev.key === "Home") i = 0;
    else if (ev.key === "End") i = ids.length - 1;
    else return;
    ev.preventDefault();
    this.ctx.navigate(this._hash(ids[i]));
    this.tabButtons[ids[i]].focus();
  }

  showTab(tab) {
    if (!TABS.some((t) => t.id === tab)) tab = "value";
    this.tab = tab;
    if (!this.tabButtons) return;
    for (const t of TABS) {
      const active = t.id === tab;
      this.tabButtons[t.id].setAttribute("aria-selected", String(active));
      this.tabButtons[t.id].tabIndex = active ? 0 : -1;
      this.tabButtons[t.id].classList.toggle("active", active);
      this.panels[t.id].hidden = !active;
    }
    if (tab === "history" && !this.historyLoaded) this.loadHistory();
    if (tab === "edit") this._focusPending();
  }

  // ---- Value ----------------------------------------------------------------------------

  _problemsCallout(testid) {
    const problems = Array.isArray(this.doc.problems) ? this.doc.problems : [];
    if (!problems.length) return null;
    return h("div", { class: "callout warn problems", testid, role: "note" },
      h("span", {}, h("strong", {}, `${problems.length} problem${problems.length === 1 ? "" : "s"}`),
        " — this instance refused a stored version or an override; the last valid value keeps serving. A valid write heals it."),
      h("ul", {}, problems.map((p) => h("li", {}, problemText(p)))));
  }

  _renderValue() {
    const doc = this.doc;
    const panel = this.panels.value;
    const sources = Array.isArray(doc.sources) ? doc.sources : [];
    const parts = [this._problemsCallout("doc-problems")];
    const counts = {};
    for (const s of sources) counts[s.layer] = (counts[s.layer] || 0) + 1;
    parts.push(h("div", { class: "legend" },
      h("span", { class: "muted" }, `${sources.length} field${sources.length === 1 ? "" : "s"}:`),
      Object.entries(counts).map(([layer, n]) => h("span", { class: "legend-item" }, layerBadge(layer), ` ${n}`))));
    const actions = this.overlaid && this.ctx.canWrite(this.ns);
    if (this.overlaid) {
      const n = this._overridden().length;
      parts.push(h("p", { class: "env-note muted", testid: "env-note" },
        n ? `${n} field${n === 1 ? "" : "s"} overridden in ${this.environment}; the others inherit from base.`
          : `Nothing overridden in ${this.environment}: every stored field inherits from base.`,
        actions ? ` “Override” edits a field in the ${this.environment} overlay; “Reset to base” removes it from there.` : ""));
    } else if (!isBase(this.environment) && !this.inherits) {
      parts.push(h("p", { class: "env-note muted", testid: "env-note" }, `${this.ns} is per-environment: ${this.environment} holds its own documents and never inherits from base.`));
    }
    if (sources.length) {
      parts.push(h("table", { class: ["sources-table", actions && "with-actions"], testid: "sources-table" },
        h("thead", {}, h("tr", {},
          h("th", { scope: "col" }, "Field"),
          h("th", { scope: "col" }, "Value"),
          h("th", { scope: "col" }, "Source"),
          h("th", { scope: "col" }, "Detail"),
          actions ? h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")) : null)),
        h("tbody", {}, sources.map((s) => {
          const shadows = Array.isArray(s.shadows) ? s.shadows : [];
          const origin = provenance(s);
          return h("tr", { class: [`row-${s.layer}`, shadows.length && "shadowing", origin && `row-${origin.scope}`], dataset: { path: String(s.path ?? ""), origin: origin ? origin.scope : "" }, testid: `source-${s.path}` },
            h("td", { class: "path" }, h("code", {}, breakable(String(s.path ?? "")))),
            h("td", { class: "value" }, valueNode(s.value)),
            h("td", { class: "layer" }, layerBadge(s.layer), " ", originBadge(s, { testid: `origin-${s.path}` })),
            h("td", { class: "detail" },
              s.detail ? h("code", { class: "detail-text" }, String(s.detail)) : h("span", { class: "muted" }, s.layer === "default" ? "model default" : "—"),
              shadows.length ? h("div", { class: "shadows" }, "overrides ", shadows.map((x, i) => [i ? ", " : "", h("span", { class: "shadow" }, String(x))])) : null),
            actions ? h("td", { class: "field-actions" }, this._fieldAction(s, origin)) : null);
        }))));
    } else {
      parts.push(h("pre", { class: "json-block" }, JSON.stringify(doc.value ?? null, null, 2)));
    }
    parts.push(h("details", { class: "raw" }, h("summary", {}, "Effective value as JSON"), h("pre", { class: "json-block" }, JSON.stringify(doc.value ?? null, null, 2))));
    clear(panel, parts);
  }

  /** "Override in <env>" on an inherited field, "Reset to base" on an overridden one. */
  _fieldAction(source, origin) {
    const path = String(source.path ?? "");
    if (!path) return null;
    if (origin && origin.scope === "overlay") {
      const onlyHere = this.doc.base_version === 0; // an item the base does not hold
      return h("button", {
        type: "button", class: "btn small", testid: `reset-${path}`,
        title: onlyHere ? `remove ${path} from the ${this.environment} item: the model default applies` : `remove ${path} from the ${this.environment} overlay: it inherits from base again`,
        onclick: () => this.reset([path]),
      }, onlyHere ? "Reset to default" : "Reset to base");
    }
    if (source.layer === "database" || source.layer === "default") {
      return h("button", { type: "button", class: "btn ghost small", testid: `override-${path}`, title: `edit ${path}: saving stores it in the ${this.environment} overlay`, onclick: () => this.override(path) }, "Override");
    }
    return null; // an env file or variable of this instance: not stored, nothing to override
  }

  /** Open the Edit tab on one field: what is saved there goes to this environment's overlay. */
  override(path) {
    this.focusPath = path;
    this.ctx.navigate(this._hash("edit"));
  }

  _focusPending() {
    const path = this.focusPath;
    this.focusPath = null;
    if (!path || !this.panels) return;
    const field = this.panels.edit.querySelector(`[data-testid="field-${CSS.escape(path)}"]`);
    if (!field) return;
    const box = field.closest(".field") || field;
    box.classList.add("overriding");
    field.scrollIntoView({ block: "center" });
    field.focus({ preventScroll: true });
  }

  /** Remove `fields` from this environment's overlay (null: all of it): they inherit again. */
  async reset(fields) {
    if (!this.ctx.canWrite(this.ns) || !this.overlaid) return;
    if (this.dirty) {
      this.ctx.status("Save or discard your edits first: a reset re-reads the document.", "warn");
      return;
    }
    const what = fields ? fields.join(", ") : "every field";
    try {
      const res = await api.reset(this.ns, this.key, fields, this.doc.version);
      if (!this.alive) return;
      const body = res.body || {};
      if (body.value !== undefined && body.sources !== undefined) {
        this._setDoc(body, res.headers);
        this._rerender();
      } else {
        await this.reload({ force: true, quiet: true });
      }
      this.ctx.status(`Reset ${what} of ${this.ns}/${this.key} in ${this.environment}: inherited from base again.`, "success");
      this.ctx.onDocChanged(this.ns);
    } catch (err) {
      if (err instanceof ApiError && err.status === 412) this.ctx.status(conflictMessage(err), "error");
      else if (err instanceof ApiError && err.status === 422) this.ctx.status(`Reset refused: ${err.message}`, "error");
      else if (!(err instanceof ApiError && err.status === 401)) this.ctx.status(`Reset failed: ${err.message}`, "error");
    }
  }

  async resetAll() {
    const n = this._overridden().length;
    if (!window.confirm(`Drop the ${this.environment} overlay of ${this.ns}/${this.key} (${n} overridden field${n === 1 ? "" : "s"})? Every field inherits from base again.`)) return;
    await this.reset(null);
  }

  // ---- Edit -----------------------------------------------------------------------------

  _renderEdit() {
    const writable = this.ctx.canWrite(this.ns);
    const panel = this.panels.edit;
    this.form = new SchemaForm(this.schema, this.doc.value, { sources: this.doc.sources, mode: "edit", readOnly: !writable });
    this.formVersion = this.doc.version;
    this.diffEl = h("div", { class: "diff-preview", testid: "diff-preview", hidden: true, "aria-live": "polite" });
    this.editMsg = h("div", { class: "edit-message", "aria-live": "assertive" });
    this.changedEl = h("span", { class: "changed-count muted" }, "No changes");
    this.previewBtn = h("button", { type: "button", class: "btn", testid: "preview-button", disabled: !writable, onclick: () => this.preview() }, "Preview changes");
    this.saveBtn = h("button", { type: "submit", class: "btn primary", testid: "save-button", disabled: !writable }, "Save");
    const discard = h("button", { type: "button", class: "btn ghost", testid: "discard-button", disabled: !writable, onclick: () => this._discard() }, "Discard edits");
    this.reasonInput = h("input", { type: "text", class: "reason-input", testid: "reason-input", maxlength: "255", placeholder: "Reason (optional)", title: "Why, for the audit trail", "aria-label": "Reason for the change", disabled: !writable });
    this.form.onChange(() => this._onFormChange());
    const formEl = h("form", { class: "edit-form", novalidate: true, onsubmit: (ev) => { ev.preventDefault(); this.save(); } },
      h("p", { class: "form-intro muted" },
        writable ? this._editIntro() : `Read-only: ${this._readOnlyReason()}`),
      this.form.element,
      this.diffEl,
      h("div", { class: "action-bar" }, this.changedEl, this.reasonInput, h("div", { class: "spacer" }), discard, this.previewBtn, this.saveBtn));
    clear(panel, this._problemsCallout("edit-problems"), this.editMsg, formEl);
  }

  _editIntro() {
    const common = "Only the fields you change are sent, as a JSON merge patch. Secret fields left empty stay unchanged.";
    if (this.overlaid) {
      const v = this.doc.version ? `version ${this.doc.version}` : "none yet";
      return `Saving writes to the ${this.environment} overlay (${v}): the fields you change are stored there as overrides; the others keep inheriting from base. ${common}`;
    }
    if (!isBase(this.environment)) return `Editing ${this.environment}'s own version ${this.doc.version}. ${common}`;
    return `Editing the base, version ${this.doc.version}: every environment that does not override a field inherits it. ${common}`;
  }

  _onFormChange() {
    const dirty = this.form.isDirty();
    this.editDirtyEl.hidden = !dirty;
    const n = this.form.changedCount();
    this.changedEl.textContent = n ? `${n} changed field${n === 1 ? "" : "s"}` : "No changes";
    this.changedEl.classList.toggle("muted", !n);
    if (!this.diffEl.hidden) this.diffEl.classList.add("stale");
  }

  get dirty() {
    return Boolean(this.form && this.form.isDirty());
  }

  _discard() {
    this._renderEdit();
    this.editDirtyEl.hidden = true;
    this.ctx.status("Edits discarded.", "info");
  }

  _editMessage(kind, text, { reload = false } = {}) {
    clear(this.editMsg, h("div", { class: ["callout", kind], role: kind === "error" ? "alert" : "status" },
      h("span", {}, text),
      reload ? h("button", { type: "button", class: "btn small", testid: "reload-button", onclick: () => this.reload({ force: true }) }, "Reload") : null));
  }

  _collectPatch() {
    this.form.clearErrors();
    clear(this.editMsg);
    const { patch, errors } = this.form.patch();
    const masked = maskedPaths(patch);
    for (const p of masked) errors.push({ path: p, message: "a masked secret cannot be saved: type the new secret, or leave the field empty to keep it" });
    if (errors.length) {
      this.form.showErrors(errors, "Fix these fields first");
      this.form.focusFirstError();
      this.ctx.status(`${errors.length} field${errors.length === 1 ? "" : "s"} need${errors.length === 1 ? "s" : ""} fixing.`, "error");
      return null;
    }
    if (!Object.keys(patch).length) {
      this.ctx.status("Nothing changed: edit a field first.", "info");
      clear(this.diffEl, h("h3", {}, "Preview"), h("p", { class: "muted" }, "No changes to send."));
      reveal(this.diffEl);
      return null;
    }
    return patch;
  }

  _handleWriteError(err, what) {
    if (!(err instanceof ApiError)) {
      this.ctx.status(`${what} failed: ${err.message}`, "error");
      return;
    }
    if (err.status === 401) return;
    if (err.status === 422) {
      const errors = err.errors.length ? err.errors : [{ path: "", message: err.message }];
      this.form.showErrors(errors);
      this.form.focusFirstError();
      this.ctx.status(`${what}: refused — ${errors.length} problem${errors.length === 1 ? "" : "s"}.`, "error");
    } else if (err.status === 412) {
      const msg = conflictMessage(err);
      clear(this.bannerArea); // the conflict message below says the same, with its own Reload
      this._editMessage("error", msg, { reload: true });
      this.ctx.status(msg, "error");
    } else if (err.status === 403) {
      this.ctx.status(`${what}: not allowed — ${err.message}`, "error");
    } else {
      this.ctx.status(`${what} failed: ${err.message}`, "error");
    }
  }

  async preview() {
    const patch = this._collectPatch();
    if (!patch) return;
    this.previewBtn.disabled = true;
    try {
      const res = await api.patch(this.ns, this.key, patch, this.formVersion, { dryRun: true });
      if (!this.alive) return;
      const body = res.body || {};
      const pinned = this._pinnedIn(patch);
      clear(this.diffEl,
        h("div", { class: "diff-head" }, h("h3", {}, "Preview"), h("span", { class: "muted" }, `against version ${this.formVersion} — nothing is stored yet`)),
        diffTable(body.diff),
        pinned.length ? h("p", { class: "callout warn" }, `Pinned by an override, so readers keep seeing the override: ${pinned.join(", ")}`) : null,
        h("details", { class: "raw" }, h("summary", {}, "Merge patch to send"), h("pre", { class: "json-block" }, JSON.stringify(patch, null, 2))));
      this.ctx.status(`Preview: ${Array.isArray(body.diff) ? body.diff.length : 0} field change(s); the document validates.`, "info");
      reveal(this.diffEl); // after the notification, which takes room below the page
    } catch (err) {
      this.diffEl.hidden = true;
      this._handleWriteError(err, "Preview");
    } finally {
      this.previewBtn.disabled = !this.ctx.canWrite(this.ns);
    }
  }

  _pinnedIn(patch) {
    const paths = [];
    const walk = (v, prefix) => {
      if (isPlainObject(v) && Object.keys(v).length) for (const [k, x] of Object.entries(v)) walk(x, prefix ? `${prefix}.${k}` : k);
      else paths.push(prefix);
    };
    walk(patch, "");
    const sources = Array.isArray(this.doc.sources) ? this.doc.sources : [];
    const pins = sources.filter((s) => s.layer === "environment" || s.layer === "env_file").map((s) => s.path);
    return paths.filter((p) => pins.some((q) => q === p || q.startsWith(p + ".") || p.startsWith(q + ".")));
  }

  async save() {
    if (!this.ctx.canWrite(this.ns)) return;
    const patch = this._collectPatch();
    if (!patch) return;
    this.saveBtn.disabled = true;
    try {
      const res = await api.patch(this.ns, this.key, patch, this.formVersion, { reason: this.reasonInput.value.trim() });
      if (!this.alive) return;
      const body = res.body || {};
      const change = body.change || {};
      const newVersion = change.version ?? body.version;
      const changed = Array.isArray(change.changed) ? change.changed : [];
      const pinned = Array.isArray(change.pinned) ? change.pinned : [];
      const where = this.overlaid ? ` in ${this.environment}` : "";
      let msg = `Saved ${this.ns}/${this.key}${where} as version ${newVersion}`;
      msg += changed.length ? ` (changed: ${changed.join(", ")})` : " (no effective change)";
      if (pinned.length) msg += `. Pinned by an override, still hidden: ${pinned.join(", ")}`;
      if (body.value !== undefined && body.sources !== undefined) {
        this._setDoc(body, res.headers);
        this._rerender();
      } else {
        await this.reload({ force: true, quiet: true });
      }
      this.ctx.status(msg, pinned.length ? "warn" : "success");
      this.ctx.onDocChanged(this.ns);
    } catch (err) {
      this._handleWriteError(err, "Save");
    } finally {
      if (this.saveBtn) this.saveBtn.disabled = !this.ctx.canWrite(this.ns);
    }
  }

  async _delete() {
    const question = this.overlaid
      ? `Delete ${this.ns}/${this.key} in ${this.environment}? It disappears there only (the base keeps it); history is kept.`
      : `Delete ${this.ns}/${this.key} (version ${this.doc.version})? It disappears for every instance; history is kept.`;
    if (!window.confirm(question)) return;
    try {
      await api.remove(this.ns, this.key, this.doc.version);
      const collection = `#/ns/${encodeURIComponent(this.ns)}`;
      this.form = null; // deleted: no edits left to keep
      this.ctx.status(`Deleted ${this.ns}/${this.key}.`, "success", { page: collection });
      this.ctx.onDocChanged(this.ns);
      this.ctx.navigate(collection);
    } catch (err) {
      if (err instanceof ApiError && err.status === 412) this.ctx.status(conflictMessage(err), "error");
      else if (!(err instanceof ApiError && err.status === 401)) this.ctx.status(`Delete failed: ${err.message}`, "error");
    }
  }

  _rerender() {
    const tab = this.tab;
    this.historyLoaded = false;
    this._render(this.ctx.nsInfo(this.ns));
    this.showTab(tab);
  }

  /** Re-read the document. Without force, keeps unsaved edits and shows a banner instead. */
  async reload({ force = false, quiet = false, event = null } = {}) {
    if (!force && this.dirty) {
      const who = event && event.actor ? ` by ${event.actor}` : "";
      clear(this.bannerArea, h("div", { class: "callout warn banner", role: "alert", testid: "changed-banner" },
        h("span", {}, `Changed elsewhere${who} (now version ${event ? event.version : "?"}) — reload to see it; your unsaved edits are kept until then.`),
        h("button", { type: "button", class: "btn small", testid: "reload-button", onclick: () => this.reload({ force: true }) }, "Reload")));
      return;
    }
    try {
      const res = await api.document(this.ns, this.key);
      if (!this.alive) return;
      const previous = this.version;
      this._setDoc(res.body, res.headers);
      this._rerender();
      if (previous !== null && previous !== this.version && !quiet) {
        this.versionEl.classList.add("flash");
      }
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        clear(this.bannerArea, h("div", { class: "callout error banner", role: "alert", testid: "changed-banner" }, `${this.ns}/${this.key} was deleted.`));
        if (this.saveBtn) this.saveBtn.disabled = true;
      } else if (!(err instanceof ApiError && err.status === 401)) {
        this.ctx.status(`Reload failed: ${err.message}`, "error");
      }
    }
  }

  /** A change event from the live feed concerning this document. */
  onEvent(ev) {
    if (!this.doc) return;
    if (ev.action === "delete") {
      clear(this.bannerArea, h("div", { class: "callout error banner", role: "alert", testid: "changed-banner" },
        h("span", {}, `Deleted elsewhere${ev.actor ? ` by ${ev.actor}` : ""} (version ${ev.version}).`),
        h("button", { type: "button", class: "btn small", testid: "reload-button", onclick: () => this.reload({ force: true }) }, "Reload")));
      return;
    }
    // A base change to a doc seen through an overlay carries the base's version.
    const known = this.overlaid && isBase(ev.environment) ? this.doc.base_version : this.version;
    if (typeof ev.version === "number" && typeof known === "number" && ev.version <= known) return;
    this.reload({ event: ev });
  }

  // ---- History --------------------------------------------------------------------------

  async loadHistory() {
    this.historyLoaded = true;
    const panel = this.panels.history;
    clear(panel, h("div", { class: "placeholder" }, "Loading history…"));
    try {
      const res = await api.history(this.ns, this.key, 50);
      if (!this.alive) return;
      const body = res.body;
      const entries = Array.isArray(body) ? body : (body && (body.history || body.changes || body.entries || body.items)) || [];
      this._renderHistory(entries);
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) clear(panel, h("div", { class: "placeholder error" }, `Could not load history: ${err.message}`));
    }
  }

  _renderHistory(entries) {
    const panel = this.panels.history;
    if (!entries.length) {
      clear(panel, h("div", { class: "placeholder" }, "No committed changes yet: this document has only its defaults."));
      return;
    }
    // A change set is one entry: its records of this document (one, or one per
    // environment shown) gathered where the set's newest one stands.
    const groups = [];
    const bySet = new Map();
    for (const e of entries) {
      const id = typeof e.change_set === "string" && e.change_set ? e.change_set : null;
      if (id && bySet.has(id)) {
        bySet.get(id).records.push(e);
        continue;
      }
      const group = { id, records: [e] };
      if (id) bySet.set(id, group);
      groups.push(group);
    }
    const list = h("ol", { class: "history-list", testid: "history-list" }, groups.map((g) => (g.id ? this._setEntry(g) : this._historyEntry(g.records[0]))));
    const sets = bySet.size;
    clear(panel, h("div", { class: "history-head" },
      h("span", { class: "muted" }, `${entries.length} version${entries.length === 1 ? "" : "s"}, newest first`, sets ? ` · ${sets} in change sets` : ""),
      h("div", { class: "spacer" }),
      h("button", { type: "button", class: "btn ghost small", onclick: () => this.loadHistory() }, "Refresh")), list);
  }

  /** The head, reason, meta and diff of one change-log record of this document. */
  _recordParts(e, { inSet = false } = {}) {
    const admin = this.ctx.isAdmin() && this.ctx.canWrite(this.ns);
    const when = e.at ?? e.committed_at ?? e.created_at ?? null;
    const diff = Array.isArray(e.diff) ? e.diff : null;
    const isCurrent = e.version === this.version;
    const canRoll = admin && !isCurrent && e.action !== "delete" && typeof e.version === "number";
    return [
      h("div", { class: "h-head" },
        h("span", { class: "badge version" }, `v${e.version}`),
        actionBadge(e.action),
        isCurrent ? h("span", { class: "badge current-badge" }, "current") : null,
        inSet ? null : h("span", { class: "h-actor" }, e.actor ? String(e.actor) : h("span", { class: "muted" }, "unknown actor")),
        inSet ? null : h("span", { class: "muted" }, timeNode(when)),
        h("div", { class: "spacer" }),
        canRoll ? h("button", { type: "button", class: "btn small", testid: `rollback-${e.version}`, onclick: () => this.rollback(e.version) }, "Roll back to this version") : null),
      !inSet && e.reason ? h("p", { class: "h-reason" }, "“", String(e.reason), "”") : null,
      h("p", { class: "h-meta muted" }, [
        e.seq !== undefined ? `seq ${e.seq}` : null,
        e.origin ? `origin ${e.origin}` : null,
      ].filter(Boolean).join(" · ")),
      diff ? diffTable(diff) : Array.isArray(e.changed) && e.changed.length ? h("p", {}, "Changed: ", h("code", {}, e.changed.join(", "))) : null,
    ];
  }

  _historyEntry(e) {
    return h("li", { class: ["history-item", e.version === this.version && "current"], testid: "history-item", dataset: { version: String(e.version) } },
      this._recordParts(e));
  }

  /** One entry for a change set: who, why, when, this document's change(s), and on
   * demand every member of the set (GET /change-sets/{id}). */
  _setEntry(g) {
    const first = g.records[0];
    const when = first.at ?? first.committed_at ?? null;
    const members = h("div", { class: "set-members", testid: "set-members" });
    let loaded = false;
    const details = h("details", { class: "set-details", testid: "set-details", ontoggle: () => {
      if (details.open && !loaded) {
        loaded = true;
        this._loadSetMembers(g, members);
      }
    } }, h("summary", { testid: "set-toggle" }, "Every change in this set"), members);
    return h("li", {
      class: ["history-item", "history-set", g.records.some((e) => e.version === this.version) && "current"],
      testid: "history-item",
      dataset: { version: String(first.version), changeSet: g.id },
    },
      h("div", { class: "h-head set-head" },
        h("span", { class: "badge set-badge", testid: "set-badge", title: `change set ${g.id}` }, "change set"),
        h("code", { class: "set-id muted", title: g.id }, g.id.slice(0, 12)),
        h("span", { class: "h-actor" }, first.actor ? String(first.actor) : h("span", { class: "muted" }, "unknown actor")),
        h("span", { class: "muted" }, timeNode(when))),
      first.reason ? h("p", { class: "h-reason" }, "“", String(first.reason), "”") : null,
      h("div", { class: "set-own" }, g.records.map((e) => h("div", { class: "set-record", testid: "set-record", dataset: { version: String(e.version) } }, this._recordParts(e, { inSet: true })))),
      details);
  }

  async _loadSetMembers(g, into) {
    clear(into, h("p", { class: "muted" }, "Loading the set…"));
    try {
      const res = await api.changeSet(g.id);
      if (!this.alive) return;
      const body = res.body || {};
      const members = Array.isArray(body.members) ? body.members : [];
      clear(into,
        h("p", { class: "muted small", testid: "set-count" }, `${members.length} change${members.length === 1 ? "" : "s"}, committed together`),
        h("ol", { class: "set-member-list" }, members.map((m) => {
          const ns = String(m.namespace ?? "?"), key = String(m.key ?? "default");
          const here = ns === this.ns && key === this.key;
          const env = envName(m.environment);
          return h("li", { class: ["set-member", here && "here"], testid: "set-member", dataset: { namespace: ns, key, environment: env, version: String(m.version ?? "") } },
            h("div", { class: "h-head" },
              h("a", { href: `#/ns/${encodeURIComponent(ns)}/${encodeURIComponent(key)}/history` }, h("code", {}, ns, key !== "default" ? ` / ${key}` : "")),
              h("span", { class: ["badge", "env", isBase(env) ? "env-base" : "env-named"] }, env),
              h("span", { class: "badge version" }, `v${m.version ?? "?"}`),
              actionBadge(m.action),
              here ? h("span", { class: "muted small" }, "this document") : null),
            Array.isArray(m.diff) ? diffTable(m.diff) : Array.isArray(m.changed) && m.changed.length ? h("p", {}, "Changed: ", h("code", {}, m.changed.join(", "))) : null);
        })));
    } catch (err) {
      if (!this.alive) return;
      if (err instanceof ApiError && err.status === 404) {
        clear(into, h("p", { class: "muted", testid: "set-unlisted" }, `This server does not list the set's other changes: only ${this.ns}/${this.key}'s are shown above.`));
      } else if (!(err instanceof ApiError && err.status === 401)) {
        clear(into, h("p", { class: "error", testid: "set-error" }, `Could not load the change set: ${err.message}`));
      }
    }
  }

  async rollback(toVersion) {
    const current = this.version;
    if (!window.confirm(`Roll back ${this.ns}/${this.key} to version ${toVersion}?\n\nThis writes a new version (${current + 1}) with the content of version ${toVersion}.`)) return;
    try {
      const res = await api.rollback(this.ns, this.key, toVersion, current);
      if (!this.alive) return;
      const body = res.body || {};
      const v = (body.change && body.change.version) ?? body.version ?? "?";
      this.ctx.status(`Rolled back ${this.ns}/${this.key} to version ${toVersion}: now version ${v}.`, "success");
      if (body.value !== undefined && body.sources !== undefined) {
        this._setDoc(body, res.headers);
        this._rerender();
      } else {
        await this.reload({ force: true, quiet: true });
      }
      this.ctx.onDocChanged(this.ns);
    } catch (err) {
      if (err instanceof ApiError && err.status === 412) this.ctx.status(conflictMessage(err), "error");
      else if (err instanceof ApiError && err.status === 422) this.ctx.status(`Rollback refused: ${err.message}`, "error");
      else if (!(err instanceof ApiError && err.status === 401)) this.ctx.status(`Rollback failed: ${err.message}`, "error");
    }
  }
}

/** The "new item" form of a collection: a key, then the schema form, then PUT. */
export class NewItemView {
  constructor(ctx, ns) {
    this.ctx = ctx;
    this.ns = ns;
    this.element = h("section", { class: "doc-view new-item" });
    this.alive = true;
  }

  destroy() {
    this.alive = false;
  }

  get dirty() {
    return Boolean(this.form && this.form.isDirty());
  }

  async load() {
    clear(this.element, h("div", { class: "placeholder" }, "Loading schema…"));
    let schema;
    try {
      schema = await this.ctx.schema(this.ns);
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) clear(this.element, h("div", { class: "placeholder error" }, `Could not load the schema: ${err.message}`));
      return;
    }
    if (!this.alive) return;
    const writable = this.ctx.canWrite(this.ns);
    this.form = new SchemaForm(schema, null, { mode: "create", readOnly: !writable });
    this.keyInput = h("input", { type: "text", id: "new-item-key", testid: "new-item-key", required: true, autocomplete: "off", spellcheck: "false", placeholder: "e.g. openai-prod" });
    this.keyError = h("p", { class: "field-error", testid: "error-key", hidden: true });
    this.diffEl = h("div", { class: "diff-preview", testid: "diff-preview", hidden: true, "aria-live": "polite" });
    this.previewBtn = h("button", { type: "button", class: "btn", testid: "preview-button", disabled: !writable, onclick: () => this.submit(true) }, "Preview");
    this.reasonInput = h("input", { type: "text", class: "reason-input", testid: "reason-input", maxlength: "255", placeholder: "Reason (optional)", "aria-label": "Reason for the change", disabled: !writable });
    this.saveBtn = h("button", { type: "submit", class: "btn primary", testid: "save-button", disabled: !writable }, "Create");
    const formEl = h("form", { class: "edit-form", novalidate: true, onsubmit: (ev) => { ev.preventDefault(); this.submit(false); } },
      h("div", { class: "field key-field" },
        h("div", { class: "field-head" }, h("label", { for: "new-item-key", class: "field-name" }, "key"), h("span", { class: "req" }, "required"), h("span", { class: "type-hint" }, "the new item's key")),
        h("div", { class: "field-control" }, this.keyInput),
        this.keyError),
      this.form.element,
      this.diffEl,
      h("div", { class: "action-bar" },
        h("span", { class: "muted small" }, "Fields left at their defaults are not stored."),
        this.reasonInput,
        h("div", { class: "spacer" }),
        h("button", { type: "button", class: "btn ghost", onclick: () => this.ctx.navigate(`#/ns/${encodeURIComponent(this.ns)}`) }, "Cancel"),
        this.previewBtn, this.saveBtn));
    clear(this.element,
      h("div", { class: "doc-header" }, h("div", { class: "doc-title-row" }, h("h1", {}, h("span", { class: "ns-name" }, this.ns), h("span", { class: "sep" }, " / "), h("span", { class: "key-name muted" }, "new item")))),
      writable ? null : h("div", { class: "callout warn" }, "Read-only: your token cannot create items here."),
      formEl);
    this.keyInput.focus();
  }

  async submit(dryRun) {
    this.form.clearErrors();
    this.keyError.hidden = true;
    const key = this.keyInput.value.trim();
    if (!key) {
      this.keyError.textContent = "Enter a key for the new item";
      this.keyError.hidden = false;
      this.keyInput.focus();
      this.ctx.status("Enter a key for the new item.", "error");
      return;
    }
    const { document, errors } = this.form.document();
    for (const p of maskedPaths(document)) errors.push({ path: p, message: "a masked secret cannot be saved" });
    if (errors.length) {
      this.form.showErrors(errors, "Fix these fields first");
      this.form.focusFirstError();
      return;
    }
    const btn = dryRun ? this.previewBtn : this.saveBtn;
    btn.disabled = true;
    try {
      const res = await api.create(this.ns, key, document, { dryRun, reason: this.reasonInput.value.trim() });
      if (!this.alive) return;
      if (dryRun) {
        const body = res.body || {};
        clear(this.diffEl, h("div", { class: "diff-head" }, h("h3", {}, "Preview"), h("span", { class: "muted" }, `new item ${this.ns}/${key} — nothing is stored yet`)), diffTable(body.diff),
          h("details", { class: "raw" }, h("summary", {}, "Document to send"), h("pre", { class: "json-block" }, JSON.stringify(document, null, 2))));
        this.ctx.status("Preview: the new item validates.", "info");
        reveal(this.diffEl);
      } else {
        const created = `#/ns/${encodeURIComponent(this.ns)}/${encodeURIComponent(key)}/value`;
        this.ctx.status(`Created ${this.ns}/${key} (version ${res.body && res.body.version !== undefined ? res.body.version : 1}).`, "success", { page: created });
        this.ctx.onDocChanged(this.ns);
        this.form = null;
        this.ctx.navigate(created);
      }
    } catch (err) {
      if (!(err instanceof ApiError)) {
        this.ctx.status(`Failed: ${err.message}`, "error");
      } else if (err.status === 412) {
        this.keyError.textContent = `An item with key “${key}” already exists.`;
        this.keyError.hidden = false;
        this.ctx.status(`An item with key “${key}” already exists.`, "error");
      } else if (err.status === 422) {
        const list = err.errors.length ? err.errors : [{ path: "", message: err.message }];
        this.form.showErrors(list);
        this.form.focusFirstError();
        this.ctx.status(`Refused — ${list.length} problem${list.length === 1 ? "" : "s"}.`, "error");
      } else if (err.status === 400 || err.status === 404) {
        this.keyError.textContent = err.message;
        this.keyError.hidden = false;
        this.ctx.status(err.message, "error");
      } else if (err.status !== 401) {
        this.ctx.status(`${dryRun ? "Preview" : "Create"} failed: ${err.message}`, "error");
      }
    } finally {
      if (this.alive && btn) btn.disabled = !this.ctx.canWrite(this.ns);
    }
  }
}
