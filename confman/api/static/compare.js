// Compare two environments field by field: GET /api/v1/compare. Stored effective values
// (defaults, base, overlay) on each side with the layer each came from; differences are
// highlighted. Secrets arrive as "fingerprint:<hex>" and are only ever shown so.

import { api, ApiError } from "./api.js";
import { h, clear, valueNode, breakable } from "./dom.js";
import { sourceText } from "./provenance.js";
import { BASE } from "./env.js";

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
    this.alive = true;
    this.run = 0;
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
        " show identical fields too"));
    clear(this.element,
      h("div", { class: "doc-header" }, h("div", { class: "doc-title-row" }, h("h1", { id: "compare-title" }, "Compare environments"))),
      h("p", { class: "muted" }, "The stored effective value of every field on each side (model defaults, base, the environment's overlay), and where it came from. An instance's env files and variables are not part of an environment. Secrets are compared by fingerprint, never shown."),
      controls, this.results);
    this.refresh();
  }

  swap() {
    [this.left, this.right] = [this.right, this.left];
    this.leftSelect.querySelector("select").value = this.left;
    this.rightSelect.querySelector("select").value = this.right;
    this.refresh();
  }

  async refresh() {
    const run = ++this.run;
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
